"""Which links and ENIs ec2net configures: one place for every rule, used by `up`,
`scan`, `render` and the daemon.

Two checks, because the second needs IMDS: `link_skip` (driver, exclusions, ports of
a bridge/bond/team, the primary, the backend's own refusals) before any request, and
`eni_skip` (ENI id, the primary as IMDS reports it) after. A skip is quiet when the link
simply is not an ENI in use (a port handed to VMs or containers): logged at DEBUG.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from typing import Optional, Protocol

from ec2net.config import Settings
from ec2net.metadata import EniMetadata
from ec2net.model import Link


@dataclass(frozen=True)
class Skip:
    reason: str
    quiet: bool = False


class Traits(Protocol):
    """What eligibility needs to know of the backend."""

    name: str
    primary_ok: bool

    def blocked(self, ifname: str) -> Optional[str]: ...


def _primary(settings: Settings, backend: Traits) -> Optional[Skip]:
    if not settings.manage_primary:
        return Skip("primary ENI (interfaces.manage_primary is off)", quiet=True)
    if not backend.primary_ok:
        return Skip(f"primary ENI: its boot profile owns it under backend {backend.name}")
    return None


def link_skip(link: Link, settings: Settings, backend: Traits, primary_mac: str) -> Optional[Skip]:
    if link.master is not None:
        return Skip("a port of a bridge, bond or team", quiet=True)
    if link.driver not in settings.drivers:
        return Skip(f"driver {link.driver or 'none'!r} is not in interfaces.drivers", quiet=True)
    if any(fnmatch.fnmatchcase(link.name, pat) for pat in settings.exclude_names):
        return Skip("excluded by name")
    if link.mac in settings.exclude_macs:
        return Skip("excluded by MAC")
    if link.mac == primary_mac:
        found = _primary(settings, backend)
        if found is not None:
            return found
    reason = backend.blocked(link.name)
    return Skip(reason) if reason is not None else None


def eni_skip(eni: EniMetadata, settings: Settings, backend: Traits) -> Optional[Skip]:
    if eni.eni_id in settings.exclude_eni_ids:
        return Skip("excluded by ENI id")
    if eni.is_primary:
        return _primary(settings, backend)
    return None
