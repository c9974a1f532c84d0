"""RHEL network-scripts (initscripts), the format the original ec2-net-utils wrote.

Files in /etc/sysconfig/network-scripts/ (route/rule files only when they have lines):
- `ifcfg-IF`: the link and its addresses. `EC2SYNC=yes` marks it as synced by ec2net;
  a user's own file without it makes the backend leave the interface alone.
- `route-IF`, `route6-IF`: ifup-routes runs `ip [-6] route add LINE` per line, so each
  line is that command's arguments, on-link routes first (a gateway must be reachable
  in its table before a route through it is accepted).
- `rule-IF`, `rule6-IF`: likewise `ip [-6] rule add LINE` (and `ip rule del LINE` at
  ifdown). Routes and rules carry `proto 236`, the mark that says they are ours.

No prefix route in main. For a static config ifup-eth adds every IPADDRn with
`ip addr add IP/PREFIX brd .. dev IF $SCOPE label IF`, SCOPE expanded unquoted. Setting
`SCOPE=noprefixroute` therefore puts the flag on each address, and the kernel ends up
with exactly the planned addresses: the primary at its subnet length without a
main-table route (the subnet route exists only in the ENI's table), secondaries /32.
(The `ip addr change .. valid_lft forever` that follows keeps the flag; needs kernel
>= 4.4 and iproute2 >= 3.14.) SCOPE is documented as "scope ID"; relying on its word
splitting is the price of not writing the primary as /32, which would route the same
but leave the kernel with other addresses than the netlink backend makes of the plan.

What network-scripts adds beyond the plan, and other limits:
- IPv6 addresses (ifup-ipv6, `ip -6 addr replace` without flags) each get a host route
  `ADDR dev IF proto kernel metric 256` in main; harmless, local delivery never uses it.
- `NOZEROCONF=yes` keeps ifup-eth from adding 169.254.0.0/16 to main; `ARPCHECKn=no`
  skips a duplicate-address probe (up to 3 s per address) for VPC-assigned addresses.
- With `RenderInput.dhcp`, dhclient owns the primary IPv4 and installs it with a main
  prefix route, as the original tool did. ifup-eth applies IPADDRn only to static
  configs, so the secondaries written here document the plan; ec2net adds them itself.
- Every rule belongs to one ENI (its main-table rule too), so the ifdown of one ENI
  never removes a rule another still needs.
"""

from __future__ import annotations

from pathlib import PurePosixPath

from ec2net.model import (
    RTPROT_EC2NET,
    TABLE_LOCAL,
    TABLE_MAIN,
    AddressSpec,
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

DIR = PurePosixPath("/etc/sysconfig/network-scripts")


def render(inp: RenderInput) -> Files:
    name = inp.plan.ifname
    files: Files = {DIR / f"ifcfg-{name}": _ifcfg(inp)}
    for family, suffix in ((Family.V4, ""), (Family.V6, "6")):
        routes = [route_line(r) for r in routes_of(inp, family)]
        rules = [rule_line(r) for r in rules_of(inp, family)]
        if routes:
            files[DIR / f"route{suffix}-{name}"] = _lines(inp, routes)
        if rules:
            files[DIR / f"rule{suffix}-{name}"] = _lines(inp, rules)
    return files


def _lines(inp: RenderInput, lines: list[str]) -> str:
    return header(inp) + "".join(line + "\n" for line in lines)


def _ifcfg(inp: RenderInput) -> str:
    out = [
        f"DEVICE={inp.plan.ifname}",
        f"HWADDR={inp.plan.mac.upper()}",
        "TYPE=Ethernet",
        "ONBOOT=yes",
        "USERCTL=no",
        "NM_CONTROLLED=no",
        "EC2SYNC=yes",
        "DEFROUTE=no",
        "PEERDNS=no",
        "NOZEROCONF=yes",
    ]
    if inp.plan.mtu is not None:
        out.append(f"MTU={inp.plan.mtu}")
    v4 = _static_v4(inp)
    if inp.dhcp:
        out += ["BOOTPROTO=dhcp", "PERSISTENT_DHCLIENT=yes"]
        if v4:
            out.append("# Applied by ec2net: ifup-eth reads IPADDRn only with BOOTPROTO=none.")
    else:
        out.append("BOOTPROTO=none")
        if v4:
            out.append("# Appended to `ip addr add`: no main-table prefix route for any address.")
            out.append("SCOPE=noprefixroute")
    for n, a in enumerate(v4):
        out += [f"IPADDR{n}={a.address.ip}", f"PREFIX{n}={a.address.network.prefixlen}"]
        if not inp.dhcp:
            out.append(f"ARPCHECK{n}=no")
    out += _ipv6(inp)
    return header(inp) + "".join(line + "\n" for line in out)


def _static_v4(inp: RenderInput) -> list[AddressSpec]:
    """IPv4 addresses for IPADDRn: all planned ones, less the primary DHCP brings."""
    v4 = addresses_of(inp, Family.V4)
    if inp.dhcp and inp.eni.ipv4s:
        return [a for a in v4 if a.address.ip != inp.eni.ipv4s[0]]
    return v4


def _ipv6(inp: RenderInput) -> list[str]:
    if Family.V6 not in families(inp):
        return ["IPV6INIT=no"]
    out = ["IPV6INIT=yes", "IPV6_AUTOCONF=no", "IPV6_DEFROUTE=no"]
    v6 = [str(a.address) for a in addresses_of(inp, Family.V6)]
    if v6:
        out.append(f"IPV6ADDR={v6[0]}")
    if len(v6) > 1:
        out.append(f'IPV6ADDR_SECONDARIES="{" ".join(v6[1:])}"')
    return out


def _dst(route: RouteSpec) -> str:
    return "default" if route.dst.prefixlen == 0 else str(route.dst)


def route_line(route: RouteSpec) -> str:
    """Arguments of `ip route add` for one planned route."""
    parts = [_dst(route)]
    if route.kind is RouteKind.LOCAL:
        parts.insert(0, "local")
    if route.gateway is not None:
        parts.append(f"via {route.gateway}")
    table = "local" if route.table == TABLE_LOCAL else str(route.table)
    parts.append(f"dev {route.ifname} table {table} proto {RTPROT_EC2NET}")
    scope = explicit_scope(route)
    if scope is not None:
        parts.append(f"scope {SCOPE_NAMES[scope]}")
    if route.src is not None:
        parts.append(f"src {route.src}")
    return " ".join(parts)


def rule_line(rule: RuleSpec) -> str:
    """Arguments of `ip rule add` (and `ip rule del` at ifdown) for one planned rule."""
    parts = [f"from {rule.src if rule.src is not None else 'all'}"]
    parts.append(f"lookup {'main' if rule.table == TABLE_MAIN else rule.table}")
    if rule.suppress_prefixlength is not None:
        parts.append(f"suppress_prefixlength {rule.suppress_prefixlength}")
    parts.append(f"priority {rule.priority} protocol {RTPROT_EC2NET}")
    return " ".join(parts)
