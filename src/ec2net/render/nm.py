"""NetworkManager keyfile: one in-memory connection profile per ENI.

`/run/NetworkManager/system-connections/ec2net-IF.nmconnection` (NM >= 1.20 reads
/run; gone at reboot, when ec2net renders again; NM ignores it unless mode 0600, which
the writer sets). The uuid is derived from the MAC, so re-rendering the same ENI keeps
the same profile; the profile is bound to both the interface name and the MAC.

Choices:
- method=manual with the planned addresses; never-default=true; may-fail=false. A
  family with nothing planned is `disabled`; IPv6 with routes but no address (a
  delegated prefix only) is `link-local`, as manual needs an address. IPv4 has no such
  method: routes without an address (only possible for the primary ENI, whose own
  address belongs to its boot profile) cannot be expressed, and are left out.
- route-table=TABLE puts every route NM makes for the profile, its own prefix and
  link-local routes included, into the ENI's table instead of main. It also hands the
  table to NM: on activation NM removes routes in it that it did not add.
- Routes as routeN=DST[,GW] with routeN_options table=, src=, scope= (253 = link) and
  onlink=true for gateway routes (the gateway is reachable only through the table's own
  on-link route, which NM may add later). Rules as routing-ruleN in `ip rule` syntax,
  the main-table one with table 254 spelled out.
- autoconnect-priority=100 wins over NM's automatic "Wired connection" profiles.
- ipv4 dad-timeout=0: no address conflict probe before NM adds an IPv4 address (newer
  NM probes for 200 ms by default); the VPC gives each address to one ENI. IPv6 has no
  such setting: the activator turns the ENI's `accept_dad` off before NM gets the
  profile (backends/activators.py, skip_dad).

Where NM cannot follow the plan exactly:
- NM has no setting for a route's or rule's protocol number: they carry NM's own
  (`static`) instead of 236. ec2net's managed-mode reader counts what is in the ENI's
  table, and its main-table rules (priority 20000 + index), as its own for that reason.
- The primary address's prefix route: NM adds it itself (proto kernel) in the ENI's
  table; it coincides with the planned on-link subnet route (same dst, dev, scope, src).
- IPv6: NM's link-local address brings fe80::/64 into the ENI's table (route-table
  applies to device routes), which the plan does not list.
- The primary ENI (manage_primary): a device has one active profile, so activating
  this one would replace the boot profile that holds the primary's DHCP address.
"""

from __future__ import annotations

import uuid
from pathlib import PurePosixPath

from ec2net.model import Family, RouteKind, RouteSpec, RuleSpec
from ec2net.render import (
    Files,
    RenderInput,
    addresses_of,
    explicit_scope,
    families,
    header,
    routes_of,
    rules_of,
)

DIR = PurePosixPath("/run/NetworkManager/system-connections")
# Fixed namespace: uuid5(NAMESPACE, mac) is the same profile uuid on every host.
NAMESPACE = uuid.UUID("3a61d358-4764-43ea-887f-220e36b9bb25")

Items = list[tuple[str, str]]


def connection_id(ifname: str) -> str:
    return f"ec2net-{ifname}"


def connection_uuid(mac: str) -> str:
    return str(uuid.uuid5(NAMESPACE, mac.lower()))


def render(inp: RenderInput) -> Files:
    name = inp.plan.ifname
    sections = [
        (
            "connection",
            [
                ("id", connection_id(name)),
                ("uuid", connection_uuid(inp.plan.mac)),
                ("type", "ethernet"),
                ("interface-name", name),
                ("autoconnect", "true"),
                ("autoconnect-priority", "100"),
            ],
        ),
        ("ethernet", [("mac-address", inp.plan.mac.upper()), *_mtu(inp)]),
        ("ipv4", _ip(inp, Family.V4)),
        ("ipv6", _ip(inp, Family.V6)),
    ]
    body = "\n".join(
        f"[{section}]\n" + "".join(f"{k}={v}\n" for k, v in items) for section, items in sections
    )
    return {DIR / f"{connection_id(name)}.nmconnection": header(inp) + "\n" + body}


def method(inp: RenderInput, family: Family) -> str:
    if addresses_of(inp, family):
        return "manual"
    if family is Family.V6 and family in families(inp):
        return "link-local"
    return "disabled"


def _ip(inp: RenderInput, family: Family) -> Items:
    how = method(inp, family)
    out: Items = [("method", how)]
    if how == "disabled":
        return out
    if family is Family.V6:
        out.append(("addr-gen-mode", "eui64"))
    for n, a in enumerate(addresses_of(inp, family), 1):
        out.append((f"address{n}", str(a.address)))
    if family is Family.V4:
        out.append(("dad-timeout", "0"))
    out += [("never-default", "true"), ("may-fail", "false")]
    out.append(("route-table", str(inp.plan.table)))
    for n, r in enumerate(routes_of(inp, family), 1):
        out += [(f"route{n}", _route(r)), (f"route{n}_options", _route_options(r))]
    for n, rule in enumerate(rules_of(inp, family), 1):
        out.append((f"routing-rule{n}", routing_rule(rule)))
    return out


def _mtu(inp: RenderInput) -> Items:
    return [("mtu", str(inp.plan.mtu))] if inp.plan.mtu is not None else []


def _route(route: RouteSpec) -> str:
    return str(route.dst) + (f",{route.gateway}" if route.gateway is not None else "")


def _route_options(route: RouteSpec) -> str:
    opts = {"table": str(route.table)}
    if route.gateway is not None:
        opts["onlink"] = "true"
    scope = explicit_scope(route)
    if scope is not None:
        opts["scope"] = str(int(scope))
    if route.src is not None:
        opts["src"] = str(route.src)
    if route.kind is RouteKind.LOCAL:
        opts["type"] = "local"
    return ",".join(f"{k}={v}" for k, v in sorted(opts.items()))


def routing_rule(rule: RuleSpec) -> str:
    """A rule in NM's `ip rule`-like syntax (numeric table: 254 is main)."""
    src = (
        rule.src if rule.src is not None else ("0.0.0.0/0" if rule.family is Family.V4 else "::/0")
    )
    parts = [f"priority {rule.priority}", f"from {src}", f"table {rule.table}"]
    if rule.suppress_prefixlength is not None:
        parts.append(f"suppress_prefixlength {rule.suppress_prefixlength}")
    return " ".join(parts)
