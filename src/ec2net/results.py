"""A converge's result as the lines people read: on stdout from a command, in the
journal from the daemon and from the units (with the ENI's journal fields, journal.py).
The first line starts with the interface name, which is what journal.py keys on."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from ec2net.model import Op

if TYPE_CHECKING:  # the CLI imports this before it knows it needs the engine
    from ec2net.converge import Result


def _action(r: Result) -> str:
    return str(getattr(r.action, "value", r.action))


def lines(r: Result, dry_run: bool = False) -> list[str]:
    detail = f" ({r.detail})" if r.detail else ""
    action = _action(r)
    if not dry_run:
        return [f"{r.ifname}: {action}{detail}", *(f"  {c}" for c in r.changes.changes)]
    if action in ("skipped", "failed"):
        return [f"{r.ifname}: {action}{detail}"]
    if not r.changes.changes:
        return [f"{r.ifname}: nothing to change{detail}"]
    return [f"{r.ifname}: would {_verb(c.op, c.theirs)} {c.obj}" for c in r.changes.changes]


def _verb(op: Op, theirs: bool) -> str:
    if theirs:
        return "replace" if op is Op.ADD else "delete another tool's"
    return "add" if op is Op.ADD else "delete"


def worth_logging(results: Iterable[Result]) -> list[Result]:
    """What a daemon's job tells the journal: every result but "unchanged" (a refresh
    every few seconds would otherwise log each ENI each time)."""
    return [r for r in results if _action(r) != "unchanged"]
