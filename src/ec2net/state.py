"""Runtime state under the runtime directory: per-ENI records, locks, atomic writes.

A record says which ENI (by MAC and ENI id) we configured, on which link, with which
table, and which addresses are (or may be) ours: the proof of ownership that `down` and
`scan` rely on after the device is gone. Records are keyed by MAC, never by name.

Records are written ahead of every change (phase `applying`, the addresses about to be
added already listed), finalised after verify (`applied`), and a removal keeps its
record (`removing`) until verify shows the ENI clean. So a process killed at any
instant leaves a record that covers everything it may have added.

A record that cannot be read (truncated, not JSON, a version this ec2net does not know)
is never taken as "nothing owned": it is moved aside (`*.unreadable`, for the operator)
and whatever could be salvaged from it (table, owned addresses) is kept; addresses whose
ownership is unknown are then left alone rather than removed.
"""

from __future__ import annotations

import contextlib
import enum
import errno
import fcntl
import ipaddress
import json
import logging
import os
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Optional

from ec2net import cancel, rundir
from ec2net.errors import LockTimeout, RuntimeDirError, UnsafePath
from ec2net.metadata import EniMetadata
from ec2net.model import IPAddress

log = logging.getLogger(__name__)

# 2: write-ahead phases. Version 1 records (no phase) read as applied.
# 3: phase `foreign` and what another tool has on the ENI.
RECORD_VERSION = 3


class Phase(str, enum.Enum):
    APPLYING = "applying"  # intent recorded; changes may be partly made
    APPLIED = "applied"  # verified
    REMOVING = "removing"  # removal started; kept until verified clean
    UNREADABLE = "unreadable"  # salvaged from a record that could not be read
    # Left to another tool whose routes and rules hold the ENI's table: nothing on
    # the ENI is ours (foreign.py). Kept so that `status` shows it, and re-checked by
    # every refresh.
    FOREIGN = "foreign"

    def __str__(self) -> str:
        return self.value


def write_if_changed(
    path: Path, content: str, mode: int = 0o644, *, durable: bool = True, follow_dir: bool = True
) -> bool:
    """Atomically replace `path` with `content` unless it already holds exactly that
    (rundir.replace_file: never through a symbolic link). Returns whether it wrote.
    `durable`: fsync the file and the directory too, so that the new content survives a
    power loss (configuration in /etc). Runtime state needs only the rename: a process
    killed at any instant leaves the old file or the new one, and what is under /run
    does not survive a reboot anyway; an fsync there only waits for a disk where /run
    is not a tmpfs."""
    try:
        if rundir.read_nofollow(path, len(content.encode()) + 1).decode() == content:
            return False
    except (OSError, UnicodeDecodeError):
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    rundir.replace_file(path, content.encode(), mode, durable=durable, follow_dir=follow_dir)
    return True


@dataclass
class Record:
    mac: str
    eni_id: str
    ifname: str
    ifindex: int
    table: int
    owned_ips: list[str] = field(default_factory=list)
    metadata: dict[str, Any] = field(default_factory=dict)  # EniMetadata, as JSON
    updated: float = 0.0
    version: int = RECORD_VERSION
    phase: str = Phase.APPLIED.value
    # The link's MTU before ec2net first changed it: `down` sets it back.
    mtu_before: Optional[int] = None
    # Another tool's routes and rules found in the ENI's table (foreign.summary), and
    # that tool, where their shape tells ("" unknown).
    foreign: list[str] = field(default_factory=list)
    foreign_tool: str = ""

    def owned(self) -> frozenset[IPAddress]:
        return frozenset(ipaddress.ip_address(a) for a in self.owned_ips)

    def eni(self) -> Optional[EniMetadata]:
        try:
            return eni_from_json(self.metadata) if self.metadata else None
        except (KeyError, TypeError, ValueError):
            return None

    @property
    def done(self) -> bool:
        return self.phase == Phase.APPLIED.value


def _salvage(mac: str, data: object) -> Record:
    """What can be trusted from an unreadable record: fields of the right type, and
    owned addresses that parse. The rest stays unknown (table 0: none)."""
    rec = Record(mac, eni_id="", ifname="", ifindex=0, table=0, phase=Phase.UNREADABLE.value)
    if not isinstance(data, dict):
        return rec
    for name in ("eni_id", "ifname"):
        if isinstance(data.get(name), str):
            setattr(rec, name, data[name])
    for name in ("ifindex", "table", "mtu_before"):
        if isinstance(data.get(name), int) and not isinstance(data.get(name), bool):
            setattr(rec, name, data[name])
    if isinstance(data.get("metadata"), dict):
        rec.metadata = data["metadata"]
        if rec.eni() is None:
            rec.metadata = {}
    owned = data.get("owned_ips")
    if isinstance(owned, list):
        for item in owned:
            with contextlib.suppress(TypeError, ValueError):
                rec.owned_ips.append(str(ipaddress.ip_address(item)))
    return rec


def _parse_record(mac: str, text: str) -> Record:
    """A record from its file, or ValueError saying why it cannot be trusted."""
    data = json.loads(text)
    if not isinstance(data, dict):
        raise ValueError("not a JSON object")
    version = data.get("version", 1)
    if not isinstance(version, int) or version > RECORD_VERSION:
        raise ValueError(f"version {version!r} is newer than this ec2net ({RECORD_VERSION})")
    known = {f.name for f in fields(Record)}
    rec = Record(**{k: v for k, v in data.items() if k in known})
    if rec.mac != mac or not isinstance(rec.table, int) or not isinstance(rec.owned_ips, list):
        raise ValueError("fields do not match the record's name or types")
    if rec.mtu_before is not None and not isinstance(rec.mtu_before, int):
        raise ValueError("fields do not match the record's name or types")
    if not isinstance(rec.foreign, list) or not isinstance(rec.foreign_tool, str):
        raise ValueError("fields do not match the record's name or types")
    rec.owned()  # every owned address must parse
    if version < RECORD_VERSION:
        rec.version = RECORD_VERSION
    if rec.phase not in {p.value for p in Phase}:
        raise ValueError(f"unknown phase {rec.phase!r}")
    return rec


def eni_to_json(eni: EniMetadata) -> dict[str, Any]:
    data = asdict(eni)
    for key, value in data.items():
        if isinstance(value, tuple):
            data[key] = [str(v) for v in value]
        elif value is not None and not isinstance(value, (bool, int, str)):
            data[key] = str(value)
    return data


def eni_from_json(data: dict[str, Any]) -> EniMetadata:
    a4, a6 = ipaddress.IPv4Address, ipaddress.IPv6Address
    n4, n6 = ipaddress.IPv4Network, ipaddress.IPv6Network
    return EniMetadata(
        mac=data["mac"],
        eni_id=data["eni_id"],
        device_number=int(data["device_number"]),
        network_card=int(data["network_card"]),
        is_primary=bool(data["is_primary"]),
        ipv4s=tuple(a4(v) for v in data["ipv4s"]),
        subnet4=n4(data["subnet4"]) if data.get("subnet4") else None,
        ipv6s=tuple(a6(v) for v in data["ipv6s"]),
        subnet6=tuple(n6(v) for v in data["subnet6"]),
        ipv4_prefixes=tuple(n4(v) for v in data["ipv4_prefixes"]),
        ipv6_prefixes=tuple(n6(v) for v in data["ipv6_prefixes"]),
        vpc4=tuple(n4(v) for v in data["vpc4"]),
        vpc6=tuple(n6(v) for v in data["vpc6"]),
    )


def _symlink(path: Path) -> UnsafePath:
    return UnsafePath(f"{path}: is a symbolic link; ec2net does not follow one")


class Store:
    """Records and locks in one runtime directory (EC2NET_RUNTIME_DIR)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.records_dir = root / "enis"
        self.locks_dir = root / "locks"

    def ensure(self) -> None:
        """The runtime directory and its sub-directories, created 0700 and checked
        (rundir.check_dir): UnsafePath if another user could change them,
        RuntimeDirError if they cannot be created."""
        for d in (self.root, self.records_dir, self.locks_dir):
            try:
                rundir.check_dir(d, what="runtime directory" if d == self.root else "directory")
            except OSError as err:
                raise RuntimeDirError(self.root, self._rel(d), err) from None

    def _rel(self, path: Path) -> str:
        with contextlib.suppress(ValueError):
            return str(path.relative_to(self.root)) if path != self.root else "."
        return str(path)

    def write(self, path: Path, content: str) -> bool:
        """Write one of our files (write_if_changed, not durable: runtime state);
        RuntimeDirError names the directory and the error when it cannot (ENOSPC,
        EROFS)."""
        self.ensure()
        try:
            return write_if_changed(path, content, durable=False)
        except OSError as err:
            raise RuntimeDirError(self.root, self._rel(path), err) from None

    def read(self, path: Path) -> Optional[str]:
        """One of our files, None if it does not exist; UnsafePath for a symbolic link
        (never followed), OSError or UnicodeDecodeError for the rest."""
        try:
            return rundir.read_nofollow(path).decode()
        except FileNotFoundError:
            return None
        except OSError as err:
            if rundir.is_symlink(err):
                raise _symlink(path) from None
            raise

    @property
    def token_cache(self) -> Path:
        return self.root / "imds-token"

    @property
    def instance_file(self) -> Path:
        return self.root / "instance.json"

    def _path(self, mac: str) -> Path:
        return self.records_dir / (mac.replace(":", "-") + ".json")

    def load(self, mac: str) -> Optional[Record]:
        path = self._path(mac)
        try:
            text = self.read(path)
        except (OSError, UnicodeDecodeError) as err:
            return self._set_aside(path, mac, "", err)
        if text is None:
            return None
        try:
            return _parse_record(mac, text)
        except (ValueError, TypeError, KeyError) as err:
            return self._set_aside(path, mac, text, err)

    def _set_aside(self, path: Path, mac: str, text: str, err: Exception) -> Record:
        """Keep the unreadable file for the operator and replace it with what could be
        salvaged, so that the next reader sees a valid record and nothing is forgotten."""
        try:
            data: object = json.loads(text)
        except ValueError:
            data = None
        rec = _salvage(mac, data)
        aside = path.with_name(f"{path.name}.unreadable")
        with contextlib.suppress(OSError):
            os.replace(path, aside)
        log.error(
            "%s: record %s cannot be read (%s); kept as %s; salvaged table %s and %d "
            "owned addresses, other addresses on the link are left alone",
            rec.ifname or mac, path, err, aside.name, rec.table or "unknown", len(rec.owned_ips),
        )  # fmt: skip
        self.save(rec, touch=False)
        return rec

    def records(self) -> list[Record]:
        out: list[Record] = []
        if not self.records_dir.is_dir():
            return out
        for path in sorted(self.records_dir.glob("*.json")):
            rec = self.load(path.stem.replace("-", ":"))
            if rec is not None:
                out.append(rec)
        return out

    def save(self, rec: Record, *, touch: bool = True) -> None:
        if touch:
            rec.updated = time.time()
        data = asdict(rec)
        data["phase"] = Phase(rec.phase).value
        self.write(self._path(rec.mac), json.dumps(data, indent=1) + "\n")

    def delete(self, mac: str) -> None:
        path = self._path(mac)
        try:
            path.unlink()
        except FileNotFoundError:
            pass
        except OSError as err:
            raise RuntimeDirError(self.root, self._rel(path), err) from None

    @contextlib.contextmanager
    def lock(self, name: str, timeout: float) -> Iterator[None]:
        """An exclusive flock on locks/NAME, waited for at most `timeout` seconds.
        flock is released by the kernel if we die, so a crash never wedges others."""
        self.ensure()
        path = self.locks_dir / f"{name.replace(':', '-')}.lock"
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        except OSError as err:
            if rundir.is_symlink(err):
                raise _symlink(path) from None
            raise RuntimeDirError(self.root, self._rel(path), err) from None
        try:
            deadline = time.monotonic() + timeout
            delay = 0.005
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except OSError as err:
                    if err.errno not in (errno.EAGAIN, errno.EACCES):
                        raise
                    if time.monotonic() >= deadline:
                        raise LockTimeout(f"{name}: lock held by another ec2net") from None
                    cancel.pause(delay)
                    delay = min(delay * 2, 0.1)
            yield
        finally:
            os.close(fd)
