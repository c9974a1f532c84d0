"""Fixtures for the simulated VPC (root + network namespaces).

`world` yields a started `Fabric` (default world: primary ENI as eth0, client host in
subnet-c, peer in the primary's subnet, IMDS at 169.254.169.254, echo service on the
instance) and always tears it down. `make_world` builds custom ones (another World,
dhcp=True, ra=True, ...). Shared by every test directory.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any, Callable

import pytest

from ec2sim.fabric import Fabric
from ec2sim.netns import cleanup_orphans

TEST_LABEL = "pytest"


def _require_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("the simulated world needs root (network namespaces)")


@pytest.fixture(scope="session")
def _orphans_removed() -> None:
    """Worlds left by an earlier crashed run (owner process gone) are removed once."""
    if os.geteuid() == 0:
        cleanup_orphans()


@pytest.fixture
def make_world(_orphans_removed: None) -> Iterator[Callable[..., Fabric]]:
    _require_root()
    made: list[Fabric] = []

    def factory(**kwargs: Any) -> Fabric:
        kwargs.setdefault("label", TEST_LABEL)
        fabric = Fabric(**kwargs)
        made.append(fabric)
        return fabric.start()

    try:
        yield factory
    finally:
        for fabric in made:
            fabric.stop()


@pytest.fixture
def world(make_world: Callable[..., Fabric]) -> Fabric:
    return make_world()
