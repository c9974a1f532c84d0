"""The planner: a pure function from ENI metadata + its link + options to the ENI's plan.

Scheme (docs/routing.md has the reasons): ENI index i = 100*network_card +
device_number; table 10000+i holds the ENI's subnet route, routes to the VPC's CIDRs via
the subnet router, and a default route. Per owned source block two rules: one at
10000+i that consults the table for everything but its default route, one at 25000+i
for the default route; between them, at 20000+i, `lookup main suppress_prefixlength 0`
lets specific main-table routes (bridges, pods, user routes) win over the ENI default.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Optional

from ec2net.metadata import EniMetadata
from ec2net.model import (
    PRIO_DEFAULT,
    PRIO_MAIN,
    PRIO_VPC,
    TABLE_BASE,
    TABLE_LOCAL,
    TABLE_MAIN,
    AddressSpec,
    Family,
    InterfacePlan,
    IPNetwork,
    Link,
    RouteKind,
    RouteSpec,
    RuleSpec,
    Scope,
)

# AWS documents the VPC router as reachable at this link-local address on every ENI.
AWS_IPV6_ROUTER = ipaddress.IPv6Address("fe80:ec2::1")
DEFAULT4 = ipaddress.IPv4Network("0.0.0.0/0")
DEFAULT6 = ipaddress.IPv6Network("::/0")


@dataclass(frozen=True)
class PlanOptions:
    """What the configuration adds to the plan of one ENI."""

    mtu: Optional[int] = None  # the link's MTU; None leaves it as it is
    # Route delegated prefixes as local (AnyIP), so the host answers on every address.
    local_prefixes: bool = False


def table_for(eni: EniMetadata) -> int:
    return TABLE_BASE + eni.index


def _addresses(eni: EniMetadata, link: Link) -> list[AddressSpec]:
    out: list[AddressSpec] = []
    v4 = list(eni.ipv4s)
    v6 = list(eni.ipv6s)
    if eni.is_primary:
        # The primary's own address belongs to the boot network configuration. (Its
        # IPv6 addresses may be planned: one that DHCPv6 already put there is left as is.)
        v4 = v4[1:]
    elif v4 and eni.subnet4 is not None:
        first, v4 = v4[0], v4[1:]
        # Subnet-length primary address without a main-table prefix route: the subnet
        # route lives only in the ENI's table, so main never sends other sources here.
        out.append(AddressSpec(link.name, ipaddress.IPv4Interface((first, eni.subnet4.prefixlen))))
    # Secondaries as host addresses: deleting one never takes others with it.
    out += [AddressSpec(link.name, ipaddress.IPv4Interface((a, 32))) for a in v4]
    out += [AddressSpec(link.name, ipaddress.IPv6Interface((a, 128))) for a in v6]
    return out


def source_blocks(eni: EniMetadata, family: Family) -> list[IPNetwork]:
    """Owned sources, aggregated to exact CIDR blocks (one rule per block)."""
    if family is Family.V4:
        v4 = [*(ipaddress.IPv4Network(a) for a in eni.ipv4s), *eni.ipv4_prefixes]
        return list(ipaddress.collapse_addresses(v4))
    v6 = [*(ipaddress.IPv6Network(a) for a in eni.ipv6s), *eni.ipv6_prefixes]
    return list(ipaddress.collapse_addresses(v6))


def _routes(eni: EniMetadata, link: Link, table: int) -> list[RouteSpec]:
    out: list[RouteSpec] = []
    dev = link.name
    if eni.subnet4 is not None and (eni.ipv4s or eni.ipv4_prefixes):
        gw4 = eni.subnet4.network_address + 1
        src = eni.ipv4s[0] if eni.ipv4s else None
        out.append(RouteSpec(table, eni.subnet4, dev, scope=Scope.LINK, src=src))
        for vpc in eni.vpc4:
            if vpc != eni.subnet4:
                out.append(RouteSpec(table, vpc, dev, gateway=gw4))
        out.append(RouteSpec(table, DEFAULT4, dev, gateway=gw4))
    if eni.subnet6 and (eni.ipv6s or eni.ipv6_prefixes):
        gw6 = link.ipv6_routers[0] if link.ipv6_routers else AWS_IPV6_ROUTER
        for subnet6 in eni.subnet6:
            out.append(RouteSpec(table, subnet6, dev))
        for vpc6 in eni.vpc6:
            if vpc6 not in eni.subnet6:
                out.append(RouteSpec(table, vpc6, dev, gateway=gw6))
        out.append(RouteSpec(table, DEFAULT6, dev, gateway=gw6))
    return out


def _rules(eni: EniMetadata, table: int) -> list[RuleSpec]:
    out: list[RuleSpec] = []
    for family in (Family.V4, Family.V6):
        for block in source_blocks(eni, family):
            out.append(RuleSpec(PRIO_VPC + eni.index, family, table, block, 0))
            out.append(RuleSpec(PRIO_MAIN + eni.index, family, TABLE_MAIN, block, 0))
            out.append(RuleSpec(PRIO_DEFAULT + eni.index, family, table, block))
    return out


def _local_routes(eni: EniMetadata, link: Link) -> list[RouteSpec]:
    """Delegated prefixes as AnyIP routes in table local, on the ENI's link (the kernel
    drops them with the device): every address of the prefix is delivered to local
    sockets, and the replies' source rules send them out by the ENI."""
    prefixes: list[IPNetwork] = [*eni.ipv4_prefixes, *eni.ipv6_prefixes]
    return [
        # IPv6 routes have no scope (the kernel reports universe); IPv4 local is host.
        RouteSpec(TABLE_LOCAL, p, link.name, scope=_LOCAL_SCOPE[p.version], kind=RouteKind.LOCAL)
        for p in prefixes
    ]


_LOCAL_SCOPE = {4: Scope.HOST, 6: Scope.UNIVERSE}


def plan_interface(
    eni: EniMetadata, link: Link, options: PlanOptions = PlanOptions()
) -> InterfacePlan:
    table = table_for(eni)
    routes = _routes(eni, link, table)
    if options.local_prefixes:
        routes += _local_routes(eni, link)
    return InterfacePlan(
        mac=eni.mac,
        eni_id=eni.eni_id,
        ifname=link.name,
        table=table,
        addresses=frozenset(_addresses(eni, link)),
        routes=frozenset(routes),
        rules=frozenset(_rules(eni, table)),
        mtu=options.mtu,
    )


def families_of(plans: Iterable[InterfacePlan]) -> set[Family]:
    return {r.family for p in plans for r in p.rules}
