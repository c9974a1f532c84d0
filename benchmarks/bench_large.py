"""The largest instances: 64 ENIs on 32 network cards, against 15 on one (issue 22).

  python3 benchmarks/bench_large.py [--reps N] [--python PATH] [--idle SECONDS] [--json FILE]

Each point is its own simulated VPC (a multi-card world: IMDS serves `network-card`)
where every ENI has 50 IPv4 and 50 IPv6 addresses, four ENIs per /24 subnet (the
simulated router answers NDP for a subnet's other ports: one subnet for 64 ENIs would
cost it 200,000 proxy entries): 15 ENIs on card 0 (devices 1-15), and 64 ENIs two per
card on 32 cards (card 0 devices 1-2, cards 1-31 devices 0-1). Per
point: `ec2net scan` from nothing (wall and CPU of the process, IMDS requests and their
span: first answer to last), then a no-change `refresh`; medians of the runs, each from
a clean kernel and an empty runtime directory. The growth is per ENI: scan CPU per ENI
at 64 against at 15. Then the daemon idles (`refresh.interval` 2 s) among the 64 ENIs:
IMDS requests per ENI per interval. Needs root.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_watch import MACS, start_daemon, stop
from common import Fabric, Runner, applied, batch_lines, ip_batch, median

from ec2sim.world import Subnet, World, default_world

PER_ENI = 50
POINTS = (15, 64)


def _layout(n: int) -> list[tuple[int, int]]:
    """(network card, device number) of n ENIs: on card 0 alone up to 15, else two per
    card (card 0 has the primary at device 0)."""
    if n <= 15:
        return [(0, d) for d in range(1, n + 1)]
    slots = [(0, 1), (0, 2)] + [(c, d) for c in range(1, 32) for d in (0, 1)]
    return slots[:n]


PER_SUBNET = 4


def large_world() -> World:
    """The default VPC with 16 more subnets (10.0.32-47.0/24 and their /64s), multi-card,
    without the default world's spare ENI (the layout numbers every device)."""
    w = default_world()
    w.multi_card = True
    w.enis = {m: e for m, e in w.enis.items() if m == w.primary_mac}
    for i in range(16):
        w.subnets[f"subnet-l{i}"] = Subnet(
            f"subnet-l{i}",
            ipaddress.IPv4Network(f"10.0.{32 + i}.0/24"),
            ipaddress.IPv6Network(f"2600:1f16:292:{0x20 + i:x}::/64"),
        )
    return w


def _world(n: int) -> Fabric:
    f = Fabric(world=large_world(), label="bench")
    f.start()
    try:
        for i, (card, dev) in enumerate(_layout(n)):
            eni = f.new_eni(
                f"subnet-l{i // PER_SUBNET}",
                network_card=card,
                device_number=dev,
                n_ipv4=PER_ENI,
                n_ipv6=PER_ENI,
            )
            f.attach(eni, f"eth{i + 1}")
    except BaseException:
        f.stop()
        raise
    return f


def point(n: int, reps: int, python: str) -> dict[str, Any]:
    rows: dict[str, list[float]] = {}

    def add(key: str, value: float) -> None:
        rows.setdefault(key, []).append(value)

    with _world(n) as f:
        assert f.imds is not None
        r = Runner(f, python)
        first = r.ec2net("-v", "scan")  # the objects, so each run starts from nothing
        v4, v6 = batch_lines(first.stdout)
        for _ in range(reps):
            ip_batch(f.instance_ns, v4, v6, undo=True)
            shutil.rmtree(r.runtime, ignore_errors=True)
            before, k = f.imds_requests(), len(f.imds.log.entries())
            scan = r.ec2net("scan")
            answered = [e.time for e in f.imds.log.entries()[k:]]
            add("scan_wall", scan.wall)
            add("scan_cpu", scan.cpu)
            add("scan_runq", scan.runq)
            add("scan_imds", f.imds_requests() - before)
            add("scan_imds_span", max(answered) - min(answered) if answered else 0.0)
            add("scan_rss_kib", scan.maxrss_kib)
            before, k = f.imds_requests(), len(f.imds.log.entries())
            refresh = r.ec2net("-vv", "refresh")
            answered = [e.time for e in f.imds.log.entries()[k:]]
            add("refresh_wall", refresh.wall)
            add("refresh_cpu", refresh.cpu)
            add("refresh_runq", refresh.runq)
            add("refresh_imds", f.imds_requests() - before)
            add("refresh_imds_span", max(answered) - min(answered) if answered else 0.0)
            add("refresh_writes", applied(refresh.stderr)[0])
    got: dict[str, Any] = {k: median(v) for k, v in rows.items()}
    got.update(enis=n, objects=len(v4) + len(v6), reps=reps, runs=rows)
    got["rules"] = sum(ln.startswith("rule") for ln in (*v4, *v6))
    return got


def idle(n: int, seconds: float, interval: float, python: str) -> dict[str, Any]:
    """The daemon among n ENIs: IMDS requests per ENI per refresh interval."""
    with _world(n) as f:
        runner, daemon = start_daemon(f, interval, python)
        try:
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:  # until its first scan configured all
                time.sleep(0.5)
                if len(list((runner.runtime / "enis").glob("*.json"))) >= n:
                    break
            time.sleep(interval + 1)
            macs = [e.mac for e in f.world.attached() if e.mac != f.world.primary_mac]
            before = sum(f.imds_requests(path_prefix=MACS + m) for m in macs)
            t0 = time.monotonic()
            time.sleep(seconds)
            took = time.monotonic() - t0
            per = sum(f.imds_requests(path_prefix=MACS + m) for m in macs) - before
        finally:
            stop(daemon)
    rounds = took / (interval * 1.05)  # the mean interval: up to 10 % jitter
    return {"interval_s": interval, "window_s": took, "per_eni_per_round": per / n / rounds}


def measure(reps: int, python: str, idle_s: float = 20.0) -> dict[str, Any]:
    out: dict[str, Any] = {"points": {}, "python": python}
    for n in POINTS:
        out["points"][str(n)] = point(n, reps, python)
    small, big = (out["points"][str(n)] for n in POINTS)
    out["growth"] = {
        "scan_cpu_per_eni_x": (big["scan_cpu"] / POINTS[1]) / (small["scan_cpu"] / POINTS[0]),
        "scan_wall_per_eni_x": (big["scan_wall"] / POINTS[1]) / (small["scan_wall"] / POINTS[0]),
        "refresh_cpu_per_eni_x": (big["refresh_cpu"] / POINTS[1])
        / (small["refresh_cpu"] / POINTS[0]),
    }
    out["idle"] = idle(POINTS[1], idle_s, 2.0, python)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--python", default=sys.executable)
    ap.add_argument("--idle", type=float, default=20.0, help="idle window, seconds")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    got = measure(args.reps, args.python, args.idle)
    print(f"{PER_ENI} IPv4 + {PER_ENI} IPv6 per ENI, medians of {args.reps}:")
    for n, x in got["points"].items():
        print(
            f"  {n} ENIs ({x['objects']} objects, {x['rules']} rules): scan "
            f"{x['scan_wall'] * 1e3:.0f} ms (CPU {x['scan_cpu'] * 1e3:.0f}, IMDS "
            f"{x['scan_imds']:.0f} in {x['scan_imds_span'] * 1e3:.0f} ms), "
            f"{x['scan_cpu'] / int(n) * 1e3:.1f} ms CPU per ENI; refresh "
            f"{x['refresh_wall'] * 1e3:.0f} ms (CPU {x['refresh_cpu'] * 1e3:.0f}, IMDS "
            f"{x['refresh_imds']:.0f})"
        )
    g = got["growth"]
    print(
        f"per ENI, 64 against 15: scan CPU {g['scan_cpu_per_eni_x']:.2f}x, wall "
        f"{g['scan_wall_per_eni_x']:.2f}x; refresh CPU {g['refresh_cpu_per_eni_x']:.2f}x"
    )
    i = got["idle"]
    print(
        f"idle daemon, 64 ENIs, interval {i['interval_s']:g} s: "
        f"{i['per_eni_per_round']:.2f} IMDS requests per ENI per interval"
    )
    if args.json:
        args.json.write_text(json.dumps(got, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
