"""A narrated run of ec2net in the simulated VPC (see tools/demo)."""

from __future__ import annotations

import ipaddress
import os
import shutil
import sys
import tempfile
from pathlib import Path

sys.path[:0] = [
    str(Path(__file__).resolve().parents[1]),
    str(Path(__file__).resolve().parents[1] / "src"),
]

from ec2sim.fabric import Fabric  # noqa: E402

SECOND = "02:00:0a:00:02:14"


def main() -> int:
    tmp = Path(tempfile.mkdtemp(prefix="ec2net-demo-"))
    try:
        return demo(tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def demo(tmp: Path) -> int:
    config = tmp / "ec2net.toml"
    # netlink explicitly: `auto` would pick a network manager running on this host and
    # write its files outside the demo's namespaces.
    config.write_text('[interfaces]\ndrivers = ["veth"]\n[backend]\nname = "netlink"\n')
    env = {
        **os.environ,
        "EC2NET_CONFIG": str(config),
        "EC2NET_RUNTIME_DIR": str(tmp / "run"),
        "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src"),
    }
    with Fabric(label="demo") as f:
        f.start()
        inst = f.instance_ns

        def ec2net(*args: str) -> None:
            print(f"\n$ ip netns exec {inst} ec2net {' '.join(args)}")
            proc = f.run(inst, [sys.executable, "-m", "ec2net", *args], env=env, check=False)
            print((proc.stdout + proc.stderr).rstrip())

        def reach(addrs: list[str]) -> None:
            for a in addrs:
                ok = f.probe(f.client_ns, a)
                print(f"  client 10.0.3.100 -> {a:<24} {'reachable' if ok else 'DROPPED'}")

        print(f"world {f.prefix}: router, instance ({inst}), client ({f.client_ns}), peer")
        print("IMDS at 169.254.169.254 inside the world; the router drops packets whose")
        print("source address is not assigned to the ENI they leave by (EC2's check).")
        eni = f.attach(SECOND, "eth1")
        addrs = [str(a) for a in (*eni.ipv4s, *eni.ipv6s)]
        print(f"\nattached {eni.eni_id} as eth1: {', '.join(addrs)}")
        print("\nWith the addresses alone (no policy routing), replies leave by eth0:")
        f.ip(inst, "link", "set", "eth1", "up")
        f.ip(inst, "addr", "add", f"{eni.ipv4s[0]}/24", "dev", "eth1", "noprefixroute")
        reach(addrs[:1])
        f.ip(inst, "addr", "del", f"{eni.ipv4s[0]}/24", "dev", "eth1")
        ec2net("plan", "eth1")
        ec2net("up", "eth1")
        reach(addrs)
        print(f"\n$ ip -n {inst} rule")
        print(f.ip(inst, "rule").rstrip())
        ec2net("status")
        new = ipaddress.IPv4Address("10.0.2.50")
        print(f"\nIMDS: {new} assigned to {eni.eni_id}")
        f.assign(SECOND, new)
        ec2net("refresh")
        reach([str(new)])
        print("\nENI detached; a scan removes everything ec2net added:")
        f.detach(SECOND)
        ec2net("scan")
        # `ip rule show proto 236` would list the kernel's default rules too (they
        # carry no protocol attribute), so filter the lines.
        print(f"$ ip -n {inst} rule | grep 'proto 236'")
        ours = [line for line in f.ip(inst, "rule").splitlines() if "proto 236" in line]
        print("\n".join(ours) or "  (none)")
    print("\nworld removed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
