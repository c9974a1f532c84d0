"""One ENI's metadata read two ways, side by side in one run: its keys one after
another (as ec2net read them before `ImdsClient.get_many`) and with their requests in
flight together (`metadata.fetch_eni` now), against the IMDS simulator on loopback.

  python3 benchmarks/bench_imds_reads.py [--rounds N]

`latency` is the simulator's delay per answer: 0 is loopback on this host; a few ms
stands for a round trip that costs what it does in a guest under emulation (TCG),
where one request took about 10 ms. Both ways read the same keys after the same
listing; wall and CPU time are the median of `--rounds` reads (the two take turns).
No root needed.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: F401  (puts the tree's src/ on sys.path)

from ec2net.imds import ImdsClient
from ec2net.metadata import DYNAMIC_KEYS, STATIC_KEYS, fetch_eni
from ec2sim.imds import ImdsServer
from ec2sim.world import default_world

SECOND = "02:00:0a:00:02:14"  # the default world's dual-stack second ENI


def one_after_another(client: ImdsClient, primary: str) -> None:
    base = f"network/interfaces/macs/{SECOND}/"
    listed = {line.strip().rstrip("/") for line in client.get(base).split("\n")}
    for key in (k for k in (*STATIC_KEYS, *DYNAMIC_KEYS) if k in listed):
        client.get(base + key)


def together(client: ImdsClient, primary: str) -> None:
    fetch_eni(client, SECOND, primary)


def timed(
    read: Callable[[ImdsClient, str], None], client: ImdsClient, primary: str
) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    read(client, primary)
    return (time.perf_counter() - wall) * 1000, (time.process_time() - cpu) * 1000


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=40)
    args = ap.parse_args()
    world = default_world()
    server = ImdsServer.listen(world, "127.0.0.1", 0)
    try:
        client = ImdsClient((server.url,), timeout=2.0)
        primary = world.primary_mac
        one_after_another(client, primary)  # token, warm-up
        print(
            "| latency per answer | requests | one after another, wall / CPU ms "
            "| in flight together, wall / CPU ms | wall ratio |"
        )
        print("|---|---|---|---|---|")
        for latency in (0.0, 0.002, 0.010):
            world.faults.latency = latency
            seq: list[tuple[float, float]] = []
            par: list[tuple[float, float]] = []
            for _ in range(args.rounds):
                seq.append(timed(one_after_another, client, primary))
                par.append(timed(together, client, primary))
            before = client.stats.total
            together(client, primary)
            requests = client.stats.total - before
            sw, sc = (statistics.median(x[i] for x in seq) for i in (0, 1))
            pw, pc = (statistics.median(x[i] for x in par) for i in (0, 1))
            print(
                f"| {latency * 1000:.0f} ms | {requests} | {sw:.1f} / {sc:.1f} "
                f"| {pw:.1f} / {pc:.1f} | {sw / pw:.1f}x |"
            )
    finally:
        server.stop()


if __name__ == "__main__":
    main()
