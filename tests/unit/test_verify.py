"""The verify stage under a network manager (pure): what the manager adds in its own way
still counts as the planned object, and nothing else does."""

from __future__ import annotations

from dataclasses import replace

from ec2net.model import Op
from ec2net.snapshot import Snapshot
from ec2net.verify import remaining
from tests.unit.test_foreign import LINK, target


def test_routes_at_the_managers_metric_are_the_planned_ones() -> None:
    """NetworkManager adds a keyfile's routes at metric 100 + device number where the
    file sets none (seen on the Debian 12 guest: every route of the table at metric 101,
    and `up` reported them as not taken effect)."""
    t = target()
    plan = t.plan
    assert plan is not None and all(r.metric is None for r in plan.routes)
    nm = frozenset(replace(r, metric=101) for r in plan.routes)
    after = Snapshot(
        links=(LINK,), addresses={LINK.index: plan.addresses}, routes=nm, rules=plan.rules
    )
    assert not remaining(t, after, adds_own_objects=True)
    # without a manager (netlink, network-scripts' ip) a metric is a different route
    left = remaining(t, after, adds_own_objects=False)
    assert {c.obj for c in left.changes if c.op is Op.ADD} == set(plan.routes)
    # and a route the plan does not have stays what it is, metric and all
    other = replace(next(iter(nm)), dst=replace(next(iter(nm))).dst.supernet())
    with_other = replace(after, routes=nm | {other})
    assert not remaining(t, with_other, adds_own_objects=True)  # a manager's extra: its own
