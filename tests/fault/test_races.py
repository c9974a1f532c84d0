"""Races: many ENIs at once, attach/detach in quick succession, refresh during a
detach, and the daemon, a udev-started `up` and a person's `up` on one ENI at once.

None may hang past its bound or crash (no traceback), none may leave duplicates, and
the final state is exactly the clean one. A detached ENI's leftovers are removed by
`ec2net down` (what the udev unit's ExecStop runs) or by the daemon on its own.
"""

from __future__ import annotations

import random
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Callable

import pytest

from tests.fault.cells import Cell
from tests.fault.conftest import References
from tests.fault.harness import (
    THIRD,
    FaultWorld,
    Run,
    extra_mac,
    record,
    wait_for,
)
from tests.fault.state import State

pytestmark = [pytest.mark.world, pytest.mark.fault]

MANY = 8
SEED = 20261201


def _check_runs(cell: Cell, runs: list[Run], ok_codes: tuple[int, ...] = (0,)) -> None:
    cell.rc = ",".join(sorted({str(r.rc) for r in runs}))
    for r in runs:
        if r.rc not in ok_codes:
            cell.fail(f"exit {r.rc}, want {ok_codes}\n{r.err[-600:]}")
        if "Traceback" in r.err:
            cell.fail(f"traceback:\n{r.err[-1500:]}")
    errors = [ln for r in runs for ln in r.err.splitlines() if ln.startswith("ERROR")]
    cell.message = errors[0][:160] if errors else ""


def _finish(cell: Cell, fw: FaultWorld, expected: State, foreign: State) -> None:
    cell.after = cell.judge("final", expected, fw.state())
    if fw.foreign() != foreign:
        cell.fail("foreign state changed")
    if fw.probe.failed:
        cell.fail(f"primary probes failed: {fw.probe.failed[:5]}")
    for proc in fw.daemons:
        if proc.poll() is not None:
            cell.fail(f"daemon exited {proc.returncode}")
    record(cell.row())
    assert cell.problems == [], "\n".join(cell.problems)


def _stop_daemons(cell: Cell, fw: FaultWorld) -> None:
    for proc in list(fw.daemons):
        try:
            fw.stop_daemon(proc)
        except AssertionError as err:
            cell.fail(str(err))
        _, log = proc.communicate(timeout=5)
        if "Traceback" in log:
            cell.fail(f"daemon traceback:\n{log[-1500:]}")
        fw.daemons.remove(proc)


def test_many_enis_in_parallel(worlds: Callable[..., FaultWorld]) -> None:
    """eth3..eth10 attached at once; per-ENI `up`s (udev), a scan and the daemon race."""
    ref = worlds(extra_enis=MANY)
    ref.must("up", "eth1")
    for k in range(MANY):
        ref.fabric.attach(extra_mac(k), f"eth{3 + k}")
        ref.must("up", f"eth{3 + k}")
    expected = ref.state()
    ref.close()

    fw = worlds(extra_enis=MANY)
    fw.must("up", "eth1")
    foreign = fw.foreign()
    cell = Cell("race", f"{MANY} ENIs attached at once", "up x8 + scan + watch")
    fw.start_daemon()
    for k in range(MANY):
        fw.fabric.attach(extra_mac(k), f"eth{3 + k}")
    jobs = [("up", f"eth{3 + k}") for k in range(MANY)] + [("scan",)]
    with ThreadPoolExecutor(max_workers=len(jobs)) as pool:
        runs = list(pool.map(lambda args: fw.ec2net(*args), jobs))
    _check_runs(cell, runs)
    wait_for(lambda: fw.state() == expected, 10, every=0.5)  # the daemon may trail
    _stop_daemons(cell, fw)
    cell.during = f"slowest run {max(r.seconds for r in runs):.1f}s"
    _finish(cell, fw, expected, foreign)


def test_detach_while_configuring(worlds: Callable[..., FaultWorld], refs: References) -> None:
    """`up eth2` cut short by the detach, then udev's ExecStop `down eth2`: nothing of
    eth2 is left (no rules in its table: the kernel keeps those)."""
    expected = refs["base"]
    fw = worlds()
    fw.must("up", "eth1")
    foreign = fw.foreign()
    cell = Cell("race", "detach while configuring (x3)", "up eth2, detach, down eth2")
    rng = random.Random(SEED)
    runs: list[Run] = []
    for _ in range(3):
        fw.fabric.attach(THIRD, "eth2")
        with ThreadPoolExecutor(max_workers=1) as pool:
            fut = pool.submit(fw.ec2net, "up", "eth2")
            time.sleep(rng.uniform(0.15, 0.35))
            fw.fabric.detach(THIRD)
            runs.append(fut.result())
        down = fw.ec2net("down", "eth2")
        _check_runs(cell, [down])
        cell.judge("after detach + down", expected, fw.state())
    _check_runs(cell, [*runs, down], ok_codes=(0, 1, 2))  # the cut-short up may fail
    _finish(cell, fw, expected, foreign)


def test_daemon_follows_attach_detach_bursts(
    worlds: Callable[..., FaultWorld], refs: References
) -> None:
    expected = refs["base"]
    fw = worlds()
    fw.must("up", "eth1")
    foreign = fw.foreign()
    cell = Cell("race", "attach/detach bursts (x3)", "watch")
    fw.start_daemon()
    time.sleep(1.2)
    rng = random.Random(SEED + 1)
    for _ in range(3):
        fw.fabric.attach(THIRD, "eth2")
        time.sleep(rng.uniform(0.1, 0.4))
        fw.fabric.detach(THIRD)
    converged = wait_for(lambda: fw.state() == expected, 10, every=0.5)
    cell.during = "converged" if converged else "not converged in 10 s"
    _stop_daemons(cell, fw)
    cell.rc = "running, then 0"
    _finish(cell, fw, expected, foreign)


def test_refresh_during_detach(worlds: Callable[..., FaultWorld], refs: References) -> None:
    expected = refs["base"]
    fw = worlds()
    fw.must("up", "eth1")
    fw.fabric.attach(THIRD, "eth2")
    fw.must("up", "eth2")
    foreign = fw.foreign()
    cell = Cell("race", "refresh during detach", "refresh, detach eth2, down eth2")
    with ThreadPoolExecutor(max_workers=1) as pool:
        fut = pool.submit(fw.ec2net, "refresh")
        time.sleep(random.Random(SEED + 2).uniform(0.15, 0.3))
        fw.fabric.detach(THIRD)
        refresh = fut.result()
    down = fw.ec2net("down", "eth2")
    _check_runs(cell, [refresh], ok_codes=(0, 1))
    _check_runs(cell, [down])
    cell.rc = f"{refresh.rc},{down.rc}"
    _finish(cell, fw, expected, foreign)


def test_daemon_udev_and_person_at_once(
    worlds: Callable[..., FaultWorld], refs: References
) -> None:
    expected = refs["both"]
    fw = worlds()
    fw.must("up", "eth1")
    foreign = fw.foreign()
    cell = Cell("race", "daemon + udev up + person's up", "watch + up eth2 x2")
    fw.start_daemon()
    time.sleep(1.2)
    fw.fabric.attach(THIRD, "eth2")
    with ThreadPoolExecutor(max_workers=2) as pool:
        runs = list(pool.map(lambda _: fw.ec2net("up", "eth2"), range(2)))
    _check_runs(cell, runs)
    wait_for(lambda: fw.state() == expected, 10, every=0.5)
    _stop_daemons(cell, fw)
    _finish(cell, fw, expected, foreign)
