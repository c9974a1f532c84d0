"""Fixtures shared by the unit tests: the default world and its IMDS on loopback."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from ec2sim.imds import ImdsServer
from ec2sim.world import World, default_world


@pytest.fixture
def world() -> World:
    return default_world()


@pytest.fixture
def server(world: World) -> Iterator[ImdsServer]:
    srv = ImdsServer.listen(world, "127.0.0.1", 0)
    yield srv
    srv.stop()
