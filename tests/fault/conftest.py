"""Fixtures of the fault suite: fresh fault worlds and clean reference states.

A reference is the state a clean run gives on a fresh world with the same IMDS: the
suite compares every faulted, killed or raced run with one, object for object.
"""

from __future__ import annotations

import ipaddress
import itertools
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Callable

import pytest

from ec2sim.fabric import Fabric
from tests.conftest import TEST_LABEL
from tests.fault.harness import NEW_ADDR, SECOND, THIRD, FaultWorld, new_world
from tests.fault.state import State

Steps = Callable[[FaultWorld], None]


def _base(fw: FaultWorld) -> None:
    fw.must("up", "eth1")


def _both(fw: FaultWorld) -> None:
    fw.must("up", "eth1")
    fw.fabric.attach(THIRD, "eth2")
    fw.must("up", "eth2")


def _refreshed(fw: FaultWorld) -> None:
    fw.must("up", "eth1")
    fw.fabric.assign(SECOND, NEW_ADDR)
    fw.must("refresh")


def _down(fw: FaultWorld) -> None:
    fw.must("up", "eth1")
    fw.must("down", "eth1")


def _nothing(fw: FaultWorld) -> None:
    pass


def _eth2_only(fw: FaultWorld) -> None:
    fw.fabric.attach(THIRD, "eth2")
    fw.must("up", "eth2")


# IMDS that changes under a converge (test_imds_changes.py): the states after the change
ASSIGNED_ETH2 = ipaddress.IPv4Address("10.0.2.46")
UNASSIGNED_ETH2 = ipaddress.IPv4Address("10.0.2.45")
UNASSIGNED_ETH1 = ipaddress.IPv4Address("10.0.2.31")


def _both_assigned(fw: FaultWorld) -> None:
    fw.must("up", "eth1")
    fw.fabric.attach(THIRD, "eth2")
    fw.fabric.assign(THIRD, ASSIGNED_ETH2)
    fw.must("up", "eth2")


def _both_unassigned(fw: FaultWorld) -> None:
    fw.must("up", "eth1")
    fw.fabric.attach(THIRD, "eth2")
    fw.fabric.unassign(THIRD, UNASSIGNED_ETH2)
    fw.must("up", "eth2")


def _base_unassigned(fw: FaultWorld) -> None:
    fw.fabric.unassign(SECOND, UNASSIGNED_ETH1)
    fw.must("up", "eth1")


def _eth2_eth1_detached(fw: FaultWorld) -> None:
    fw.fabric.attach(THIRD, "eth2")
    fw.must("up", "eth2")
    fw.fabric.detach(SECOND)


REFERENCE_STEPS: dict[str, Steps] = {
    "base": _base,
    "both": _both,
    "refreshed": _refreshed,
    "down": _down,
    "empty": _nothing,
    "eth2-only": _eth2_only,
    "both, eth2 +1": _both_assigned,
    "both, eth2 -1": _both_unassigned,
    "base, eth1 -1": _base_unassigned,
    "eth2, eth1 detached": _eth2_eth1_detached,
}


class References:
    """Clean states by name, each built once per session on its own fresh world."""

    def __init__(self) -> None:
        self._cache: dict[str, State] = {}
        self._tmp = Path(tempfile.mkdtemp(prefix="ec2net-fault-ref-"))
        self._seq = itertools.count()

    def __getitem__(self, name: str) -> State:
        if name not in self._cache:
            fabrics: list[Fabric] = []

            def make(**kwargs: object) -> Fabric:
                fabric = Fabric(label=TEST_LABEL, **kwargs)  # type: ignore[arg-type]
                fabrics.append(fabric)
                return fabric.start()

            fw = new_world(self._tmp / f"{name}-{next(self._seq)}", make)
            try:
                REFERENCE_STEPS[name](fw)
                self._cache[name] = fw.state()
            finally:
                fw.close()
                for fabric in fabrics:
                    fabric.stop()
        return self._cache[name]


@pytest.fixture(scope="session")
def refs(_orphans_removed: None) -> References:
    if os.geteuid() != 0:
        pytest.skip("the simulated world needs root (network namespaces)")
    return References()


@pytest.fixture
def worlds(
    make_world: Callable[..., Fabric], tmp_path: Path
) -> Iterator[Callable[..., FaultWorld]]:
    """Factory of fresh fault worlds (each with foreign state and a primary probe)."""
    made: list[FaultWorld] = []
    seq = itertools.count()

    def factory(foreign: bool = True, extra_enis: int = 0) -> FaultWorld:
        fw = new_world(
            tmp_path / f"w{next(seq)}", make_world, foreign=foreign, extra_enis=extra_enis
        )
        made.append(fw)
        return fw

    try:
        yield factory
    finally:
        for fw in made:
            fw.close()
