"""Fixtures shared by the unit tests: the default world and its IMDS on loopback, and
the host side of a guest agent connected to a socket the test holds."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from ec2sim.imds import ImdsServer
from ec2sim.world import World, default_world
from systest.agent import Agent


@pytest.fixture
def world() -> World:
    return default_world()


@pytest.fixture
def server(world: World) -> Iterator[ImdsServer]:
    srv = ImdsServer.listen(world, "127.0.0.1", 0)
    yield srv
    srv.stop()


@pytest.fixture
def connected(tmp_path: Path) -> Iterator[tuple[Agent, socket.socket]]:
    """An Agent connected to a socket the test holds the other end of (QEMU's place)."""
    path = str(tmp_path / "agent.sock")
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(path)
    srv.listen(1)
    a = Agent(path)
    a.connect(timeout=5)
    peer, _ = srv.accept()
    yield a, peer
    a.close()
    peer.close()
    srv.close()
