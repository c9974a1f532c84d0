"""The simulated VPC fabric: a router namespace enforcing EC2's source/destination check,
an instance namespace with hot-pluggable ENIs, client hosts, and IMDS at 169.254.169.254.

Every ENI or host is one veth pair: the router end ("port") carries the subnet gateway
as `<gw>/<len> noprefixroute` and one host route per address the world assigns to it.
An nft `fib saddr . iif oif missing` rule (IPv4 and IPv6) on the router then drops
any packet whose source is not assigned to the ENI it leaves by -- the VPC's check.
proxy_arp / proxy NDP let same-subnet hosts on different ports reach each other through
the router, as they do through the VPC's router.

`Fabric` changes the namespaces and the `World` together, so IMDS (which reads the
world) always describes what the fabric routes.

Tap mode (`Fabric(taps=True)`) puts a virtual machine in the VPC instead of a namespace:
each ENI's router port is a tap device in the router namespace (named like the port, see
`tap_of`), programmed exactly as a veth port, for QEMU (run inside the router namespace)
to open. There is no instance namespace and no echo service then: the guest runs both.
"""

from __future__ import annotations

import atexit
import contextlib
import http.client
import ipaddress
import json
import os
import shutil
import socket
import subprocess
import tempfile
import threading
from collections.abc import Sequence
from types import TracebackType
from typing import Any, Optional, Union

from ec2sim import netns
from ec2sim.dhcp import Dnsmasq
from ec2sim.imds import ImdsServer
from ec2sim.layout import (
    DOCKER_CTR,
    DOCKER_NET,
    HOST_SYSCTLS,
    IMDS_V4,
    IMDS_V6,
    INSTANCE_SYSCTLS,
    NFT_SRCDST,
    ROUTER_SYSCTLS,
    AnyAddr,
    Assignable,
    Host,
    Port,
    allocate_eni,
    as_net,
    boot_lines,
    host_lines,
    host_nets,
    host_plan,
    nets_of,
    port_lines,
    port_sysctls,
    proxy_lines,
    random_mac,
    random_suffix,
    route_lines,
)
from ec2sim.netns import WorldState, ip_batch, run_in_netns, write_sysctls
from ec2sim.probe import ECHO_PORT, EchoServer, probe
from ec2sim.world import Eni, IPv4Net, IPv6Net, Subnet, World, default_world


def tap_port_lines(
    port: Port, nets: Sequence[Union[IPv4Net, IPv6Net]], mtu: Optional[int] = None
) -> list[str]:
    """A router port that is a tap for a VM: `port_lines` programming (addresses,
    routes), with a tap instead of the veth pair and nothing moved anywhere."""
    lines = port_lines(port, "-", "-", nets, mtu)
    # port_lines creates the pair first and moves the far end last; a tap has no far end
    assert lines[0].startswith("link add ") and lines[-1].startswith("link set dev t")
    return [f"tuntap add dev {port.name} mode tap", *lines[1:-1]]


# Addresses outside any VPC (documentation ranges): the `outside` host's network.
OUTSIDE_SUBNET = Subnet(
    "outside", ipaddress.IPv4Network("198.51.100.0/24"), ipaddress.IPv6Network("2001:db8::/64")
)


class Fabric:
    """A running simulated VPC. Use as a context manager (or start()/stop())."""

    def __init__(
        self,
        world: Optional[World] = None,
        *,
        dhcp: bool = False,
        ra: bool = False,
        imds: bool = True,
        echo_port: int = ECHO_PORT,
        label: str = "",
        attach: Sequence[tuple[str, str]] = (),
        taps: bool = False,
        outside: bool = False,
    ) -> None:
        """`world` defaults to `default_world()`. Only the primary ENI is attached at
        start (as eth0) plus any `(mac, ifname)` in `attach`; the world's other ENIs are
        kept aside (not in IMDS) until `attach()`ed, like ENIs not yet hot-plugged.
        `taps=True`: tap mode (see the module doc); `ifname`s are then only labels.
        `outside=True`: one more host, outside the VPC (`OUTSIDE_SUBNET`, documentation
        ranges, behind the same router and its check), as the internet stands to an
        instance."""
        self.world = world if world is not None else default_world()
        self.prefix = "e2s" + random_suffix()
        self.router_ns = f"{self.prefix}-router"
        self.instance_ns = f"{self.prefix}-inst"
        self.client_ns = f"{self.prefix}-client"
        self.peer_ns = f"{self.prefix}-peer"
        self.outside_ns = f"{self.prefix}-out" if outside else ""
        self.dhcp_enabled = dhcp
        self.ra_enabled = ra
        self.imds_enabled = imds
        self.echo_port = echo_port
        self._initial_attach = list(attach)
        self.taps = taps
        self.ports: dict[str, Port] = {}  # by ENI/host MAC
        self.hosts: dict[str, Host] = {}  # by short name
        self.spare: dict[str, Eni] = {}  # known ENIs not attached, by MAC
        self.ifnames: dict[str, str] = {}  # ENI MAC -> instance ifname at attach
        self.imds: Optional[ImdsServer] = None
        self.imds6: Optional[ImdsServer] = None
        self.echo: Optional[EchoServer] = None
        self.dnsmasq: Optional[Dnsmasq] = None
        self.container_ns: Optional[str] = None
        self.tmpdir = tempfile.mkdtemp(prefix=f"{self.prefix}-")
        self.state = WorldState(
            prefix=self.prefix,
            owner_pid=os.getpid(),
            owner_start=netns.proc_start_time(os.getpid()),
            tmpdir=self.tmpdir,
            label=label,
        )
        self._port_seq = 0
        self._lock = threading.RLock()
        self._proxies: set[tuple[str, str]] = set()  # (IPv6 address, router port)
        self._started = False
        self._stopped = False

    # --- lifecycle -------------------------------------------------------------
    def __enter__(self) -> Fabric:
        return self.start()

    def __exit__(
        self,
        exc_type: Optional[type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        self.stop()

    def start(self) -> Fabric:
        if self._started:
            return self
        self._started = True
        atexit.register(self.stop)
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self) -> None:
        w = self.world
        with w.lock:
            for mac in [m for m in w.enis if m != w.primary_mac]:
                self.spare[mac] = w.enis.pop(mac)
        # record before creating, so a crash in the middle is still cleaned up
        self.state.namespaces = [self.router_ns, self.instance_ns, self.client_ns, self.peer_ns]
        if self.outside_ns:
            self.state.namespaces.append(self.outside_ns)
        if self.taps:
            self.state.namespaces.remove(self.instance_ns)
        self.state.save()
        for ns in self.state.namespaces:
            netns.add_netns(ns)
        write_sysctls(self.router_ns, ROUTER_SYSCTLS)
        if not self.taps:
            write_sysctls(self.instance_ns, INSTANCE_SYSCTLS)
        write_sysctls(self.client_ns, HOST_SYSCTLS)
        write_sysctls(self.peer_ns, HOST_SYSCTLS)
        if self.outside_ns:
            write_sysctls(self.outside_ns, HOST_SYSCTLS)
        # nft has no `-n`: load the rule set through `ip netns exec`
        netns.run(netns.ns_exec_argv(self.router_ns, ["nft", "-f", "-"]), input=NFT_SRCDST)

        primary = w.primary()
        client_subnet = self._client_subnet()
        client = host_plan("client", self.client_ns, client_subnet)
        peer = host_plan("peer", self.peer_ns, w.subnet_of(primary))
        hosts = [client, peer]
        if self.outside_ns:
            w.subnets[OUTSIDE_SUBNET.subnet_id] = OUTSIDE_SUBNET
            hosts.append(host_plan("outside", self.outside_ns, OUTSIDE_SUBNET))
        router = [
            "link set lo up",
            f"addr add {IMDS_V4}/32 dev lo",
            f"addr add {IMDS_V6}/128 dev lo",
        ]
        port = self._new_port(primary.mac, w.subnet_of(primary), self.instance_ns)
        router += self._eni_port_lines(port, "eth0", nets_of(primary))
        for host in hosts:
            mac = random_mac(self.ports)
            port = self._new_port(mac, self.world.subnets[host.subnet_id], host.ns)
            router += port_lines(port, host.ns, "eth0", host_nets(host), w.mtu)
        router += self._proxy_lines()
        ip_batch(self.router_ns, router)
        write_sysctls(self.router_ns, port_sysctls(*(p.name for p in self.ports.values())))
        self.ifnames[primary.mac] = "eth0"
        if not self.taps:
            ip_batch(self.instance_ns, boot_lines(self.world, primary))
        for host in hosts:
            ip_batch(host.ns, host_lines(self.world, host))
            self.hosts[host.name] = host

        if self.imds_enabled:
            self._start_imds()
        if not self.taps:
            self.echo = EchoServer(self.instance_ns, self.echo_port).start()
        if self.dhcp_enabled or self.ra_enabled:
            self.dnsmasq = Dnsmasq(
                self.router_ns,
                self.tmpdir,
                self.world,
                dhcp=self.dhcp_enabled,
                ra=self.ra_enabled,
            )
            self.dnsmasq.start(self._all_enis())
            self.state.pids.append((self.dnsmasq.pid, netns.proc_start_time(self.dnsmasq.pid)))
            self.state.save()
        for mac, ifname in self._initial_attach:
            self.attach(mac, ifname)

    def stop(self) -> None:
        """Tear everything down; safe to call twice, from atexit, or after a failure."""
        if self._stopped:
            return
        self._stopped = True
        with contextlib.suppress(Exception):
            atexit.unregister(self.stop)
        for server in (self.imds, self.imds6):
            if server is not None:
                with contextlib.suppress(Exception):
                    server.stop(timeout=1.0)
        if self.echo is not None:
            self.echo.stop()
        netns.destroy(self.state)
        shutil.rmtree(self.tmpdir, ignore_errors=True)

    def _start_imds(self) -> None:
        def listen(host: str, family: socket.AddressFamily) -> socket.socket:
            sock = socket.socket(family, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host, 80))
            sock.listen(128)
            return sock

        # the socket keeps the router namespace; the server thread can live anywhere
        s4 = run_in_netns(self.router_ns, lambda: listen(IMDS_V4, socket.AF_INET))
        s6 = run_in_netns(self.router_ns, lambda: listen(IMDS_V6, socket.AF_INET6))
        self.imds = ImdsServer(self.world, s4)
        self.imds6 = ImdsServer(self.world, s6)
        self.imds.start()
        self.imds6.start()

    # --- helpers ----------------------------------------------------------------------
    def _client_subnet(self) -> Subnet:
        used = {e.subnet_id for e in self._all_enis()}
        for s in self.world.subnets.values():
            if s.subnet_id not in used and s.cidr4 is not None:
                return s
        raise ValueError("the world needs a subnet with no ENI of this instance for clients")

    def _all_enis(self) -> list[Eni]:
        with self.world.lock:
            return list(self.world.enis.values()) + list(self.spare.values())

    def _new_port(self, mac: str, subnet: Subnet, ns: str) -> Port:
        self._port_seq += 1
        port = Port(f"p{self._port_seq}", subnet, mac, ns)
        self.ports[mac] = port
        return port

    def _eni_port_lines(
        self, port: Port, ifname: str, nets: Sequence[Union[IPv4Net, IPv6Net]]
    ) -> list[str]:
        if self.taps:
            return tap_port_lines(port, nets, self.world.mtu)
        return port_lines(port, self.instance_ns, ifname, nets, self.world.mtu)

    def tap_of(self, mac: str) -> str:
        """Tap mode: the tap device (in the router namespace) of an attached ENI."""
        return self.ports[mac.lower()].name

    def _proxy_lines(self) -> list[str]:
        lines, self._proxies = proxy_lines(self.ports.values(), self._proxies)
        return lines

    # --- operations ----------------------------------------------------------------
    def attach(self, eni: Union[Eni, str], ifname: str = "eth1") -> Eni:
        """Hot-attach an ENI (an Eni, or the MAC of a known one) as `ifname`: the link
        appears in the instance DOWN with no addresses, and IMDS lists the ENI."""
        with self._lock:
            if isinstance(eni, str):
                mac = eni.lower()
                obj = self.spare.pop(mac, None)
                if obj is None:
                    raise KeyError(f"no detached ENI with MAC {mac}")
                eni = obj
            if eni.mac in self.ports:
                raise ValueError(f"{eni.mac} is already attached")
            self.spare.pop(eni.mac, None)
            subnet = self.world.subnet_of(eni)
            port = self._new_port(eni.mac, subnet, self.instance_ns)
            lines = self._eni_port_lines(port, ifname, nets_of(eni))
            lines += self._proxy_lines()
            self.world.attach(eni)
            try:
                ip_batch(self.router_ns, lines)
                write_sysctls(self.router_ns, port_sysctls(port.name))
            except Exception:
                self.world.detach(eni.mac)
                self.ports.pop(eni.mac, None)
                self.spare[eni.mac] = eni
                raise
            self.ifnames[eni.mac] = ifname
            if self.dnsmasq is not None:
                self.dnsmasq.update(self._all_enis())
            return eni

    def detach(self, eni: Union[Eni, str]) -> None:
        """Detach: the instance's link disappears (with its addresses and routes; its
        `ip rule`s stay, as in the kernel) and IMDS stops listing the ENI."""
        mac = eni.mac if isinstance(eni, Eni) else eni.lower()
        with self._lock:
            port = self.ports.pop(mac)
            lines = [f"link del {port.name}"]
            # the port's own proxies vanish with it; other ports' entries must go
            self._proxies = {(a, p) for a, p in self._proxies if p != port.name}
            lines += self._proxy_lines()
            ip_batch(self.router_ns, lines)
            obj = self.world.enis[mac]
            self.world.detach(mac)
            self.spare[mac] = obj
            self.ifnames.pop(mac, None)

    def assign(self, mac: str, addr: Assignable) -> None:
        """Assign a secondary IPv4/IPv6 address or delegated prefix: the router routes it
        to the ENI first, then IMDS shows it."""
        with self._lock:
            port = self.ports[mac.lower()]
            lines = route_lines(port, "replace", [as_net(addr)]) + self._proxy_lines()
            ip_batch(self.router_ns, lines)
            self.world.assign(mac.lower(), addr)

    def unassign(self, mac: str, addr: Assignable) -> None:
        with self._lock:
            port = self.ports[mac.lower()]
            self.world.unassign(mac.lower(), addr)
            lines = route_lines(port, "del", [as_net(addr)]) + self._proxy_lines()
            ip_batch(self.router_ns, lines)

    def new_eni(
        self,
        subnet_id: str,
        *,
        device_number: Optional[int] = None,
        network_card: int = 0,
        n_ipv4: int = 1,
        n_ipv6: int = 1,
    ) -> Eni:
        """A fresh ENI with free addresses in `subnet_id`, known to the fabric but not
        attached (pass it or its MAC to `attach`). The device number defaults to the
        lowest free one on its card."""
        with self._lock:
            eni = allocate_eni(
                self.world,
                self._all_enis(),
                self.hosts.values(),
                subnet_id,
                device_number=device_number,
                network_card=network_card,
                n_ipv4=n_ipv4,
                n_ipv6=n_ipv6,
            )
            self.spare[eni.mac] = eni
            return eni

    def docker_bridge(self) -> str:
        """A Docker-style bridge in the instance: docker0 172.17.0.1/16 and a container
        namespace behind it (172.17.0.2, default via 172.17.0.1). Returns the
        container's namespace."""
        if self.taps:
            raise ValueError("tap mode: the bridge belongs inside the guest")
        with self._lock:
            if self.container_ns is not None:
                return self.container_ns
            ctr = f"{self.prefix}-ctr"
            self.state.namespaces.append(ctr)
            self.state.save()
            netns.add_netns(ctr)
            ip_batch(
                self.instance_ns,
                [
                    "link add docker0 type bridge",
                    f"addr add {DOCKER_NET} dev docker0",
                    "link set docker0 up",
                    f"link add vethctr type veth peer name eth0 netns {ctr}",
                    "link set vethctr master docker0",
                    "link set vethctr up",
                ],
            )
            ip_batch(
                ctr,
                [
                    "link set lo up",
                    "link set eth0 up",
                    f"addr add {DOCKER_CTR} dev eth0",
                    f"route add default via {DOCKER_NET.ip} dev eth0",
                ],
            )
            self.container_ns = ctr
            return ctr

    # --- running things --------------------------------------------------------------
    def run(
        self,
        ns: str,
        argv: Sequence[str],
        *,
        check: bool = True,
        timeout: float = 30.0,
        input: Optional[str] = None,
        env: Optional[dict[str, str]] = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run argv inside namespace `ns` (`ip netns exec`, never a shell string)."""
        return netns.run(
            netns.ns_exec_argv(ns, argv), check=check, timeout=timeout, input=input, env=env
        )

    def ip(self, ns: str, *args: str) -> str:
        return netns.run(["ip", "-n", ns, *args]).stdout

    def probe(
        self,
        ns: str,
        addr: AnyAddr,
        *,
        port: Optional[int] = None,
        source: Optional[AnyAddr] = None,
        timeout: float = 1.0,
    ) -> bool:
        """Real TCP connect+echo from `ns` to `addr` (default: the instance's service)."""
        return probe(ns, addr, port or self.echo_port, source=source, timeout=timeout)

    # --- queries -----------------------------------------------------------------------
    def links(self, ns: Optional[str] = None) -> dict[str, str]:
        """Interface name -> MAC in `ns` (default: the instance), loopback excluded."""
        out = netns.run(["ip", "-j", "-n", ns or self.instance_ns, "link", "show"]).stdout
        data: list[dict[str, Any]] = json.loads(out)
        return {d["ifname"]: d.get("address", "") for d in data if d["ifname"] != "lo"}

    def router_port_for(self, addr: AnyAddr) -> Optional[str]:
        """MAC of the ENI/host whose port the router sends `addr` to, or None."""
        proc = netns.run(
            ["ip", "-j", "-n", self.router_ns, "route", "get", str(addr)], check=False
        )
        if proc.returncode != 0:
            return None
        routes: list[dict[str, Any]] = json.loads(proc.stdout)
        dev = routes[0].get("dev") if routes else None
        return next((mac for mac, p in self.ports.items() if p.name == dev), None)

    def imds_requests(
        self, method: Optional[str] = None, path_prefix: Optional[str] = None
    ) -> int:
        return sum(
            s.log.count(method=method, path_prefix=path_prefix)
            for s in (self.imds, self.imds6)
            if s is not None
        )

    def imds_get(self, path: str, *, ns: Optional[str] = None, timeout: float = 2.0) -> str:
        """GET an IMDS path from inside `ns` (default: the instance) with an IMDSv2
        token, over a real connection through the fabric. Raises on non-200."""

        def request(method: str, url: str, headers: dict[str, str]) -> str:
            sock = run_in_netns(
                ns or self.instance_ns, lambda: socket.create_connection((IMDS_V4, 80), timeout)
            )
            conn = http.client.HTTPConnection(IMDS_V4, 80, timeout=timeout)
            conn.sock = sock  # already connected inside the namespace
            try:
                conn.request(method, url, headers=headers)
                resp = conn.getresponse()
                body = resp.read().decode()
                if resp.status != 200:
                    raise OSError(f"IMDS {method} {url}: {resp.status}")
                return body
            finally:
                conn.close()

        token = request("PUT", "/latest/api/token", {"X-aws-ec2-metadata-token-ttl-seconds": "60"})
        return request("GET", path, {"X-aws-ec2-metadata-token": token})

    @property
    def imds_url(self) -> str:
        return f"http://{IMDS_V4}"
