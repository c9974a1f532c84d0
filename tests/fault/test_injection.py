"""The simulator's per-endpoint fault injection (`ec2sim.imds_state.Injected`) on
loopback: what the fault matrix relies on, checked without namespaces."""

from __future__ import annotations

import http.client
import ipaddress
from collections.abc import Iterator

import pytest

from ec2sim.imds import TOKEN_HEADER, TTL_HEADER, ImdsServer
from ec2sim.imds_state import Trigger
from ec2sim.world import default_world

pytestmark = pytest.mark.fault

MAC = "02:00:0a:00:01:0a"
IPS = f"/latest/meta-data/network/interfaces/macs/{MAC}/local-ipv4s"


@pytest.fixture
def server() -> Iterator[ImdsServer]:
    srv = ImdsServer.listen(default_world(), "127.0.0.1", 0)
    try:
        yield srv
    finally:
        srv.stop()


def _request(
    srv: ImdsServer, method: str, path: str, headers: dict[str, str]
) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection(srv.host, srv.port, timeout=2)
    try:
        conn.request(method, path, headers=headers)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def _token(srv: ImdsServer) -> str:
    status, body = _request(srv, "PUT", "/latest/api/token", {TTL_HEADER: "60"})
    assert status == 200
    return body.decode()


def test_token_expires_after_n_reads(server: ImdsServer) -> None:
    server.injected.token_uses = 2
    token = _token(server)
    got = [_request(server, "GET", IPS, {TOKEN_HEADER: token})[0] for _ in range(4)]
    assert got == [200, 200, 401, 401]
    fresh = _token(server)
    assert _request(server, "GET", IPS, {TOKEN_HEADER: fresh})[0] == 200


def test_raw_body_replaces_the_value(server: ImdsServer) -> None:
    server.injected.bodies[f"macs/{MAC}/local-ipv4s"] = b"10.0.1.10\x00\xff"
    token = _token(server)
    assert _request(server, "GET", IPS, {TOKEN_HEADER: token}) == (200, b"10.0.1.10\x00\xff")
    server.injected.bodies.clear()
    assert _request(server, "GET", IPS, {TOKEN_HEADER: token}) == (200, b"10.0.1.10")


def test_endpoint_down_resets_every_connection(server: ImdsServer) -> None:
    server.injected.down = True
    with pytest.raises((ConnectionError, http.client.HTTPException)):
        _token(server)
    server.injected.down = False
    assert _token(server)


def test_trigger_changes_the_world_before_the_nth_answer(server: ImdsServer) -> None:
    """What the "IMDS changes under a converge" cases use: the action runs before the
    chosen request is answered, once, whichever endpoint gets that request."""
    world = server.world
    extra = ipaddress.IPv4Address("10.0.1.11")
    trigger = Trigger("local-ipv4s", lambda: world.assign(MAC, extra), nth=2)
    server.injected.triggers.append(trigger)
    token = _token(server)
    first = _request(server, "GET", IPS, {TOKEN_HEADER: token})
    second = _request(server, "GET", IPS, {TOKEN_HEADER: token})
    third = _request(server, "GET", IPS, {TOKEN_HEADER: token})
    assert first == (200, b"10.0.1.10")
    assert second == third == (200, b"10.0.1.10\n10.0.1.11")
    assert trigger.seen == 3 and trigger.fired_at is not None
