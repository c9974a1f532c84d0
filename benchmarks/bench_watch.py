"""Figures for the watch daemon, in the simulated VPC (issues 4 and 15).

  python3 benchmarks/bench_watch.py [--attaches N] [--idle SECONDS] [--json FILE]

- attach latency: link event -> the ENI's record written (ec2net's own verify passed),
  then every address probed once over TCP (16 at a time) through the source/destination check; over
  N attaches with only `ec2net watch` running, for 1, 10 and 50 addresses per ENI,
  IPv4 and dual-stack. Probing in a loop instead would measure the router's ARP retry
  timers (1 s), not ec2net. IMDS requests per attach come with it.
- idle IMDS load: requests per ENI per refresh round (IPv4-only and dual-stack ENIs;
  `refresh.interval` 2 s so that a window holds several listing cycles: at the default
  60 s one round is one minute).
- daemon memory (RSS) after its first scan, with 1 and 15 ENIs.
Needs root.
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import Fabric, Runner, big_world, median, summary

SIZES = (1, 10, 50)
MACS = "/latest/meta-data/network/interfaces/macs/"


def start_daemon(f: Fabric, interval: float, python: str = sys.executable) -> tuple[Runner, Any]:
    r = Runner(f, python, extra_config=f"[refresh]\ninterval = {interval}\n")
    proc = r.popen("watch")
    deadline = time.monotonic() + 30
    while not (r.runtime / "instance.json").exists() and time.monotonic() < deadline:
        time.sleep(0.01)  # the first scan has read the primary's MAC
    time.sleep(0.5)
    return r, proc


def stop(proc: subprocess.Popen[str]) -> None:
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=30)


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def attach_latency(n_ipv4: int, n_ipv6: int, attaches: int) -> list[dict[str, float]]:
    out = []
    with Fabric(world=big_world(), label="bench") as f:
        f.start()
        r, daemon = start_daemon(f, 600)
        try:
            for i in range(attaches):
                eni = f.new_eni("subnet-b", n_ipv4=n_ipv4, n_ipv6=n_ipv6)
                addrs = [str(a) for a in (*eni.ipv4s, *eni.ipv6s)]
                record = r.runtime / "enis" / (eni.mac.replace(":", "-") + ".json")
                before = f.imds_requests()
                start = time.perf_counter()
                f.attach(eni, "eth1")
                deadline = start + 30
                while not record.exists() and time.perf_counter() < deadline:
                    time.sleep(0.002)
                configured = time.perf_counter() - start
                with ThreadPoolExecutor(max_workers=16) as pool:  # probes side by side
                    ok = list(pool.map(lambda a: f.probe(f.client_ns, a, timeout=2), addrs))
                pending = [a for a, good in zip(addrs, ok) if not good]
                reachable = time.perf_counter() - start
                if pending:
                    raise RuntimeError(f"attach {i}: {pending} not reachable")
                out.append(
                    {"configured": configured, "reachable": reachable,
                     "imds": f.imds_requests() - before}
                )  # fmt: skip
                f.detach(eni.mac)
                deadline = time.perf_counter() + 10
                while record.exists() and time.perf_counter() < deadline:
                    time.sleep(0.01)  # the daemon cleaned up
        finally:
            stop(daemon)
    return out


def idle(seconds: float, interval: float) -> dict[str, Any]:
    """Requests per ENI per refresh round: 2 IPv4-only and 2 dual-stack ENIs."""
    with Fabric(world=big_world(), label="bench") as f:
        f.start()
        kinds: dict[str, str] = {}
        for i, (n4, n6) in enumerate(((3, 0), (3, 0), (3, 1), (3, 1))):
            eni = f.attach(f.new_eni("subnet-b", n_ipv4=n4, n_ipv6=n6), f"eth{i + 1}")
            kinds[eni.mac] = "ipv4" if n6 == 0 else "dual"
        _, daemon = start_daemon(f, interval)
        try:
            time.sleep(3 + interval)  # the first scan and its settling done
            before = {mac: f.imds_requests(path_prefix=MACS + mac) for mac in kinds}
            total = f.imds_requests()
            t0 = time.monotonic()
            time.sleep(seconds)
            took = time.monotonic() - t0
            per = {mac: f.imds_requests(path_prefix=MACS + mac) - n for mac, n in before.items()}
            total = f.imds_requests() - total
        finally:
            stop(daemon)
    rounds = took / (interval * 1.05)  # the mean interval: up to 10 % jitter
    by_kind: dict[str, list[float]] = {}
    for mac, n in per.items():
        by_kind.setdefault(kinds[mac], []).append(n / rounds)
    return {
        "interval_s": interval, "window_s": took, "rounds": rounds,
        "per_eni_per_round": {k: median(v) for k, v in by_kind.items()},
        "total_per_round": total / rounds, "enis": len(kinds),
    }  # fmt: skip


def daemon_rss(n_enis: int) -> int:
    with Fabric(world=big_world(), label="bench") as f:
        f.start()
        for i in range(n_enis):
            f.attach(f.new_eni("subnet-b", n_ipv4=3, n_ipv6=1), f"eth{i + 1}")
        r, daemon = start_daemon(f, 600)
        try:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                if len(list((r.runtime / "enis").glob("*.json"))) >= n_enis:
                    break
                time.sleep(0.05)
            time.sleep(1.0)
            return rss_kib(daemon.pid)
        finally:
            stop(daemon)


def measure(attaches: int = 20, idle_s: float = 24.0, interval: float = 2.0) -> dict[str, Any]:
    latency = {}
    for n in SIZES:
        for family, n6 in (("ipv4", 0), ("dual", n)):
            runs = attach_latency(n, n6, attaches)
            latency[f"{family}-{n}"] = {
                "addresses": n + n6, "family": family, "per_family": n,
                "configured": summary([x["configured"] for x in runs]),
                "reachable": summary([x["reachable"] for x in runs]),
                "imds_per_attach": summary([x["imds"] for x in runs]),
                "samples": [x["configured"] for x in runs],
            }  # fmt: skip
    return {
        "attach": latency,
        "idle": idle(idle_s, interval),
        "daemon_rss_kib": {"1": daemon_rss(1), "15": daemon_rss(15)},
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--attaches", type=int, default=20)
    ap.add_argument("--idle", type=float, default=24.0, help="idle window, seconds")
    ap.add_argument("--json", type=Path, help="also write the figures here")
    args = ap.parse_args()
    got = measure(args.attaches, args.idle)
    print(f"python {sys.version.split()[0]}; attach -> configured (then all reachable):")
    for name, x in got["attach"].items():
        c, reach = x["configured"], x["reachable"]
        print(
            f"  {name:8} median {c['median'] * 1e3:6.1f} ms  p95 {c['p95'] * 1e3:6.1f} ms"
            f"  (all reachable: median {reach['median'] * 1e3:6.1f} ms)"
            f"  IMDS/attach {x['imds_per_attach']['median']:.0f}"
        )
    idle_ = got["idle"]
    print(f"idle, refresh.interval {idle_['interval_s']} s, {idle_['rounds']:.1f} rounds:")
    for kind, v in idle_["per_eni_per_round"].items():
        print(f"  {kind}: {v:.2f} IMDS requests per ENI per round")
    rss = got["daemon_rss_kib"]
    print(f"daemon RSS: 1 ENI {rss['1'] / 1024:.1f} MiB, 15 ENIs {rss['15'] / 1024:.1f} MiB")
    if args.json:
        args.json.write_text(json.dumps(got, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
