"""`ec2net watch`: the daemon.

One process: a select loop over an rtnetlink link-event socket and a signal wakeup
pipe. New ENIs are configured and removed ones cleaned up by jobs on a small thread
pool (a job waiting for IMDS propagation never blocks other events); address changes
are picked up by polling IMDS every `refresh.interval` seconds with jitter, sharing one
token. The engine's locks make the daemon, udev-started units and a person at the shell
safe together; a job that finds an ENI configured moments ago by someone else skips
its IMDS reads altogether. With `metrics.textfile`, every job ends by rewriting that
file (metrics.py) for node_exporter's textfile collector.
"""

from __future__ import annotations

import contextlib
import fnmatch
import logging
import random
import select
import signal
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Optional

from ec2net import cancel, check_kernel, metrics, results
from ec2net import config as config_mod
from ec2net.backends import open_backend
from ec2net.backends.netlink_events import (
    LinkChange,
    LinkEvent,
    LinkEvents,
    Resync,
    RouterEvent,
    dump_links,
)
from ec2net.check import Kind as CheckKind
from ec2net.check import Problem
from ec2net.config import Settings
from ec2net.converge import Result
from ec2net.engine import Engine
from ec2net.errors import (
    ApplyFailed,
    Ec2NetError,
    ImdsError,
    InterfaceGone,
    LockTimeout,
    MetadataError,
    RuntimeDirError,
    TableConflict,
)
from ec2net.imds import ImdsClient
from ec2net.metrics import DaemonCounters, JobKind
from ec2net.sdnotify import notify, watchdog_interval
from ec2net.state import Store, write_if_changed
from ec2net.status import collect

log = logging.getLogger(__name__)

WORKERS = 4
RETRY_FIRST = 1.0  # seconds before the first retry of a failed `up`; doubles each time
# A udev-started unit that configured the ENI this recently spares us the IMDS reads.
FRESH_WITHIN = 10.0
# Each refresh reads an ENI's address lists (one request per list); only every
# LISTING_EVERY-th round reads its key listing instead, which is what finds keys that
# newly appear (a first IPv6 address, a delegated prefix) and keeps the known lists
# for that round. An IPv4-only ENI thus costs one request per interval, and a new key
# is picked up within LISTING_EVERY intervals (5 minutes at the default 60 s).
LISTING_EVERY = 5
# Lost link events (ENOBUFS) re-read every link at most this often: a storm that keeps
# overflowing the socket costs one link dump a second, not one per read.
RESYNC_EVERY = 1.0
# While a job is queued behind another for the same ENI, the loop looks at least this
# often whether it can start (the end-of-job wake is the fast path).
PENDING_POLL = 0.5


class Daemon:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.store = Store(Path(settings.runtime_dir))
        self.store.ensure()
        self.imds = ImdsClient.from_settings(settings, self.store.token_cache)
        self.pool = ThreadPoolExecutor(max_workers=WORKERS, thread_name_prefix="ec2net")
        self.jobs: dict[str, Future[None]] = {}
        # key -> the one job queued behind the running one: (kind, work, weak)
        self.pending: dict[str, tuple[JobKind, Callable[[Engine], object], bool]] = {}
        self.known: dict[int, tuple[str, str]] = {}  # ifindex -> (name, mac)
        self.routers: dict[int, frozenset[str]] = {}  # ifindex -> its RA routers
        self.refresh_rounds: dict[str, int] = {}  # mac -> refreshes so far
        self.stopping = False
        self.reload_requested = False
        self.last_resync = float("-inf")  # monotonic
        self.resync_due: Optional[float] = None
        self._wake: Optional[socket.socket] = None  # written when a job ends
        self.next_refresh = time.monotonic() + self._interval()
        self.counters = DaemonCounters(started=time.time())
        # ifindex -> (next attempt, MAC, delay) for new ENIs whose `up` failed
        self.retries: dict[int, tuple[float, str, float]] = {}
        self._retry_lock = threading.Lock()
        self.imds_problems: list[Problem] = []  # the last refresh round's token answer
        self._metrics_lock = threading.Lock()  # jobs end on several threads

    def _interval(self) -> float:
        # Jitter spreads a fleet's polls (IMDS limits packets per second per ENI).
        base = self.settings.refresh_interval
        return base + random.uniform(0, base * 0.1)  # noqa: S311

    # --- jobs ------------------------------------------------------------------------
    @contextmanager
    def _engine(self) -> Iterator[Engine]:
        # One netlink socket per job: pyroute2 sockets are not shared between threads.
        backend = open_backend(self.settings)
        try:
            yield Engine(self.settings, backend, self.imds, self.store)
        finally:
            backend.close()

    def submit(
        self, key: str, work: Callable[[Engine], object], kind: JobKind, *, weak: bool = False
    ) -> None:
        """Run `work` on the pool; a second request for a key still running is queued
        once and runs after it (coalescing bursts of events for one ENI: the newest
        wins, as it reads the state afresh). A `weak` job (a re-converge from the
        record, which an `up` or a removal also does) never displaces a queued strong
        one: an unplug's router events would otherwise replace its removal, and a new
        ENI's first router its `up`, leaving objects behind or the ENI unconfigured."""
        running = self.jobs.get(key)
        if running is not None and not running.done():
            queued = self.pending.get(key)
            if weak and queued is not None and not queued[2]:
                return
            self.pending[key] = (kind, work, weak)
            return

        fut = self.pool.submit(self._measured, key, work, kind)
        self.jobs[key] = fut
        # Wake the loop to start a queued follow-up at once. Only once the future is
        # done: a wake sent from inside the job could be handled before it is, and the
        # follow-up (an unplug's removal) would wait for the next refresh.
        fut.add_done_callback(self._job_done)

    def _job_done(self, fut: Future[None]) -> None:
        if self._wake is not None:
            with contextlib.suppress(OSError):
                self._wake.send(b"\0")

    def _measured(self, key: str, work: Callable[[Engine], object], kind: JobKind) -> None:
        started = time.monotonic()
        failed = True
        try:
            with self._engine() as engine:
                done = work(engine)
            failed = False
            _log_results(done)
        except cancel.Cancelled:
            log.info("%s: stopped before it finished; the next start converges", key)
            return  # stopping: not a failure, and no file to update
        except Ec2NetError as err:
            log.warning("%s: %s", key, err)
        except Exception:
            log.exception("%s: unexpected error", key)
        with self._metrics_lock:
            self.counters = self.counters.record(
                kind, time.monotonic() - started, failed, time.time()
            )
        self.write_metrics(ask_imds=kind is JobKind.REFRESH)

    def write_metrics(self, *, ask_imds: bool = False) -> None:
        """Rewrite metrics.textfile (if set) from the kernel's state, `ec2net check`'s
        findings and our counters. IMDS's token is asked for once per refresh round
        (the last answer stands in between): not once per job."""
        textfile = self.settings.metrics_textfile
        if not textfile:
            return
        path = Path(textfile)
        if path.is_symlink():
            log.warning("metrics: %s is a symbolic link; not written (never through one)", path)
            return
        try:
            with self._engine() as engine:
                rows = collect(engine)
                checked = check_kernel.run(engine, ask_imds=ask_imds)
            if ask_imds:
                self.imds_problems = [p for p in checked.problems if p.kind is CheckKind.IMDS]
            else:
                checked.problems += self.imds_problems
            with self._metrics_lock:  # one writer at a time
                text = metrics.exposition(
                    rows, self.counters, dict(self.imds.stats.by_outcome), checked
                )
                # rewritten after every job: a lost write after a power cut costs nothing;
                # the directory must not be a symbolic link either
                write_if_changed(path, text, durable=False, follow_dir=False)
        except (Ec2NetError, OSError) as err:
            log.warning("metrics: %s not written: %s", textfile, err)

    def _reap(self) -> None:
        for key, fut in list(self.jobs.items()):
            if fut.done():
                del self.jobs[key]
                queued = self.pending.pop(key, None)
                if queued is not None:
                    kind, work, weak = queued
                    self.submit(key, work, kind, weak=weak)

    # --- events ------------------------------------------------------------------------
    def rescan(self) -> None:
        """Read every link and scan (at start and after a reload)."""
        with self._engine() as engine:
            self.known = {ln.index: (ln.name, ln.mac) for ln in engine.backend.links()}
        self.submit("scan", self._scan, JobKind.SCAN)

    def resync(self) -> None:
        """Events were lost: read every link again and act on what changed since, as
        the lost events would have (links gone: their cleanup; new or renamed links:
        their `up`, through the same filter). No scan: a storm of lost events must not
        become a storm of scans and IMDS reads. At most once per RESYNC_EVERY seconds,
        counted from the end of the last one: during a storm a re-read of a thousand
        links takes a second or more (the kernel's dump waits for the storm's rtnl
        lock), and one started right after another would keep the loop from its
        watchdog pings. A later loss waits for its turn (`resync_due`)."""
        now = time.monotonic()
        if now < self.last_resync + RESYNC_EVERY:
            self.resync_due = self.resync_due or self.last_resync + RESYNC_EVERY
            return
        self.resync_due = None
        try:
            links = dump_links()
        except OSError as err:
            log.warning("link events were lost and the links cannot be read: %s", err)
            self.last_resync = time.monotonic()
            self.resync_due = self.last_resync + RESYNC_EVERY
            return
        self.last_resync = time.monotonic()
        log.debug("re-read %d links in %.3f s", len(links), self.last_resync - now)
        fresh = {ev.index for ev in links}
        for index, (name, mac) in list(self.known.items()):
            if index not in fresh:
                self.on_event(LinkEvent(LinkChange.DEL, index, name, mac))
        for ev in links:
            self.on_event(ev)

    def _scan(self, engine: Engine) -> None:
        """A scan whose ENIs are tried again where it failed: they are in `known`
        already, so no link event will come for them, and the refresh covers only
        configured ENIs (a daemon started while IMDS was down never configured them)."""
        try:
            engine.scan()
        except Ec2NetError:
            for link in engine.backend.links():
                with contextlib.suppress(Ec2NetError):
                    if engine.link_skip(link) is None and engine.store.load(link.mac) is None:
                        self._retry_later(link.index, link.mac)
            raise

    def on_event(self, ev: LinkEvent) -> None:
        if ev.kind == "del":
            with self._retry_lock:
                self.retries.pop(ev.index, None)
            old = self.known.pop(ev.index, None)
            self.routers.pop(ev.index, None)
            mac = old[1] if old else ev.mac
            self.refresh_rounds.pop(mac, None)
            if mac and self.store.load(mac) is not None:
                self.submit(f"mac {mac}", lambda e: e.down_mac(mac), JobKind.DOWN)
            return
        seen = self.known.get(ev.index)
        self.known[ev.index] = (ev.name, ev.mac)
        if seen == (ev.name, ev.mac):
            return  # a flag or carrier change on a link we know: nothing to do
        if not self._may_be_eni(ev) and self.store.load(ev.mac) is None:
            return  # a bridge, a container's veth, a bond's port: no job, no netlink dump
        self._submit_up(ev.index, ev.mac)

    def _may_be_eni(self, ev: LinkEvent) -> bool:
        """What the event itself tells of eligibility (the job checks it all again): a
        virtual link of a kind that is not in interfaces.drivers (a NIC has no kind),
        a port of a bridge or bond, or an excluded name or MAC is no ENI. A storm of
        such events (containers starting) then costs no job each."""
        s = self.settings
        if ev.link_kind and ev.link_kind not in s.drivers:
            return False
        if ev.master or ev.mac in s.exclude_macs:
            return False
        return not any(fnmatch.fnmatchcase(ev.name, pat) for pat in s.exclude_names)

    def on_router(self, ev: RouterEvent) -> None:
        """A link's RA router came or went: its ENI's IPv6 table routes follow now, not
        at the next refresh (an ENI configured before the first RA uses fe80:ec2::1).
        From the record, without IMDS; a router re-announced unchanged does nothing."""
        before = self.routers.get(ev.index, frozenset())
        after = before | {ev.gateway} if ev.kind is LinkChange.NEW else before - {ev.gateway}
        self.routers[ev.index] = after
        known = self.known.get(ev.index)
        if after == before or known is None:
            return
        name, mac = known
        # also without a record yet: queued behind an `up` still running for this ENI,
        # which may have read the link before the router came
        self.submit(f"mac {mac}", lambda e: e.reconverge(name), JobKind.UP, weak=True)

    def _submit_up(self, index: int, mac: str) -> None:
        def up(engine: Engine) -> Optional[Result]:
            try:
                done = _up_by_index(engine, index)
            except (
                ImdsError, MetadataError, ApplyFailed, LockTimeout, TableConflict, RuntimeDirError,
            ):  # fmt: skip
                self._retry_later(index, mac)
                raise
            with self._retry_lock:
                self.retries.pop(index, None)
            return done

        self.submit(f"mac {mac}", up, JobKind.UP)

    def _retry_later(self, index: int, mac: str) -> None:
        """A new ENI whose `up` failed (IMDS garbage or outage, a busy lock) is tried
        again with backoff: no link event will come for it, and the refresh only covers
        ENIs that are configured. Capped at the refresh interval."""
        with self._retry_lock:
            _, _, delay = self.retries.get(index, (0.0, mac, RETRY_FIRST / 2))
            delay = min(delay * 2, self.settings.refresh_interval)
            self.retries[index] = (time.monotonic() + delay, mac, delay)
        log.info("%s: trying again in %.0f s", mac, delay)

    def _due_retries(self, now: float) -> float:
        """Submit the retries that are due; the time of the next one."""
        with self._retry_lock:
            due = [(i, m) for i, (at, m, _) in self.retries.items() if at <= now]
            for index, _mac in due:
                _at, mac, delay = self.retries[index]
                self.retries[index] = (float("inf"), mac, delay)  # until the job ends
            nxt = min((at for at, _, _ in self.retries.values()), default=float("inf"))
        for index, mac in due:
            if self.known.get(index, ("", ""))[1] == mac:
                self._submit_up(index, mac)
            else:
                with self._retry_lock:
                    self.retries.pop(index, None)
        return nxt

    def refresh(self) -> None:
        self.submit("refresh", lambda e: e.refresh(listing=self._listing_due), JobKind.REFRESH)

    def _listing_due(self, mac: str) -> bool:
        # Called from the refresh's IMDS threads, one call per ENI (distinct keys).
        rounds = self.refresh_rounds.get(mac, 0) + 1
        self.refresh_rounds[mac] = rounds
        return rounds % LISTING_EVERY == 0

    def reload(self) -> None:
        try:
            self.settings = config_mod.load()
        except Ec2NetError as err:
            log.error("reload: keeping the running configuration: %s", err)
            return
        stats = self.imds.stats  # the counters go on across a reload
        self.imds = ImdsClient.from_settings(self.settings, self.store.token_cache)
        self.imds.stats = stats
        log.info("reloaded %s", self.settings.config_path)
        self.rescan()

    def _start_workers(self) -> None:
        """Every worker thread from the start, not on demand: the daemon's thread count
        is then the same for as long as it runs (a pool growing to its bound over days
        looks like a leak to whoever counts threads)."""
        started = threading.Barrier(WORKERS + 1)
        for _ in range(WORKERS):
            self.pool.submit(started.wait)
        started.wait(timeout=10)

    # --- main loop ---------------------------------------------------------------------
    def run(self) -> int:
        cancel.reset()
        wake_r, wake_w = socket.socketpair()
        wake_r.setblocking(False)
        wake_w.setblocking(False)
        self._wake = wake_w
        previous = signal.set_wakeup_fd(wake_w.fileno())
        handlers = {
            signal.SIGTERM: self._on_stop,
            signal.SIGINT: self._on_stop,
            signal.SIGHUP: self._on_hup,
        }
        old = {sig: signal.signal(sig, h) for sig, h in handlers.items()}
        events = LinkEvents()  # opened before the first scan: no event falls between
        self._start_workers()
        try:
            self.rescan()
            notify("READY=1\nSTATUS=watching link events")
            log.info("watching link events; refresh every %ss", self.settings.refresh_interval)
            self._loop(events, wake_r)
        finally:
            notify("STOPPING=1")
            # Every wait a job may be in (propagation, backoff, locks) ends at once; a
            # job cut short leaves recorded intent the next start converges from.
            cancel.cancel()
            events.close()
            signal.set_wakeup_fd(previous)
            for sig, h in old.items():
                signal.signal(sig, h)
            self.pending.clear()
            self.pool.shutdown(wait=True, cancel_futures=True)
            self._wake = None
            wake_r.close()
            wake_w.close()
        return 0

    def _loop(self, events: LinkEvents, wake: socket.socket) -> None:
        watchdog = watchdog_interval()
        next_ping = time.monotonic()
        while not self.stopping:
            now = time.monotonic()
            if watchdog is not None and now >= next_ping:
                notify("WATCHDOG=1")
                next_ping = now + watchdog
            if now >= self.next_refresh:
                self.refresh()
                self.next_refresh = now + self._interval()
            if self.resync_due is not None and now >= self.resync_due:
                self.resync()
            deadline = min(self.next_refresh, self._due_retries(now))
            if self.resync_due is not None:
                deadline = min(deadline, self.resync_due)
            if watchdog is not None:
                deadline = min(deadline, next_ping)
            timeout = max(0.0, deadline - now)
            if self.pending:  # a follow-up waits for its key's job: look again soon
                timeout = min(timeout, PENDING_POLL)
            fds = [events.fileno(), wake.fileno()]
            ready, _, _ = select.select(fds, [], [], timeout)
            if wake.fileno() in ready:
                _drain(wake)
            if self.reload_requested:
                self.reload_requested = False
                self.reload()
            if events.fileno() in ready:
                batch = events.read()
                lost = bool(batch) and isinstance(batch[0], Resync)
                if lost:
                    # One re-read for the whole batch; its link events are older than
                    # that re-read, which sees what they said (and what was lost).
                    with self._metrics_lock:
                        self.counters = self.counters.lost_events()
                    if self.resync_due is None:
                        log.warning("link events were lost; re-reading all links")
                    self.resync()
                for ev in batch:
                    if isinstance(ev, RouterEvent):
                        self.on_router(ev)
                    elif isinstance(ev, LinkEvent) and not lost:
                        self.on_event(ev)
            self._reap()

    def _on_stop(self, signum: int, frame: Any) -> None:
        self.stopping = True

    def _on_hup(self, signum: int, frame: Any) -> None:
        self.reload_requested = True


def _log_results(done: object) -> None:
    """A job's results that changed something, in the journal (a command prints them)."""
    found = done if isinstance(done, list) else [done]
    for r in results.worth_logging(x for x in found if isinstance(x, Result)):
        log.info("%s", "\n".join(results.lines(r)))


def _up_by_index(engine: Engine, index: int) -> Optional[Result]:
    """Configure the link with this index under the name it has NOW: a new NIC is
    often renamed (eth0 -> ens6) right after the event that announced it."""
    link = next((ln for ln in engine.backend.links() if ln.index == index), None)
    if link is None:
        return None
    try:
        return engine.up(link.name, fresh_within=FRESH_WITHIN)
    except InterfaceGone as err:  # detached (or renamed: its event comes next)
        log.info("%s", err)
        return None


def _drain(sock: socket.socket) -> None:
    try:
        while sock.recv(64):
            pass
    except BlockingIOError:
        pass


def run(settings: Settings) -> int:
    return Daemon(settings).run()
