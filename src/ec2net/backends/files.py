"""File backends: the planned state written as the network manager's own files.

`ifcfg` (RHEL network-scripts), `networkd` and `nm` (NetworkManager) share one shape:
`apply` renders every intent with the backend's renderer (ec2net.render), writes the
files that differ (atomically, `write_if_changed`), removes files of ours that are no
longer wanted, and hands the manager exactly the interfaces whose files changed
(activators.py). The kernel is still read over netlink, with `managed` ownership, so
the engine verifies what the manager did.

A file is ours when its first line carries `render.MARK` with the ENI's MAC. A file
without it (the user's, another generator's) is never overwritten or deleted: the
interface is left alone instead (`blocked`). Files are keyed by MAC, so a stale file
can never configure another ENI that later gets the same name.
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Iterator, Sequence
from pathlib import Path, PurePosixPath
from typing import Optional

from ec2net.backends.activators import Activation, Activator
from ec2net.backends.base import ApplyReport, Intent
from ec2net.backends.descriptor import Descriptor
from ec2net.backends.netlink import NetlinkBackend
from ec2net.errors import ApplyFailed
from ec2net.model import (
    Change,
    ChangeSet,
    Link,
    MtuSpec,
    Op,
    RouteSpec,
    owns,
)
from ec2net.render import Files, Renderer, RenderInput, is_ours
from ec2net.snapshot import Snapshot
from ec2net.state import write_if_changed

log = logging.getLogger(__name__)

_MAC_IN_HEADER = re.compile(r"\(([0-9a-f]{2}(?::[0-9a-f]{2}){5})\)")


class FileBackend:
    """Backend protocol over a renderer, an activator and a netlink reader."""

    def __init__(
        self,
        descriptor: Descriptor,
        activator: Activator,
        kernel: NetlinkBackend,
        *,
        root: str = "/",
        dhcp: bool = False,
        settle_timeout: float = 20.0,
    ) -> None:
        if descriptor.renderer is None:
            raise ValueError(f"{descriptor.name} renders no files")
        self.name = descriptor.name
        self.descriptor = descriptor
        self.renderer: Renderer = descriptor.renderer
        self.activator = activator
        self.kernel = kernel
        self.root = Path(root)
        self.dhcp = dhcp
        self.settle_timeout = settle_timeout
        self.primary_ok = descriptor.primary_ok
        self.adds_own_objects = descriptor.adds_own_objects

    # --- reading: the kernel, through netlink -------------------------------------
    def links(self) -> list[Link]:
        return self.kernel.links()

    def present(self, index: int) -> bool:
        return self.kernel.present(index)

    def snapshot(self) -> Snapshot:
        return self.kernel.snapshot()

    def set_up(self, ifname: str) -> bool:
        return self.kernel.set_up(ifname)

    def close(self) -> None:
        self.kernel.close()

    # --- files ----------------------------------------------------------------------
    def _host(self, path: PurePosixPath) -> Path:
        return self.root / path.relative_to("/")

    def blocked(self, ifname: str) -> Optional[str]:
        """Why the interface is left alone, or None. Raises UnsupportedInterfaceName
        (exit 2) for a name the manager cannot take: skipping silently would leave an
        ENI unconfigured with exit 0."""
        self.descriptor.check_name(ifname)
        if self.descriptor.user_file is None:
            return None
        path = self._host(PurePosixPath(self.descriptor.user_file.format(ifname=ifname)))
        try:
            text = path.read_text()
        except OSError:
            return None
        if is_ours(text):
            return None
        sync = _shell_value(text, "EC2SYNC")
        if sync is not None and sync.lower() == "yes":
            return None
        return f"{path} is not written by ec2net (EC2SYNC={sync or 'unset'}); leaving it alone"

    def render(self, intent: Intent) -> Files:
        if intent.plan is None or intent.link is None or intent.eni is None:
            return {}
        self.descriptor.check_name(intent.ifname)
        return self.renderer(RenderInput(intent.plan, intent.link, intent.eni, self.dhcp))

    def ours(self) -> dict[Path, str]:
        """Our files on disk -> the MAC in their header."""
        out: dict[Path, str] = {}
        for directory in self.descriptor.dirs:
            with contextlib.suppress(OSError):
                for path in sorted(self._host(PurePosixPath(directory)).iterdir()):
                    mac = _owner(path)
                    if mac is not None:
                        out[path] = mac
        return out

    # --- apply ------------------------------------------------------------------------
    def apply(self, changes: ChangeSet, intents: Sequence[Intent] = ()) -> ApplyReport:
        on_disk = self.ours()
        present = {ln.mac for ln in self.kernel.links()}
        activations: list[Activation] = []
        rendered = [{self._host(p): c for p, c in self.render(i).items()} for i in intents]
        # A path another ENI now takes (a name reused) is that ENI's, not stale.
        taken = {p for files in rendered for p in files}
        for intent, wanted in zip(intents, rendered):
            stale = [p for p, mac in on_disk.items() if mac == intent.mac and p not in taken]
            if stale:
                self.activator.release(stale)
            written = self._write(intent.ifname, wanted)
            self._remove(intent.ifname, stale)
            if written or stale:
                created = tuple(p for p in written if p not in on_disk)
                activations.append(Activation(intent.ifname, written, tuple(stale), created))
        # Orphans: ours, for a MAC that is neither here nor being handled (a crash
        # between writing and recording). Nothing can match them, but tidy up.
        handled = {i.mac for i in intents}
        orphans = [p for p, m in on_disk.items() if m not in present and m not in handled]
        if orphans:
            self.activator.release(orphans)
            for path in orphans:
                self._remove(on_disk[path], [path])  # named by MAC: no interface has it
            activations.append(Activation("", (), tuple(orphans)))
        try:
            report = self.activator.activate(activations, changes, self.kernel)
        except ApplyFailed:
            # The manager never took these files: remove them, so the next run writes
            # them again and activates them then (unchanged files are never activated).
            # Released first: a manager that did read them (NetworkManager loaded the
            # profile, then `connection up` failed) forgets them too, so a file of ours
            # that does not exist is one the manager has no copy of (Activation.created).
            for act in activations:
                if act.written:
                    with contextlib.suppress(ApplyFailed):
                        self.activator.release(act.written)
                self._remove(act.ifname, act.written)
            raise
        if self.kernel.managed:
            cleanup = ChangeSet(tuple(_leftovers(changes, intents)))
            if cleanup:
                done = self.kernel.apply(cleanup)
                report.applied += done.applied
                report.failed += done.failed
        return report

    def _write(self, ifname: str, wanted: dict[Path, str]) -> tuple[Path, ...]:
        """Write every wanted file; the paths whose content changed."""
        written = []
        for path, content in sorted(wanted.items()):
            if write_if_changed(path, content, self.descriptor.mode):
                log.debug("%s: wrote %s", ifname, path)
                written.append(path)
        return tuple(written)

    def _remove(self, ifname: str, paths: Sequence[Path]) -> None:
        for path in paths:
            try:
                path.unlink()
            except FileNotFoundError:
                pass
            except OSError as exc:
                raise ApplyFailed(f"cannot remove {path}: {exc}") from exc
            log.debug("%s: removed %s", ifname, path)


def _leftovers(changes: ChangeSet, intents: Sequence[Intent]) -> Iterator[Change]:
    """Deletions the engine wants that the manager may not do itself. networkd forgets
    the rules of a .network file that is gone (they turn foreign, and foreign rules are
    kept, see docs/backends.md); a removed secondary address or its rules may likewise
    stay. Routes of a kept ENI are left to the manager: NetworkManager adds its own to
    the ENI's table and would add them back. On removal, the MTU the link had before. On
    a take-over, another tool's routes and rules (the converge hands them over only once
    the manager applied ours): no file of ours names them."""
    removing = {i.ifname for i in intents if i.plan is None}
    for change in changes.changes:
        obj = change.obj
        if isinstance(obj, MtuSpec) and obj.ifname in removing:
            yield change  # the MTU set back on removal: no file of ours says it any more
            continue
        if change.release:
            yield change
            continue
        if change.op is not Op.DEL:
            continue
        for intent in intents:
            if isinstance(obj, RouteSpec) and intent.plan is not None:
                continue
            if owns(obj, intent.table, intent.ifname):
                yield change
                break


def _owner(path: Path) -> Optional[str]:
    """The MAC in our header line, or None for files that are not ours."""
    try:
        with path.open() as f:
            first = f.readline(512)
    except (OSError, UnicodeDecodeError):
        return None
    if not is_ours(first):
        return None
    found = _MAC_IN_HEADER.search(first)
    return found.group(1) if found else None


def _shell_value(text: str, key: str) -> Optional[str]:
    """The last KEY=value assignment in a shell-style file, unquoted."""
    value = None
    for line in text.splitlines():
        name, sep, rest = line.strip().partition("=")
        if sep and name == key:
            value = rest.strip().strip("\"'")
    return value
