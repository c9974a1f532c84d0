"""Renderers: the planned state of one ENI as configuration files for the network
manager that owns its link. Each renderer is a pure function RenderInput -> Files;
nothing here writes to disk (the file backend does, atomically, and activates).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import TYPE_CHECKING, Callable, Optional

from ec2net.model import (
    AddressSpec,
    Family,
    InterfacePlan,
    Link,
    RouteSpec,
    RuleSpec,
    Scope,
    sort_key,
)

if TYPE_CHECKING:  # metadata imports imds and config, which reads the backend registry
    from ec2net.metadata import EniMetadata

# Absolute path on the target system -> file content.
Files = dict[PurePosixPath, str]


@dataclass(frozen=True)
class RenderInput:
    plan: InterfacePlan  # addresses, routes and rules of the ENI (model.py)
    link: Link
    eni: EniMetadata
    # ifcfg only: take the ENI's primary IPv4 address from DHCP (BOOTPROTO=dhcp, kept
    # alive by dhclient) instead of writing it statically.
    dhcp: bool = False


# First line of every rendered file: how the file backend recognises its own files
# (it never overwrites or deletes a file without it).
MARK = "# Managed by ec2net"


def header(inp: RenderInput, comment: str = "#") -> str:
    """The ownership line every renderer puts first (`comment` for other syntaxes)."""
    text = f"{MARK} for {inp.eni.eni_id} ({inp.plan.mac}); removed on detach, edits are lost."
    return text.replace("#", comment, 1) + "\n"


def is_ours(content: str) -> bool:
    return content.lstrip("#; ").startswith(MARK.lstrip("# "))


Renderer = Callable[[RenderInput], Files]


# --- helpers shared by the renderers: one deterministic order for every format -------


def addresses_of(inp: RenderInput, family: Family) -> list[AddressSpec]:
    """The plan's addresses of one family: the ENI's primary IPv4 first, then by value."""
    primary = inp.eni.ipv4s[0] if inp.eni.ipv4s else None
    found = [a for a in inp.plan.addresses if a.family is family]
    return sorted(found, key=lambda a: (a.address.ip != primary, int(a.address.ip)))


def routes_of(inp: RenderInput, family: Family) -> list[RouteSpec]:
    """On-link routes first: a gateway is accepted only once a route reaches it."""
    return sorted((r for r in inp.plan.routes if r.family is family), key=sort_key)


def rules_of(inp: RenderInput, family: Family) -> list[RuleSpec]:
    """The ENI's rules, in the order the kernel consults them."""

    def key(r: RuleSpec) -> tuple[int, int, int, int]:
        src = (int(r.src.network_address), r.src.prefixlen) if r.src is not None else (-1, 0)
        return (r.priority, r.table, *src)

    return sorted((r for r in inp.plan.rules if r.family is family), key=key)


def families(inp: RenderInput) -> set[Family]:
    """Families the ENI has anything planned in."""
    return {o.family for o in inp.plan.objects()}


# Scope names as `ip route` and systemd-networkd spell them.
SCOPE_NAMES = {Scope.UNIVERSE: "global", Scope.LINK: "link", Scope.HOST: "host"}


def explicit_scope(route: RouteSpec) -> Optional[Scope]:
    """The scope a renderer must spell out. Every manager (and `ip route`) defaults an
    IPv4 route without gateway to `link` and everything else to `global`, so only a
    gateway-less IPv4 route planned as `global` needs saying besides `link` itself."""
    if route.scope is Scope.LINK:
        return Scope.LINK
    if route.family is Family.V4 and route.gateway is None:
        return route.scope
    return None
