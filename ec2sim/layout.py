"""The fabric's layout, as data and `ip -batch` lines: sysctls, the nft rule that is the
VPC's source/destination check, router ports, boot networking of eth0, host setup, and
address allocation for new ENIs. No side effects here; `fabric.Fabric` runs the lines.
"""

from __future__ import annotations

import ipaddress
import random
import string
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Optional, Union

from ec2sim.world import Eni, IPv4Addr, IPv4Net, IPv6Addr, IPv6Net, Subnet, World, lease_for

IMDS_V4 = "169.254.169.254"
IMDS_V6 = "fd00:ec2::254"
ROUTER_LL = "fe80:ec2::1"  # AWS's documented IPv6 router address on every subnet
DOCKER_NET = ipaddress.IPv4Interface("172.17.0.1/16")
DOCKER_CTR = ipaddress.IPv4Interface("172.17.0.2/16")

Assignable = Union[IPv4Addr, IPv6Addr, IPv4Net, IPv6Net]
AnyAddr = Union[str, IPv4Addr, IPv6Addr]

# Router: forward, answer ARP/NDP for other ports at once (proxy_delay 0 per port
# below: the default random 0.8 s would make probes flaky). The source/destination
# check is the nft rule, not rp_filter: rp_filter also vets the sender address of ARP
# requests, so one reply sent by the wrong ENI would poison the instance's ARP entry
# and break later, correct traffic -- the VPC's ARP responder does not do that.
ROUTER_SYSCTLS = {
    "net.ipv4.ip_forward": "1",
    "net.ipv4.conf.all.rp_filter": "0",
    "net.ipv4.conf.default.rp_filter": "0",
    "net.ipv4.conf.default.proxy_arp": "1",
    "net.ipv4.conf.all.send_redirects": "0",
    "net.ipv4.conf.default.send_redirects": "0",
    "net.ipv6.conf.all.forwarding": "1",
    "net.ipv6.conf.default.forwarding": "1",
    "net.ipv6.conf.default.accept_dad": "0",
    "net.ipv6.conf.all.proxy_ndp": "1",
    "net.ipv6.conf.default.proxy_ndp": "1",
}
# neigh/default exists only in the initial namespace: proxy_delay is set per port


def port_sysctls(*ports: str) -> dict[str, str]:
    out = {}
    for p in ports:
        out[f"net.ipv4.neigh.{p}.proxy_delay"] = "0"
        out[f"net.ipv6.neigh.{p}.proxy_delay"] = "0"
    return out


# Instance: loose rp_filter (systemd's default) so an asymmetric reply is really sent
# (and then dropped by the fabric, as in a VPC); forwarding for the bridge scenario.
INSTANCE_SYSCTLS = {
    "net.ipv4.ip_forward": "1",
    "net.ipv4.conf.all.rp_filter": "2",
    "net.ipv4.conf.default.rp_filter": "2",
    "net.ipv6.conf.all.accept_dad": "0",
    "net.ipv6.conf.default.accept_dad": "0",
}
HOST_SYSCTLS = {
    "net.ipv6.conf.all.accept_dad": "0",
    "net.ipv6.conf.default.accept_dad": "0",
}

# EC2's source/destination check: a packet whose source is not routed back to the port
# it came in by (i.e. not assigned to that ENI) is dropped. Exempt: DHCP (0.0.0.0),
# DAD and neighbour discovery (:: and link-local sources).
NFT_SRCDST = """
table inet ec2sim_srcdst {
    chain prerouting {
        type filter hook prerouting priority 0; policy accept;
        ip saddr 0.0.0.0 accept
        ip6 saddr { ::, fe80::/10 } accept
        fib saddr . iif oif missing counter drop
    }
}
"""


@dataclass
class Port:
    """The router end of one veth pair (an ENI or a host)."""

    name: str
    subnet: Subnet
    mac: str  # MAC of the far end
    ns: str  # namespace of the far end
    routes4: set[IPv4Net] = field(default_factory=set)
    routes6: set[IPv6Net] = field(default_factory=set)


@dataclass
class Host:
    """A machine elsewhere in the VPC (client, peer): one namespace, eth0, default route."""

    name: str
    ns: str
    subnet_id: str
    ipv4: Optional[IPv4Addr]
    ipv6: Optional[IPv6Addr]


def as_net(addr: Assignable) -> Union[IPv4Net, IPv6Net]:
    if isinstance(addr, (IPv4Net, IPv6Net)):
        return addr
    return ipaddress.ip_network(addr)


def random_suffix(n: int = 5) -> str:
    return "".join(random.choice(string.ascii_lowercase + string.digits) for _ in range(n))


def nets_of(eni: Eni) -> list[Union[IPv4Net, IPv6Net]]:
    """Everything the VPC routes to an ENI: addresses as /32 and /128, and prefixes."""
    nets: list[Union[IPv4Net, IPv6Net]] = [ipaddress.IPv4Network(a) for a in eni.ipv4s]
    nets += [ipaddress.IPv6Network(a) for a in eni.ipv6s]
    nets += list(eni.ipv4_prefixes) + list(eni.ipv6_prefixes)
    return nets


def host_plan(name: str, ns: str, subnet: Subnet) -> Host:
    v4 = subnet.cidr4.network_address + 100 if subnet.cidr4 is not None else None
    v6 = subnet.cidr6.network_address + 0x100 if subnet.cidr6 is not None else None
    return Host(name, ns, subnet.subnet_id, v4, v6)


def host_nets(host: Host) -> list[Union[IPv4Net, IPv6Net]]:
    nets: list[Union[IPv4Net, IPv6Net]] = []
    if host.ipv4 is not None:
        nets.append(ipaddress.IPv4Network(host.ipv4))
    if host.ipv6 is not None:
        nets.append(ipaddress.IPv6Network(host.ipv6))
    return nets


def random_mac(taken: Iterable[str]) -> str:
    used = set(taken)
    while True:
        # 02: locally administered unicast, like the MACs EC2 hands out
        mac = "02:" + ":".join(f"{random.randrange(256):02x}" for _ in range(5))
        if mac not in used:
            return mac


def port_lines(
    port: Port,
    far_ns: str,
    far_name: str,
    nets: Iterable[Union[IPv4Net, IPv6Net]],
    mtu: Optional[int] = None,
) -> list[str]:
    """Create the pair in the router, program the port, THEN move the far end in: it
    appears in `far_ns` already named, with its final MAC, DOWN and unaddressed, and the
    router already routes its addresses (a real NIC appears the same way). `mtu` is the
    router port's (the far end keeps the driver's default, as a real NIC does)."""
    tmp = f"t{port.name}"
    s = port.subnet
    lines = [f"link add {port.name} type veth peer name {tmp} address {port.mac}"]
    if mtu is not None:
        lines.append(f"link set {port.name} mtu {mtu}")
    if s.cidr4 is not None:
        lines.append(f"addr add {s.gateway4}/{s.cidr4.prefixlen} dev {port.name} noprefixroute")
    lines.append(f"addr add {ROUTER_LL}/64 dev {port.name} nodad")
    if s.cidr6 is not None:
        # a global router address without a subnet route, so dnsmasq can match the port
        # to its subnet for RA/DHCPv6
        gw6 = s.cidr6.network_address + 1
        lines.append(f"addr add {gw6}/{s.cidr6.prefixlen} dev {port.name} noprefixroute nodad")
    lines.append(f"link set {port.name} up")  # routes need an up device
    lines += route_lines(port, "replace", nets)
    lines.append(f"link set dev {tmp} netns {far_ns} name {far_name}")
    return lines


def eui64_link_local(mac: str) -> ipaddress.IPv6Address:
    """The link-local address the kernel derives from a MAC (addr_gen_mode eui64)."""
    b = bytearray(int(x, 16) for x in mac.split(":"))
    b[0] ^= 0x02
    iid = bytes(b[:3]) + b"\xff\xfe" + bytes(b[3:])
    return ipaddress.IPv6Address(b"\xfe\x80" + b"\x00" * 6 + iid)


def route_lines(port: Port, verb: str, nets: Iterable[Union[IPv4Net, IPv6Net]]) -> list[str]:
    """Host/prefix routes to a port; records them on the port for proxy NDP."""
    lines = []
    for net in nets:
        if net.version == 6 and net.prefixlen < 128:
            # A delegated IPv6 prefix is delivered to the ENI as a whole; Linux answers
            # neighbour solicitations only for addresses on the receiving link, so
            # route it via the ENI's own link-local address, as the VPC does.
            via = eui64_link_local(port.mac)
            lines.append(f"route {verb} {net} via {via} dev {port.name}")
        else:
            lines.append(f"route {verb} {net} dev {port.name}")
        routes: set[Union[IPv4Net, IPv6Net]] = port.routes4 if net.version == 4 else port.routes6  # type: ignore[assignment]
        if verb == "del":
            routes.discard(net)
        else:
            routes.add(net)
    return lines


def proxy_lines(
    ports: Iterable[Port], current: set[tuple[str, str]]
) -> tuple[list[str], set[tuple[str, str]]]:
    """Proxy NDP: each port answers for the same-subnet IPv6 host addresses routed to
    OTHER ports (IPv4 needs nothing: proxy_arp follows the routes). Returns the lines
    that turn `current` (address, port) entries into the wanted set, and that set."""
    ports = list(ports)
    names = {p.name for p in ports}
    want: set[tuple[str, str]] = set()
    for port in ports:
        s6 = port.subnet.cidr6
        if s6 is None:
            continue
        for other in ports:
            if other is port:
                continue
            for net in other.routes6:
                if net.prefixlen == 128 and net.network_address in s6:
                    want.add((str(net.network_address), port.name))
    lines = [f"neigh del proxy {a} dev {p}" for a, p in sorted(current - want) if p in names]
    lines += [f"neigh add proxy {a} dev {p}" for a, p in sorted(want - current)]
    return lines, want


def boot_lines(world: World, eni: Eni) -> list[str]:
    """eth0 as an AMI's boot networking leaves it: the primary address with its prefix
    route, default via the subnet gateway, a link-scope route to IMDS, and the IPv6
    address with default via the router's link-local address. In an IPv6-only subnet:
    the 169.254.x.x/32 lease alone (no route: IMDS answers only over IPv6 there)."""
    s = world.subnet_of(eni)
    lines = ["link set lo up", "link set eth0 up"]
    if eni.lease4 is not None:
        lines.append(f"addr add {eni.lease4}/32 dev eth0")
    if eni.ipv4s and s.cidr4 is not None:
        lines += [
            f"addr add {eni.ipv4s[0]}/{s.cidr4.prefixlen} dev eth0",
            f"route add default via {s.gateway4} dev eth0",
            f"route add {IMDS_V4}/32 dev eth0 scope link src {eni.ipv4s[0]}",
        ]
    if eni.ipv6s and s.cidr6 is not None:
        lines += [
            f"addr add {eni.ipv6s[0]}/{s.cidr6.prefixlen} dev eth0 nodad",
            f"route add ::/0 via {ROUTER_LL} dev eth0",  # `-6` is not allowed in a batch
        ]
    return lines


def host_lines(world: World, host: Host) -> list[str]:
    s = world.subnets[host.subnet_id]
    lines = ["link set lo up", "link set eth0 up"]
    if world.mtu is not None:
        lines.append(f"link set eth0 mtu {world.mtu}")
    if host.ipv4 is not None and s.cidr4 is not None:
        lines += [
            f"addr add {host.ipv4}/{s.cidr4.prefixlen} dev eth0",
            f"route add default via {s.gateway4} dev eth0",
        ]
    if host.ipv6 is not None and s.cidr6 is not None:
        lines += [
            f"addr add {host.ipv6}/{s.cidr6.prefixlen} dev eth0 nodad",
            f"route add ::/0 via {ROUTER_LL} dev eth0",
        ]
    return lines


def allocate_eni(
    world: World,
    known: Iterable[Eni],
    hosts: Iterable[Host],
    subnet_id: str,
    *,
    device_number: Optional[int],
    network_card: int,
    n_ipv4: int,
    n_ipv6: int,
) -> Eni:
    """A fresh ENI with free addresses in `subnet_id` (from .30 / ::30 up) and the lowest
    device number free on its card among attached ENIs, unless given."""
    known = list(known)
    subnet = world.subnets[subnet_id]
    used = {a for e in known for a in [*e.ipv4s, *e.ipv6s]}
    used |= {a for h in hosts for a in (h.ipv4, h.ipv6) if a is not None}
    if device_number is None:
        taken = {e.device_number for e in world.attached() if e.network_card == network_card}
        device_number = next(n for n in range(64) if n not in taken)
    v4: list[IPv4Addr] = []
    if subnet.cidr4 is not None:
        base = int(subnet.cidr4.network_address)
        for cand in subnet.cidr4.hosts():
            if len(v4) == n_ipv4:
                break
            if int(cand) - base >= 30 and cand not in used:
                v4.append(cand)
    v6: list[IPv6Addr] = []
    if subnet.cidr6 is not None:
        n = 0x30
        while len(v6) < n_ipv6:
            cand6 = subnet.cidr6.network_address + n
            if cand6 not in used:
                v6.append(cand6)
            n += 1
    eni_id = "eni-0" + "".join(random.choice("0123456789abcdef") for _ in range(16))
    mac = random_mac(e.mac for e in known)
    return Eni(
        eni_id=eni_id,
        mac=mac,
        subnet_id=subnet_id,
        device_number=device_number,
        network_card=network_card,
        ipv4s=v4,
        ipv6s=v6,
        lease4=lease_for(mac) if subnet.ipv6_only else None,
    )
