"""No room to record: the runtime directory full (ENOSPC) or read-only (EROFS).

The runtime directory is a tiny tmpfs in a mount namespace of its own (`unshare -m`),
which every ec2net run of the case enters; the host's mounts never change. With no
room, an operation that would change the kernel must not change it at all (its
write-ahead record cannot be written, so its intent would not be on disk), must exit 1
naming the directory and the error, and must leave no half-written file. Once space
returns (or the directory is writable again) the same operation converges; the daemon
does so by itself.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Callable

import pytest

from tests.fault.cells import DAEMON_OK_WITHIN, Cell, cli_args, prepare
from tests.fault.conftest import References
from tests.fault.endurance import FILLER, PrivateMount
from tests.fault.harness import THIRD, FaultWorld, first_error, record, wait_for

pytestmark = [pytest.mark.world, pytest.mark.fault]

# The reference each operation converges to once it can write (conftest.REFERENCE_STEPS).
CONVERGED = {"up": "both", "scan": "both", "refresh": "refreshed", "down": "down",
             "watch": "both"}  # fmt: skip
ERRORS = {"full": "No space left on device (ENOSPC)", "read-only": "Read-only file system (EROFS)"}


@pytest.fixture
def room_world(worlds: Callable[..., FaultWorld]) -> Iterator[tuple[FaultWorld, PrivateMount]]:
    fw = worlds()
    mount = PrivateMount(fw.runtime)
    fw.wrap = mount.wrap
    try:
        yield fw, mount
    finally:
        mount.close()


def _no_room(mount: PrivateMount, how: str) -> Callable[[], None]:
    if how == "full":
        mount.fill()
        return mount.free
    mount.remount(read_only=True)
    return lambda: mount.remount(read_only=False)


def _check_files(cell: Cell, mount: PrivateMount) -> None:
    """No temporary file left, every record whole."""
    for rel in mount.files():
        if rel.name == FILLER:
            continue
        if rel.name.endswith(".tmp"):
            cell.fail(f"temporary file left: {rel}")
        if rel.suffix == ".json":
            try:
                json.loads(mount.inside(mount.path / rel).read_text())
            except ValueError as err:
                cell.fail(f"{rel} is not whole: {err}")


@pytest.mark.parametrize("how", ["full", "read-only"])
@pytest.mark.parametrize("op", ["up", "scan", "refresh", "down"])
def test_no_room_to_record(
    op: str, how: str, room_world: tuple[FaultWorld, PrivateMount], refs: References
) -> None:
    fw, mount = room_world
    converged = refs[CONVERGED[op]]
    cell = Cell("room", f"runtime directory {how}", op)
    prepare(fw, op)  # eth1 configured (its record in the tmpfs), then the op's change
    foreign = fw.foreign()
    before = fw.state()
    restore = _no_room(mount, how)
    run = fw.ec2net(*cli_args(op))
    cell.rc = str(run.rc)
    cell.message = first_error(run.err)
    cell.during = (
        "kept" if cell.judge("with no room", before, fw.state()) == "exact" else "changed"
    )
    if run.rc != 1:
        cell.fail(f"exit {run.rc}, want 1\n{run.err[-800:]}")
    wanted = f"runtime directory {fw.runtime}: cannot write "
    if not any(wanted in ln and ERRORS[how] in ln for ln in run.err.splitlines()):
        cell.fail(f"no message names the directory and {ERRORS[how]!r}: {cell.message!r}")
    if "Traceback" in run.err:
        cell.fail(f"traceback:\n{run.err[-1500:]}")
    _check_files(cell, mount)
    restore()
    again = fw.ec2net(*cli_args(op))
    if again.rc != 0:
        cell.fail(f"once there is room: exit {again.rc}\n{again.err[-800:]}")
    cell.after = cell.judge("once there is room", converged, fw.state())
    _check_files(cell, mount)
    if fw.foreign() != foreign:
        cell.fail("foreign state changed")
    if fw.probe.failed:
        cell.fail(f"primary probes failed: {fw.probe.failed[:5]}")
    record(cell.row())
    assert cell.problems == [], "\n".join(cell.problems)


@pytest.mark.parametrize("how", ["full", "read-only"])
def test_daemon_converges_once_there_is_room(
    how: str, room_world: tuple[FaultWorld, PrivateMount], refs: References
) -> None:
    """An ENI attached while the runtime directory is full or read-only: the daemon's job
    fails (nothing changed), is tried again, and converges once there is room."""
    fw, mount = room_world
    converged = refs["both"]
    cell = Cell("room", f"runtime directory {how}", "watch")
    fw.must("up", "eth1")
    foreign = fw.foreign()
    daemon = fw.start_daemon()
    time.sleep(1.2)
    before = fw.state()
    restore = _no_room(mount, how)
    fw.fabric.attach(THIRD, "eth2")
    time.sleep(4.0)  # several tries
    cell.during = (
        "kept" if cell.judge("with no room", before, fw.state()) == "exact" else "changed"
    )
    _check_files(cell, mount)
    restore()
    started = time.monotonic()
    ok = wait_for(lambda: fw.state() == converged, DAEMON_OK_WITHIN, every=0.3)
    cell.after = cell.judge("once there is room", converged, fw.state())
    if ok:
        cell.after += f" ({time.monotonic() - started:.1f} s after)"
    try:
        fw.stop_daemon(daemon)
        cell.rc = f"running, then {daemon.returncode}"
    except AssertionError as err:
        cell.rc = "hung on SIGTERM"
        cell.fail(str(err))
    _, log = daemon.communicate(timeout=5)
    warnings = [ln for ln in log.splitlines() if ln.startswith(("WARNING", "ERROR"))]
    named = [
        ln for ln in warnings if f"runtime directory {fw.runtime}" in ln and ERRORS[how] in ln
    ]
    cell.message = (named or warnings or [""])[0][:160]
    if not named:
        cell.fail(f"no warning names the directory and {ERRORS[how]!r}: {warnings[:3]}")
    if "Traceback" in log:
        cell.fail(f"daemon traceback:\n{log[-1500:]}")
    _check_files(cell, mount)
    if fw.foreign() != foreign:
        cell.fail("foreign state changed")
    record(cell.row())
    assert cell.problems == [], "\n".join(cell.problems)
