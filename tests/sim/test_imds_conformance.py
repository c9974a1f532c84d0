"""Conformance of the IMDS simulator with docs/imds.md, over real HTTP on loopback."""

from __future__ import annotations

import argparse
import errno
import http.client
import ipaddress
import json
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import pytest

from ec2sim.imds import ImdsServer, parse_listen
from ec2sim.imds_tree import Phase, eni_phase, render_tree
from ec2sim.world import Eni, World, default_world

MD = "/latest/meta-data"
MACS = f"{MD}/network/interfaces/macs"
PRIMARY = "02:00:0a:00:01:0a"
SECOND = "02:00:0a:00:02:14"
TTL = "X-aws-ec2-metadata-token-ttl-seconds"
TOK = "X-aws-ec2-metadata-token"
REPO = Path(__file__).resolve().parents[2]


@dataclass
class Resp:
    status: int
    headers: dict[str, str]  # lower-cased names
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode()


def call(
    srv: ImdsServer,
    method: str,
    path: str,
    headers: Optional[dict[str, str]] = None,
    timeout: float = 2.0,
) -> Resp:
    conn = http.client.HTTPConnection(srv.host, srv.port, timeout=timeout)
    try:
        conn.request(method, path, headers=headers or {})
        r = conn.getresponse()
        body = r.read()
        return Resp(r.status, {k.lower(): v for k, v in r.getheaders()}, body)
    finally:
        conn.close()


def get_token(srv: ImdsServer, ttl: int = 60) -> str:
    r = call(srv, "PUT", "/latest/api/token", {TTL: str(ttl)})
    assert r.status == 200, r
    return r.text


def get(srv: ImdsServer, path: str, token: Optional[str]) -> Resp:
    return call(srv, "GET", path, {TOK: token} if token else {})


TITLES = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    429: "Too Many Requests",
    503: "Service Unavailable",
}


def assert_error_page(r: Resp, status: int) -> None:
    title = TITLES[status]
    assert r.status == status
    assert r.headers["content-type"] == "text/html"
    assert f"<title>{status} - {title}</title>" in r.text
    assert f"<h1>{status} - {title}</h1>" in r.text


def new_eni(mac: str, dev: int, card: int = 0, last: int = 30) -> Eni:
    return Eni(
        eni_id=f"eni-0cccccccccccccc{dev:02d}",
        mac=mac,
        subnet_id="subnet-b",
        device_number=dev,
        network_card=card,
        ipv4s=[ipaddress.IPv4Address(f"10.0.2.{last + i}") for i in range(3)],
        ipv6s=[ipaddress.IPv6Address(f"2600:1f16:292:2::{last}")],
        ipv4_prefixes=[ipaddress.IPv4Network("10.0.2.64/28")],
        ipv6_prefixes=[ipaddress.IPv6Network("2600:1f16:292:2:a000::/80")],
    )


@pytest.fixture
def model() -> World:
    """The world model alone (conftest's `world` is a whole namespace fabric)."""
    return default_world()


@pytest.fixture
def srv(model: World) -> Iterator[ImdsServer]:
    server = ImdsServer.listen(model, "127.0.0.1", 0)
    yield server
    server.stop()


@pytest.fixture
def token(srv: ImdsServer) -> str:
    return get_token(srv)


# --- tokens --------------------------------------------------------------------------


def test_token_put_returns_56_char_token_and_echoes_ttl(srv: ImdsServer) -> None:
    r = call(srv, "PUT", "/latest/api/token", {TTL: "21600"})
    assert r.status == 200
    assert r.headers[TTL.lower()] == "21600"
    assert r.headers["content-type"] == "text/plain"
    assert re.fullmatch(r"[A-Za-z0-9+/=_-]{56}", r.text)
    assert int(r.headers["content-length"]) == 56  # no trailing newline
    assert get_token(srv) != get_token(srv)


@pytest.mark.parametrize(
    "ttl", [None, "", "0", "21601", "-1", "abc", "1.5", "99999999999999999999"]
)
def test_token_bad_ttl_is_400(srv: ImdsServer, ttl: Optional[str]) -> None:
    r = call(srv, "PUT", "/latest/api/token", {} if ttl is None else {TTL: ttl})
    assert_error_page(r, 400)


@pytest.mark.parametrize(
    ("method", "path", "headers", "status"),
    [
        ("GET", "/latest/api/token", {TTL: "60"}, 405),
        ("POST", "/latest/api/token", {TTL: "60"}, 405),
        ("DELETE", "/latest/api/token", {TTL: "60"}, 405),
        ("PUT", "/2021-03-23/api/token", {TTL: "60"}, 403),
        ("PUT", "/latest/api/token", {TTL: "60", "X-Forwarded-For": "10.0.3.5"}, 403),
        ("PUT", f"{MD}/mac", {TTL: "60"}, 405),
    ],
)
def test_token_endpoint_rejections(
    srv: ImdsServer, method: str, path: str, headers: dict[str, str], status: int
) -> None:
    assert_error_page(call(srv, method, path, headers), status)


# --- authorisation -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("v2_required", "token_kind", "status"),
    [
        (True, "none", 401),
        (True, "invalid", 401),
        (True, "valid", 200),
        (False, "none", 200),
        (False, "invalid", 401),  # a token header means v2, even when v1 is allowed
        (False, "valid", 200),
    ],
)
def test_read_authorisation(
    model: World, srv: ImdsServer, v2_required: bool, token_kind: str, status: int
) -> None:
    model.imdsv2_required = v2_required
    tok = {"none": None, "invalid": "A" * 56, "valid": get_token(srv, 60)}[token_kind]
    r = get(srv, f"{MD}/mac", tok)
    assert r.status == status
    if status == 401:
        assert_error_page(r, 401)
    else:
        assert r.text == PRIMARY
    if token_kind == "valid":
        assert 1 <= int(r.headers[TTL.lower()]) <= 60
    else:
        assert TTL.lower() not in r.headers


def test_token_expires_after_ttl(srv: ImdsServer) -> None:
    tok = get_token(srv, ttl=1)
    r = get(srv, f"{MD}/mac", tok)
    assert r.status == 200
    assert r.headers[TTL.lower()] == "1"
    time.sleep(1.05)
    assert get(srv, f"{MD}/mac", tok).status == 401


def test_revoked_tokens_are_401(srv: ImdsServer, token: str) -> None:
    srv.revoke_tokens()
    assert get(srv, f"{MD}/mac", token).status == 401


def test_disabled_is_403_for_put_and_reads(model: World, srv: ImdsServer, token: str) -> None:
    model.faults.disabled = True
    assert_error_page(call(srv, "PUT", "/latest/api/token", {TTL: "60"}), 403)
    assert_error_page(get(srv, f"{MD}/mac", token), 403)
    assert_error_page(get(srv, f"{MD}/mac", None), 403)
    model.faults.disabled = False
    assert get(srv, f"{MD}/mac", token).status == 200


# --- headers and format --------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [("PUT", "/latest/api/token", 200), ("GET", f"{MD}/mac", 200), ("GET", f"{MD}/x", 404)],
)
def test_standard_headers(
    srv: ImdsServer, token: str, method: str, path: str, status: int
) -> None:
    hdrs = {TTL: "60"} if method == "PUT" else {TOK: token}
    r = call(srv, method, path, hdrs)
    assert r.status == status
    assert r.headers["server"] == "EC2ws"
    assert r.headers["connection"] == "close"
    assert r.headers["accept-ranges"] == "none"
    assert r.headers["last-modified"].endswith(" GMT")
    assert r.headers["date"].endswith(" GMT")
    assert int(r.headers["content-length"]) == len(r.body)


def test_404_page_is_real_size(srv: ImdsServer, token: str) -> None:
    r = get(srv, f"{MD}/no-such-key", token)
    assert_error_page(r, 404)
    assert len(r.body) == 339
    assert r.text.startswith('<?xml version="1.0" encoding="iso-8859-1"?>')


@pytest.mark.parametrize(
    "path",
    [
        f"{MD}/no-such-key",
        f"{MD}/mac/",  # a leaf asked as a directory
        f"{MD}//mac",
        "/nope/meta-data/mac",
        f"{MACS}/02:00:00:00:00:99/",
        f"{MACS}/{PRIMARY}/network-card",  # single-card world
        f"{MACS}/{PRIMARY}/network-card-index",  # the wrong name some mocks use
        f"{MACS}/{PRIMARY}/ipv4-prefix",
        f"{MACS}/{PRIMARY}/ipv6-prefix",
    ],
)
def test_absent_paths_are_404(srv: ImdsServer, token: str, path: str) -> None:
    assert_error_page(get(srv, path, token), 404)


@pytest.mark.parametrize(
    ("path", "body"),
    [
        (f"{MD}/mac", PRIMARY),
        (f"{MD}/instance-id", "i-0123456789abcdef0"),
        (f"{MD}/instance-type", "m5.xlarge"),
        (f"{MD}/placement/region", "us-east-1"),
        (f"{MD}/placement/availability-zone", "us-east-1a"),
        (f"{MD}/local-ipv4", "10.0.1.10"),
        (f"{MD}/local-hostname", "ip-10-0-1-10.ec2.internal"),
        (f"{MACS}/{PRIMARY}/device-number", "0"),
        (f"{MACS}/{SECOND}/device-number", "1"),
        (f"{MACS}/{SECOND}/interface-id", "eni-0bbbbbbbbbbbbbbb1"),
        (f"{MACS}/{SECOND}/mac", SECOND),
        (f"{MACS}/{SECOND}/local-ipv4s", "10.0.2.20\n10.0.2.21\n10.0.2.22"),
        (f"{MACS}/{SECOND}/subnet-ipv4-cidr-block", "10.0.2.0/24"),
        (f"{MACS}/{SECOND}/subnet-id", "subnet-b"),
        (f"{MACS}/{SECOND}/vpc-id", "vpc-0123456789abcdef0"),
        (f"{MACS}/{SECOND}/owner-id", "123456789012"),
        (f"{MACS}/{SECOND}/security-group-ids", "sg-0123456789abcdef0"),
        (f"{MACS}/{SECOND}/local-hostname", "ip-10-0-2-20.ec2.internal"),
        (f"{MACS}/{SECOND}/ipv6s", "2600:1f16:292:2::20"),
        (f"{MACS}/{SECOND}/subnet-ipv6-cidr-blocks", "2600:1f16:292:2::/64"),
        (f"{MACS}/{SECOND}/vpc-ipv4-cidr-block", "10.0.0.0/16"),
        (f"{MACS}/{SECOND}/vpc-ipv4-cidr-blocks", "10.0.0.0/16"),
        (f"{MACS}/{SECOND}/vpc-ipv6-cidr-blocks", "2600:1f16:292::/56"),
        (f"{MD}/placement/", "availability-zone\nregion"),
        ("/2021-03-23/meta-data/mac", PRIMARY),
    ],
)
def test_values(srv: ImdsServer, token: str, path: str, body: str) -> None:
    r = get(srv, path, token)
    assert (r.status, r.text) == (200, body)
    assert r.headers["content-type"] == "text/plain"


def test_directory_listing_format(srv: ImdsServer, token: str) -> None:
    r = get(srv, f"{MD}/", token)
    lines = r.text.split("\n")
    assert not r.text.endswith("\n")
    assert "network/" in lines
    assert "placement/" in lines
    assert "mac" in lines
    assert "local-ipv4" in lines
    # without the trailing slash: the same listing
    assert get(srv, MD, token).text == r.text
    assert get(srv, f"{MD}/network/interfaces", token).text == "macs/"
    assert get(srv, MACS, token).text == get(srv, f"{MACS}/", token).text


def test_head_has_length_but_no_body(srv: ImdsServer, token: str) -> None:
    r = call(srv, "HEAD", f"{MD}/mac", {TOK: token})
    assert r.status == 200
    assert r.headers["content-length"] == str(len(PRIMARY))
    assert r.body == b""


def test_eni_listing_shows_exactly_present_keys(srv: ImdsServer, token: str) -> None:
    for mac in (PRIMARY, SECOND):
        keys = get(srv, f"{MACS}/{mac}/", token).text.split("\n")
        assert "network-card" not in keys
        assert "ipv4-prefix" not in keys
        for key in keys:
            r = get(srv, f"{MACS}/{mac}/{key}", token)
            assert r.status == 200, key
            assert r.text, key  # never an empty string


def test_mac_listing_not_in_device_order(model: World, srv: ImdsServer, token: str) -> None:
    for dev in range(2, 8):
        model.attach(new_eni(f"02:00:0a:00:02:{dev:02x}", dev, last=30 + 3 * dev))
    listed = [m.rstrip("/") for m in get(srv, MACS, token).text.split("\n")]
    assert all(line.endswith("/") for line in get(srv, MACS, token).text.split("\n"))
    by_device = sorted(model.enis, key=lambda m: model.enis[m].device_number)
    assert sorted(listed) == sorted(by_device)
    assert listed != by_device
    assert listed == [m.rstrip("/") for m in get(srv, MACS, token).text.split("\n")]  # stable


def test_default_world_mac_listing_not_in_device_order(srv: ImdsServer, token: str) -> None:
    assert get(srv, MACS, token).text == f"{SECOND}/\n{PRIMARY}/"


def test_multi_card_prefixes_and_ipv6_keys(model: World, srv: ImdsServer, token: str) -> None:
    model.multi_card = True
    mac = "02:00:0a:00:02:40"
    model.attach(new_eni(mac, dev=0, card=1))
    keys = set(get(srv, f"{MACS}/{mac}", token).text.split("\n"))
    assert {"network-card", "ipv4-prefix", "ipv6-prefix", "ipv6s"} <= keys
    assert get(srv, f"{MACS}/{mac}/network-card", token).text == "1"
    assert get(srv, f"{MACS}/{PRIMARY}/network-card", token).text == "0"
    assert get(srv, f"{MACS}/{mac}/ipv4-prefix", token).text == "10.0.2.64/28"
    assert get(srv, f"{MACS}/{mac}/ipv6-prefix", token).text == "2600:1f16:292:2:a000::/80"


def test_ipv6_only_eni_has_no_ipv4_keys(model: World, srv: ImdsServer, token: str) -> None:
    model.subnets["subnet-b"].cidr4 = None
    model.enis[SECOND].ipv4s.clear()
    keys = get(srv, f"{MACS}/{SECOND}/", token).text.split("\n")
    assert "local-ipv4s" not in keys
    assert "subnet-ipv4-cidr-block" not in keys
    assert get(srv, f"{MACS}/{SECOND}/local-ipv4s", token).status == 404
    assert get(srv, f"{MACS}/{SECOND}/subnet-ipv4-cidr-block", token).status == 404
    assert get(srv, f"{MACS}/{SECOND}/ipv6s", token).text == "2600:1f16:292:2::20"


def test_ipv4_only_eni_has_no_ipv6s(model: World, srv: ImdsServer, token: str) -> None:
    model.enis[SECOND].ipv6s.clear()
    assert "ipv6s" not in get(srv, f"{MACS}/{SECOND}/", token).text.split("\n")
    assert get(srv, f"{MACS}/{SECOND}/ipv6s", token).status == 404


def test_uncompressed_ipv6_subnet(model: World, srv: ImdsServer, token: str) -> None:
    model.compress_ipv6_subnets = False
    r = get(srv, f"{MACS}/{SECOND}/subnet-ipv6-cidr-blocks", token)
    assert r.text == "2600:1f16:292:2:0:0:0:0/64"


def test_live_assignment_is_visible(model: World, srv: ImdsServer, token: str) -> None:
    model.assign(SECOND, ipaddress.IPv4Address("10.0.2.23"))
    path = f"{MACS}/{SECOND}/local-ipv4s"
    assert get(srv, path, token).text == "10.0.2.20\n10.0.2.21\n10.0.2.22\n10.0.2.23"
    model.unassign(SECOND, ipaddress.IPv4Address("10.0.2.21"))
    assert get(srv, path, token).text == "10.0.2.20\n10.0.2.22\n10.0.2.23"


# --- propagation and detach ----------------------------------------------------------


def _wait_until(t: float) -> None:
    time.sleep(max(0.0, t - time.monotonic()))


@pytest.mark.parametrize("per_eni", [False, True])
def test_propagation_phases(model: World, srv: ImdsServer, token: str, per_eni: bool) -> None:
    delay = 0.6
    model.multi_card = True
    mac = "02:00:0a:00:02:50"
    eni = new_eni(mac, dev=2, card=1)
    if per_eni:
        eni.propagation_delay = delay
    else:
        model.propagation_delay = delay
    model.attach(eni)
    assert eni.attached_at is not None
    base = f"{MACS}/{mac}"

    # phase 1 (t < delay/3): absent
    assert f"{mac}/" not in get(srv, MACS, token).text.split("\n")
    assert get(srv, f"{base}/device-number", token).status == 404
    assert time.monotonic() - eni.attached_at < delay / 3, "phase 1 checks ran too late"

    # phase 2: listed, device-number 0, primary IPv4 only, no card/ipv6/prefixes
    _wait_until(eni.attached_at + delay / 2)
    assert f"{mac}/" in get(srv, MACS, token).text.split("\n")
    keys = set(get(srv, base, token).text.split("\n"))
    assert keys.isdisjoint({"network-card", "ipv6s", "ipv4-prefix", "ipv6-prefix"})
    assert get(srv, f"{base}/device-number", token).text == "0"
    assert get(srv, f"{base}/local-ipv4s", token).text == "10.0.2.30"
    assert get(srv, f"{base}/ipv6s", token).status == 404
    assert time.monotonic() - eni.attached_at < delay, "phase 2 checks ran too late"

    # phase 3: complete
    _wait_until(eni.attached_at + delay + 0.02)
    assert get(srv, f"{base}/device-number", token).text == "2"
    assert get(srv, f"{base}/network-card", token).text == "1"
    assert get(srv, f"{base}/local-ipv4s", token).text == "10.0.2.30\n10.0.2.31\n10.0.2.32"
    assert get(srv, f"{base}/ipv6s", token).text == "2600:1f16:292:2::30"
    assert get(srv, f"{base}/ipv4-prefix", token).status == 200


def test_propagation_phases_pure() -> None:
    world = default_world()
    world.propagation_delay = 30.0
    eni = world.attach(new_eni("02:00:0a:00:02:60", dev=2))
    assert eni.attached_at is not None
    t0 = eni.attached_at
    assert eni_phase(world, eni, t0 + 9.9) is Phase.ABSENT
    assert eni_phase(world, eni, t0 + 10.0) is Phase.PARTIAL
    assert eni_phase(world, eni, t0 + 29.9) is Phase.PARTIAL
    assert eni_phase(world, eni, t0 + 30.0) is Phase.COMPLETE
    tree = render_tree(world, t0 + 15)
    md = tree["meta-data"]
    assert isinstance(md, dict)
    assert md["mac"] == PRIMARY


def test_detached_eni_stays_listed_while_stale(model: World, srv: ImdsServer, token: str) -> None:
    model.stale_after_detach = 0.3
    model.detach(SECOND)
    assert f"{SECOND}/" in get(srv, MACS, token).text.split("\n")
    assert (
        get(srv, f"{MACS}/{SECOND}/local-ipv4s", token).text == "10.0.2.20\n10.0.2.21\n10.0.2.22"
    )
    time.sleep(0.35)
    assert get(srv, MACS, token).text == f"{PRIMARY}/"
    assert get(srv, f"{MACS}/{SECOND}/device-number", token).status == 404


def test_detach_without_stale_is_immediate(model: World, srv: ImdsServer, token: str) -> None:
    model.detach(SECOND)
    assert get(srv, MACS, token).text == f"{PRIMARY}/"


# --- faults --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "status"),
    [
        ("error_503_remaining", 503),
        ("throttle_429_remaining", 429),
    ],
)
def test_error_bursts(model: World, srv: ImdsServer, token: str, field: str, status: int) -> None:
    setattr(model.faults, field, 2)
    assert_error_page(get(srv, f"{MD}/mac", token), status)
    assert_error_page(call(srv, "PUT", "/latest/api/token", {TTL: "60"}), status)
    assert get(srv, f"{MD}/mac", token).status == 200
    assert getattr(model.faults, field) == 0


def test_latency(model: World, srv: ImdsServer, token: str) -> None:
    model.faults.latency = 0.2
    t = time.monotonic()
    assert get(srv, f"{MD}/mac", token).status == 200
    assert time.monotonic() - t >= 0.2


def test_reset_is_a_connection_error(model: World, srv: ImdsServer, token: str) -> None:
    model.faults.reset_remaining = 1
    with pytest.raises(ConnectionResetError) as excinfo:
        get(srv, f"{MD}/mac", token)
    # a real RST (ECONNRESET), not an orderly close that http.client also calls a reset
    assert not isinstance(excinfo.value, http.client.RemoteDisconnected)
    assert excinfo.value.errno == errno.ECONNRESET
    assert model.faults.reset_remaining == 0
    assert get(srv, f"{MD}/mac", token).status == 200
    assert srv.log.count(status=0) == 1


def test_blackhole_times_out_client(model: World, srv: ImdsServer, token: str) -> None:
    model.faults.blackhole = True
    t = time.monotonic()
    with pytest.raises(socket.timeout):
        call(srv, "GET", f"{MD}/mac", {TOK: token}, timeout=0.3)
    assert time.monotonic() - t < 1.0
    model.faults.blackhole = False
    assert get(srv, f"{MD}/mac", token).status == 200


def test_stop_is_bounded_with_blackholed_and_silent_clients(model: World) -> None:
    server = ImdsServer.listen(model, "127.0.0.1", 0)
    model.faults.blackhole = True
    errors: list[BaseException] = []

    def client() -> None:
        try:
            call(server, "GET", f"{MD}/mac", timeout=5.0)
        except (OSError, http.client.HTTPException) as exc:
            errors.append(exc)

    threads = [threading.Thread(target=client) for _ in range(3)]
    for th in threads:
        th.start()
    silent = socket.create_connection((server.host, server.port))  # never sends a request
    time.sleep(0.15)
    t = time.monotonic()
    server.stop()
    assert time.monotonic() - t < 1.0
    for th in threads:
        th.join(2.0)
    silent.close()
    assert len(errors) == 3  # each client saw its connection end without an answer
    with pytest.raises(OSError):
        socket.create_connection((server.host, server.port), timeout=0.5)


def test_hop_limit_exceeded(model: World, srv: ImdsServer, token: str) -> None:
    model.faults.hop_limit_exceeded = True
    with pytest.raises(socket.timeout):
        call(srv, "PUT", "/latest/api/token", {TTL: "60"}, timeout=0.3)
    assert_error_page(get(srv, f"{MD}/mac", None), 401)
    assert get(srv, f"{MD}/mac", token).status == 200  # a token obtained earlier still works


# --- request log ---------------------------------------------------------------------


def test_request_log_counts(model: World, srv: ImdsServer) -> None:
    srv.log.reset()
    tok = get_token(srv)
    get(srv, f"{MD}/mac", tok)
    get(srv, f"{MD}/mac", tok)
    get(srv, f"{MACS}/", tok)
    get(srv, f"{MD}/nope", tok)
    get(srv, f"{MD}/mac", None)
    log = srv.log
    assert log.count() == 6
    assert log.count(method="PUT") == 1
    assert log.count(method="GET") == 5
    assert log.count(path_prefix=MD) == 5
    assert log.count(path_prefix=MACS) == 1
    assert log.count(status=404) == 1
    assert log.count(status=401) == 1
    assert log.by_method() == {"PUT": 1, "GET": 5}
    assert log.by_path() == {
        "/latest/api/token": 1,
        f"{MD}/mac": 3,
        f"{MACS}/": 1,
        f"{MD}/nope": 1,
    }
    entries = log.entries()
    assert [e.status for e in entries] == [200, 200, 200, 200, 404, 401]
    assert all(a.time <= b.time for a, b in zip(entries, entries[1:]))
    log.reset()
    assert log.count() == 0
    assert log.entries() == []


# --- sockets and CLI -----------------------------------------------------------------


def test_server_on_caller_socket(model: World) -> None:
    sock = _listening_socket()
    server = ImdsServer(model, sock)
    server.start()
    try:
        assert server.url == f"http://127.0.0.1:{sock.getsockname()[1]}"
        assert call(server, "PUT", "/latest/api/token", {TTL: "5"}).status == 200
    finally:
        server.stop()
    assert sock.fileno() == -1  # stop() closed it


def test_ipv6_listener(model: World) -> None:
    if not socket.has_ipv6:
        pytest.skip("no IPv6")
    try:
        server = ImdsServer.listen(model, "::1", 0)
    except OSError:
        pytest.skip("no IPv6 loopback")
    try:
        assert server.url == f"http://[::1]:{server.port}"
        assert get(server, f"{MD}/mac", get_token(server)).text == PRIMARY
    finally:
        server.stop()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1:0", ("127.0.0.1", 0)),
        ("169.254.169.254:80", ("169.254.169.254", 80)),
        ("[::1]:8080", ("::1", 8080)),
        ("[fd00:ec2::254]:80", ("fd00:ec2::254", 80)),
        ("::1:80", None),
        ("localhost", None),
        ("1.2.3.4:70000", None),
    ],
)
def test_parse_listen(text: str, expected: Optional[tuple[str, int]]) -> None:
    if expected is None:
        with pytest.raises(argparse.ArgumentTypeError):
            parse_listen(text)
    else:
        assert parse_listen(text) == expected


def test_cli_serves_world_file_until_sigterm(tmp_path: Path) -> None:
    world = default_world()
    world.instance_id = "i-0fedcba9876543210"
    wfile = tmp_path / "world.json"
    wfile.write_text(json.dumps(world.to_json()))
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "ec2sim.imds",
            "--listen",
            "127.0.0.1:0",
            "--world",
            str(wfile),
            "--imdsv1-optional",
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        m = re.fullmatch(r"http://127\.0\.0\.1:(\d+)", url)
        assert m, url
        conn = http.client.HTTPConnection("127.0.0.1", int(m.group(1)), timeout=2)
        conn.request("GET", f"{MD}/instance-id")  # no token: v1 allowed by the flag
        r = conn.getresponse()
        assert (r.status, r.read()) == (200, b"i-0fedcba9876543210")
        conn.close()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=5) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


def test_shared_token_store_across_endpoints(model: World, srv: ImdsServer) -> None:
    other = ImdsServer.listen(model, "127.0.0.1", 0, start=False)
    other.start()
    shared = ImdsServer(model, _listening_socket(), tokens=srv.tokens)
    shared.start()
    try:
        tok = get_token(srv)
        assert get(shared, f"{MD}/mac", tok).status == 200  # same instance, same tokens
        assert get(other, f"{MD}/mac", tok).status == 401  # a separate service
        assert shared.log.count() == 1
        assert srv.log.count() == 1
    finally:
        shared.stop()
        other.stop()


def _listening_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    return sock
