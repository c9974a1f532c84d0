"""An IPv6-only instance on a real OS: the primary sits in an IPv6-only subnet (no IPv4,
so no route to 169.254.169.254), IMDS answers only at [fd00:ec2::254]. ec2net from its
package on the trixie networkd guest: a dual-stack ENI and an IPv6-only ENI hot-plugged,
each reachable through the check, every IMDS request over IPv6 (the IPv4 endpoint is
never reached, and is not waited out on each request).
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
from collections.abc import Iterator

import pytest

from ec2sim.world import World
from systest import harness, install
from systest.image import ensure_image
from systest.vpc import (
    IPV6_ONLY_SUBNET,
    OTHER_SUBNET_MAC,
    PRIMARY_MAC,
    VPC6,
    VpcGuest,
    addresses,
    system_world,
)

pytestmark = pytest.mark.system

VARIANT = "trixie-networkd"
REACH_TIMEOUT = 120.0


def ipv6_only_world() -> World:
    """system_world with the primary moved into the IPv6-only subnet."""
    world = system_world()
    primary = world.enis[PRIMARY_MAC]
    world.enis[PRIMARY_MAC] = dataclasses.replace(
        primary,
        subnet_id=IPV6_ONLY_SUBNET,
        ipv4s=[],
        ipv6s=[ipaddress.IPv6Address(f"{VPC6}:d6::10")],
    )
    return world


@pytest.fixture(scope="module")
def guest(qemu_available: None, ec2net_package: install.Package) -> Iterator[VpcGuest]:
    workdir = harness.short_workdir()
    g = VpcGuest(ensure_image(VARIANT), workdir, world=ipv6_only_world())
    try:
        boot = g.start()
        print(f"\n[{VARIANT} IPv6-only] boot: {boot.state} {boot.running_s:.1f} s")
        install.install_ec2net(g.agent, ec2net_package)
        g.agent.run(["systemctl", "start", "ec2net-watch.service"], timeout=300, check=True)
        yield g
    finally:
        g.stop()
        if os.environ.get("EC2NET_SYSTEST_KEEP") != "1":
            harness.remove_workdir(workdir)


def test_enis_of_an_ipv6_only_instance_over_the_ipv6_endpoint(guest: VpcGuest) -> None:
    f = guest.fabric
    primary6 = addresses(f.world.primary())
    client = {"client": f.client_ns}  # dual-stack; the peer shares the IPv6-only subnet
    assert guest.wait_reachable(primary6, REACH_TIMEOUT).ok  # networkd's DHCPv6 + RA
    dual = f.spare[OTHER_SUBNET_MAC]
    v6only = f.new_eni(IPV6_ONLY_SUBNET, n_ipv4=0, n_ipv6=2)
    problems = []
    for eni in (dual, v6only):
        v4_before, v6_before = f.imds.log.count(), f.imds6.log.count()  # type: ignore[union-attr]
        plugged = guest.plug(eni)
        reach = guest.wait_reachable(addresses(eni), REACH_TIMEOUT, sources=client)
        v6_reach = guest.wait_reachable([str(a) for a in eni.ipv6s], REACH_TIMEOUT)
        v4 = f.imds.log.count() - v4_before  # type: ignore[union-attr]
        v6 = f.imds6.log.count() - v6_before  # type: ignore[union-attr]
        print(
            f"\n[{VARIANT} IPv6-only] {plugged.ifname} ({eni.subnet_id}, "
            f"{len(addresses(eni))} addresses): reachable {reach.seconds} s after device_add; "
            f"IMDS requests over IPv4 {v4}, over IPv6 {v6}"
        )
        if not (reach.ok and v6_reach.ok):
            problems.append(f"{plugged.ifname}: unreachable {reach.missing + v6_reach.missing}")
        if v4 != 0 or v6 == 0:
            problems.append(f"{plugged.ifname}: IMDS over IPv4 {v4}, over IPv6 {v6}")
        if problems:
            problems.append(guest.journal("ec2net-watch", "ec2net@*", lines=60))
        guest.unplug(plugged)
        clean_s, left = guest.wait_clean(plugged, 30.0)
        print(f"  unplugged: nothing left {clean_s} s after DEVICE_DELETED")
        if left:
            problems.append(f"{plugged.ifname}: left behind {left}")
    assert problems == [], "\n".join(problems)
    assert guest.unreachable(primary6) == []
