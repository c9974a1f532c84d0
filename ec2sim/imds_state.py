"""Per-server IMDS state and wire constants: tokens, the request log, error pages.

Kept apart from the HTTP plumbing in `ec2sim.imds` so tests and the fabric can share a
`TokenStore` or `RequestLog` between the IPv4 and IPv6 endpoints of one instance.
"""

from __future__ import annotations

import base64
import math
import os
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Optional

# Status recorded in the RequestLog for requests that got no HTTP answer at all.
NO_ANSWER = 0

REASONS = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    429: "Too Many Requests",
    503: "Service Unavailable",
}


def error_page(status: int) -> bytes:
    """The XHTML error page real IMDS sends (339 bytes for 404)."""
    title = f"{status} - {REASONS.get(status, 'Error')}"
    return (
        '<?xml version="1.0" encoding="iso-8859-1"?>\n'
        '<!DOCTYPE html PUBLIC "-//W3C//DTD XHTML 1.0 Transitional//EN"\n'
        '   "http://www.w3.org/TR/xhtml1/DTD/xhtml1-transitional.dtd">\n'
        '<html xmlns="http://www.w3.org/1999/xhtml" xml:lang="en" lang="en">\n'
        " <head>\n"
        f"  <title>{title}</title>\n"
        " </head>\n"
        " <body>\n"
        f"  <h1>{title}</h1>\n"
        " </body>\n"
        "</html>\n"
    ).encode("iso-8859-1")


# --- request log -----------------------------------------------------------------


@dataclass(frozen=True)
class LogEntry:
    time: float  # time.monotonic() when the request was answered (or dropped)
    method: str
    path: str
    status: int  # NO_ANSWER (0) for reset, blackholed or unanswered requests


class RequestLog:
    """Thread-safe record of every request the server read; tests count through it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: list[LogEntry] = []

    def record(self, method: str, path: str, status: int) -> None:
        with self._lock:
            self._entries.append(LogEntry(time.monotonic(), method, path, status))

    def entries(self) -> list[LogEntry]:
        with self._lock:
            return list(self._entries)

    def reset(self) -> None:
        with self._lock:
            self._entries.clear()

    def count(
        self,
        method: Optional[str] = None,
        path_prefix: Optional[str] = None,
        status: Optional[int] = None,
    ) -> int:
        return sum(
            1
            for e in self.entries()
            if (method is None or e.method == method)
            and (path_prefix is None or e.path.startswith(path_prefix))
            and (status is None or e.status == status)
        )

    def by_path(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for e in self.entries():
            out[e.path] = out.get(e.path, 0) + 1
        return out

    def by_method(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for e in self.entries():
            out[e.method] = out.get(e.method, 0) + 1
        return out


# --- per-endpoint fault injection -------------------------------------------------


@dataclass
class Trigger:
    """Runs `action` once, just before the `nth` request whose path ends with `suffix`
    is answered: the world changes between two reads of one client run (a secondary
    address assigned after the ENI's listing was read, say). Put one Trigger in both
    endpoints' `Injected.triggers`: it still fires once."""

    suffix: str
    action: Callable[[], None]
    nth: int = 1
    seen: int = 0
    fired_at: Optional[float] = None  # time.monotonic() when the action ran
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def maybe_fire(self, path: str) -> None:
        if not path.rstrip("/").endswith(self.suffix.rstrip("/")):
            return
        with self._lock:
            self.seen += 1
            if self.seen != self.nth or self.fired_at is not None:
                return
            self.action()
            self.fired_at = time.monotonic()


@dataclass
class Injected:
    """Faults one endpoint injects on top of `World.faults` (which both endpoints read).

    Fault tests flip these at run time; pass one object to both servers of an instance
    to fault them together, or set `down` on one to model one endpoint failing.
    """

    down: bool = False  # every connection is reset before an answer (endpoint down)
    token_uses: int = 0  # > 0: a token answers that many reads, then 401 (expiry mid-run)
    # Path suffix (e.g. "macs/02:00:0a:00:02:14/local-ipv4s") -> raw body served instead
    # of the world's value: malformed metadata, byte for byte.
    bodies: dict[str, bytes] = field(default_factory=dict)
    # Changes to the world at chosen requests (see Trigger), run before the answer.
    triggers: list[Trigger] = field(default_factory=list)

    def body_for(self, path: str) -> Optional[bytes]:
        for suffix, body in self.bodies.items():
            if path.rstrip("/").endswith(suffix.rstrip("/")):
                return body
        return None


# --- tokens ----------------------------------------------------------------------


class TokenStore:
    """IMDSv2 session tokens with real (monotonic) expiry."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._expiry: dict[str, float] = {}
        self._uses: dict[str, int] = {}

    def issue(self, ttl: int) -> str:
        # 42 random bytes encode to exactly 56 base64 characters, like real tokens.
        token = base64.b64encode(os.urandom(42)).decode("ascii")
        now = time.monotonic()
        with self._lock:
            # Drop expired tokens so a long benchmark does not grow the table.
            self._expiry = {t: x for t, x in self._expiry.items() if x > now}
            self._expiry[token] = now + ttl
        return token

    def seconds_left(self, token: str) -> Optional[int]:
        """Whole seconds left (rounded up, so >= 1 while valid); None if invalid/expired."""
        with self._lock:
            expiry = self._expiry.get(token)
        left = None if expiry is None else expiry - time.monotonic()
        if left is None or left <= 0:
            return None
        return math.ceil(left)

    def spend(self, token: str, limit: int) -> bool:
        """Count one read with `token`; past `limit` reads (> 0) it expires at once."""
        with self._lock:
            used = self._uses.get(token, 0) + 1
            self._uses[token] = used
            if limit > 0 and used > limit:
                self._expiry.pop(token, None)
                return False
            return True

    def revoke_all(self) -> None:
        with self._lock:
            self._expiry.clear()
            self._uses.clear()
