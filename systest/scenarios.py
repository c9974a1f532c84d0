"""The system scenarios, shared by tests/system and benchmarks/bench_system.py.

Each returns what it measured and never asserts: the tests assert on the results, the
benchmark tabulates them for ec2net and for the AWS tool. Waits are bounded by the
caller's timeout, so a tool that never gets there yields a failure, not a hang.
"""

from __future__ import annotations

import ipaddress
import time
from dataclasses import dataclass, field
from typing import Callable, Optional

from ec2sim.world import Eni
from systest.qemu import BootInfo
from systest.vpc import (
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
    g: VpcGuest, subnet: str, n_ipv4: int, timeout: float, *, unplug: bool = True
) -> tuple[Hotplug, Plugged]:
    """Attach a fresh ENI and hot-plug its NIC; time until all its addresses answer;
    optionally unplug it and wait until the guest holds nothing for it any more."""
    eni = g.fabric.new_eni(subnet, n_ipv4=n_ipv4, n_ipv6=0)
    before = g.all_addresses()
    n0 = g.imds_requests()
    t0 = time.monotonic()
    plugged = g.plug(eni)
    reach = g.wait_reachable(addresses(eni), timeout, since=t0)
    if reach.ok:
        time.sleep(max(0.0, t0 + (reach.seconds or 0.0) + ATTACH_TAIL - time.monotonic()))
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


def free_ipv4(g: VpcGuest, eni: Eni) -> ipaddress.IPv4Address:
    """An address of the ENI's subnet that nothing in the VPC uses (from .200 down)."""
    subnet = g.fabric.world.subnet_of(eni).cidr4
    assert subnet is not None
    used = {a for e in g.fabric.world.enis.values() for a in e.ipv4s}
    used |= {e for s in g.fabric.spare.values() for e in s.ipv4s}
    used |= {h.ipv4 for h in g.fabric.hosts.values() if h.ipv4 is not None}
    for n in range(200, 1, -1):
        cand = subnet.network_address + n
        if cand not in used:
            return cand
    raise RuntimeError(f"no free address in {subnet}")


@dataclass
class Secondary:
    addr: str
    reach: Reach  # from the IMDS assignment


def secondary_ip(g: VpcGuest, mac: str, timeout: float) -> Secondary:
    """Assign one more IPv4 to an attached ENI in the VPC (router first, then IMDS)."""
    eni = g.fabric.world.enis[mac]
    addr = free_ipv4(g, eni)
    t0 = time.monotonic()
    g.fabric.assign(mac, addr)
    return Secondary(str(addr), g.wait_reachable([str(addr)], timeout, since=t0))


@dataclass
class Bridge:
    probes: dict[str, bool]  # host address -> reachable from the container

    @property
    def unreachable(self) -> list[str]:
        return [a for a, ok in self.probes.items() if not ok]


def docker_bridge(g: VpcGuest) -> Bridge:
    ns = g.docker_bridge()
    return Bridge(g.guest_probe(g.all_addresses(), ns))


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
