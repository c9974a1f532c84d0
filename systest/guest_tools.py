"""Helpers that run inside the guest (stdlib only, copied into the image next to the agent).

  echo PORT                     TCP echo on every address (the fabric's probes talk to it)
  probe PORT TIMEOUT ADDR...    TCP connect + echo to each ADDR; prints {addr: bool} as JSON
  leftovers --ifname N --mac M --eni-id E --table T [--addr A ...] [--dir D ...]
                                prints, as a JSON list, what a tool left behind for a
                                detached ENI: policy rules and routes for its table or
                                addresses, files naming it (also under each D), units
                                still active for it
  eni-state --ifname N --table T [--addr A ...] [--dir D ...]
                                prints, as JSON, what the guest holds for an ENI: its
                                addresses, the rules into its table or from its
                                addresses, its table's routes, main-table routes on it,
                                dhclients naming it, files naming it (first line), units

One process does a whole job: under TCG every process start costs ~0.3 s.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Optional

IP_FREEBIND = 15
PAYLOAD = b"systest-probe\n"

# Where ec2net, networkd, NetworkManager and the AWS tool keep per-interface state.
STATE_DIRS = (
    "/run/ec2net",
    "/etc/ec2net",
    "/run/systemd/network",
    "/etc/systemd/network",
    "/run/NetworkManager",
    "/etc/NetworkManager/system-connections",
)
IGNORED_FILES = ("/etc/ec2net/ec2net.toml",)


def _serve(conn: socket.socket) -> None:
    with conn:
        conn.settimeout(10.0)
        with contextlib.suppress(OSError):
            while True:
                data = conn.recv(4096)
                if not data:
                    return
                conn.sendall(data)


def echo(port: int) -> None:
    # One dual-stack socket with IP_FREEBIND: every address, also ones added later.
    sock = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    sock.setsockopt(socket.SOL_IP, IP_FREEBIND, 1)
    sock.bind(("::", port))
    sock.listen(128)
    while True:
        conn, _ = sock.accept()
        threading.Thread(target=_serve, args=(conn,), daemon=True).start()


def probe_one(addr: str, port: int, timeout: float) -> bool:
    try:
        with socket.create_connection((addr, port), timeout=timeout) as sock:
            sock.sendall(PAYLOAD)
            got = b""
            while len(got) < len(PAYLOAD):
                chunk = sock.recv(len(PAYLOAD) - len(got))
                if not chunk:
                    return False
                got += chunk
            return got == PAYLOAD
    except OSError:
        return False


def probe(port: int, timeout: float, addrs: Sequence[str]) -> dict[str, bool]:
    with ThreadPoolExecutor(max_workers=max(1, len(addrs))) as pool:
        results = pool.map(lambda a: probe_one(a, port, timeout), addrs)
        return dict(zip(addrs, results))


def _ip_json(*args: str) -> list[dict[str, Any]]:
    out = subprocess.run(["ip", "-j", *args], check=False, capture_output=True, text=True)
    if out.returncode != 0 or not out.stdout.strip():
        return []
    data = json.loads(out.stdout)
    return data if isinstance(data, list) else []


def _files_naming(needles: Sequence[str], ifname: str, dirs: Sequence[str] = ()) -> list[str]:
    found = []
    for top in (*STATE_DIRS, *dirs):
        for dirpath, _, files in os.walk(top):
            for name in files:
                path = os.path.join(dirpath, name)
                if path in IGNORED_FILES:
                    continue
                if ifname in path.split("/")[-1].replace(".", " ").replace("-", " ").split():
                    found.append(path)
                    continue
                try:
                    with open(path, errors="replace") as fh:
                        text = fh.read(1 << 20).lower()
                except OSError:
                    continue
                if any(n in text for n in needles):
                    found.append(path)
    return found


def _units_of(ifname: str) -> list[str]:
    units = subprocess.run(
        ["systemctl", "list-units", "--all", "--plain", "--no-legend", f"*{ifname}*"],
        check=False,
        capture_output=True,
        text=True,
    ).stdout
    out = []
    for line in units.splitlines():
        fields = line.split()
        # unit load active sub: a stopped unit is history, not a leftover
        if len(fields) >= 3 and fields[2] in ("active", "activating", "failed", "reloading"):
            out.append(" ".join(fields[:4]))
    return out


def _dhclients(ifname: str) -> list[str]:
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as fh:
                argv = fh.read().decode(errors="replace").split("\0")
        except OSError:
            continue
        if argv and os.path.basename(argv[0]).startswith("dhclient") and ifname in argv:
            found.append(f"{pid} {' '.join(a for a in argv if a)}")
    return found


def _first_line(path: str) -> str:
    try:
        with open(path, errors="replace") as fh:
            return fh.readline().strip()
    except OSError:
        return ""


def eni_state(ifname: str, table: int, addrs: Sequence[str], dirs: Sequence[str]) -> Any:
    rules, routes, mine, main = [], [], [], []
    for fam in ("-4", "-6"):
        for rule in _ip_json(fam, "rule", "show"):
            if str(rule.get("table")) == str(table) or rule.get("src") in addrs:
                rules.append(rule)
        routes += _ip_json(fam, "route", "show", "table", str(table))
        main += _ip_json(fam, "route", "show", "table", "main", "dev", ifname)
        for link in _ip_json(fam, "addr", "show", "dev", ifname):
            mine += link.get("addr_info", [])
    files = {p: _first_line(p) for p in _files_naming([], ifname, dirs)}
    return {
        "addrs": mine,
        "rules": rules,
        "routes": routes,
        "main": main,
        "dhclients": _dhclients(ifname),
        "files": files,
        "units": _units_of(ifname),
    }


def leftovers(
    ifname: str,
    mac: str,
    eni_id: str,
    table: int,
    addrs: Sequence[str],
    *,
    dirs: Sequence[str] = (),
) -> list[str]:
    out = []
    for fam in ("-4", "-6"):
        for rule in _ip_json(fam, "rule", "show"):
            if str(rule.get("table")) == str(table) or rule.get("src") in addrs:
                out.append(f"rule {json.dumps(rule, sort_keys=True)}")
        for route in _ip_json(fam, "route", "show", "table", str(table)):
            out.append(f"route table {table} {json.dumps(route, sort_keys=True)}")
    out += [f"file {p}" for p in _files_naming([mac.lower(), eni_id.lower()], ifname, dirs)]
    out += [f"unit {u}" for u in _units_of(ifname)]
    return out


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="guest_tools")
    sub = parser.add_subparsers(dest="cmd", required=True)
    p_echo = sub.add_parser("echo")
    p_echo.add_argument("port", type=int)
    p_probe = sub.add_parser("probe")
    p_probe.add_argument("port", type=int)
    p_probe.add_argument("timeout", type=float)
    p_probe.add_argument("addrs", nargs="*")
    p_left = sub.add_parser("leftovers")
    p_left.add_argument("--ifname", required=True)
    p_left.add_argument("--mac", required=True)
    p_left.add_argument("--eni-id", required=True)
    p_left.add_argument("--table", type=int, required=True)
    p_left.add_argument("--addr", action="append", default=[])
    p_left.add_argument("--dir", action="append", default=[])
    p_state = sub.add_parser("eni-state")
    p_state.add_argument("--ifname", required=True)
    p_state.add_argument("--table", type=int, required=True)
    p_state.add_argument("--addr", action="append", default=[])
    p_state.add_argument("--dir", action="append", default=[])
    args = parser.parse_args(argv)
    if args.cmd == "echo":
        echo(args.port)
    elif args.cmd == "probe":
        print(json.dumps(probe(args.port, args.timeout, args.addrs)))
    elif args.cmd == "eni-state":
        print(json.dumps(eni_state(args.ifname, args.table, args.addr, args.dir)))
    else:
        found = leftovers(args.ifname, args.mac, args.eni_id, args.table, args.addr, dirs=args.dir)
        print(json.dumps(found))
    return 0


if __name__ == "__main__":
    sys.exit(main())
