"""The system scenarios, shared by tests/system and benchmarks/bench_system.py.

Each returns what it measured and never asserts: the tests assert on the results, the
benchmark tabulates them for ec2net and for the AWS tool. Waits are bounded by the
caller's timeout, so a tool that never gets there yields a failure, not a hang.
"""

from __future__ import annotations

import ipaddress
import json
import time
from dataclasses import dataclass, field
from typing import Callable, Optional

from ec2sim.world import Eni
from systest.qemu import BootInfo
from systest.vpc import (
    IPV6_ONLY_SUBNET,
    OTHER_SUBNET_MAC,
    SAME_SUBNET_MAC,
    Plugged,
    Reach,
    VpcGuest,
    addresses,
)

# Seconds after the last address answered during which IMDS requests still count
# toward the attach (a tool's setup may read more after the addresses work).
ATTACH_TAIL = 5.0

Installer = Callable[[VpcGuest], None]


@dataclass
class BootWithEnis:
    install_s: float
    boot: BootInfo
    reach: Reach  # every address of the primary and both extra ENIs, client and peer
    other_subnet: list[str]  # addresses of the ENI in another subnet
    same_subnet: list[str]  # addresses of the primary and the ENI in its subnet

    def missing_of(self, addrs: list[str]) -> list[str]:
        return [m for m in self.reach.missing if m.split()[0] in addrs]


def boot_with_enis(g: VpcGuest, install: Optional[Installer], timeout: float) -> BootWithEnis:
    """Two extra ENIs (one in another subnet, one in the primary's) are hot-plugged into
    the freshly booted guest, the tool is installed, and the guest reboots: the boot
    finds the ENIs present. Then every address must answer from the client and the peer.
    """
    world = g.fabric.world
    other = g.fabric.spare[OTHER_SUBNET_MAC]
    same = g.fabric.spare[SAME_SUBNET_MAC]
    g.plug(other)
    g.plug(same)
    t0 = time.monotonic()
    if install is not None:
        install(g)
    install_s = time.monotonic() - t0
    boot = g.reboot()
    start = g.qemu.started_at
    addrs = [*addresses(world.primary()), *addresses(other), *addresses(same)]
    reach = g.wait_reachable(addrs, timeout, since=start)
    return BootWithEnis(
        install_s,
        boot,
        reach,
        other_subnet=addresses(other),
        same_subnet=[*addresses(world.primary()), *addresses(same)],
    )


@dataclass
class Hotplug:
    subnet: str
    addrs: list[str]
    reach: Reach  # from QMP device_add
    imds_requests: int  # from attach until ATTACH_TAIL after the addresses answered
    others_missing: list[str]  # addresses that were reachable before and are not now
    unplug_s: float = 0.0  # device_del -> DEVICE_DELETED
    clean_s: Optional[float] = None  # DEVICE_DELETED -> nothing left
    leftovers: list[str] = field(default_factory=list)


def hotplug(
    g: VpcGuest,
    subnet: str,
    n_ipv4: int,
    timeout: float,
    *,
    n_ipv6: int = 1,
    unplug: bool = True,
    tail: float = ATTACH_TAIL,
    before_plug: Optional[Callable[[Eni], None]] = None,
) -> tuple[Hotplug, Plugged]:
    """Attach a fresh ENI and hot-plug its NIC; time until all its addresses (IPv4 and
    IPv6) answer; optionally unplug it and wait until the guest holds nothing for it.
    `before_plug` runs once the ENI exists and before anything is timed (the floor's
    handler gets its objects there, systest/floor.py)."""
    eni = g.fabric.new_eni(subnet, n_ipv4=n_ipv4, n_ipv6=n_ipv6)
    if before_plug is not None:
        before_plug(eni)
    before = g.all_addresses()
    n0 = g.imds_requests()
    t0 = time.monotonic()
    plugged = g.plug(eni)
    reach = g.wait_reachable(addresses(eni), timeout, since=t0)
    if reach.ok:
        time.sleep(max(0.0, t0 + (reach.seconds or 0.0) + tail - time.monotonic()))
    requests = g.imds_requests() - n0
    result = Hotplug(subnet, addresses(eni), reach, requests, g.unreachable(before))
    if unplug:
        unplug_and_check(g, plugged, result)
    return result, plugged


def unplug_and_check(
    g: VpcGuest, plugged: Plugged, result: Hotplug, timeout: float = 30.0
) -> None:
    result.unplug_s = g.unplug(plugged)
    result.clean_s, result.leftovers = g.wait_clean(plugged, timeout)


def _used(g: VpcGuest) -> set[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    used: set[ipaddress.IPv4Address | ipaddress.IPv6Address] = set()
    for e in [*g.fabric.world.enis.values(), *g.fabric.spare.values()]:
        used |= {*e.ipv4s, *e.ipv6s}
    for h in g.fabric.hosts.values():
        used |= {a for a in (h.ipv4, h.ipv6) if a is not None}
    return used


def free_ipv4(g: VpcGuest, eni: Eni) -> ipaddress.IPv4Address:
    """An address of the ENI's subnet that nothing in the VPC uses (from .200 down)."""
    subnet = g.fabric.world.subnet_of(eni).cidr4
    assert subnet is not None
    used = _used(g)
    for n in range(200, 1, -1):
        cand = subnet.network_address + n
        if cand not in used:
            return cand
    raise RuntimeError(f"no free address in {subnet}")


def free_ipv6(g: VpcGuest, eni: Eni) -> ipaddress.IPv6Address:
    """An IPv6 address of the ENI's subnet that nothing in the VPC uses (from ::200 up)."""
    subnet = g.fabric.world.subnet_of(eni).cidr6
    assert subnet is not None
    used = _used(g)
    for n in range(0x200, 0x300):
        cand = subnet.network_address + n
        if cand not in used:
            return cand
    raise RuntimeError(f"no free address in {subnet}")


@dataclass
class Secondary:
    addrs: list[str]  # one IPv4, one IPv6
    reach: Reach  # from the IMDS assignment


def secondary_ip(g: VpcGuest, mac: str, timeout: float) -> Secondary:
    """Assign one more IPv4 and one more IPv6 to an attached ENI in the VPC (router
    first, then IMDS); time until both answer."""
    eni = g.fabric.world.enis[mac]
    addrs: list[ipaddress.IPv4Address | ipaddress.IPv6Address] = [
        free_ipv4(g, eni),
        free_ipv6(g, eni),
    ]
    t0 = time.monotonic()
    for addr in addrs:
        g.fabric.assign(mac, addr)
    names = [str(a) for a in addrs]
    return Secondary(names, g.wait_reachable(names, timeout, since=t0))


@dataclass
class Removal:
    addrs: list[str]
    gone_s: Optional[float]  # IMDS unassignment -> no address or rule left in the guest
    still: list[str]  # what the guest still holds at the timeout
    others_missing: list[str]  # addresses that answered before and did not right after
    others_lasting: list[str]  # of those, the ones still not answering 15 s later


def guest_mentions(g: VpcGuest, addrs: list[str]) -> list[str]:
    """The addresses among `addrs` that the guest has on a link or in a policy rule."""
    found = []
    for fam in ("-4", "-6"):
        for cmd in (["addr", "show"], ["rule", "show"]):
            out = g.agent.run(["ip", "-j", fam, *cmd], timeout=60, check=True).stdout
            for item in json.loads(out or "[]"):
                values = [item.get("src")]
                values += [a.get("local") for a in item.get("addr_info", [])]
                found += [a for a in addrs if a in values and a not in found]
    return found


def remove_secondary(g: VpcGuest, mac: str, addrs: list[str], timeout: float) -> Removal:
    """Unassign addresses in the VPC (IMDS first, then the router): every one must
    leave the guest (addresses and rules) and every other address keep answering."""
    keep = [a for a in g.all_addresses() if a not in addrs]
    t0 = time.monotonic()
    for addr in addrs:
        g.fabric.unassign(mac, ipaddress.ip_address(addr))
    gone_s: Optional[float] = None
    still = addrs
    while time.monotonic() - t0 < timeout:
        still = guest_mentions(g, addrs)
        if not still:
            gone_s = time.monotonic() - t0
            break
        time.sleep(0.5)
    missing = g.unreachable(keep)
    lasting: list[str] = []
    if missing:
        lost = sorted({m.split()[0] for m in missing})
        lasting = g.wait_reachable(lost, 15.0).missing
    return Removal(addrs, gone_s, still, missing, lasting)


@dataclass
class Prefix:
    prefixes: list[str]
    used: list[str]  # an address of each prefix, on the guest's lo (as a pod would)
    reach: Reach  # from the IMDS assignment


def delegated_prefix(g: VpcGuest, mac: str, timeout: float) -> Prefix:
    """Delegate an IPv4 /28 and an IPv6 /80 to an attached ENI; the guest uses one
    address of each on lo (as a pod network would): both must answer the client and the
    peer, so ec2net's rules for the prefixes send the replies out of the ENI."""
    eni = g.fabric.world.enis[mac]
    sub4, sub6 = g.fabric.world.subnet_of(eni).cidr4, g.fabric.world.subnet_of(eni).cidr6
    assert sub4 is not None and sub6 is not None
    p4 = ipaddress.IPv4Network(f"{sub4.network_address + 224}/28")
    p6 = ipaddress.IPv6Network(f"{sub6.network_address + (0xA000 << 48)}/80")
    a4, a6 = p4[2], p6[2]
    batch = f"addr add {a4}/32 dev lo\naddr add {a6}/128 dev lo nodad\n"
    g.agent.run(["ip", "-batch", "-"], input=batch, check=True)
    t0 = time.monotonic()
    g.fabric.assign(mac, p4)
    g.fabric.assign(mac, p6)
    used = [str(a4), str(a6)]
    return Prefix([str(p4), str(p6)], used, g.wait_reachable(used, timeout, since=t0))


@dataclass
class TwoAtOnce:
    addrs: list[str]
    reach: Reach  # from the first device_add, every address of both ENIs
    imds_requests: int
    others_missing: list[str]
    leftovers: list[str]  # after unplugging both


def two_at_once(g: VpcGuest, timeout: float) -> TwoAtOnce:
    """Two ENIs hot-plugged back to back (one dual-stack, one IPv6-only), then both
    unplugged back to back."""
    first = g.fabric.new_eni("subnet-b", n_ipv4=2, n_ipv6=1)
    # the fabric picks the lowest device number among attached ENIs: not yet `first`'s
    taken = {e.device_number for e in g.fabric.world.attached()} | {first.device_number}
    number = next(n for n in range(64) if n not in taken)
    enis = [
        first,
        g.fabric.new_eni(IPV6_ONLY_SUBNET, n_ipv4=0, n_ipv6=2, device_number=number),
    ]
    before = g.all_addresses()
    n0 = g.imds_requests()
    t0 = time.monotonic()
    plugged = [g.plug(e) for e in enis]
    addrs = [a for e in enis for a in addresses(e)]
    reach = g.wait_reachable(addrs, timeout, since=t0)
    requests = g.imds_requests() - n0
    others = g.unreachable(before)
    for p in plugged:
        g.unplug(p)
    left = [f"{p.ifname}: {item}" for p in plugged for item in g.wait_clean(p, 30.0)[1]]
    return TwoAtOnce(addrs, reach, requests, others, left)


@dataclass
class EarlyDetach:
    unplugged_after_s: float  # device_add -> device_del
    leftovers: list[str]
    failed_units: str
    others_missing: list[str]
    reuse: Reach  # a fresh ENI on the same device number (same table) afterwards


def detach_while_configuring(g: VpcGuest, timeout: float) -> EarlyDetach:
    """Unplug an ENI as soon as the guest has renamed its NIC (the tool is starting on
    it): nothing may be left, no unit failed, and the next ENI that gets the same
    device number, hence the same table, must work."""
    before = g.all_addresses()
    eni = g.fabric.new_eni("subnet-b", n_ipv4=3, n_ipv6=1)
    slot_name = f"ens{g.next_slot()}"
    t0 = time.monotonic()
    plugged = g.plug(eni)
    g.agent.wait_link(eni.mac, timeout=60, ifname=slot_name)
    after = time.monotonic() - t0
    g.unplug(plugged)
    _, left = g.wait_clean(plugged, 30.0)
    failed = g.agent.run(["systemctl", "--failed", "--no-legend", "--plain"], timeout=60).stdout
    others = g.unreachable(before)
    again = g.fabric.new_eni("subnet-b", device_number=eni.device_number, n_ipv4=2, n_ipv6=1)
    t1 = time.monotonic()
    replug = g.plug(again)
    reuse = g.wait_reachable(addresses(again), timeout, since=t1)
    g.unplug(replug)
    left += [f"after reuse: {x}" for x in g.wait_clean(replug, 30.0)[1]]
    return EarlyDetach(after, left, failed.strip(), others, reuse)


# What an AMI may ship besides the primary's file: networkd on every ens* link.
CATCH_ALL_NETWORK = """\
[Match]
Name=ens*

[Network]
DHCP=yes
"""


def owned_snapshot(g: VpcGuest, p: Plugged) -> list[str]:
    """The ENI's addresses, its table's routes and the rules for its table or
    addresses, lifetimes left out: equal before and after a manager's reload."""
    out = []
    for fam in ("-4", "-6"):
        for item in json.loads(
            g.agent.run(["ip", "-j", fam, "addr", "show", "dev", p.ifname], check=True).stdout
            or "[]"
        ):
            out += [f"addr {a['local']}/{a['prefixlen']}" for a in item.get("addr_info", [])]
        for rule in json.loads(g.agent.run(["ip", "-j", fam, "rule"], check=True).stdout):
            if str(rule.get("table")) == str(p.table) or rule.get("src") in addresses(p.eni):
                out.append(f"rule {rule.get('priority')} {rule.get('src')} {rule.get('table')}")
        table = ["ip", "-j", fam, "route", "show", "table", str(p.table)]
        for route in json.loads(g.agent.run(table, check=True).stdout or "[]"):
            out.append(f"route {route.get('dst')} {route.get('gateway')} {route.get('dev')}")
    return sorted(a for a in out if "fe80:" not in a)


@dataclass
class NetlinkUnderNetworkd:
    reach: Reach  # the hot-plugged ENI, from device_add
    managed_by: dict[str, str]  # ifname -> ID_NET_MANAGED_BY ("" when unset)
    setup_state: str  # networkd's SETUP state of the ENI's link
    before: list[str]
    after_reload: list[str]
    after_restart: list[str]
    reach_after: list[str]  # the ENI's addresses, the primary's IPv4: unreachable after
    primary6_missing: list[str]  # the primary's IPv6 (networkd's) not back 10 s later


def netlink_under_networkd(
    g: VpcGuest, switch: Callable[[VpcGuest], None], timeout: float
) -> NetlinkUnderNetworkd:
    """backend.name netlink on a networkd host whose configuration matches every ens*
    link: the udev rule marks the ENI ID_NET_MANAGED_BY=ec2net, so networkd leaves it
    alone; its addresses, routes and rules survive `networkctl reload` and a restart.
    The ENIs configured through the networkd backend are unplugged first."""
    for p in list(g.plugged.values()):
        g.unplug(p)
        g.wait_clean(p, 30.0)
    switch(g)
    g.agent.write_file("/etc/systemd/network/90-systest-catch-all.network", CATCH_ALL_NETWORK)
    g.agent.run(["networkctl", "reload"], timeout=60, check=True)
    eni = g.fabric.new_eni("subnet-b", n_ipv4=2, n_ipv6=1)
    t0 = time.monotonic()
    p = g.plug(eni)
    reach = g.wait_reachable(addresses(eni), timeout, since=t0)
    managed = {}
    for ifname in (p.ifname, "ens5"):
        props = g.agent.run(["udevadm", "info", "-q", "property", f"/sys/class/net/{ifname}"])
        found = [
            ln.split("=", 1)[1]
            for ln in props.stdout.splitlines()
            if ln.startswith("ID_NET_MANAGED_BY=")
        ]
        managed[ifname] = found[0] if found else ""
    status = g.agent.run(["networkctl", "list", "--no-legend", "--no-pager", p.ifname]).stdout
    setup = status.split()[-1] if status.split() else ""
    before = owned_snapshot(g, p)
    g.agent.run(["networkctl", "reload"], timeout=60, check=True)
    time.sleep(3.0)  # networkd reconfigures asynchronously after the reload returns
    after_reload = owned_snapshot(g, p)
    g.agent.run(["systemctl", "restart", "systemd-networkd.service"], timeout=120, check=True)
    time.sleep(3.0)
    after_restart = owned_snapshot(g, p)
    again = g.unreachable(addresses(eni))
    # The primary is networkd's own. Its IPv4 must come back after the restart; its
    # IPv6 from another subnet did not within 120 s here (the restart drops the RA
    # default route and the fabric's dnsmasq did not re-advertise in time): not ec2net's
    # doing, so only reported (`primary6_missing`).
    primary = g.fabric.world.primary()
    again += g.wait_reachable([str(a) for a in primary.ipv4s], timeout).missing
    primary6 = g.wait_reachable([str(a) for a in primary.ipv6s], 10.0).missing
    return NetlinkUnderNetworkd(
        reach, managed, setup, before, after_reload, after_restart, again, primary6
    )


@dataclass
class Bridge:
    probes: dict[str, bool]  # host address -> reachable from the container

    @property
    def unreachable(self) -> list[str]:
        return [a for a, ok in self.probes.items() if not ok]


def docker_bridge(g: VpcGuest) -> Bridge:
    ns = g.docker_bridge()
    # Docker's default bridge is IPv4 only: the container reaches the host's IPv4s
    v4 = [a for a in g.all_addresses() if ipaddress.ip_address(a).version == 4]
    return Bridge(g.guest_probe(v4, ns))


@dataclass
class Reboot:
    boot: BootInfo
    reach: Reach  # from the reboot request


def reboot(g: VpcGuest, timeout: float) -> Reboot:
    boot = g.reboot()
    return Reboot(boot, g.wait_reachable(g.all_addresses(), timeout, since=g.qemu.started_at))


def idle_imds_per_minute(g: VpcGuest, seconds: float = 60.0) -> float:
    """IMDS requests the guest makes in a real window with nothing changing."""
    n0 = g.imds_requests()
    time.sleep(seconds)
    return (g.imds_requests() - n0) * 60.0 / seconds


def guest_state(g: VpcGuest, units: tuple[str, ...] = ()) -> str:
    """What to print when a scenario fails: addresses, rules, routes, the tool's log."""
    parts = []
    for argv in (
        ["ip", "-br", "addr"],
        ["ip", "rule"],
        ["ip", "route", "show", "table", "all"],
        ["systemctl", "--failed", "--no-legend", "--plain"],
    ):
        res = g.agent.run(argv, timeout=60)
        parts.append(f"$ {' '.join(argv)}\n{res.stdout}{res.stderr}")
    if units:
        parts.append(g.journal(*units, lines=120))
    return "\n".join(parts)


def failed_units_log(g: VpcGuest, failed: str) -> str:
    """`systemctl --failed` output followed by those units' journal."""
    units = [line.split()[0] for line in failed.splitlines() if line.strip()]
    return failed + ("\n" + g.journal(*units, lines=200) if units else "")
