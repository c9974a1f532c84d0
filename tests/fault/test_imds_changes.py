"""IMDS that changes under a converge: a secondary address assigned or unassigned
between the reads of one `up`, `scan` or `refresh`.

The simulator changes its world just before it answers a chosen request
(`ec2sim.imds_state.Trigger`): the ENI's listing (before its address lists are read)
or its `ipv6s` (after `local-ipv4s` was read, before the run ends). Rules: the command
exits 0 with a state IMDS listed at some instant, before the change or after it, object
for object (so nothing IMDS lists at the end was removed); then the next `refresh`
converges to exactly the state after the change.
"""

from __future__ import annotations

import ipaddress
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable

import pytest

from ec2sim.imds_state import Trigger
from tests.fault.cells import Cell
from tests.fault.conftest import (
    ASSIGNED_ETH2,
    UNASSIGNED_ETH1,
    UNASSIGNED_ETH2,
    References,
)
from tests.fault.harness import SECOND, THIRD, FaultWorld, record

pytestmark = [pytest.mark.world, pytest.mark.fault]


@dataclass(frozen=True)
class Change:
    name: str
    mac: str
    addr: ipaddress.IPv4Address
    assign: bool
    before: str  # the reference before the change (conftest.REFERENCE_STEPS)
    after: str  # and after it


ETH2_CHANGES = [
    Change(f"{ASSIGNED_ETH2} assigned", THIRD, ASSIGNED_ETH2, True, "both", "both, eth2 +1"),
    Change(f"{UNASSIGNED_ETH2} unassigned", THIRD, UNASSIGNED_ETH2, False, "both",
           "both, eth2 -1"),
]  # fmt: skip
ETH1_CHANGES = [
    Change("10.0.2.50 assigned", SECOND, ipaddress.IPv4Address("10.0.2.50"), True, "base",
           "refreshed"),
    Change(f"{UNASSIGNED_ETH1} unassigned", SECOND, UNASSIGNED_ETH1, False, "base",
           "base, eth1 -1"),
]  # fmt: skip
# Where the change happens: (label, key whose request triggers it; "" = the listing).
# `refresh` reads no listing: there the first instant is its read of local-ipv4s itself.
INSTANTS = {
    "up": [("before the address lists are read", ""), ("between local-ipv4s and ipv6s", "ipv6s")],
    "scan": [("before the address lists are read", ""),
             ("between local-ipv4s and ipv6s", "ipv6s")],
    "refresh": [("as local-ipv4s is read", "local-ipv4s"),
                ("between local-ipv4s and ipv6s", "ipv6s")],
}  # fmt: skip


def _cell(
    op: str, change: Change, instant: tuple[str, str], fw: FaultWorld, refs: References
) -> Cell:
    label, key = instant
    cell = Cell("changes", f"{change.name}, {label}", op)
    fw.must("up", "eth1")
    if change.mac == THIRD:
        fw.fabric.attach(THIRD, "eth2")
    foreign = fw.foreign()
    fabric = fw.fabric

    def act() -> None:
        (fabric.assign if change.assign else fabric.unassign)(change.mac, change.addr)

    trigger = Trigger(f"macs/{change.mac}/{key}", act)
    for inj in fw.servers_injected():
        inj.triggers.append(trigger)
    run = fw.ec2net(*(["up", "eth2"] if op == "up" else [op]))
    cell.rc = str(run.rc)
    if trigger.fired_at is None:
        cell.fail("the change never happened (no such request)")
    if run.rc != 0:
        cell.fail(f"exit {run.rc}\n{run.err[-800:]}")
    state = fw.state()
    old, new = refs[change.before], refs[change.after]
    if state == old:
        cell.during = "as IMDS listed before the change"
    elif state == new:
        cell.during = "as IMDS listed after the change"
    else:
        cell.during = "neither: " + cell.judge("after the run", new, state)
        cell.fail(f"a state IMDS never listed (neither {change.before!r} nor {change.after!r})")
    again = fw.ec2net("refresh")
    if again.rc != 0:
        cell.fail(f"next refresh exited {again.rc}\n{again.err[-800:]}")
    cell.after = cell.judge("after the next refresh", new, fw.state())
    if fw.foreign() != foreign:
        cell.fail("foreign state changed")
    if fw.probe.failed:
        cell.fail(f"primary probes failed: {fw.probe.failed[:5]}")
    return cell


@pytest.mark.parametrize("op", ["up", "scan", "refresh"])
def test_imds_changes_under_a_converge(
    op: str, worlds: Callable[..., FaultWorld], refs: References
) -> None:
    changes = ETH1_CHANGES if op == "refresh" else ETH2_CHANGES
    for c in changes:
        refs[c.before]
        refs[c.after]
    cases = [(c, i) for c in changes for i in INSTANTS[op]]

    def one(case: tuple[Change, tuple[str, str]]) -> Cell:
        change, instant = case
        try:
            return _cell(op, change, instant, worlds(), refs)
        except AssertionError as err:
            c = Cell("changes", f"{change.name}, {instant[0]}", op)
            c.fail(str(err))
            return c

    with ThreadPoolExecutor(max_workers=2) as pool:
        cells = list(pool.map(one, cases))
    for done in cells:
        record(done.row())
    problems = [p for done in cells for p in done.problems]
    assert problems == [], "\n".join(problems)
