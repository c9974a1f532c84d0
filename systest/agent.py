"""Host side of the guest agent (see agent_guest.py for the protocol).

One connection to QEMU's chardev socket; a reader thread routes replies to waiters by
request id, so several requests may be in flight (e.g. a ``wait_link`` started before a
hot-plug while the test goes on).
"""

from __future__ import annotations

import base64
import contextlib
import itertools
import json
import select
import socket
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Optional, Union

from systest.unixsock import connect_unix

# A send that cannot finish in this long means the guest has not read its port for that
# long (QEMU stops reading the socket while the guest end is closed and its buffer full).
SEND_TIMEOUT = 60.0


class AgentError(RuntimeError):
    """The agent could not be reached or answered with an error."""


class SendBlocked(AgentError):
    """The socket took no more bytes within the send timeout."""

    def __init__(self, message: str, partial: bool) -> None:
        super().__init__(message)
        self.partial = partial  # part of a line went out: the stream is torn


class CommandFailed(AgentError):
    def __init__(self, result: Result) -> None:
        super().__init__(
            f"{result.argv!r} exited {result.rc}"
            + (" (timed out)" if result.timed_out else "")
            + f"\nstdout: {result.stdout[-2000:]}\nstderr: {result.stderr[-2000:]}"
        )
        self.result = result


@dataclass(frozen=True)
class Result:
    argv: tuple[str, ...]
    rc: int
    stdout: str
    stderr: str
    timed_out: bool
    duration: float  # seconds, measured in the guest

    @property
    def ok(self) -> bool:
        return self.rc == 0 and not self.timed_out

    def check(self) -> Result:
        if not self.ok:
            raise CommandFailed(self)
        return self


class Pending:
    """A request in flight; ``result()`` waits for the reply."""

    def __init__(self, req_id: int, op: str) -> None:
        self.req_id = req_id
        self.op = op
        self.sent_at = time.monotonic()
        self.received_at: Optional[float] = None
        self._event = threading.Event()
        self._reply: Optional[dict[str, Any]] = None
        self._failure: Optional[str] = None

    def _set(self, reply: Optional[dict[str, Any]], failure: Optional[str] = None) -> None:
        self.received_at = time.monotonic()
        self._reply = reply
        self._failure = failure
        self._event.set()

    def result(self, timeout: float) -> dict[str, Any]:
        if not self._event.wait(timeout):
            raise AgentError(f"no reply to {self.op} request {self.req_id} within {timeout} s")
        if self._failure is not None:
            raise AgentError(self._failure)
        assert self._reply is not None
        if "error" in self._reply:
            raise AgentError(f"agent {self.op} failed: {self._reply['error']}")
        return self._reply


class Agent:
    def __init__(self, socket_path: str) -> None:
        self.socket_path = socket_path
        self._sock: Optional[socket.socket] = None
        self._ids = itertools.count(1)
        self._pending: dict[int, Pending] = {}
        self._lock = threading.Lock()
        self._send_lock = threading.Lock()  # one request's bytes never interleave another's
        self._reader: Optional[threading.Thread] = None
        self.boot_id: Optional[str] = None

    # ------------------------------------------------------------ connection

    def connect(self, timeout: float = 10.0) -> None:
        try:
            sock = connect_unix(self.socket_path, time.monotonic() + timeout)
        except OSError as exc:
            raise AgentError(f"cannot connect to {self.socket_path}: {exc}") from exc
        self._sock = sock
        self._reader = threading.Thread(target=self._read_loop, name="agent-reader", daemon=True)
        self._reader.start()

    def close(self) -> None:
        sock, self._sock = self._sock, None
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
        if self._reader is not None:
            self._reader.join(timeout=2)
            self._reader = None

    def _read_loop(self) -> None:
        sock = self._sock
        assert sock is not None
        buf = b""
        failure = "agent connection closed"
        try:
            while True:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                buf += chunk
                while b"\n" in buf:
                    line, buf = buf.split(b"\n", 1)
                    self._dispatch(line)
        except OSError as exc:
            failure = f"agent connection failed: {exc}"
        with self._lock:
            pending, self._pending = self._pending, {}
        for p in pending.values():
            p._set(None, failure)

    def _dispatch(self, line: bytes) -> None:
        try:
            msg = json.loads(line)
        except ValueError:
            return  # console noise never reaches this port, but be tolerant
        if not isinstance(msg, dict):
            return
        req_id = msg.get("id")
        with self._lock:
            pending = self._pending.pop(req_id, None) if isinstance(req_id, int) else None
        # Replies to requests nobody waits for any more (e.g. pings sent before the guest
        # opened the port) are dropped here.
        if pending is not None:
            pending._set(msg)

    # ------------------------------------------------------------ requests

    def submit(self, op: str, **fields: Any) -> Pending:
        """Send a request without waiting; call ``.result(timeout)`` on the return value."""
        return self._submit(op, fields, SEND_TIMEOUT)

    def _submit(self, op: str, fields: Mapping[str, Any], send_timeout: float) -> Pending:
        sock = self._sock
        if sock is None:
            raise AgentError("agent not connected")
        req_id = next(self._ids)
        pending = Pending(req_id, op)
        with self._lock:
            self._pending[req_id] = pending
        data = (json.dumps({"id": req_id, "op": op, **fields}) + "\n").encode()
        try:
            with self._send_lock:
                _send_within(sock, data, time.monotonic() + send_timeout)
        except OSError as exc:
            self._forget(pending)
            raise AgentError(f"agent send failed: {exc}") from exc
        except SendBlocked as exc:
            self._forget(pending)
            if exc.partial:
                self.close()  # the guest would read half a line glued to the next one
            raise
        return pending

    def _forget(self, pending: Pending) -> None:
        with self._lock:
            self._pending.pop(pending.req_id, None)

    def wait_ready(
        self, timeout: float, give_up: Optional[Callable[[], Optional[str]]] = None
    ) -> float:
        """Ping until the guest agent answers; returns the seconds waited.

        ``give_up`` is asked between pings: a reason it returns (the guest's kernel
        panicked, QEMU ended) ends the wait at once rather than at its deadline."""
        start = time.monotonic()
        deadline = start + timeout
        if self._sock is None:
            self.connect(timeout)

        def step() -> float:  # one ping's share of what is left
            return min(1.0, max(0.05, deadline - time.monotonic()))

        while True:
            try:
                pending = self._submit("ping", {}, step())
            except SendBlocked:
                # The pings queued while the guest's port is closed are all answered
                # once it opens; a full socket is no reason to stop waiting.
                pass
            else:
                try:
                    reply = pending.result(step())
                    self.boot_id = str(reply.get("boot_id"))
                    return time.monotonic() - start
                except AgentError:
                    self._forget(pending)
            reason = give_up() if give_up is not None else None
            if reason is not None:
                raise AgentError(f"guest agent not ready: {reason}")
            if time.monotonic() >= deadline:
                raise AgentError(f"guest agent not ready within {timeout} s") from None

    def run(
        self,
        argv: Sequence[str],
        timeout: float = 60.0,
        input: Optional[str] = None,  # like subprocess.run
        env: Optional[Mapping[str, str]] = None,
        check: bool = False,
    ) -> Result:
        """Run ``argv`` in the guest (no shell unless argv itself names one)."""
        args = [str(a) for a in argv]
        fields: dict[str, Any] = {"argv": args, "timeout": timeout}
        if input is not None:
            fields["input"] = input
        if env:
            fields["env"] = dict(env)
        # The guest enforces `timeout`; the margin covers transport under a loaded TCG.
        reply = self.submit("run", **fields).result(timeout + 30)
        result = Result(
            argv=tuple(args),
            rc=int(reply["rc"]),
            stdout=str(reply["stdout"]),
            stderr=str(reply["stderr"]),
            timed_out=bool(reply["timed_out"]),
            duration=float(reply.get("duration", 0.0)),
        )
        return result.check() if check else result

    def write_file(self, path: str, data: Union[bytes, str], mode: int = 0o644) -> None:
        raw = data.encode() if isinstance(data, str) else data
        self.submit("write", path=path, data_b64=base64.b64encode(raw).decode(), mode=mode).result(
            60
        )

    def read_file(self, path: str) -> bytes:
        reply = self.submit("read", path=path).result(60)
        return base64.b64decode(reply["data_b64"])

    def wait_link(
        self,
        mac: str,
        present: bool = True,
        timeout: float = 30.0,
        ifname: Optional[str] = None,
    ) -> Optional[str]:
        """Wait in the guest until a link with ``mac`` (named ``ifname`` if given) exists,
        or, with ``present=False``, until it does not.

        Returns the interface name seen (None once gone); raises on timeout.
        """
        reply = self.start_wait_link(mac, present, timeout, ifname).result(timeout + 30)
        if not reply["found"]:
            state = "appear" if present else "disappear"
            raise AgentError(f"link {mac} did not {state} within {timeout} s")
        name = reply.get("ifname")
        return str(name) if name is not None else None

    def start_wait_link(
        self,
        mac: str,
        present: bool = True,
        timeout: float = 30.0,
        ifname: Optional[str] = None,
    ) -> Pending:
        """Like wait_link but returns at once; for timing an event the test triggers next.

        ``Pending.received_at`` is when the reply reached the host.
        """
        return self.submit(
            "wait_link", mac=mac.lower(), present=present, timeout=timeout, ifname=ifname
        )

    def __enter__(self) -> Agent:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _send_within(sock: socket.socket, data: bytes, deadline: float) -> None:
    """``sendall`` with a deadline (the socket stays blocking for the reader thread)."""
    view = memoryview(data)
    while view:
        try:
            view = view[sock.send(view, socket.MSG_DONTWAIT) :]
            continue
        except BlockingIOError:
            pass
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise SendBlocked(
                f"agent socket full: {len(view)} of {len(data)} bytes unsent at the "
                "deadline (the guest does not read its port)",
                partial=len(view) < len(data),
            )
        select.select([], [sock], [], remaining)
