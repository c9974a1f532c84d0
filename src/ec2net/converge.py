"""One converge: snapshot -> table check -> diff -> record intent -> apply -> verify ->
finalise records. The only code that changes the system.

Convergence model: there is no rollback. Every step is idempotent (EEXIST on add and
ENOENT on delete are answers, not errors), so a converge that fails or is killed
part-way leaves a state the next run converges from, whoever runs it. That fits
per-ENI policy routing: each ENI's objects are independent of every other ENI's (no
shared rule), a half-built ENI routes nothing wrongly (rules are added last and
removed first), and undoing a partial change would only race the next run.

What makes that safe after a crash is the record written ahead of the change: before
the first netlink message or file write, each ENI's record lists every address the
converge is about to add (phase `applying`) and claims its table. After verify the
record keeps exactly the owned addresses still present (`applied`). A removal keeps
its record (`removing`) until verify shows nothing of ours left, so a partial removal
is finished by the next run rather than forgotten. Routes and rules need no list: they
carry our protocol and live in the ENI's table.
"""

from __future__ import annotations

import enum
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Callable, Optional

from ec2net import cancel, cloudinit, foreign, journal
from ec2net import verify as verifier
from ec2net.backends.base import Backend
from ec2net.diff import Delta, changeset
from ec2net.errors import ApplyFailed, Ec2NetError, ForeignConfig, TableConflict
from ec2net.foreign import Theirs
from ec2net.model import AddressSpec, ChangeSet, IPAddress, MtuSpec, Op, owns
from ec2net.snapshot import Snapshot
from ec2net.state import Phase, Record, Store, eni_to_json
from ec2net.targets import Target, Want, resolve

# Who another tool is, from its objects in an ENI's table: (ifname, table, objects) ->
# a name for messages, or None (othertools.recognise).
Recognise = Callable[[str, int, frozenset[Theirs]], Optional[str]]

log = logging.getLogger(__name__)

SETTLE_POLL = 0.05


class Action(str, enum.Enum):
    CONFIGURED = "configured"
    UNCHANGED = "unchanged"
    REMOVED = "removed"
    SKIPPED = "skipped"
    FAILED = "failed"

    def __str__(self) -> str:
        return self.value


@dataclass
class Result:
    ifname: str
    action: Action
    changes: ChangeSet = field(default_factory=ChangeSet)
    detail: str = ""


@dataclass
class Outcome:
    """Results per ENI, and the first error to report (exit code) once all were tried."""

    results: list[Result] = field(default_factory=list)
    error: Optional[Ec2NetError] = None

    def fail(self, ifname: str, err: Ec2NetError) -> None:
        log.warning("%s: %s", ifname, err)
        self.results.append(Result(ifname, Action.FAILED, detail=str(err)))
        self.error = self.error or err

    def raise_error(self) -> None:
        if self.error is not None:
            raise self.error


def check_tables(
    targets: Sequence[Target], records: Sequence[Record], snap: Snapshot
) -> tuple[list[Target], list[tuple[Target, TableConflict]]]:
    """Refuse every planned ENI whose table another live ENI holds (by record) or
    another planned ENI of this converge also wants: IMDS can report a stale
    device-number after a quick detach/attach, and sharing a table breaks both."""
    present = {ln.mac for ln in snap.links}
    leaving = {t.mac for t in targets if t.removing}
    holders = {
        r.table: r for r in records if r.mac in present and r.mac not in leaving and r.table
    }
    wanted: dict[int, list[Target]] = {}
    for t in targets:
        if not t.removing:
            wanted.setdefault(t.table, []).append(t)
    ok: list[Target] = []
    refused: list[tuple[Target, TableConflict]] = []
    for t in targets:
        if t.removing:
            ok.append(t)
            continue
        holder = holders.get(t.table)
        rivals = [o for o in wanted[t.table] if o.mac != t.mac]
        if holder is not None and holder.mac != t.mac:
            why = f"belongs to {holder.ifname} ({holder.eni_id})"
        elif rivals:
            others = ", ".join(f"{o.ifname} ({o.plan.eni_id if o.plan else '?'})" for o in rivals)
            why = f"is claimed by {others} too"
        else:
            ok.append(t)
            continue
        eni_id = t.plan.eni_id if t.plan else "?"
        refused.append(
            (
                t,
                TableConflict(
                    f"{t.ifname}: {eni_id}: table {t.table} {why}; refusing until IMDS "
                    "reports distinct network-card/device-number"
                ),
            )
        )
    return ok, refused


def check_foreign(
    targets: Sequence[Target],
    snap: Snapshot,
    *,
    adds_own_objects: bool,
    cloud_init_kept_off: bool = False,
) -> tuple[list[Target], list[Target]]:
    """Each planned ENI with the other tools' objects in its table (foreign.py): the ones
    to converge (their objects attached, replaced only on a take-over) and the ones to
    leave to that tool: not yet ours, and no take-over asked for. An ENI ec2net already
    configured stays ec2net's; theirs beside it are left as they are.

    cloud-init's policy routing for an ENI (in its own table, cloudinit.py) is taken
    over without being asked where cloud-init is kept from configuring the ENI again
    (`cloud_init_kept_off`: ec2net's drop-in is installed); elsewhere it is another
    tool's like any other."""
    ok: list[Target] = []
    left: list[Target] = []
    for t in targets:
        if t.removing:
            ok.append(t)
            continue
        claimed = (
            t.record is not None
            and t.record.table == t.table
            and t.record.phase != Phase.FOREIGN.value
        )
        theirs = snap.theirs_of(t.table)
        if adds_own_objects and claimed:
            # The manager adds ours with its own protocol: once the table is ours,
            # nothing in it can be told apart (and before, nothing of ours is there).
            theirs = frozenset()
        assert t.plan is not None
        ci = snap.cloud_init_of(t.ifname, (a.address.ip for a in t.plan.addresses))
        if ci and not cloud_init_kept_off:
            theirs, ci = theirs | ci, frozenset()
        found = replace(t, theirs=theirs)
        if ci:
            log.info(
                "%s: taking over from %s: %s", t.ifname, cloudinit.TOOL,
                "; ".join(foreign.summary(ci)),
            )  # fmt: skip
            if claimed:  # only cloud-init's: other objects beside ours stay as they are
                found = replace(found, theirs=ci, take_over=True)
            elif not theirs or t.take_over:
                found = replace(found, theirs=theirs | ci, take_over=True)
        (left if theirs and not t.take_over and not claimed else ok).append(found)
    return ok, left


def sweep(targets: Sequence[Target], records: Sequence[Record], snap: Snapshot) -> Delta:
    """Our routes and rules in ENI tables that no live ENI holds and no record points
    to: what a crash or a partial removal of an older version left behind. Never
    another tool's (under a manager that adds ours with its own protocol, only what
    carries ours)."""
    present = {ln.mac for ln in snap.links}
    held = {t.table for t in targets} | {r.table for r in records if r.mac in present}
    held |= {t for tg in targets for t in tg.tables()}
    out = Delta()
    for table in sorted(snap.tables() - held):
        theirs = snap.theirs_of(table)
        out.delete += sorted(snap.routes_of(table) - foreign.routes(theirs), key=str)
        out.delete += sorted(snap.rules_of(table) - foreign.rules(theirs), key=str)
        if out.delete:
            log.info("table %d: removing our leftovers (no ENI or record holds it)", table)
    return out


class Converger:
    def __init__(
        self,
        backend: Backend,
        store: Store,
        lock_timeout: float,
        recognise: Recognise = lambda ifname, table, theirs: None,
        cloud_init_kept_off: Callable[[], bool] = lambda: False,
    ) -> None:
        self.backend = backend
        self.store = store
        self.lock_timeout = lock_timeout
        self.recognise = recognise
        self.cloud_init_kept_off = cloud_init_kept_off

    def run(
        self, wants: Sequence[Want], *, dry_run: bool = False, sweep_leftovers: bool = False
    ) -> Outcome:
        out = Outcome()
        with self.store.lock("global", self.lock_timeout):
            snap = self.backend.snapshot()
            records = self.store.records()
            # The record as it is now: another trigger may have converged meanwhile.
            fresh = {r.mac: r for r in records}
            resolved = [
                resolve(replace(w, record=fresh.get(w.mac)), snap)
                for w in wants
                if not (w.requires_record and w.mac not in fresh)
            ]
            for t in resolved:  # the ENI's journal fields, from here on
                eni_id = t.plan.eni_id if t.plan else t.record.eni_id if t.record else ""
                journal.remember(t.ifname, t.mac, eni_id)
            adds_own = self.backend.adds_own_objects
            targets, refused = check_tables(resolved, records, snap)
            for t, err in refused:
                out.fail(t.ifname, err)
            targets, left_alone = check_foreign(
                targets,
                snap,
                adds_own_objects=adds_own,
                cloud_init_kept_off=self.cloud_init_kept_off(),
            )
            for t in left_alone:
                self._leave(t, out, dry_run)
            delta = verifier.delta(targets, snap, adds_own_objects=adds_own)
            if sweep_leftovers:
                kept = [*targets, *(t for t, _ in refused), *left_alone]
                delta.extend(sweep(kept, records, snap))
            changes = changeset(delta)
            if dry_run:
                out.results += [_result(t, changes) for t in targets]
                return out
            cancel.check()  # last point where stopping costs nothing
            recorded = self._record_intent(targets, changes, snap)
            for t in targets:
                if not t.removing and t.link is not None and not t.link.up:
                    self.backend.set_up(t.ifname)
            started = time.perf_counter()
            # Under a manager a take-over's releases wait until the manager applied ours:
            # the manager drops the other tool's objects it made itself on the way, and
            # a delete of one already gone would match ours (they carry its protocol too).
            later = adds_own and any(c.release for c in changes.changes)
            first = ChangeSet(tuple(c for c in changes.changes if not (later and c.release)))
            report = self.backend.apply(first, targets)
            log.debug(
                "%s: applied %d of %d changes in %.1f ms",
                self.backend.name,
                len(report.applied),
                len(changes),
                (time.perf_counter() - started) * 1e3,
            )
            for change, why in report.failed:
                log.error("%s failed: %s", change, why)
            quiet = not changes and not report.applied and not adds_own
            if quiet:  # nothing was to change, and nothing changed: nothing to verify
                after, left = snap, {t.mac: ChangeSet() for t in targets}
            else:
                after, left = self._settle(targets, releases_left=later)
            releases = ChangeSet(
                tuple(c for t in targets for c in left[t.mac].changes if later and c.release)
            )
            if releases:  # those still there, after the manager's own changes
                done = self.backend.apply(releases, targets)
                report.applied += done.applied
                report.failed += done.failed
                after, left = self._settle(targets)
            self._finalise(targets, recorded, after, left)
        applied = ChangeSet(tuple(report.applied))
        out.results += [_result(t, applied) for t in targets]
        for r in out.results:
            log.debug("%s: %s (%d changes)", r.ifname, r.action.value, len(r.changes))
        stuck = [c for t in targets for c in left[t.mac].changes]
        if stuck:
            out.error = out.error or ApplyFailed(
                f"{len(stuck)} changes did not take effect, e.g. {stuck[0]}"
            )
        return out

    # --- another tool's ENI ------------------------------------------------------------
    def _leave(self, t: Target, out: Outcome, dry_run: bool) -> None:
        """Leave the ENI to the tool whose objects hold its table; a record says so (for
        `status`, and so that every refresh looks again)."""
        assert t.plan is not None and t.link is not None and t.eni is not None
        tool = self.recognise(t.ifname, t.table, t.theirs)
        err = ForeignConfig(foreign.message(t.ifname, t.table, t.theirs, tool))
        out.fail(t.ifname, err)
        if dry_run:
            return
        summary = foreign.summary(t.theirs)
        rec = t.record
        if rec is not None and rec.phase == Phase.FOREIGN.value and rec.foreign == summary:
            return  # already said so
        self.store.save(
            Record(
                mac=t.mac,
                eni_id=t.plan.eni_id,
                ifname=t.ifname,
                ifindex=t.link.index,
                table=t.table,
                metadata=eni_to_json(t.eni),
                phase=Phase.FOREIGN.value,
                foreign=summary,
                foreign_tool=tool or "",
            )
        )

    # --- records -------------------------------------------------------------------
    def _record_intent(
        self, targets: Sequence[Target], changes: ChangeSet, snap: Snapshot
    ) -> dict[str, Record]:
        """Write each planned ENI's intent before any change; the records as they now
        stand on disk, by MAC (what `_finalise` starts from). A take-over adopts the
        planned addresses already on the link: they are ec2net's from now on."""
        on_disk: dict[str, Record] = {}
        adding: dict[str, set[IPAddress]] = {}
        mtu_set = {c.obj.ifname for c in changes.changes if isinstance(c.obj, MtuSpec)}
        for c in changes.changes:
            if c.op is Op.ADD and isinstance(c.obj, AddressSpec):
                adding.setdefault(c.obj.ifname, set()).add(c.obj.address.ip)
        for t in targets:
            rec = t.record
            if t.removing:
                if rec is not None and rec.phase != Phase.REMOVING.value:
                    rec = replace(rec, phase=Phase.REMOVING.value)
                    self.store.save(rec)
                if rec is not None:
                    on_disk[t.mac] = rec
                continue
            assert t.plan is not None and t.link is not None and t.eni is not None
            new = adding.get(t.ifname, set())
            if t.take_over:
                on_link = {a.address.ip for a in snap.addresses_of(t.link)}
                new |= {a.address.ip for a in t.plan.addresses} & on_link
            owned = (rec.owned() if rec is not None else frozenset()) | new
            seen = foreign.summary(t.theirs) if not t.take_over else []
            if rec is not None and seen and seen != rec.foreign:
                log.warning(
                    "%s: table %d also holds objects ec2net did not create; left as they "
                    "are: %s", t.ifname, t.table, "; ".join(seen)
                )  # fmt: skip
            mtu_before = rec.mtu_before if rec is not None else None
            first_mtu = t.ifname in mtu_set and mtu_before is None
            if first_mtu:
                mtu_before = t.link.mtu
            if (
                rec is not None
                and not new
                and not first_mtu
                and rec.table == t.table
                and rec.eni_id == t.plan.eni_id
                and rec.ifindex == t.link.index
                and rec.phase != Phase.FOREIGN.value
                and rec.foreign == seen
            ):
                on_disk[t.mac] = rec
                continue  # nothing new to own, the table is claimed already
            rec = Record(
                mac=t.mac,
                eni_id=t.plan.eni_id,
                ifname=t.ifname,
                ifindex=t.link.index,
                table=t.table,
                owned_ips=sorted(str(a) for a in owned),
                metadata=eni_to_json(t.eni),
                phase=Phase.APPLYING.value,
                mtu_before=mtu_before,
                foreign=seen,
            )
            self.store.save(rec)
            on_disk[t.mac] = rec
        return on_disk

    def _finalise(
        self,
        targets: Sequence[Target],
        records: dict[str, Record],
        snap: Snapshot,
        left: dict[str, ChangeSet],
    ) -> None:
        for t in targets:
            rec = records.get(t.mac)
            if t.removing:
                if left[t.mac]:
                    continue  # kept (removing): the next run finishes the removal
                self.store.delete(t.mac)
                continue
            if rec is None or t.link is None:
                continue
            link = snap.by_mac().get(t.mac)
            if link is None:
                continue  # unplugged meanwhile: the removal that follows needs the record
            present = {a.address.ip for a in snap.addresses_of(link)}
            # Still present and ours: an owned address no longer wanted whose delete
            # failed stays recorded, so a later run still removes it.
            owned = rec.owned() & present
            phase = Phase.APPLYING if left[t.mac] else Phase.APPLIED
            self.store.save(
                replace(
                    rec,
                    ifname=link.name,
                    ifindex=link.index,
                    owned_ips=sorted(str(a) for a in owned),
                    phase=phase.value,
                )
            )

    # --- verify ----------------------------------------------------------------------
    def _settle(
        self, targets: Sequence[Target], *, releases_left: bool = False
    ) -> tuple[Snapshot, dict[str, ChangeSet]]:
        """The state after apply. A network manager applies files on its own time: wait
        for it (bounded) until nothing is left, or a device it needed went away (what
        it lacks never comes, and waiting would hold the lock its removal needs).
        `releases_left`: a take-over's releases are still to come, so those may remain."""
        deadline = time.monotonic() + self.backend.settle_timeout
        wanted = {t.link.index for t in targets if not t.removing and t.link is not None}
        adds_own = self.backend.adds_own_objects
        while True:
            snap = self.backend.snapshot()
            left = verifier.verify(targets, snap, adds_own_objects=adds_own)
            pending = [c for cs in left.values() for c in cs.changes]
            if releases_left:
                pending = [c for c in pending if not c.release]
            if not pending or time.monotonic() >= deadline:
                return snap, left
            if not wanted <= {ln.index for ln in snap.links}:
                return snap, left
            cancel.pause(SETTLE_POLL)


def _result(t: Target, changes: ChangeSet) -> Result:
    # and the other tool's objects this target takes over (cloud-init's are in its own
    # table, not the ENI's)
    theirs = {x.obj for x in t.theirs}
    mine = ChangeSet(
        tuple(
            c
            for c in changes.changes
            if owns(c.obj, t.table, t.ifname) or (c.theirs and c.obj in theirs)
        )
    )
    if t.removing:
        return Result(t.ifname, Action.REMOVED, mine)
    return Result(t.ifname, Action.CONFIGURED if mine else Action.UNCHANGED, mine)
