"""Decode cost of one link message (RTM_NEWLINK): pyroute2's whole `ifinfmsg`
(MarshalRtnl and a get_attr per field, as the link dump read links before
netlink_links) against `netlink_links.LinkMsg` (LinkMarshal, one pass over the
attribute slots), both on the same buffers of one link dump of a namespace built like
a container host: veth pairs with one end a port of a bridge.

  python3 benchmarks/bench_link_decode.py [--pairs N] [--rounds N]

Runs itself on the virtualenv's Python and on Debian's (pyroute2 0.9 and 0.7.2) and
prints both side by side; per message the best of `--rounds` passes over the dump
(the two decoders take turns). Needs root: the namespace (ec2net-bld-PID) is deleted
at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import DEBIAN_PYTHON, ROOT, VENV_PYTHON


def _dump() -> list[bytes]:
    """The buffers one link dump of this namespace returned, as recv() gave them."""
    from pyroute2.netlink import NETLINK_ROUTE, NLMSG_DONE

    from ec2net.backends import netlink_links as nl

    marshal = nl.LinkMarshal()
    bufs: list[bytes] = []
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_ROUTE) as sock:
        sock.bind((0, 0))
        sock.send(nl.link_dump_request(1))
        while True:
            data = sock.recv(1 << 16)
            bufs.append(data)
            if any(m["header"]["type"] == NLMSG_DONE for m in marshal.parse(data)):
                return bufs


def _whole(bufs: list[bytes]) -> int:
    from pyroute2.netlink.rtnl import RTM_NEWLINK
    from pyroute2.netlink.rtnl.marshal import MarshalRtnl

    marshal, n = MarshalRtnl(), 0
    for data in bufs:
        for msg in marshal.parse(data):
            if msg["header"]["type"] != RTM_NEWLINK:
                continue
            info = msg.get_attr("IFLA_LINKINFO")
            (
                int(msg["index"]),
                int(msg["flags"]),
                str(msg.get_attr("IFLA_IFNAME") or ""),
                str(msg.get_attr("IFLA_ADDRESS") or "").lower(),
                str(info.get_attr("IFLA_INFO_KIND") or "") if info is not None else "",
                int(msg.get_attr("IFLA_MASTER") or 0),
                int(msg.get_attr("IFLA_MTU") or 0),
            )
            n += 1
    return n


def _narrowed(bufs: list[bytes]) -> int:
    from pyroute2.netlink.rtnl import RTM_NEWLINK

    from ec2net.backends import netlink_links as nl

    marshal, n = nl.LinkMarshal(), 0
    for data in bufs:
        for msg in marshal.parse(data):
            if msg["header"]["type"] == RTM_NEWLINK:
                nl.link_fields(msg)
                n += 1
    return n


def worker(rounds: int) -> None:
    import importlib.metadata

    sys.path.insert(0, str(ROOT / "src"))
    bufs = _dump()
    best: dict[str, float] = {"whole": float("inf"), "narrowed": float("inf")}
    decoders: dict[str, Callable[[list[bytes]], int]] = {"whole": _whole, "narrowed": _narrowed}
    count = 0
    for _ in range(rounds):
        for name, decode in decoders.items():
            start = time.perf_counter()
            count = decode(bufs)
            best[name] = min(best[name], (time.perf_counter() - start) / count)
    out = {
        "pyroute2": importlib.metadata.version("pyroute2"),
        "links": count,
        "bytes": sum(map(len, bufs)) // count,
        **{k: v * 1e6 for k, v in best.items()},
    }
    print(json.dumps(out))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pairs", type=int, default=200, help="veth pairs (default 200)")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        worker(args.rounds)
        return 0
    ns = f"ec2net-bld-{os.getpid()}"
    bridges = max(1, args.pairs // 20)
    lines = [f"link add sbr{b} type bridge" for b in range(bridges)]
    for i in range(args.pairs):
        lines += [
            f"link add bva{i} type veth peer name bvz{i}",
            f"link set bvz{i} master sbr{i % bridges}",
            f"link set bva{i} up",
        ]
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        subprocess.run(["ip", "-n", ns, "-batch", "-"], input="\n".join(lines) + "\n",
                       text=True, check=True)  # fmt: skip
        rows: list[dict[str, Any]] = []
        for python in (VENV_PYTHON, DEBIAN_PYTHON):
            if not Path(python).exists():
                continue
            argv = ["ip", "netns", "exec", ns, python, __file__, "--worker",
                    "--rounds", str(args.rounds)]  # fmt: skip
            out = subprocess.run(argv, capture_output=True, text=True, check=True)
            rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    finally:
        subprocess.run(["ip", "netns", "del", ns], check=False)
    print(f"link dump of {rows[0]['links']} links ({args.pairs} veth pairs on {bridges} "
          f"bridges), {rows[0]['bytes']} bytes a message; us per message, best of "
          f"{args.rounds}:")  # fmt: skip
    print(f"{'pyroute2':>10} {'whole ifinfmsg':>15} {'LinkMsg':>9} {'ratio':>6}")
    for r in rows:
        print(f"{r['pyroute2']:>10} {r['whole']:>15.0f} {r['narrowed']:>9.0f} "
              f"{r['narrowed'] / r['whole']:>6.2f}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
