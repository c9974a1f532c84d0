"""The engine: runs the pipeline for the CLI verbs and the watch daemon.

IMDS reads happen under the ENI's own lock only; reading current state, diffing,
applying and writing records happen under one short global lock, so concurrent
triggers (udev units, the scan, the daemon, a person) serialise only for milliseconds
and always diff against fresh kernel state.
"""

from __future__ import annotations

import contextlib
import fnmatch
import json
import logging
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Optional

from ec2net import plan as planner
from ec2net.backends.base import ApplyReport, Backend, Intent
from ec2net.config import Settings
from ec2net.diff import Current, Delta, changeset, diff_interface
from ec2net.errors import (
    ApplyFailed,
    Ec2NetError,
    InterfaceGone,
    TableConflict,
)
from ec2net.imds import ImdsClient
from ec2net.metadata import EniMetadata, fetch_dynamic, wait_for_eni
from ec2net.model import (
    AddressSpec,
    ChangeSet,
    Family,
    InterfacePlan,
    IPAddress,
    Link,
    Op,
    RouteSpec,
    RuleSpec,
    rule_of_table,
)
from ec2net.render import Files, Renderer, RenderInput
from ec2net.state import Record, Store, eni_to_json, write_if_changed

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Target:
    """One ENI to converge: plan None means remove everything of ours."""

    mac: str
    table: int
    ifname: str
    link: Optional[Link]
    plan: Optional[InterfacePlan]
    record: Optional[Record]
    eni: Optional[EniMetadata]


@dataclass
class Result:
    ifname: str
    action: str  # "configured", "unchanged", "removed", "skipped", "failed"
    changes: ChangeSet = field(default_factory=ChangeSet)
    detail: str = ""


def _families(eni: Optional[EniMetadata]) -> set[Family]:
    if eni is None:
        return set()
    fams = set()
    if eni.ipv4s or eni.ipv4_prefixes:
        fams.add(Family.V4)
    if eni.ipv6s or eni.ipv6_prefixes:
        fams.add(Family.V6)
    return fams


class Engine:
    def __init__(
        self, settings: Settings, backend: Backend, imds: ImdsClient, store: Store
    ) -> None:
        self.settings = settings
        self.backend = backend
        self.imds = imds
        self.store = store

    # --- eligibility -------------------------------------------------------------
    def skip_reason(self, link: Link) -> Optional[str]:
        s = self.settings
        if link.driver not in s.drivers:
            return f"driver {link.driver or 'none'!r} is not in interfaces.drivers"
        if any(fnmatch.fnmatchcase(link.name, pat) for pat in s.exclude_names):
            return "excluded by name"
        if link.mac in s.exclude_macs:
            return "excluded by MAC"
        return self.backend.blocked(link.name)

    def eni_skip_reason(self, eni: EniMetadata) -> Optional[str]:
        if eni.eni_id in self.settings.exclude_eni_ids:
            return "excluded by ENI id"
        if eni.is_primary and not self.settings.manage_primary:
            return "primary ENI (interfaces.manage_primary is off)"
        if eni.is_primary and not self.backend.primary_ok:
            return f"primary ENI: its boot profile owns it under backend {self.backend.name}"
        return None

    def primary_mac(self) -> str:
        """The primary ENI's MAC, cached for the life of the runtime directory (it
        cannot change while the instance runs; /run does not survive a stop)."""
        path = self.store.instance_file
        try:
            return str(json.loads(path.read_text())["mac"])
        except (OSError, ValueError, KeyError, TypeError):
            pass
        mac = self.imds.get("mac").strip().lower()
        self.store.ensure()
        write_if_changed(path, json.dumps({"mac": mac}) + "\n")
        return mac

    # --- locking -------------------------------------------------------------------
    @contextlib.contextmanager
    def _locked(self, macs: Sequence[str]) -> Iterator[None]:
        # Sorted order: anyone holding several ENI locks takes them the same way.
        with contextlib.ExitStack() as stack:
            for mac in sorted(set(macs)):
                stack.enter_context(self.store.lock(mac, self.settings.lock_timeout))
            yield

    # --- verbs -------------------------------------------------------------------
    def up(self, ifname: str, *, dry_run: bool = False, fresh_within: float = 0.0) -> Result:
        """Configure one ENI. With `fresh_within`, an ENI whose record on this very link
        is younger than that many seconds is taken as done (another trigger just did
        it), sparing the IMDS reads."""
        link = self.backend.link(ifname)
        if link is None:
            raise InterfaceGone(f"{ifname}: no such interface")
        reason = self.skip_reason(link)
        with self._locked([link.mac]):
            record = self.store.load(link.mac)
            if (
                fresh_within
                and record is not None
                and record.ifindex == link.index
                and time.time() - record.updated < fresh_within
            ):
                return Result(ifname, "unchanged", detail="configured moments ago")
            if reason is None:
                eni = wait_for_eni(
                    self.imds, link.mac, self.primary_mac(), self.settings.propagation_timeout
                )
                reason = self.eni_skip_reason(eni)
            if reason is not None:
                if record is None:
                    log.info("%s: skipped: %s", ifname, reason)
                    return Result(ifname, "skipped", detail=reason)
                log.info("%s: %s; removing what ec2net configured before", ifname, reason)
                return self._converge([self._removal(record, link)], dry_run)[0]
            target = self._target(eni, link, record)
            return self._converge([target], dry_run)[0]

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
            return Result(ifname, "unchanged", detail="nothing configured by ec2net")
        with self._locked([r.mac for r in records]):
            fresh = [self.store.load(r.mac) for r in records]
            targets = [self._removal(r, links.get(r.mac)) for r in fresh if r is not None]
            results = self._converge(targets, dry_run)
        changes = tuple(c for r in results for c in r.changes.changes)
        return Result(ifname, "removed", ChangeSet(changes))

    def down_mac(self, mac: str) -> Result:
        """Remove what we configured for the ENI with this MAC, if its link is gone
        (the daemon's path on a link removal: by MAC, as names get reused)."""
        with self._locked([mac]):
            rec = self.store.load(mac)
            if rec is None:
                return Result(mac, "unchanged")
            live = next((ln for ln in self.backend.links() if ln.mac == mac), None)
            if live is not None:
                return Result(live.name, "unchanged", detail="link is present")
            return self._converge([self._removal(rec, None)], dry_run=False)[0]

    def refresh(self, ifname: Optional[str] = None, *, dry_run: bool = False) -> list[Result]:
        """Re-read the addresses of configured ENIs. An IMDS failure leaves the ENI as
        it is and is raised after the other ENIs were refreshed."""
        links = {ln.mac: ln for ln in self.backend.links()}
        records = [r for r in self.store.records() if ifname is None or r.ifname == ifname]
        if ifname is not None and not records:
            live = next((ln for ln in links.values() if ln.name == ifname), None)
            if live is None:
                raise InterfaceGone(f"{ifname}: no such interface")
            return [self.up(ifname, dry_run=dry_run)]
        results: list[Result] = []
        first_error: Optional[Ec2NetError] = None
        for rec in records:
            try:
                results += self._refresh_one(rec, links.get(rec.mac), dry_run)
            except Ec2NetError as err:
                log.warning("%s: refresh failed, keeping current state: %s", rec.ifname, err)
                results.append(Result(rec.ifname, "failed", detail=str(err)))
                first_error = first_error or err
        if first_error is not None:
            raise first_error
        return results

    def _refresh_one(self, rec: Record, link: Optional[Link], dry_run: bool) -> list[Result]:
        with self._locked([rec.mac]):
            fresh_rec = self.store.load(rec.mac)
            if fresh_rec is None:
                return []
            known = fresh_rec.eni()
            if link is None or known is None:
                return self._converge([self._removal(fresh_rec, link)], dry_run)
            eni = fetch_dynamic(self.imds, known)
            return self._converge([self._target(eni, link, fresh_rec)], dry_run)

    def scan(self, *, dry_run: bool = False) -> list[Result]:
        """Configure every eligible ENI present; clean up records of ENIs that are gone.
        One converge for all of them: one batch to the kernel."""
        links = self.backend.links()
        by_mac = {ln.mac: ln for ln in links}
        candidates = [ln for ln in links if self.skip_reason(ln) is None]
        primary = self.primary_mac()
        targets_meta: list[tuple[EniMetadata, Link]] = []
        results: list[Result] = []
        failed: Optional[Ec2NetError] = None
        for link in candidates:
            if link.mac == primary and not self.settings.manage_primary:
                continue
            try:
                eni = wait_for_eni(self.imds, link.mac, primary, self.settings.propagation_timeout)
            except Ec2NetError as err:
                log.warning("%s: %s", link.name, err)
                results.append(Result(link.name, "failed", detail=str(err)))
                failed = failed or err
                continue
            reason = self.eni_skip_reason(eni)
            if reason is None:
                targets_meta.append((eni, link))
        macs = [e.mac for e, _ in targets_meta] + [r.mac for r in self.store.records()]
        with self._locked(macs):
            targets = [self._target(e, ln, self.store.load(e.mac)) for e, ln in targets_meta]
            wanted = {t.mac for t in targets}
            for rec in self.store.records():
                live = by_mac.get(rec.mac)
                gone = live is None or self.skip_reason(live) is not None
                if rec.mac not in wanted and (gone or rec.mac == primary):
                    targets.append(self._removal(rec, live))
            results += self._converge(targets, dry_run)
        if failed is not None:
            raise failed
        return results

    def render(self, renderer: Renderer, ifname: Optional[str] = None) -> Files:
        """What a file backend would write for the ENIs present (or just `ifname`)."""
        links = [ln for ln in self.backend.links() if ifname is None or ln.name == ifname]
        if ifname is not None and not links:
            raise InterfaceGone(f"{ifname}: no such interface")
        primary = self.primary_mac()
        files: Files = {}
        for link in links:
            reason = self.skip_reason(link)
            if reason is None and link.mac == primary and not self.settings.manage_primary:
                reason = "primary ENI (interfaces.manage_primary is off)"
            if reason is None:
                eni = wait_for_eni(self.imds, link.mac, primary, self.settings.propagation_timeout)
                reason = self.eni_skip_reason(eni)
            if reason is not None:
                log.log(
                    logging.INFO if ifname else logging.DEBUG, "%s: skipped: %s", link.name, reason
                )
                continue
            plan = planner.plan_interface(eni, link)
            files.update(renderer(RenderInput(plan, link, eni, self.settings.ifcfg_dhcp)))
        return files

    # --- targets -------------------------------------------------------------------
    def _target(self, eni: EniMetadata, link: Link, record: Optional[Record]) -> Target:
        return Target(
            eni.mac,
            planner.table_for(eni),
            link.name,
            link,
            planner.plan_interface(eni, link),
            record,
            eni,
        )

    def _removal(self, record: Record, link: Optional[Link]) -> Target:
        """Remove what we configured for `record`; `link` is its link if still present."""
        return Target(
            record.mac,
            record.table,
            link.name if link else record.ifname,
            link,
            None,
            record,
            None,
        )

    # --- the one place that changes the system -------------------------------------
    def _check_tables(self, targets: Sequence[Target]) -> None:
        """Refuse to plan an ENI into a table another live ENI holds: IMDS can report a
        stale device-number, and taking the table would break the other ENI."""
        present = {ln.mac for ln in self.backend.links()}
        holders = {r.table: r for r in self.store.records() if r.mac in present}
        for t in targets:
            other = holders.get(t.table)
            if t.plan is not None and other is not None and other.mac != t.mac:
                raise TableConflict(
                    f"{t.ifname}: table {t.table} belongs to {other.ifname} "
                    f"({other.eni_id}); waiting for IMDS to settle"
                )

    def _converge(self, targets: Sequence[Target], dry_run: bool) -> list[Result]:
        with self.store.lock("global", self.settings.lock_timeout):
            self._check_tables(targets)
            delta, currents = self._delta(targets)
            changes = changeset(delta)
            if dry_run:
                return [_result(t, changes) for t in targets]
            for t in targets:
                if t.plan is not None and t.link is not None and not t.link.up:
                    self.backend.set_up(t.ifname)
            started = time.perf_counter()
            intents = [self._intent(t) for t in targets]
            # Called even without changes: a file backend may still need to write files.
            report = self.backend.apply(changes, intents)
            log.debug(
                "%s: applied %d of %d changes in %.1f ms",
                self.backend.name,
                len(report.applied),
                len(changes),
                (time.perf_counter() - started) * 1e3,
            )
            self._write_records(targets, currents, report)
            remaining = self._settle(targets)
        for change, why in report.failed:
            log.error("%s: %s failed: %s", _ifname_of(change.obj), change, why)
        results = [_result(t, ChangeSet(tuple(report.applied))) for t in targets]
        for r in results:
            if r.changes:
                log.info("%s: %s (%d changes)", r.ifname, r.action, len(r.changes))
                for c in r.changes.changes:
                    log.debug("%s: %s", r.ifname, c)
        if remaining:
            raise ApplyFailed(
                f"{len(remaining)} changes did not take effect, e.g. {remaining.changes[0]}"
            )
        return results

    def _intent(self, t: Target) -> Intent:
        return Intent(t.mac, t.ifname, t.table, t.link, t.plan, t.eni)

    def _settle(self, targets: Sequence[Target]) -> ChangeSet:
        """What did not take effect. A network manager applies files on its own time:
        wait for it (bounded), and judge it by what it must add. What it adds beyond
        the plan (NetworkManager's own prefix routes in the table) is its business."""
        timeout = self.backend.settle_timeout
        deadline = time.monotonic() + timeout
        wanted = {t.link.index for t in targets if t.plan is not None and t.link is not None}
        while True:
            remaining = changeset(self._delta(targets)[0])
            if timeout:
                remaining = ChangeSet(tuple(c for c in remaining.changes if c.op is Op.ADD))
            if not remaining or time.monotonic() >= deadline:
                return remaining
            if timeout and not wanted <= {ln.index for ln in self.backend.links()}:
                # A device went away meanwhile (unplugged): what it lacks never comes,
                # and waiting would hold the global lock its removal needs.
                return remaining
            time.sleep(0.05)

    def current(
        self,
        table: int,
        link: Optional[Link],
        owned_ips: frozenset[IPAddress],
        owned_routes: set[RouteSpec],
        owned_rules: set[RuleSpec],
    ) -> Current:
        """One ENI's current state, scoped to its table, from dumps already taken."""
        addrs = frozenset(self.backend.addresses(link.name)) if link else frozenset()
        return Current(
            link_addresses=addrs,
            owned_ips=owned_ips,
            routes=frozenset(r for r in owned_routes if r.table == table),
            rules=frozenset(r for r in owned_rules if rule_of_table(r, table)),
        )

    def _delta(self, targets: Sequence[Target]) -> tuple[Delta, dict[str, Current]]:
        owned_routes = self.backend.owned_routes()
        owned_rules = self.backend.owned_rules()
        delta = Delta()
        currents: dict[str, Current] = {}
        # A table that a gone ENI leaves and a new one takes in the same converge: the
        # new ENI's diff replaces the old content; the removal must not delete it again.
        claimed = {t.table for t in targets if t.plan is not None}
        for t in targets:
            owned_ips = t.record.owned() if t.record else frozenset()
            cur = self.current(t.table, t.link, owned_ips, owned_routes, owned_rules)
            if t.plan is None and t.table in claimed:
                cur = replace(cur, routes=frozenset(), rules=frozenset())
            currents[t.mac] = cur
            delta.extend(diff_interface(t.plan, cur))
        return delta, currents

    def _write_records(
        self, targets: Sequence[Target], currents: dict[str, Current], report: ApplyReport
    ) -> None:
        added: set[IPAddress] = {
            c.obj.address.ip
            for c in report.applied
            if c.op is Op.ADD and isinstance(c.obj, AddressSpec)
        }
        for t in targets:
            if t.plan is None or t.link is None or t.eni is None:
                self.store.delete(t.mac)
                continue
            cur = currents[t.mac]
            present = {a.address.ip for a in cur.link_addresses}
            wanted = {a.address.ip for a in t.plan.addresses}
            owned = ((cur.owned_ips & present) | (added & wanted)) & wanted
            self.store.save(
                Record(
                    mac=t.mac,
                    eni_id=t.eni.eni_id,
                    ifname=t.ifname,
                    ifindex=t.link.index,
                    table=t.table,
                    owned_ips=sorted(str(a) for a in owned),
                    metadata=eni_to_json(t.eni),
                )
            )


def _ifname_of(obj: object) -> str:
    return str(getattr(obj, "ifname", "") or "-")


def _result(t: Target, changes: ChangeSet) -> Result:
    mine = tuple(c for c in changes.changes if _belongs(c.obj, t))
    if t.plan is None:
        return Result(t.ifname, "removed", ChangeSet(mine))
    return Result(t.ifname, "configured" if mine else "unchanged", ChangeSet(mine))


def _belongs(obj: object, t: Target) -> bool:
    if isinstance(obj, RuleSpec):
        return rule_of_table(obj, t.table)
    if isinstance(obj, RouteSpec):
        return obj.table == t.table
    return getattr(obj, "ifname", None) == t.ifname
