"""The ifcfg renderer and backend in the simulated VPC under the real RHEL 7
network-scripts (initscripts 9.49, run by ec2sim.rhel in the instance's namespaces),
proved like test_engine.py proves the netlink backend: real TCP connections through
the router's source/destination check.

The plan is built as the engine builds it (IMDS through ec2net.metadata, links from the
netlink backend, ec2net.plan), rendered by ec2net.render.ifcfg into the directory the
scripts read as /etc/sysconfig/network-scripts, and brought up by the real `ifup`, never
by ec2net itself; the last tests run ec2net's ifcfg backend and the scripts in turn on
the same files, as a RHEL host does between a hot-plug and the next boot.

The scripts are an external tool: EC2NET_RHEL_SCRIPTS (default
../shared/peers/initscripts-9.49.54 beside the checkout) names them, and every test
here fails, saying where it looked, when they are absent.

What the real scripts showed that the former emulation did not: /32 secondaries get
ipcalc's broadcast (the address itself, a local-table broadcast route the local route
shadows); a second ifup of a link that is up prints "File exists" per route before
ifup-routes falls back to `replace`; with BOOTPROTO=dhcp each ifup that applies a
changed ifcfg file replaces the running dhclient (which renews the same lease).
"""

from __future__ import annotations

import ipaddress
import json
import sys
from collections.abc import Iterator
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
from ec2sim.rhel import (
    ENV_VAR,
    FILES_DIR,
    RhelHost,
    Run,
    ScriptsMissing,
    locate_scripts,
    wait_gone,
)
from ec2sim.world import Eni
from tests.world.conftest import Instance, echo, two_card_world

pytestmark = pytest.mark.world

SECOND = "02:00:0a:00:02:14"  # default world: subnet-b, 10.0.2.20-22, 2600:1f16:292:2::20


class Scripts:
    """One instance configured through rendered network-scripts files and the real
    scripts."""

    def __init__(self, inst: Instance, tmp: Path) -> None:
        self.inst = inst
        self.fabric = inst.fabric
        self.root = tmp / "root"
        self.ns = inst.fabric.instance_ns
        self.host = RhelHost(self.ns, self.root, tmp / "rhel")

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

    def up(self, ifname: str, *, render: bool = True, again: bool = False) -> Run:
        if render:
            self.render(ifname)
        return ok(self.host.ifup(ifname), again=again)

    def down(self, ifname: str) -> Run:
        return ok(self.host.ifdown(ifname))

    def file(self, name: str) -> Path:
        return self.root / FILES_DIR / name

    def use_ec2net(self) -> None:
        """ec2net's own ifcfg backend writes where the scripts read."""
        self.inst.write_config(backend={"name": "ifcfg", "files_root": str(self.root)})


def ok(run: Run, *, again: bool = False) -> Run:
    """The scripts succeeded and complained about nothing (they let failed `ip`
    commands print to stderr and carry on). `again`: an ifup of a link that is up
    re-adds its routes, each `add` failing before ifup-routes retries as `replace`."""
    assert run.returncode == 0, str(run)
    lines = run.stderr.splitlines()
    if again:
        lines = [x for x in lines if x != "RTNETLINK answers: File exists"]
    assert lines == [], str(run)
    return run


@pytest.fixture
def scripts(
    request: pytest.FixtureRequest, make_instance: Callable[..., Instance], tmp_path: Path
) -> Iterator[Scripts]:
    """The default world (with the VPC's DHCP for tests named *dhcp*) under the scripts."""
    inst = make_instance(dhcp="dhcp" in request.node.name)
    s = Scripts(inst, tmp_path)
    with s.host:
        yield s


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


def test_missing_scripts_fail_with_a_clear_message(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(ENV_VAR, str(tmp_path / "nowhere"))
    with pytest.raises(ScriptsMissing, match=f"{ENV_VAR}.*initscripts"):
        locate_scripts()
    monkeypatch.undo()  # back to the run's own setting
    assert (locate_scripts() / "sysconfig/network-scripts/ifup-eth").is_file()


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
    a second ifup with them (routes re-added, the scripts fall back to `replace`)
    repairs it."""
    inst, f = scripts.inst, scripts.fabric
    eni = f.attach(SECOND, "eth1")
    files = scripts.render("eth1")
    rules = {p: c for p, c in files.items() if p.name.startswith(("rule-", "rule6-"))}
    assert rules, sorted(str(p) for p in files)
    for path in rules:
        scripts.file(path.name).unlink()
    first = scripts.host.ifup("eth1")
    assert first.returncode == 0, str(first)
    assert "lookup 10001" not in inst.ip("-4", "rule", "show")
    assert not inst.reachable(eni.ipv4s[0])
    scripts.up("eth1", again=True)
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
    scripts = Scripts(inst, tmp_path)
    f = inst.fabric
    card1 = f.attach(f.new_eni("subnet-b", device_number=0, network_card=1, n_ipv4=2), "eth1")
    card0 = f.attach(f.new_eni("subnet-d", device_number=1, network_card=0, n_ipv4=2), "eth2")
    with scripts.host:
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


# --- ec2net's ifcfg backend and the scripts on the same files ---------------------------


def test_ifdown_and_ifup_of_what_ec2net_wrote_match_ec2net(scripts: Scripts) -> None:
    """A hot-plugged ENI is configured by ec2net (files + netlink); the scripts' ifdown
    removes every object of it, and their ifup (as at the next boot) restores exactly
    what ec2net plans: ec2net then finds nothing to change."""
    inst, f = scripts.inst, scripts.fabric
    scripts.use_ec2net()
    eni = f.attach(SECOND, "eth1")
    empty = kernel_state(inst, "eth1")
    inst.ec2net("up", "eth1")
    applied = kernel_state(inst, "eth1")
    assert_reachable(inst, eni)
    scripts.down("eth1")
    assert kernel_state(inst, "eth1") == {**empty, "addresses": ""}
    assert not inst.reachable(eni.ipv4s[0])
    scripts.up("eth1", render=False)
    assert_reachable(inst, eni)
    # what ifup adds beyond ec2net: IPv6 host routes in main (no noprefixroute there)
    assert kernel_state(inst, "eth1")["rules-4"] == applied["rules-4"]
    assert kernel_state(inst, "eth1")["rules-6"] == applied["rules-6"]
    assert kernel_state(inst, "eth1")["addresses"] == applied["addresses"]
    plan = inst.ec2net("plan", "eth1")
    assert "nothing to change" in plan.stdout, plan.stdout
    inst.ec2net("down", "eth1")
    assert not scripts.file("ifcfg-eth1").exists()
    assert kernel_state(inst, "eth1")["rules-4"] == empty["rules-4"]


def test_users_ec2sync_no_file_is_run_by_the_scripts_not_by_ec2net(scripts: Scripts) -> None:
    inst, f = scripts.inst, scripts.fabric
    scripts.use_ec2net()
    eni = f.attach(SECOND, "eth1")
    mine = (
        f"DEVICE=eth1\nHWADDR={SECOND.upper()}\nBOOTPROTO=none\nONBOOT=yes\n"
        f"IPADDR={eni.ipv4s[0]}\nPREFIX=24\nARPCHECK=no\nNOZEROCONF=yes\nEC2SYNC=no\n"
    )
    scripts.file("ifcfg-eth1").write_text(mine)
    scripts.up("eth1", render=False)
    out = inst.ec2net("up", "eth1")
    assert "EC2SYNC=no" in out.stdout, out.stdout
    assert scripts.file("ifcfg-eth1").read_text() == mine
    assert not scripts.file("rule-eth1").exists()
    assert "proto 236" not in inst.ip("rule", "show") + inst.ip("-6", "rule", "show")
    # the user's address stays; without ec2net's rules its replies hit the check
    assert f"{eni.ipv4s[0]}/24" in kernel_state(inst, "eth1")["addresses"]
    assert not inst.reachable(eni.ipv4s[0])
    scripts.down("eth1")
    assert scripts.file("ifcfg-eth1").read_text() == mine


def test_a_name_reused_by_another_mac(scripts: Scripts) -> None:
    """ENI A leaves without cleanup and ENI B arrives as eth1: the scripts refuse A's
    stale file (HWADDR is A's), so a boot would leave B unconfigured; ec2net's scan
    rewrites the files for B's MAC, and the scripts then run them."""
    inst, f = scripts.inst, scripts.fabric
    scripts.use_ec2net()
    first = f.attach(SECOND, "eth1")
    inst.ec2net("up", "eth1")
    f.detach(first)
    other = f.attach(f.new_eni("subnet-b", n_ipv4=2, n_ipv6=1), "eth1")
    refused = scripts.host.ifup("eth1")
    assert refused.returncode != 0, str(refused)
    assert "different MAC address" in refused.stdout + refused.stderr, str(refused)
    inst.ec2net("scan")
    assert other.mac.upper() in scripts.file("ifcfg-eth1").read_text()
    assert_reachable(inst, other)
    scripts.down("eth1")
    assert not inst.reachable(other.ipv4s[0])
    scripts.up("eth1", render=False)
    assert_reachable(inst, other)
    assert_reachable(inst, f.world.primary())


def test_a_mac_that_moved_to_another_name(scripts: Scripts) -> None:
    """The same ENI re-attached as eth3: ec2net's files follow the MAC (eth1's go), and
    the scripts bring it up under its new name."""
    inst, f = scripts.inst, scripts.fabric
    scripts.use_ec2net()
    eni = f.attach(SECOND, "eth1")
    inst.ec2net("up", "eth1")
    f.detach(SECOND)
    f.attach(SECOND, "eth3")
    inst.ec2net("scan")
    assert not scripts.file("ifcfg-eth1").exists()
    assert scripts.file("ifcfg-eth3").exists()
    scripts.down("eth3")
    assert "proto 236" not in inst.ip("rule", "show") + inst.ip("-6", "rule", "show")
    scripts.up("eth3", render=False)
    assert_reachable(inst, eni)


# --- backend.ifcfg_dhcp under the shipped units ------------------------------------------


def unit_settings(root: Path, unit: str) -> dict[str, set[str]]:
    """Merged list settings of an installed unit and its drop-ins (as systemd merges
    CapabilityBoundingSet= and RestrictAddressFamilies= allow-lists)."""
    paths = [root / "usr/lib/systemd/system" / unit]
    paths += sorted((root / "etc/systemd/system" / f"{unit}.d").glob("*.conf"))
    merged: dict[str, set[str]] = {}
    for path in paths:
        for line in path.read_text().splitlines():
            key, sep, value = line.partition("=")
            if sep and not key.startswith("#"):
                merged.setdefault(key, set()).update(value.split())
    return merged


def bounded(caps: set[str], argv: list[str]) -> list[str]:
    """argv with the unit's capability bounding set (root keeps only those)."""
    names = ",".join(sorted("+" + c.removeprefix("CAP_").lower() for c in caps))
    return ["setpriv", f"--bounding-set=-all,{names}", *argv]


def test_dhcp_mode_works_with_the_units_drop_in(scripts: Scripts, tmp_path: Path) -> None:
    """`backend.ifcfg_dhcp = true`: ec2net's ifup starts dhclient (real ifup-eth, lease
    from the VPC's DHCP), only with the rights `install-system-files` adds for that
    mode; the lease's address stays through refreshes and goes with `ec2net down`."""
    inst, f = scripts.inst, scripts.fabric
    assert f.dnsmasq is not None, "the world needs DHCP"
    root = str(scripts.root)
    inst.write_config(backend={"name": "ifcfg", "files_root": root, "ifcfg_dhcp": True})
    sysroot = tmp_path / "sys"
    inst.ec2net("install-system-files", "--root", str(sysroot), "--init", "systemd")
    unit = unit_settings(sysroot, "ec2net@.service")
    assert "AF_PACKET" in unit["RestrictAddressFamilies"]
    inst.write_config(backend={"name": "ifcfg", "files_root": root})
    inst.ec2net("install-system-files", "--root", str(sysroot), "--init", "systemd")
    shipped = unit_settings(sysroot, "ec2net@.service")
    assert "AF_PACKET" not in shipped["RestrictAddressFamilies"]  # the drop-in went
    inst.write_config(backend={"name": "ifcfg", "files_root": root, "ifcfg_dhcp": True})
    eni = f.attach(SECOND, "eth1")
    env = {k: v for k, v in inst.env().items() if k.startswith(("EC2NET_", "PYTHON"))}

    def ec2net(caps: set[str], *args: str) -> Run:
        argv = bounded(caps, [sys.executable, "-m", "ec2net", *args])
        return scripts.host.run(argv, env=env)

    done = ec2net(unit["CapabilityBoundingSet"], "up", "eth1")
    assert done.returncode == 0, str(done)
    dhclients = scripts.host.daemons()
    assert len(dhclients) == 1, str(done)
    lease = f"{eni.ipv4s[0]}/24"

    def leased() -> bool:
        info = json.loads(inst.ip("-j", "-4", "addr", "show", "dev", "eth1"))[0]["addr_info"]
        return any(f"{a['local']}/{a['prefixlen']}" == lease and a.get("dynamic") for a in info)

    assert leased()
    assert_reachable(inst, eni)
    f.assign(SECOND, ipaddress.IPv4Address("10.0.2.23"))
    again = ec2net(unit["CapabilityBoundingSet"], "refresh", "eth1")
    assert again.returncode == 0, str(again)
    # the changed ifcfg file is applied by a second ifup: its dhclient replaces the
    # first (ISC dhclient ends the one in its pid file) and renews the same lease
    assert leased()
    dhclients = scripts.host.daemons()
    assert len(dhclients) == 1, str(again)
    assert_reachable(inst, eni)
    same = ec2net(unit["CapabilityBoundingSet"], "refresh", "eth1")  # nothing changed
    assert same.returncode == 0, str(same)
    assert leased() and scripts.host.daemons() == dhclients
    gone = ec2net(unit["CapabilityBoundingSet"], "down", "eth1")
    assert gone.returncode == 0, str(gone)
    assert wait_gone(dhclients) == []
    assert kernel_state(inst, "eth1")["addresses"] == ""
    assert "proto 236" not in inst.ip("rule", "show") + inst.ip("-6", "rule", "show")
    # the control: under the shipped hardening alone dhclient cannot start
    f.attach(f.new_eni("subnet-b", n_ipv4=1, n_ipv6=0), "eth2")
    refused = ec2net(shipped["CapabilityBoundingSet"], "up", "eth2")
    assert refused.returncode == 1 and "ifup eth2" in refused.stderr, str(refused)
    assert scripts.host.daemons() == []


def test_the_mtu_is_in_the_files_the_scripts_apply(scripts: Scripts) -> None:
    """interfaces.mtu under the ifcfg backend: ec2net sets it, the files say MTU=, so the
    scripts' ifup (the next boot) sets the same, and ec2net's down sets back 1500."""
    inst, f = scripts.inst, scripts.fabric
    inst.write_config(backend={"name": "ifcfg", "files_root": str(scripts.root)}, mtu=8900)
    f.attach(SECOND, "eth1")
    inst.ec2net("up", "eth1")
    assert "MTU=8900\n" in scripts.file("ifcfg-eth1").read_text()
    assert " mtu 8900 " in inst.ip("-o", "link", "show", "eth1")
    scripts.down("eth1")
    inst.ip("link", "set", "eth1", "mtu", "1500")
    scripts.up("eth1", render=False)
    assert " mtu 8900 " in inst.ip("-o", "link", "show", "eth1")
    assert "nothing to change" in inst.ec2net("plan", "eth1").stdout
    inst.ec2net("down", "eth1")
    assert " mtu 1500 " in inst.ip("-o", "link", "show", "eth1")
