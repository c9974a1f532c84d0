"""Plans of several ENIs at once, for golden and property tests. The product plans one
ENI at a time (plan_interface); table uniqueness is the converge's check."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ec2net.metadata import EniMetadata
from ec2net.model import InterfacePlan, Link
from ec2net.plan import plan_interface


@dataclass(frozen=True)
class Planned:
    interfaces: tuple[InterfacePlan, ...] = ()


def plan(pairs: Sequence[tuple[EniMetadata, Link]]) -> Planned:
    ordered = sorted(pairs, key=lambda p: p[0].index)
    return Planned(tuple(plan_interface(eni, link) for eni, link in ordered))
