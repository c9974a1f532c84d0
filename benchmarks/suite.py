"""The benchmark suite: every figure of docs/performance.md, measured in one run.

  make bench               # the simulated VPC (about 8 minutes here)
  make bench SYSTEM=1      # plus benchmarks/bench_system.py (QEMU guests, ~12 minutes)
  .venv/bin/python benchmarks/suite.py [--quick] [--system] [--out docs]

Runs bench_netlink_apply (once per Python: .venv's pyroute2 and Debian's), bench_engine,
bench_watch, bench_growth and bench_large (64 ENIs on 32 cards, .venv's Python), writes
the raw figures to docs/perf/figures.json, the charts to docs/perf/*.png and the report
to docs/performance.md (benchmarks/report.py).
Without --system the AWS tool's figures come from the last bench_system table in
systest/README.md. Needs root.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import platform
import pstats
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_engine
import bench_growth
import bench_large
import bench_netlink_apply
import bench_watch
import report
from common import DEBIAN_PYTHON, ROOT, VENV_PYTHON, pyroute2_version


def pythons() -> list[str]:
    return [p for p in (VENV_PYTHON, DEBIAN_PYTHON) if Path(p).exists()]


def apply_figures(reps: int) -> dict[str, Any]:
    """bench_netlink_apply under each Python, each in its own process."""
    out = {}
    for py in pythons():
        with tempfile.NamedTemporaryFile(suffix=".json") as tmp:
            subprocess.run(
                [py, str(ROOT / "benchmarks" / "bench_netlink_apply.py"), "--reps", str(reps),
                 "--json", tmp.name],
                env={**os.environ, "PYTHONPATH": str(ROOT / "src")}, check=True,
                stdout=subprocess.DEVNULL,
            )  # fmt: skip
            got = json.loads(Path(tmp.name).read_text())
        out[got["pyroute2"]] = got
    return out


def apply_profile() -> str:
    """Where a bulk apply's time goes (this Python's pyroute2), by own time."""
    from ec2net.backends.netlink import NetlinkBackend
    from ec2net.model import Change, ChangeSet, Op

    changes = ChangeSet(tuple(Change(Op.ADD, o) for o in bench_netlink_apply.build_objects()))
    prof = cProfile.Profile()
    with bench_netlink_apply.fresh_namespace(), NetlinkBackend() as backend:
        prof.enable()
        backend.apply(changes)
        prof.disable()
    text = io.StringIO()
    pstats.Stats(prof, stream=text).sort_stats("tottime").print_stats(12)
    lines = [ln for ln in text.getvalue().splitlines() if ln.strip()]
    start = next(i for i, ln in enumerate(lines) if ln.lstrip().startswith("ncalls"))
    head = next(ln for ln in lines if "function calls" in ln).strip()
    body = [re.sub(r"\S*/(site|dist)-packages/", "", ln) for ln in lines[start:]]
    body = [ln.replace(str(ROOT) + "/src/", "") for ln in body]
    return "\n".join([head, *body])


def aws_from_readme() -> dict[str, Any]:
    """The AWS tool's column of the last bench_system table in systest/README.md."""
    text = (ROOT / "systest" / "README.md").read_text()
    rows = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 3 and cells[0].startswith("IMDS requests"):
            rows[cells[0]] = (cells[1], cells[2])
    per_attach = rows.get("IMDS requests per attach", ("", ""))
    idle = rows.get("IMDS requests per idle minute (2 ENIs)", ("", ""))

    def first(s: str) -> float:
        m = re.match(r"[\d.]+", s)
        return float(m.group()) if m else float("nan")

    return {
        "source": "systest/README.md (last bench_system run)",
        "aws_per_attach": first(per_attach[1]), "ec2net_per_attach": first(per_attach[0]),
        "aws_idle_per_min_2enis": first(idle[1]), "ec2net_idle_per_min_2enis": first(idle[0]),
    }  # fmt: skip


def system_figures(out_dir: Path) -> dict[str, Any]:
    path = out_dir / "perf" / "system.json"
    subprocess.run([VENV_PYTHON, str(ROOT / "benchmarks" / "bench_system.py"), "--json",
                    str(path)], check=True)  # fmt: skip
    data = json.loads(path.read_text())
    by_tool = {m["tool"]: m for m in data["results"]}
    aws: dict[str, Any] = next((m for t, m in by_tool.items() if t.startswith("amazon")), {})
    ours: dict[str, Any] = next((m for t, m in by_tool.items() if t.startswith("ec2net")), {})

    def med(xs: list[float]) -> float:
        return sorted(xs)[len(xs) // 2] if xs else float("nan")

    return {
        "source": "benchmarks/bench_system.py, this run (docs/perf/system.json)",
        "aws_per_attach": med(aws.get("imds_per_attach", [])),
        "ec2net_per_attach": med(ours.get("imds_per_attach", [])),
        "aws_idle_per_min_2enis": aws.get("imds_idle_per_min") or float("nan"),
        "ec2net_idle_per_min_2enis": ours.get("imds_idle_per_min") or float("nan"),
    }


def machine() -> dict[str, Any]:
    return {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "kernel": platform.release(), "cpus": os.cpu_count(),
        "load_before": os.getloadavg()[0],
        "pythons": {py: pyroute2_version(py) for py in pythons()},
        "python_versions": {
            py: subprocess.run([py, "-c", "import sys; print(sys.version.split()[0])"],
                               capture_output=True, text=True, check=False).stdout.strip()
            for py in pythons()
        },
    }  # fmt: skip


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer repetitions (a smoke run)")
    ap.add_argument("--system", action="store_true", help="also run bench_system (QEMU)")
    ap.add_argument("--out", type=Path, default=ROOT / "docs", help="docs directory")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("needs root (network namespaces)", file=sys.stderr)
        return 1
    (args.out / "perf").mkdir(parents=True, exist_ok=True)
    reps, attaches = (2, 4) if args.quick else (3, 20)
    t0 = time.monotonic()
    fig: dict[str, Any] = {"machine": machine()}
    steps = (
        ("apply", lambda: apply_figures(3 if args.quick else 9)),
        ("profile", apply_profile),
        ("engine", lambda: bench_engine.measure(reps, pythons())),
        ("watch", lambda: bench_watch.measure(attaches, 12.0 if args.quick else 24.0)),
        ("growth", bench_growth.measure),
        ("large", lambda: bench_large.measure(reps, VENV_PYTHON, 12.0 if args.quick else 20.0)),
        ("aws", lambda: system_figures(args.out) if args.system else aws_from_readme()),
    )
    for name, step in steps:
        t = time.monotonic()
        print(f"suite: {name} ...", flush=True)
        fig[name] = step()
        print(f"suite: {name} done in {time.monotonic() - t:.0f} s", flush=True)
    fig["machine"]["suite_s"] = time.monotonic() - t0
    qemu = args.out / "perf" / "system.json"  # bench_system.py --json, this run's or earlier
    if qemu.exists():
        fig["qemu"] = json.loads(qemu.read_text())
        fig["qemu"]["date"] = time.strftime(
            "%Y-%m-%d %H:%M UTC", time.gmtime(qemu.stat().st_mtime)
        )
    fig["machine"]["quick"] = args.quick
    (args.out / "perf" / "figures.json").write_text(json.dumps(fig, indent=1) + "\n")
    report.write(fig, args.out)
    print(f"suite: wrote {args.out / 'performance.md'} in {time.monotonic() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
