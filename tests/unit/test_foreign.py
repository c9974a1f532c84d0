"""Another tool's objects (pure): who they are, when an ENI is left to them, and what a
take-over changes, in which order."""

from __future__ import annotations

import ipaddress
from dataclasses import replace
from pathlib import Path

from ec2net import foreign, othertools
from ec2net.converge import check_foreign
from ec2net.diff import changeset
from ec2net.foreign import Theirs
from ec2net.migrate import _remove_theirs, _runs_primary_from_2x, primary_network
from ec2net.model import (
    AddressSpec,
    Family,
    Link,
    Op,
    RouteSpec,
    RuleSpec,
    Scope,
)
from ec2net.plan import plan_interface
from ec2net.render import MARK
from ec2net.snapshot import Snapshot
from ec2net.state import Phase, Record
from ec2net.targets import Target
from ec2net.verify import remaining, target_delta
from tests.unit.test_plan import eni

MAC = "02:00:0a:00:02:14"
LINK = Link(7, "eth1", MAC, "ena")
T = 10001
STATIC, BOOT = 4, 3


def net(text: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    return ipaddress.ip_network(text)


def their_rule(src: str, prio: int = T, proto: int = STATIC) -> Theirs:
    return Theirs(RuleSpec(prio, Family.V4, T, net(src)), proto)


def their_route(dst: str, gw: str | None = None, proto: int = STATIC, **kw: object) -> Theirs:
    gateway = ipaddress.ip_address(gw) if gw else None
    return Theirs(RouteSpec(T, net(dst), "eth1", gateway, **kw), proto)  # type: ignore[arg-type]


def target(theirs: frozenset[Theirs] = frozenset(), *, take_over: bool = False,
           record: Record | None = None) -> Target:  # fmt: skip
    meta = eni(MAC, local_ipv4s="10.0.2.20\n10.0.2.21")
    plan = plan_interface(meta, LINK)
    return Target(MAC, "eth1", T, LINK, plan, meta, record, take_over, theirs)


def snapshot(
    theirs: frozenset[Theirs], addresses: frozenset[AddressSpec] = frozenset()
) -> Snapshot:
    return Snapshot(links=(LINK,), addresses={LINK.index: addresses}, theirs=theirs)


TWO_X = frozenset(
    {
        their_rule("10.0.2.20/32"),
        their_rule("10.0.2.21/32"),
        their_route("0.0.0.0/0", "10.0.2.1"),
        their_route("10.0.2.0/24", scope=Scope.LINK),
    }
)


def test_their_objects_are_recognised_by_shape(tmp_path: Path) -> None:
    assert othertools.recognise(tmp_path, "ens6", T, TWO_X) == othertools.AWS_2X
    one_x = {their_rule("10.0.2.20/32", 32765, BOOT), their_rule("10.0.2.21/32", 32764, BOOT)}
    assert othertools.recognise(tmp_path, "eth1", T, one_x) == othertools.AWS_1X
    assert othertools.recognise(tmp_path, "eth2", T, one_x) is None  # 1.x numbers by name
    cni = {their_rule("10.0.2.20/32", 512)}
    assert othertools.recognise(tmp_path, "eth1", T, cni) is None


def test_the_message_names_table_objects_and_tool() -> None:
    text = foreign.message("ens6", T, TWO_X, othertools.AWS_2X)
    assert text.startswith("ens6: table 10001 holds 2 rules and 2 routes ec2net did not create")
    assert "by their shape amazon-ec2-net-utils 2.x's" in text
    # rules first: they decide where a reply goes
    assert "(rule pref 10001 from 10.0.2.20/32 lookup 10001 proto static; " in text
    assert text.endswith("`ec2net up --take-over ens6` replaces them with ec2net's")
    many = frozenset(their_rule(f"10.0.2.{i}/32") for i in range(10))
    assert "; and 6 more)" in foreign.message("ens6", T, many, None)


def test_left_alone_until_claimed_or_taken_over() -> None:
    snap = snapshot(TWO_X)
    ok, left = check_foreign([target()], snap, adds_own_objects=False)
    assert ok == [] and left[0].theirs == TWO_X
    ok, left = check_foreign([target(take_over=True)], snap, adds_own_objects=False)
    assert left == [] and ok[0].theirs == TWO_X
    ours = Record(MAC, "eni-x", "eth1", 7, T)  # ec2net's already: stays ec2net's
    ok, left = check_foreign([target(record=ours)], snap, adds_own_objects=False)
    assert left == [] and ok[0].theirs == TWO_X
    # under a manager a claimed table cannot be told apart: nothing counts as theirs
    ok, left = check_foreign([target(record=ours)], snap, adds_own_objects=True)
    assert left == [] and ok[0].theirs == frozenset()
    # a record that says "left to another tool" claims nothing
    left_alone = replace(ours, phase=Phase.FOREIGN.value)
    ok, left = check_foreign([target(record=left_alone)], snap, adds_own_objects=True)
    assert ok == [] and len(left) == 1


def test_take_over_order_ours_first_theirs_last() -> None:
    leased = AddressSpec("eth1", ipaddress.ip_interface("10.0.2.20/24"), False, permanent=False)
    t = target(TWO_X, take_over=True)
    snap = snapshot(TWO_X, frozenset({leased}))
    changes = changeset(target_delta(t, snap, adds_own_objects=False)).changes
    kinds = [(c.op, c.theirs, type(c.obj).__name__) for c in changes]
    first_release = next(i for i, k in enumerate(kinds) if k[0] is Op.DEL)
    assert all(k[0] is Op.DEL and k[1] for k in kinds[first_release:])  # theirs go last
    # their routes have the keys of planned ones: replaced in place, not deleted after
    assert {str(c.obj) for c in changes[first_release:]} == {
        str(x.obj) for x in TWO_X if isinstance(x.obj, RuleSpec)
    }
    replaced = [str(c.obj) for c in changes if c.op is Op.ADD and c.theirs]
    assert "route 0.0.0.0/0 via 10.0.2.1 dev eth1 table 10001" in replaced
    assert "route 10.0.2.0/24 dev eth1 table 10001 scope link src 10.0.2.20" in replaced
    assert "address 10.0.2.20/24 dev eth1" in replaced  # its lease lifetime goes
    assert changes.index(next(c for c in changes if isinstance(c.obj, RuleSpec))) < first_release
    # under a manager the lifetimes are its business
    managed = changeset(target_delta(t, snap, adds_own_objects=True)).changes
    assert not any(isinstance(c.obj, AddressSpec) and c.theirs for c in managed)


def test_verify_wants_theirs_gone_but_not_ours_that_look_alike() -> None:
    t = target(TWO_X, take_over=True)
    left = remaining(t, snapshot(TWO_X), adds_own_objects=True)
    assert sum(1 for c in left.changes if c.op is Op.DEL and c.theirs) == 2  # their rules
    # after the take-over, the manager's routes equal to the plan are no longer "theirs"
    plan = t.plan
    assert plan is not None
    default = next(r for r in plan.routes if r.dst.prefixlen == 0)
    after = Snapshot(
        links=(LINK,),
        addresses={LINK.index: plan.addresses},
        routes=plan.routes,
        rules=plan.rules,
        theirs=frozenset({Theirs(default, STATIC)}),  # NetworkManager's protocol
    )
    assert not remaining(t, after, adds_own_objects=True)


def test_route_files_of_network_scripts() -> None:
    text = (
        "default via 10.0.2.1 dev eth1 table 10001\n"
        "10.0.2.0/24 dev eth1 proto kernel scope link src 10.0.2.20 table 10001\n"
        "default via 10.0.2.1 dev eth1 metric 10001\n"
        "# a comment\nADDRESS0=10.9.0.0\n"
        "default via fe80::1 dev eth1 table 10001\n"
    )
    routes = othertools.parse_route_file(text, "eth1")
    assert [str(r) for r in routes] == [
        "route 0.0.0.0/0 via 10.0.2.1 dev eth1 table 10001",
        "route 10.0.2.0/24 dev eth1 table 10001",
        "route 0.0.0.0/0 via 10.0.2.1 dev eth1 table main metric 10001",
        "route ::/0 via fe80::1 dev eth1 table 10001",
    ]


def test_what_1x_and_2x_left_and_never_ours(tmp_path: Path) -> None:
    scripts = tmp_path / "etc/sysconfig/network-scripts"
    scripts.mkdir(parents=True)
    (scripts / "ifcfg-eth1").write_text("DEVICE=eth1\nEC2SYNC=yes\n")
    (scripts / "route-eth1").write_text("default via 10.0.2.1 dev eth1 metric 10001\n")
    (scripts / "ifcfg-eth2").write_text("DEVICE=eth2\nEC2SYNC=no\n")
    (scripts / "ifcfg-eth3").write_text(f"{MARK} for eni-3 (02:00:00:00:00:03)\nEC2SYNC=yes\n")
    found = othertools.find_1x(tmp_path, "eth1")
    assert found.files == (scripts / "ifcfg-eth1", scripts / "route-eth1")
    assert [r.metric for r in found.main_routes] == [10001]
    assert found.units == ("ec2net-ifup@eth1.service",)
    assert not othertools.find_1x(tmp_path, "eth2")  # the user's: hands off
    assert not othertools.find_1x(tmp_path, "eth3")  # ec2net's own file
    net_dir = tmp_path / "run/systemd/network"
    (net_dir / "70-ens6.network.d").mkdir(parents=True)
    (net_dir / "70-ens6.network").symlink_to("/usr/lib/systemd/network/80-ec2.network")
    two = othertools.find_2x(tmp_path, "ens6")
    assert two.files == (net_dir / "70-ens6.network", net_dir / "70-ens6.network.d")
    assert "refresh-policy-routes@ens6.timer" in two.units
    ours = net_dir / "70-ens6.network.d" / "keep.conf"
    ours.write_text(f"{MARK} for eni-6 ({MAC})\n")
    theirs = net_dir / "70-ens6.network.d" / "eni.conf"
    theirs.write_text("[Match]\n")
    for path in two.files:
        _remove_theirs(path)
    assert ours.exists() and not theirs.exists() and not two.files[0].is_symlink()
    # AWS's own Debian package (2.7.4's debian/ patch) names them 07-IF
    (net_dir / "07-ens7.network.d").mkdir()
    (net_dir / "07-ens7.network").symlink_to("/usr/lib/systemd/network/80-ec2.network")
    deb = othertools.find_2x(tmp_path, "ens7")
    assert deb.files == (net_dir / "07-ens7.network", net_dir / "07-ens7.network.d")


def test_the_primary_keeps_its_dhcp_only_where_2x_ran_it(tmp_path: Path) -> None:
    primary = Link(2, "ens5", "02:00:0a:00:01:0a", "ena")
    net_dir = tmp_path / "run/systemd/network"
    net_dir.mkdir(parents=True)
    (net_dir / "70-ens5.network").symlink_to("/usr/lib/systemd/network/80-ec2.network")
    found = {"ens5": [othertools.find_2x(tmp_path, "ens5")]}
    links = tmp_path / "run/systemd/netif/links"
    links.mkdir(parents=True)
    (links / "2").write_text(
        "ADMIN_STATE=configured\nNETWORK_FILE=/run/systemd/network/70-ens5.network\n"
    )
    assert _runs_primary_from_2x(tmp_path, primary, found)
    (links / "2").write_text("NETWORK_FILE=/etc/systemd/network/10-primary.network\n")
    assert not _runs_primary_from_2x(tmp_path, primary, found)
    text = primary_network(primary.mac)
    assert "MACAddress=02:00:0a:00:01:0a" in text and "DHCP=yes" in text


def test_a_release_names_their_protocol() -> None:
    """Their rule `pref 10001 from 10.0.2.21/32 lookup 10001` and ours for the same
    source differ in suppress_prefixlength only, which a delete cannot name away: the
    delete names their protocol, so that it matches theirs only."""
    meta = eni(MAC, local_ipv4s="10.0.2.21")
    plan = plan_interface(meta, LINK)
    theirs = frozenset({their_rule("10.0.2.21/32")})
    t = Target(MAC, "eth1", T, LINK, plan, meta, None, True, theirs)
    changes = changeset(target_delta(t, snapshot(theirs), adds_own_objects=False)).changes
    [release] = [c for c in changes if c.op is Op.DEL]
    assert release.release and release.proto == STATIC
    assert changes[-1] == release  # once ours are in
