"""Proof that the simulated VPC behaves like one: the source/destination check drops
replies that leave by the wrong ENI and passes them once policy routing is right.

Every claim is checked with a real TCP connection through the router namespace.
Addresses and rules are configured by hand here (argv lists), not by the product.
"""

from __future__ import annotations

import ipaddress
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Callable

import pytest

from ec2sim import netns
from ec2sim.fabric import Fabric
from ec2sim.layout import ROUTER_LL
from ec2sim.world import Eni

pytestmark = pytest.mark.world

SECOND_MAC = "02:00:0a:00:02:14"  # default world's eni-1 in subnet-b (10.0.2.20)


def configure_by_hand(w: Fabric, ifname: str, eni: Eni) -> None:
    """Addresses only, as a naive tool would: no policy routing."""
    s = w.world.subnet_of(eni)
    assert s.cidr4 is not None and s.cidr6 is not None
    w.ip(w.instance_ns, "link", "set", ifname, "up")
    for a in eni.ipv4s:
        w.ip(w.instance_ns, "addr", "add", f"{a}/{s.cidr4.prefixlen}", "dev", ifname)
    for a6 in eni.ipv6s:
        w.ip(
            w.instance_ns, "-6", "addr", "add", f"{a6}/{s.cidr6.prefixlen}", "dev", ifname, "nodad"
        )


def add_policy_routing(w: Fabric, ifname: str, eni: Eni, table: int) -> None:
    s = w.world.subnet_of(eni)
    assert s.cidr4 is not None and s.cidr6 is not None
    t = str(table)
    w.ip(w.instance_ns, "route", "add", str(s.cidr4), "dev", ifname, "table", t)
    w.ip(
        w.instance_ns, "route", "add", "default", "via", str(s.gateway4), "dev", ifname, "table", t
    )
    w.ip(w.instance_ns, "-6", "route", "add", str(s.cidr6), "dev", ifname, "table", t)
    w.ip(
        w.instance_ns, "-6", "route", "add", "default", "via", ROUTER_LL, "dev", ifname, "table", t
    )
    for a in eni.ipv4s:
        w.ip(w.instance_ns, "rule", "add", "from", str(a), "lookup", t)
    for a6 in eni.ipv6s:
        w.ip(w.instance_ns, "-6", "rule", "add", "from", str(a6), "lookup", t)


def test_primary_reachable_from_client_and_peer(world: Fabric) -> None:
    primary = world.world.primary()
    for ns in (world.client_ns, world.peer_ns):
        assert world.probe(ns, primary.ipv4s[0])
        assert world.probe(ns, primary.ipv6s[0])


@pytest.mark.parametrize("family", [4, 6])
def test_srcdst_check_other_subnet(world: Fabric, family: int) -> None:
    eni = world.attach(SECOND_MAC, "eth1")
    configure_by_hand(world, "eth1", eni)
    addr = eni.ipv4s[0] if family == 4 else eni.ipv6s[0]
    # the reply leaves by eth0 (main table) with eth1's address: the VPC drops it
    assert not world.probe(world.client_ns, addr)
    add_policy_routing(world, "eth1", eni, 101)
    assert world.probe(world.client_ns, addr)
    if family == 4:
        for secondary in eni.ipv4s[1:]:
            assert world.probe(world.client_ns, secondary)
    # the primary keeps working throughout
    assert world.probe(world.client_ns, world.world.primary().ipv4s[0])


@pytest.mark.parametrize("family", [4, 6])
def test_srcdst_check_same_subnet(world: Fabric, family: int) -> None:
    eni = world.attach(world.new_eni("subnet-a", n_ipv4=1, n_ipv6=1), "eth1")
    configure_by_hand(world, "eth1", eni)
    addr = eni.ipv4s[0] if family == 4 else eni.ipv6s[0]
    # the main table's first subnet route is eth0's: the reply leaves by eth0, dropped
    assert not world.probe(world.peer_ns, addr)
    add_policy_routing(world, "eth1", eni, 102)
    assert world.probe(world.peer_ns, addr)
    assert world.probe(world.client_ns, addr)
    primary = world.world.primary()
    assert world.probe(world.peer_ns, primary.ipv4s[0] if family == 4 else primary.ipv6s[0])


def test_wrong_source_is_dropped_even_from_the_right_subnet(world: Fabric) -> None:
    # a source the VPC never assigned (here: bound on the peer) never gets through
    world.ip(world.peer_ns, "addr", "add", "10.0.1.77/32", "dev", "eth0")
    assert not world.probe(world.peer_ns, "10.0.3.100", port=9, source="10.0.1.77", timeout=0.5)
    assert world.router_port_for("10.0.1.77") is None


def test_imds_reachable_from_instance(world: Fabric) -> None:
    assert world.imds_get("/latest/meta-data/mac") == world.world.primary_mac
    assert world.imds_requests(method="PUT") >= 1
    assert world.imds_requests(method="GET", path_prefix="/latest/meta-data/mac") == 1


def test_attach_detach_reflected_in_links_and_imds(world: Fabric) -> None:
    macs_path = "/latest/meta-data/network/interfaces/macs/"
    assert SECOND_MAC not in world.imds_get(macs_path)
    world.attach(SECOND_MAC, "eth1")
    assert world.links()["eth1"] == SECOND_MAC
    assert SECOND_MAC in world.imds_get(macs_path)
    state = world.ip(world.instance_ns, "-j", "link", "show", "eth1")
    assert '"operstate":"DOWN"' in state.replace(" ", "")
    assert "inet" not in world.ip(world.instance_ns, "addr", "show", "eth1")

    world.detach(SECOND_MAC)
    assert "eth1" not in world.links()
    assert SECOND_MAC not in world.imds_get(macs_path)
    assert world.router_port_for("10.0.2.20") is None

    # the same ENI comes back under another name and works
    eni = world.attach(SECOND_MAC, "eth2")
    assert world.links()["eth2"] == SECOND_MAC
    configure_by_hand(world, "eth2", eni)
    add_policy_routing(world, "eth2", eni, 103)
    assert world.probe(world.client_ns, eni.ipv4s[0])


def test_assign_and_unassign_route_in_router(world: Fabric) -> None:
    eni = world.attach(SECOND_MAC, "eth1")
    path = f"/latest/meta-data/network/interfaces/macs/{SECOND_MAC}/local-ipv4s"
    new4 = ipaddress.IPv4Address("10.0.2.23")
    new6 = ipaddress.IPv6Address("2600:1f16:292:2::23")
    prefix = ipaddress.IPv4Network("10.0.2.64/28")
    assert world.router_port_for(new4) is None
    world.assign(SECOND_MAC, new4)
    world.assign(SECOND_MAC, new6)
    world.assign(SECOND_MAC, prefix)
    assert world.router_port_for(new4) == SECOND_MAC
    assert world.router_port_for(new6) == SECOND_MAC
    assert world.router_port_for("10.0.2.70") == SECOND_MAC
    assert "10.0.2.23" in world.imds_get(path)

    # an address inside the delegated prefix really works end to end
    configure_by_hand(world, "eth1", eni)
    world.ip(world.instance_ns, "addr", "add", "10.0.2.70/32", "dev", "eth1")
    world.ip(world.instance_ns, "rule", "add", "from", "10.0.2.64/28", "lookup", "101")
    add_policy_routing(world, "eth1", eni, 101)
    assert world.probe(world.client_ns, "10.0.2.70")
    assert world.probe(world.client_ns, new6)  # configured by hand from eni.ipv6s

    world.unassign(SECOND_MAC, new4)
    world.unassign(SECOND_MAC, prefix)
    assert world.router_port_for(new4) is None
    assert world.router_port_for("10.0.2.70") is None
    assert "10.0.2.23" not in world.imds_get(path)
    assert not world.probe(world.client_ns, "10.0.2.70")


def test_multi_card_attach(make_world: Callable[..., Fabric]) -> None:
    w = make_world()
    w.world.multi_card = True
    card1 = w.attach(w.new_eni("subnet-b", network_card=1, device_number=0), "eth1")
    card0 = w.attach(w.new_eni("subnet-b", network_card=0), "eth2")
    assert (card1.network_card, card1.device_number) == (1, 0)
    assert (card0.network_card, card0.device_number) == (0, 1)
    configure_by_hand(w, "eth1", card1)
    add_policy_routing(w, "eth1", card1, 10100)
    configure_by_hand(w, "eth2", card0)
    add_policy_routing(w, "eth2", card0, 10001)
    assert w.probe(w.client_ns, card1.ipv4s[0])
    assert w.probe(w.client_ns, card0.ipv4s[0])


def test_docker_bridge_container_reaches_host_addresses(world: Fabric) -> None:
    ctr = world.docker_bridge()
    assert world.probe(ctr, "172.17.0.1")
    assert world.probe(ctr, world.world.primary().ipv4s[0])
    eni = world.attach(SECOND_MAC, "eth1")
    configure_by_hand(world, "eth1", eni)
    assert world.probe(ctr, eni.ipv4s[0])


def test_dhcp_reservation_by_mac(make_world: Callable[..., Fabric], tmp_path: Path) -> None:
    w = make_world(dhcp=True)
    w.attach(SECOND_MAC, "eth1")
    w.ip(w.instance_ns, "link", "set", "eth1", "up")
    lease = tmp_path / "lease"
    # -sf /bin/true: read the offer only; the test configures nothing from it
    argv = netns.ns_exec_argv(
        w.instance_ns,
        [
            "dhclient",
            "-4",
            "-d",
            "-1",
            "-sf",
            "/bin/true",
            "-lf",
            str(lease),
            "-pf",
            str(tmp_path / "pid"),
            "eth1",
        ],
    )
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if lease.exists() and "fixed-address" in lease.read_text():
                break
            time.sleep(0.05)
        assert "fixed-address 10.0.2.20;" in lease.read_text()
        assert "option routers 10.0.2.1;" in lease.read_text()
    finally:
        proc.terminate()
        proc.wait(timeout=5)


def test_teardown_leaves_nothing(make_world: Callable[..., Fabric]) -> None:
    w = make_world(dhcp=True)
    w.docker_bridge()
    w.attach(SECOND_MAC, "eth1")
    pids = list(w.state.pids)
    w.stop()
    assert not [ns for ns in netns.list_netns() if ns.startswith(w.prefix)]
    assert not w.state.path.exists()
    assert all(not netns.pid_alive(pid, start) for pid, start in pids)


def test_crashed_world_orphans_are_cleaned(world: Fabric) -> None:
    script = textwrap.dedent("""
        import os, sys
        from ec2sim.fabric import Fabric
        f = Fabric(dhcp=True, label="crash-test").start()
        print(f.prefix, flush=True)
        os._exit(3)  # a crash: no teardown, no atexit
    """)
    root = Path(__file__).resolve().parents[2]
    out = subprocess.run(
        [sys.executable, "-c", script],
        check=False,
        cwd=root,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 3, out.stderr
    prefix = out.stdout.strip()
    left = [ns for ns in netns.list_netns() if ns.startswith(prefix)]
    assert left, "the crash should have left namespaces behind"
    state = next(s for s in netns.recorded_worlds() if s.prefix == prefix)
    assert state.pids and all(netns.pid_alive(p, s) for p, s in state.pids)  # dnsmasq

    removed = netns.cleanup_orphans()
    assert prefix in removed
    assert world.prefix not in removed  # a live world is never touched
    assert not [ns for ns in netns.list_netns() if ns.startswith(prefix)]
    assert all(not netns.pid_alive(p, s) for p, s in state.pids)
    assert world.probe(world.client_ns, world.world.primary().ipv4s[0])
