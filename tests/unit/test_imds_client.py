"""The IMDS client against the simulator over loopback HTTP: tokens, retries,
classification, request counts, propagation."""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import json
import os
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer, ThreadingHTTPServer
from pathlib import Path
from typing import Callable

import pytest

from ec2net import cancel, metadata
from ec2net import imds as imds_mod
from ec2net.config import Settings
from ec2net.errors import ImdsAbsent, ImdsFatal, ImdsNotYet, ImdsTransient, MetadataError
from ec2net.imds import MAX_BODY, ImdsClient, decode_body
from ec2net.metadata import fetch_dynamic, fetch_eni, wait_for_eni
from ec2sim.imds import ImdsServer
from ec2sim.world import World

SECOND = "02:00:0a:00:02:14"
PRIMARY = "02:00:0a:00:01:0a"


def client(srv: ImdsServer, **kw: object) -> ImdsClient:
    opts: dict[str, object] = {"timeout": 0.5, "retries": 3}
    opts.update(kw)
    return ImdsClient((srv.url,), **opts)  # type: ignore[arg-type]


def test_one_token_for_many_reads(server: ImdsServer) -> None:
    c = client(server)
    assert c.get("mac") == PRIMARY
    assert c.get("instance-id").startswith("i-")
    assert f"{PRIMARY}/" in c.get("network/interfaces/macs/").split("\n")
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


def test_fetch_dynamic_reads_changeable_keys_or_the_listing(server: ImdsServer) -> None:
    c = client(server)
    eni = fetch_eni(c, SECOND, PRIMARY)
    server.log.reset()
    again = fetch_dynamic(c, eni)
    assert again == eni
    assert server.log.count() == 2  # local-ipv4s, ipv6s
    server.log.reset()
    assert fetch_dynamic(c, eni, listing=True) == eni
    assert server.log.count() == 1  # the listing alone (tests/unit/test_imds_economy.py)


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


# --- bodies that cannot be text ------------------------------------------------------


class _Fixed(BaseHTTPRequestHandler):
    body = b""

    def do_PUT(self) -> None:
        self._answer(b"token")

    def do_GET(self) -> None:
        self._answer(self.body)

    def _answer(self, body: bytes, status: int = 200) -> None:
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # a client gave up
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@contextlib.contextmanager
def serving(body: bytes) -> Iterator[str]:
    handler = type("H", (_Fixed,), {"body": body})
    httpd = HTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"10.0.2.20\n10.0.2.\xff1", "not UTF-8"),
        (b"\xc3(", "not UTF-8"),
        (b"10.0.2.20\x00", "NUL"),
        pytest.param(b"1" * (MAX_BODY + 1), "longer than", id="oversized"),
    ],
)
def test_bytes_that_are_not_text_name_the_key(body: bytes, reason: str) -> None:
    key = f"network/interfaces/macs/{SECOND}/local-ipv4s"
    with serving(body) as url:
        c = ImdsClient((url,), timeout=2, retries=0)
        with pytest.raises(MetadataError, match=reason) as err:
            c.get(key)
    assert err.value.key == key


def test_decode_body_never_replaces_silently() -> None:
    assert decode_body("mac", "02:00:0a:00:02:14\u00e9".encode()) == "02:00:0a:00:02:14\u00e9"
    with pytest.raises(MetadataError) as err:
        decode_body("mac", b"02:00:0a:00:02:1\xe4")
    assert err.value.key == "mac"
    assert "byte 16" in str(err.value)


# --- the endpoint that answered is remembered ----------------------------------------


def dead_url() -> str:
    with socket.socket() as s:  # a port nobody listens on: refused at once
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


def test_answering_endpoint_is_remembered_for_the_next_process(
    server: ImdsServer, tmp_path: Path
) -> None:
    dead = dead_url()
    cache = tmp_path / "imds-token"
    remembered = tmp_path / "imds-endpoint"
    first = ImdsClient((dead, server.url), timeout=0.5, retries=0, endpoint_cache=remembered)
    first.get("mac")
    assert first.stats.total == 3  # PUT to the dead endpoint, then PUT and GET to the live one
    assert json.loads(remembered.read_text()) == {"endpoint": server.url}
    assert remembered.stat().st_mode & 0o777 == 0o600
    # a new client (another process) starts with the endpoint that answered
    second = ImdsClient(
        (dead, server.url),
        timeout=0.5,
        retries=0,
        token_cache=cache,
        endpoint_cache=remembered,
    )
    assert second.preferred == server.url
    second.get("mac")
    second.get("instance-id")
    assert second.stats.total == 3  # PUT, GET, GET: nothing sent to the dead endpoint
    # the memory follows the endpoint that works
    third = ImdsClient((server.url, dead), timeout=0.5, retries=0, endpoint_cache=remembered)
    assert third.preferred == server.url


def test_remembered_endpoint_not_configured_is_ignored(server: ImdsServer, tmp_path: Path) -> None:
    remembered = tmp_path / "imds-endpoint"
    remembered.write_text(json.dumps({"endpoint": "http://192.0.2.1"}))
    c = ImdsClient((server.url,), endpoint_cache=remembered)
    assert c.preferred == server.url
    remembered.write_text("not json")
    assert ImdsClient((server.url,), endpoint_cache=remembered).preferred == server.url


def test_from_settings_keeps_the_endpoint_beside_the_token(tmp_path: Path) -> None:
    settings = Settings(imds_endpoints=("http://[fd00:ec2::254]", "http://169.254.169.254"))
    (tmp_path / "imds-endpoint").write_text(json.dumps({"endpoint": "http://169.254.169.254"}))
    c = ImdsClient.from_settings(settings, tmp_path / "imds-token")
    assert c.preferred == "http://169.254.169.254"


# --- waits: cancellable, and bounded in all ------------------------------------------


@pytest.fixture
def stop_after() -> Iterator[Callable[[float], None]]:
    timers: list[threading.Timer] = []

    def arm(seconds: float) -> None:
        timer = threading.Timer(seconds, cancel.cancel)
        timers.append(timer)
        timer.start()

    yield arm
    for timer in timers:
        timer.cancel()
    cancel.reset()


def test_propagation_poll_is_cancelled_at_once(
    server: ImdsServer, world: World, stop_after: Callable[[float], None]
) -> None:
    world.enis[SECOND].propagation_delay = 600
    world.attach(world.enis[SECOND])
    stop_after(0.3)
    with pytest.raises(cancel.Cancelled):
        wait_for_eni(client(server), SECOND, PRIMARY, timeout=600)


def test_retry_backoff_is_cancelled(
    server: ImdsServer, world: World, stop_after: Callable[[float], None]
) -> None:
    world.faults.error_503_remaining = 10**6
    stop_after(0.3)
    with pytest.raises(cancel.Cancelled):
        client(server, retries=10**6).get("mac")
    assert server.log.count() < 10**6


def test_wait_for_eni_includes_the_request_time(server: ImdsServer, world: World) -> None:
    """A request that would take 30 s ends with the 0.5 s propagation budget."""
    world.faults.blackhole = True
    c = client(server, timeout=30, retries=3)
    start = time.monotonic()
    with pytest.raises(ImdsTransient):
        wait_for_eni(c, SECOND, PRIMARY, timeout=0.5)
    assert time.monotonic() - start < 10  # not the 30 s of one request
    # outside the budget the client is back to its own timeout
    assert c._remaining() is None


def test_budget_stops_retries_that_would_start_after_it(server: ImdsServer, world: World) -> None:
    world.faults.error_503_remaining = 1000
    slept: list[float] = []
    c = client(server, retries=50, sleep=slept.append)
    with c.budget(0.0), pytest.raises(ImdsTransient):
        c.get("mac")
    assert slept == []  # no backoff sleep beyond the budget
    assert server.log.count() == 0  # out of time before the first request


# --- locked-down IMDS ------------------------------------------------------------------


def test_fwmark_is_set_before_connect(server: ImdsServer) -> None:
    conn = imds_mod._Connection(server.host, server.port, 2.0, 0x7FFF0815)
    try:
        if os.geteuid() == 0:
            conn.connect()
            assert conn.sock.getsockopt(socket.SOL_SOCKET, imds_mod.SO_MARK) == 0x7FFF0815
        else:  # without CAP_NET_ADMIN the mark is refused, naming the setting
            with pytest.raises(ImdsFatal, match=r"imds\.fwmark"):
                conn.connect()
    finally:
        conn.close()


class _Prohibited:
    def __init__(self, code: int) -> None:
        self.code = code

    def request(self, *args: object, **kw: object) -> None:
        raise OSError(self.code, os.strerror(self.code))

    def close(self) -> None:
        pass


def test_prohibited_route_is_fatal_and_names_fwmark(monkeypatch: pytest.MonkeyPatch) -> None:
    c = ImdsClient(("http://169.254.169.254", "http://[fd00:ec2::254]"), retries=3)
    monkeypatch.setattr(c, "_connection", lambda ep, t: _Prohibited(errno.EACCES))
    with pytest.raises(ImdsFatal, match=r"imds\.fwmark") as err:
        c.get("mac")
    assert "169.254.169.254" in str(err.value) and "fd00:ec2::254" in str(err.value)
    assert c.stats.total == 2  # fatal: no retries


def test_unreachable_stays_transient(monkeypatch: pytest.MonkeyPatch) -> None:
    c = ImdsClient(("http://169.254.169.254",), retries=1, sleep=lambda s: None)
    monkeypatch.setattr(c, "_connection", lambda ep, t: _Prohibited(errno.ENETUNREACH))
    with pytest.raises(ImdsTransient):
        c.get("mac")
    assert c.stats.total == 2


def test_a_refused_token_is_dropped_only_if_nobody_replaced_it(tmp_path: Path) -> None:
    """Parallel reads after an IMDS restart all get 401 with the old token; the first
    fetches a new one, and the others must not throw that new one away."""
    cache = tmp_path / "imds-token"
    client = ImdsClient(("http://127.0.0.1:9",), token_cache=cache)
    new = imds_mod._Token("new-token", time.time() + 3600)
    client._token = new
    client._write_cached_token(new)
    client._drop_token("old-token")  # a late 401 for the token already replaced
    assert client._token is new and cache.exists()
    client._drop_token("new-token")
    assert client._token is None and not cache.exists()


# --- several keys at once ------------------------------------------------------------


class _Gathering(_Fixed):
    """Answers a GET only once `meet` requests are in flight together (else 500)."""

    meet: threading.Barrier
    hold = 0.0  # seconds each GET takes
    gets: list[str]

    def do_GET(self) -> None:
        self.gets.append(self.path)
        try:
            self.meet.wait()
        except threading.BrokenBarrierError:
            self._answer(b"alone", 500)
            return
        time.sleep(self.hold)
        self._answer(self.path.encode(), 404 if self.path.endswith("/absent") else 200)


@contextlib.contextmanager
def gathering(meet: int, hold: float = 0.0) -> Iterator[tuple[str, list[str]]]:
    gets: list[str] = []
    attrs = {"meet": threading.Barrier(meet, timeout=5), "hold": hold, "gets": gets}
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), type("H", (_Gathering,), attrs))
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", gets
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_get_many_has_the_requests_in_flight_together() -> None:
    paths = [f"network/interfaces/macs/{SECOND}/{k}" for k in ("a", "b", "absent", "c")]
    # One after another, the first GET would wait alone and be answered 500.
    with gathering(len(paths)) as (url, gets):
        answers = ImdsClient((url,), timeout=10, retries=0).get_many(paths)
    assert sorted(gets) == sorted(f"/latest/meta-data/{p}" for p in paths)
    assert answers[:2] == [f"/latest/meta-data/{p}" for p in paths[:2]]
    assert isinstance(answers[2], ImdsAbsent)  # each path's own outcome, in order
    assert answers[3] == f"/latest/meta-data/{paths[3]}"


def test_get_many_keeps_to_the_callers_budget() -> None:
    # Each GET takes 1 s; the client's own timeout would wait 10 s for it.
    with gathering(2, hold=1.0) as (url, gets):
        c = ImdsClient((url,), timeout=10, retries=3)
        with c.budget(0.3):
            answers = c.get_many(["mac", "instance-id"])
    assert [type(a) for a in answers] == [ImdsTransient, ImdsTransient]
    assert len(gets) == 2  # and no retry past the budget


class _Keyed(ImdsClient):
    """Each key's answer from a table: a text, or the error to raise."""

    def __init__(self, answers: dict[str, object]) -> None:
        super().__init__(("http://127.0.0.1:9",))
        self.answers = answers

    def get(self, path: str) -> str:
        answer = self.answers[path.rsplit("/", 1)[1]]
        if isinstance(answer, Exception):
            raise answer
        return str(answer)


@pytest.mark.parametrize(
    ("answers", "raised"),
    [
        ({"device-number": ImdsTransient("503"), "subnet-id": ImdsAbsent("404")}, ImdsTransient),
        ({"device-number": "1", "subnet-id": ImdsAbsent("404")}, ImdsNotYet),
    ],
)
def test_the_first_keys_error_counts_as_in_a_sequence(
    answers: dict[str, object], raised: type[Exception]
) -> None:
    keys = ("device-number", "subnet-id", "local-ipv4s")
    c = _Keyed({"local-ipv4s": ImdsTransient("timed out"), **answers})
    with pytest.raises(raised):
        metadata._read_keys(c, SECOND, keys)


def test_get_many_reads_from_threads_the_caller_started(server: ImdsServer) -> None:
    """A thread is in the network namespace of the thread that started it: the reads of
    a caller inside an instance's namespace must come from threads it started, never
    from a pool an earlier caller (another namespace's) left behind. None outlive the
    read either."""
    started_by: set[int] = set()
    real_start = threading.Thread.start

    def start(thread: threading.Thread) -> None:
        if thread.name.startswith("ec2net-imds"):
            started_by.add(threading.get_ident())
        real_start(thread)

    c = client(server)
    with contextlib.ExitStack() as stack:
        mp = stack.enter_context(pytest.MonkeyPatch.context())
        mp.setattr(threading.Thread, "start", start)
        callers = [threading.Thread(target=c.get_many, args=(["mac", "instance-id"],))]
        for t in callers:
            real_start(t)
            t.join()
        c.get_many(["mac", "instance-id"])
    assert started_by == {callers[0].ident, threading.get_ident()}
    assert not [t for t in threading.enumerate() if t.name.startswith("ec2net-imds")]
