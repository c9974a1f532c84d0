"""`ec2net migrate`: hand the ENIs over from the tool that configured them before
(othertools.py), with every address answering throughout.

What a package's install runs once the old package is gone, and what a person can run.
Per ENI, in this order:
1. read what the old tool left (its files say what it added), before anything of ours
   rewrites them (the ifcfg backend writes `ifcfg-ethN` itself);
2. stop its timers, so that it does not rewrite its files meanwhile;
3. take the ENI over (`up --take-over` in one scan): ec2net's rules and routes go in
   first, theirs with the same key are replaced in place, then their other rules and
   routes in the ENI's table go; the addresses it put on the link become ec2net's,
   without the lease lifetime its DHCP client gave them;
4. end its DHCP clients for the ENI with SIGKILL: a DHCP client told to stop runs its
   script, which flushes the address it leased; killed, it leaves the address as it is;
5. delete the routes its files put in the main table, stop its per-ENI units (only
   where that runs nothing of the old tool's: its stop command is gone with its
   package), and remove its per-ENI files (never one ec2net wrote).

The primary ENI is never taken over. Where systemd-networkd runs it from 2.x's file (a
link into 2.x's package, which is gone or going), a network file of ec2net's own for the
primary takes its place first (`PRIMARY_FILE`, in /etc: it must survive reboots), so
the primary still gets its address at the next boot; it is left to the administrator
afterwards and never removed by ec2net.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import shutil
import signal
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Callable, Optional

from ec2net import othertools
from ec2net.engine import Engine
from ec2net.errors import ApplyFailed, Ec2NetError
from ec2net.model import Change, ChangeSet, Link, Op
from ec2net.othertools import Found, host
from ec2net.render import is_ours
from ec2net.state import Phase, write_if_changed

log = logging.getLogger(__name__)

PRIMARY_FILE = PurePosixPath("/etc/systemd/network/80-ec2net-primary.network")
NETWORKD_LINKS = PurePosixPath("/run/systemd/netif/links")
SYSTEMCTL_TIMEOUT = 30.0
DHCLIENT = "dhclient"


def _systemctl(args: Sequence[str]) -> None:
    if shutil.which("systemctl") is None or not os.path.isdir("/run/systemd/system"):
        return
    try:
        proc = subprocess.run(
            ["systemctl", *args],
            capture_output=True,
            text=True,
            timeout=SYSTEMCTL_TIMEOUT,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise ApplyFailed(f"systemctl {' '.join(args)}: no answer in {exc.timeout} s") from exc
    if proc.returncode not in (0, 5):  # 5: no such unit loaded
        raise ApplyFailed(f"systemctl {' '.join(args)}: {proc.stderr.strip()}")


def _no_units(args: Sequence[str]) -> None:
    log.debug("not the running system's root: not running systemctl %s", " ".join(args))


def _kill(pid: int) -> None:
    os.kill(pid, signal.SIGKILL)


@dataclass(frozen=True)
class Host:
    """The side effects outside the kernel, replaceable in tests."""

    root: Path = Path("/")
    systemctl: Callable[[Sequence[str]], None] = _systemctl
    kill: Callable[[int], None] = _kill


@dataclass
class Report:
    lines: list[str] = field(default_factory=list)
    errors: list[Ec2NetError] = field(default_factory=list)

    def say(self, line: str) -> None:
        log.info("%s", line)
        self.lines.append(line)


def migrate(engine: Engine, *, dry_run: bool = False, machine: Optional[Host] = None) -> Report:
    """Hand every ENI over from amazon-ec2-net-utils 1.x/2.x (othertools.py)."""
    root = Path(engine.settings.files_root)
    # Units are the running system's: under another root (an image) none are touched.
    machine = machine or Host(root, _systemctl if root == Path("/") else _no_units)
    report = Report()
    links = engine.backend.links()
    found = {ln.name: othertools.find(machine.root, ln.name) for ln in links}
    found = {name: f for name, f in found.items() if f}
    primary = next((ln for ln in links if ln.mac == engine.primary_mac()), None)
    enis = [ln for ln in links if ln.name in found and ln is not primary]
    if not found:
        report.say("nothing left by amazon-ec2-net-utils or ec2-net-utils")
    for link in enis:
        for f in found[link.name]:
            report.say(f"{link.name}: {f.tool}: {_what(f)}")
    if dry_run:
        if primary is not None and _runs_primary_from_2x(machine.root, primary, found):
            report.say(f"{primary.name}: would write {PRIMARY_FILE} (DHCP, as before)")
        return report
    for link in enis:  # 2: their timers stop before anything changes
        _stop(machine, [u for f in found[link.name] for u in f.units if u.endswith(".timer")])
    if primary is not None and primary.name in found:
        _primary(engine, machine, primary, found[primary.name], report)
    taken = _take_over(engine, {ln.mac for ln in enis}, report)
    for link in enis:
        if link.mac in taken:
            for f in found[link.name]:
                _clean_up(engine, machine, link, f, report)
        else:
            report.say(f"{link.name}: not taken over; what the old tool left is kept")
    return report


def _what(f: Found) -> str:
    parts = []
    if f.files:
        parts.append(", ".join(str(p) for p in f.files))
    if f.pid_files:
        parts.append(f"{len(f.pid_files)} DHCP client(s)")
    if f.main_routes:
        parts.append(f"{len(f.main_routes)} main-table route(s)")
    return "; ".join(parts) or "its units"


def _take_over(engine: Engine, macs: set[str], report: Report) -> set[str]:
    """One scan that takes these ENIs over (and configures every other one as a scan
    does); the MACs that are ec2net's afterwards. A second look takes over the ENIs the
    scan left to a tool it recognised as amazon-ec2-net-utils (their files were gone)."""
    try:
        engine.scan(take_over=lambda link: link.mac in macs)
    except Ec2NetError as err:  # the others were converged; the records say how far
        report.errors.append(err)
    known = (othertools.AWS_1X, othertools.AWS_2X)
    for rec in engine.store.records():
        if rec.phase == Phase.FOREIGN.value and rec.foreign_tool in known:
            try:
                engine.up(rec.ifname, take_over=True)
            except Ec2NetError as err:
                report.errors.append(err)
    taken = set()
    for rec in engine.store.records():
        if rec.phase == Phase.APPLIED.value:
            taken.add(rec.mac)
            if rec.mac in macs:
                report.say(f"{rec.ifname}: ec2net's now (table {rec.table})")
    return taken


def _clean_up(engine: Engine, machine: Host, link: Link, f: Found, report: Report) -> None:
    for pid_file in f.pid_files:
        pid = _dhclient_pid(pid_file, link.name)
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                machine.kill(pid)
            report.say(f"{link.name}: ended {f.tool}'s DHCP client (pid {pid})")
        with contextlib.suppress(FileNotFoundError):
            pid_file.unlink()
    if f.main_routes:
        changes = ChangeSet(tuple(Change(Op.DEL, r, theirs=True) for r in f.main_routes))
        done = engine.backend.apply(changes, ())
        for change, why in done.failed:
            report.errors.append(ApplyFailed(f"{link.name}: {change}: {why}"))
        report.say(f"{link.name}: removed {len(done.applied)} main-table route(s) of {f.tool}")
    _stop(machine, [u for u in f.units if _stop_is_harmless(machine.root, u)])
    for path in f.files:
        _remove_theirs(path)
    if f.files:
        report.say(f"{link.name}: removed {f.tool}'s files")


def _primary(
    engine: Engine, machine: Host, primary: Link, found: list[Found], report: Report
) -> None:
    """Keep the primary's DHCP once 2.x's file for it goes: ec2net's own file first."""
    if _runs_primary_from_2x(machine.root, primary, {primary.name: found}):
        path = host(machine.root, PRIMARY_FILE)
        if write_if_changed(path, primary_network(primary.mac)):
            report.say(f"{primary.name}: wrote {PRIMARY_FILE} (DHCP, as 2.x's file had it)")
    for f in found:
        if f.tool != othertools.AWS_2X:
            continue
        _stop(machine, [u for u in f.units if _stop_is_harmless(machine.root, u)])
        for path in f.files:
            _remove_theirs(path)
        report.say(f"{primary.name}: removed {f.tool}'s files (the primary stays unmanaged)")


def primary_network(mac: str) -> str:
    """The primary ENI as a systemd-networkd network: DHCP for both families and the
    VPC's MTU from the lease (what an EC2 instance's primary needs to boot)."""
    return (
        "# Written by `ec2net migrate` when amazon-ec2-net-utils, which configured this\n"
        "# primary ENI, was replaced. It is the primary's configuration now; ec2net never\n"
        "# changes or removes it.\n"
        "[Match]\n"
        f"MACAddress={mac}\n\n"
        "[Network]\n"
        "DHCP=yes\n\n"
        "[DHCPv4]\n"
        "UseMTU=yes\n"
    )


def _runs_primary_from_2x(root: Path, primary: Link, found: dict[str, list[Found]]) -> bool:
    """networkd applies 2.x's file to the primary (its state file names it)."""
    files = {
        str(p) for f in found.get(primary.name, []) if f.tool == othertools.AWS_2X for p in f.files
    }
    state = host(root, NETWORKD_LINKS) / str(primary.index)
    try:
        text = state.read_text()
    except OSError:
        return False
    network = othertools.shell_value(text, "NETWORK_FILE") or ""
    return bool(network) and str(host(root, PurePosixPath(network))) in files


def _stop_is_harmless(root: Path, unit: str) -> bool:
    """1.x's per-ENI unit stops by running its `ec2ifdown`, which takes the ENI down:
    stop it only once that command is gone (its package removed). 2.x's units stop
    nothing."""
    if unit.startswith("ec2net-ifup@"):
        return not any((root / d / "ec2ifdown").exists() for d in ("usr/sbin", "sbin"))
    return True


def _stop(machine: Host, units: Sequence[str]) -> None:
    for unit in units:
        try:
            machine.systemctl(["stop", unit])
        except ApplyFailed as err:
            log.info("%s", err)
        # A unit whose ExecStop= is gone with its package (1.x's ec2ifdown) ends
        # `failed` and would keep the system `degraded`: it is history now.
        try:
            machine.systemctl(["reset-failed", unit])
        except ApplyFailed as err:
            log.debug("%s", err)


def _dhclient_pid(pid_file: Path, ifname: str) -> Optional[int]:
    """The pid in a pid file, only if it is a running dhclient for this interface: a
    stale pid file may name a process that has nothing to do with it."""
    try:
        pid = int(pid_file.read_text().split()[0])
        comm = Path(f"/proc/{pid}/comm").read_text().strip()
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except (OSError, ValueError, IndexError):
        return None
    if comm != DHCLIENT or ifname.encode() not in argv:
        return None
    return pid


def _remove_theirs(path: Path) -> None:
    """Remove an old tool's file or drop-in directory; never one of ec2net's."""
    if path.is_dir() and not path.is_symlink():
        for child in sorted(path.iterdir()):
            _remove_theirs(child)
        with contextlib.suppress(OSError):
            path.rmdir()
        return
    try:
        text = path.read_text() if not path.is_symlink() else ""
    except (OSError, UnicodeDecodeError):
        text = ""
    if is_ours(text):
        return
    try:
        path.unlink()
    except OSError as exc:
        if exc.errno != errno.ENOENT:
            raise ApplyFailed(f"cannot remove {path}: {exc}") from exc
