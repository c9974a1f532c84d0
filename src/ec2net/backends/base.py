"""The contract every backend fulfils, and the report an apply returns."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Optional, Protocol

from ec2net.model import Change, ChangeSet, Link
from ec2net.snapshot import Snapshot
from ec2net.targets import Target

# Backends used to receive "intents": the same value as a converge target.
Intent = Target


@dataclass
class ApplyReport:
    applied: list[Change] = field(default_factory=list)
    # Changes the kernel refused, with its reason. EEXIST on add and ENOENT/ESRCH on
    # delete count as applied: they mean the object is already as wanted.
    failed: list[tuple[Change, str]] = field(default_factory=list)


class Backend(Protocol):
    """What the engine needs from the layer that touches the kernel."""

    name: str
    # Seconds the engine waits for the kernel to show what `apply` asked for: 0 when
    # apply is synchronous (netlink); a network manager applies files on its own time.
    settle_timeout: float
    # Whether it can add to the primary ENI (interfaces.manage_primary). A networkd or
    # NetworkManager profile of ours would replace the primary's boot profile.
    primary_ok: bool
    # Whether the manager adds objects of its own next to ours (NetworkManager's prefix
    # routes in the ENI's table): verify then judges a kept ENI only by what it lacks.
    adds_own_objects: bool

    def links(self) -> list[Link]:
        """Every link (one link dump; IPv6 routers are in the snapshot only)."""
        ...

    def present(self, index: int) -> bool:
        """Whether the link with this ifindex still exists (cheap; safe from any
        thread, unlike the dumps)."""
        ...

    def snapshot(self) -> Snapshot:
        """Links, addresses, our routes and rules: one dump of each kind."""
        ...

    def set_up(self, ifname: str) -> bool:
        """Bring the link administratively up; True if it was down (a change)."""
        ...

    def apply(self, changes: ChangeSet, targets: Sequence[Target] = ()) -> ApplyReport:
        """Make `changes` happen; a file backend renders `targets` instead and has the
        network manager apply them."""
        ...

    def blocked(self, ifname: str) -> Optional[str]:
        """Why this backend must leave the interface alone (e.g. the user's own ifcfg
        file says EC2SYNC=no), or None."""
        ...

    def close(self) -> None: ...
