"""cloud-init's own policy routing of a secondary ENI (cloud-init >= 24.1 through
netplan): recognised by shape in its table range, taken over without being asked (ours
in first, its rules and table routes deleted last), never another program's table in
the same range; the drop-in that keeps cloud-init off the ENIs."""

from __future__ import annotations

import ipaddress

from ec2net import cloudinit, sysfiles
from ec2net.converge import check_foreign
from ec2net.diff import changeset
from ec2net.foreign import Theirs
from ec2net.model import Family, Op, RouteSpec, RuleSpec, Scope
from ec2net.snapshot import Snapshot
from ec2net.targets import Target
from ec2net.verify import remaining, target_delta
from tests.unit.test_foreign import LINK, STATIC, TWO_X, net, snapshot, target

CI_TABLE = 101  # the ENI is the second NIC in (card, device) order
KERNEL = 3  # networkd's rules have no priority in netplan's file: the kernel numbers them


def ci_rule(src: str, prio: int, table: int = CI_TABLE) -> Theirs:
    family = Family.V6 if ":" in src else Family.V4
    return Theirs(RuleSpec(prio, family, table, net(src)), STATIC)


def ci_route(dst: str, gw: str | None = None, ifname: str = "eth1") -> Theirs:
    gateway = ipaddress.ip_address(gw) if gw else None
    scope = Scope.LINK if gw is None else Scope.UNIVERSE
    return Theirs(RouteSpec(CI_TABLE, net(dst), ifname, gateway, scope=scope), STATIC)


CLOUD_INIT = frozenset(
    {
        ci_rule("10.0.2.20/32", 32765),
        ci_rule("10.0.2.21/32", 32764),
        ci_route("0.0.0.0/0", "10.0.2.1"),
        ci_route("10.0.2.0/24"),
    }
)
# Another program's table in the same range (a user's `from 192.168.7.0/24 lookup 200`)
# and a route of another link in table 101: never cloud-init's for this ENI.
OTHERS = frozenset(
    {
        ci_rule("192.168.7.0/24", 1000, table=200),
        Theirs(RouteSpec(200, net("0.0.0.0/0"), "eth9", ipaddress.ip_address("192.168.7.1")), 4),
        ci_route("10.9.0.0/16", ifname="eth2"),
    }
)
ADDRS = [ipaddress.ip_address("10.0.2.20"), ipaddress.ip_address("10.0.2.21")]


def test_objects_for_the_eni_by_shape() -> None:
    found = cloudinit.objects_for("eth1", ADDRS, CLOUD_INIT | OTHERS)
    assert found == CLOUD_INIT
    # a table counts only where a rule of one of the ENI's addresses looks it up
    assert cloudinit.objects_for("eth1", ADDRS, OTHERS) == frozenset()
    assert cloudinit.objects_for("eth1", [ipaddress.ip_address("10.0.2.99")], CLOUD_INIT) == set()
    assert not cloudinit.is_table(10001) and not cloudinit.is_table(None)
    assert cloudinit.is_table(100) and cloudinit.is_table(355) and not cloudinit.is_table(356)


def test_ipv6_rule_and_route_count_too() -> None:
    v6 = {ci_rule("2600:1f16:292:2::20/128", 32763), ci_route("2600:1f16:292:2::/64")}
    addrs = [*ADDRS, ipaddress.ip_address("2600:1f16:292:2::20")]
    assert cloudinit.objects_for("eth1", addrs, CLOUD_INIT | v6) == CLOUD_INIT | v6


def test_snapshot_finds_them_only_outside_eni_tables() -> None:
    snap = snapshot(CLOUD_INIT | OTHERS | TWO_X)
    assert snap.cloud_init_of("eth1", ADDRS) == CLOUD_INIT
    assert snap.theirs_of(10001) == TWO_X  # the ENI table's own check is unchanged
    assert snap.theirs_of(CI_TABLE) == frozenset()


def kept_off(
    targets: list[Target], snap: Snapshot, *, adds_own_objects: bool
) -> tuple[list[Target], list[Target]]:
    """check_foreign where ec2net's drop-in keeps cloud-init to the primary."""
    return check_foreign(
        targets, snap, adds_own_objects=adds_own_objects, cloud_init_kept_off=True
    )


def test_left_to_cloud_init_while_it_would_configure_the_eni_again() -> None:
    ok, left = check_foreign([target()], snapshot(CLOUD_INIT | OTHERS), adds_own_objects=False)
    assert ok == [] and left[0].theirs == CLOUD_INIT and not left[0].take_over


def test_taken_over_without_being_asked() -> None:
    snap = snapshot(CLOUD_INIT | OTHERS)
    ok, left = kept_off([target()], snap, adds_own_objects=False)
    assert left == [] and ok[0].take_over and ok[0].theirs == CLOUD_INIT
    # another tool in the ENI's own table still leaves the ENI alone (no take-over)
    ok, left = kept_off([target()], snapshot(CLOUD_INIT | TWO_X), adds_own_objects=False)
    assert ok == [] and left[0].theirs == TWO_X and not left[0].take_over
    # nothing of cloud-init's: an ordinary converge
    ok, _ = kept_off([target()], snapshot(OTHERS), adds_own_objects=False)
    assert not ok[0].take_over and ok[0].theirs == frozenset()


def test_ours_first_then_cloud_init_deleted() -> None:
    snap = snapshot(CLOUD_INIT | OTHERS)
    t = kept_off([target()], snap, adds_own_objects=False)[0][0]
    changes = changeset(target_delta(t, snap, adds_own_objects=False)).changes
    first_release = next(i for i, c in enumerate(changes) if c.op is Op.DEL)
    assert all(c.op is Op.DEL and c.theirs for c in changes[first_release:])
    assert {c.obj for c in changes[first_release:]} == {x.obj for x in CLOUD_INIT}
    assert any(isinstance(c.obj, RuleSpec) for c in changes[:first_release])
    # nothing of another program's is touched
    others = {x.obj for x in OTHERS}
    assert not any(c.obj in others for c in changes)


def test_verify_until_cloud_init_is_gone() -> None:
    snap = snapshot(CLOUD_INIT)
    t = kept_off([target()], snap, adds_own_objects=True)[0][0]
    left = remaining(t, snap, adds_own_objects=True)
    assert {c.obj for c in left.changes if c.op is Op.DEL} == {x.obj for x in CLOUD_INIT}
    plan = t.plan
    assert plan is not None
    after = Snapshot(
        links=(LINK,),
        addresses={LINK.index: plan.addresses},
        routes=plan.routes,
        rules=plan.rules,
    )
    assert not remaining(t, after, adds_own_objects=True)


def test_dropin_keeps_cloud_init_to_the_primary() -> None:
    text = cloudinit.DROPIN_TEXT
    assert text.startswith("# Managed by ec2net")
    assert "    apply_full_imds_network_config: false\n" in text
    assert "    when: [boot-new-instance, boot]\n" in text
    files = sysfiles.render(("ena",), "/usr/bin", sysfiles.SYSTEMD)
    assert files["etc/cloud/cloud.cfg.d/90-ec2net.cfg"] == text
    assert not any("cloud" in p for p in sysfiles.render(("ena",), "/usr/bin", "upstart"))
