"""Backends and the registry that picks one.

A backend applies a ChangeSet to the system. `netlink` talks to the kernel directly;
file backends (ifcfg, networkd, NetworkManager) render the same desired state for the
manager that owns the link. Each registry entry says whether it can work here and its
priority; `open_backend` takes the configured one or the best available.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from ec2net.backends.base import Backend
from ec2net.config import Settings
from ec2net.errors import ConfigError


@dataclass(frozen=True)
class Entry:
    name: str
    priority: int
    available: Callable[[], bool]
    factory: Callable[[Settings], Backend]


def _netlink(settings: Settings) -> Backend:
    from ec2net.backends.netlink import NetlinkBackend  # noqa: PLC0415 - pyroute2 is slow

    return NetlinkBackend()


REGISTRY: tuple[Entry, ...] = (Entry("netlink", 0, lambda: True, _netlink),)


def open_backend(settings: Settings) -> Backend:
    if settings.backend != "auto":
        for entry in REGISTRY:
            if entry.name == settings.backend:
                return entry.factory(settings)
        raise ConfigError(
            settings.config_path,
            "backend.name",
            f"{settings.backend} is not available in this version",
        )
    best = max((e for e in REGISTRY if e.available()), key=lambda e: e.priority)
    return best.factory(settings)
