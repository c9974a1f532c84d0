"""diff against a snapshot, per target: what must change (before apply) and what did
not take effect (verify, after). Pure.

A network manager adds objects of its own (NetworkManager's prefix routes in the ENI's
table): under such a backend a kept ENI is judged only by what it must have, not by
extras; an ENI being removed must still end with nothing of ours.

A take-over (foreign.py) adds to the diff: our routes replace theirs that have the same
key, their other routes and rules in the ENI's table go once ours are in, and addresses
they put on the link are kept without the lease lifetime their DHCP client gave them.
Verify asks the same question again, so a take-over is done when nothing of theirs is
left that our plan does not hold.
"""

from __future__ import annotations

from collections.abc import Sequence

from ec2net import foreign
from ec2net.diff import Current, Delta, changeset, diff_interface
from ec2net.model import ChangeSet, Op, RouteSpec
from ec2net.snapshot import Snapshot
from ec2net.state import Phase
from ec2net.targets import Target


def current(
    t: Target,
    snap: Snapshot,
    *,
    adds_own_objects: bool = False,
    claimed: frozenset[int] = frozenset(),
) -> Current:
    """What the ENI of `t` has now, as far as we may touch it. Tables in `claimed` are
    planned by another target of the same converge (a table handed over from a gone ENI
    to a new one): a removal leaves their content to the new owner's diff. Another
    tool's objects are never ours; an ENI left to another tool has nothing of ours."""
    link = snap.by_mac().get(t.mac) if t.link is not None else None
    if t.record is not None and t.record.phase == Phase.FOREIGN.value and t.removing:
        return Current(frozenset(), frozenset(), frozenset(), frozenset(), ifname=t.ifname)
    tables = t.tables() - claimed if t.removing else t.tables()
    local = snap.local_routes_of(link.name) if link is not None else frozenset()
    routes = frozenset(r for tb in tables for r in snap.routes_of(tb))
    rules = frozenset(r for tb in tables for r in snap.rules_of(tb))
    if adds_own_objects and t.theirs:
        # The manager's objects and theirs look alike (our own protocol is not on them):
        # theirs are what was there before, unless the plan has exactly that object.
        planned = t.plan.objects() if t.plan is not None else frozenset()
        routes -= foreign.routes(t.theirs) - planned
        rules -= foreign.rules(t.theirs) - planned
    return Current(
        link_addresses=snap.addresses_of(link),
        owned_ips=t.record.owned() if t.record is not None else frozenset(),
        routes=routes | local,
        rules=rules,
        ifname=t.ifname,
        link_mtu=link.mtu if link is not None else None,
        restore_mtu=t.record.mtu_before if t.record is not None else None,
    )


def target_delta(
    t: Target, snap: Snapshot, *, adds_own_objects: bool, claimed: frozenset[int] = frozenset()
) -> Delta:
    """What one target still needs: the plain diff, and a take-over's part."""
    d = diff_interface(
        t.plan, current(t, snap, adds_own_objects=adds_own_objects, claimed=claimed)
    )
    if t.plan is None or not t.take_over:
        return d
    # Theirs still there. Ours carry our protocol, except under a manager that adds
    # them with its own: there an object equal to the plan counts as ours.
    planned = t.plan.objects() if adds_own_objects else frozenset()
    still = {x for x in t.theirs & snap.theirs if x.obj not in planned}
    replaced = foreign.replaced(still, t.plan.routes)
    keys = {r.key for r in replaced}
    takes_place = [o for o in d.add if isinstance(o, RouteSpec) and o.key in keys]
    d.replace += takes_place
    d.add = [o for o in d.add if o not in takes_place]
    d.release += sorted((x for x in still if x.obj not in replaced), key=str)
    if not adds_own_objects:  # a manager sets its own addresses' lifetimes
        link = snap.by_mac().get(t.mac)
        wanted = {a.address.ip for a in t.plan.addresses}
        d.replace += sorted(
            (a for a in snap.addresses_of(link) if a.address.ip in wanted and not a.permanent),
            key=str,
        )
    return d


def delta(targets: Sequence[Target], snap: Snapshot, *, adds_own_objects: bool) -> Delta:
    claimed = claimed_tables(targets)
    out = Delta()
    for t in targets:
        out.extend(target_delta(t, snap, adds_own_objects=adds_own_objects, claimed=claimed))
    return out


def remaining(
    t: Target, snap: Snapshot, *, adds_own_objects: bool, claimed: frozenset[int] = frozenset()
) -> ChangeSet:
    """What still differs for one target; under a manager, extras of a kept ENI are the
    manager's business (another tool's are not)."""
    left = changeset(target_delta(t, snap, adds_own_objects=adds_own_objects, claimed=claimed))
    if adds_own_objects and not t.removing:
        return ChangeSet(tuple(c for c in left.changes if c.op is Op.ADD or c.theirs))
    return left


def claimed_tables(targets: Sequence[Target]) -> frozenset[int]:
    return frozenset(t.table for t in targets if not t.removing)


def verify(
    targets: Sequence[Target], snap: Snapshot, *, adds_own_objects: bool
) -> dict[str, ChangeSet]:
    """The verify stage: what did not take effect, per target (by MAC)."""
    claimed = claimed_tables(targets)
    return {
        t.mac: remaining(t, snap, adds_own_objects=adds_own_objects, claimed=claimed)
        for t in targets
    }
