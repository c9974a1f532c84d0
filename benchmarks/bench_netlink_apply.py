"""Bulk apply: NetlinkBackend vs one `ip -force -batch` vs pyroute2 one call at a time.

The `scan` shape of 15 ENIs x 50 scattered IPv4: 750 addresses, 2250 rules (three per
address), 45 routes (subnet + default per table, an IPv6 default via fe80:ec2::1).
Each run gets a fresh namespace with 15 veth pairs, so nothing needs flushing; the
methods take turns, run after run, so they share the machine's load. Wall and CPU
time (this process's for the backend, which includes the kernel's work in sendmsg;
the `ip` processes' own for the batch). Needs root.

    PYTHONPATH=src python3 benchmarks/bench_netlink_apply.py [--reps 7] [--json FILE]
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import statistics
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Callable

from ec2net.backends.netlink import NetlinkBackend, _setns
from ec2net.model import (
    PRIO_DEFAULT,
    PRIO_MAIN,
    PRIO_VPC,
    TABLE_BASE,
    TABLE_MAIN,
    AddressSpec,
    Change,
    ChangeSet,
    Family,
    NetObject,
    Op,
    RouteSpec,
    RuleSpec,
    Scope,
)

ENIS = 15
PER_ENI = 50


def build_objects() -> list[NetObject]:
    """Addresses, then routes, then rules: the order an apply uses for additions."""
    addrs: list[NetObject] = []
    routes: list[NetObject] = []
    rules: list[NetObject] = []
    for i in range(ENIS):
        dev, table = f"e{i}", TABLE_BASE + 1 + i
        net = ipaddress.IPv4Network(f"10.{i}.0.0/24")
        first = net.network_address + 10
        routes += [
            RouteSpec(table, net, dev, None, Scope.LINK, first),
            RouteSpec(table, ipaddress.ip_network("0.0.0.0/0"), dev, net.network_address + 1),
            RouteSpec(
                table, ipaddress.ip_network("::/0"), dev, ipaddress.ip_address("fe80:ec2::1")
            ),
        ]
        for j in range(PER_ENI):
            ip = first + j
            addrs.append(AddressSpec(dev, ipaddress.ip_interface(f"{ip}/24"), True))
            host = ipaddress.ip_network(f"{ip}/32")
            rules.append(RuleSpec(PRIO_VPC + i, Family.V4, table, host, 0))
            rules.append(RuleSpec(PRIO_MAIN + i, Family.V4, TABLE_MAIN, host, 0))
            rules.append(RuleSpec(PRIO_DEFAULT + i, Family.V4, table, host))
    return addrs + routes + rules


def ip_line(obj: NetObject) -> str:
    if isinstance(obj, AddressSpec):
        nodad = " nodad" if obj.address.version == 6 else ""
        return f"address add {obj.address} dev {obj.ifname} noprefixroute{nodad}"
    if isinstance(obj, RouteSpec):
        via = f" via {obj.gateway}" if obj.gateway is not None else ""
        src = f" src {obj.src}" if obj.src is not None else ""
        scope = " scope link" if obj.scope is Scope.LINK else ""
        return f"route add {obj.dst}{via} dev {obj.ifname} table {obj.table} proto 236{scope}{src}"
    assert isinstance(obj, RuleSpec)  # the benchmark sets no MTU
    frm = f"from {obj.src}" if obj.src is not None else "from all"
    sup = (
        f" suppress_prefixlength {obj.suppress_prefixlength}"
        if obj.suppress_prefixlength is not None
        else ""
    )
    return f"rule add {frm} lookup {obj.table} pref {obj.priority}{sup} proto 236"


Timing = tuple[float, float]  # wall, CPU seconds


def run_ip_batch(objs: list[NetObject]) -> Timing:
    v4 = [ip_line(o) for o in objs if not _is_v6(o)]
    v6 = [ip_line(o) for o in objs if _is_v6(o)]
    with tempfile.TemporaryDirectory() as tmp:
        files = []
        for name, lines in (("v4", v4), ("v6", v6)):
            path = os.path.join(tmp, name)
            with open(path, "w") as f:
                f.write("\n".join(lines) + "\n")
            files.append((name, path, bool(lines)))
        start = time.perf_counter()
        cpu = 0.0
        for name, path, nonempty in files:
            if nonempty:
                fam = ["-6"] if name == "v6" else []
                proc = subprocess.Popen(["ip", *fam, "-force", "-batch", path])
                _, status, usage = os.wait4(proc.pid, 0)
                assert status == 0, f"ip -batch {name}: {status}"
                cpu += usage.ru_utime + usage.ru_stime
        return time.perf_counter() - start, cpu


def _is_v6(obj: NetObject) -> bool:
    if isinstance(obj, RuleSpec):
        return obj.family is Family.V6
    if isinstance(obj, RouteSpec):
        return obj.dst.version == 6
    assert isinstance(obj, AddressSpec)  # the benchmark sets no MTU
    return obj.address.version == 6


def run_backend(objs: list[NetObject]) -> Timing:
    changes = ChangeSet(tuple(Change(Op.ADD, o) for o in objs))
    with NetlinkBackend() as backend:
        start, cpu = time.perf_counter(), time.process_time()
        report = backend.apply(changes)
        elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
    assert not report.failed, report.failed[:3]
    return elapsed, cpu


def run_pyroute2(objs: list[NetObject]) -> Timing:
    from pyroute2 import IPRoute

    ipr: Any = IPRoute()
    try:
        index = {f"e{i}": int(ipr.link_lookup(ifname=f"e{i}")[0]) for i in range(ENIS)}
        start, cpu = time.perf_counter(), time.process_time()
        for o in objs:
            if isinstance(o, AddressSpec):
                flags = 0x200 | (0x2 if o.address.version == 6 else 0)
                ipr.addr(
                    "add",
                    index=index[o.ifname],
                    address=str(o.address.ip),
                    prefixlen=o.address.network.prefixlen,
                    IFA_FLAGS=flags,
                )
            elif isinstance(o, RouteSpec):
                kw: dict[str, Any] = {"scope": int(o.scope)}
                if o.gateway is not None:
                    kw["gateway"] = str(o.gateway)
                if o.src is not None:
                    kw["prefsrc"] = str(o.src)
                ipr.route(
                    "add", dst=str(o.dst), oif=index[o.ifname], table=o.table, proto=236, **kw
                )
            elif isinstance(o, RuleSpec):
                kw = {"family": int(o.family), "FRA_PROTOCOL": 236}
                if o.src is not None:
                    kw.update(src=str(o.src.network_address), src_len=o.src.prefixlen)
                if o.suppress_prefixlength is not None:
                    kw["FRA_SUPPRESS_PREFIXLEN"] = o.suppress_prefixlength
                ipr.rule("add", priority=o.priority, table=o.table, **kw)
        return time.perf_counter() - start, time.process_time() - cpu
    finally:
        ipr.close()


@contextmanager
def fresh_namespace() -> Iterator[str]:
    """A new namespace with e0..e14 (veth, up), entered by this thread while in use."""
    name = f"e2nlbench{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    saved = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        cmds = []
        for i in range(ENIS):
            cmds += [
                f"link add e{i} type veth peer name p{i}",
                f"link set e{i} up",
                f"link set p{i} up",
            ]
        subprocess.run(
            ["ip", "-n", name, "-batch", "-"], input="\n".join(cmds) + "\n", text=True, check=True
        )
        fd = os.open(f"/run/netns/{name}", os.O_RDONLY)
        try:
            _setns(fd)
        finally:
            os.close(fd)
        yield name
    finally:
        _setns(saved)
        os.close(saved)
        subprocess.run(["ip", "netns", "del", name], check=False)


def count_state() -> tuple[int, int]:
    rules = subprocess.run(
        "ip rule show; ip -6 rule show",
        shell=True,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    addrs = subprocess.run(
        ["ip", "-o", "addr", "show", "scope", "global"], capture_output=True, text=True, check=True
    ).stdout
    return sum("proto 236" in line for line in rules.splitlines()), len(addrs.splitlines())


def measure(reps: int, reference: bool = False) -> dict[str, Any]:
    from importlib.metadata import version

    objs = build_objects()
    methods: dict[str, Callable[[list[NetObject]], Timing]] = {
        "ip -force -batch": run_ip_batch,
        "NetlinkBackend.apply": run_backend,
    }
    if reference:
        methods["pyroute2 one call each"] = run_pyroute2
    want = (
        sum(isinstance(o, RuleSpec) for o in objs),
        sum(isinstance(o, AddressSpec) for o in objs),
    )
    walls: dict[str, list[float]] = {m: [] for m in methods}
    cpus: dict[str, list[float]] = {m: [] for m in methods}
    for _ in range(reps):
        for name, fn in methods.items():
            with fresh_namespace():
                wall, cpu = fn(objs)
                got = count_state()
            assert got == want, f"{name}: {got} (rules, addresses) after apply"
            walls[name].append(wall)
            cpus[name].append(cpu)
    floor_wall = statistics.median(walls["ip -force -batch"])
    floor_cpu = statistics.median(cpus["ip -force -batch"])
    out: dict[str, Any] = {
        "pyroute2": version("pyroute2"), "objects": len(objs), "reps": reps, "methods": {},
    }  # fmt: skip
    for name in methods:
        wall, cpu = statistics.median(walls[name]), statistics.median(cpus[name])
        out["methods"][name] = {
            "wall": wall, "cpu": cpu, "wall_x": wall / floor_wall, "cpu_x": cpu / floor_cpu,
            "walls": walls[name], "cpus": cpus[name],
        }  # fmt: skip
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--reps", type=int, default=7)
    parser.add_argument("--reference", action="store_true", help="also pyroute2 call by call")
    parser.add_argument("--json", help="also write the figures here")
    args = parser.parse_args()
    got = measure(args.reps, args.reference)
    print(f"pyroute2 {got['pyroute2']}: {got['objects']} objects, {args.reps} runs each")
    for name, m in got["methods"].items():
        print(
            f"{name:24s} wall {m['wall'] * 1e3:7.1f} ms x{m['wall_x']:5.2f}"
            f"   CPU {m['cpu'] * 1e3:7.1f} ms x{m['cpu_x']:5.2f}"
        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(got, f, indent=1)


if __name__ == "__main__":
    main()
