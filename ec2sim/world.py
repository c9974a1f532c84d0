"""The simulated EC2 world: a VPC, its subnets, and the ENIs of one instance.

This is the single source of truth shared by the IMDS server (which renders it as
metadata, with propagation delays and faults) and the network fabric (which makes it
real in network namespaces). All mutation goes through `World` methods, under one lock,
so a server thread never sees half an update.
"""

from __future__ import annotations

import ipaddress
import json
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Union

IPv4Net = ipaddress.IPv4Network
IPv6Net = ipaddress.IPv6Network
IPv4Addr = ipaddress.IPv4Address
IPv6Addr = ipaddress.IPv6Address


@dataclass
class Subnet:
    subnet_id: str
    cidr4: Optional[IPv4Net]
    cidr6: Optional[IPv6Net] = None

    @property
    def gateway4(self) -> IPv4Addr:
        assert self.cidr4 is not None
        return self.cidr4.network_address + 1

    @property
    def ipv6_only(self) -> bool:
        return self.cidr4 is None


@dataclass
class Eni:
    eni_id: str
    mac: str  # lowercase aa:bb:cc:dd:ee:ff
    subnet_id: str
    device_number: int
    network_card: int = 0
    ipv4s: list[IPv4Addr] = field(default_factory=list)  # primary first
    ipv6s: list[IPv6Addr] = field(default_factory=list)
    ipv4_prefixes: list[IPv4Net] = field(default_factory=list)
    ipv6_prefixes: list[IPv6Net] = field(default_factory=list)
    # monotonic times; None = attached since the world began / not detached
    attached_at: Optional[float] = None
    detached_at: Optional[float] = None
    # per-ENI override of World.propagation_delay
    propagation_delay: Optional[float] = None
    # In an IPv6-only subnet EC2's DHCPv4 still leases the ENI a 169.254.x.x/32: on the
    # link, never in IMDS, and not ec2net's to touch.
    lease4: Optional[IPv4Addr] = None


@dataclass
class Faults:
    """Faults the IMDS server injects; tests flip these at run time."""

    latency: float = 0.0  # seconds added to every response
    error_503_remaining: int = 0  # next N requests answer 503
    throttle_429_remaining: int = 0  # next N requests answer 429
    reset_remaining: int = 0  # next N connections are reset without an answer
    blackhole: bool = False  # accept but never answer (client must time out)
    disabled: bool = False  # IMDS turned off: 403 on token PUT and reads
    hop_limit_exceeded: bool = False  # token PUT never answered


@dataclass
class World:
    vpc_cidr4: list[IPv4Net]
    vpc_cidr6: list[IPv6Net]
    subnets: dict[str, Subnet]
    enis: dict[str, Eni]  # by MAC, including detached ones still listed
    primary_mac: str
    instance_id: str = "i-0123456789abcdef0"
    instance_type: str = "m5.xlarge"
    region: str = "us-east-1"
    availability_zone: str = "us-east-1a"
    multi_card: bool = False  # network-card keys exist only in multi-card worlds
    imdsv2_required: bool = True
    compress_ipv6_subnets: bool = True  # False: serve `2600:1f16:0:0:0:0:0:0/64` forms
    propagation_delay: float = 0.0  # seconds over which a new attachment fills in
    stale_after_detach: float = 0.0  # seconds a detached ENI stays listed
    # The VPC's link MTU (9001 in EC2): the router's ports and the hosts' links run with
    # it and DHCP announces it (option 26); an instance's NIC starts at the driver's 1500
    # like a real one. None: every link stays at the kernel's 1500.
    mtu: Optional[int] = None
    # What the instance was launched with (`/latest/user-data`); None: no user data,
    # and IMDS answers 404 there, as EC2 does.
    user_data: Optional[str] = None
    faults: Faults = field(default_factory=Faults)
    lock: threading.RLock = field(default_factory=threading.RLock, repr=False, compare=False)

    # --- queries -------------------------------------------------------------
    def attached(self) -> list[Eni]:
        with self.lock:
            return [e for e in self.enis.values() if e.detached_at is None]

    def subnet_of(self, eni: Eni) -> Subnet:
        return self.subnets[eni.subnet_id]

    def primary(self) -> Eni:
        return self.enis[self.primary_mac]

    # --- mutations (the fabric calls these and mirrors them in namespaces) ----
    def attach(self, eni: Eni) -> Eni:
        with self.lock:
            eni.attached_at = time.monotonic()
            eni.detached_at = None
            self.enis[eni.mac] = eni
            return eni

    def detach(self, mac: str) -> None:
        with self.lock:
            eni = self.enis[mac]
            eni.detached_at = time.monotonic()
            if self.stale_after_detach <= 0:
                del self.enis[mac]

    def assign(self, mac: str, addr: Union[IPv4Addr, IPv6Addr, IPv4Net, IPv6Net]) -> None:
        with self.lock:
            eni = self.enis[mac]
            if isinstance(addr, IPv4Addr):
                eni.ipv4s.append(addr)
            elif isinstance(addr, IPv6Addr):
                eni.ipv6s.append(addr)
            elif isinstance(addr, IPv4Net):
                eni.ipv4_prefixes.append(addr)
            else:
                eni.ipv6_prefixes.append(addr)

    def unassign(self, mac: str, addr: Union[IPv4Addr, IPv6Addr, IPv4Net, IPv6Net]) -> None:
        with self.lock:
            eni = self.enis[mac]
            for lst in (eni.ipv4s, eni.ipv6s, eni.ipv4_prefixes, eni.ipv6_prefixes):
                if addr in lst:
                    lst.remove(addr)  # type: ignore[arg-type]

    # --- serialisation (world files for `python3 -m ec2sim imds --world FILE`) ----
    def to_json(self) -> dict[str, Any]:
        with self.lock:
            return {
                "vpc_cidr4": [str(n) for n in self.vpc_cidr4],
                "vpc_cidr6": [str(n) for n in self.vpc_cidr6],
                "subnets": [
                    {
                        "id": s.subnet_id,
                        "cidr4": str(s.cidr4) if s.cidr4 else None,
                        "cidr6": str(s.cidr6) if s.cidr6 else None,
                    }
                    for s in self.subnets.values()
                ],
                "enis": [
                    {
                        "id": e.eni_id,
                        "mac": e.mac,
                        "subnet": e.subnet_id,
                        "device_number": e.device_number,
                        "network_card": e.network_card,
                        "ipv4s": [str(a) for a in e.ipv4s],
                        "ipv6s": [str(a) for a in e.ipv6s],
                        "ipv4_prefixes": [str(a) for a in e.ipv4_prefixes],
                        "ipv6_prefixes": [str(a) for a in e.ipv6_prefixes],
                        "lease4": str(e.lease4) if e.lease4 is not None else None,
                    }
                    for e in self.enis.values()
                    if e.detached_at is None
                ],
                "primary_mac": self.primary_mac,
                "instance_id": self.instance_id,
                "instance_type": self.instance_type,
                "region": self.region,
                "availability_zone": self.availability_zone,
                "multi_card": self.multi_card,
                "imdsv2_required": self.imdsv2_required,
                "compress_ipv6_subnets": self.compress_ipv6_subnets,
                "propagation_delay": self.propagation_delay,
                "stale_after_detach": self.stale_after_detach,
                "user_data": self.user_data,
            }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> World:
        subnets = {
            s["id"]: Subnet(
                s["id"],
                ipaddress.IPv4Network(s["cidr4"]) if s.get("cidr4") else None,
                ipaddress.IPv6Network(s["cidr6"]) if s.get("cidr6") else None,
            )
            for s in data["subnets"]
        }
        enis = {
            e["mac"]: Eni(
                eni_id=e["id"],
                mac=e["mac"],
                subnet_id=e["subnet"],
                device_number=int(e["device_number"]),
                network_card=int(e.get("network_card", 0)),
                ipv4s=[ipaddress.IPv4Address(a) for a in e.get("ipv4s", [])],
                ipv6s=[ipaddress.IPv6Address(a) for a in e.get("ipv6s", [])],
                ipv4_prefixes=[ipaddress.IPv4Network(a) for a in e.get("ipv4_prefixes", [])],
                ipv6_prefixes=[ipaddress.IPv6Network(a) for a in e.get("ipv6_prefixes", [])],
                lease4=ipaddress.IPv4Address(e["lease4"]) if e.get("lease4") else None,
            )
            for e in data["enis"]
        }
        return cls(
            vpc_cidr4=[ipaddress.IPv4Network(n) for n in data.get("vpc_cidr4", [])],
            vpc_cidr6=[ipaddress.IPv6Network(n) for n in data.get("vpc_cidr6", [])],
            subnets=subnets,
            enis=enis,
            primary_mac=data["primary_mac"],
            instance_id=data.get("instance_id", "i-0123456789abcdef0"),
            instance_type=data.get("instance_type", "m5.xlarge"),
            region=data.get("region", "us-east-1"),
            availability_zone=data.get("availability_zone", "us-east-1a"),
            multi_card=bool(data.get("multi_card", False)),
            imdsv2_required=bool(data.get("imdsv2_required", True)),
            compress_ipv6_subnets=bool(data.get("compress_ipv6_subnets", True)),
            propagation_delay=float(data.get("propagation_delay", 0.0)),
            stale_after_detach=float(data.get("stale_after_detach", 0.0)),
            user_data=data.get("user_data"),
        )

    @classmethod
    def load(cls, path: Path) -> World:
        return cls.from_json(json.loads(path.read_text()))


def default_world() -> World:
    """The documented default: a primary ENI and one secondary ENI, one card, IMDSv2.

    VPC 10.0.0.0/16 + 2600:1f16:292::/56. Subnet A 10.0.1.0/24 holds the primary
    (10.0.1.10); subnet B 10.0.2.0/24 holds eni-1 (10.0.2.20, secondaries .21 .22,
    IPv6 ::20). Client hosts live in subnet C 10.0.3.0/24 (no ENI of this instance).
    The secondary ENI is listed in IMDS but only attached to the instance when a test
    (or `ec2sim up`) attaches its link.
    """
    v6 = ipaddress.IPv6Network("2600:1f16:292::/56")
    subnets = {
        "subnet-a": Subnet(
            "subnet-a",
            ipaddress.IPv4Network("10.0.1.0/24"),
            ipaddress.IPv6Network("2600:1f16:292:1::/64"),
        ),
        "subnet-b": Subnet(
            "subnet-b",
            ipaddress.IPv4Network("10.0.2.0/24"),
            ipaddress.IPv6Network("2600:1f16:292:2::/64"),
        ),
        "subnet-c": Subnet(
            "subnet-c",
            ipaddress.IPv4Network("10.0.3.0/24"),
            ipaddress.IPv6Network("2600:1f16:292:3::/64"),
        ),
    }
    primary = Eni(
        eni_id="eni-0aaaaaaaaaaaaaaa0",
        mac="02:00:0a:00:01:0a",
        subnet_id="subnet-a",
        device_number=0,
        ipv4s=[ipaddress.IPv4Address("10.0.1.10")],
        ipv6s=[ipaddress.IPv6Address("2600:1f16:292:1::10")],
    )
    second = Eni(
        eni_id="eni-0bbbbbbbbbbbbbbb1",
        mac="02:00:0a:00:02:14",
        subnet_id="subnet-b",
        device_number=1,
        ipv4s=[ipaddress.IPv4Address(f"10.0.2.{n}") for n in (20, 21, 22)],
        ipv6s=[ipaddress.IPv6Address("2600:1f16:292:2::20")],
    )
    return World(
        vpc_cidr4=[ipaddress.IPv4Network("10.0.0.0/16")],
        vpc_cidr6=[v6],
        subnets=subnets,
        enis={primary.mac: primary, second.mac: second},
        primary_mac=primary.mac,
    )


def lease_for(mac: str) -> IPv4Addr:
    """The 169.254.x.x/32 lease of an ENI in an IPv6-only subnet, from its MAC (never
    IMDS's own 169.254.169.254, nor a .0 or .255)."""
    b = [int(x, 16) for x in mac.split(":")]
    third, fourth = b[4] % 254 + 1, b[5] % 254 + 1
    if (third, fourth) == (169, 254):
        fourth = 253
    return ipaddress.IPv4Address(f"169.254.{third}.{fourth}")


def ipv6_only_world() -> World:
    """An IPv6-only instance: its primary ENI (::10, with a 169.254 lease) sits in
    IPv6-only subnet-a6, without an IPv4 route to IMDS, which it reaches only at
    [fd00:ec2::254]. The VPC keeps its IPv4 CIDR (EC2 VPCs always have one).

    Subnets: a6 (2600:1f16:292:a6::/64) and b6 (2600:1f16:292:b6::/64) IPv6-only,
    c (10.0.3.0/24 + ::3, clients) and d (10.0.4.0/24 + ::4) dual-stack. Listed ENIs
    besides the primary: eni-1 in b6 (IPv6-only, ::20 and ::21), eni-2 in d
    (dual-stack: 10.0.4.20, .21 and ::20).
    """
    v6 = ipaddress.IPv6Network("2600:1f16:292::/56")

    def net6(tag: str) -> IPv6Net:
        return ipaddress.IPv6Network(f"2600:1f16:292:{tag}::/64")

    subnets = {
        "subnet-a6": Subnet("subnet-a6", None, net6("a6")),
        "subnet-b6": Subnet("subnet-b6", None, net6("b6")),
        "subnet-c": Subnet("subnet-c", ipaddress.IPv4Network("10.0.3.0/24"), net6("3")),
        "subnet-d": Subnet("subnet-d", ipaddress.IPv4Network("10.0.4.0/24"), net6("4")),
    }
    primary_mac = "02:00:0a:00:a6:0a"
    primary = Eni(
        eni_id="eni-0aaaaaaaaaaaaaa60",
        mac=primary_mac,
        subnet_id="subnet-a6",
        device_number=0,
        ipv6s=[ipaddress.IPv6Address("2600:1f16:292:a6::10")],
        lease4=lease_for(primary_mac),
    )
    second_mac = "02:00:0a:00:b6:14"
    second = Eni(
        eni_id="eni-0bbbbbbbbbbbbbb61",
        mac=second_mac,
        subnet_id="subnet-b6",
        device_number=1,
        ipv6s=[ipaddress.IPv6Address(f"2600:1f16:292:b6::{n}") for n in (20, 21)],
        lease4=lease_for(second_mac),
    )
    dual = Eni(
        eni_id="eni-0ddddddddddddddd2",
        mac="02:00:0a:00:04:14",
        subnet_id="subnet-d",
        device_number=2,
        ipv4s=[ipaddress.IPv4Address(f"10.0.4.{n}") for n in (20, 21)],
        ipv6s=[ipaddress.IPv6Address("2600:1f16:292:4::20")],
    )
    return World(
        vpc_cidr4=[ipaddress.IPv4Network("10.0.0.0/16")],
        vpc_cidr6=[v6],
        subnets=subnets,
        enis={e.mac: e for e in (primary, second, dual)},
        primary_mac=primary.mac,
        instance_type="m6i.xlarge",  # Nitro: the IPv6 endpoint exists only there
    )
