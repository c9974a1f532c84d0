"""Figures for the engine (issue 3), measured in the simulated VPC in one run.

  python3 benchmarks/bench_engine.py [--reps N]

Prints: IMDS requests for `up` of one ENI with 10 secondary IPv4 + 2 IPv6 and for a
no-change `refresh`; rtnetlink changes a no-change refresh makes (seen by `ip monitor`);
`scan` of 15 ENIs x 50 IPv4 against one `ip -force -batch` of the same objects; cold
start of `ec2net --help` and of a no-change `ec2net up`. Needs root.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import random
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "src")]

from ec2sim.fabric import Fabric  # noqa: E402
from ec2sim.world import Subnet, default_world  # noqa: E402


class Runner:
    def __init__(self, f: Fabric, tmp: Path) -> None:
        self.f = f
        cfg = tmp / "ec2net.toml"
        cfg.write_text('[interfaces]\ndrivers = ["veth"]\n')
        self.env = {
            **os.environ, "PYTHONPATH": str(ROOT / "src"),
            "EC2NET_CONFIG": str(cfg), "EC2NET_RUNTIME_DIR": str(tmp / "run"),
        }  # fmt: skip

    def ec2net(self, *args: str) -> tuple[float, subprocess.CompletedProcess[str]]:
        start = time.perf_counter()
        proc = self.f.run(
            self.f.instance_ns, [sys.executable, "-m", "ec2net", *args], env=self.env,
            timeout=300,
        )  # fmt: skip
        return time.perf_counter() - start, proc


def imds_figures(reps: int) -> None:
    ups, refreshes, changes = [], [], []
    for _ in range(reps):
        with Fabric(label="bench") as f:
            f.start()
            r = Runner(f, Path(tempfile.mkdtemp()))
            eni = f.new_eni("subnet-b", n_ipv4=11, n_ipv6=2)
            f.attach(eni, "eth1")
            before = f.imds_requests()
            r.ec2net("up", "eth1")
            ups.append(f.imds_requests() - before)
            mon = subprocess.Popen(
                ["ip", "-n", f.instance_ns, "monitor", "address", "route", "rule", "link"],
                stdout=subprocess.PIPE, text=True,
            )  # fmt: skip
            time.sleep(0.2)
            before = f.imds_requests()
            r.ec2net("refresh")
            refreshes.append(f.imds_requests() - before)
            time.sleep(0.2)
            mon.terminate()
            out, _ = mon.communicate(timeout=5)
            changes.append(len([ln for ln in out.splitlines() if ln.strip()]))
    print("IMDS requests, one ENI with 10 secondary IPv4 + 2 IPv6 (fresh runtime dir):")
    print(f"  up: {statistics.median(ups):.0f}   (goal <= 12; AWS v2 tool ~18)")
    print(f"  no-change refresh: {statistics.median(refreshes):.0f}   (goal <= 1 + ENIs = 2)")
    print(f"  rtnetlink changes during the no-change refresh: {max(changes)}   (goal 0)")


def _big_world() -> object:
    w = default_world()
    w.subnets["subnet-b"] = Subnet("subnet-b", ipaddress.IPv4Network("10.0.16.0/20"))
    return w


def batch_lines(plan_out: str) -> tuple[list[str], list[str]]:
    """`ec2net plan`-style change lines -> `ip -batch` lines (v4, v6)."""
    v4: list[str] = []
    v6: list[str] = []
    for line in plan_out.splitlines():
        m = re.match(r"\s+add (-6 )?(address|route|rule) (.*)", line)
        if not m:
            continue
        six, kind, rest = m.groups()
        if kind == "address":
            rest = rest.replace("address ", "")
            ln = f"address add {rest} nodad" if ":" in rest else f"address add {rest}"
        elif kind == "route":
            ln = f"route add {rest} proto 236"
        else:
            ln = f"rule add {rest.replace('pref', 'pref', 1)} proto 236"
        is6 = bool(six) or (kind != "rule" and ":" in rest.split()[0])
        (v6 if is6 else v4).append(ln)
    return v4, v6


def scan_figures(reps: int) -> None:
    scans, applies, batches, requests = [], [], [], []
    for _ in range(reps):
        with Fabric(world=_big_world(), label="bench") as f:  # type: ignore[arg-type]
            f.start()
            r = Runner(f, Path(tempfile.mkdtemp()))
            # Secondaries scattered over the subnet, as EC2 assigns them: they rarely
            # aggregate, so this is the worst case of two rules per address.
            pool = list(ipaddress.IPv4Network("10.0.16.0/20").hosts())[200:]
            random.Random(7).shuffle(pool)
            for i in range(15):
                eni = f.attach(f.new_eni("subnet-b", n_ipv4=1, n_ipv6=0), f"eth{i + 1}")
                for _ in range(49):
                    f.assign(eni.mac, pool.pop())
            before = f.imds_requests()
            took, proc = r.ec2net("-vv", "scan")
            requests.append(f.imds_requests() - before)
            scans.append(took)
            m = re.search(r"applied (\d+) of (\d+) changes in ([\d.]+) ms", proc.stderr)
            assert m, proc.stderr[-2000:]
            applies.append(float(m.group(3)) / 1e3)
            n_objects = int(m.group(2))
            v4, v6 = batch_lines(proc.stdout)
            assert len(v4) + len(v6) == n_objects, (len(v4), len(v6), n_objects)
            for i in range(15):
                r.ec2net("down", f"eth{i + 1}")
            start = time.perf_counter()
            subprocess.run(
                ["ip", "-n", f.instance_ns, "-force", "-batch", "-"],
                input="\n".join(v4) + "\n",
                text=True,
                check=True,
            )
            if v6:
                subprocess.run(
                    ["ip", "-n", f.instance_ns, "-6", "-force", "-batch", "-"],
                    input="\n".join(v6) + "\n",
                    text=True,
                    check=True,
                )
            batches.append(time.perf_counter() - start)
    s, a, b = (statistics.median(x) for x in (scans, applies, batches))
    print(f"\nscan of 15 ENIs x 50 IPv4 ({n_objects} objects), medians of {reps}:")
    print(f"  one `ip -force -batch` (process incl.):   {b * 1e3:8.1f} ms   1.00x")
    print(f"  ec2net scan, apply phase:                {a * 1e3:8.1f} ms   {a / b:.2f}x")
    print(
        f"  ec2net scan, whole command incl. IMDS:   {s * 1e3:8.1f} ms   {s / b:.2f}x"
        f"   ({statistics.median(requests):.0f} IMDS requests)"
    )


def cold_start(reps: int) -> None:
    helps, ups = [], []
    with Fabric(label="bench") as f:
        f.start()
        r = Runner(f, Path(tempfile.mkdtemp()))
        f.attach("02:00:0a:00:02:14", "eth1")
        r.ec2net("up", "eth1")
        for _ in range(reps):
            helps.append(r.ec2net("--help")[0])
            ups.append(r.ec2net("up", "eth1")[0])
    print(f"\ncold start, medians of {reps} (inside `ip netns exec`):")
    print(f"  ec2net --help:          {statistics.median(helps) * 1e3:7.1f} ms")
    print(f"  ec2net up (no change):  {statistics.median(ups) * 1e3:7.1f} ms")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--reps", type=int, default=3)
    args = ap.parse_args()
    print(f"python {sys.version.split()[0]} ({sys.executable})")
    imds_figures(args.reps)
    scan_figures(args.reps)
    cold_start(max(args.reps, 5))
    return 0


if __name__ == "__main__":
    sys.exit(main())
