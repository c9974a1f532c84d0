"""Files an attacker could touch, each tried with the real command: a runtime directory
another user owns or can write, or that is a symbolic link; a record, a lock, the token
cache and the metrics textfile replaced by symbolic links to a file ec2net must never
write; a configuration file another user can write.

Rules: the command refuses (exit 2) with a message naming the path and why, and changes
nothing in the kernel; a file behind a symbolic link is never read or written (its bytes
and mode stay as they were). Where a link stands in a place ec2net replaces atomically
(the token cache), the link itself is replaced and its target left alone.
"""

from __future__ import annotations

import os
import signal
import stat
import time
from pathlib import Path
from typing import Callable

import pytest

from tests.fault.cells import Cell
from tests.fault.conftest import References
from tests.fault.harness import FaultWorld, Run, first_error, record, wait_for

pytestmark = [pytest.mark.world, pytest.mark.fault]

NOBODY = 65534
VICTIM = "victim: ec2net must never write here\n"


def _victim(fw: FaultWorld) -> Path:
    path = fw.tmp / "victim"
    path.write_text(VICTIM)
    os.chmod(path, 0o640)
    return path


def _untouched(cell: Cell, victim: Path) -> None:
    if victim.read_text() != VICTIM or stat.S_IMODE(victim.stat().st_mode) != 0o640:
        cell.fail(f"{victim} was written through a symbolic link")


def _refused(cell: Cell, run: Run, *says: str) -> None:
    cell.rc = str(run.rc)
    cell.message = first_error(run.err)
    if run.rc != 2:
        cell.fail(f"exit {run.rc}, want 2 (refused)\n{run.err[-600:]}")
    if not any(all(s in ln for s in says) for ln in run.err.splitlines()):
        cell.fail(f"no message says {says}: {cell.message!r}")
    if "Traceback" in run.err:
        cell.fail(f"traceback:\n{run.err[-1200:]}")


def _finish(cell: Cell, fw: FaultWorld, expected_state: object) -> None:
    if fw.state() != expected_state:
        cell.fail("the kernel changed")
    cell.after = "unchanged" if not cell.problems else "-"
    record(cell.row())
    assert cell.problems == [], "\n".join(cell.problems)


def _dir_mode(mode: int) -> Callable[[Path], None]:
    def make(p: Path) -> None:
        p.mkdir()
        os.chmod(p, mode)

    return make


def _dir_nobody(p: Path) -> None:
    p.mkdir(mode=0o700)
    os.chown(p, NOBODY, NOBODY)


def _dir_symlink(p: Path) -> None:
    (p.parent / "elsewhere").mkdir(mode=0o700)
    p.symlink_to("elsewhere")


def _chown_nobody(p: Path) -> None:
    os.chown(p, NOBODY, NOBODY)


@pytest.mark.parametrize(
    ("case", "make", "says"),
    [
        (
            "runtime directory mode 0777",
            _dir_mode(0o777),
            "writable by group or others (mode 0777)",
        ),
        (
            "runtime directory mode 0775",
            _dir_mode(0o775),
            "writable by group or others (mode 0775)",
        ),
        ("runtime directory owned by nobody", _dir_nobody, f"owned by uid {NOBODY}, not by root"),
        ("runtime directory a symbolic link", _dir_symlink, "is a symbolic link"),
    ],
    ids=["0777", "0775", "nobody", "symlink"],
)
def test_untrusted_runtime_directory_refused(
    case: str, make: Callable[[Path], object], says: str, worlds: Callable[..., FaultWorld]
) -> None:
    fw = worlds()
    cell = Cell("files", case, "up eth1")
    make(fw.runtime)
    before = fw.state()
    run = fw.ec2net("up", "eth1")
    _refused(cell, run, f"runtime directory {fw.runtime}", says)
    target = fw.runtime.resolve()
    if target.is_dir() and any(target.iterdir()):
        cell.fail(f"files written in the refused directory: {list(target.iterdir())}")
    cell.during = "refused"
    _finish(cell, fw, before)


def test_new_runtime_directory_is_0700(worlds: Callable[..., FaultWorld]) -> None:
    fw = worlds()
    cell = Cell("files", "runtime directory made by ec2net", "up eth1")
    fw.must("up", "eth1")
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in (fw.runtime,
             fw.runtime / "enis", fw.runtime / "locks")}  # fmt: skip
    cell.rc = "0"
    cell.during = ", ".join(f"{k} {v:04o}" for k, v in modes.items())
    if set(modes.values()) != {0o700}:
        cell.fail(f"modes {modes}, want 0700")
    cell.after = "-"
    record(cell.row())
    assert cell.problems == []


@pytest.mark.parametrize("what", ["record", "lock"])
def test_symlinked_file_in_the_runtime_directory_refused(
    what: str, worlds: Callable[..., FaultWorld]
) -> None:
    fw = worlds()
    fw.must("up", "eth1")
    victim = _victim(fw)
    name = "02-00-0a-00-02-14"
    sub, ext = ("enis", "json") if what == "record" else ("locks", "lock")
    path = fw.runtime / sub / f"{name}.{ext}"
    path.unlink()
    path.symlink_to(victim)
    cell = Cell("files", f"{what} a symbolic link", "refresh")
    before = fw.state()
    run = fw.ec2net("refresh")
    _refused(cell, run, str(path), "is a symbolic link")
    _untouched(cell, victim)
    cell.during = "refused, link target untouched"
    _finish(cell, fw, before)


def test_symlinked_token_cache_is_replaced_not_followed(
    worlds: Callable[..., FaultWorld], refs: References
) -> None:
    fw = worlds()
    fw.must("up", "eth1")
    victim = _victim(fw)
    cache = fw.runtime / "imds-token"
    cache.unlink()
    cache.symlink_to(victim)
    cell = Cell("files", "IMDS token cache a symbolic link", "refresh")
    run = fw.ec2net("refresh")
    cell.rc = str(run.rc)
    if run.rc != 0:
        cell.fail(f"exit {run.rc}\n{run.err[-600:]}")
    _untouched(cell, victim)
    if cache.is_symlink() or stat.S_IMODE(cache.stat().st_mode) != 0o600:
        cell.fail("the token cache is not a private regular file again")
    cell.during = "link replaced by a 0600 file, target untouched"
    _finish(cell, fw, refs["base"])


@pytest.mark.parametrize("what", ["file", "directory"])
def test_symlinked_metrics_textfile_never_written_through(
    what: str, worlds: Callable[..., FaultWorld]
) -> None:
    fw = worlds()
    fw.must("up", "eth1")
    victim = _victim(fw)
    prom_dir = fw.tmp / "textfile"
    if what == "file":
        prom_dir.mkdir()
        (prom_dir / "ec2net.prom").symlink_to(victim)
    else:
        (fw.tmp / "victim-dir").mkdir()
        prom_dir.symlink_to(fw.tmp / "victim-dir")
    fw.write_config(extra=f'[metrics]\ntextfile = "{prom_dir / "ec2net.prom"}"\n')
    cell = Cell("files", f"metrics textfile's {what} a symbolic link", "watch")
    before = fw.state()
    daemon = fw.start_daemon()
    time.sleep(3.0)  # the first scan and a few refreshes, each rewriting the file
    fw.stop_daemon(daemon)
    _, log = daemon.communicate(timeout=5)
    cell.rc = f"running, then {daemon.returncode}"
    warn = [ln for ln in log.splitlines() if ln.startswith("WARNING metrics")]
    cell.message = (warn or [""])[0][:160]
    if not warn:
        cell.fail(f"no warning about the metrics file:\n{log[-800:]}")
    _untouched(cell, victim)
    if what == "directory" and list((fw.tmp / "victim-dir").iterdir()):
        cell.fail("written into the directory behind the link")
    cell.during = "not written, warned"
    _finish(cell, fw, before)


@pytest.mark.parametrize(
    ("case", "make", "says"),
    [
        ("config mode 0666", lambda p: p.chmod(0o666), "file is writable by group or others"),
        ("config owned by nobody", _chown_nobody, f"file is owned by uid {NOBODY}"),
        (
            "config's directory mode 0777",
            lambda p: p.parent.chmod(0o777),
            "is writable by group or others",
        ),
    ],
    ids=["0666", "nobody", "dir-0777"],
)
def test_config_another_user_can_write_refused(
    case: str, make: Callable[[Path], object], says: str, worlds: Callable[..., FaultWorld]
) -> None:
    fw = worlds()
    make(fw.config)
    cell = Cell("files", case, "up eth1")
    before = fw.state()
    run = fw.ec2net("up", "eth1")
    _refused(cell, run, str(fw.config), says)
    cell.during = "refused"
    _finish(cell, fw, before)


def test_reload_of_a_config_others_can_write_keeps_the_running_one(
    worlds: Callable[..., FaultWorld], refs: References
) -> None:
    fw = worlds()
    fw.must("up", "eth1")
    cell = Cell("files", "config made mode 0666, then SIGHUP", "watch")
    daemon = fw.start_daemon()
    time.sleep(1.5)
    os.chmod(fw.config, 0o666)
    daemon.send_signal(signal.SIGHUP)
    wait_for(lambda: daemon.poll() is not None, 2.0)
    alive = daemon.poll() is None
    fw.stop_daemon(daemon)
    _, log = daemon.communicate(timeout=5)
    cell.rc = f"running, then {daemon.returncode}" if alive else f"exited {daemon.returncode}"
    kept = [ln for ln in log.splitlines() if "keeping the running configuration" in ln]
    cell.message = (kept or [""])[0][:160]
    if not alive or not kept or "writable by group or others" not in kept[0]:
        cell.fail(f"the reload did not refuse the file and keep running:\n{log[-800:]}")
    cell.during = "refused, kept running"
    _finish(cell, fw, refs["base"])
