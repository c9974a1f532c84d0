"""Fixtures for the simulated VPC (root + network namespaces).

`world` yields a started `Fabric` (default world: primary ENI as eth0, client host in
subnet-c, peer in the primary's subnet, IMDS at 169.254.169.254, echo service on the
instance) and always tears it down. `make_world` builds custom ones (another World,
dhcp=True, ra=True, ...). Shared by every test directory.
"""

from __future__ import annotations

import faulthandler
import os
import signal
import sys
from collections.abc import Generator, Iterator
from types import FrameType
from typing import Any, Callable, Optional

import pytest

from ec2sim.fabric import Fabric
from ec2sim.netns import cleanup_orphans

TEST_LABEL = "pytest"

# Every test ends: one that hangs fails with its threads' stacks printed instead of
# running CI into its hard limit. A system test's first item also boots its guest and
# may build the image (debootstrap, apt), hence the larger bound.
TEST_DEADLINE_S = 600
SYSTEM_TEST_DEADLINE_S = 1800


class DeadlinePassed(Exception):
    """The test ran past its deadline (tests/conftest.py)."""


def _deadline(item: pytest.Item) -> int:
    return SYSTEM_TEST_DEADLINE_S if item.get_closest_marker("system") else TEST_DEADLINE_S


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item) -> Generator[None, None, None]:
    limit = _deadline(item)

    def expired(signum: int, frame: Optional[FrameType]) -> None:
        faulthandler.dump_traceback(file=sys.stderr, all_threads=True)
        raise DeadlinePassed(f"{item.nodeid} ran past {limit} s")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, limit)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


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
