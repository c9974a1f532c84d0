"""Runtime state under the runtime directory: per-ENI records, locks, atomic writes.

A record says which ENI (by MAC and ENI id) we configured, on which link, with which
table, and which addresses we added: the proof of ownership that `down` and `scan`
rely on after the device is gone. Records are keyed by MAC, never by name.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import ipaddress
import json
import os
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional

from ec2net.errors import LockTimeout
from ec2net.metadata import EniMetadata
from ec2net.model import IPAddress

RECORD_VERSION = 1


def write_if_changed(path: Path, content: str, mode: int = 0o644) -> bool:
    """Atomically replace `path` with `content` (temp file + fsync + rename) unless it
    already holds exactly that. Returns whether it wrote."""
    try:
        if path.read_text() == content:
            return False
    except (OSError, UnicodeDecodeError):
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(content)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
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

    def owned(self) -> frozenset[IPAddress]:
        return frozenset(ipaddress.ip_address(a) for a in self.owned_ips)

    def eni(self) -> Optional[EniMetadata]:
        return eni_from_json(self.metadata) if self.metadata else None


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


class Store:
    """Records and locks in one runtime directory (EC2NET_RUNTIME_DIR)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.records_dir = root / "enis"
        self.locks_dir = root / "locks"

    def ensure(self) -> None:
        for d in (self.root, self.records_dir, self.locks_dir):
            d.mkdir(mode=0o755, parents=True, exist_ok=True)

    @property
    def token_cache(self) -> Path:
        return self.root / "imds-token"

    @property
    def instance_file(self) -> Path:
        return self.root / "instance.json"

    def _path(self, mac: str) -> Path:
        return self.records_dir / (mac.replace(":", "-") + ".json")

    def load(self, mac: str) -> Optional[Record]:
        try:
            data = json.loads(self._path(mac).read_text())
            return Record(**data)
        except FileNotFoundError:
            return None
        except (OSError, ValueError, TypeError):
            return None  # unreadable record: treated as absent, rewritten on next up

    def records(self) -> list[Record]:
        out: list[Record] = []
        if not self.records_dir.is_dir():
            return out
        for path in sorted(self.records_dir.glob("*.json")):
            rec = self.load(path.stem.replace("-", ":"))
            if rec is not None:
                out.append(rec)
        return out

    def save(self, rec: Record) -> None:
        rec.updated = time.time()
        write_if_changed(self._path(rec.mac), json.dumps(asdict(rec), indent=1) + "\n")

    def delete(self, mac: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self._path(mac).unlink()

    @contextlib.contextmanager
    def lock(self, name: str, timeout: float) -> Iterator[None]:
        """An exclusive flock on locks/NAME, waited for at most `timeout` seconds.
        flock is released by the kernel if we die, so a crash never wedges others."""
        self.ensure()
        path = self.locks_dir / f"{name.replace(':', '-')}.lock"
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
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
                    time.sleep(delay)
                    delay = min(delay * 2, 0.1)
            yield
        finally:
            os.close(fd)
