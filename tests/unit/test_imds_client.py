"""The IMDS client against the simulator over loopback HTTP: tokens, retries,
classification, request counts, propagation."""

from __future__ import annotations

import ipaddress
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ec2net.errors import ImdsAbsent, ImdsFatal, ImdsNotYet, ImdsTransient
from ec2net.imds import ImdsClient
from ec2net.metadata import fetch_dynamic, fetch_eni, wait_for_eni
from ec2sim.imds import ImdsServer
from ec2sim.world import World, default_world

SECOND = "02:00:0a:00:02:14"
PRIMARY = "02:00:0a:00:01:0a"


@pytest.fixture
def world() -> World:
    return default_world()


@pytest.fixture
def server(world: World) -> Iterator[ImdsServer]:
    srv = ImdsServer.listen(world, "127.0.0.1", 0)
    yield srv
    srv.stop()


def client(srv: ImdsServer, **kw: object) -> ImdsClient:
    opts: dict[str, object] = {"timeout": 0.5, "retries": 3}
    opts.update(kw)
    return ImdsClient((srv.url,), **opts)  # type: ignore[arg-type]


def test_one_token_for_many_reads(server: ImdsServer) -> None:
    c = client(server)
    assert c.get("mac") == PRIMARY
    assert c.get("instance-id").startswith("i-")
    assert c.get_list("network/interfaces/macs/") != []
    assert server.log.count("PUT") == 1
    assert server.log.count("GET") == 3
    assert c.stats.total == 4


def test_token_renewed_once_on_401(server: ImdsServer) -> None:
    c = client(server)
    c.get("mac")
    server.revoke_tokens()
    assert c.get("mac") == PRIMARY
    assert server.log.count("PUT") == 2


def test_token_shared_through_cache_file(server: ImdsServer, tmp_path: Path) -> None:
    cache = tmp_path / "imds-token"
    client(server, token_cache=cache).get("mac")
    client(server, token_cache=cache).get("mac")
    assert server.log.count("PUT") == 1
    assert cache.stat().st_mode & 0o777 == 0o600


def test_absent_key_is_absent_not_empty(server: ImdsServer) -> None:
    c = client(server)
    with pytest.raises(ImdsAbsent):
        c.get(f"network/interfaces/macs/{SECOND}/ipv4-prefix")


def test_503_burst_is_retried(server: ImdsServer, world: World) -> None:
    world.faults.error_503_remaining = 2
    assert client(server).get("mac") == PRIMARY


def test_persistent_503_is_transient_and_bounded(server: ImdsServer, world: World) -> None:
    world.faults.error_503_remaining = 1000
    start = time.monotonic()
    with pytest.raises(ImdsTransient):
        client(server).get("mac")
    assert time.monotonic() - start < 10  # retries are bounded, not endless


def test_no_answer_is_transient(server: ImdsServer, world: World) -> None:
    world.faults.blackhole = True
    with pytest.raises(ImdsTransient):
        client(server, timeout=0.2, retries=1).get("mac")


def test_reset_is_retried(server: ImdsServer, world: World) -> None:
    world.faults.reset_remaining = 1
    assert client(server).get("mac") == PRIMARY


def test_disabled_is_fatal(server: ImdsServer, world: World) -> None:
    world.faults.disabled = True
    with pytest.raises(ImdsFatal):
        client(server).get("mac")


def test_no_v1_fallback_unless_allowed(server: ImdsServer, world: World) -> None:
    world.faults.hop_limit_exceeded = True
    with pytest.raises(ImdsTransient):
        client(server, timeout=0.2, retries=0).get("mac")
    world.imdsv2_required = False
    assert client(server, timeout=0.2, retries=0, allow_v1=True).get("mac") == PRIMARY


def test_second_endpoint_used_when_first_is_dead(server: ImdsServer) -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}"
    c = ImdsClient((dead, server.url), timeout=0.5, retries=0)
    assert c.get("mac") == PRIMARY
    assert c.get("instance-id")  # the working endpoint is now tried first
    assert c.stats.total == 2 + 1 + 1  # PUT (dead, live), GET (dead), GET (live)


def test_fetch_eni_reads_only_present_keys(server: ImdsServer, world: World) -> None:
    for n in range(23, 30):
        world.assign(SECOND, ipaddress.IPv4Address(f"10.0.2.{n}"))
    c = client(server)
    eni = fetch_eni(c, SECOND, PRIMARY)
    assert eni.device_number == 1
    assert len(eni.ipv4s) == 10
    assert str(eni.ipv4s[0]) == "10.0.2.20"
    # listing + 8 keys present (no prefixes, no network-card) + token
    assert server.log.count() == 10
    assert server.log.count(path_prefix="/latest/meta-data/network/interfaces/macs/") == 9


def test_fetch_dynamic_reads_listing_and_changeable_keys(server: ImdsServer) -> None:
    c = client(server)
    eni = fetch_eni(c, SECOND, PRIMARY)
    server.log.reset()
    again = fetch_dynamic(c, eni)
    assert again == eni
    assert server.log.count() == 3  # listing, local-ipv4s, ipv6s


def test_waits_for_propagation(server: ImdsServer, world: World) -> None:
    world.enis[SECOND].propagation_delay = 0.6
    world.attach(world.enis[SECOND])
    c = client(server)
    with pytest.raises(ImdsNotYet):
        fetch_eni(c, SECOND, PRIMARY)
    eni = wait_for_eni(c, SECOND, PRIMARY, timeout=5)
    assert eni.device_number == 1
    assert len(eni.ipv4s) == 3  # complete, not the partial view


def test_propagation_wait_is_bounded(server: ImdsServer, world: World) -> None:
    world.enis[SECOND].propagation_delay = 60
    world.attach(world.enis[SECOND])
    start = time.monotonic()
    with pytest.raises(ImdsNotYet):
        wait_for_eni(client(server), SECOND, PRIMARY, timeout=0.5)
    assert time.monotonic() - start < 3
