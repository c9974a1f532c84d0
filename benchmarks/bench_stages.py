"""Netlink dumps per verb and the cost of a no-change refresh, for this tree and an
older revision side by side in one run (issue 12's before/after figures).

  python3 benchmarks/bench_stages.py [--before REV] [--reps N]

Dumps are counted with strace (netlink requests carrying NLM_F_DUMP, by message type)
around one `ec2net` process inside the simulated VPC: `up` of a new ENI, a no-change
`up`, a no-change `refresh` and a `scan`, with three ENIs present. Then 15 ENIs x 50
IPv4: the `scan` that configures them against the no-change `refresh` that follows
(wall time, medians of N). Needs root, strace and git.
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
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "src")]

from ec2sim.fabric import Fabric  # noqa: E402
from ec2sim.world import Subnet, default_world  # noqa: E402

KINDS = ("RTM_GETLINK", "RTM_GETADDR", "RTM_GETROUTE", "RTM_GETRULE")
DUMP = re.compile(r"nlmsg_type=(RTM_GET\w+), nlmsg_flags=[^,]*NLM_F_DUMP")


class Runner:
    def __init__(self, f: Fabric, src: Path, tmp: Path) -> None:
        self.f = f
        cfg = tmp / "ec2net.toml"
        cfg.write_text('[interfaces]\ndrivers = ["veth"]\n[backend]\nname = "netlink"\n')
        self.env = {
            **os.environ, "PYTHONPATH": str(src),
            "EC2NET_CONFIG": str(cfg), "EC2NET_RUNTIME_DIR": str(tmp / "run"),
        }  # fmt: skip

    def ec2net(self, *args: str, trace: bool = False) -> tuple[float, Counter[str]]:
        argv = [sys.executable, "-m", "ec2net", "-q", *args]
        log = Path(tempfile.mktemp(prefix="ec2net-strace-"))
        if trace:
            argv = ["strace", "-f", "-s", "128", "-e", "trace=sendto,sendmsg", "-o", str(log),
                    *argv]  # fmt: skip
        start = time.perf_counter()
        self.f.run(self.f.instance_ns, argv, env=self.env, timeout=600)
        took = time.perf_counter() - start
        counts: Counter[str] = Counter()
        if trace:
            counts.update(DUMP.findall(log.read_text()))
            log.unlink()
        return took, counts


def dumps(src: Path) -> dict[str, Counter[str]]:
    out = {}
    with Fabric(label="bench") as f:
        f.start()
        r = Runner(f, src, Path(tempfile.mkdtemp()))
        for i in range(3):
            f.attach(f.new_eni("subnet-b", n_ipv4=3, n_ipv6=1), f"eth{i + 1}")
        out["up (new ENI)"] = r.ec2net("up", "eth1", trace=True)[1]
        out["up (no change)"] = r.ec2net("up", "eth1", trace=True)[1]
        out["scan (2 new of 3)"] = r.ec2net("scan", trace=True)[1]
        out["refresh (3, no change)"] = r.ec2net("refresh", trace=True)[1]
    return out


def scale(src: Path, reps: int) -> tuple[float, float]:
    scans, refreshes = [], []
    for _ in range(reps):
        w = default_world()
        w.subnets["subnet-b"] = Subnet("subnet-b", ipaddress.IPv4Network("10.0.16.0/20"))
        with Fabric(world=w, label="bench") as f:
            f.start()
            r = Runner(f, src, Path(tempfile.mkdtemp()))
            pool = list(ipaddress.IPv4Network("10.0.16.0/20").hosts())[200:]
            random.Random(7).shuffle(pool)
            for i in range(15):
                eni = f.attach(f.new_eni("subnet-b", n_ipv4=1, n_ipv6=0), f"eth{i + 1}")
                for _ in range(49):
                    f.assign(eni.mac, pool.pop())
            scans.append(r.ec2net("scan")[0])
            refreshes.append(r.ec2net("refresh")[0])
    return statistics.median(scans), statistics.median(refreshes)


def checkout(rev: str) -> Path:
    work = Path(tempfile.mkdtemp(prefix="ec2net-before-"))
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", rev], check=True,
                             capture_output=True).stdout  # fmt: skip
    subprocess.run(["tar", "-x", "-C", str(work)], input=archive, check=True)
    return work / "src"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--before", default="8cff262", help="revision to compare (default: %(default)s)"
    )
    ap.add_argument("--reps", type=int, default=3)
    args = ap.parse_args()
    trees = {f"before ({args.before})": checkout(args.before), "now": ROOT / "src"}
    counted = {name: dumps(src) for name, src in trees.items()}
    print("netlink dumps per command (link / addr / route / rule), 3 ENIs present:")
    verbs = list(next(iter(counted.values())))
    print(f"  {'':26}" + "".join(f"{name:>22}" for name in trees))
    for verb in verbs:
        cells = ["/".join(str(counted[n][verb][k]) for k in KINDS) for n in trees]
        print(f"  {verb:26}" + "".join(f"{c:>22}" for c in cells))
    print(f"\n15 ENIs x 50 IPv4, whole command (medians of {args.reps}, this machine):")
    for name, src in trees.items():
        s, r = scale(src, args.reps)
        print(f"  {name:20} scan {s * 1e3:7.0f} ms   no-change refresh {r * 1e3:7.0f} ms"
              f"   refresh/scan {r / s:.2f}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
