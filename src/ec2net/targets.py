"""What one converge is asked to do, before and after it is resolved against the
kernel's current state.

`Want` is the request (an ENI to configure with its metadata, or one to remove);
`Target` is the same request resolved against a snapshot: the link as it is now
(names change: NICs get renamed right after they appear), the table, and the plan for
that link. Backends receive Targets; file backends render them.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Optional

from ec2net import plan as planner
from ec2net.foreign import Theirs
from ec2net.metadata import EniMetadata
from ec2net.model import InterfacePlan, Link
from ec2net.plan import PlanOptions
from ec2net.snapshot import Snapshot
from ec2net.state import Record


@dataclass(frozen=True)
class Want:
    """Configure `eni` (None: remove everything of ours for this MAC)."""

    mac: str
    eni: Optional[EniMetadata]
    record: Optional[Record]
    # Only while the ENI is still recorded (a refresh must not bring back an ENI that
    # `down` removed while IMDS was being read).
    requires_record: bool = False
    options: PlanOptions = field(default_factory=PlanOptions)
    # MTU "auto": the MAC of the link whose MTU the ENI takes (the primary's).
    mtu_from: Optional[str] = None
    # Replace another tool's routes and rules in the ENI's table (foreign.py) and adopt
    # the addresses it put on the link, instead of leaving the ENI to it.
    take_over: bool = False


@dataclass(frozen=True)
class Target:
    """One ENI to converge: `plan` None means remove everything of ours."""

    mac: str
    ifname: str
    table: int
    link: Optional[Link]
    plan: Optional[InterfacePlan]
    eni: Optional[EniMetadata]
    record: Optional[Record] = None
    take_over: bool = False
    # Another tool's objects this converge replaces or removes (found by the converge).
    theirs: frozenset[Theirs] = frozenset()

    @property
    def removing(self) -> bool:
        return self.plan is None

    def tables(self) -> set[int]:
        """The ENI's table, and an older one its record names (it is emptied)."""
        found = {self.table}
        if self.record is not None and self.record.table:
            found.add(self.record.table)
        return {t for t in found if t}


def resolve(want: Want, snap: Snapshot) -> Target:
    """The request against the kernel now: an ENI whose link is gone is removed."""
    rec = want.record
    link = snap.by_mac().get(want.mac)
    if want.eni is not None and link is not None:
        options = want.options
        if want.mtu_from is not None:
            source = snap.by_mac().get(want.mtu_from)
            options = replace(options, mtu=source.mtu if source is not None else None)
        plan = planner.plan_interface(want.eni, link, options)
        return Target(want.mac, link.name, plan.table, link, plan, want.eni, rec, want.take_over)
    ifname = link.name if link is not None else rec.ifname if rec is not None else want.mac
    return Target(want.mac, ifname, rec.table if rec is not None else 0, link, None, None, rec)
