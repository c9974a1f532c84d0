"""Process-wide cancellation: every wait in ec2net goes through `pause`.

The daemon must stop within seconds of SIGTERM whatever its jobs are waiting on (IMDS
propagation, retry backoff, a lock held by another trigger). Those waits all sleep
through `pause`, which returns early and raises `Cancelled` once `cancel()` was called.
A job cut short this way leaves a state the next run converges from (the engine
records intent before it changes anything), so stopping never needs cleanup.
"""

from __future__ import annotations

import threading

from ec2net.errors import Ec2NetError

_stop = threading.Event()


class Cancelled(Ec2NetError):
    """The process is stopping; the interrupted work is retried by the next run."""

    retryable = True


def cancel() -> None:
    _stop.set()


def reset() -> None:
    """Forget an earlier cancel (tests; a daemon object started again)."""
    _stop.clear()


def cancelled() -> bool:
    return _stop.is_set()


def check() -> None:
    if _stop.is_set():
        raise Cancelled("stopping")


def pause(seconds: float) -> None:
    """Sleep up to `seconds`; raise Cancelled at once if the process is stopping."""
    if _stop.wait(max(0.0, seconds)):
        raise Cancelled("stopping")
