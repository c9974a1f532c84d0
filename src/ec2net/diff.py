"""diff: desired vs current, restricted to what we own, as an ordered ChangeSet.

Ownership: routes and rules carry our protocol number (backends return only those),
and are further scoped to the ENI's table so that work on one ENI never touches
another's. Addresses are ours only if the runtime record says we added them; an address
already on the link (DHCP, a person) satisfies the plan but never becomes ours.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from ec2net.foreign import Theirs
from ec2net.model import (
    AddressSpec,
    Change,
    ChangeSet,
    InterfacePlan,
    IPAddress,
    MtuSpec,
    NetObject,
    Op,
    RouteSpec,
    RuleSpec,
    sort_key,
)


@dataclass(frozen=True)
class Current:
    """What one ENI has now, as far as we may touch it."""

    link_addresses: frozenset[AddressSpec]  # everything on the link
    owned_ips: frozenset[IPAddress]  # from the runtime record
    routes: frozenset[RouteSpec]  # ours, in the ENI's table (and its local routes)
    rules: frozenset[RuleSpec]  # ours, pointing at the ENI's table
    ifname: str = ""
    link_mtu: Optional[int] = None  # None: no link (gone)
    # The MTU the link had before ec2net changed it (record): set back on removal.
    restore_mtu: Optional[int] = None


@dataclass
class Delta:
    """Unordered per-kind changes; `changeset` orders them. A take-over adds two kinds:
    `replace`, ours in the place of another tool's object with the same key (a route;
    an address of theirs made permanent), and `release`, their objects to delete once
    ours are in place."""

    add: list[NetObject] = field(default_factory=list)
    delete: list[NetObject] = field(default_factory=list)
    replace: list[NetObject] = field(default_factory=list)
    release: list[Theirs] = field(default_factory=list)

    def extend(self, other: Delta) -> None:
        self.add += other.add
        self.delete += other.delete
        self.replace += other.replace
        self.release += other.release


def diff_interface(desired: Optional[InterfacePlan], current: Current) -> Delta:
    """Changes that turn `current` into `desired`; desired None means remove all of ours."""
    want_addrs = desired.addresses if desired else frozenset()
    want_routes = desired.routes if desired else frozenset()
    want_rules = desired.rules if desired else frozenset()
    present = {a.address.ip: a for a in current.link_addresses}
    wanted_ips = {a.address.ip for a in want_addrs}
    delta = Delta()
    delta.add += sorted((a for a in want_addrs if a.address.ip not in present), key=sort_key)
    delta.delete += sorted(
        (a for ip, a in present.items() if ip in current.owned_ips and ip not in wanted_ips),
        key=sort_key,
    )
    delta.add += sorted(want_routes - current.routes, key=sort_key)
    delta.delete += sorted(current.routes - want_routes, key=sort_key)
    delta.add += sorted(want_rules - current.rules, key=sort_key)
    delta.delete += sorted(current.rules - want_rules, key=sort_key)
    mtu = desired.mtu if desired is not None else current.restore_mtu
    if mtu is not None and current.link_mtu is not None and current.link_mtu != mtu:
        delta.add.append(MtuSpec(desired.ifname if desired else current.ifname, mtu))
    return delta


def changeset(delta: Delta) -> ChangeSet:
    """Deletions first (rules, routes, addresses), then additions (addresses, routes,
    rules): a rule never points at a table whose routes are not there yet. A take-over's
    replacements go with the additions, and another tool's objects are deleted last, so
    every reply has a path out by its ENI at every instant of the switch."""
    adds = [*((o, False) for o in delta.add), *((o, True) for o in delta.replace)]
    adds.sort(key=lambda pair: sort_key(pair[0]))
    return ChangeSet(
        tuple(Change(Op.DEL, o) for o in _dedupe(_deletion_order(delta.delete)))
        + tuple(Change(Op.ADD, o, theirs) for o, theirs in _dedupe_pairs(adds))
        + tuple(Change(Op.DEL, x.obj, True, x.proto) for x in _theirs_order(delta.release))
    )


def _theirs_order(theirs: list[Theirs]) -> list[Theirs]:
    by_obj = {x.obj: x for x in theirs}
    ordered = _dedupe(_deletion_order([x.obj for x in theirs]))
    return [by_obj[o] for o in ordered if isinstance(o, (RouteSpec, RuleSpec))]


def _deletion_order(objs: list[NetObject]) -> list[NetObject]:
    # rules before routes before addresses; routes with a gateway before the ones that
    # make the gateway reachable
    return sorted(objs, key=lambda o: tuple(-k for k in sort_key(o)[:2]) + sort_key(o)[2:])


def _dedupe_pairs(pairs: list[tuple[NetObject, bool]]) -> list[tuple[NetObject, bool]]:
    seen: set[NetObject] = set()
    out = []
    for obj, theirs in pairs:
        if obj not in seen:
            seen.add(obj)
            out.append((obj, theirs))
    return out


def _dedupe(objs: list[NetObject]) -> list[NetObject]:
    seen: set[NetObject] = set()
    out = []
    for o in objs:
        if o not in seen:
            seen.add(o)
            out.append(o)
    return out
