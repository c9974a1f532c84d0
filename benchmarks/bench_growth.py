"""How the cost grows with the addresses ec2net owns, in the simulated VPC (issue 15).

  python3 benchmarks/bench_growth.py [--json FILE]

Points: 10 owned IPv4 addresses (one ENI), 100 (2 ENIs x 50), 750 (15 x 50), each
scattered over the subnet as EC2 assigns secondaries (about three rules per
address), and 3006: the 750 plus 141 delegated /28 prefixes (2256 addresses, three
rules per prefix). Per point: `ec2net scan` (wall, CPU, peak RSS of the process), the
no-change `refresh` after it, and the rules of protocol 236 in the kernel. Needs root.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import math
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import Fabric, Runner, big_world

PER_ENI = 50
# Scattered addresses from the /20's first /22, prefixes from the rest (no overlap).
ADDRESS_SPACE = ipaddress.IPv4Network("10.0.16.0/22")
PREFIX_SPACE = [
    *ipaddress.IPv4Network("10.0.20.0/22").subnets(new_prefix=28),
    *ipaddress.IPv4Network("10.0.24.0/21").subnets(new_prefix=28),
]
POINTS: tuple[tuple[int, int], ...] = ((10, 0), (100, 0), (750, 0), (750, 141))


def rules_of_ours(ns: str) -> int:
    n = 0
    for fam in ("-4", "-6"):
        out = subprocess.run(["ip", "-n", ns, fam, "rule", "show"], capture_output=True,
                             text=True, check=True).stdout  # fmt: skip
        n += sum("proto 236" in ln for ln in out.splitlines())
    return n


def point(n_addresses: int, n_prefixes: int, python: str = sys.executable) -> dict[str, Any]:
    enis = max(1, math.ceil(n_addresses / PER_ENI))
    pool = list(ADDRESS_SPACE.hosts())[200:]
    random.Random(11).shuffle(pool)
    prefixes = list(PREFIX_SPACE[:n_prefixes])
    with Fabric(world=big_world(), label="bench") as f:
        f.start()
        for i in range(enis):
            eni = f.attach(f.new_eni("subnet-b", n_ipv4=1, n_ipv6=0), f"eth{i + 1}")
            for _ in range(min(PER_ENI, n_addresses - i * PER_ENI) - 1):
                f.assign(eni.mac, pool.pop())
            share = math.ceil(len(prefixes) / (enis - i))
            for _ in range(share):
                f.assign(eni.mac, prefixes.pop())
        r = Runner(f, python)
        scan = r.ec2net("scan")
        refresh = r.ec2net("refresh")
        rules = rules_of_ours(f.instance_ns)
    return {
        "owned": n_addresses + 16 * n_prefixes, "addresses": n_addresses,
        "prefixes": n_prefixes, "enis": enis, "rules": rules,
        "scan_wall": scan.wall, "scan_cpu": scan.cpu, "scan_rss_kib": scan.maxrss_kib,
        "refresh_wall": refresh.wall, "refresh_cpu": refresh.cpu,
        "refresh_rss_kib": refresh.maxrss_kib,
    }  # fmt: skip


def measure() -> list[dict[str, Any]]:
    return [point(n, p) for n, p in POINTS]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--json", type=Path, help="also write the figures here")
    args = ap.parse_args()
    got = measure()
    print("owned  ENIs  rules   scan ms (CPU)   RSS MiB   refresh ms (CPU)")
    for x in got:
        print(
            f"{x['owned']:5}  {x['enis']:4}  {x['rules']:5}  {x['scan_wall'] * 1e3:7.0f}"
            f" ({x['scan_cpu'] * 1e3:5.0f})  {x['scan_rss_kib'] / 1024:7.1f}"
            f"   {x['refresh_wall'] * 1e3:7.0f} ({x['refresh_cpu'] * 1e3:5.0f})"
        )
    if args.json:
        args.json.write_text(json.dumps(got, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
