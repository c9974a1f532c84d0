"""interfaces.mtu and prefixes.local in the simulated VPC, proved by real TCP through
the source/destination check: a 9001-byte path carries a large transfer with jumbo
segments; an address of a delegated prefix that is on no interface answers."""

from __future__ import annotations

import ipaddress
import os

from ec2sim import probe
from tests.world.conftest import Instance

SECOND = "02:00:0a:00:02:14"  # default world: subnet-b, 10.0.2.20-22, 2600:1f16:292:2::20
JUMBO = 9001
PAYLOAD = os.urandom(4 << 20)


def jumbo_fabric(instance: Instance) -> None:
    """Every link on the client's path to the ENIs at 9001, as inside a VPC."""
    f = instance.fabric
    for port in f.ports.values():
        f.ip(f.router_ns, "link", "set", port.name, "mtu", str(JUMBO))
    for name in f.links(f.client_ns):
        f.ip(f.client_ns, "link", "set", name, "mtu", str(JUMBO))
    instance.ip("link", "set", "eth0", "mtu", str(JUMBO))  # what DHCP option 26 does


def link_mtu(instance: Instance, ifname: str) -> int:
    out = instance.ip("-o", "link", "show", ifname).split()
    return int(out[out.index("mtu") + 1])


def transfer(instance: Instance, addr: str) -> tuple[bool, int]:
    """PAYLOAD from the client to the echo service at `addr`: (intact, send MSS)."""
    return probe.transfer(instance.fabric.client_ns, addr, PAYLOAD, instance.fabric.echo_port)


def test_auto_takes_the_primarys_mtu_and_a_jumbo_path_carries_a_large_transfer(
    instance: Instance,
) -> None:
    f = instance.fabric
    jumbo_fabric(instance)
    f.attach(SECOND, "eth1")
    f.ip(f.router_ns, "link", "set", f.ports[SECOND].name, "mtu", str(JUMBO))
    assert link_mtu(instance, "eth1") == 1500  # the driver's default
    instance.ec2net("up", "eth1")
    assert link_mtu(instance, "eth1") == JUMBO
    intact, mss = transfer(instance, "10.0.2.21")
    assert intact
    assert mss > 8000, mss  # jumbo segments went through the check
    assert "drift" not in instance.ec2net("status").stdout
    instance.ec2net("down", "eth1")
    assert link_mtu(instance, "eth1") == 1500  # what it had before ec2net


def test_keep_leaves_the_mtu_and_the_path_stays_at_1500(instance: Instance) -> None:
    f = instance.fabric
    jumbo_fabric(instance)
    instance.config.write_text(
        instance.config.read_text().replace("[interfaces]\n", '[interfaces]\nmtu = "keep"\n')
    )
    f.attach(SECOND, "eth1")
    f.ip(f.router_ns, "link", "set", f.ports[SECOND].name, "mtu", str(JUMBO))
    instance.ec2net("up", "eth1")
    assert link_mtu(instance, "eth1") == 1500
    intact, mss = transfer(instance, "10.0.2.21")
    assert intact and mss <= 1460, mss


def test_a_number_and_a_per_eni_override(instance: Instance) -> None:
    f = instance.fabric
    instance.config.write_text(
        instance.config.read_text().replace(
            "[interfaces]\n",
            f'[interfaces]\nmtu = 8900\nmtu_overrides = {{ "{SECOND}" = 1280 }}\n',
        )
    )
    f.attach(SECOND, "eth1")
    eni3 = f.attach(f.new_eni("subnet-b", n_ipv4=1), "eth2")
    instance.ec2net("scan")
    assert link_mtu(instance, "eth1") == 1280
    assert link_mtu(instance, "eth2") == 8900
    assert instance.reachable(eni3.ipv4s[0])


def test_prefix_addresses_answer_only_with_prefixes_local(instance: Instance) -> None:
    f = instance.fabric
    f.attach(SECOND, "eth1")
    p4 = ipaddress.IPv4Network("10.0.2.64/28")
    p6 = ipaddress.IPv6Network("2600:1f16:292:2:a000::/80")
    f.assign(SECOND, p4)
    f.assign(SECOND, p6)
    a4, a6 = p4[5], p6[0x1234]  # on no interface
    instance.ec2net("up", "eth1")
    # Rules only: nothing answers. (Other addresses than the ones tried below: a failed
    # neighbour resolution stays cached in the router for a while.)
    assert not instance.reachable(p4[3]) and not instance.reachable(p6[3])
    instance.config.write_text(instance.config.read_text() + "[prefixes]\nlocal = true\n")
    instance.ec2net("refresh")
    assert instance.reachable(a4), "an address of the IPv4 prefix answers"
    assert instance.reachable(a6), "an address of the IPv6 prefix answers"
    assert instance.reachable(p4[14]) and instance.reachable(p6[1])
    local = instance.ip("route", "show", "table", "local", "proto", "236")
    assert "local 10.0.2.64/28 dev eth1" in local
    f.unassign(SECOND, p4)
    f.unassign(SECOND, p6)
    instance.ec2net("refresh")
    assert not instance.reachable(a4) and not instance.reachable(a6)
    assert "10.0.2.64/28" not in instance.ip("route", "show", "table", "local")
    assert "a000::/80" not in instance.ip("-6", "route", "show", "table", "local")
    f.assign(SECOND, p4)
    instance.ec2net("refresh")
    assert instance.reachable(a4)
    instance.ec2net("down", "eth1")
    assert "10.0.2.64/28" not in instance.ip("route", "show", "table", "local")
