"""The current state, read once per converge: one value that diff, the table check,
records and verify all use, so that a converge of many ENIs costs one dump of each
kind instead of several per ENI.

A backend produces it (`Backend.snapshot()`); it holds every link, every global
address per link, and only the routes and rules the backend counts as ours.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Optional

from ec2net.model import AddressSpec, Link, RouteKind, RouteSpec, RuleSpec, eni_table_of


@dataclass(frozen=True)
class Snapshot:
    links: tuple[Link, ...] = ()
    addresses: Mapping[int, frozenset[AddressSpec]] = field(default_factory=dict)  # by index
    routes: frozenset[RouteSpec] = frozenset()  # ours only
    rules: frozenset[RuleSpec] = frozenset()  # ours only

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
        return frozenset(r for r in self.routes if eni_table_of(r) == table)

    def local_routes_of(self, ifname: str) -> frozenset[RouteSpec]:
        """Our local (AnyIP) routes on this link: owned by interface, not by table."""
        return frozenset(
            r for r in self.routes if r.kind is RouteKind.LOCAL and r.ifname == ifname
        )

    def rules_of(self, table: int) -> frozenset[RuleSpec]:
        return frozenset(r for r in self.rules if eni_table_of(r) == table)

    def tables(self) -> set[int]:
        """ENI tables that any of our routes or rules belong to."""
        found = {eni_table_of(r) for r in self.routes} | {eni_table_of(r) for r in self.rules}
        return {t for t in found if t is not None}
