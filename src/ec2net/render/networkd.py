"""systemd-networkd (syntax of systemd 252, Debian 12): one .network file per ENI.

`/run/systemd/network/00-ec2net-IF.network`: runtime only (a reboot starts from what
ec2net renders again), and `00-` so that it sorts before other generators' files (the
first matching file wins: netplan writes 10-netplan-*, cloud-init 50-cloud-init,
amazon-ec2-net-utils 70-* and 80-ec2). A person who wants their own file for an ENI
excludes the ENI in ec2net's configuration. It matches the ENI by MAC, not by name, so
a renamed or re-attached interface can never pick up a stale file.

Choices:
- DHCP=no, IPv6AcceptRA=no: every address and route comes from IMDS via the plan.
  LinkLocalAddressing=ipv6 only when IPv6 is planned (the IPv6 gateway is link-local).
- Addresses with AddPrefixRoute=no: the subnet route exists only in the ENI's table.
  IPv6 addresses with DuplicateAddressDetection=none (as the netlink backend adds them
  `nodad`): the VPC hands each address to one ENI only, and DAD would keep a new
  address tentative (unusable) for a second or two, after a hot-plug and when a
  take-over moves the link from another tool's file to this one.
- Gateway routes with GatewayOnLink=yes: networkd may add a gateway route before the
  table's own on-link route, and the kernel checks reachability in that table.
- KeepConfiguration=static: when networkd (re)starts it leaves the static addresses and
  routes on the link in place instead of flushing and re-adding them, so an upgrade or
  restart of networkd never interrupts an ENI. The cost: an address dropped from this
  file while networkd was not running stays until ec2net removes it.
- ConfigureWithoutCarrier=yes (implies IgnoreCarrierLoss=yes): a carrier blip on a
  virtual NIC must not drop the configuration; RequiredForOnline=no: a secondary ENI
  never holds up network-online.target.

What the kernel ends up with beyond the plan, or differently:
- Rules carry protocol `static` (4): [RoutingPolicyRule] has no Protocol= setting.
  Routes carry 236 (Protocol=).
- With IPv6, the link-local address and the kernel's fe80::/64 route in main, as on
  any IPv6 link.
- The primary ENI (manage_primary): this file would sort before, and so replace, the
  boot configuration that holds the primary's DHCP address; do not render it there.
"""

from __future__ import annotations

from pathlib import PurePosixPath

from ec2net.model import (
    RTPROT_EC2NET,
    TABLE_LOCAL,
    TABLE_MAIN,
    Family,
    RouteKind,
    RouteSpec,
    RuleSpec,
)
from ec2net.render import (
    SCOPE_NAMES,
    Files,
    RenderInput,
    addresses_of,
    explicit_scope,
    families,
    header,
    routes_of,
    rules_of,
)

DIR = PurePosixPath("/run/systemd/network")

Section = tuple[str, list[tuple[str, str]]]


def render(inp: RenderInput) -> Files:
    has_v6 = Family.V6 in families(inp)
    sections: list[Section] = [
        ("Match", [("MACAddress", inp.plan.mac)]),
        ("Link", [("RequiredForOnline", "no"), *_mtu(inp)]),
        (
            "Network",
            [
                ("DHCP", "no"),
                ("LinkLocalAddressing", "ipv6" if has_v6 else "no"),
                ("IPv6AcceptRA", "no"),
                ("KeepConfiguration", "static"),
                ("ConfigureWithoutCarrier", "yes"),
            ],
        ),
    ]
    for family in (Family.V4, Family.V6):
        dad = [("DuplicateAddressDetection", "none")] if family is Family.V6 else []
        sections += [
            ("Address", [("Address", str(a.address)), ("AddPrefixRoute", "no"), *dad])
            for a in addresses_of(inp, family)
        ]
    for family in (Family.V4, Family.V6):
        sections += [("Route", _route(r)) for r in routes_of(inp, family)]
    for family in (Family.V4, Family.V6):
        sections += [("RoutingPolicyRule", _rule(r)) for r in rules_of(inp, family)]
    body = "\n".join(
        f"[{name}]\n" + "".join(f"{k}={v}\n" for k, v in items) for name, items in sections
    )
    return {DIR / f"00-ec2net-{inp.plan.ifname}.network": header(inp) + "\n" + body}


def _mtu(inp: RenderInput) -> list[tuple[str, str]]:
    return [("MTUBytes", str(inp.plan.mtu))] if inp.plan.mtu is not None else []


def _route(route: RouteSpec) -> list[tuple[str, str]]:
    out = [("Destination", str(route.dst))]
    if route.kind is RouteKind.LOCAL:
        out.append(("Type", "local"))
    if route.gateway is not None:
        out += [("Gateway", str(route.gateway)), ("GatewayOnLink", "yes")]
    scope = explicit_scope(route)
    if scope is not None:
        out.append(("Scope", SCOPE_NAMES[scope]))
    if route.src is not None:
        out.append(("PreferredSource", str(route.src)))
    table = "local" if route.table == TABLE_LOCAL else str(route.table)
    out += [("Table", table), ("Protocol", str(RTPROT_EC2NET))]
    return out


def _rule(rule: RuleSpec) -> list[tuple[str, str]]:
    # Without From= networkd cannot tell the family; it would default to ipv4.
    out = [("From", str(rule.src)) if rule.src is not None else ("Family", _family(rule))]
    out.append(("Table", "main" if rule.table == TABLE_MAIN else str(rule.table)))
    out.append(("Priority", str(rule.priority)))
    if rule.suppress_prefixlength is not None:
        out.append(("SuppressPrefixLength", str(rule.suppress_prefixlength)))
    return out


def _family(rule: RuleSpec) -> str:
    return "ipv4" if rule.family is Family.V4 else "ipv6"
