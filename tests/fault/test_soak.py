"""Soak: one daemon through hundreds of attach/detach cycles of several ENIs, with
secondary addresses assigned and unassigned in IMDS and IMDS faults sprinkled in.

Each cycle attaches ENIS fresh ENIs (new MACs and ENI ids, as EC2 hands out), waits
for each to be configured (its record applied: the attach latency), assigns an address
to one and unassigns one of another in IMDS (every FAULT_EVERY-th cycle under an IMDS
fault the daemon rides out), waits for the daemon's refresh to apply both, detaches them
all and waits for the cleanup. At the end of each cycle it samples the daemon's RSS,
open file descriptors and threads (the least of three samples 0.1 s apart: a refresh
in flight has helper threads).

Rules: 0 objects lost or leaked at the end (the clean state, one record); RSS grows by
at most RSS_GROWTH_KIB between cycle REF_CYCLE and the last; descriptors and threads
at the last cycle as at REF_CYCLE; the p95 attach latency of the last WINDOW cycles
within LATENCY_RATIO of the first WINDOW's. EC2NET_SOAK_CYCLES sets the count: CI runs
SMALL cycles (the mechanism), `tools/soak` and the report 300 (the figures).
"""

from __future__ import annotations

import functools
import ipaddress
import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Optional

import pytest

from ec2sim.world import Eni
from tests.fault.cells import Cell
from tests.fault.conftest import References
from tests.fault.endurance import percentile, start_logged_daemon, stop_logged_daemon, usage
from tests.fault.harness import RESULTS_ENV, FaultWorld, record, wait_for

pytestmark = [pytest.mark.world, pytest.mark.fault]

SMALL = 60
CYCLES = int(os.environ.get("EC2NET_SOAK_CYCLES", str(SMALL)))
ENIS = 3
FAULT_EVERY = 5
REF_CYCLE = min(50, CYCLES // 3)
WINDOW = min(50, max(4, CYCLES // 3))  # 50 cycles (150 attaches) at full size
RSS_GROWTH_KIB = 2 * 1024
LATENCY_RATIO = 1.5
STEP_BOUND = 20.0  # seconds any one step of a cycle may take (then it failed)
SEED_ADDR = 230  # 10.0.2.230+: addresses assigned during the soak


def _record(fw: FaultWorld, mac: str) -> Optional[dict[str, object]]:
    path = fw.runtime / "enis" / (mac.replace(":", "-") + ".json")
    try:
        data = json.loads(path.read_text())
    except (FileNotFoundError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _applied(fw: FaultWorld, mac: str, has: str = "", lacks: str = "") -> bool:
    rec = _record(fw, mac)
    if rec is None or rec.get("phase") != "applied":
        return False
    owned = rec.get("owned_ips", [])
    assert isinstance(owned, list)
    return (not has or has in owned) and (not lacks or lacks not in owned)


def _fault(fw: FaultWorld, cycle: int) -> tuple[str, Callable[[], None]]:
    """An IMDS fault the daemon rides out, by turns; returns its name and its end."""
    faults = fw.fabric.world.faults
    servers = [s for s in (fw.fabric.imds, fw.fabric.imds6) if s is not None]
    kind = (cycle // FAULT_EVERY) % 4
    with fw.fabric.world.lock:
        if kind == 0:
            faults.error_503_remaining = 3
            name = "3 x 503"
        elif kind == 1:
            faults.reset_remaining = 2
            name = "2 resets"
        elif kind == 2:
            faults.latency = 0.1  # under the suite's 0.25 s IMDS timeout
            name = "0.1 s latency"
        else:
            name = "tokens revoked"
    if kind == 3:
        for s in servers:
            s.revoke_tokens()

    def end() -> None:
        with fw.fabric.world.lock:
            faults.error_503_remaining = 0
            faults.reset_remaining = 0
            faults.latency = 0.0

    return name, end


def _sample(pid: int, cycle: int, latencies: list[float], fault: str) -> Sample:
    samples = []
    for _ in range(3):
        samples.append(usage(pid))
        time.sleep(0.1)
    return Sample(cycle, latencies, fault, min(u.rss_kib for u in samples),
                  min(u.fds for u in samples), min(u.threads for u in samples),
                  samples[-1].cpu)  # fmt: skip


def _nothing() -> None:
    pass


@dataclass(frozen=True)
class Sample:
    cycle: int
    latencies: list[float]
    fault: str
    rss_kib: int
    fds: int
    threads: int
    cpu: float


def _cycle(fw: FaultWorld, cycle: int) -> tuple[list[float], str]:
    """One cycle; the attach latencies and the fault injected ("" none)."""
    fabric = fw.fabric
    enis: list[Eni] = []
    latencies = []
    for k in range(ENIS):
        # made when the one before is attached: the lowest free device number
        eni = fabric.new_eni("subnet-b", n_ipv4=2, n_ipv6=1)
        enis.append(eni)
        fabric.attach(eni, f"eth{3 + k}")
        attached = time.monotonic()
        if not wait_for(functools.partial(_applied, fw, eni.mac), STEP_BOUND, every=0.01):
            raise AssertionError(f"cycle {cycle}: eth{3 + k} not configured in {STEP_BOUND} s")
        latencies.append(time.monotonic() - attached)
    fault, end = "", _nothing
    if cycle % FAULT_EVERY == FAULT_EVERY - 1:
        fault, end = _fault(fw, cycle)
    new = ipaddress.IPv4Address(f"10.0.2.{SEED_ADDR + cycle % 20}")
    gone = enis[1].ipv4s[1]
    fabric.assign(enis[0].mac, new)
    fabric.unassign(enis[1].mac, gone)

    def refreshed() -> bool:
        return _applied(fw, enis[0].mac, has=str(new)) and _applied(
            fw, enis[1].mac, lacks=str(gone)
        )

    ok = wait_for(refreshed, STEP_BOUND, every=0.05)
    end()
    if not ok:
        raise AssertionError(f"cycle {cycle}: the refresh did not apply {new} and -{gone}")
    for eni in enis:
        fabric.detach(eni)
    if not wait_for(lambda: all(_record(fw, e.mac) is None for e in enis), STEP_BOUND, 0.02):
        raise AssertionError(f"cycle {cycle}: detached ENIs not cleaned up in {STEP_BOUND} s")
    for eni in enis:
        fabric.spare.pop(eni.mac, None)  # its addresses and device number are free again
    return latencies, fault


def test_soak(worlds: Callable[..., FaultWorld], refs: References) -> None:
    expected = refs["base"]
    fw = worlds()
    fw.must("up", "eth1")
    foreign = fw.foreign()
    daemon = start_logged_daemon(fw, name="soak")
    series: list[Sample] = []
    cell = Cell("soak", f"{CYCLES} cycles x {ENIS} ENIs", "watch")
    started = time.monotonic()
    try:
        if not wait_for(lambda: _applied(fw, "02:00:0a:00:02:14"), 20):
            raise AssertionError("eth1 not applied")
        time.sleep(1.5)  # past the daemon's initial scan
        for cycle in range(CYCLES):
            latencies, fault = _cycle(fw, cycle)
            series.append(_sample(daemon.pid, cycle + 1, latencies, fault))
            if daemon.proc.poll() is not None:
                raise AssertionError(f"the daemon exited:\n{daemon.log()[-1500:]}")
        wait_for(lambda: fw.state() == expected, 10, every=0.5)
        stop_logged_daemon(fw, daemon)
    except AssertionError as err:
        cell.fail(str(err))
    took = time.monotonic() - started
    log = daemon.log()
    _judge(cell, series, took)
    cell.after = cell.judge("after the soak", expected, fw.state())
    records = sorted(p.name for p in (fw.runtime / "enis").iterdir())
    if records != ["02-00-0a-00-02-14.json"]:
        cell.fail(f"records left: {records}")
    if "Traceback" in log:
        cell.fail(f"daemon traceback:\n{log[-1500:]}")
    if fw.foreign() != foreign:
        cell.fail("foreign state changed")
    if fw.probe.failed:
        cell.fail(f"primary probes failed: {fw.probe.failed[:5]}")
    _save(series, cell, took)
    record(cell.row())
    print(f"\nsoak: {cell.during}")
    assert cell.problems == [], "\n".join(cell.problems)


def _judge(cell: Cell, series: list[Sample], took: float) -> None:
    if len(series) < CYCLES:
        cell.during = f"stopped at cycle {len(series) + 1} of {CYCLES}"
        return
    ref, last = series[REF_CYCLE - 1], series[-1]
    first_p95 = percentile([x for r in series[:WINDOW] for x in r.latencies], 95)
    last_p95 = percentile([x for r in series[-WINDOW:] for x in r.latencies], 95)
    grew = last.rss_kib - ref.rss_kib
    cell.rc = "running, then 0"
    cell.during = (
        f"{took / 60:.1f} min; RSS {ref.rss_kib / 1024:.1f} MiB at cycle {REF_CYCLE}, "
        f"{last.rss_kib / 1024:.1f} MiB at {CYCLES} ({grew / 1024:+.2f} MiB); fds "
        f"{ref.fds} -> {last.fds}, threads {ref.threads} -> {last.threads}; attach p95 "
        f"{first_p95 * 1e3:.0f} ms (first {WINDOW}) -> {last_p95 * 1e3:.0f} ms (last "
        f"{WINDOW}), x{last_p95 / first_p95:.2f}"
    )
    if grew > RSS_GROWTH_KIB:
        cell.fail(f"RSS grew {grew} KiB from cycle {REF_CYCLE} to {CYCLES}")
    if (last.fds, last.threads) != (ref.fds, ref.threads):
        cell.fail(f"fds {ref.fds} -> {last.fds}, threads {ref.threads} -> {last.threads}")
    if last_p95 > LATENCY_RATIO * first_p95:
        cell.fail(f"attach p95 {last_p95:.3f} s in the last {WINDOW} cycles, "
                  f"{first_p95:.3f} s in the first")  # fmt: skip


def _save(series: list[Sample], cell: Cell, took: float) -> None:
    target = os.environ.get(RESULTS_ENV)
    if not target:
        return
    data = {"cycles": CYCLES, "enis": ENIS, "fault_every": FAULT_EVERY, "window": WINDOW,
            "ref_cycle": REF_CYCLE, "seconds": took, "summary": cell.during,
            "ok": not cell.problems, "series": [asdict(r) for r in series]}  # fmt: skip
    Path(target, "soak.json").write_text(json.dumps(data))
