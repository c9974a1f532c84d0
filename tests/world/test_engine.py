"""The engine in the simulated VPC: every routing scenario of docs/routing.md proved by
real TCP connections through the router's source/destination check."""

from __future__ import annotations

import ipaddress
import time
from typing import Callable

import pytest

from ec2sim.world import Eni
from tests.world.conftest import Instance, echo, two_card_world

pytestmark = pytest.mark.world

SECOND = "02:00:0a:00:02:14"  # default world: subnet-b, 10.0.2.20-22, 2600:1f16:292:2::20


def addrs(eni: Eni) -> list[str]:
    return [str(a) for a in (*eni.ipv4s, *eni.ipv6s)]


def assert_reachable(inst: Instance, eni: Eni, src_ns: str = "") -> None:
    unreachable = [a for a in addrs(eni) if not inst.reachable(a, src_ns)]
    assert unreachable == [], f"not reachable from {src_ns or 'client'}: {unreachable}"


def test_other_subnet_eni_with_secondaries(instance: Instance) -> None:
    f = instance.fabric
    primary = f.world.primary()
    keep = instance.open_connection(primary.ipv4s[0])
    eni = f.attach(SECOND, "eth1")
    planned = instance.ec2net("plan", "eth1").stdout
    assert "rule pref 20001 from 10.0.2.20/31 lookup main suppress_prefixlength 0" in planned
    instance.ec2net("up", "eth1")  # also brings the link up: it appears down
    assert len(eni.ipv4s) == 3
    assert_reachable(instance, eni)  # from the client subnet, v4 and v6
    assert_reachable(instance, eni, f.peer_ns)  # from the primary's subnet
    assert echo(keep)
    # the primary is untouched and still reachable everywhere
    assert instance.reachable(primary.ipv4s[0])
    # a second run changes nothing
    again = instance.ec2net("up", "eth1")
    assert again.stdout.strip() == "eth1: unchanged", again.stdout


def test_without_policy_routing_the_check_drops_replies(instance: Instance) -> None:
    """The control: the same addresses without ec2net's rules are unreachable."""
    f = instance.fabric
    eni = f.attach(SECOND, "eth1")
    instance.ip("link", "set", "eth1", "up")
    instance.ip("addr", "add", f"{eni.ipv4s[0]}/24", "dev", "eth1")
    time.sleep(0.1)
    assert not instance.reachable(eni.ipv4s[0])
    instance.ip("addr", "del", f"{eni.ipv4s[0]}/24", "dev", "eth1")
    instance.ec2net("up", "eth1")
    assert instance.reachable(eni.ipv4s[0])


def test_two_enis_in_the_primary_subnet(instance: Instance) -> None:
    f = instance.fabric
    a = f.attach(f.new_eni("subnet-a", n_ipv4=2, n_ipv6=1), "eth1")
    b = f.attach(f.new_eni("subnet-a", n_ipv4=1, n_ipv6=0), "eth2")
    instance.ec2net("up", "eth1")
    instance.ec2net("up", "eth2")
    for eni in (a, b, f.world.primary()):
        assert_reachable(instance, eni, f.peer_ns)  # same subnet
        assert_reachable(instance, eni)  # from elsewhere
    assert {a.device_number, b.device_number} == {1, 2}
    tables = instance.ip("-4", "rule", "show", "proto", "236")
    assert "lookup 10001" in tables and "lookup 10002" in tables


def test_docker_bridge_reaches_every_host_address(instance: Instance) -> None:
    f = instance.fabric
    ctr = f.docker_bridge()
    eni = f.attach(SECOND, "eth1")
    instance.ec2net("up", "eth1")
    for addr in (*eni.ipv4s, f.world.primary().ipv4s[0]):
        assert instance.reachable(addr, ctr), f"container cannot reach {addr}"
    assert_reachable(instance, eni)


def test_foreign_rules_and_user_routes_untouched(instance: Instance) -> None:
    f = instance.fabric
    client_ip = f.hosts["client"].ipv4
    user_net = ipaddress.IPv4Network("10.0.3.0/25")
    # the reachability checks below go to the client: they must cross the user's route
    assert client_ip is not None and client_ip in user_net, client_ip
    primary_ip = f.world.primary().ipv4s[0]
    # a CNI-like rule with its own table, and a user's more specific main route (realm 7
    # tells it apart from the default route, which has the same gateway)
    instance.ip("rule", "add", "pref", "512", "from", "10.0.9.0/24", "lookup", "100")
    instance.ip(
        "route", "add", "192.168.50.0/24", "via", "10.0.1.1", "dev", "eth0", "table", "100"
    )
    instance.ip("route", "add", str(user_net), "via", "10.0.1.1", "dev", "eth0", "realm", "7")
    before = (
        instance.ip("rule", "show", "pref", "512"),
        instance.ip("route", "show", "table", "100"),
        instance.ip("route", "show", str(user_net)),
    )
    eni = f.attach(SECOND, "eth1")
    for verb in (["up", "eth1"], ["refresh"], ["scan"], ["refresh", "eth1"]):
        instance.ec2net(*verb)
        assert before == (
            instance.ip("rule", "show", "pref", "512"),
            instance.ip("route", "show", "table", "100"),
            instance.ip("route", "show", str(user_net)),
        ), verb
    assert_reachable(instance, eni)
    # the ENI's own sources reach the client through the ENI (VPC routes come first)
    via_eni = instance.ip("route", "get", str(client_ip), "from", str(eni.ipv4s[0]))
    assert "dev eth1" in via_eni and "realm" not in via_eni, via_eni
    # the user's route still carries the primary's traffic to the client subnet
    route = instance.ip("route", "get", str(client_ip), "from", str(primary_ip))
    assert "dev eth0" in route and "realm 7" in route, route
    assert instance.reachable(primary_ip)
    instance.ec2net("down", "eth1")
    assert before[0] == instance.ip("rule", "show", "pref", "512")
    assert before[1] == instance.ip("route", "show", "table", "100")
    assert before[2] == instance.ip("route", "show", str(user_net))
    route = instance.ip("route", "get", str(client_ip), "from", str(primary_ip))
    assert "dev eth0" in route and "realm 7" in route, route


def test_delegated_prefixes(instance: Instance) -> None:
    f = instance.fabric
    eni = f.attach(SECOND, "eth1")
    p4 = ipaddress.IPv4Network("10.0.2.64/28")
    p6 = ipaddress.IPv6Network("2600:1f16:292:2:a000::/80")
    f.assign(SECOND, p4)
    f.assign(SECOND, p6)
    instance.ec2net("up", "eth1")
    # something on the host uses addresses from the prefixes (as a pod would)
    a4, a6 = p4[2], p6[2]
    instance.ip("addr", "add", f"{a4}/32", "dev", "lo")
    instance.ip("-6", "addr", "add", f"{a6}/128", "dev", "lo", "nodad")
    assert instance.reachable(a4)
    assert instance.reachable(a6)
    assert_reachable(instance, eni)


def test_two_network_cards_never_share_a_table(make_instance: Callable[..., Instance]) -> None:
    inst = make_instance(world=two_card_world())
    f = inst.fabric
    card1 = f.attach(f.new_eni("subnet-b", device_number=0, network_card=1, n_ipv4=2), "eth1")
    card0 = f.attach(f.new_eni("subnet-d", device_number=1, network_card=0, n_ipv4=2), "eth2")
    inst.ec2net("scan")
    rules = inst.ip("-4", "rule", "show", "proto", "236")
    assert "lookup 10100" in rules and "lookup 10001" in rules
    assert_reachable(inst, card1)
    assert_reachable(inst, card0)


def test_down_and_detach_leave_nothing_and_reattach_works(instance: Instance) -> None:
    f = instance.fabric
    empty = instance.owned_state()
    eni = f.attach(SECOND, "eth1")
    instance.ec2net("up", "eth1")
    assert instance.owned_state() != empty
    instance.ec2net("down", "eth1")
    assert instance.owned_state() == empty
    assert "10.0.2.2" not in instance.ip("addr", "show", "dev", "eth1")
    # detach without down (no daemon): the device vanishes, rules would linger;
    # `down` after the fact still cleans them
    instance.ec2net("up", "eth1")
    f.detach(SECOND)
    assert "10001" in instance.ip("rule", "show", "proto", "236")  # the kernel kept them
    instance.ec2net("down", "eth1")
    assert instance.owned_state() == empty
    # scan cleans the records of ENIs that are gone too
    f.attach(SECOND, "eth1")
    instance.ec2net("up", "eth1")
    f.detach(SECOND)
    instance.ec2net("scan")
    assert instance.owned_state() == empty
    # the same ENI under another name
    f.attach(SECOND, "eth7")
    instance.ec2net("up", "eth7")
    assert_reachable(instance, eni)
    assert instance.reachable(f.world.primary().ipv4s[0])


def test_secondary_ip_changes_follow_imds(instance: Instance) -> None:
    f = instance.fabric
    eni = f.attach(SECOND, "eth1")
    instance.ec2net("up", "eth1")
    new4 = ipaddress.IPv4Address("10.0.2.33")
    new6 = ipaddress.IPv6Address("2600:1f16:292:2::33")
    f.assign(SECOND, new4)
    f.assign(SECOND, new6)
    assert not instance.reachable(new4)
    instance.ec2net("refresh")
    assert instance.reachable(new4)
    assert instance.reachable(new6)
    gone = eni.ipv4s[1]
    f.unassign(SECOND, gone)
    instance.ec2net("refresh", "eth1")
    assert str(gone) not in instance.ip("addr", "show", "dev", "eth1")
    assert_reachable(instance, eni)


def test_imds_outage_keeps_state_and_recovers(instance: Instance) -> None:
    f = instance.fabric
    eni = f.attach(SECOND, "eth1")
    instance.ec2net("up", "eth1")
    before = instance.owned_state()
    configured = addrs(eni)
    f.world.faults.error_503_remaining = 10_000
    f.assign(SECOND, ipaddress.IPv4Address("10.0.2.44"))
    start = time.monotonic()
    proc = instance.ec2net("refresh", check=False)
    assert proc.returncode == 1, proc.stderr
    assert time.monotonic() - start < 20
    assert instance.owned_state() == before
    assert all(instance.reachable(a) for a in configured)
    # no answer at all
    f.world.faults.error_503_remaining = 0
    f.world.faults.blackhole = True
    proc = instance.ec2net("refresh", check=False)
    assert proc.returncode == 1
    assert instance.owned_state() == before
    f.world.faults.blackhole = False
    instance.ec2net("refresh")
    assert instance.reachable("10.0.2.44")


def test_primary_connection_survives_everything(instance: Instance) -> None:
    f = instance.fabric
    keep = instance.open_connection(f.world.primary().ipv4s[0])
    keep6 = instance.open_connection(f.world.primary().ipv6s[0])
    f.attach(SECOND, "eth1")
    for verb in (["up", "eth1"], ["refresh"], ["scan"], ["down", "eth1"], ["scan"]):
        instance.ec2net(*verb)
        assert echo(keep), verb
        assert echo(keep6), verb
    f.detach(SECOND)
    instance.ec2net("scan")
    assert echo(keep)


def test_plan_is_a_dry_run(instance: Instance) -> None:
    f = instance.fabric
    f.attach(SECOND, "eth1")
    empty = instance.owned_state()
    out = instance.ec2net("plan", "eth1").stdout
    assert "add address 10.0.2.20/24 dev eth1 noprefixroute" in out
    assert "add rule pref 25001 from 10.0.2.20/31 lookup 10001" in out
    assert instance.owned_state() == empty
    instance.ec2net("up", "eth1")
    assert instance.ec2net("plan", "eth1").stdout.strip() == "eth1: nothing to change"


def test_status_and_metadata(instance: Instance) -> None:
    f = instance.fabric
    f.attach(SECOND, "eth1")
    instance.ec2net("up", "eth1")
    import json

    rows = json.loads(instance.ec2net("status", "--json").stdout)
    assert [(r["interface"], r["state"], r["table"]) for r in rows] == [("eth1", "ok", 10001)]
    assert "eth1" in instance.ec2net("status").stdout
    assert instance.ec2net("metadata", "mac").stdout.strip() == f.world.primary_mac
    # a person deletes one of our rules: status sees the drift, up repairs it
    instance.ip("rule", "del", "pref", "25001", "from", "10.0.2.22/32")
    rows = json.loads(instance.ec2net("status", "--json").stdout)
    assert rows[0]["state"] == "drifted"
    instance.ec2net("up", "eth1")
    rows = json.loads(instance.ec2net("status", "--json").stdout)
    assert rows[0]["state"] == "ok"


def test_excluded_and_unknown_interfaces(instance: Instance) -> None:
    f = instance.fabric
    f.attach(SECOND, "eth1")
    instance.write_config(exclude_names=["eth1"])
    out = instance.ec2net("up", "eth1").stdout
    assert "skipped" in out
    assert instance.owned_state()["records"] == ""
    gone = instance.ec2net("up", "eth9", check=False)
    assert gone.returncode == 2
    bad = instance.config.read_text().replace("[imds]", "[imds]\nbogus = 1")
    instance.config.write_text(bad)
    proc = instance.ec2net("up", "eth1", check=False)
    assert proc.returncode == 2
    assert "imds.bogus" in proc.stderr


def test_table_claimed_by_a_live_eni_is_not_taken(instance: Instance) -> None:
    """Two ENIs reporting the same device number (stale metadata) never share a
    table: the second waits (exit 1) instead of replacing the first's rules."""
    f = instance.fabric
    a = f.attach(f.new_eni("subnet-b", device_number=3, n_ipv4=1, n_ipv6=0), "eth1")
    b = f.attach(f.new_eni("subnet-b", device_number=4, n_ipv4=1, n_ipv6=0), "eth2")
    instance.ec2net("up", "eth1")
    b.device_number = 3
    proc = instance.ec2net("up", "eth2", check=False)
    assert proc.returncode == 1
    assert "10003" in proc.stderr
    assert_reachable(instance, a)


def test_scan_hands_a_gone_enis_table_to_its_successor(instance: Instance) -> None:
    """A detached ENI's table is taken by the next ENI (same device-number) before
    anything cleaned up: one scan removes the old and configures the new."""
    f = instance.fabric
    first = f.attach(SECOND, "eth1")
    instance.ec2net("up", "eth1")
    f.detach(first)
    other = f.attach(f.new_eni("subnet-b", n_ipv4=2, n_ipv6=0), "eth1")
    assert other.device_number == first.device_number
    instance.ec2net("scan")
    assert_reachable(instance, other)
    assert_reachable(instance, other, f.peer_ns)
    again = instance.ec2net("scan")
    assert "configured" not in again.stdout, again.stdout
