"""The contract every backend fulfils, and the report an apply returns."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Protocol

from ec2net.model import AddressSpec, Change, ChangeSet, Link, RouteSpec, RuleSpec


@dataclass
class ApplyReport:
    applied: list[Change] = field(default_factory=list)
    # Changes the kernel refused, with its reason. EEXIST on add and ENOENT/ESRCH on
    # delete count as applied: they mean the object is already as wanted.
    failed: list[tuple[Change, str]] = field(default_factory=list)


class NetState(Protocol):
    """Reads what the kernel has now. Only objects tagged with our protocol are
    returned for routes and rules; addresses are returned per interface (ownership of
    addresses is decided by the runtime state record, not here)."""

    def links(self) -> list[Link]: ...

    def link(self, name: str) -> Optional[Link]: ...

    def addresses(self, ifname: str) -> set[AddressSpec]: ...

    def owned_routes(self) -> set[RouteSpec]: ...

    def owned_rules(self) -> set[RuleSpec]: ...


class Applier(Protocol):
    def apply(self, changes: ChangeSet) -> ApplyReport: ...


class LinkControl(Protocol):
    def set_up(self, ifname: str) -> bool:
        """Bring the link administratively up; True if it was down (a change)."""
        ...


class Backend(NetState, Applier, LinkControl, Protocol):
    """What the engine needs from the layer that touches the kernel."""

    def close(self) -> None: ...
