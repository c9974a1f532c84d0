"""The ifcfg renderer in the simulated VPC, applied the way RHEL network-scripts applies
it (ec2sim.netscripts emulates ifup/ifdown), proved like test_engine.py proves the
netlink backend: real TCP connections through the router's source/destination check.

The plan is built as the engine builds it (IMDS through ec2net.metadata, links from the
netlink backend, ec2net.plan), rendered by ec2net.render.ifcfg into a temporary root
and brought up with the emulated `ifup`, never by ec2net itself.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import json
from pathlib import Path
from typing import Callable

import pytest

from ec2net import plan as planner
from ec2net.backends.netlink import NetlinkBackend
from ec2net.diff import Current, diff_interface
from ec2net.imds import ImdsClient
from ec2net.metadata import EniMetadata, wait_for_eni
from ec2net.model import Family, rule_of_table
from ec2net.render import Files, RenderInput, ifcfg
from ec2sim.netns import run_in_netns
from ec2sim.netscripts import (
    SCRIPTS_DIR,
    ConfigError,
    NetworkScripts,
    Report,
    expand_ipv4,
    fabric_runner,
    parse_shell_vars,
    read_lines,
)
from ec2sim.world import Eni
from tests.world.conftest import Instance, echo, two_card_world

pytestmark = pytest.mark.world

SECOND = "02:00:0a:00:02:14"  # default world: subnet-b, 10.0.2.20-22, 2600:1f16:292:2::20


class Scripts:
    """One instance configured through rendered network-scripts files."""

    def __init__(self, inst: Instance, root: Path) -> None:
        self.inst = inst
        self.fabric = inst.fabric
        self.root = root
        self.ns = inst.fabric.instance_ns
        self.emulator = NetworkScripts(root, fabric_runner(inst.fabric), dad_timeout=5.0)

    def render_input(self, ifname: str) -> RenderInput:
        """What the engine would plan for `ifname` now (Engine._target's inputs)."""
        with NetlinkBackend(self.ns) as nl:
            link = nl.link(ifname)
        assert link is not None, ifname

        def fetch() -> EniMetadata:
            client = ImdsClient((self.fabric.imds_url,), timeout=0.5, retries=2)
            primary = client.get("mac").strip().lower()
            return wait_for_eni(client, link.mac, primary, 25)

        eni = run_in_netns(self.ns, fetch)  # IMDS answers inside the instance only
        return RenderInput(planner.plan_interface(eni, link), link, eni)

    def render(self, ifname: str) -> Files:
        files = ifcfg.render(self.render_input(ifname))
        for path, content in files.items():
            dest = self.root / path.relative_to("/")
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_text(content)
        return files

    def up(self, ifname: str) -> Report:
        self.render(ifname)
        report = self.emulator.ifup(ifname)
        assert report.failures == [], str(report)
        assert report.warnings == [], str(report)
        return report

    def down(self, ifname: str) -> Report:
        report = self.emulator.ifdown(ifname)
        assert report.failures == [], str(report)
        return report

    def file(self, name: str) -> Path:
        return self.root / SCRIPTS_DIR / name


@pytest.fixture
def scripts(instance: Instance, tmp_path: Path) -> Scripts:
    return Scripts(instance, tmp_path / "root")


def addrs(eni: Eni) -> list[str]:
    return [str(a) for a in (*eni.ipv4s, *eni.ipv6s)]


def assert_reachable(inst: Instance, eni: Eni, src_ns: str = "") -> None:
    unreachable = [a for a in addrs(eni) if not inst.reachable(a, src_ns)]
    assert unreachable == [], f"not reachable from {src_ns or 'client'}: {unreachable}"


def kernel_state(inst: Instance, ifname: str) -> dict[str, str]:
    """Every rule and route of the instance, and the link's addresses."""
    out = {}
    for fam in ("-4", "-6"):
        out[f"rules{fam}"] = inst.ip(fam, "rule", "show")
        out[f"routes{fam}"] = inst.ip(fam, "route", "show", "table", "all")
    links = {d["ifname"]: d for d in json.loads(inst.ip("-j", "addr", "show"))}
    info = links.get(ifname, {}).get("addr_info", [])
    out["addresses"] = " ".join(sorted(f"{a['local']}/{a['prefixlen']}" for a in info))
    return out


# --- routing scenarios ------------------------------------------------------------------


def test_other_subnet_eni_with_secondaries(scripts: Scripts) -> None:
    inst, f = scripts.inst, scripts.fabric
    primary = f.world.primary()
    keep = inst.open_connection(primary.ipv4s[0])
    eni = f.attach(SECOND, "eth1")
    scripts.up("eth1")
    assert len(eni.ipv4s) == 3 and eni.ipv6s
    assert_reachable(inst, eni)  # from the client subnet, v4 and v6
    assert_reachable(inst, eni, f.peer_ns)  # from the primary's subnet
    assert echo(keep)
    assert_reachable(inst, primary)
    assert_reachable(inst, primary, f.peer_ns)


def test_without_the_rule_files_the_check_drops_replies(scripts: Scripts) -> None:
    """The control: the same ifcfg and route files without the rules are unreachable;
    a second ifup with them (routes re-added as `replace`) repairs it."""
    inst, f = scripts.inst, scripts.fabric
    eni = f.attach(SECOND, "eth1")
    files = scripts.render("eth1")
    rules = {p: c for p, c in files.items() if p.name.startswith(("rule-", "rule6-"))}
    assert rules, sorted(str(p) for p in files)
    for path in rules:
        scripts.file(path.name).unlink()
    assert scripts.emulator.ifup("eth1").failures == []
    assert not inst.reachable(eni.ipv4s[0])
    again = scripts.up("eth1")
    assert any(c.argv[1:4] == ("-4", "rule", "add") for c in again.commands), str(again)
    assert_reachable(inst, eni)


def test_two_enis_in_the_primary_subnet(scripts: Scripts) -> None:
    inst, f = scripts.inst, scripts.fabric
    a = f.attach(f.new_eni("subnet-a", n_ipv4=2, n_ipv6=1), "eth1")
    b = f.attach(f.new_eni("subnet-a", n_ipv4=1, n_ipv6=0), "eth2")
    scripts.up("eth1")
    scripts.up("eth2")
    for eni in (a, b, f.world.primary()):
        assert_reachable(inst, eni, f.peer_ns)  # same subnet
        assert_reachable(inst, eni)  # from elsewhere
    tables = inst.ip("-4", "rule", "show")
    assert "lookup 10001" in tables and "lookup 10002" in tables


def test_docker_bridge_reaches_every_host_address(scripts: Scripts) -> None:
    inst, f = scripts.inst, scripts.fabric
    ctr = f.docker_bridge()
    eni = f.attach(SECOND, "eth1")
    scripts.up("eth1")
    for addr in (*eni.ipv4s, f.world.primary().ipv4s[0]):
        assert inst.reachable(addr, ctr), f"container cannot reach {addr}"
    assert_reachable(inst, eni)


def test_foreign_rules_and_user_routes_untouched(scripts: Scripts) -> None:
    inst, f = scripts.inst, scripts.fabric
    inst.ip("rule", "add", "pref", "512", "from", "10.0.9.0/24", "lookup", "100")
    inst.ip("route", "add", "192.168.50.0/24", "via", "10.0.1.1", "dev", "eth0", "table", "100")
    inst.ip("route", "add", "10.0.3.0/25", "via", "10.0.1.1", "dev", "eth0")

    def foreign() -> tuple[str, str, str]:
        return (
            inst.ip("rule", "show", "pref", "512"),
            inst.ip("route", "show", "table", "100"),
            inst.ip("route", "show", "10.0.3.0/25"),
        )

    before = foreign()
    eni = f.attach(SECOND, "eth1")
    scripts.up("eth1")
    assert foreign() == before
    assert_reachable(inst, eni)
    # the user's route still carries the primary's traffic to the client subnet
    assert inst.reachable(f.world.primary().ipv4s[0])
    scripts.down("eth1")
    assert foreign() == before


def test_delegated_prefixes(scripts: Scripts) -> None:
    inst, f = scripts.inst, scripts.fabric
    eni = f.attach(SECOND, "eth1")
    p4 = ipaddress.IPv4Network("10.0.2.64/28")
    p6 = ipaddress.IPv6Network("2600:1f16:292:2:a000::/80")
    f.assign(SECOND, p4)
    f.assign(SECOND, p6)
    scripts.up("eth1")
    # something on the host uses addresses from the prefixes (as a pod would)
    a4, a6 = p4[2], p6[2]
    inst.ip("addr", "add", f"{a4}/32", "dev", "lo")
    inst.ip("-6", "addr", "add", f"{a6}/128", "dev", "lo", "nodad")
    assert inst.reachable(a4)
    assert inst.reachable(a6)
    assert_reachable(inst, eni)


def test_two_network_cards_never_share_a_table(
    make_instance: Callable[..., Instance], tmp_path: Path
) -> None:
    inst = make_instance(world=two_card_world())
    scripts = Scripts(inst, tmp_path / "root")
    f = inst.fabric
    card1 = f.attach(f.new_eni("subnet-b", device_number=0, network_card=1, n_ipv4=2), "eth1")
    card0 = f.attach(f.new_eni("subnet-d", device_number=1, network_card=0, n_ipv4=2), "eth2")
    scripts.up("eth1")
    scripts.up("eth2")
    rules = inst.ip("-4", "rule", "show")
    assert "lookup 10100" in rules and "lookup 10001" in rules
    assert_reachable(inst, card1)
    assert_reachable(inst, card0)


def test_ipv6_only_eni(scripts: Scripts) -> None:
    """No IPADDRn: ifup-eth only brings the link up, ifup-ipv6 does the rest."""
    inst, f = scripts.inst, scripts.fabric
    eni = f.attach(f.new_eni("subnet-b", n_ipv4=0, n_ipv6=2), "eth1")
    scripts.up("eth1")
    assert_reachable(inst, eni)
    assert_reachable(inst, eni, f.peer_ns)


def test_dhcp_rendering_is_refused_by_the_emulator(scripts: Scripts) -> None:
    """BOOTPROTO=dhcp needs RHEL's dhclient-script; the emulator says so instead of
    guessing (the world tests use static files)."""
    f = scripts.fabric
    f.attach(SECOND, "eth1")
    files = ifcfg.render(dataclasses.replace(scripts.render_input("eth1"), dhcp=True))
    path = next(p for p in files if p.name == "ifcfg-eth1")
    dest = scripts.file(path.name)
    dest.parent.mkdir(parents=True)
    dest.write_text(files[path])
    assert parse_shell_vars(files[path])["BOOTPROTO"] == "dhcp"
    with pytest.raises(NotImplementedError, match="dhclient"):
        scripts.emulator.ifup("eth1")


def test_eni_in_the_clients_subnet_leaves_the_primary_reachable(scripts: Scripts) -> None:
    """A host in an ENI's subnet still reaches the primary's address: the reply must
    leave by eth0, so main must not route that subnet through the ENI."""
    inst, f = scripts.inst, scripts.fabric
    client_subnet = f.hosts["client"].subnet_id
    eni = f.attach(f.new_eni(client_subnet, n_ipv4=2, n_ipv6=1), "eth1")
    scripts.up("eth1")
    assert_reachable(inst, eni)
    assert_reachable(inst, f.world.primary())


def test_ifdown_and_detach_leave_nothing_and_reattach_works(scripts: Scripts) -> None:
    inst, f = scripts.inst, scripts.fabric
    eni = f.attach(SECOND, "eth1")
    empty = kernel_state(inst, "eth1")
    scripts.up("eth1")
    assert kernel_state(inst, "eth1") != empty
    scripts.down("eth1")
    assert kernel_state(inst, "eth1") == empty
    # detach without ifdown: the device goes, its rules stay (the kernel keeps them);
    # ifdown afterwards deletes them from the rule files
    scripts.up("eth1")
    f.detach(SECOND)
    assert "lookup 10001" in inst.ip("-4", "rule", "show")
    scripts.down("eth1")
    assert kernel_state(inst, "eth1") == {**empty, "addresses": ""}
    # the same ENI under another name
    f.attach(SECOND, "eth7")
    scripts.up("eth7")
    assert_reachable(inst, eni)
    assert_reachable(inst, f.world.primary())


def test_ifdown_of_one_eni_keeps_the_other_working(scripts: Scripts) -> None:
    inst, f = scripts.inst, scripts.fabric
    ctr = f.docker_bridge()
    first = f.attach(SECOND, "eth1")
    other = f.attach(f.new_eni("subnet-b", n_ipv4=2, n_ipv6=1), "eth2")
    scripts.up("eth1")
    scripts.up("eth2")
    scripts.down("eth1")
    assert not inst.reachable(first.ipv4s[0])
    assert_reachable(inst, other)
    for addr in other.ipv4s:  # replies to the bridge need eth2's own main-table rule
        assert inst.reachable(addr, ctr), f"container cannot reach {addr}"


def test_primary_connection_survives_everything(scripts: Scripts) -> None:
    inst, f = scripts.inst, scripts.fabric
    keep = inst.open_connection(f.world.primary().ipv4s[0])
    keep6 = inst.open_connection(f.world.primary().ipv6s[0])
    f.attach(SECOND, "eth1")
    for step in ("up", "down", "up"):
        getattr(scripts, step)("eth1")
        assert echo(keep), step
        assert echo(keep6), step
    f.detach(SECOND)
    scripts.down("eth1")
    assert echo(keep)
    assert echo(keep6)


def test_applied_files_are_what_the_engine_plans(scripts: Scripts) -> None:
    """After ifup the engine's own diff finds nothing to add or remove: the files give
    exactly the planned routes and rules, and the IPv4 addresses with their flags (IPv6
    ones lack noprefixroute: ifup-ipv6 cannot say it)."""
    f = scripts.fabric
    f.attach(SECOND, "eth1")
    f.assign(SECOND, ipaddress.IPv4Network("10.0.2.64/28"))
    scripts.up("eth1")
    inp = scripts.render_input("eth1")
    with NetlinkBackend(scripts.ns) as nl:
        snap = nl.snapshot()
        routes, rules = snap.routes, snap.rules
        have = snap.addresses_of(snap.link("eth1"))
        current = Current(
            link_addresses=frozenset(have),
            owned_ips=frozenset(),
            routes=frozenset(r for r in routes if r.table == inp.plan.table),
            rules=frozenset(r for r in rules if rule_of_table(r, inp.plan.table)),
        )
    delta = diff_interface(inp.plan, current)
    assert [str(o) for o in delta.add] == []
    assert [str(o) for o in delta.delete] == []
    want = inp.plan.addresses
    assert {a for a in have if a.family is Family.V4} == {a for a in want if a.family is Family.V4}
    assert {a.address for a in have} == {a.address for a in want}


# --- the emulator's reading of the files (no namespaces needed) -----------------------


def test_shell_assignments_are_read_as_bash_would() -> None:
    text = '# c\nA=1\nB=\'two words\'  # trailing\nC="x\\"y"\nD=a\\ b\nE=\n'
    assert parse_shell_vars(text) == {"A": "1", "B": "two words", "C": 'x"y', "D": "a b", "E": ""}
    for bad in ("A=$HOME\n", "A=b c\n", "A='open\n", "export A=1\n", "A=`x`\n"):
        with pytest.raises(ConfigError):
            parse_shell_vars(bad)


def test_route_lines_are_read_as_ifup_routes_does() -> None:
    text = "# header\n\n  10.0.0.0/16 via 10.0.2.1 dev eth1 table 10001  \n  # x\na b # c\n"
    assert read_lines(text) == [
        ["10.0.0.0/16", "via", "10.0.2.1", "dev", "eth1", "table", "10001"],
        ["a", "b", "#", "c"],  # a late `#` is an argument, not a comment
    ]


def test_indexed_addresses_follow_the_scripts_order() -> None:
    cfg = {"IPADDR": "10.0.2.9", "IPADDR1": "10.0.2.20", "PREFIX1": "24", "IPADDR2": "10.0.2.21"}
    cfg |= {"NETMASK2": "255.255.255.255", "IPADDR4": "10.0.2.40"}  # IPADDR3 missing: stop
    got = [(str(e.address), e.prefix) for e in expand_ipv4(cfg, "t")]
    assert got == [("10.0.2.9", 8), ("10.0.2.20", 24), ("10.0.2.21", 32)]
