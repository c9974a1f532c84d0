"""The contract every backend fulfils, and the report an apply returns."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Optional, Protocol

from ec2net.metadata import EniMetadata
from ec2net.model import AddressSpec, Change, ChangeSet, InterfacePlan, Link, RouteSpec, RuleSpec


@dataclass
class ApplyReport:
    applied: list[Change] = field(default_factory=list)
    # Changes the kernel refused, with its reason. EEXIST on add and ENOENT/ESRCH on
    # delete count as applied: they mean the object is already as wanted.
    failed: list[tuple[Change, str]] = field(default_factory=list)


@dataclass(frozen=True)
class Intent:
    """One ENI's whole desired configuration, for backends that render files from it
    rather than apply single changes. `plan` None: remove everything of ours."""

    mac: str
    ifname: str
    table: int
    link: Optional[Link]
    plan: Optional[InterfacePlan]
    eni: Optional[EniMetadata]


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
    def apply(self, changes: ChangeSet, intents: Sequence[Intent] = ()) -> ApplyReport:
        """Make `changes` happen; a file backend renders `intents` instead and has the
        network manager apply them."""
        ...


class LinkControl(Protocol):
    def set_up(self, ifname: str) -> bool:
        """Bring the link administratively up; True if it was down (a change)."""
        ...


class Backend(NetState, Applier, LinkControl, Protocol):
    """What the engine needs from the layer that touches the kernel."""

    name: str
    # Seconds the engine waits for the kernel to show what `apply` asked for: 0 when
    # apply is synchronous (netlink); a network manager applies files on its own time.
    settle_timeout: float
    # Whether it can add to the primary ENI (interfaces.manage_primary). A networkd or
    # NetworkManager profile of ours would replace the primary's boot profile.
    primary_ok: bool

    def blocked(self, ifname: str) -> Optional[str]:
        """Why this backend must leave the interface alone (e.g. the user's own ifcfg
        file says EC2SYNC=no), or None."""
        ...

    def close(self) -> None: ...
