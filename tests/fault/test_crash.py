"""kill -9 at random instants across up, refresh, scan, down and the daemon.

After each kill the next run must converge to exactly the state a clean run gives on
a fresh world (same addresses, routes and rules, no duplicates), and a `down` after a
killed `up` must remove everything the killed run added, addresses included. The
instants come from a seeded RNG; EC2NET_CRASH_TRIALS sets the count (CI: 12, the
report: 50+), EC2NET_CRASH_SEED the seed. The pid is the one we started (never a
name): `ip netns exec` execs ec2net in place, so it is ec2net's own pid.
"""

from __future__ import annotations

import os
import random
import select
import signal
import time
from dataclasses import dataclass
from typing import Callable, Optional

import pytest

from tests.fault.cells import Cell
from tests.fault.conftest import References
from tests.fault.harness import NEW_ADDR, SECOND, THIRD, FaultWorld, record, wait_for

pytestmark = [pytest.mark.world, pytest.mark.fault]

TRIALS = int(os.environ.get("EC2NET_CRASH_TRIALS", "12"))
SEED = int(os.environ.get("EC2NET_CRASH_SEED", "20261201"))


@dataclass(frozen=True)
class Kind:
    name: str
    setup: Callable[[FaultWorld], None]
    killed: tuple[str, ...]  # the command killed (empty: the daemon)
    follow: tuple[str, ...]  # the next run
    reference: str


def _attach_eth2(fw: FaultWorld) -> None:
    fw.fabric.attach(THIRD, "eth2")


def _up_eth1(fw: FaultWorld) -> None:
    fw.must("up", "eth1")


def _up_and_assign(fw: FaultWorld) -> None:
    fw.must("up", "eth1")
    fw.fabric.assign(SECOND, NEW_ADDR)


def _nothing(fw: FaultWorld) -> None:
    pass


KINDS = [
    Kind("up, then up", _nothing, ("up", "eth1"), ("up", "eth1"), "base"),
    Kind("up, then down", _nothing, ("up", "eth1"), ("down", "eth1"), "empty"),
    Kind("refresh, then refresh", _up_and_assign, ("refresh",), ("refresh",), "refreshed"),
    Kind("scan, then scan", _attach_eth2, ("scan",), ("scan",), "both"),
    Kind("down, then down", _up_eth1, ("down", "eth1"), ("down", "eth1"), "down"),
    Kind("daemon, then daemon", _attach_eth2, (), (), "both"),
]
_durations: dict[str, float] = {}


def _duration(kind: Kind, worlds: Callable[..., FaultWorld]) -> float:
    """How long a clean run of the killed command takes here (measured once)."""
    if kind.name not in _durations:
        fw = worlds()
        kind.setup(fw)
        started = time.monotonic()
        if kind.killed:
            fw.must(*kind.killed)
        else:
            proc = fw.start_daemon()
            wait_for(lambda: bool(fw.state().ours()) and len(fw.state().ours()) > 20, 10, 0.05)
            fw.stop_daemon(proc)
        _durations[kind.name] = time.monotonic() - started
    return _durations[kind.name]


def _sleep_to_instant(fw: FaultWorld, rng: Optional[random.Random], span: float) -> str:
    """Half the random trials: a uniform instant over a clean run's duration. The other
    half: 0, 0-2 or 0-10 ms after `ip monitor` shows the first change (inside the apply,
    where a crash hurts most). Without an RNG: at the first change itself."""
    if rng is not None and rng.random() < 0.5:
        instant = rng.uniform(0.3, 1.1) * span
        time.sleep(instant)
        return f"at {instant:.2f}s"
    if rng is None:
        extra = 0.0
    else:
        extra = rng.choice((0.0, rng.uniform(0.0, 0.002), rng.uniform(0.0, 0.01)))
    began = time.monotonic()
    seen = _first_change(fw, span * 3)
    time.sleep(extra)
    what = "first change" if seen else "no change seen"
    return f"{extra * 1e3:.1f} ms after the {what} ({time.monotonic() - began:.2f}s)"


def _first_change(fw: FaultWorld, timeout: float) -> bool:
    assert fw.monitor is not None and fw.monitor.stdout is not None
    ready, _, _ = select.select([fw.monitor.stdout], [], [], timeout)
    return bool(ready)


def _records(fw: FaultWorld) -> list[str]:
    return sorted(p.name for p in (fw.runtime / "enis").glob("*.json"))


@pytest.mark.parametrize("trial", range(TRIALS))
def test_kill9(trial: int, worlds: Callable[..., FaultWorld], refs: References) -> None:
    kind = KINDS[trial % len(KINDS)]
    _trial(f"#{trial} {kind.name}", kind, random.Random(SEED + trial), worlds, refs)


@pytest.mark.parametrize("kind", KINDS, ids=[k.name for k in KINDS])
def test_kill9_at_first_change(
    kind: Kind, worlds: Callable[..., FaultWorld], refs: References
) -> None:
    """The worst instant, every time: the moment the first object changed."""
    _trial(f"first change: {kind.name}", kind, None, worlds, refs)


def _trial(
    name: str,
    kind: Kind,
    rng: Optional[random.Random],
    worlds: Callable[..., FaultWorld],
    refs: References,
) -> None:
    expected = refs[kind.reference]
    span = _duration(kind, worlds)
    fw = worlds()
    kind.setup(fw)
    foreign = fw.foreign()
    cell = Cell("crash", name, " ".join(kind.killed) or "watch")
    fw.start_monitor()  # before ec2net starts: its first change is the first line
    proc = fw.popen(*kind.killed) if kind.killed else fw.popen("-v", "watch")
    when = _sleep_to_instant(fw, rng, span)
    finished = proc.poll() is not None
    if not finished:
        os.kill(proc.pid, signal.SIGKILL)  # our own child's pid, not yet reaped
    proc.communicate(timeout=10)
    fw.stop_monitor()
    cell.during = f"killed {when}" + (" (had exited)" if finished else "")
    if kind.killed:
        run = fw.ec2net(*kind.follow)
        cell.rc = str(run.rc)
        if run.rc != 0:
            cell.fail(f"next run exited {run.rc}\n{run.err[-800:]}")
            cell.message = run.err.strip().splitlines()[-1][:160] if run.err.strip() else ""
    else:
        daemon = fw.start_daemon()
        wait_for(lambda: fw.state() == expected, 10, every=0.3)
        fw.stop_daemon(daemon)
        cell.rc = str(daemon.returncode)
    state = fw.state()
    cell.after = cell.judge("after the next run", expected, state)
    if kind.follow[:1] == ("down",) and _records(fw):
        cell.fail(f"records left after down: {_records(fw)}")
    now = fw.foreign()
    if now != foreign:
        cell.fail("foreign state changed")
    if fw.probe.failed:
        cell.fail(f"primary probes failed: {fw.probe.failed[:5]}")
    record(cell.row())
    assert cell.problems == [], "\n".join(cell.problems)


def test_scan_removes_leftovers_of_a_lost_run(
    worlds: Callable[..., FaultWorld], refs: References
) -> None:
    """Protocol-236 rules and routes whose table no live ENI holds (a run killed before
    its record was written, or a record lost with /run) go at the next scan; foreign
    rules and routes in other tables stay."""
    fw = worlds()
    fw.must("up", "eth1")
    expected = refs["base"]
    fw.ip(
        "rule", "add", "pref", "10007", "from", "10.0.2.77/32", "lookup", "10007", "proto", "236"
    )
    fw.ip(
        "rule", "add", "pref", "25007", "from", "10.0.2.77/32", "lookup", "10007", "proto", "236"
    )
    fw.ip("route", "add", "default", "via", "10.0.1.1", "dev", "eth0", "table", "10007",
          "proto", "236")  # fmt: skip
    fw.ip("-6", "rule", "add", "pref", "10007", "from", "2600:1f16:292:2::77/128", "lookup",
          "10007", "proto", "236")  # fmt: skip
    foreign = fw.foreign()
    cell = Cell("crash", "protocol-236 leftovers, no record", "scan")
    run = fw.ec2net("scan")
    cell.rc = str(run.rc)
    if run.rc != 0:
        cell.fail(f"scan exited {run.rc}\n{run.err[-800:]}")
    cell.after = cell.judge("after scan", expected, fw.state())
    if fw.foreign() != foreign:
        cell.fail("foreign state changed")
    record(cell.row())
    assert cell.problems == [], "\n".join(cell.problems)
