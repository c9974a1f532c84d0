"""`python3 -m ec2sim up|down|imds`: the simulated world by hand.

up    start a world (primary as eth0, every other ENI of the world attached as eth1...,
      addresses NOT configured) plus IMDS, print how to enter it, run until SIGINT/SIGTERM
down  remove worlds recorded under /run/ec2sim (stopping a running `up` first)
imds  serve only IMDS for a world file (see ec2sim.imds)
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path
from types import FrameType
from typing import Optional

from ec2sim import netns
from ec2sim.fabric import Fabric
from ec2sim.imds import main_imds
from ec2sim.layout import IMDS_V4, IMDS_V6
from ec2sim.world import World, default_world


def _up(args: argparse.Namespace) -> int:
    world = World.load(Path(args.world)) if args.world else default_world()
    others = sorted(
        (e for e in world.enis.values() if e.mac != world.primary_mac),
        key=lambda e: (e.network_card, e.device_number),
    )
    attach = [(e.mac, f"eth{i + 1}") for i, e in enumerate(others)]
    done = threading.Event()

    def on_signal(signum: int, frame: Optional[FrameType]) -> None:
        done.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    with Fabric(world, dhcp=args.dhcp, ra=args.ra, attach=attach, label="cli") as fabric:
        print(f"world {fabric.prefix} is up (IMDS http://{IMDS_V4} and http://[{IMDS_V6}])")
        rows = [
            ("instance", fabric.instance_ns),
            ("router", fabric.router_ns),
            ("client", fabric.client_ns),
            ("peer", fabric.peer_ns),
        ]
        for role, ns in rows:
            print(f"  {role:9s} ip netns exec {ns} bash")
        for mac, ifname in attach:
            eni = world.enis[mac]
            addrs = ", ".join(str(a) for a in [*eni.ipv4s, *eni.ipv6s])
            print(f"  {ifname}: {eni.eni_id} {mac} (not configured: {addrs})")
        print(f"  echo service on the instance: TCP port {fabric.echo_port}")
        print("Ctrl-C or `python3 -m ec2sim down` to remove it.", flush=True)
        while not done.wait(1.0):
            pass
    return 0


def _down(args: argparse.Namespace) -> int:
    removed = netns.down_all(args.prefix)
    for prefix in removed:
        print(f"removed {prefix}")
    if not removed:
        print("no recorded worlds")
    return 0


def _imds(argv: list[str]) -> int:
    return main_imds(argv)


def main(argv: Optional[list[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "imds":
        return _imds(argv[1:])  # the IMDS helper owns its own argument parsing
    parser = argparse.ArgumentParser(
        prog="python3 -m ec2sim",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="cmd", required=True)
    up = sub.add_parser("up", help="start a world and keep it running")
    up.add_argument("--world", metavar="FILE", help="world JSON (default: the default world)")
    up.add_argument("--dhcp", action="store_true", help="DHCPv4/v6 from dnsmasq in the router")
    up.add_argument("--ra", action="store_true", help="IPv6 router advertisements")
    down = sub.add_parser("down", help="remove recorded worlds")
    down.add_argument("--prefix", help="only this world")
    sub.add_parser("imds", help="serve IMDS only: imds --listen HOST:PORT [--world FILE]")
    args = parser.parse_args(argv)
    if args.cmd == "up":
        return _up(args)
    return _down(args)


if __name__ == "__main__":
    sys.exit(main())
