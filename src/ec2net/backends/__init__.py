"""Backends: one descriptor per backend (`DESCRIPTORS`), and the choice among them.

A backend applies a ChangeSet to the system. `netlink` talks to the kernel directly;
file backends (ifcfg, networkd, nm) render the same desired state for the manager that
owns the links (files.py). Config validation, the CLI (`render --backend`), the man
pages and auto-detection all read `DESCRIPTORS`: a new backend is its renderer module
(plus an activator), its name in backend_names.py and one entry here.

`auto` takes the best available: a running NetworkManager, else a running
systemd-networkd, else RHEL network-scripts, else netlink. A manager that runs owns the
links: netlink objects written underneath it would be wiped (networkd drops foreign
rules) or fought over.

Names and titles live in backend_names.py, which config.py reads (it must not import
this registry: the registry reads the configuration). pyroute2 and the activators load
when a backend is opened.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from ec2net import backend_names as known
from ec2net.backends import ifnames
from ec2net.backends.descriptor import Descriptor, Facts
from ec2net.errors import ConfigError
from ec2net.render import ifcfg, networkd, nm

if TYPE_CHECKING:
    from ec2net.backends.activators import Activator
    from ec2net.backends.base import Backend
    from ec2net.config import Settings

__all__ = ["DESCRIPTORS", "Descriptor", "Facts", "by_name", "choose", "open_backend"]

# Process names (/proc/PID/comm, at most 15 characters) of the managers we detect.
NM_COMM = "NetworkManager"
NETWORKD_COMM = "systemd-network"
NETWORK_SCRIPTS = str(ifcfg.DIR / "ifup-eth")


# Activator factories import on call: activators.py needs pyroute2.
def _ifcfg_activator(settings: Settings) -> Activator:
    from ec2net.backends.activators import IfcfgActivator  # noqa: PLC0415

    return IfcfgActivator(settings.ifcfg_dhcp)


def _networkd_activator(settings: Settings) -> Activator:
    from ec2net.backends.activators import NetworkdActivator  # noqa: PLC0415

    return NetworkdActivator()


def _nm_activator(settings: Settings) -> Activator:
    from ec2net.backends.activators import NmActivator  # noqa: PLC0415

    return NmActivator(bus=shutil.which("busctl") is not None)


DESCRIPTORS: tuple[Descriptor, ...] = (
    Descriptor(
        known.NM,
        30,
        lambda f: NM_COMM in f.running,
        nm.render,
        (nm.DIR,),
        mode=0o600,  # NetworkManager ignores keyfiles readable by others
        activator=_nm_activator,
        adds_own_objects=True,  # e.g. fe80::/64 in the ENI's table
        name_problem=ifnames.keyfile,
    ),
    Descriptor(
        known.NETWORKD,
        20,
        lambda f: NETWORKD_COMM in f.running,
        networkd.render,
        (networkd.DIR,),
        activator=_networkd_activator,
        adds_own_objects=True,  # its rules carry its own protocol
        # The name is only part of our file name; the file matches by MAC.
        name_problem=ifnames.kernel,
    ),
    Descriptor(
        # RHEL 8 runs NetworkManager, which reads ifcfg files itself: nm wins there.
        known.IFCFG,
        10,
        lambda f: f.network_scripts and NM_COMM not in f.running,
        ifcfg.render,
        (ifcfg.DIR,),
        activator=_ifcfg_activator,
        user_file=str(ifcfg.DIR / "ifcfg-{ifname}"),
        primary_ok=True,  # the primary's own ifcfg file stays the user's (`blocked`)
        # ec2net applies the files' objects itself, over netlink with protocol 236
        # (network-scripts has no reapply), and they are exactly what ifup makes of the
        # files at boot: nothing of the manager's own to tolerate. dhclient's primary
        # address (ifcfg_dhcp) is a planned object; its main-table prefix route is not
        # ours by protocol.
        adds_own_objects=False,  # and it does not settle: applied synchronously
        name_problem=ifnames.network_scripts,
    ),
    Descriptor(known.NETLINK, 0, lambda f: True, primary_ok=True),
)

NAMES: tuple[str, ...] = tuple(d.name for d in DESCRIPTORS)


def by_name(name: str) -> Descriptor:
    for desc in DESCRIPTORS:
        if desc.name == name:
            return desc
    raise KeyError(name)


def file_backends() -> tuple[Descriptor, ...]:
    return tuple(d for d in DESCRIPTORS if d.writes_files)


def choose(facts: Facts) -> str:
    """The backend `auto` means on a host with these facts."""
    return max((d for d in DESCRIPTORS if d.available(facts)), key=lambda d: d.priority).name


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
    try:
        desc = by_name(name)
    except KeyError:
        raise ConfigError(
            settings.config_path, "backend.name", f"{name} is not available"
        ) from None
    # pyroute2 is slow to import: only now.
    from ec2net.backends.netlink import NetlinkBackend  # noqa: PLC0415

    if desc.renderer is None or desc.activator is None:
        return NetlinkBackend()
    from ec2net.backends.files import FileBackend  # noqa: PLC0415

    return FileBackend(
        desc,
        desc.activator(settings),
        NetlinkBackend(managed=desc.adds_own_objects),
        root=settings.files_root,
        dhcp=settings.ifcfg_dhcp,
        settle_timeout=desc.settle_timeout(settings),
    )
