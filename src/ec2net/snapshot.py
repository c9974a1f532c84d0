"""The current state, read once per converge: one value that diff, the table check,
records and verify all use, so that a converge of many ENIs costs one dump of each
kind instead of several per ENI.

A backend produces it (`Backend.snapshot()`); it holds every link, every global
address per link, the routes and rules the backend counts as ours, and the routes and
rules of other programs in ENI tables (foreign.py).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Optional, TypeVar

from ec2net import cloudinit
from ec2net.foreign import Theirs
from ec2net.model import (
    AddressSpec,
    IPAddress,
    Link,
    RouteKind,
    RouteSpec,
    RuleSpec,
    eni_table_of,
)


@dataclass(frozen=True)
class Snapshot:
    links: tuple[Link, ...] = ()
    addresses: Mapping[int, frozenset[AddressSpec]] = field(default_factory=dict)  # by index
    routes: frozenset[RouteSpec] = frozenset()  # ours only
    rules: frozenset[RuleSpec] = frozenset()  # ours only
    # Not ours by protocol, in an ENI table or looking one up (under a network manager
    # that adds ours with its own protocol, also in `routes` and `rules`); and, in
    # cloud-init's table range (cloudinit.py), everything there.
    theirs: frozenset[Theirs] = frozenset()

    def link(self, name: str) -> Optional[Link]:
        return next((ln for ln in self.links if ln.name == name), None)

    def by_mac(self) -> dict[str, Link]:
        return self._by_mac

    @cached_property
    def _by_mac(self) -> dict[str, Link]:
        # Asked once per target and stage: built once per snapshot (it never changes).
        return {ln.mac: ln for ln in self.links}

    def by_index(self, index: int) -> Optional[Link]:
        return next((ln for ln in self.links if ln.index == index), None)

    def addresses_of(self, link: Optional[Link]) -> frozenset[AddressSpec]:
        return self.addresses.get(link.index, frozenset()) if link is not None else frozenset()

    def routes_of(self, table: int) -> frozenset[RouteSpec]:
        return self._routes_by_table.get(table, frozenset())

    def local_routes_of(self, ifname: str) -> frozenset[RouteSpec]:
        """Our local (AnyIP) routes on this link: owned by interface, not by table."""
        return frozenset(
            r for r in self.routes if r.kind is RouteKind.LOCAL and r.ifname == ifname
        )

    def rules_of(self, table: int) -> frozenset[RuleSpec]:
        return self._rules_by_table.get(table, frozenset())

    def theirs_of(self, table: int) -> frozenset[Theirs]:
        return self._theirs_by_table.get(table, frozenset())

    def cloud_init_of(self, ifname: str, addresses: Iterable[IPAddress]) -> frozenset[Theirs]:
        """cloud-init's rules and routes for the ENI on `ifname` with `addresses`."""
        found = (t for t in self.theirs if t.table is None and cloudinit.is_table(t.obj.table))
        return cloudinit.objects_for(ifname, addresses, found)

    def tables(self) -> set[int]:
        """ENI tables that any of our routes or rules belong to."""
        return set(self._routes_by_table) | set(self._rules_by_table)

    # Each target asks for its tables at every stage: group the objects once.
    @cached_property
    def _routes_by_table(self) -> dict[int, frozenset[RouteSpec]]:
        return _by_table(self.routes)

    @cached_property
    def _rules_by_table(self) -> dict[int, frozenset[RuleSpec]]:
        return _by_table(self.rules)

    @cached_property
    def _theirs_by_table(self) -> dict[int, frozenset[Theirs]]:
        groups: dict[int, set[Theirs]] = {}
        for obj in self.theirs:
            if obj.table is not None:
                groups.setdefault(obj.table, set()).add(obj)
        return {table: frozenset(found) for table, found in groups.items()}


Obj = TypeVar("Obj", RouteSpec, RuleSpec)


def _by_table(objs: frozenset[Obj]) -> dict[int, frozenset[Obj]]:
    groups: dict[int, set[Obj]] = {}
    for obj in objs:
        table = eni_table_of(obj)
        if table is not None:
            groups.setdefault(table, set()).add(obj)
    return {table: frozenset(found) for table, found in groups.items()}
