"""The host side of the guest's network, inside one test namespace.

``create_taps`` is the only piece QEMU depends on: the taps must exist in the namespace
before QEMU opens them. What sits behind the taps is separate on purpose: ``make_lan``
(a bridge with an address, used by the smoke test) today, ec2sim's fabric later.

Namespaces are named ``e2q<random hex>`` so cleanup can go strictly by name, and every
process started here is tracked by pid and ended by that pid only.
"""

from __future__ import annotations

import secrets
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

NS_PREFIX = "e2q"


def _ip(*args: str, netns: Optional[str] = None) -> None:
    argv = ["ip", *(["-n", netns] if netns else []), *args]
    proc = subprocess.run(argv, check=False, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: {proc.stderr.strip()}")


def new_netns_name() -> str:
    return NS_PREFIX + secrets.token_hex(4)


def create_netns(name: str) -> None:
    _ip("netns", "add", name)
    _ip("link", "set", "lo", "up", netns=name)


def delete_netns(name: str) -> None:
    """Delete the namespace by name (our processes in it must already be ended)."""
    if name in list_netns():
        _ip("netns", "del", name)


def list_netns() -> list[str]:
    out = subprocess.run(
        ["ip", "netns", "list"], check=True, capture_output=True, text=True
    ).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def create_taps(netns: str, taps: Sequence[str], mtu: Optional[int] = None) -> None:
    """Create persistent tap devices in ``netns``, admin-up, ready for QEMU to open.

    Whatever connects the taps to a network (a bridge here, ec2sim's router later) is
    attached afterwards by the caller.
    """
    for tap in taps:
        _ip("tuntap", "add", "dev", tap, "mode", "tap", netns=netns)
        if mtu is not None:
            _ip("link", "set", tap, "mtu", str(mtu), netns=netns)
        _ip("link", "set", tap, "up", netns=netns)


def make_lan(netns: str, bridge: str, address: str, taps: Sequence[str]) -> None:
    """A bridge carrying ``address`` (e.g. 10.0.1.1/24) with ``taps`` as its ports."""
    _ip("link", "add", bridge, "type", "bridge", "forward_delay", "0", netns=netns)
    for tap in taps:
        _ip("link", "set", tap, "master", bridge, netns=netns)
    _ip("addr", "add", address, "dev", bridge, "nodad", netns=netns)
    _ip("link", "set", bridge, "up", netns=netns)


@dataclass
class Dnsmasq:
    """DHCPv4 server on one interface of a namespace, reservations by MAC."""

    netns: str
    interface: str
    workdir: Path
    reservations: Mapping[str, str]  # mac -> IPv4 address
    dhcp_range: tuple[str, str] = ("10.0.1.100", "10.0.1.200")
    netmask: str = "255.255.255.0"
    proc: Optional[subprocess.Popen[bytes]] = None

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        leases = self.workdir / "dnsmasq.leases"
        leases.write_text("")  # a stale lease would outrank the reservation
        argv = ["ip", "netns", "exec", self.netns, "dnsmasq", "--keep-in-foreground"]
        argv += ["--user=root", "--port=0", "--no-resolv", "--no-hosts", "--bind-interfaces"]
        argv += [f"--interface={self.interface}", "--except-interface=lo"]
        argv += [f"--dhcp-range={self.dhcp_range[0]},{self.dhcp_range[1]},{self.netmask},1h"]
        argv += [f"--dhcp-leasefile={leases}", f"--pid-file={self.workdir / 'dnsmasq.pid'}"]
        argv += [f"--log-facility={self.workdir / 'dnsmasq.log'}", "--log-dhcp"]
        for mac, ip in self.reservations.items():
            argv.append(f"--dhcp-host={mac},{ip}")
        self.proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        time.sleep(0.2)
        if self.proc.poll() is not None:
            err = self.proc.stderr.read().decode() if self.proc.stderr else ""
            raise RuntimeError(f"dnsmasq exited {self.proc.returncode}: {err}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc is not None and self.proc.stderr is not None:
            self.proc.stderr.close()
        self.proc = None

    def log(self) -> str:
        try:
            return (self.workdir / "dnsmasq.log").read_text(errors="replace")
        except OSError:
            return ""
