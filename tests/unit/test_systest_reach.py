"""systest's reachability wait: its figure is when an address first answered, not when
a probe whose SYN was lost early gave up."""

from __future__ import annotations

import threading
import time

from systest.vpc import VpcGuest

LOST_UNTIL = 0.25  # probes started before this (after the wait began) lose their SYN
PROBE_TIMEOUT = 2.0


class LossyFabric:
    client_ns = "c"
    peer_ns = "p"

    def __init__(self) -> None:
        self.t0 = time.monotonic()
        self.lock = threading.Lock()
        self.probes: list[tuple[float, float, bool]] = []  # start, end, answered

    def probe(self, ns: str, addr: str, timeout: float = 1.0) -> bool:
        start = time.monotonic()
        ok = start - self.t0 >= LOST_UNTIL
        if not ok:
            time.sleep(timeout)  # the SYN is gone: connect() waits out its timeout
        with self.lock:
            self.probes.append((start, time.monotonic(), ok))
        return ok


def test_an_early_lost_syn_does_not_delay_the_figure() -> None:
    guest = object.__new__(VpcGuest)  # only the fabric is used
    fabric = LossyFabric()
    guest.fabric = fabric  # type: ignore[assignment]
    reach = guest.wait_reachable(
        ["10.0.2.30"], timeout=10.0, probe_timeout=PROBE_TIMEOUT, since=fabric.t0
    )
    assert reach.seconds is not None, reach.missing
    lost = [p for p in fabric.probes if not p[2]]
    answered = [p for p in fabric.probes if p[2]]
    assert lost and answered
    # a later probe answered while the lost ones were still waiting ...
    assert min(a[0] for a in answered) < min(end for _, end, _ in lost)
    # ... and the figure is its answer, not the lost probe's timeout
    assert reach.seconds < min(end for _, end, _ in lost) - fabric.t0
    assert reach.seconds >= LOST_UNTIL
