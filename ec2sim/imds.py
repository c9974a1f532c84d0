"""IMDS simulator: the EC2 instance metadata service over real HTTP, for tests.

Follows docs/imds.md (IMDSv2 tokens, status codes, headers, list format) and renders
the shared `World` through `ec2sim.imds_tree`, so attach/detach/assign done by the
fabric or a test show up with EC2-like propagation. `World.faults` is read on every
request, so tests can flip faults while a client is running.

The server takes an already listening socket because the fabric creates it inside a
network namespace (169.254.169.254:80); `ImdsServer.listen()` binds one itself.
"""

from __future__ import annotations

import argparse
import contextlib
import email.utils
import logging
import re
import selectors
import signal
import socket
import struct
import sys
import threading
import time
from email.message import Message
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any, Optional

from ec2sim import imds_tree
from ec2sim.imds_state import (
    NO_ANSWER,
    REASONS,
    Injected,
    LogEntry,
    RequestLog,
    TokenStore,
    error_page,
)
from ec2sim.world import World, default_world

TOKEN_PATH = "/latest/api/token"  # noqa: S105 - a URL path, not a secret
TTL_HEADER = "X-aws-ec2-metadata-token-ttl-seconds"
TOKEN_HEADER = "X-aws-ec2-metadata-token"  # noqa: S105
MAX_TTL = 21600
_VERSIONED_TOKEN = re.compile(r"^/[^/]+/api/token$")
_log = logging.getLogger(__name__)

__all__ = [
    "NO_ANSWER",
    "ImdsServer",
    "Injected",
    "LogEntry",
    "RequestLog",
    "TokenStore",
    "error_page",
    "main_imds",
    "parse_listen",
]


# --- HTTP --------------------------------------------------------------------------


class _Answer:
    """What a request gets: an HTTP response, or a transport-level non-answer."""

    def __init__(
        self,
        status: int,
        body: bytes = b"",
        content_type: str = "text/plain",
        headers: Optional[dict[str, str]] = None,
    ) -> None:
        self.status = status
        self.body = body
        self.content_type = content_type
        self.headers = headers or {}

    @classmethod
    def error(cls, status: int, headers: Optional[dict[str, str]] = None) -> _Answer:
        return cls(status, error_page(status), "text/html", headers)


class _Handler(BaseHTTPRequestHandler):
    server: _HttpServer
    protocol_version = "HTTP/1.1"  # real IMDS answers HTTP/1.1 with Connection: close
    timeout = 10.0  # a client that connects and stays silent must not pin a thread

    def version_string(self) -> str:
        return "EC2ws"

    def log_message(self, format: str, *args: Any) -> None:
        pass  # the RequestLog is the record; stderr noise would clutter test output

    def do_GET(self) -> None:
        self._dispatch()

    do_HEAD = do_PUT = do_POST = do_DELETE = do_PATCH = do_OPTIONS = do_GET

    def _dispatch(self) -> None:
        self.close_connection = True
        self._drain_body()
        imds = self.server.imds
        path = self.path.split("?", 1)[0]
        world = imds.world
        with world.lock:
            faults = world.faults
            reset = faults.reset_remaining > 0
            if reset:
                faults.reset_remaining -= 1
            blackhole = faults.blackhole
            latency = faults.latency
        if imds.injected.down:
            reset = True
        if reset:
            imds.log.record(self.command, path, NO_ANSWER)
            self._reset()
            return
        if blackhole:
            imds.log.record(self.command, path, NO_ANSWER)
            imds.stopping.wait()
            return
        if latency > 0 and imds.stopping.wait(latency):
            imds.log.record(self.command, path, NO_ANSWER)
            return
        for trigger in list(imds.injected.triggers):
            trigger.maybe_fire(path)
        answer = imds.answer(self.command, path, self.headers)
        if answer is None:  # e.g. token PUT beyond the hop limit: silence until stop
            imds.log.record(self.command, path, NO_ANSWER)
            imds.stopping.wait()
            return
        imds.log.record(self.command, path, answer.status)
        self._send(answer)

    def _drain_body(self) -> None:
        # Unread request bytes make close() send RST instead of FIN; read them first.
        try:
            length = int(self.headers.get("Content-Length", "0"))
        except ValueError:
            length = 0
        if 0 < length <= 65536:
            self.rfile.read(length)

    def _reset(self) -> None:
        # SO_LINGER 0 turns close() into a TCP RST: the client sees a connection reset.
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.connection.close()

    def _send(self, answer: _Answer) -> None:
        self.send_response(answer.status, REASONS.get(answer.status))
        self.send_header("Content-Type", answer.content_type)
        self.send_header("Accept-Ranges", "none")
        self.send_header("Last-Modified", self.server.imds.last_modified)
        self.send_header("Content-Length", str(len(answer.body)))
        for name, value in answer.headers.items():
            self.send_header(name, value)
        self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(answer.body)


class _HttpServer(HTTPServer):
    """HTTPServer around a socket made elsewhere, one tracked thread per connection."""

    def __init__(self, sock: socket.socket, imds: ImdsServer) -> None:
        self.address_family = sock.family
        super().__init__(sock.getsockname()[:2], _Handler, bind_and_activate=False)
        self.socket.close()  # the unbound one TCPServer made; use the caller's
        self.socket = sock
        self.imds = imds
        self._conn_lock = threading.Lock()
        self._conns: dict[threading.Thread, socket.socket] = {}
        self._wake_r, self._wake_w = socket.socketpair()

    def process_request(self, request: Any, client_address: Any) -> None:
        thread = threading.Thread(
            target=self._serve_one, args=(request, client_address), daemon=True
        )
        with self._conn_lock:
            self._conns[thread] = request
        thread.start()

    def _serve_one(self, request: socket.socket, client_address: Any) -> None:
        try:
            self.finish_request(request, client_address)
        except Exception:  # a broken client must not kill the server
            _log.debug("connection from %s failed", client_address, exc_info=True)
        finally:
            self.shutdown_request(request)
            with self._conn_lock:
                self._conns.pop(threading.current_thread(), None)

    def serve_until_stopped(self) -> None:
        """Accept loop; `wake()` ends it at once (serve_forever would poll instead)."""
        self.socket.setblocking(False)  # a connection reset before accept must not hang us
        with selectors.DefaultSelector() as sel:
            sel.register(self.socket, selectors.EVENT_READ)
            sel.register(self._wake_r, selectors.EVENT_READ)
            while not self.imds.stopping.is_set():
                for key, _ in sel.select():
                    if key.fileobj is self._wake_r:
                        return
                    try:
                        request, client_address = self.get_request()
                    except OSError:
                        continue
                    request.settimeout(_Handler.timeout)
                    self.process_request(request, client_address)

    def wake(self) -> None:
        with contextlib.suppress(OSError):
            self._wake_w.send(b"x")

    def server_close(self) -> None:
        super().server_close()
        self._wake_r.close()
        self._wake_w.close()

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # clients that vanish mid-request are normal in fault tests

    def abort_connections(self, timeout: float) -> None:
        """Wake handlers blocked on reads, then join them within `timeout` seconds."""
        with self._conn_lock:
            conns = dict(self._conns)
        for sock in conns.values():
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        deadline = time.monotonic() + timeout
        for thread in conns:
            thread.join(max(0.0, deadline - time.monotonic()))


class ImdsServer:
    """The IMDS simulator. `start()` serves in a daemon thread; `stop()` is bounded."""

    def __init__(
        self,
        world: World,
        sock: socket.socket,
        *,
        tokens: Optional[TokenStore] = None,
        log: Optional[RequestLog] = None,
        injected: Optional[Injected] = None,
    ) -> None:
        """Serve `world` on `sock` (bound and listening; set non-blocking here).

        Pass another server's `tokens` so the IPv4 and IPv6 endpoints of one instance
        accept each other's tokens, as the one real service does; `log` likewise.
        `injected` holds this endpoint's own faults (replaceable at run time).
        """
        self.world = world
        self.injected = injected if injected is not None else Injected()
        self.log = log if log is not None else RequestLog()
        self.tokens = tokens if tokens is not None else TokenStore()
        self.stopping = threading.Event()
        # Real IMDS sends a fixed Last-Modified; server creation time stands in for boot.
        self.last_modified = email.utils.formatdate(usegmt=True)
        # Cached: the address must stay readable after stop() closed the socket.
        self._family = sock.family
        addr = sock.getsockname()
        self._host: str = addr[0]
        self._port: int = addr[1]
        self._httpd = _HttpServer(sock, self)
        self._thread: Optional[threading.Thread] = None

    @classmethod
    def listen(cls, world: World, host: str, port: int, start: bool = True) -> ImdsServer:
        """Bind `host:port` (port 0 picks a free one, see `.port`) and, by default, start."""
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host, port))
            sock.listen(128)
        except OSError:
            sock.close()
            raise
        server = cls(world, sock)
        if start:
            server.start()
        return server

    @property
    def host(self) -> str:
        return self._host

    @property
    def port(self) -> int:
        return self._port

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if self._family == socket.AF_INET6 else self.host
        return f"http://{host}" if self.port == 80 else f"http://{host}:{self.port}"

    def start(self) -> None:
        if self._thread is not None:
            return
        self._thread = threading.Thread(
            target=self._httpd.serve_until_stopped, name="imds-accept", daemon=True
        )
        self._thread.start()

    def stop(self, timeout: float = 2.0) -> None:
        """Stop accepting, release blackholed/slow handlers, close the socket."""
        self.stopping.set()
        if self._thread is not None:
            self._httpd.wake()
            self._thread.join(timeout)
        self._httpd.abort_connections(timeout)
        self._httpd.server_close()

    def revoke_tokens(self) -> None:
        """Invalidate every issued token (as after an instance stop/start)."""
        self.tokens.revoke_all()

    def __enter__(self) -> ImdsServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: Optional[type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        self.stop()

    # --- protocol (pure decisions; the handler does the I/O) ----------------------

    def answer(self, method: str, path: str, headers: Message[str, str]) -> Optional[_Answer]:
        """The response for one request, or None for "never answer"."""
        world = self.world
        with world.lock:
            faults = world.faults
            if faults.error_503_remaining > 0:
                faults.error_503_remaining -= 1
                return _Answer.error(503)
            if faults.throttle_429_remaining > 0:
                faults.throttle_429_remaining -= 1
                return _Answer.error(429)
            disabled = faults.disabled
            hop_limit = faults.hop_limit_exceeded
            v2_required = world.imdsv2_required
        if disabled:
            return _Answer.error(403)
        if path == TOKEN_PATH:
            if method != "PUT":
                return _Answer.error(405, {"Allow": "PUT"})
            if hop_limit:
                return None  # the answer's IP TTL runs out before reaching the client
            return self._issue_token(headers)
        if method == "PUT" and _VERSIONED_TOKEN.match(path):
            return _Answer.error(403)
        if method not in ("GET", "HEAD"):
            return _Answer.error(405, {"Allow": "GET, HEAD"})

        token = headers.get(TOKEN_HEADER)
        extra: dict[str, str] = {}
        injected = self.injected
        if token is not None:
            # A token header means IMDSv2, even where v1 would be accepted.
            left = self.tokens.seconds_left(token)
            if left is None or not self.tokens.spend(token, injected.token_uses):
                return _Answer.error(401)
            extra[TTL_HEADER] = str(left)
        elif v2_required:
            return _Answer.error(401)
        forced = injected.body_for(path)
        if forced is not None:
            return _Answer(200, forced, "text/plain", extra)
        body = self._read(path)
        if body is None:
            return _Answer.error(404, extra)
        return _Answer(200, body.encode(), "text/plain", extra)

    def _issue_token(self, headers: Message[str, str]) -> _Answer:
        if headers.get("X-Forwarded-For") is not None:
            return _Answer.error(403)  # tokens are not handed out through proxies
        raw = headers.get(TTL_HEADER)
        text = raw.strip() if isinstance(raw, str) else ""
        if not text.isdigit() or not 1 <= int(text) <= MAX_TTL:
            return _Answer.error(400)
        ttl = int(text)
        return _Answer(200, self.tokens.issue(ttl).encode(), "text/plain", {TTL_HEADER: str(ttl)})

    def _read(self, path: str) -> Optional[str]:
        """Body for a GET of `path`, or None for 404."""
        if path == "/":
            return "\n".join(imds_tree.VERSIONS)
        if not path.startswith("/"):
            return None
        parts = path[1:].split("/")
        version, rest = parts[0], parts[1:]
        if version not in imds_tree.VERSIONS:
            return None
        if rest and rest[-1] == "":
            rest = rest[:-1]  # trailing slash: only valid on directories (checked below)
            want_dir = True
        else:
            want_dir = False
        if "" in rest:
            return None
        node = imds_tree.lookup(imds_tree.render_tree(self.world, time.monotonic()), rest)
        if node is None:
            return None
        if isinstance(node, dict):
            # Version roots list their children without slashes, as real IMDS does.
            return imds_tree.listing(node, slash_dirs=bool(rest))
        return None if want_dir else node


# --- standalone CLI ----------------------------------------------------------------


def parse_listen(text: str) -> tuple[str, int]:
    """`HOST:PORT` or `[V6]:PORT` -> (host, port)."""
    m = re.fullmatch(r"\[([^\]]+)\]:(\d+)|([^:\[\]]+):(\d+)", text)
    if m is None:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT or [IPV6]:PORT, got {text!r}")
    host = m.group(1) or m.group(3)
    port = int(m.group(2) or m.group(4))
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"port out of range: {port}")
    return host, port


def main_imds(argv: list[str]) -> int:
    """`ec2sim imds`: serve a world's metadata until SIGINT/SIGTERM."""
    parser = argparse.ArgumentParser(
        prog="python3 -m ec2sim imds", description="EC2 instance metadata service simulator"
    )
    parser.add_argument(
        "--listen",
        type=parse_listen,
        default=("127.0.0.1", 1338),
        metavar="HOST:PORT",
        help="address to serve on; IPv6 as [::1]:PORT (default 127.0.0.1:1338)",
    )
    parser.add_argument(
        "--world", type=Path, metavar="FILE", help="world JSON file (default: built-in world)"
    )
    parser.add_argument(
        "--imdsv1-optional", action="store_true", help="also answer GETs without a token"
    )
    args = parser.parse_args(argv)
    try:
        world = World.load(args.world) if args.world else default_world()
    except (OSError, ValueError, KeyError) as exc:
        print(f"ec2sim imds: cannot load world {args.world}: {exc!r}", file=sys.stderr)
        return 2
    if args.imdsv1_optional:
        world.imdsv2_required = False
    host, port = args.listen
    try:
        server = ImdsServer.listen(world, host, port)
    except OSError as exc:
        print(f"ec2sim imds: cannot listen on {host}:{port}: {exc}", file=sys.stderr)
        return 1
    done = threading.Event()

    def on_signal(signum: int, frame: Optional[FrameType]) -> None:
        done.set()

    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    for sig in previous:
        signal.signal(sig, on_signal)
    try:
        print(server.url, flush=True)
        while not done.wait(0.5):
            pass
    finally:
        server.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0


if __name__ == "__main__":
    sys.exit(main_imds(sys.argv[1:]))
