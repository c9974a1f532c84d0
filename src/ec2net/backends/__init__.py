"""Backends and the registry that picks one.

A backend applies a ChangeSet to the system. `netlink` talks to the kernel directly;
file backends (ifcfg, networkd, nm) render the same desired state for the manager that
owns the links (files.py). Each registry entry says whether it can work here and its
priority; `open_backend` takes the configured one or the best available: a running
NetworkManager, else a running systemd-networkd, else RHEL network-scripts, else
netlink. A manager that runs owns the links: netlink objects written underneath it
would be wiped (networkd drops foreign rules) or fought over.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ec2net.backends.base import Backend
from ec2net.config import Settings
from ec2net.errors import ConfigError

# Process names (/proc/PID/comm, at most 15 characters) of the managers we detect.
NM_COMM = "NetworkManager"
NETWORKD_COMM = "systemd-network"
NETWORK_SCRIPTS = "/etc/sysconfig/network-scripts/ifup-eth"


@dataclass(frozen=True)
class Facts:
    running: frozenset[str]  # process names
    network_scripts: bool


@dataclass(frozen=True)
class Entry:
    name: str
    priority: int
    available: Callable[[Facts], bool]
    factory: Callable[[Settings], Backend]


def _netlink(settings: Settings) -> Backend:
    from ec2net.backends.netlink import NetlinkBackend  # noqa: PLC0415 - pyroute2 is slow

    return NetlinkBackend()


def _files(name: str) -> Callable[[Settings], Backend]:
    def factory(settings: Settings) -> Backend:
        from ec2net.backends import flavours  # noqa: PLC0415 - pyroute2 is slow

        return flavours.open_file_backend(name, settings)

    return factory


REGISTRY: tuple[Entry, ...] = (
    Entry("nm", 30, lambda f: NM_COMM in f.running, _files("nm")),
    Entry("networkd", 20, lambda f: NETWORKD_COMM in f.running, _files("networkd")),
    Entry("ifcfg", 10, lambda f: f.network_scripts and NM_COMM not in f.running, _files("ifcfg")),
    Entry("netlink", 0, lambda f: True, _netlink),
)


def choose(facts: Facts) -> str:
    """The backend `auto` means on a host with these facts."""
    return max((e for e in REGISTRY if e.available(facts)), key=lambda e: e.priority).name


def gather_facts(proc: Path = Path("/proc"), root: Path = Path("/")) -> Facts:
    return Facts(
        running=frozenset(_comms(proc)),
        network_scripts=(root / NETWORK_SCRIPTS.lstrip("/")).exists(),
    )


def _comms(proc: Path) -> Iterable[str]:
    try:
        entries = os.listdir(proc)
    except OSError:
        return
    for entry in entries:
        if entry.isdigit():
            try:
                yield (proc / entry / "comm").read_text().strip()
            except OSError:
                continue  # the process ended meanwhile


def open_backend(settings: Settings) -> Backend:
    name = settings.backend
    if name == "auto":
        name = choose(gather_facts(root=Path(settings.files_root)))
    for entry in REGISTRY:
        if entry.name == name:
            return entry.factory(settings)
    raise ConfigError(settings.config_path, "backend.name", f"{name} is not available")
