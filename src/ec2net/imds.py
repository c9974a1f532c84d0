"""IMDS client: the only HTTP code in ec2net.

IMDSv2 with one cached token (optionally shared between processes through a root-only
file in the runtime directory, so that a burst of per-interface units at boot does not
ask for a token each), endpoint fallback (IPv4, then IPv6), bounded timeouts, and
exponential backoff with full jitter. Every outcome is classified: absent (404),
transient (5xx, 429, timeouts, resets: "unknown", never "empty"), fatal (403, 400).
http.client is used rather than urllib so that proxy variables can never apply.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import logging
import os
import random
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional
from urllib.parse import urlsplit

from ec2net.config import Settings
from ec2net.errors import ImdsAbsent, ImdsError, ImdsFatal, ImdsTransient

log = logging.getLogger(__name__)

META = "/latest/meta-data/"
TOKEN_PATH = "/latest/api/token"  # noqa: S105 - a URL path, not a secret
TTL_HEADER = "X-aws-ec2-metadata-token-ttl-seconds"
TOKEN_HEADER = "X-aws-ec2-metadata-token"  # noqa: S105
# Refresh the token this long before it expires, so no read races its expiry.
TOKEN_MARGIN = 30.0
BACKOFF_BASE = 0.1
BACKOFF_CAP = 2.0


@dataclass(frozen=True)
class Endpoint:
    host: str
    port: int

    @classmethod
    def parse(cls, url: str) -> Endpoint:
        parts = urlsplit(url)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"not an http URL: {url}")
        return cls(parts.hostname, parts.port or 80)


@dataclass
class _Token:
    value: str
    expires: float  # wall clock (shared through the cache file across processes)


@dataclass
class RequestStats:
    """Counts requests sent; benchmarks and tests read these."""

    total: int = 0
    by_path: dict[str, int] = field(default_factory=dict)

    def add(self, method: str, path: str) -> None:
        self.total += 1
        key = f"{method} {path}"
        self.by_path[key] = self.by_path.get(key, 0) + 1


class _NoAnswer(Exception):
    """Connection-level failure: try the next endpoint."""


class ImdsClient:
    def __init__(
        self,
        endpoints: tuple[str, ...] = ("http://169.254.169.254",),
        *,
        timeout: float = 1.0,
        retries: int = 4,
        token_ttl: int = 21600,
        allow_v1: bool = False,
        token_cache: Optional[Path] = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._endpoints = [Endpoint.parse(u) for u in endpoints]
        self._timeout = timeout
        self._retries = retries
        self._ttl = token_ttl
        self._allow_v1 = allow_v1
        self._token_cache = token_cache
        self._sleep = sleep
        self._token: Optional[_Token] = None
        self._v1 = False  # set once a token could not be had and v1 is allowed
        self._lock = threading.Lock()  # the daemon's worker threads share one token
        self._stats_lock = threading.Lock()
        self.stats = RequestStats()

    @classmethod
    def from_settings(cls, s: Settings, token_cache: Optional[Path] = None) -> ImdsClient:
        return cls(
            s.imds_endpoints,
            timeout=s.imds_timeout,
            retries=s.imds_retries,
            token_ttl=s.token_ttl,
            allow_v1=s.allow_imdsv1,
            token_cache=token_cache,
        )

    # --- public -----------------------------------------------------------------
    def get(self, path: str) -> str:
        """GET meta-data/PATH. Raises ImdsAbsent on 404, ImdsTransient after the
        retries are spent, ImdsFatal when IMDS refuses us."""
        return self._with_retries(lambda: self._get_once(META + path))

    def get_optional(self, path: str) -> Optional[str]:
        try:
            return self.get(path)
        except ImdsAbsent:
            return None

    def get_list(self, path: str) -> list[str]:
        return [line for line in self.get(path).split("\n") if line]

    # --- token --------------------------------------------------------------------
    def _valid_token(self) -> Optional[str]:
        now = time.time()
        if self._token and self._token.expires - TOKEN_MARGIN > now:
            return self._token.value
        cached = self._read_cached_token()
        if cached and cached.expires - TOKEN_MARGIN > now:
            self._token = cached
            return cached.value
        return None

    def _token_value(self) -> Optional[str]:
        """A token, or None when running as IMDSv1 (only if allowed)."""
        with self._lock:
            return self._token_locked()

    def _token_locked(self) -> Optional[str]:
        if self._v1:
            return None
        token = self._valid_token()
        if token is not None:
            return token
        try:
            status, body, _ = self._request("PUT", TOKEN_PATH, {TTL_HEADER: str(self._ttl)})
        except _NoAnswer as err:
            # No answer to the PUT is what a hop limit too low looks like.
            if self._allow_v1:
                log.warning("imds: no IMDSv2 token (%s); falling back to IMDSv1", err)
                self._v1 = True
                return None
            raise ImdsTransient(f"imds: no answer to the token request: {err}") from None
        if status == 200 and body:
            self._token = _Token(body, time.time() + self._ttl)
            self._write_cached_token(self._token)
            return body
        if status in (403,):
            raise ImdsFatal("imds: token request refused (403): IMDS disabled or blocked")
        if status in (400, 405):
            raise ImdsFatal(f"imds: token request rejected ({status})")
        raise ImdsTransient(f"imds: token request answered {status}")

    def _drop_token(self) -> None:
        self._token = None
        if self._token_cache is not None:
            with contextlib.suppress(OSError):
                self._token_cache.unlink()

    def _read_cached_token(self) -> Optional[_Token]:
        if self._token_cache is None:
            return None
        try:
            data = json.loads(self._token_cache.read_text())
            return _Token(str(data["token"]), float(data["expires"]))
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def _write_cached_token(self, token: _Token) -> None:
        if self._token_cache is None:
            return
        tmp = self._token_cache.with_name(f".{self._token_cache.name}.{os.getpid()}")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as f:
                json.dump({"token": token.value, "expires": token.expires}, f)
            os.replace(tmp, self._token_cache)
        except OSError as err:
            log.debug("imds: token cache not written: %s", err)

    # --- one GET with token handling -----------------------------------------------
    def _get_once(self, path: str) -> str:
        for attempt in range(2):
            token = self._token_value()
            headers = {TOKEN_HEADER: token} if token else {}
            try:
                status, body, _ = self._request("GET", path, headers)
            except _NoAnswer as err:
                raise ImdsTransient(f"imds: GET {path}: {err}") from None
            if status == 200:
                return body
            if status == 404:
                raise ImdsAbsent(f"imds: {path} not found")
            if status == 401 and attempt == 0 and not self._v1:
                self._drop_token()  # expired or revoked: one fresh token, then retry
                continue
            if status == 403:
                raise ImdsFatal(f"imds: GET {path} refused (403)")
            if status in (400, 405):
                raise ImdsFatal(f"imds: GET {path} rejected ({status})")
            raise ImdsTransient(f"imds: GET {path} answered {status}")
        raise ImdsTransient(f"imds: GET {path}: token refused twice")

    def _with_retries(self, op: Callable[[], str]) -> str:
        last: Optional[ImdsError] = None
        for attempt in range(self._retries + 1):
            try:
                return op()
            except ImdsTransient as err:
                last = err
                if attempt < self._retries:
                    delay = random.uniform(0, min(BACKOFF_CAP, BACKOFF_BASE * 2**attempt))  # noqa: S311
                    log.debug("%s; retry %d in %.2fs", err, attempt + 1, delay)
                    self._sleep(delay)
        assert last is not None
        raise last

    def _request(
        self, method: str, path: str, headers: dict[str, str]
    ) -> tuple[int, str, dict[str, str]]:
        """One HTTP exchange, trying the endpoints in order; the first that answers
        becomes the preferred one."""
        errors: list[str] = []
        for i, ep in enumerate(self._endpoints):
            with self._stats_lock:
                self.stats.add(method, path)
            conn = http.client.HTTPConnection(ep.host, ep.port, timeout=self._timeout)
            try:
                conn.request(method, path, headers=headers)
                resp = conn.getresponse()
                body = resp.read().decode("utf-8", "replace")
                if i:  # remember the endpoint that works
                    self._endpoints.insert(0, self._endpoints.pop(i))
                return resp.status, body, dict(resp.getheaders())
            except (OSError, http.client.HTTPException, socket.timeout) as err:
                errors.append(f"{ep.host}: {err or type(err).__name__}")
            finally:
                conn.close()
        raise _NoAnswer("; ".join(errors))
