"""The IMDS metadata tree as a pure function of a `World` and a monotonic time.

`render_tree(world, now)` returns nested dicts (a directory maps names to sub-directories
or to leaf strings). The HTTP layer only looks paths up in it, so every timing rule
(propagation after attach, stale listing after detach) lives here and is testable
without sockets or sleeps.
"""

from __future__ import annotations

import enum
import hashlib
import ipaddress
import json
from typing import Optional, Union

from ec2sim.world import Eni, Subnet, World

# A directory maps entry names to leaves (the response body) or sub-directories.
Node = Union[str, "Directory"]
Directory = dict[str, Node]

# Informational values the world model does not carry; fixed so output is reproducible.
OWNER_ID = "123456789012"
VPC_ID = "vpc-0123456789abcdef0"
SECURITY_GROUP_ID = "sg-0123456789abcdef0"
SECURITY_GROUP_NAME = "default"
AMI_ID = "ami-0123456789abcdef0"
# When the instance entered `pending`, for the identity document (the world has no clock
# of launch; fixed like the other informational values).
PENDING_TIME = "2026-01-05T10:00:00Z"

# Versions listed at `/`; each serves the same tree as `latest`.
VERSIONS = ("1.0", "2009-04-04", "2016-09-02", "2021-03-23", "latest")


class Phase(enum.Enum):
    """How far an ENI's metadata has propagated at a given time."""

    ABSENT = "absent"  # not listed at all (just attached, or stale time over)
    PARTIAL = "partial"  # listed, device-number 0, no card/ipv6/prefixes/secondaries
    COMPLETE = "complete"


def eni_phase(world: World, eni: Eni, now: float) -> Phase:
    if eni.detached_at is not None:
        # A detached ENI stays fully listed while stale, then disappears.
        if now - eni.detached_at >= world.stale_after_detach:
            return Phase.ABSENT
        return Phase.COMPLETE
    delay = eni.propagation_delay if eni.propagation_delay is not None else world.propagation_delay
    if eni.attached_at is None or delay <= 0:
        return Phase.COMPLETE
    age = now - eni.attached_at
    if age < delay / 3:
        return Phase.ABSENT
    if age < delay:
        return Phase.PARTIAL
    return Phase.COMPLETE


def uncompressed(net: ipaddress.IPv6Network) -> str:
    """`2600:1f16:292:2::/64` -> `2600:1f16:292:2:0:0:0:0/64`, a form IMDS really serves."""
    packed = net.network_address.packed
    groups = (int.from_bytes(packed[i : i + 2], "big") for i in range(0, 16, 2))
    return ":".join(f"{g:x}" for g in groups) + f"/{net.prefixlen}"


def hostname_for(world: World, ipv4: Optional[ipaddress.IPv4Address]) -> str:
    # us-east-1 keeps the legacy `ec2.internal` domain; other regions use
    # `<region>.compute.internal`. IPv6-only instances get resource names.
    domain = "ec2.internal" if world.region == "us-east-1" else f"{world.region}.compute.internal"
    if ipv4 is None:
        return f"{world.instance_id}.{domain}"
    return "ip-" + str(ipv4).replace(".", "-") + "." + domain


def mac_listing_order(world: World, enis: list[Eni]) -> list[Eni]:
    """A deterministic order that is never (network-card, device-number) order.

    Real IMDS lists MACs in an order unrelated to device numbers; clients must sort.
    Hash order alone could match device order by chance, so rotate if it does.
    """
    ordered = sorted(enis, key=lambda e: hashlib.sha256(e.mac.encode()).hexdigest())
    by_device = sorted(enis, key=lambda e: (e.network_card, e.device_number))
    if len(ordered) > 1 and ordered == by_device:
        ordered = ordered[1:] + ordered[:1]
    return ordered


def _lines(items: list[str]) -> str:
    return "\n".join(items)


def render_eni(world: World, eni: Eni, subnet: Subnet, phase: Phase) -> Directory:
    complete = phase is Phase.COMPLETE
    d: Directory = {
        "device-number": str(eni.device_number if complete else 0),
        "interface-id": eni.eni_id,
        "mac": eni.mac,
        "owner-id": OWNER_ID,
        "security-group-ids": SECURITY_GROUP_ID,
        "security-groups": SECURITY_GROUP_NAME,
        "subnet-id": subnet.subnet_id,
        "vpc-id": VPC_ID,
    }
    if world.multi_card and complete:
        d["network-card"] = str(eni.network_card)
    if eni.ipv4s:
        shown = eni.ipv4s if complete else eni.ipv4s[:1]
        d["local-ipv4s"] = _lines([str(a) for a in shown])
        d["local-hostname"] = hostname_for(world, eni.ipv4s[0])
    else:
        d["local-hostname"] = hostname_for(world, None)
    if subnet.cidr4 is not None:
        d["subnet-ipv4-cidr-block"] = str(subnet.cidr4)
    if subnet.cidr6 is not None:
        d["subnet-ipv6-cidr-blocks"] = (
            str(subnet.cidr6) if world.compress_ipv6_subnets else uncompressed(subnet.cidr6)
        )
    if complete and eni.ipv6s:
        d["ipv6s"] = _lines([str(a) for a in eni.ipv6s])
    if complete and eni.ipv4_prefixes:
        d["ipv4-prefix"] = _lines([str(p) for p in eni.ipv4_prefixes])
    if complete and eni.ipv6_prefixes:
        d["ipv6-prefix"] = _lines([str(p) for p in eni.ipv6_prefixes])
    if world.vpc_cidr4:
        d["vpc-ipv4-cidr-block"] = str(world.vpc_cidr4[0])
        d["vpc-ipv4-cidr-blocks"] = _lines([str(n) for n in world.vpc_cidr4])
    if world.vpc_cidr6:
        d["vpc-ipv6-cidr-blocks"] = _lines([str(n) for n in world.vpc_cidr6])
    return dict(sorted(d.items()))


def render_meta_data(world: World, now: float) -> Directory:
    visible: list[tuple[Eni, Phase]] = []
    for eni in world.enis.values():
        phase = eni_phase(world, eni, now)
        if phase is not Phase.ABSENT:
            visible.append((eni, phase))
    phases = {e.mac: p for e, p in visible}
    macs: Directory = {}
    for eni in mac_listing_order(world, [e for e, _ in visible]):
        macs[eni.mac] = render_eni(world, eni, world.subnet_of(eni), phases[eni.mac])

    primary = world.enis.get(world.primary_mac)
    primary_v4 = primary.ipv4s[0] if primary is not None and primary.ipv4s else None
    md: Directory = {
        "ami-id": AMI_ID,
        "hostname": hostname_for(world, primary_v4),
        "instance-id": world.instance_id,
        "instance-type": world.instance_type,
        "local-hostname": hostname_for(world, primary_v4),
        "mac": world.primary_mac,
        "network": {"interfaces": {"macs": macs}},
        "placement": {
            "availability-zone": world.availability_zone,
            "region": world.region,
        },
    }
    if primary_v4 is not None:
        md["local-ipv4"] = str(primary_v4)
    return dict(sorted(md.items()))


def identity_document(world: World) -> dict[str, Optional[str]]:
    """The instance identity document with every field AWS documents for it, from the
    world: account (the ENIs' owner), AZ, region, instance id and type, the primary's
    private IPv4 (null on an IPv6-only primary); the product codes, kernel and ramdisk
    ids are null as on an instance launched from a plain AMI."""
    primary = world.enis.get(world.primary_mac)
    return {
        "accountId": OWNER_ID,
        "architecture": "x86_64",
        "availabilityZone": world.availability_zone,
        "billingProducts": None,
        "devpayProductCodes": None,
        "marketplaceProductCodes": None,
        "imageId": AMI_ID,
        "instanceId": world.instance_id,
        "instanceType": world.instance_type,
        "kernelId": None,
        "pendingTime": PENDING_TIME,
        "privateIp": str(primary.ipv4s[0]) if primary is not None and primary.ipv4s else None,
        "ramdiskId": None,
        "region": world.region,
        "version": "2017-09-30",
    }


def render_identity_document(world: World) -> str:
    # EC2 serves it pretty-printed, with a space before each colon.
    return json.dumps(identity_document(world), indent=2, separators=(",", " : "))


def render_tree(world: World, now: float) -> Directory:
    """The version root (`/latest/`) for `world` as seen at monotonic time `now`."""
    with world.lock:  # one consistent snapshot even while a test mutates the world
        root: Directory = {
            "dynamic": {"instance-identity": {"document": render_identity_document(world)}},
            "meta-data": render_meta_data(world, now),
        }
        if world.user_data is not None:
            root["user-data"] = world.user_data
        return root


def lookup(root: Directory, parts: list[str]) -> Optional[Node]:
    """Walk `parts` (path components, no empty ones) from `root`; None when absent."""
    node: Node = root
    for part in parts:
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def listing(directory: Directory, slash_dirs: bool = True) -> str:
    """LF-separated entries, sub-directories with a trailing `/`, no trailing newline."""
    return "\n".join(
        name + "/" if slash_dirs and isinstance(child, dict) else name
        for name, child in directory.items()
    )
