"""Another tool's routes and rules where ec2net would configure an ENI (pure).

An ENI's table, and the rules that look it up, are ec2net's only when ec2net made them.
Another ENI tool that configures the same ENI (AWS's amazon-ec2-net-utils numbers its
tables the same way, 10000 + 100 * card + device) puts its own objects there: adding
ours beside them would leave half of each configuration, and removing theirs would
fight a tool that puts them back. So such an ENI is left alone, with a message saying
what is there and, where the objects' shape tells, whose they are; an explicit
take-over replaces them (converge.py, verify.py).

What counts as theirs: a route in the ENI's table or a rule into it whose protocol is
not ours (236). Under a network manager that adds our objects with its own protocol
(networkd's rules, NetworkManager's routes), protocol cannot tell: there everything in
the table counts as theirs only until ec2net claims the table (its record, written
before the first change), which nothing but another tool can precede.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Optional, Union

from ec2net.model import RouteSpec, RuleSpec, eni_table_of

# rtnetlink protocol numbers (rtnetlink.h, /etc/iproute2/rt_protos), for messages.
PROTOCOLS = {
    0: "unspec",
    1: "redirect",
    2: "kernel",
    3: "boot",
    4: "static",
    8: "gated",
    9: "ra",
    11: "zebra",
    12: "bird",
    16: "dhcp",
    18: "keepalived",
    42: "babel",
    186: "bgp",
    188: "ospf",
}

# How many objects a message lists before it says "and N more".
SHOWN = 4


@dataclass(frozen=True)
class Theirs:
    """A route or rule of someone else's in an ENI table (or looking one up)."""

    obj: Union[RouteSpec, RuleSpec]
    proto: int

    @property
    def table(self) -> Optional[int]:
        return eni_table_of(self.obj)

    def __str__(self) -> str:
        return f"{self.obj} proto {PROTOCOLS.get(self.proto, str(self.proto))}"


def routes(theirs: Iterable[Theirs]) -> frozenset[RouteSpec]:
    return frozenset(t.obj for t in theirs if isinstance(t.obj, RouteSpec))


def rules(theirs: Iterable[Theirs]) -> frozenset[RuleSpec]:
    return frozenset(t.obj for t in theirs if isinstance(t.obj, RuleSpec))


def replaced(theirs: Iterable[Theirs], planned: Iterable[RouteSpec]) -> frozenset[RouteSpec]:
    """Their routes that a planned route replaces in place (the same kernel key)."""
    keys = {r.key for r in planned}
    return frozenset(r for r in routes(theirs) if r.key in keys)


def summary(theirs: Iterable[Theirs]) -> list[str]:
    """Every object, sorted: rules first (they decide the path), then routes."""
    found = sorted(theirs, key=lambda t: (isinstance(t.obj, RouteSpec), str(t)))
    return [str(t) for t in found]


def message(ifname: str, table: int, theirs: Iterable[Theirs], tool: Optional[str]) -> str:
    """Why the ENI is left alone, for the log, `up`'s error and `status`."""
    found = list(theirs)
    lines = summary(found)
    n_rules = len(rules(found))
    more = len(lines) - SHOWN
    shown = "; ".join(lines[:SHOWN]) + (f"; and {more} more" if more > 0 else "")
    whose = f", by their shape {tool}'s" if tool else ""
    # the ENI's own table, and another tool's own tables it uses for the ENI (cloud-init)
    tables = sorted({t.obj.table if t.table is None else t.table for t in found}) or [table]
    held = (
        f"table {table} holds"
        if len(tables) == 1
        else (f"tables {', '.join(map(str, tables))} hold")
    )
    return (
        f"{ifname}: {held} {n_rules} rules and {len(lines) - n_rules} routes "
        f"ec2net did not create{whose} ({shown}); leaving {ifname} alone. "
        f"`ec2net up --take-over {ifname}` replaces them with ec2net's"
    )
