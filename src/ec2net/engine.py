"""The engine: the verbs of the CLI and the daemon, over one converge stage.

Every verb has the same shape: read links, decide eligibility (eligibility.py), read
IMDS (under the ENI's own lock, never the global one), then hand a list of `Want`s to
one converge (converge.py), which snapshots the kernel once, checks tables, diffs,
records intent, applies and verifies under one short global lock. So concurrent
triggers (udev units, the scan, the daemon, a person) serialise only for milliseconds,
and each converge diffs against fresh kernel state.

Convergence model (details in converge.py): no rollback; every step is idempotent and
intent is recorded before any change, so whatever interrupts a verb, the next run of
any verb converges.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Optional, TypeVar

from ec2net import cloudinit, journal, othertools
from ec2net.backends.base import Backend
from ec2net.config import Settings
from ec2net.converge import Action, Converger, Outcome, Result
from ec2net.eligibility import Skip, eni_skip, link_skip
from ec2net.errors import Ec2NetError, InterfaceGone, MetadataError
from ec2net.imds import ImdsClient
from ec2net.metadata import EniMetadata, fetch_dynamic, wait_for_eni
from ec2net.model import ChangeSet, Link
from ec2net.plan import PlanOptions
from ec2net.render import Files, Renderer, RenderInput
from ec2net.state import Record, Store
from ec2net.targets import Want, resolve

__all__ = ["Action", "Engine", "Result"]

log = logging.getLogger(__name__)

# IMDS reads of several ENIs run side by side (scan, refresh), bounded: IMDS limits
# packets per second per ENI, and one slow ENI must not cost the others its wait.
IMDS_PARALLEL = 8

_MAC = re.compile(r"[0-9a-f]{2}(?::[0-9a-f]{2}){5}")

T = TypeVar("T")
R = TypeVar("R")


class Engine:
    def __init__(
        self, settings: Settings, backend: Backend, imds: ImdsClient, store: Store
    ) -> None:
        self.settings = settings
        self.backend = backend
        self.imds = imds
        self.store = store
        root = Path(settings.files_root)
        self.converger = Converger(
            backend,
            store,
            settings.lock_timeout,
            lambda ifname, table, theirs: othertools.recognise(root, ifname, table, theirs),
            lambda: othertools.host(root, cloudinit.DROPIN).exists(),
        )

    # --- facts -----------------------------------------------------------------------
    def primary_mac(self) -> str:
        """The primary ENI's MAC, cached for the life of the runtime directory (it
        cannot change while the instance runs; /run does not survive a stop)."""
        path = self.store.instance_file
        try:
            return str(json.loads(self.store.read(path) or "")["mac"])
        except (OSError, ValueError, KeyError, TypeError):
            pass
        raw = self.imds.get("mac")
        mac = raw.strip().lower()
        if not _MAC.fullmatch(mac):
            raise MetadataError("mac", raw, "not a MAC address")
        self.store.write(path, json.dumps({"mac": mac}) + "\n")
        return mac

    def want(
        self,
        eni: EniMetadata,
        record: Optional[Record],
        *,
        refresh: bool = False,
        take_over: bool = False,
    ) -> Want:
        """The request to configure `eni`, with what the configuration adds to its plan."""
        s = self.settings
        overrides = dict(s.mtu_overrides)
        choice = overrides.get(eni.eni_id, overrides.get(eni.mac, s.mtu))
        mtu_from = None
        mtu: Optional[int] = None
        if choice == "auto" and not eni.is_primary:
            mtu_from = self.primary_mac()
        elif isinstance(choice, int):
            mtu = choice
        options = PlanOptions(mtu=mtu, local_prefixes=s.prefixes_local)
        return Want(eni.mac, eni, record, requires_record=refresh, options=options,
                    mtu_from=mtu_from, take_over=take_over)  # fmt: skip

    def link_skip(self, link: Link) -> Optional[Skip]:
        return link_skip(link, self.settings, self.backend, self.primary_mac())

    def _wait(self, mac: str, index: Optional[int] = None) -> EniMetadata:
        """The ENI's metadata once IMDS lists it; given the link's ifindex, the wait
        ends as soon as that link is gone."""
        present = self.backend.present
        return wait_for_eni(
            self.imds,
            mac,
            self.primary_mac(),
            self.settings.propagation_timeout,
            gone=(lambda: False) if index is None else (lambda: not present(index)),
        )

    @contextlib.contextmanager
    def _locked(self, macs: Sequence[str]) -> Iterator[None]:
        # Sorted order: anyone holding several ENI locks takes them the same way.
        with contextlib.ExitStack() as stack:
            for mac in sorted(set(macs)):
                stack.enter_context(self.store.lock(mac, self.settings.lock_timeout))
            yield

    def _link(self, ifname: str) -> Link:
        link = next((ln for ln in self.backend.links() if ln.name == ifname), None)
        if link is None:
            raise InterfaceGone(f"{ifname}: no such interface")
        return link

    # --- verbs -------------------------------------------------------------------------
    def up(
        self,
        ifname: str,
        *,
        dry_run: bool = False,
        fresh_within: float = 0.0,
        take_over: bool = False,
    ) -> Result:
        """Configure one ENI. With `fresh_within`, an ENI whose record on this very link
        is younger than that many seconds is taken as done (another trigger just did
        it), sparing the IMDS reads. `take_over`: replace another tool's routes and
        rules in the ENI's table instead of leaving the ENI to it (foreign.py)."""
        link = self._link(ifname)
        skip = self.link_skip(link)
        with self._locked([link.mac]):
            record = self.store.load(link.mac)
            if (
                fresh_within
                and record is not None
                and record.done
                and record.ifindex == link.index
                # a record from the "future" (the wall clock was stepped back since)
                # tells nothing about how recent it is
                and 0 <= time.time() - record.updated < fresh_within
            ):
                return Result(ifname, Action.UNCHANGED, detail="configured moments ago")
            if skip is None:
                eni = self._wait(link.mac, link.index)
                journal.remember(ifname, eni.mac, eni.eni_id)
                skip = eni_skip(eni, self.settings, self.backend)
            if skip is not None:
                if record is None:
                    log.log(logging.DEBUG if skip.quiet else logging.INFO,
                            "%s: skipped: %s", ifname, skip.reason)  # fmt: skip
                    return Result(ifname, Action.SKIPPED, detail=skip.reason)
                log.info("%s: %s; removing what ec2net configured before", ifname, skip.reason)
                return self._one(Want(link.mac, None, record), dry_run)
            return self._one(self.want(eni, record, take_over=take_over), dry_run)

    def reconverge(self, ifname: str) -> Result:
        """Converge a configured ENI again from what its record knows, without IMDS: the
        kernel side changed (the link's IPv6 router), IMDS did not. An ENI without a
        usable record is left to `up`, a link gone since to the removal its event asked for."""
        try:
            link = self._link(ifname)
        except InterfaceGone:
            return Result(ifname, Action.UNCHANGED, detail="link is gone")
        with self._locked([link.mac]):
            record = self.store.load(link.mac)
            eni = record.eni() if record is not None else None
            if record is None or eni is None or record.ifindex != link.index:
                return Result(ifname, Action.UNCHANGED, detail="not configured on this link")
            return self._one(self.want(eni, record), dry_run=False)

    def down(self, ifname: str, *, dry_run: bool = False) -> Result:
        links = {ln.mac: ln for ln in self.backend.links()}
        live = next((ln for ln in links.values() if ln.name == ifname), None)
        records = [
            r
            for r in self.store.records()
            if (live is not None and r.mac == live.mac)
            or (r.ifname == ifname and r.mac not in links)
        ]
        if not records:
            log.info("%s: nothing configured by ec2net", ifname)
            return Result(ifname, Action.UNCHANGED, detail="nothing configured by ec2net")
        with self._locked([r.mac for r in records]):
            out = self.converger.run([Want(r.mac, None, r) for r in records], dry_run=dry_run)
        out.raise_error()
        changes = tuple(c for r in out.results for c in r.changes.changes)
        return Result(ifname, Action.REMOVED, ChangeSet(changes))

    def down_all(self, *, dry_run: bool = False) -> list[Result]:
        """Remove what ec2net configured on every ENI it has a record of (a package's
        removal): one converge."""
        records = self.store.records()
        if not records:
            return []
        with self._locked([r.mac for r in records]):
            out = self.converger.run([Want(r.mac, None, r) for r in records], dry_run=dry_run)
        out.raise_error()
        return out.results

    def down_mac(self, mac: str) -> Result:
        """Remove what we configured for the ENI with this MAC, if its link is gone
        (the daemon's path on a link removal: by MAC, as names get reused)."""
        with self._locked([mac]):
            rec = self.store.load(mac)
            if rec is None:
                return Result(mac, Action.UNCHANGED)
            live = next((ln for ln in self.backend.links() if ln.mac == mac), None)
            if live is not None:
                return Result(live.name, Action.UNCHANGED, detail="link is present")
            return self._one(Want(mac, None, rec), dry_run=False)

    def refresh(
        self,
        ifname: Optional[str] = None,
        *,
        dry_run: bool = False,
        listing: Callable[[str], bool] = lambda mac: False,
    ) -> list[Result]:
        """Re-read the addresses of configured ENIs and converge them in one pass. An
        IMDS failure leaves that ENI as it is and is raised after the others converged.
        `listing(mac)` says whether to read that ENI's key listing this time (what it
        finds: metadata.fetch_dynamic)."""
        links = {ln.mac: ln for ln in self.backend.links()}
        records = [r for r in self.store.records() if ifname is None or r.ifname == ifname]
        if ifname is not None and not records:
            live = next((ln for ln in links.values() if ln.name == ifname), None)
            if live is None:
                raise InterfaceGone(f"{ifname}: no such interface")
            return [self.up(ifname, dry_run=dry_run)]
        out = Outcome()
        wants: list[Want] = []

        def read(rec: Record) -> Optional[Want]:
            if rec.mac not in links:
                return Want(rec.mac, None, rec)
            known = rec.eni()
            if known is None:  # a salvaged record: everything is read again
                return self.want(self._wait(rec.mac), rec, refresh=True)
            fresh = fetch_dynamic(self.imds, known, listing=listing(rec.mac))
            return self.want(fresh, rec, refresh=True)

        for rec, got in _parallel(read, records):
            if isinstance(got, Ec2NetError):
                log.warning("%s: refresh failed, keeping current state: %s", rec.ifname, got)
                out.fail(rec.ifname, got)
            elif got is not None:
                wants.append(got)
        return self._converge(wants, out, [r.mac for r in records], dry_run)

    def scan(
        self, *, dry_run: bool = False, take_over: Callable[[Link], bool] = lambda link: False
    ) -> list[Result]:
        """Configure every eligible ENI present, clean up records of ENIs that are gone
        and our leftovers no record points to. IMDS is read for all new ENIs at once, so
        one that never propagates costs the scan one propagation timeout, not one each.
        `take_over(link)`: whether to take that ENI over from another tool."""
        links = self.backend.links()
        candidates = []
        out = Outcome()
        for ln in links:
            try:
                skip = self.link_skip(ln)
            except Ec2NetError as err:  # e.g. a name the manager cannot take: that link only
                out.fail(ln.name, err)
                continue
            if skip is None:
                candidates.append(ln)
            else:
                log.log(logging.DEBUG if skip.quiet else logging.INFO,
                        "%s: skipped: %s", ln.name, skip.reason)  # fmt: skip
        wants: list[Want] = []
        unknown = {ln.mac for ln in links if ln.name in {r.ifname for r in out.results}}
        for link, got in _parallel(lambda ln: self._wait(ln.mac, ln.index), candidates):
            if isinstance(got, Ec2NetError):
                out.fail(link.name, got)
                unknown.add(link.mac)
                continue
            skip = eni_skip(got, self.settings, self.backend)
            if skip is None:
                wants.append(self.want(got, None, take_over=take_over(link)))
        wanted = {w.mac for w in wants}
        for rec in self.store.records():
            if rec.mac not in wanted and rec.mac not in unknown:
                wants.append(Want(rec.mac, None, rec))  # gone, excluded or skipped now
        macs = [w.mac for w in wants]
        return self._converge(wants, out, macs, dry_run, sweep_leftovers=True)

    def render(self, renderer: Renderer, ifname: Optional[str] = None) -> Files:
        """What a file backend would write for the ENIs present (or just `ifname`)."""
        snap = self.backend.snapshot()
        links = [ln for ln in snap.links if ifname is None or ln.name == ifname]
        if ifname is not None and not links:
            raise InterfaceGone(f"{ifname}: no such interface")
        files: Files = {}
        for link in links:
            skip = self.link_skip(link)
            eni = None
            if skip is None:
                eni = self._wait(link.mac)
                skip = eni_skip(eni, self.settings, self.backend)
            if skip is not None or eni is None:
                level = logging.INFO if ifname and skip and not skip.quiet else logging.DEBUG
                log.log(level, "%s: skipped: %s", link.name, skip.reason if skip else "")
                continue
            target = resolve(self.want(eni, None), snap)
            assert target.plan is not None
            plan = target.plan
            files.update(renderer(RenderInput(plan, link, eni, self.settings.ifcfg_dhcp)))
        return files

    # --- converge ----------------------------------------------------------------------
    def _one(self, want: Want, dry_run: bool) -> Result:
        out = self.converger.run([want], dry_run=dry_run)
        out.raise_error()
        return out.results[0]

    def _converge(
        self,
        wants: Sequence[Want],
        out: Outcome,
        macs: Sequence[str],
        dry_run: bool,
        *,
        sweep_leftovers: bool = False,
    ) -> list[Result]:
        with self._locked(macs):
            done = self.converger.run(wants, dry_run=dry_run, sweep_leftovers=sweep_leftovers)
        out.results += done.results
        out.error = out.error or done.error
        out.raise_error()
        return out.results


def _parallel(fn: Callable[[T], R], items: Sequence[T]) -> list[tuple[T, R | Ec2NetError]]:
    """fn over items, IMDS_PARALLEL at a time; an Ec2NetError is returned, not raised."""

    def call(item: T) -> R | Ec2NetError:
        try:
            return fn(item)
        except Ec2NetError as err:
            return err

    if len(items) <= 1:
        return [(item, call(item)) for item in items]
    with ThreadPoolExecutor(max_workers=min(IMDS_PARALLEL, len(items))) as pool:
        return list(zip(items, pool.map(call, items)))
