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
from dataclasses import dataclass
from typing import Optional

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


# --- tokens ----------------------------------------------------------------------


class TokenStore:
    """IMDSv2 session tokens with real (monotonic) expiry."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._expiry: dict[str, float] = {}

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

    def revoke_all(self) -> None:
        with self._lock:
            self._expiry.clear()
