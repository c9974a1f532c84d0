"""Activators: how each network manager is told about files that changed, touching
only the interfaces whose files changed.

- ifcfg: network-scripts has no "reapply", and `ifdown`/`ifup` would bounce the ENI.
  The rendered route/rule lines carry our protocol, so applying the same ChangeSet over
  netlink now gives exactly the objects network-scripts creates from the files at the
  next boot. With DHCP for the primary address, `ifup` starts dhclient first.
- networkd: `networkctl reload` reconfigures only the links whose .network file was
  created, changed or removed; the primary's file is untouched, so its DHCP lease is
  kept. Rules for a removed link are dropped by networkd itself.
- nm: `nmcli connection load` for the written keyfiles, then `device reapply` when our
  profile is already active on the device (no bounce), else `connection up` for the
  ENI only. Removal deletes our profile (NetworkManager then removes its addresses,
  routes and rules) before the file goes.

Commands run as argv lists through a `Runner` (default: subprocess with a timeout); no
shell, no string built from metadata. Tests pass a recording runner.
"""

from __future__ import annotations

import logging
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Protocol

from ec2net import cancel
from ec2net.backends import nm_bus
from ec2net.backends.base import ApplyReport
from ec2net.errors import ApplyFailed
from ec2net.model import ChangeSet, Link, Op

log = logging.getLogger(__name__)

COMMAND_TIMEOUT = 30.0
IFUP_TIMEOUT = 60.0  # dhclient's first lease
NM_UP_WAIT = 30  # nmcli --wait for `connection up`; its own timeout a little longer
# NetworkManager autoconnects a freshly loaded profile on an idle device within
# milliseconds; past this, ec2net activates it itself (e.g. autoconnect blocked).
NM_AUTOCONNECT_WAIT = 2.0


@dataclass(frozen=True)
class Activation:
    ifname: str  # "" for orphan files
    written: tuple[Path, ...]
    removed: tuple[Path, ...]
    # the written files that did not exist before: the manager has no older copy of
    # them (a file the manager never took is released before it is removed, files.py)
    created: tuple[Path, ...] = ()


class Kernel(Protocol):
    """What an activator needs of the netlink backend."""

    def link(self, name: str) -> Optional[Link]: ...

    def apply(self, changes: ChangeSet) -> ApplyReport: ...


class Activator(Protocol):
    def release(self, paths: Sequence[Path]) -> None:
        """Called before our files at `paths` are deleted."""
        ...

    def activate(
        self, activations: Sequence[Activation], changes: ChangeSet, kernel: Kernel
    ) -> ApplyReport: ...


# Runs argv (never through a shell) within `timeout` seconds; returns its stdout, or
# raises ApplyFailed (retryable) when it cannot run, times out or exits non-zero.
Runner = Callable[[Sequence[str], float], str]


def run(argv: Sequence[str], timeout: float = COMMAND_TIMEOUT) -> str:
    """Run a command; its stdout, or ApplyFailed (retryable) with its stderr."""
    try:
        proc = subprocess.run(
            list(argv), capture_output=True, text=True, timeout=timeout, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ApplyFailed(f"{argv[0]}: {exc}") from exc
    if proc.returncode != 0:
        why = (proc.stderr or proc.stdout).strip().splitlines()
        raise ApplyFailed(f"{' '.join(argv)}: exit {proc.returncode}: {' '.join(why[-2:])}")
    return proc.stdout


def _assumed(changes: ChangeSet) -> ApplyReport:
    """The manager applies on its own; the engine's verify tells what took effect."""
    return ApplyReport(applied=[c for c in changes.changes if c.op is Op.ADD])


class IfcfgActivator:
    def __init__(self, dhcp: bool, runner: Runner = run) -> None:
        self.dhcp = dhcp
        self.run = runner

    def release(self, paths: Sequence[Path]) -> None:
        if not self.dhcp:
            return
        for path in paths:
            if path.name.startswith("ifcfg-"):
                try:  # stops dhclient; the interface may already be gone
                    self.run(["ifdown", path.name[len("ifcfg-") :]], COMMAND_TIMEOUT)
                except ApplyFailed as exc:
                    log.info("%s", exc)

    def activate(
        self, activations: Sequence[Activation], changes: ChangeSet, kernel: Kernel
    ) -> ApplyReport:
        if self.dhcp:
            for act in activations:
                if act.ifname and any(p.name == f"ifcfg-{act.ifname}" for p in act.written):
                    self.run(["ifup", act.ifname], IFUP_TIMEOUT)  # dhclient asks first
        return kernel.apply(changes)


class NetworkdActivator:
    def __init__(
        self,
        state_dir: Path = Path("/run/systemd/netif/links"),
        wait: float = 5.0,
        runner: Runner = run,
    ) -> None:
        self.state_dir = state_dir
        self.wait = wait
        self.run = runner

    def release(self, paths: Sequence[Path]) -> None:
        return None

    def activate(
        self, activations: Sequence[Activation], changes: ChangeSet, kernel: Kernel
    ) -> ApplyReport:
        if activations:
            self.run(["networkctl", "reload"], COMMAND_TIMEOUT)
        for act in activations:
            ours = [p for p in act.written if p.suffix == ".network"]
            link = kernel.link(act.ifname) if act.ifname and ours else None
            if link is not None:
                self._check_applied(act.ifname, link.index, ours[0])
        return _assumed(changes)

    def _check_applied(self, ifname: str, index: int, ours: Path) -> Optional[str]:
        """networkd applies the first matching .network file in name order across
        /etc, /run and /usr/lib: find the one it really took instead of trusting ours
        sorts first (a lower-numbered generic file silently wins otherwise). Returns
        the file networkd reports (ours), None if it reported none in time."""
        deadline = time.monotonic() + self.wait
        applied = ""
        while time.monotonic() < deadline:
            applied = _keyfile_value(self.state_dir / str(index), "NETWORK_FILE")
            if applied and Path(applied).name == ours.name:
                return applied
            if applied:
                break
            cancel.pause(0.05)
        if applied:
            raise ApplyFailed(
                f"{ifname}: systemd-networkd applies {applied}, which sorts before and "
                f"matches this link, instead of {ours.name}: exclude the ENI there "
                "(e.g. a [Match] that skips its MAC) or exclude the ENI from ec2net"
            )
        log.warning("%s: networkd has not reported a .network file yet", ifname)
        return None


# Where an interface's IPv6 settings live (`net.ipv6.conf.IF`).
SYSCTL_IPV6_CONF = Path("/proc/sys/net/ipv6/conf")


class NmActivator:
    """With `bus` (busctl present), the hot path talks to NetworkManager's D-Bus API
    through busctl (nm_bus.py); nmcli stays for `connection up` (its --wait follows the
    activation to its end) and for removal. Without busctl, nmcli does it all."""

    def __init__(
        self,
        runner: Runner = run,
        ipv6_conf: Path = SYSCTL_IPV6_CONF,
        bus: bool = False,
        autoconnect_wait: float = NM_AUTOCONNECT_WAIT,
    ) -> None:
        self.run = runner
        self.ipv6_conf = ipv6_conf
        self.bus = bus
        self.autoconnect_wait = autoconnect_wait

    def release(self, paths: Sequence[Path]) -> None:
        if not paths:
            return
        by_file = {}
        listing = self.run(
            ["nmcli", "-t", "-f", "UUID,FILENAME", "connection", "show"], COMMAND_TIMEOUT
        )
        for line in listing.splitlines():
            uuid, _, filename = line.partition(":")
            by_file[filename.replace("\\:", ":")] = uuid
        for path in paths:
            found = by_file.get(str(path))
            if found:
                self.run(["nmcli", "connection", "delete", "uuid", found], COMMAND_TIMEOUT)

    def activate(
        self, activations: Sequence[Activation], changes: ChangeSet, kernel: Kernel
    ) -> ApplyReport:
        if self.bus:
            self._activate_bus(activations)
        else:
            self._activate_nmcli(activations)
        return _assumed(changes)

    def _profiles(self, activations: Sequence[Activation]) -> list[tuple[str, str]]:
        """(interface, profile uuid) per ENI whose keyfile was written; DAD off on each
        before NetworkManager gets the profile."""
        out = []
        for act in activations:
            if act.ifname and act.written:
                skip_dad(self.ipv6_conf, act.ifname)
            # One keyfile per ENI: one look at the device each.
            uuid = next((u for u in map(_profile_uuid, act.written) if u), "")
            if act.ifname and uuid:
                out.append((act.ifname, uuid))
        return out

    def _activate_nmcli(self, activations: Sequence[Activation]) -> None:
        profiles = self._profiles(activations)
        written = [p for a in activations for p in a.written]
        if written:
            self.run(["nmcli", "connection", "load", *map(str, written)], COMMAND_TIMEOUT)
        for ifname, uuid in profiles:
            show = ["nmcli", "-g", "GENERAL.CON-UUID", "device", "show", ifname]
            if self.run(show, COMMAND_TIMEOUT).strip() == uuid:
                self.run(["nmcli", "device", "reapply", ifname], COMMAND_TIMEOUT)
            else:
                self._connection_up(uuid)

    def _activate_bus(self, activations: Sequence[Activation]) -> None:
        """A profile NetworkManager has never seen (our file is new: a hot-plug) is
        autoconnected by NetworkManager as soon as it is loaded (autoconnect, priority
        100), in the version just loaded; a `connection up` on top would restart that
        activation. So: load, then wait (bounded) for the autoconnect, else `connection
        up`; a device another profile holds takes `connection up` at once. For a
        changed file, what was active *before* the load decides: our older version is
        reapplied (no bounce), anything else takes `connection up` as above."""
        profiles = self._profiles(activations)
        fresh = {a.ifname for a in activations if a.written and a.created == a.written}
        before = {i: self._device_state(i) for i, _ in profiles if i not in fresh}
        written = [p for a in activations for p in a.written]
        if written:
            failures = nm_bus.parse_load(self.run(nm_bus.load_argv(written), COMMAND_TIMEOUT))
            if failures:
                raise ApplyFailed(f"NetworkManager could not load {', '.join(failures)}")
        for ifname, uuid in profiles:
            device, active = before.get(ifname) or self._device_state(ifname)
            if active == uuid:
                if ifname not in fresh:  # else autoconnected already, in this version
                    self.run(nm_bus.reapply_argv(device), COMMAND_TIMEOUT)
            elif active or not self._autoconnected(ifname, uuid):
                self._connection_up(uuid)

    def _device_state(self, ifname: str) -> tuple[str, str]:
        """The device's object path and the uuid of its active profile ("" if none);
        ("", "") while NetworkManager does not know the device yet (a fresh hot-plug
        it is still taking in): it autoconnects our profile once it does."""
        try:
            out = self.run(nm_bus.device_argv(ifname), COMMAND_TIMEOUT)
        except ApplyFailed as exc:
            log.debug("%s: %s", ifname, exc)
            return "", ""
        device = nm_bus.parse_object(out)
        return device, self._active_uuid(device)

    def _active_uuid(self, device: str) -> str:
        out = self.run(nm_bus.active_connection_argv(device), COMMAND_TIMEOUT)
        active = nm_bus.parse_object(out)
        if active == nm_bus.NO_OBJECT:
            return ""
        return nm_bus.parse_string(self.run(nm_bus.uuid_argv(active), COMMAND_TIMEOUT))

    def _autoconnected(self, ifname: str, uuid: str) -> bool:
        deadline = time.monotonic() + self.autoconnect_wait
        while True:
            if self._device_state(ifname)[1] == uuid:
                return True
            if time.monotonic() >= deadline:
                log.info("%s: NetworkManager did not autoconnect %s", ifname, uuid)
                return False
            cancel.pause(0.05)

    def _connection_up(self, uuid: str) -> None:
        up = ["nmcli", "--wait", str(NM_UP_WAIT), "connection", "up", "uuid", uuid]
        self.run(up, NM_UP_WAIT + 10.0)


def skip_dad(ipv6_conf: Path, ifname: str) -> bool:
    """No duplicate address detection on the ENI (`accept_dad` 0), before the manager
    adds its addresses. NetworkManager has no per-profile setting for it and adds IPv6
    addresses with DAD: each stays tentative, unusable as a source and unreachable, for
    the kernel's DAD time (about 1 s; 2.6 s against 1.1 s to every address answering,
    measured on a hot-plug in the bookworm NM guest). The VPC gives an address to one
    ENI only, so DAD can find nothing; the netlink and networkd backends add theirs
    without it too (`nodad`, DuplicateAddressDetection=none). The setting lives and dies
    with the interface. False when it could not be set (no IPv6 on the link, a read-only
    /proc/sys): the addresses then come after DAD, as they would without ec2net."""
    if not ifname or "/" in ifname or ifname in (".", ".."):
        return False  # never a path outside the interface's own directory
    path = ipv6_conf / ifname / "accept_dad"
    try:
        if path.read_text().strip() != "0":
            path.write_text("0\n")
    except OSError as exc:
        log.debug("%s: DAD stays on (%s)", ifname, exc)
        return False
    return True


def _profile_uuid(path: Path) -> str:
    return _keyfile_value(path, "uuid") if path.suffix == ".nmconnection" else ""


def _keyfile_value(path: Path, key: str) -> str:
    try:
        for line in path.read_text().splitlines():
            name, sep, value = line.partition("=")
            if sep and name.strip() == key:
                return value.strip()
    except OSError:
        pass
    return ""
