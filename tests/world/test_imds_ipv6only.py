"""IPv6-only subnets and instances in the simulated VPC: IMDS reached at [fd00:ec2::254]
only, `local-ipv4s` and `subnet-ipv4-cidr-block` absent, a 169.254.x.x/32 DHCP lease on
the link that is never ec2net's. Reachability is proved through the router's
source/destination check from the client host."""

from __future__ import annotations

import ipaddress
import json
import socket
import stat
from email.message import Message
from typing import Callable, Optional

import pytest

from ec2sim.fabric import Fabric
from ec2sim.imds import ImdsServer
from ec2sim.layout import IMDS_V4
from ec2sim.netns import run_in_netns
from ec2sim.world import Eni, Subnet, default_world, ipv6_only_world
from tests.world.conftest import Instance

pytestmark = pytest.mark.world

SECOND6 = "02:00:0a:00:b6:14"  # ipv6_only_world: IPv6-only eni-1 in subnet-b6
DUAL = "02:00:0a:00:04:14"  # ipv6_only_world: dual-stack eni-2 in subnet-d
V6_ENDPOINT = "http://[fd00:ec2::254]"


def add_lease(inst: Instance, ifname: str, eni: Eni) -> str:
    """What the DHCPv4 client does on an IPv6-only ENI: a 169.254.x.x/32, no route."""
    assert eni.lease4 is not None
    inst.ip("link", "set", ifname, "up")
    inst.ip("addr", "add", f"{eni.lease4}/32", "dev", ifname)
    return str(eni.lease4)


def assert_reachable(inst: Instance, *addrs: object) -> None:
    unreachable = [str(a) for a in addrs if not inst.reachable(str(a))]
    assert unreachable == [], f"not reachable from the client: {unreachable}"


def assert_only_ipv6(inst: Instance, table: int) -> None:
    assert f"lookup {table}" not in inst.ip("-4", "rule", "show", "proto", "236")
    assert f"table {table}" not in inst.ip("-4", "route", "show", "table", "all")
    assert f"lookup {table}" in inst.ip("-6", "rule", "show", "proto", "236")


def remembered(inst: Instance) -> Optional[str]:
    path = inst.runtime / "imds-endpoint"
    if not path.exists():
        return None
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    return str(json.loads(path.read_text())["endpoint"])


def test_ipv6_only_instance_with_ipv6_only_and_dual_stack_enis(
    make_instance: Callable[..., Instance],
) -> None:
    inst = make_instance(world=ipv6_only_world())
    f = inst.fabric
    assert "inet " not in inst.ip("-4", "route", "show")  # no IPv4 route to IMDS at all
    eni = f.attach(SECOND6, "eth1")
    lease = add_lease(inst, "eth1", eni)
    inst.ec2net("up", "eth1")
    assert_reachable(inst, *eni.ipv6s)
    assert_only_ipv6(inst, 10001)
    assert f"{lease}/32" in inst.ip("addr", "show", "dev", "eth1")  # the lease untouched
    assert remembered(inst) == V6_ENDPOINT
    assert f.imds is not None and f.imds.log.count() == 0
    # a dual-stack ENI on the IPv6-only instance gets both families
    dual = f.attach(DUAL, "eth2")
    inst.ec2net("up", "eth2")
    assert_reachable(inst, *dual.ipv4s, *dual.ipv6s)
    assert "lookup 10002" in inst.ip("-4", "rule", "show", "proto", "236")
    # down removes ours, keeps the lease
    inst.ec2net("down", "eth1")
    assert "10001" not in inst.ip("-6", "rule", "show", "proto", "236")
    assert f"{lease}/32" in inst.ip("addr", "show", "dev", "eth1")
    assert_reachable(inst, *dual.ipv4s)


class _SilentImds(ImdsServer):
    """IMDS's IPv4 endpoint as an IPv6-only instance whose lease routes to it meets it:
    connections are taken (and logged) but never answered."""

    def answer(self, method: str, path: str, headers: Message[str, str]) -> None:
        return None


def _silence_ipv4_imds(f: Fabric) -> ImdsServer:
    assert f.imds is not None
    f.imds.stop(timeout=1.0)

    def listen() -> socket.socket:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((IMDS_V4, 80))
        sock.listen(16)
        return sock

    silent = _SilentImds(f.world, run_in_netns(f.router_ns, listen))
    silent.start()
    f.imds = silent  # the fabric stops it
    return silent


def test_second_process_sends_nothing_to_the_ipv4_endpoint(
    make_instance: Callable[..., Instance],
) -> None:
    inst = make_instance(world=ipv6_only_world())
    f = inst.fabric
    primary = f.world.primary()
    # the lease's route reaches IPv4 IMDS, which never answers: each try waits it out
    f.ip(f.router_ns, "route", "add", f"{primary.lease4}/32", "dev", f.ports[primary.mac].name)
    inst.ip(
        "route", "add", f"{IMDS_V4}/32", "dev", "eth0", "scope", "link", "src", str(primary.lease4)
    )
    silent = _silence_ipv4_imds(f)
    eni = f.attach(SECOND6, "eth1")
    inst.ec2net("up", "eth1")
    waited = silent.log.count()
    assert waited >= 1  # the first process tried IPv4 (once: then it prefers IPv6)
    assert remembered(inst) == V6_ENDPOINT
    assert_reachable(inst, *eni.ipv6s)
    # new processes start with the endpoint that answered
    assert inst.ec2net("up", "eth1").stdout.strip() == "eth1: unchanged"
    inst.ec2net("refresh", "eth1")
    assert silent.log.count() == waited, silent.log.entries()[waited:]
    assert f.imds6 is not None and f.imds6.log.count(method="GET") > 0


def test_dual_stack_instance_with_an_ipv6_only_eni(
    make_instance: Callable[..., Instance],
) -> None:
    w = default_world()
    w.subnets["subnet-e6"] = Subnet(
        "subnet-e6", None, ipaddress.IPv6Network("2600:1f16:292:e6::/64")
    )
    inst = make_instance(world=w)
    f = inst.fabric
    eni = f.attach(f.new_eni("subnet-e6", n_ipv4=0, n_ipv6=2), "eth1")
    assert eni.ipv4s == [] and eni.lease4 is not None
    meta = f.imds_get(f"/latest/meta-data/network/interfaces/macs/{eni.mac}/")
    assert "local-ipv4s" not in meta.split("\n")
    assert "subnet-ipv4-cidr-block" not in meta.split("\n")
    lease = add_lease(inst, "eth1", eni)
    plan = inst.ec2net("plan", "eth1").stdout
    assert lease not in plan and "-6 rule pref 10001" in plan
    inst.ec2net("up", "eth1")
    assert_reachable(inst, *eni.ipv6s)
    assert_only_ipv6(inst, 10001)
    inst.ec2net("down", "eth1")
    assert f"{lease}/32" in inst.ip("addr", "show", "dev", "eth1")
    assert "10001" not in inst.ip("-6", "rule", "show", "proto", "236")
    assert inst.reachable(f.world.primary().ipv4s[0])
