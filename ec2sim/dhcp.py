"""Optional DHCP(v4/v6) and IPv6 router advertisements from dnsmasq in the router
namespace, for backends that rely on them (networkd, NetworkManager, dhclient).

Leases are reserved by MAC (as the VPC's DHCP does: the ENI's primary addresses only).
All files live in the world's temp dir; the lease file starts empty each run because
dnsmasq keeps DHCPv6 leases by client id.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Optional

from ec2sim.netns import kill_recorded, ns_exec_argv, proc_start_time
from ec2sim.world import Eni, World


class Dnsmasq:
    def __init__(self, ns: str, tmpdir: str, world: World, *, dhcp: bool, ra: bool) -> None:
        self.ns = ns
        self.dir = Path(tmpdir)
        self.world = world
        self.dhcp = dhcp
        self.ra = ra
        self.conf = self.dir / "dnsmasq.conf"
        self.hosts = self.dir / "dnsmasq.hosts"
        self.leases = self.dir / "dnsmasq.leases"
        self.logfile = self.dir / "dnsmasq.log"
        self._proc: Optional[subprocess.Popen[bytes]] = None

    @property
    def pid(self) -> int:
        assert self._proc is not None
        return self._proc.pid

    def _config(self) -> str:
        lines = [
            "port=0",  # no DNS
            "no-resolv",
            "no-hosts",
            "user=root",  # needed to write files under the test directory
            "bind-dynamic",  # ENI ports come and go while it runs
            "dhcp-authoritative",
            f"dhcp-leasefile={self.leases}",
            f"dhcp-hostsfile={self.hosts}",
            f"pid-file={self.dir / 'dnsmasq.pid'}",
            f"log-facility={self.logfile}",
            "log-dhcp",
        ]
        if self.ra:
            lines.append("enable-ra")
        if self.world.mtu is not None:
            lines.append(f"dhcp-option=option:mtu,{self.world.mtu}")
        for s in self.world.subnets.values():
            if self.dhcp and s.cidr4 is not None:
                mask = s.cidr4.netmask
                lines.append(f"dhcp-range={s.cidr4.network_address},static,{mask},1h")
            if s.cidr6 is not None and (self.dhcp or self.ra):
                # EC2 hands IPv6 addresses out by DHCPv6 (RA with the M flag); RA alone
                # gives the default route and on-link prefix
                mode = "static" if self.dhcp else "ra-only"
                lines.append(f"dhcp-range={s.cidr6.network_address},{mode},{s.cidr6.prefixlen},1h")
        return "\n".join(lines) + "\n"

    @staticmethod
    def _host_lines(enis: Iterable[Eni]) -> str:
        out = []
        for eni in enis:
            fields = [eni.mac]
            if eni.ipv4s:
                fields.append(str(eni.ipv4s[0]))
            if eni.ipv6s:
                fields.append(f"[{eni.ipv6s[0]}]")
            if len(fields) > 1:
                out.append(",".join(fields))
        return "\n".join(out) + "\n"

    def start(self, enis: Iterable[Eni]) -> None:
        self.conf.write_text(self._config())
        self.hosts.write_text(self._host_lines(enis))
        self.leases.write_text("")
        argv = ns_exec_argv(
            self.ns, ["dnsmasq", "--keep-in-foreground", f"--conf-file={self.conf}"]
        )
        # `ip netns exec` execs dnsmasq in place, so this pid is dnsmasq's own
        self._proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        deadline = time.monotonic() + 2.0
        pidfile = self.dir / "dnsmasq.pid"
        while time.monotonic() < deadline and not pidfile.exists():
            if self._proc.poll() is not None:
                err = self._proc.stderr.read().decode() if self._proc.stderr else ""
                raise RuntimeError(f"dnsmasq exited: {err.strip()}")
            time.sleep(0.005)

    def update(self, enis: Iterable[Eni]) -> None:
        """New ENIs get reservations: rewrite the hosts file, SIGHUP re-reads it."""
        self.hosts.write_text(self._host_lines(enis))
        if self._proc is not None and self._proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self._proc.pid, signal.SIGHUP)

    def stop(self) -> None:
        if self._proc is not None:
            kill_recorded(self._proc.pid, proc_start_time(self._proc.pid))
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._proc.wait(timeout=2.0)
            self._proc = None
