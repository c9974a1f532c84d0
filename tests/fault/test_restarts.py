"""Restarts mid-work: the daemon stopped (SIGTERM) or killed (SIGKILL) while it
configures an attached ENI, while its initial scan configures one, and while a refresh
applies an address assigned in IMDS; then a new daemon.

The signal comes at the worst instant: the first change the job makes, as `ip monitor`
sees it (the full report adds seeded delays of up to 30 ms after it). The new daemon
must converge to exactly the clean state (object for object, no duplicates), leave
exactly one record per ENI present (applied, no temporary or set-aside file), and a
SIGTERM must end the old one within the suite's bound with exit 0. One more case: a
daemon that starts while IMDS refuses it, with a new ENI present, configures the ENI
once IMDS is back (a scan's failed ENIs are retried; no link event will come for them).
"""

from __future__ import annotations

import json
import os
import random
import select
import signal
import subprocess
import time
from dataclasses import dataclass
from typing import Callable

import pytest

from tests.fault.cells import Cell
from tests.fault.conftest import References
from tests.fault.harness import (
    DAEMON_STOP_BOUND,
    NEW_ADDR,
    SECOND,
    THIRD,
    FaultWorld,
    record,
    wait_for,
)

pytestmark = [pytest.mark.world, pytest.mark.fault]

TRIALS = int(os.environ.get("EC2NET_RESTART_TRIALS", "0"))  # seeded extra instants
SEED = int(os.environ.get("EC2NET_CRASH_SEED", "20261201"))
CONVERGE_WITHIN = 15.0
SIGNALS = {"SIGTERM": signal.SIGTERM, "SIGKILL": signal.SIGKILL}


@dataclass(frozen=True)
class Phase:
    name: str
    reference: str
    macs: tuple[str, ...]  # the records expected at the end


PHASES = [
    Phase("attach", "both", (SECOND, THIRD)),
    Phase("attach, then detached", "base", (SECOND,)),
    Phase("initial scan", "both", (SECOND, THIRD)),
    Phase("refresh", "refreshed", (SECOND,)),
]


def _refreshes(fw: FaultWorld) -> int:
    path = f"/latest/meta-data/network/interfaces/macs/{SECOND}/local-ipv4s"
    return fw.fabric.imds_requests(method="GET", path_prefix=path)


def _idle_daemon(fw: FaultWorld) -> subprocess.Popen[str]:
    """A daemon past its initial scan and into its refreshes."""
    seen = _refreshes(fw)
    daemon = fw.start_daemon()
    if not wait_for(lambda: _refreshes(fw) >= seen + 2, 20, every=0.1):
        raise AssertionError("the daemon never refreshed")
    return daemon


def _at_first_change(fw: FaultWorld, extra: float) -> str:
    assert fw.monitor is not None and fw.monitor.stdout is not None
    began = time.monotonic()
    ready, _, _ = select.select([fw.monitor.stdout], [], [], 20.0)
    time.sleep(extra)
    what = "the first change" if ready else "no change seen in 20 s"
    return f"{extra * 1e3:.1f} ms after {what} ({time.monotonic() - began:.2f}s)"


def _records(fw: FaultWorld) -> tuple[list[str], list[str]]:
    """(MACs with an applied record, anything else in enis/)."""
    macs, other = [], []
    for path in sorted((fw.runtime / "enis").iterdir()):
        try:
            data = json.loads(path.read_text()) if path.suffix == ".json" else None
        except ValueError:
            data = None
        if isinstance(data, dict) and data.get("phase") == "applied":
            macs.append(str(data["mac"]))
        else:
            other.append(path.name)
    return macs, other


def _signal_daemon(cell: Cell, daemon: subprocess.Popen[str], sig: str) -> None:
    started = time.monotonic()
    os.kill(daemon.pid, SIGNALS[sig])  # our own child's pid, not yet reaped
    try:
        daemon.wait(timeout=DAEMON_STOP_BOUND)
    except subprocess.TimeoutExpired:
        daemon.kill()
        daemon.wait()
        cell.fail(f"still running {DAEMON_STOP_BOUND}s after {sig}")
    took = time.monotonic() - started
    _, log = daemon.communicate(timeout=5)
    if sig == "SIGTERM":
        cell.rc = f"{daemon.returncode} after {took:.2f} s"
        if daemon.returncode != 0:
            cell.fail(f"exit {daemon.returncode} after SIGTERM")
    else:
        cell.rc = str(daemon.returncode)
    if "Traceback" in log:
        cell.fail(f"daemon traceback:\n{log[-1500:]}")


def _restart_trial(
    phase: Phase, sig: str, extra: float, worlds: Callable[..., FaultWorld], refs: References
) -> None:
    expected = refs[phase.reference]
    fw = worlds()
    fw.must("up", "eth1")
    foreign = fw.foreign()
    label = "first change" if not extra else f"+{extra * 1e3:.0f} ms"
    cell = Cell("restart", f"{sig} during {phase.name} ({label})", "watch")
    if phase.name == "initial scan":
        fw.fabric.attach(THIRD, "eth2")
        fw.start_monitor()
        daemon = fw.start_daemon()
    else:
        daemon = _idle_daemon(fw)
        fw.start_monitor()
        if phase.name == "refresh":
            fw.fabric.assign(SECOND, NEW_ADDR)
        else:
            fw.fabric.attach(THIRD, "eth2")
    cell.during = _at_first_change(fw, extra)
    _signal_daemon(cell, daemon, sig)
    fw.daemons.remove(daemon)
    fw.stop_monitor()
    if phase.name == "attach, then detached":
        fw.fabric.detach(THIRD)
    new = fw.start_daemon()
    wait_for(lambda: fw.state() == expected and _records(fw) == (sorted(phase.macs), []),
             CONVERGE_WITHIN, every=0.3)  # fmt: skip
    cell.after = cell.judge("after the new daemon", expected, fw.state())
    macs, other = _records(fw)
    try:
        fw.stop_daemon(new)
    except AssertionError as err:
        cell.fail(str(err))
    _, log = new.communicate(timeout=5)
    if macs != sorted(phase.macs) or other:
        left = {n: json.loads((fw.runtime / "enis" / n).read_text()).get("phase") for n in other}
        cell.fail(f"records {macs} and {left}, want exactly {sorted(phase.macs)}\n{log[-1500:]}")
    if "Traceback" in log:
        cell.fail(f"new daemon traceback:\n{log[-1500:]}")
    if fw.foreign() != foreign:
        cell.fail("foreign state changed")
    if fw.probe.failed:
        cell.fail(f"primary probes failed: {fw.probe.failed[:5]}")
    record(cell.row())
    assert cell.problems == [], "\n".join(cell.problems)


@pytest.mark.parametrize("sig", list(SIGNALS))
@pytest.mark.parametrize("phase", PHASES, ids=[p.name for p in PHASES])
def test_daemon_restart_at_first_change(
    phase: Phase, sig: str, worlds: Callable[..., FaultWorld], refs: References
) -> None:
    _restart_trial(phase, sig, 0.0, worlds, refs)


@pytest.mark.parametrize("trial", range(TRIALS * len(PHASES) * len(SIGNALS)))
def test_daemon_restart_at_a_random_instant(
    trial: int, worlds: Callable[..., FaultWorld], refs: References
) -> None:
    rng = random.Random(SEED + 1000 + trial)
    phase = PHASES[trial % len(PHASES)]
    sig = list(SIGNALS)[(trial // len(PHASES)) % len(SIGNALS)]
    _restart_trial(phase, sig, rng.uniform(0.0005, 0.03), worlds, refs)


def test_daemon_started_while_imds_refuses_configures_the_new_eni_later(
    worlds: Callable[..., FaultWorld], refs: References
) -> None:
    expected = refs["both"]
    fw = worlds()
    fw.must("up", "eth1")
    foreign = fw.foreign()
    cell = Cell("restart", "new daemon while IMDS refuses (403), a new ENI present", "watch")
    fw.fabric.attach(THIRD, "eth2")
    with fw.fabric.world.lock:
        fw.fabric.world.faults.disabled = True
    daemon = fw.start_daemon()
    time.sleep(4.0)  # its initial scan has failed on eth2
    cell.during = "kept" if fw.state() == refs["base"] else "changed"
    with fw.fabric.world.lock:
        fw.fabric.world.faults.disabled = False
    started = time.monotonic()
    ok = wait_for(lambda: fw.state() == expected, CONVERGE_WITHIN, every=0.3)
    cell.after = cell.judge("after IMDS is back", expected, fw.state())
    if ok:
        cell.after += f" ({time.monotonic() - started:.1f} s after)"
    fw.stop_daemon(daemon)
    _, log = daemon.communicate(timeout=5)
    cell.rc = f"running, then {daemon.returncode}"
    if "Traceback" in log:
        cell.fail(f"daemon traceback:\n{log[-1500:]}")
    if fw.foreign() != foreign:
        cell.fail("foreign state changed")
    record(cell.row())
    assert cell.problems == [], "\n".join(cell.problems)
