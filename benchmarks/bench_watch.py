"""Figures for the watch daemon (issue 4), in the simulated VPC.

  python3 benchmarks/bench_watch.py [--attaches N] [--idle SECONDS]

Prints: link event -> all addresses reachable (median, p95) over N attaches with only
`ec2net watch` running; the part of it before IMDS answers is visible in the daemon's
own log; IMDS requests per minute while idle with 4 ENIs (refresh interval 60 s, the
default); the daemon's RSS. Needs root.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "src")]

from ec2sim.fabric import Fabric  # noqa: E402


def start_daemon(f: Fabric, tmp: Path, interval: float) -> subprocess.Popen[str]:
    cfg = tmp / "ec2net.toml"
    cfg.write_text(f'[interfaces]\ndrivers = ["veth"]\n[refresh]\ninterval = {interval}\n')
    env = {
        **os.environ, "PYTHONPATH": str(ROOT / "src"),
        "EC2NET_CONFIG": str(cfg), "EC2NET_RUNTIME_DIR": str(tmp / "run"),
    }  # fmt: skip
    proc = subprocess.Popen(
        ["ip", "netns", "exec", f.instance_ns, sys.executable, "-m", "ec2net", "watch"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    time.sleep(1.5)
    return proc


def stop(proc: subprocess.Popen[str]) -> None:
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=30)


def rss_kib(pid: int) -> int:
    # the python child of `ip netns exec` (exec'd in place: same pid)
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def attach_latency(n: int) -> list[float]:
    """Attach -> ec2net's record written (polled every 2 ms), then every address is
    probed once over TCP and must answer. Probing in a loop instead would measure the
    router's ARP retry timers (1 s), not ec2net."""
    out = []
    with Fabric(label="bench") as f:
        f.start()
        tmp = Path(tempfile.mkdtemp())
        daemon = start_daemon(f, tmp, 60)
        try:
            for i in range(n):
                eni = f.new_eni("subnet-b", n_ipv4=3, n_ipv6=1)
                addrs = [str(a) for a in (*eni.ipv4s, *eni.ipv6s)]
                record = tmp / "run" / "enis" / (eni.mac.replace(":", "-") + ".json")
                start = time.perf_counter()
                f.attach(eni, "eth1")
                deadline = start + 30
                while not record.exists() and time.perf_counter() < deadline:
                    time.sleep(0.002)
                took = time.perf_counter() - start
                pending = [a for a in addrs if not f.probe(f.client_ns, a, timeout=2)]
                if pending:
                    raise RuntimeError(f"attach {i}: {pending} not reachable")
                out.append(took)
                f.detach(eni.mac)
                time.sleep(0.3)  # let the daemon clean up before the next attach
        finally:
            stop(daemon)
    return out


def idle(seconds: float) -> tuple[float, int]:
    with Fabric(label="bench") as f:
        f.start()
        for i in range(3):
            f.attach(f.new_eni("subnet-b", n_ipv4=3, n_ipv6=1), f"eth{i + 1}")
        daemon = start_daemon(f, Path(tempfile.mkdtemp()), 60)
        try:
            time.sleep(3)  # initial scan done
            before = f.imds_requests()
            time.sleep(seconds)
            per_min = (f.imds_requests() - before) * 60 / seconds
            rss = rss_kib(daemon.pid)
        finally:
            stop(daemon)
    return per_min, rss


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--attaches", type=int, default=20)
    ap.add_argument("--idle", type=float, default=130.0)
    args = ap.parse_args()
    lat = sorted(attach_latency(args.attaches))
    p95 = lat[min(len(lat) - 1, round(0.95 * (len(lat) - 1)))]
    print(f"python {sys.version.split()[0]}")
    print(f"attach -> configured, all 4 addresses then reachable, {len(lat)} attaches:")
    print(
        f"  median {statistics.median(lat) * 1e3:.1f} ms, p95 {p95 * 1e3:.1f} ms, "
        f"min {lat[0] * 1e3:.1f} ms"
    )
    per_min, rss = idle(args.idle)
    print("idle, 4 ENIs (primary unmanaged + 3 managed), refresh.interval 60 s:")
    print(
        f"  IMDS requests per minute: {per_min:.1f}  (3 per managed dual-stack ENI per "
        "interval: listing, local-ipv4s, ipv6s)"
    )
    print(f"  daemon RSS: {rss / 1024:.1f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
