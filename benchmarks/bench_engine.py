"""Figures for the engine in the simulated VPC, in one run (issues 3 and 15).

  python3 benchmarks/bench_engine.py [--reps N] [--python PATH ...] [--json FILE]

- scale: 15 ENIs x 50 IPv4 + 50 IPv6, addresses contiguous (they aggregate into CIDR
  blocks: few rules) or scattered over a /20 (as EC2 assigns secondaries: about three
  rules per address). `ec2net scan` from boot (and its IMDS span: first answer to
  last) and the no-change `ec2net refresh` after it: wall and CPU time of the
  process, netlink write requests, IMDS requests; the floor beside them, in the same
  run: one `ip -force -batch` per family applying the objects the scan applied.
  Once per Python given (each has its own pyroute2).
- IMDS requests for `up` of one ENI with 10 IPv4 + 2 IPv6 and a no-change refresh.
- cold start: `ec2net --help` (process start to exit) and `ec2net up` (process start
  to its first IMDS request, and to exit, no change to make).
Needs root.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (
    DEBIAN_PYTHON,
    VENV_PYTHON,
    Fabric,
    Runner,
    applied,
    batch_lines,
    big_world,
    ip_batch,
    median,
    pyroute2_version,
    scattered_pool,
)

ENIS = 15
PER_ENI = 50


def _world(f: Fabric, layout: str) -> None:
    pool = scattered_pool()
    for i in range(ENIS):
        if layout == "contiguous":
            f.attach(f.new_eni("subnet-b", n_ipv4=PER_ENI, n_ipv6=PER_ENI), f"eth{i + 1}")
            continue
        eni = f.attach(f.new_eni("subnet-b", n_ipv4=1, n_ipv6=PER_ENI), f"eth{i + 1}")
        for _ in range(PER_ENI - 1):
            f.assign(eni.mac, pool.pop())


def scale(pythons: list[str], layout: str, reps: int) -> dict[str, dict[str, Any]]:
    """Per pyroute2 version, in one world: each run starts from a clean kernel and an
    empty runtime directory (as at boot); what a scan added is removed by undoing the
    floor's batch, as `ec2net down` of 15 ENIs would take longer than all else."""
    out: dict[str, dict[str, Any]] = {}
    with Fabric(world=big_world(), label="bench") as f:
        f.start()
        _world(f, layout)
        assert f.imds is not None
        first = Runner(f, pythons[0]).ec2net("-v", "scan")  # the objects, for the floor
        v4, v6 = batch_lines(first.stdout)
        ip_batch(f.instance_ns, v4, v6, undo=True)
        rows: dict[str, dict[str, list[float]]] = {py: {} for py in pythons}
        for _ in range(reps):
            for py in pythons:  # side by side, run after run
                row = rows[py]

                def add(key: str, value: float, row: dict[str, list[float]] = row) -> None:
                    row.setdefault(key, []).append(value)

                floor = ip_batch(f.instance_ns, v4, v6)
                add("batch_wall", floor.wall)
                add("batch_cpu", floor.cpu)
                ip_batch(f.instance_ns, v4, v6, undo=True)
                r = Runner(f, py)
                before, n = f.imds_requests(), len(f.imds.log.entries())
                scan = r.ec2net("-vv", "scan")
                add("scan_imds", f.imds_requests() - before)
                answered = [e.time for e in f.imds.log.entries()[n:]]
                add("scan_imds_span", max(answered) - min(answered) if answered else 0.0)
                writes, ms = applied(scan.stderr)
                add("scan_wall", scan.wall)
                add("scan_cpu", scan.cpu)
                add("scan_runq", scan.runq)
                add("scan_apply", ms / 1e3)
                add("scan_writes", writes)
                before, n = f.imds_requests(), len(f.imds.log.entries())
                refresh = r.ec2net("-vv", "refresh")
                add("refresh_imds", f.imds_requests() - before)
                answered = [e.time for e in f.imds.log.entries()[n:]]
                add("refresh_imds_span", max(answered) - min(answered) if answered else 0.0)
                add("refresh_wall", refresh.wall)
                add("refresh_cpu", refresh.cpu)
                add("refresh_runq", refresh.runq)
                add("refresh_writes", applied(refresh.stderr)[0])
                ip_batch(f.instance_ns, v4, v6, undo=True)
    for py, row in rows.items():
        got: dict[str, Any] = {k: median(v) for k, v in row.items()}
        got.update(objects=len(v4) + len(v6), reps=reps, runs=row)
        got["rules"] = sum(ln.startswith("rule") for ln in (*v4, *v6))
        out[f"{pyroute2_version(py)}/{layout}"] = got
    return out


def imds_per_up() -> dict[str, int]:
    with Fabric(label="bench") as f:
        f.start()
        r = Runner(f)
        eni = f.new_eni("subnet-b", n_ipv4=11, n_ipv6=2)
        f.attach(eni, "eth1")
        before = f.imds_requests()
        r.ec2net("up", "eth1")
        up = f.imds_requests() - before
        before = f.imds_requests()
        r.ec2net("refresh")
        return {"up": up, "refresh": f.imds_requests() - before}


def cold_start(reps: int) -> dict[str, float]:
    helps, ups, firsts = [], [], []
    with Fabric(label="bench") as f:
        f.start()
        r = Runner(f)
        f.attach("02:00:0a:00:02:14", "eth1")
        r.ec2net("up", "eth1")
        assert f.imds is not None
        for _ in range(reps):
            helps.append(r.ec2net("--help").wall)
            n = len(f.imds.log.entries())
            start = time.monotonic()
            ups.append(r.ec2net("up", "eth1").wall)
            first = f.imds.log.entries()[n:]
            if first:
                firsts.append(first[0].time - start)
    return {
        "help_s": median(helps), "up_s": median(ups),
        "up_first_imds_s": median(firsts), "reps": reps,
    }  # fmt: skip


def measure(reps: int, pythons: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {"scale": {}, "pyroute2": {}}
    for py in pythons:
        out["pyroute2"][py] = pyroute2_version(py)
    for layout in ("contiguous", "scattered"):
        out["scale"].update(scale(pythons, layout, reps))
    out["imds"] = imds_per_up()
    out["cold"] = cold_start(max(reps, 5))
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--python", action="append", help="interpreter(s) to run ec2net with")
    ap.add_argument("--json", type=Path, help="also write the figures here")
    args = ap.parse_args()
    pythons = args.python or [p for p in (VENV_PYTHON, DEBIAN_PYTHON) if Path(p).exists()]
    got = measure(args.reps, pythons)
    print(f"scan of {ENIS} ENIs x {PER_ENI} IPv4 + {PER_ENI} IPv6, medians of {args.reps}:")
    for name, x in got["scale"].items():
        b = x["batch_wall"]
        print(
            f"  pyroute2 {name} ({x['objects']} objects, {x['rules']} rules):\n"
            f"    ip -batch {b * 1e3:6.0f} ms (CPU {x['batch_cpu'] * 1e3:5.0f})"
            f" | scan apply {x['scan_apply'] * 1e3:6.0f} ms {x['scan_apply'] / b:4.2f}x"
            f" | scan {x['scan_wall'] * 1e3:6.0f} ms (CPU {x['scan_cpu'] * 1e3:5.0f},"
            f" IMDS span {x['scan_imds_span'] * 1e3:4.0f}, waiting for a CPU"
            f" {x['scan_runq'] * 1e3:4.0f}) {x['scan_imds']:.0f} IMDS"
            f" {x['scan_writes']:.0f} writes\n"
            f"    refresh {x['refresh_wall'] * 1e3:5.0f} ms (CPU {x['refresh_cpu'] * 1e3:5.0f},"
            f" IMDS span {x['refresh_imds_span'] * 1e3:4.0f}, waiting for a CPU"
            f" {x['refresh_runq'] * 1e3:4.0f}) {x['refresh_imds']:.0f} IMDS"
            f" {x['refresh_writes']:.0f} writes"
        )
    print(f"IMDS requests, up of 10+1 IPv4 + 2 IPv6: {got['imds']['up']}, refresh "
          f"{got['imds']['refresh']}")  # fmt: skip
    c = got["cold"]
    print(
        f"cold start: --help {c['help_s'] * 1e3:.0f} ms; up: first IMDS request after "
        f"{c['up_first_imds_s'] * 1e3:.0f} ms, exit after {c['up_s'] * 1e3:.0f} ms"
    )
    if args.json:
        args.json.write_text(json.dumps(got, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
