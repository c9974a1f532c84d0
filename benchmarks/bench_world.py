"""How fast the simulated world is: start, attach, detach, assign, probe, teardown.

Run as root: `python3 benchmarks/bench_world.py [--rounds N]`. Prints figures only; the
tests make no timing assertions.
"""

from __future__ import annotations

import argparse
import ipaddress
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ec2sim.fabric import Fabric


def timed(fn: Callable[..., object], *args: object) -> float:
    t0 = time.perf_counter()
    fn(*args)
    return (time.perf_counter() - t0) * 1000.0


def report(name: str, samples: list[float]) -> None:
    med = statistics.median(samples)
    print(
        f"{name:34s} median {med:8.1f} ms  min {min(samples):8.1f}  max {max(samples):8.1f}"
        f"  (n={len(samples)})"
    )


def one_world(samples: dict[str, list[float]]) -> None:
    fabric = Fabric(label="bench")
    samples["up"].append(timed(fabric.start))
    try:
        for i in range(4):
            eni = fabric.new_eni("subnet-b", n_ipv4=3)
            name = f"eth{i + 1}"
            samples["attach"].append(timed(fabric.attach, eni, name))
            addr = ipaddress.IPv4Address(f"10.0.2.{200 + i}")
            samples["assign"].append(timed(fabric.assign, eni.mac, addr))
        primary = fabric.world.primary().ipv4s[0]
        for _ in range(5):
            samples["probe"].append(timed(fabric.probe, fabric.client_ns, primary))
            samples["imds"].append(timed(fabric.imds_get, "/latest/meta-data/mac"))
        for mac in [m for m in fabric.ports if m in fabric.world.enis][1:]:
            samples["detach"].append(timed(fabric.detach, mac))
    finally:
        samples["down"].append(timed(fabric.stop))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    names = {
        "up": "world up (4 netns + IMDS + echo)",
        "attach": "attach ENI (3 IPv4 + 1 IPv6)",
        "assign": "assign secondary IPv4",
        "detach": "detach ENI",
        "probe": "TCP probe client -> primary",
        "imds": "IMDS token PUT + GET from inst",
        "down": "teardown",
    }
    samples: dict[str, list[float]] = {k: [] for k in names}
    for _ in range(args.rounds):
        one_world(samples)
    for key, label in names.items():
        report(label, samples[key])
    return 0


if __name__ == "__main__":
    sys.exit(main())
