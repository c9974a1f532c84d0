"""Composable setups for system tests: a namespace LAN and a booted guest.

Both are context managers that always undo what they did (QEMU and dnsmasq by pid, the
namespace by name), including when the body raises, so pytest fixtures and benchmarks
can share them.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from systest import netns
from systest.image import Image
from systest.netns import Dnsmasq
from systest.qemu import BootInfo, Vm, first_boot

PRIMARY_MAC = "02:00:00:00:00:05"


def short_workdir() -> Path:
    # Under /tmp, not pytest's tmp_path: unix socket paths must stay under 108 bytes.
    return Path(tempfile.mkdtemp(prefix="e2q-", dir="/tmp"))


@dataclass
class Lan:
    netns: str
    workdir: Path
    bridge: str
    taps: tuple[str, ...]
    gateway: str  # the namespace's own address on the bridge
    dnsmasq: Dnsmasq


@contextmanager
def namespace(name: Optional[str] = None) -> Iterator[str]:
    """A fresh ``e2q*`` namespace, deleted by name on exit."""
    ns = name or netns.new_netns_name()
    netns.create_netns(ns)
    try:
        yield ns
    finally:
        netns.delete_netns(ns)


@contextmanager
def lan(
    ns: str,
    workdir: Path,
    taps: Sequence[str],
    reservations: Mapping[str, str],
    *,
    address: str = "10.0.1.1/24",
    bridge: str = "br0",
) -> Iterator[Lan]:
    """Taps on a bridge with ``address`` and a DHCP server answering ``reservations``.

    A stand-in for ec2sim's fabric, so the harness can be proved on its own.
    """
    netns.create_taps(ns, taps)
    netns.make_lan(ns, bridge, address, taps)
    dns = Dnsmasq(ns, bridge, workdir / "dnsmasq", reservations)
    dns.start()
    try:
        yield Lan(ns, workdir, bridge, tuple(taps), address.split("/", maxsplit=1)[0], dns)
    finally:
        dns.stop()


@contextmanager
def booted_vm(
    image: Image,
    ns: str,
    workdir: Path,
    primary_tap: str,
    *,
    primary_mac: str = PRIMARY_MAC,
    boot_timeout: float = 300.0,
) -> Iterator[tuple[Vm, BootInfo]]:
    """Boot ``image`` in ``ns`` and wait for systemd; QEMU is always stopped on exit."""
    vms: list[Vm] = []

    def launch() -> Vm:
        vm = Vm(image, ns, workdir, primary_tap, primary_mac)
        vms.append(vm)
        vm.start()
        return vm

    try:
        yield first_boot(launch, boot_timeout)
    finally:
        for vm in vms:
            vm.stop()


def remove_workdir(workdir: Path) -> None:
    shutil.rmtree(workdir, ignore_errors=True)
