"""`ec2net status`: what ec2net manages, checked against the kernel (read only).

One snapshot, and the same verify the converge uses: a row's drift is exactly what an
`up` would still change.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from ec2net import verify as verifier
from ec2net.engine import Engine
from ec2net.state import Phase
from ec2net.targets import resolve


class State(str, enum.Enum):
    OK = "ok"
    DRIFTED = "drifted"  # the kernel lacks (or has extra of) what the plan says
    GONE = "gone"  # the link is gone; `scan` or `down` removes what is left
    UNFINISHED = "unfinished"  # a converge was cut short; the next run finishes it
    FOREIGN = "foreign"  # left to another tool whose objects hold its table (foreign.py)

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class StatusRow:
    interface: str
    mac: str
    eni_id: str
    table: int
    present: bool
    ipv4s: tuple[str, ...]
    ipv6s: tuple[str, ...]
    rules: int  # every rule of the ENI, main-table ones included
    routes: int
    owned_addresses: int
    backend: str
    drift: int  # changes an `up` would make; -1 when unknown (gone, foreign)
    state: State
    # Another tool's routes and rules in the ENI's table, and that tool if known.
    foreign: tuple[str, ...] = ()
    foreign_tool: str = ""

    def as_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["ipv4s"] = list(self.ipv4s)
        data["ipv6s"] = list(self.ipv6s)
        data["foreign"] = list(self.foreign)
        data["state"] = self.state.value
        return data


def collect(engine: Engine) -> list[StatusRow]:
    snap = engine.backend.snapshot()
    links = snap.by_mac()
    rows = []
    for rec in engine.store.records():
        link = links.get(rec.mac)
        eni = rec.eni()
        drift = -1
        left_alone = rec.phase == Phase.FOREIGN.value
        if link is not None and eni is not None and not left_alone:
            target = resolve(engine.want(eni, rec), snap)
            left = verifier.remaining(
                target, snap, adds_own_objects=engine.backend.adds_own_objects
            )
            drift = len(left)
        if link is None:
            state = State.GONE
        elif left_alone:
            state = State.FOREIGN
        elif rec.phase != Phase.APPLIED.value:
            state = State.UNFINISHED
        else:
            state = State.OK if drift == 0 else State.DRIFTED
        rows.append(
            StatusRow(
                interface=link.name if link else rec.ifname,
                mac=rec.mac,
                eni_id=rec.eni_id,
                table=rec.table,
                present=link is not None,
                ipv4s=tuple(str(a) for a in eni.ipv4s) if eni else (),
                ipv6s=tuple(str(a) for a in eni.ipv6s) if eni else (),
                rules=len(snap.rules_of(rec.table)),
                routes=len(snap.routes_of(rec.table)),
                owned_addresses=len(rec.owned_ips),
                backend=engine.backend.name,
                drift=drift,
                state=state,
                foreign=tuple(rec.foreign),
                foreign_tool=rec.foreign_tool,
            )
        )
    return rows


def format_table(rows: Sequence[StatusRow]) -> str:
    if not rows:
        return "no ENIs managed by ec2net"
    head = ("IFACE", "MAC", "ENI", "TABLE", "IPV4", "IPV6", "RULES", "STATE")
    lines = [head]
    for r in rows:
        lines.append(
            (
                r.interface,
                r.mac,
                r.eni_id,
                str(r.table),
                str(len(r.ipv4s)),
                str(len(r.ipv6s)),
                str(r.rules),
                r.state.value,
            )
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(head))]
    table = "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(line, widths)).rstrip() for line in lines
    )
    notes = []
    for r in rows:
        if not r.foreign:
            continue
        whose = r.foreign_tool or "another program"
        if r.state is State.FOREIGN:
            notes.append(
                f"{r.interface}: table {r.table} is {whose}'s; left alone "
                f"(`ec2net up --take-over {r.interface}` replaces it):"
            )
        else:
            notes.append(f"{r.interface}: table {r.table} also holds {whose}'s, left as is:")
        notes += [f"  {obj}" for obj in r.foreign]
    return "\n".join([table, *notes, f"backend: {rows[0].backend}"])
