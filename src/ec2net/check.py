"""`ec2net check`: would a reply from each owned address leave by the ENI that owns it?
What to ask the kernel, and how to judge its answers (pure; check_kernel.py asks).

Other software changes the answer without touching an object of ec2net's: a rule that
takes the lookup first, a strict rp_filter, a failed gateway neighbour, an MTU changed
behind ec2net's back. So the verdict is never a model of the routing: it is the
kernel's own route lookup (what `ip route get` does, RTM_GETROUTE), for a packet from
each owned source address (and one address of each delegated prefix):
- leaving this host, towards the ENI's gateway, an address outside the VPC, an address
  in another subnet of the VPC, and into each specific main-table route of another
  program (a bridge, pods): the first three must leave by the ENI, the last by that
  route's own device;
- arriving on the ENI from outside and from another subnet of the VPC (the input path,
  where the kernel applies rp_filter): the kernel must accept it.
Beside the paths: the gateway's neighbour entry (failed: nothing gets out), the link's
MTU against the plan, and whether IMDS hands out a token. No packet is sent.
"""

from __future__ import annotations

import enum
import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Optional

from ec2net.metadata import EniMetadata
from ec2net.model import (
    TABLE_LOCAL,
    TABLE_MAIN,
    IPAddress,
    IPNetwork,
    RouteSpec,
)

# Destinations outside any VPC: documentation ranges (never routed on the internet, so
# never a VPC's own); the first not inside one of the VPC's blocks is taken.
OUTSIDE4 = ("198.51.100.7", "203.0.113.7", "192.0.2.7")
OUTSIDE6 = ("2001:db8::7", "2001:db8:ffff::7")
# The kernel's answer to an input lookup it refuses as a martian source: what a strict
# rp_filter gives a packet whose way back is another interface.
EINVAL = 22
STRICT = 1


class Kind(str, enum.Enum):
    """What is wrong; a label of ec2net_check_problems."""

    WRONG_PATH = "wrong_path"  # the reply leaves by another interface
    NO_ROUTE = "no_route"  # the kernel has no route for it at all
    RP_FILTER = "rp_filter"  # the input path refuses what arrives on the ENI
    NEIGHBOUR = "neighbour"  # the gateway's neighbour entry failed
    MTU = "mtu"  # the link runs another MTU than planned
    IMDS = "imds"  # IMDS does not hand out a token

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class Eni:
    """One ENI ec2net manages, as check needs it."""

    ifname: str
    index: int
    mac: str
    eni: EniMetadata
    mtu: int  # the link's now
    planned_mtu: Optional[int]  # None: ec2net leaves it as it is


@dataclass(frozen=True)
class Question:
    ifname: str  # the ENI that owns `source`
    source: IPAddress
    dest: IPAddress
    towards: str  # what `dest` stands for: gateway, outside, vpc, or a route
    expect: str  # the interface the packet must leave by ("" for an input lookup)
    inbound: bool = False  # arriving on the ENI from `dest` (input path, rp_filter)


@dataclass(frozen=True)
class Answer:
    """The kernel's: the table the lookup took and the interface it chose, or its
    refusal (errno and text)."""

    table: Optional[int] = None
    oif: str = ""
    error: int = 0
    reason: str = ""


@dataclass(frozen=True)
class Path:
    question: Question
    answer: Answer
    # The route is right but nothing gets through it: the interface's gateway does not
    # answer ARP (its neighbour entry failed).
    blocked: bool = False

    @property
    def right(self) -> bool:
        if self.answer.error or self.blocked:
            return False
        return self.question.inbound or self.answer.oif == self.question.expect

    def as_json(self) -> dict[str, Any]:
        q, a = self.question, self.answer
        return {
            "interface": q.ifname,
            "source": str(q.source),
            "destination": str(q.dest),
            "towards": q.towards,
            "direction": "in" if q.inbound else "out",
            "table": a.table,
            "via": a.oif,
            "expected": q.expect,
            "error": a.reason,
            "blocked": self.blocked,
            "right": self.right,
        }


@dataclass(frozen=True)
class Problem:
    ifname: str
    kind: Kind
    what: str  # one line: what and why

    def as_json(self) -> dict[str, str]:
        return {"interface": self.ifname, "kind": self.kind.value, "problem": self.what}


@dataclass(frozen=True)
class OtherRule:
    """A rule that is not ec2net's, as far as a message needs it."""

    priority: int
    table: int
    src: Optional[IPNetwork]
    text: str  # as `ip rule` would say it

    def matches(self, source: IPAddress) -> bool:
        return self.src is None or (self.src.version == source.version and source in self.src)


@dataclass
class Report:
    paths: list[Path] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def as_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "paths": [p.as_json() for p in self.paths],
            "problems": [p.as_json() for p in self.problems],
        }


def sources(eni: EniMetadata) -> list[IPAddress]:
    """Every address the ENI owns, and one address in each delegated prefix."""
    found: list[IPAddress] = [*eni.ipv4s, *eni.ipv6s]
    prefixes: list[IPNetwork] = [*eni.ipv4_prefixes, *eni.ipv6_prefixes]
    found += [p.network_address + 1 for p in prefixes]
    return found


def _outside(candidates: Sequence[str], vpcs: Sequence[IPNetwork]) -> Optional[IPAddress]:
    for text in candidates:
        addr = ipaddress.ip_address(text)
        if not any(addr in v for v in vpcs if v.version == addr.version):
            return addr
    return None


def _other_subnet(vpcs: Sequence[IPNetwork], subnets: Sequence[IPNetwork]) -> Optional[IPAddress]:
    """An address of the VPC in none of the ENI's subnets (the next block of the
    subnet's size, or the one before)."""
    for vpc in vpcs:
        mine = [s for s in subnets if s.version == vpc.version and s.subnet_of(vpc)]  # type: ignore[arg-type]
        size = mine[0].num_addresses if mine else 256
        for k in range(0, min(vpc.num_addresses // size, 64)):
            addr = vpc.network_address + k * size + 1
            if addr in vpc and not any(addr in s for s in mine):
                return addr
    return None


def questions(enis: Sequence[Eni], main_routes: Iterable[RouteSpec]) -> list[Question]:
    """What to ask for every source of every ENI. `main_routes`: the main table's
    routes other programs added, on links that are no ENI (bridges, pods, VPNs)."""
    specific = [
        r
        for r in main_routes
        if r.table == TABLE_MAIN and r.dst.prefixlen and r.ifname and not r.dst.is_link_local
    ]
    out: list[Question] = []
    for e in enis:
        meta = e.eni
        vpcs: list[IPNetwork] = [*meta.vpc4, *meta.vpc6]
        subnets: list[IPNetwork] = [
            *((meta.subnet4,) if meta.subnet4 is not None else ()),
            *meta.subnet6,
        ]
        for src in sources(meta):
            v4 = src.version == 4
            towards: list[tuple[Optional[IPAddress], str]] = [
                (_outside(OUTSIDE4 if v4 else OUTSIDE6, vpcs), "outside"),
                (_other_subnet([v for v in vpcs if v.version == src.version], subnets), "vpc"),
            ]
            if v4 and meta.subnet4 is not None:
                towards.insert(0, (meta.subnet4.network_address + 1, "gateway"))
            for dest, what in towards:
                if dest is None:
                    continue
                out.append(Question(e.ifname, src, dest, what, e.ifname))
                if what != "gateway":
                    out.append(Question(e.ifname, src, dest, what, "", inbound=True))
            for route in specific:
                if route.dst.version != src.version or any(
                    route.dst.overlaps(v) for v in vpcs if v.version == route.dst.version
                ):
                    continue
                # the network's last usable address: its first is often the host's own
                # (docker0 is 172.17.0.1), and the answer would then be "local"
                size = route.dst.num_addresses
                dest = route.dst.network_address + (size - 2 if size > 2 else 0)
                towards_route = f"route {route.dst} dev {route.ifname}"
                out.append(Question(e.ifname, src, dest, towards_route, route.ifname))
    return out


def _taken_by(path: Path, ours_from: int, rules: Sequence[OtherRule]) -> str:
    """The rule of another program that takes this lookup before ec2net's, if one does."""
    for rule in sorted(rules, key=lambda r: r.priority):
        if rule.priority >= ours_from:
            break
        if rule.table in (TABLE_LOCAL,) or not rule.matches(path.question.source):
            continue
        if path.answer.table is None or rule.table == path.answer.table:
            return f"; {rule.text} takes the lookup before ec2net's rules"
    return ""


def judge(
    paths: Sequence[Path],
    first_rule: dict[str, int],
    rules: Sequence[OtherRule],
    rp_filter: dict[str, int],
) -> list[Problem]:
    """One problem per wrong path. `first_rule`: per ENI the priority of its first rule
    (10000 + index); `rp_filter`: the effective setting per interface."""
    out: list[Problem] = []
    for p in paths:
        if p.right or p.blocked:  # a blocked path is the neighbour's problem, said once
            continue
        q, a = p.question, p.answer
        if q.inbound:
            strict = rp_filter.get(q.ifname) == STRICT
            kind = Kind.RP_FILTER if a.error == EINVAL and strict else Kind.NO_ROUTE
            why = (
                f"rp_filter is 1 (strict) on {q.ifname} and the way back from {q.dest} is "
                "another interface: the kernel drops what arrives; set it to 2 (loose)"
                if kind is Kind.RP_FILTER
                else a.reason
            )
            out.append(
                Problem(
                    q.ifname,
                    kind,
                    f"{q.ifname}: {q.dest} -> {q.source} arriving on {q.ifname}: {why}",
                )
            )
            continue
        head = f"{q.ifname}: {q.source} -> {q.dest} ({q.towards})"
        if a.error:
            out.append(Problem(q.ifname, Kind.NO_ROUTE, f"{head}: no route: {a.reason}"))
            continue
        table = f"table {a.table}" if a.table is not None else "no table"
        why = _taken_by(p, first_rule.get(q.ifname, 0), rules)
        out.append(
            Problem(
                q.ifname,
                Kind.WRONG_PATH,
                f"{head}: leaves by {a.oif or 'nothing'} ({table}), not {q.expect}{why}",
            )
        )
    return out


def link_problems(enis: Sequence[Eni], failed_gateways: Mapping[str, IPAddress]) -> list[Problem]:
    """MTU against the plan; a gateway whose neighbour entry failed."""
    out = []
    for e in enis:
        if e.planned_mtu is not None and e.mtu != e.planned_mtu:
            out.append(
                Problem(
                    e.ifname,
                    Kind.MTU,
                    f"{e.ifname}: MTU {e.mtu}, not the {e.planned_mtu} ec2net set: something "
                    "else changed it (large packets are dropped or fragmented)",
                )
            )
        gw = failed_gateways.get(e.ifname)
        if gw is not None:
            out.append(
                Problem(
                    e.ifname,
                    Kind.NEIGHBOUR,
                    f"{e.ifname}: the gateway {gw} does not answer ARP (neighbour entry "
                    "FAILED): nothing leaves by this ENI",
                )
            )
    return out


def format_text(report: Report) -> str:
    lines = []
    for p in report.paths:
        q, a = p.question, p.answer
        arrow = (
            f"{q.dest} -> {q.source} in on {q.ifname}" if q.inbound else f"{q.source} -> {q.dest}"
        )
        got = (
            a.reason
            if a.error
            else (f"table {a.table} dev {a.oif}" if not q.inbound else "accepted")
        )
        lines.append(f"{q.ifname}: {arrow} ({q.towards}): {got}: {'ok' if p.right else 'WRONG'}")
    if report.problems:
        lines.append(f"{len(report.problems)} problems:")
        lines += [p.what for p in report.problems]
    else:
        lines.append("every path is right")
    return "\n".join(lines)
