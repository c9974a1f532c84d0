"""One cell of a fault matrix: an operation run under a fault, then after recovery.

Each cell starts from a fresh world where eth1 is configured (the "base"), records
the state during the fault and after recovery, and judges both against clean
references. `Cell.problems` lists every rule broken, empty when the cell passed.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Optional

from tests.fault.conftest import References
from tests.fault.harness import (
    NEW_ADDR,
    SECOND,
    THIRD,
    FaultWorld,
    Row,
    first_error,
    token_puts,
    wait_for,
)
from tests.fault.state import State, diff_text

OPS = ("up", "refresh", "scan", "down", "watch")
# The reference each operation converges to (see conftest.REFERENCE_STEPS).
CONVERGED = {"up": "both", "scan": "both", "watch": "both", "refresh": "refreshed", "down": "down"}
# A daemon rides out a fault and converges within this (refresh interval 1 s here).
DAEMON_OK_WITHIN = 12.0
# How long a daemon is watched under a persistent fault: longer than a job's retries
# take to give up (5 attempts x 2 endpoints x 0.25 s plus backoff), so it has failed.
DAEMON_FAIL_WINDOW = 6.0


@dataclass
class Cell:
    table: str
    case: str
    op: str
    rc: str = ""
    during: str = ""
    after: str = ""
    message: str = ""
    lost: int = 0
    leaked: int = 0
    problems: list[str] = field(default_factory=list)

    def fail(self, text: str) -> None:
        self.problems.append(f"[{self.case} x {self.op}] {text}")

    def judge(self, what: str, expected: State, actual: State) -> str:
        lost, leaked = expected.minus(actual), actual.minus(expected)
        self.lost += len(lost)
        self.leaked += len(leaked)
        if lost or leaked:
            self.fail(f"{what}: {diff_text(expected, actual)}")
            return f"{len(lost)} lost, {len(leaked)} leaked"
        dups = actual.duplicates()
        if dups:
            self.fail(f"{what}: duplicates {dups[:3]}")
            return "duplicates"
        return "exact"

    def row(self) -> Row:
        return Row(
            table=self.table, case=self.case, op=self.op, exit=self.rc, during=self.during,
            after=self.after, message=self.message, lost=self.lost, leaked=self.leaked,
            ok=not self.problems,
            problem=self.problems[0].splitlines()[0][:200] if self.problems else "",
        )  # fmt: skip


Apply = Callable[[FaultWorld], Callable[[], None]]  # inject; returns the recovery


def prepare(fw: FaultWorld, op: str) -> Optional[str]:
    """The base (eth1 configured), then what the operation is about."""
    fw.must("up", "eth1")
    if op in ("up", "scan"):
        fw.fabric.attach(THIRD, "eth2")
    if op == "refresh":
        fw.fabric.assign(SECOND, NEW_ADDR)
    return {"up": "eth2", "down": "eth1"}.get(op)


def cli_args(op: str) -> list[str]:
    return {"up": ["up", "eth2"], "down": ["down", "eth1"]}.get(op, [op])


def run_cell(
    fw: FaultWorld,
    refs: References,
    cell: Cell,
    inject: Apply,
    *,
    rides_out: Optional[bool],
    expected_rc: Optional[tuple[int, ...]] = None,
    message_has: tuple[str, ...] = (),
    one_token: bool = False,
    settle: float = 0.0,
) -> Cell:
    """`rides_out` True: the run must survive the fault (exit 0, converged while it
    lasts); False: it must fail cleanly (non-zero, nothing changed, the message naming
    `message_has`); None: either of the two."""
    op = cell.op
    prepare(fw, op)
    foreign = fw.foreign()
    converged = refs[CONVERGED[op]]
    if op == "watch":
        return _daemon_cell(
            fw, refs, cell, inject, rides_out=rides_out, foreign=foreign,
            message_has=message_has, settle=settle,
        )  # fmt: skip
    before = fw.state()
    puts = token_puts(fw.fabric)
    recover = inject(fw)
    run = fw.ec2net(*cli_args(op))
    new_puts = token_puts(fw.fabric) - puts
    cell.rc = str(run.rc)
    cell.message = first_error(run.err) if run.rc else ""
    during = fw.state()
    recover()
    if op == "down" or rides_out or (rides_out is None and run.rc == 0):
        cell.during = cell.judge("during", converged, during)
        if run.rc != 0:
            cell.fail(f"exit {run.rc}, want 0\n{run.err[-800:]}")
    else:
        cell.during = "kept" if cell.judge("during", before, during) == "exact" else "changed"
        if run.rc == 0:
            cell.fail("exit 0 under a fault it cannot ride out")
        elif expected_rc and run.rc not in expected_rc:
            cell.fail(f"exit {run.rc}, want one of {expected_rc}")
        _check_message(cell, [cell.message], message_has)
    if one_token and op != "down" and new_puts != 1:
        cell.fail(f"{new_puts} token requests after the restart, want exactly 1")
    again = fw.ec2net(*cli_args(op))
    if again.rc != 0:
        cell.fail(f"recovery run exited {again.rc}\n{again.err[-800:]}")
    cell.after = cell.judge("after recovery", converged, fw.state())
    _foreign_and_probe(fw, cell, foreign)
    return cell


def _check_message(cell: Cell, lines: list[str], wanted: tuple[str, ...]) -> None:
    if wanted and not any(all(w in ln.lower() for w in wanted) for ln in lines):
        cell.fail(f"no message names {wanted}: {lines[:3]}")


def _daemon_cell(
    fw: FaultWorld, refs: References, cell: Cell, inject: Apply, *,
    rides_out: Optional[bool], foreign: State, message_has: tuple[str, ...], settle: float,
) -> Cell:  # fmt: skip
    """`settle`: seconds the fault itself delays convergence (propagation)."""
    converged = refs[CONVERGED["watch"]]
    daemon = fw.start_daemon()
    time.sleep(1.2)  # past its initial scan
    before = fw.state()
    recover = inject(fw)
    fw.fabric.attach(THIRD, "eth2")
    if rides_out:
        wait_for(lambda: fw.state() == converged, DAEMON_OK_WITHIN + settle, every=0.5)
        cell.during = cell.judge("during", converged, fw.state())
    elif rides_out is None:
        time.sleep(DAEMON_FAIL_WINDOW)
        during = fw.state()
        ok = during in (before, converged)
        cell.during = "kept" if during == before else "converged" if ok else "changed"
        if not ok:
            cell.judge("during", before, during)
    else:
        time.sleep(DAEMON_FAIL_WINDOW)
        during = fw.state()
        cell.during = "kept" if cell.judge("during", before, during) == "exact" else "changed"
    if daemon.poll() is not None:
        cell.fail(f"daemon exited {daemon.returncode} during the fault")
    recover()
    wait_for(lambda: fw.state() == converged, DAEMON_OK_WITHIN, every=0.5)
    cell.after = cell.judge("after recovery", converged, fw.state())
    try:
        fw.stop_daemon(daemon)
        cell.rc = f"running, then {daemon.returncode}"
    except AssertionError as err:
        cell.rc = "hung on SIGTERM"
        cell.fail(str(err))
    _, log = daemon.communicate(timeout=5)
    warnings = [ln for ln in log.splitlines() if ln.startswith(("WARNING", "ERROR"))]
    cell.message = warnings[0][:160] if warnings else ""
    if rides_out is False and cell.table == "malformed":
        # A bad value fails the job at once; an IMDS outage may still be in its
        # retries when the fault ends (then converging is all that is asked).
        _check_message(cell, warnings, message_has)
    if "Traceback" in log:
        cell.fail(f"daemon traceback:\n{log[-1500:]}")
    _foreign_and_probe(fw, cell, foreign)
    return cell


def _foreign_and_probe(fw: FaultWorld, cell: Cell, foreign: State) -> None:
    now = fw.foreign()
    if now != foreign:
        cell.lost += len(foreign.minus(now))
        cell.leaked += len(now.minus(foreign))
        cell.fail(f"foreign state changed: {diff_text(foreign, now)}")
    if fw.probe.failed:
        cell.fail(f"primary probes failed: {fw.probe.failed[:5]}")
