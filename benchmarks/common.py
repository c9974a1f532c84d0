"""What the benchmarks share: an `ec2net` runner inside the simulated VPC that reports
wall time, CPU time, run-queue wait and peak memory per process (os.wait4 on the
process itself), the big world (a /20 subnet for hundreds of addresses), address
pools, `ip -batch` lines for the floor, and summary statistics.
"""

from __future__ import annotations

import ipaddress
import os
import random
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Optional

ROOT = Path(__file__).resolve().parents[1]
for _p in (str(ROOT), str(ROOT / "src")):
    if _p not in sys.path:
        sys.path.insert(0, _p)

from ec2sim.fabric import Fabric  # noqa: E402
from ec2sim.world import World, default_world  # noqa: E402

VENV_PYTHON = str(ROOT / ".venv" / "bin" / "python")
DEBIAN_PYTHON = "/usr/bin/python3"
BIG4 = ipaddress.IPv4Network("10.0.16.0/20")

__all__ = [
    "BIG4", "DEBIAN_PYTHON", "ROOT", "VENV_PYTHON", "Fabric", "Run", "Runner", "applied",
    "batch_lines", "big_world", "ip_batch", "median", "p95", "pyroute2_version",
    "run_delay", "scattered_pool", "summary",
]  # fmt: skip


@dataclass(frozen=True)
class Run:
    wall: float  # seconds, process start to exit
    cpu: float  # user + system seconds of the process
    maxrss_kib: int
    returncode: int
    stdout: str
    stderr: str
    # seconds the main thread was runnable but waited for a CPU (the kernel's run
    # delay, /proc/PID/schedstat): on a shared machine, wall time that is nobody's
    runq: float = 0.0


def pyroute2_version(python: str) -> str:
    out = subprocess.run(
        [python, "-c", "import importlib.metadata as m; print(m.version('pyroute2'))"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    return out.stdout.strip() or "?"


def run_delay(pid: int) -> float:
    """Wait for child `pid` to exit without reaping it, then read its main thread's
    run delay (seconds runnable but not running) while the zombie still holds it."""
    os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT)
    try:
        fields = Path(f"/proc/{pid}/schedstat").read_text().split()
        return int(fields[1]) / 1e9
    except (OSError, IndexError, ValueError):
        return float("nan")  # no schedstat in this kernel: unknown, never zero


class Runner:
    """`python -m ec2net ...` inside the fabric's instance namespace, with its own
    config and runtime directory."""

    def __init__(self, f: Fabric, python: str = sys.executable, *, extra_config: str = "") -> None:
        self.f = f
        self.python = python
        self.tmp = Path(tempfile.mkdtemp(prefix="ec2net-bench-"))
        self.config = self.tmp / "ec2net.toml"
        self.config.write_text(
            '[interfaces]\ndrivers = ["veth"]\n[backend]\nname = "netlink"\n' + extra_config
        )
        self.runtime = self.tmp / "run"
        self.env = {
            **os.environ, "PYTHONPATH": str(ROOT / "src"), "EC2NET_IMDS_URL": f.imds_url,
            "EC2NET_CONFIG": str(self.config), "EC2NET_RUNTIME_DIR": str(self.runtime),
        }  # fmt: skip

    def argv(self, *args: str) -> list[str]:
        # `ip netns exec` execs the command in place: the pid is python's own
        return ["ip", "netns", "exec", self.f.instance_ns, self.python, "-m", "ec2net", *args]

    def ec2net(self, *args: str, check: bool = True) -> Run:
        with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
            start = time.perf_counter()
            proc = subprocess.Popen(self.argv(*args), env=self.env, stdout=out, stderr=err)
            runq = run_delay(proc.pid)
            _, status, usage = os.wait4(proc.pid, 0)
            wall = time.perf_counter() - start
            proc.returncode = os.waitstatus_to_exitcode(status)
            out.seek(0)
            err.seek(0)
            run = Run(
                wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss,
                proc.returncode, out.read(), err.read(), runq,
            )  # fmt: skip
        if check and run.returncode != 0:
            raise RuntimeError(
                f"ec2net {' '.join(args)}: exit {run.returncode}\n{run.stderr[-3000:]}"
            )
        return run

    def popen(self, *args: str) -> subprocess.Popen[str]:
        # The log goes to a file: a pipe nobody reads fills after some 64 KiB of the
        # daemon's result lines (about 20 attaches of 20 addresses), and the daemon then
        # blocks in its next write.
        log = (self.tmp / f"{args[0] if args else 'ec2net'}.log").open("w")
        try:
            return subprocess.Popen(
                self.argv(*args), env=self.env, stdout=subprocess.DEVNULL, stderr=log,
                text=True,
            )  # fmt: skip
        finally:
            log.close()


def big_world() -> World:
    """The default world with subnet B widened to a /20 (room for 15 x 50 addresses)."""
    w = default_world()
    w.subnets["subnet-b"] = replace(w.subnets["subnet-b"], cidr4=BIG4)
    return w


def scattered_pool(seed: int = 7) -> list[ipaddress.IPv4Address]:
    """Free addresses of the big subnet in random order, as EC2 assigns secondaries:
    they rarely aggregate into CIDR blocks (the worst case for rules)."""
    pool = list(BIG4.hosts())[200:]
    random.Random(seed).shuffle(pool)
    return pool


APPLIED = re.compile(r"applied (\d+) of (\d+) changes in ([\d.]+) ms")


def applied(stderr: str) -> tuple[int, float]:
    """(netlink write requests, apply milliseconds) summed over a run's converges."""
    found = APPLIED.findall(stderr)
    return sum(int(m[1]) for m in found), sum(float(m[2]) for m in found)


def batch_lines(plan_out: str) -> tuple[list[str], list[str]]:
    """Change lines as `ec2net` prints them -> `ip -batch` lines (IPv4, IPv6)."""
    v4: list[str] = []
    v6: list[str] = []
    for line in plan_out.splitlines():
        m = re.match(r"\s+add (-6 )?(address|route|rule) (.*)", line)
        if not m:
            continue
        six, kind, rest = m.groups()
        if kind == "address":
            rest = rest.replace("address ", "")
            ln = f"address add {rest} nodad" if ":" in rest.split()[0] else f"address add {rest}"
        elif kind == "route":
            ln = f"route add {rest} proto 236"
        else:
            ln = f"rule add {rest} proto 236"
        is6 = bool(six) or (kind != "rule" and ":" in rest.split()[0])
        (v6 if is6 else v4).append(ln)
    return v4, v6


def ip_batch(ns: str, v4: Sequence[str], v6: Sequence[str], *, undo: bool = False) -> Run:
    """One `ip -force -batch` per family (ip cannot mix them); wall and CPU of both."""
    wall = cpu = 0.0
    for fam, lines in (([], v4), (["-6"], v6)):
        if not lines:
            continue
        text = "\n".join(ln.replace(" add ", " del ", 1) if undo else ln for ln in lines) + "\n"
        with tempfile.NamedTemporaryFile("w", suffix=".batch") as f:
            f.write(text)
            f.flush()
            start = time.perf_counter()
            argv = ["ip", "-n", ns, *fam, "-force", "-batch", f.name]
            proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            _, _, usage = os.wait4(proc.pid, 0)
            wall += time.perf_counter() - start
            cpu += usage.ru_utime + usage.ru_stime
    return Run(wall, cpu, 0, 0, "", "")


def median(xs: Sequence[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def p95(xs: Sequence[float]) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, round(0.95 * (len(s) - 1)))] if s else float("nan")


def summary(xs: Sequence[float]) -> dict[str, Optional[float]]:
    return {
        "median": median(xs), "p95": p95(xs), "min": min(xs, default=None),
        "max": max(xs, default=None), "n": len(xs),
    }  # fmt: skip
