"""diff against a snapshot, per target: what must change (before apply) and what did
not take effect (verify, after). Pure.

A network manager adds objects of its own (NetworkManager's prefix routes in the ENI's
table): under such a backend a kept ENI is judged only by what it must have, not by
extras; an ENI being removed must still end with nothing of ours.
"""

from __future__ import annotations

from collections.abc import Sequence

from ec2net.diff import Current, Delta, changeset, diff_interface
from ec2net.model import ChangeSet, Op
from ec2net.snapshot import Snapshot
from ec2net.targets import Target


def current(t: Target, snap: Snapshot, *, claimed: frozenset[int] = frozenset()) -> Current:
    """What the ENI of `t` has now, as far as we may touch it. Tables in `claimed` are
    planned by another target of the same converge (a table handed over from a gone ENI
    to a new one): a removal leaves their content to the new owner's diff."""
    tables = t.tables() - claimed if t.removing else t.tables()
    link = snap.by_mac().get(t.mac) if t.link is not None else None
    local = snap.local_routes_of(link.name) if link is not None else frozenset()
    return Current(
        link_addresses=snap.addresses_of(link),
        owned_ips=t.record.owned() if t.record is not None else frozenset(),
        routes=frozenset(r for tb in tables for r in snap.routes_of(tb)) | local,
        rules=frozenset(r for tb in tables for r in snap.rules_of(tb)),
        ifname=t.ifname,
        link_mtu=link.mtu if link is not None else None,
        restore_mtu=t.record.mtu_before if t.record is not None else None,
    )


def delta(targets: Sequence[Target], snap: Snapshot) -> Delta:
    claimed = claimed_tables(targets)
    out = Delta()
    for t in targets:
        out.extend(diff_interface(t.plan, current(t, snap, claimed=claimed)))
    return out


def remaining(
    t: Target, snap: Snapshot, *, adds_own_objects: bool, claimed: frozenset[int] = frozenset()
) -> ChangeSet:
    """What still differs for one target; under a manager, extras of a kept ENI are the
    manager's business."""
    left = changeset(diff_interface(t.plan, current(t, snap, claimed=claimed)))
    if adds_own_objects and not t.removing:
        return ChangeSet(tuple(c for c in left.changes if c.op is Op.ADD))
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
