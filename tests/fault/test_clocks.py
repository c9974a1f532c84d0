"""Clocks: the daemon's wall clock stepped an hour forward, then back, while it runs
and holds a cached IMDS token. The host's clock is never touched: libfaketime
(LD_PRELOAD, Debian's `faketime` package) gives the daemon alone a wall-clock offset
read from a file the test rewrites, and FAKETIME_DONT_FAKE_MONOTONIC=1 leaves its
monotonic clock real, which is what a step of the system clock does.

Rules, per window of WINDOW seconds (as the clock was, after the step forward, after
the step back): no stall and no busy loop (the daemon's CPU time over the window at
most CPU_BOUND seconds), the refresh interval holds (gaps between refreshes, seen in
the simulator's request log, within [interval - 0.5 s, 1.1 x interval + 1 s]), every
sd_notify watchdog ping arrives in time, and after the step back IMDS refuses the
token (revoked): the daemon gets a new one and goes on (an address assigned then is
applied).
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Callable

import pytest

from tests.fault.cells import Cell
from tests.fault.conftest import References
from tests.fault.endurance import (
    NotifyListener,
    gaps,
    start_logged_daemon,
    stop_logged_daemon,
    usage,
)
from tests.fault.harness import NEW_ADDR, SECOND, FaultWorld, record, token_puts, wait_for

pytestmark = [pytest.mark.world, pytest.mark.fault]

LIBFAKETIME = Path("/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1")
INTERVAL = 2.0
WINDOW = 10.0
# An idle daemon refreshing every 2 s uses a few hundredths of a second of CPU per
# refresh; a loop spinning on a clock it misreads would use the whole window (10 s).
CPU_BOUND = 1.0
WATCHDOG_USEC = 3_000_000  # pings every 1.5 s; a gap past 3 s would be a miss


def _refresh_times(fw: FaultWorld) -> list[float]:
    """When each refresh round read eth1 (its address list, or every 5th round its
    listing), answered: a read repeated after a 401 is the same round."""
    base = f"/latest/meta-data/network/interfaces/macs/{SECOND}/"
    paths = {base + "local-ipv4s", base}
    servers = [s for s in (fw.fabric.imds, fw.fabric.imds6) if s is not None]
    return sorted(
        e.time for s in servers for e in s.log.entries() if e.path in paths and e.status == 200
    )


@pytest.mark.skipif(not LIBFAKETIME.exists(), reason="libfaketime (Debian: faketime)")
def test_wall_clock_steps(worlds: Callable[..., FaultWorld], refs: References) -> None:
    fw = worlds()
    fw.write_config(interval=INTERVAL)
    fw.must("up", "eth1")
    foreign = fw.foreign()
    offset = fw.tmp / "faketime"
    offset.write_text("+0\n")
    notify = NotifyListener(fw.tmp / "notify.sock").start()
    env = {
        "LD_PRELOAD": str(LIBFAKETIME),
        "FAKETIME_TIMESTAMP_FILE": str(offset),
        "FAKETIME_NO_CACHE": "1",
        "FAKETIME_DONT_FAKE_MONOTONIC": "1",
        "NOTIFY_SOCKET": str(notify.path),
        "WATCHDOG_USEC": str(WATCHDOG_USEC),
    }
    seen = len(_refresh_times(fw))
    daemon = start_logged_daemon(fw, env, "clock")
    cells: list[Cell] = []
    try:
        # its initial scan (the listing, the list), then two refreshes
        if not wait_for(lambda: len(_refresh_times(fw)) >= seen + 4, 30, every=0.2):
            raise AssertionError(f"the daemon never refreshed:\n{daemon.log()[-1500:]}")
        windows = [("wall clock as it is", "+0"), ("stepped 1 h forward", "+3600"),
                   ("stepped 1 h back (token then refused)", "-3600")]  # fmt: skip
        for name, spec in windows:
            cell = Cell("clock", name, "watch")
            offset.write_text(spec + "\n")
            start = time.monotonic()
            cpu0 = usage(daemon.pid).cpu
            puts0 = token_puts(fw.fabric)
            if spec == "-3600":
                time.sleep(0.5)
                for server in (fw.fabric.imds, fw.fabric.imds6):
                    if server is not None:
                        server.revoke_tokens()  # IMDS refuses the cached token
                fw.fabric.assign(SECOND, NEW_ADDR)
            time.sleep(WINDOW)
            end = time.monotonic()
            cpu = usage(daemon.pid).cpu - cpu0
            refreshed = [t for t in _refresh_times(fw) if start <= t <= end]
            between = [b - a for a, b in zip(refreshed, refreshed[1:])]
            pings = gaps(notify.pings(), start, end)
            cell.rc = "running"
            cell.during = (
                f"CPU {cpu:.2f} s in {end - start:.0f} s; {len(refreshed)} refreshes, gaps "
                f"{min(between, default=0):.2f}-{max(between, default=0):.2f} s; watchdog "
                f"gaps up to {max(pings):.2f} s"
            )
            if cpu > CPU_BOUND:
                cell.fail(f"CPU {cpu:.2f} s over {WINDOW} s, bound {CPU_BOUND} s")
            if not between or min(between) < INTERVAL - 0.5 or max(between) > 1.1 * INTERVAL + 1:
                cell.fail(f"refresh gaps {[round(g, 2) for g in between]}, interval {INTERVAL}")
            if refreshed and refreshed[0] - start > 1.1 * INTERVAL + 1:
                cell.fail(f"first refresh {refreshed[0] - start:.1f} s after the step")
            if max(pings) > WATCHDOG_USEC / 1e6:
                cell.fail(f"a watchdog ping came {max(pings):.2f} s after the one before")
            if spec == "-3600":
                new_tokens = token_puts(fw.fabric) - puts0
                converged = wait_for(lambda: fw.state() == refs["refreshed"], 5.0)
                cell.message = f"{new_tokens} new token(s) after the revocation"
                if new_tokens < 1:
                    cell.fail("no new token after IMDS refused the cached one")
                if not converged:
                    cell.fail("the address assigned after the step was not applied")
            cells.append(cell)
        if daemon.proc.poll() is not None:
            raise AssertionError(f"the daemon exited:\n{daemon.log()[-1500:]}")
        stop_logged_daemon(fw, daemon)
    finally:
        notify.stop()
    log = daemon.log()
    for cell in cells:
        cell.after = cell.judge("at the end", refs["refreshed"], fw.state())
        if "Traceback" in log:
            cell.fail(f"daemon traceback:\n{log[-1500:]}")
        if fw.foreign() != foreign:
            cell.fail("foreign state changed")
        record(cell.row())
    problems = [p for c in cells for p in c.problems]
    assert problems == [], "\n".join(problems)


def test_faketime_is_available() -> None:
    """tools/setup.sh installs it; the clock case must not skip in CI."""
    assert LIBFAKETIME.exists() or shutil.which("faketime") is None
