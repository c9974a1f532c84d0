"""A minimal QMP client: capabilities handshake, commands, and waiting for events.

Single-threaded: events that arrive while a command waits for its return are kept in a
backlog so a later ``wait_event`` still sees them (DEVICE_DELETED can beat the
device_del reply).
"""

from __future__ import annotations

import json
import socket
import time
from typing import Any, Callable, Optional

from systest.unixsock import connect_unix

Event = dict[str, Any]


class QmpError(RuntimeError):
    pass


class Qmp:
    def __init__(self, path: str) -> None:
        self.path = path
        self._sock: Optional[socket.socket] = None
        self._buf = b""
        self.events: list[Event] = []
        self.greeting: dict[str, Any] = {}

    def connect(self, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        try:
            sock = connect_unix(self.path, deadline)
        except OSError as exc:
            raise QmpError(f"cannot connect to QMP at {self.path}: {exc}") from exc
        self._sock = sock
        self.greeting = self._recv(deadline)
        if "QMP" not in self.greeting:
            raise QmpError(f"unexpected QMP greeting: {self.greeting}")
        self.execute("qmp_capabilities", timeout=max(1.0, deadline - time.monotonic()))

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def _recv(self, deadline: float) -> dict[str, Any]:
        sock = self._sock
        if sock is None:
            raise QmpError("QMP not connected")
        while b"\n" not in self._buf:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("QMP read timed out")
            sock.settimeout(remaining)
            try:
                chunk = sock.recv(65536)
            except socket.timeout:
                raise TimeoutError("QMP read timed out") from None
            if not chunk:
                raise QmpError("QMP connection closed")
            self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        msg = json.loads(line)
        if not isinstance(msg, dict):
            raise QmpError(f"unexpected QMP message: {msg!r}")
        return msg

    def execute(
        self, command: str, arguments: Optional[dict[str, Any]] = None, timeout: float = 10.0
    ) -> Any:
        """Run a command; returns its ``return`` value or raises QmpError."""
        sock = self._sock
        if sock is None:
            raise QmpError("QMP not connected")
        req: dict[str, Any] = {"execute": command}
        if arguments:
            req["arguments"] = arguments
        sock.sendall((json.dumps(req) + "\n").encode())
        deadline = time.monotonic() + timeout
        while True:
            msg = self._recv(deadline)
            if "event" in msg:
                self.events.append(msg)
            elif "return" in msg:
                return msg["return"]
            elif "error" in msg:
                err = msg["error"]
                raise QmpError(f"{command}: {err.get('class')}: {err.get('desc')}")

    def wait_event(
        self,
        name: str,
        timeout: float,
        match: Optional[Callable[[dict[str, Any]], bool]] = None,
    ) -> Event:
        """Return (and consume) the first event ``name`` whose data satisfies ``match``."""
        deadline = time.monotonic() + timeout
        while True:
            for i, ev in enumerate(self.events):
                if ev.get("event") == name and (match is None or match(ev.get("data", {}))):
                    return self.events.pop(i)
            try:
                msg = self._recv(deadline)
            except TimeoutError:
                raise TimeoutError(f"no QMP event {name} within {timeout} s") from None
            if "event" in msg:
                self.events.append(msg)
