"""IMDS client: the only HTTP code in ec2net.

IMDSv2 with one cached token (optionally shared between processes through a root-only
file in the runtime directory, so that a burst of per-interface units at boot does not
ask for a token each), endpoint fallback (IPv4, then IPv6) with the endpoint that
answered remembered next to the token (an IPv6-only instance must not wait out the
IPv4 endpoint in every process), bounded timeouts, an optional overall budget
(`budget`), and exponential backoff with full jitter through `cancel.pause`. Every
outcome is classified: absent (404), transient (5xx, 429, timeouts, resets: "unknown",
never "empty"), fatal (403, 400, a route that prohibits IMDS). Bodies must be UTF-8
text without NUL: anything else is a MetadataError naming the key, never a silently
changed value. http.client is used rather than urllib so that proxy variables can never
apply. With `fwmark`, every socket carries that firewall mark (SO_MARK) before it
connects: a locked-down IMDS lets only marked sockets through.
"""

from __future__ import annotations

import contextlib
import enum
import errno
import http.client
import json
import logging
import random
import re
import socket
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Union
from urllib.parse import urlsplit

from ec2net import cancel, rundir
from ec2net.config import Settings
from ec2net.errors import (
    Ec2NetError,
    ImdsAbsent,
    ImdsError,
    ImdsFatal,
    ImdsTransient,
    MetadataError,
)

log = logging.getLogger(__name__)

META = "/latest/meta-data/"
TOKEN_PATH = "/latest/api/token"  # noqa: S105 - a URL path, not a secret
TTL_HEADER = "X-aws-ec2-metadata-token-ttl-seconds"
TOKEN_HEADER = "X-aws-ec2-metadata-token"  # noqa: S105
# Refresh the token this long before it expires, so no read races its expiry.
TOKEN_MARGIN = 30.0
BACKOFF_BASE = 0.1
BACKOFF_CAP = 2.0
# Meta-data values are small (the longest list a real ENI has is ~4 KB); reading a
# larger answer whole would only let a broken server fill memory.
MAX_BODY = 256 * 1024
# Requests `get_many` has in flight at once: an ENI's keys (11 at most) in one round trip.
PARALLEL = 12
SO_MARK = getattr(socket, "SO_MARK", 36)  # Linux; not exported by every Python build
# connect() errors meaning a route forbids the destination (`prohibit` gives EACCES):
# what a locked-down IMDS looks like to an unmarked socket.
PROHIBITED = (errno.EACCES, errno.EPERM)
FWMARK_HINT = (
    "a route prohibits IMDS to this socket; if IMDS is locked down to marked sockets, "
    "set imds.fwmark to the mark it lets through (e.g. 0x7FFF0815)"
)


@dataclass(frozen=True)
class Endpoint:
    host: str
    port: int

    url: str = ""

    @classmethod
    def parse(cls, url: str) -> Endpoint:
        parts = urlsplit(url)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"not an http URL: {url}")
        return cls(parts.hostname, parts.port or 80, url)


def decode_body(key: str, data: bytes) -> str:
    """IMDS text as str; bytes that cannot be text name the key instead of turning
    into replacement characters that would parse as something else."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        shown = data.decode("utf-8", "replace")
        raise MetadataError(key, shown, f"not UTF-8 text (byte {err.start})") from None
    if "\x00" in text:
        raise MetadataError(key, text, "contains a NUL byte")
    return text


class _Connection(http.client.HTTPConnection):
    """An HTTP connection whose socket carries a firewall mark before it connects."""

    def __init__(self, host: str, port: int, timeout: float, fwmark: int) -> None:
        super().__init__(host, port, timeout=timeout)
        self._fwmark = fwmark

    def connect(self) -> None:
        infos = socket.getaddrinfo(self.host, self.port, type=socket.SOCK_STREAM)
        family, kind, proto, _, addr = infos[0]
        sock = socket.socket(family, kind, proto)
        try:
            try:
                sock.setsockopt(socket.SOL_SOCKET, SO_MARK, self._fwmark)
            except OSError as err:
                raise ImdsFatal(
                    f"imds: imds.fwmark: cannot mark sockets ({err.strerror}; needs CAP_NET_ADMIN)"
                ) from None
            sock.settimeout(self.timeout)
            sock.connect(addr)
        except BaseException:
            sock.close()
            raise
        self.sock = sock


@dataclass
class _Token:
    value: str
    expires: float  # wall clock (shared through the cache file across processes)


class RequestOutcome(str, enum.Enum):
    """How one HTTP exchange with one endpoint ended (the daemon's metrics)."""

    OK = "ok"  # 200
    ABSENT = "absent"  # 404: an answer, the key does not exist
    UNAUTHORIZED = "unauthorized"  # 401: the token expired or was revoked
    REFUSED = "refused"  # 400, 403, 405: retrying will not help
    ERROR = "error"  # any other status (5xx, 429): transient
    NO_ANSWER = "no_answer"  # timeout, reset, unreachable
    PROHIBITED = "prohibited"  # a route forbids IMDS to this socket (imds.fwmark)

    @classmethod
    def of_status(cls, status: int) -> RequestOutcome:
        if status == 200:
            return cls.OK
        if status == 404:
            return cls.ABSENT
        if status == 401:
            return cls.UNAUTHORIZED
        return cls.REFUSED if status in (400, 403, 405) else cls.ERROR


_MAC_IN_PATH = re.compile(r"[0-9a-f]{2}(?::[0-9a-f]{2}){5}")


@dataclass
class RequestStats:
    """Counts requests sent and how each ended; benchmarks, tests and metrics read these."""

    total: int = 0
    by_path: dict[str, int] = field(default_factory=dict)
    by_outcome: dict[RequestOutcome, int] = field(default_factory=dict)

    def add(self, method: str, path: str) -> None:
        self.total += 1
        # By key, not by ENI: a daemon that sees thousands of ENIs come and go over
        # months keeps one count per key it reads (MACs read as "MAC").
        key = f"{method} {_MAC_IN_PATH.sub('MAC', path)}"
        self.by_path[key] = self.by_path.get(key, 0) + 1

    def ended(self, outcome: RequestOutcome) -> None:
        self.by_outcome[outcome] = self.by_outcome.get(outcome, 0) + 1


class _NoAnswer(Exception):
    """Connection-level failure: try the next endpoint."""


class _Budget(threading.local):
    deadline: Optional[float] = None  # monotonic; None = no overall limit


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
        endpoint_cache: Optional[Path] = None,
        fwmark: Optional[int] = None,
        sleep: Callable[[float], None] = cancel.pause,
    ) -> None:
        """`sleep` waits out the backoff; the default ends at once when the process is
        stopping. `endpoint_cache` remembers the endpoint that answered last."""
        self._endpoints = [Endpoint.parse(u) for u in endpoints]
        self._timeout = timeout
        self._retries = retries
        self._ttl = token_ttl
        self._allow_v1 = allow_v1
        self._token_cache = token_cache
        self._endpoint_cache = endpoint_cache
        self._fwmark = fwmark
        self._sleep = sleep
        self._budget = _Budget()
        self._token: Optional[_Token] = None
        self._v1 = False  # set once a token could not be had and v1 is allowed
        self._lock = threading.Lock()  # the daemon's worker threads share one token
        self._stats_lock = threading.Lock()
        self.stats = RequestStats()
        self._remembered = self._read_cached_endpoint()
        self._prefer(self._remembered)

    @classmethod
    def from_settings(cls, s: Settings, token_cache: Optional[Path] = None) -> ImdsClient:
        """The endpoint that answered is remembered beside the token cache."""
        return cls(
            s.imds_endpoints,
            timeout=s.imds_timeout,
            retries=s.imds_retries,
            token_ttl=s.token_ttl,
            allow_v1=s.allow_imdsv1,
            token_cache=token_cache,
            endpoint_cache=token_cache.with_name("imds-endpoint") if token_cache else None,
            fwmark=s.imds_fwmark,
        )

    # --- public -----------------------------------------------------------------
    def get(self, path: str) -> str:
        """GET meta-data/PATH. Raises ImdsAbsent on 404, ImdsTransient after the
        retries are spent, ImdsFatal when IMDS refuses us."""
        return decode_body(path, self._with_retries(lambda: self._get_once(META + path)))

    def get_many(self, paths: Sequence[str]) -> list[Union[str, Ec2NetError]]:
        """GET each of `paths` at once: in order, each one's text or the error `get`
        raised for it (the caller decides which error counts). The requests overlap:
        IMDS answers each at once, so the time of a sequence of them is round trips
        spent one after another. Each request keeps to the calling thread's budget."""
        if len(paths) < 2:
            return [self._answer(p) for p in paths]
        deadline = self._budget.deadline

        def one(path: str) -> Union[str, Ec2NetError]:
            self._budget.deadline = deadline  # the worker's own (thread-local) budget
            return self._answer(path)

        # Threads of this call, started by the caller: a thread is in the network
        # namespace of the thread that started it, and a read must come from the
        # caller's (a long-lived pool's threads stay in the first caller's).
        with ThreadPoolExecutor(min(len(paths), PARALLEL), "ec2net-imds") as pool:
            return list(pool.map(one, paths))

    def _answer(self, path: str) -> Union[str, Ec2NetError]:
        try:
            return self.get(path)
        except Ec2NetError as err:  # ImdsError, MetadataError, Cancelled
            return err

    @contextlib.contextmanager
    def budget(self, seconds: float) -> Iterator[None]:
        """Within the block, this thread's requests, retries and backoff all end by
        `seconds` from now (an ImdsTransient then), however slow IMDS is."""
        before = self._budget.deadline
        deadline = time.monotonic() + seconds
        self._budget.deadline = deadline if before is None else min(before, deadline)
        try:
            yield
        finally:
            self._budget.deadline = before

    @property
    def preferred(self) -> str:
        """The URL tried first (the one that answered last)."""
        return self._endpoints[0].url

    def _remaining(self) -> Optional[float]:
        deadline = self._budget.deadline
        return None if deadline is None else deadline - time.monotonic()

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
            status, data = self._request("PUT", TOKEN_PATH, {TTL_HEADER: str(self._ttl)})
        except _NoAnswer as err:
            # No answer to the PUT is what a hop limit too low looks like.
            if self._allow_v1:
                log.warning("imds: no IMDSv2 token (%s); falling back to IMDSv1", err)
                self._v1 = True
                return None
            raise ImdsTransient(f"imds: no answer to the token request: {err}") from None
        body = data.decode("ascii", "replace").strip()
        if status == 200 and body.isprintable() and body.isascii() and body:
            self._token = _Token(body, time.time() + self._ttl)
            self._write_cached_token(self._token)
            return body
        if status in (403,):
            raise ImdsFatal("imds: token request refused (403): IMDS disabled or blocked")
        if status in (400, 405):
            raise ImdsFatal(f"imds: token request rejected ({status})")
        raise ImdsTransient(f"imds: token request answered {status} without a usable token")

    def _drop_token(self, refused: Optional[str]) -> None:
        """Forget the token IMDS refused, unless another thread already replaced it:
        after an IMDS restart, parallel reads all get 401 but one new token serves all."""
        with self._lock:
            if self._token is not None and self._token.value != refused:
                return
            self._token = None
            if self._token_cache is not None:
                cached = self._read_cached_token()
                if cached is None or cached.value == refused:
                    with contextlib.suppress(OSError):
                        self._token_cache.unlink()

    def _read_cached_token(self) -> Optional[_Token]:
        if self._token_cache is None:
            return None
        try:
            data = json.loads(rundir.read_nofollow(self._token_cache, 4096))
            return _Token(str(data["token"]), float(data["expires"]))
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def _write_cached_token(self, token: _Token) -> None:
        if self._token_cache is not None:
            _write_private(self._token_cache, {"token": token.value, "expires": token.expires})

    # --- one GET with token handling -----------------------------------------------
    def _get_once(self, path: str) -> bytes:
        for attempt in range(2):
            token = self._token_value()
            headers = {TOKEN_HEADER: token} if token else {}
            try:
                status, body = self._request("GET", path, headers)
            except _NoAnswer as err:
                raise ImdsTransient(f"imds: GET {path}: {err}") from None
            if status == 200:
                return body
            if status == 404:
                raise ImdsAbsent(f"imds: {path} not found")
            if status == 401 and attempt == 0 and not self._v1:
                self._drop_token(token)  # expired or revoked: one fresh token, then retry
                continue
            if status == 403:
                raise ImdsFatal(f"imds: GET {path} refused (403)")
            if status in (400, 405):
                raise ImdsFatal(f"imds: GET {path} rejected ({status})")
            raise ImdsTransient(f"imds: GET {path} answered {status}")
        raise ImdsTransient(f"imds: GET {path}: token refused twice")

    def _with_retries(self, op: Callable[[], bytes]) -> bytes:
        last: Optional[ImdsError] = None
        for attempt in range(self._retries + 1):
            try:
                return op()
            except ImdsTransient as err:
                last = err
                if attempt < self._retries:
                    delay = random.uniform(0, min(BACKOFF_CAP, BACKOFF_BASE * 2**attempt))  # noqa: S311
                    left = self._remaining()
                    if left is not None and left <= delay:
                        break  # the budget ends before the retry could start
                    log.debug("%s; retry %d in %.2fs", err, attempt + 1, delay)
                    self._sleep(delay)
        assert last is not None
        raise last

    def _request(self, method: str, path: str, headers: dict[str, str]) -> tuple[int, bytes]:
        """One HTTP exchange, trying the endpoints in order; the first that answers
        becomes the preferred one (and is remembered for the next process)."""
        errors: list[str] = []
        prohibited = 0
        for ep in list(self._endpoints):
            cancel.check()
            timeout = self._timeout
            left = self._remaining()
            if left is not None:
                if left <= 0:
                    errors.append(f"{ep.host}: out of time")
                    break
                timeout = min(timeout, left)
            with self._stats_lock:
                self.stats.add(method, path)
            conn = self._connection(ep, timeout)
            try:
                conn.request(method, path, headers=headers)
                resp = conn.getresponse()
                body = resp.read(MAX_BODY + 1)
                if len(body) > MAX_BODY:
                    key = path[len(META) :] if path.startswith(META) else path
                    raise MetadataError(key, "", f"answer longer than {MAX_BODY} bytes")
                self._answered(ep)
                self._ended(RequestOutcome.of_status(resp.status))
                return resp.status, body
            except (OSError, http.client.HTTPException) as err:
                if isinstance(err, OSError) and err.errno in PROHIBITED:
                    prohibited += 1
                    self._ended(RequestOutcome.PROHIBITED)
                else:
                    self._ended(RequestOutcome.NO_ANSWER)
                errors.append(f"{ep.host}: {err or type(err).__name__}")
            finally:
                conn.close()
        if prohibited and prohibited == len(errors):
            # Retrying cannot help: the routes say no until the configuration changes.
            raise ImdsFatal(f"imds: {method} {path}: {'; '.join(errors)}: {FWMARK_HINT}")
        if prohibited:
            errors.append(FWMARK_HINT)
        raise _NoAnswer("; ".join(errors))

    def _ended(self, outcome: RequestOutcome) -> None:
        with self._stats_lock:
            self.stats.ended(outcome)

    def _connection(self, ep: Endpoint, timeout: float) -> http.client.HTTPConnection:
        if self._fwmark is None:
            return http.client.HTTPConnection(ep.host, ep.port, timeout=timeout)
        return _Connection(ep.host, ep.port, timeout, self._fwmark)

    # --- the endpoint that answered -------------------------------------------------
    def _prefer(self, url: Optional[str]) -> None:
        with self._stats_lock:
            for i, ep in enumerate(self._endpoints):
                if ep.url == url and i:
                    self._endpoints.insert(0, self._endpoints.pop(i))

    def _answered(self, ep: Endpoint) -> None:
        self._prefer(ep.url)
        if ep.url != self._remembered:
            self._remembered = ep.url
            self._write_cached_endpoint(ep.url)

    def _read_cached_endpoint(self) -> Optional[str]:
        if self._endpoint_cache is None:
            return None
        try:
            data: Any = json.loads(rundir.read_nofollow(self._endpoint_cache, 4096))
            return str(data["endpoint"])
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def _write_cached_endpoint(self, url: str) -> None:
        if self._endpoint_cache is not None:
            _write_private(self._endpoint_cache, {"endpoint": url})


def _write_private(path: Path, data: dict[str, Any]) -> None:
    """Atomically (a reader sees the old file or the new one), root-only (mode 0600),
    never through a symbolic link (rundir.replace_file)."""
    try:
        rundir.replace_file(path, json.dumps(data).encode(), 0o600, durable=False)
    except OSError as err:
        log.debug("imds: %s not written: %s", path.name, err)


def token_problem(client: ImdsClient) -> Optional[str]:
    """Whether IMDS hands out a token now (a fresh request, not the cached token): None
    if it does, else why not (`ec2net check`)."""
    try:
        status, data = client._request("PUT", TOKEN_PATH, {TTL_HEADER: str(client._ttl)})
    except _NoAnswer as err:
        return f"no answer to a token request ({err})"
    if status == 200 and data.strip():
        return None
    return f"a token request was answered {status}"
