"""ENI metadata: typed records parsed from raw IMDS text, and the reads that fetch them.

`parse_eni` is pure: raw key -> text in, a frozen `EniMetadata` out, or a MetadataError
naming the key and value before anything is applied. `fetch_eni` reads only the keys
the ENI's own listing says exist, so optional keys cost nothing when absent.
"""

from __future__ import annotations

import ipaddress
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Callable, Optional, TypeVar

from ec2net.errors import ImdsAbsent, ImdsNotYet, MetadataError
from ec2net.imds import ImdsClient

log = logging.getLogger(__name__)

IPv4Address = ipaddress.IPv4Address
IPv6Address = ipaddress.IPv6Address
IPv4Network = ipaddress.IPv4Network
IPv6Network = ipaddress.IPv6Network

# Keys whose values can change while the ENI stays attached; `refresh` re-reads these.
DYNAMIC_KEYS = ("local-ipv4s", "ipv6s", "ipv4-prefix", "ipv6-prefix")
# Keys read once at `up` (they cannot change during an attachment, or very rarely).
STATIC_KEYS = (
    "device-number",
    "network-card",
    "interface-id",
    "subnet-ipv4-cidr-block",
    "subnet-ipv6-cidr-blocks",
    "vpc-ipv4-cidr-blocks",
    "vpc-ipv6-cidr-blocks",
)
REQUIRED_KEYS = ("device-number", "interface-id")


@dataclass(frozen=True)
class EniMetadata:
    mac: str
    eni_id: str
    device_number: int
    network_card: int
    is_primary: bool
    ipv4s: tuple[IPv4Address, ...] = ()  # the ENI's primary address first
    subnet4: Optional[IPv4Network] = None
    ipv6s: tuple[IPv6Address, ...] = ()
    subnet6: tuple[IPv6Network, ...] = ()
    ipv4_prefixes: tuple[IPv4Network, ...] = ()
    ipv6_prefixes: tuple[IPv6Network, ...] = ()
    vpc4: tuple[IPv4Network, ...] = ()
    vpc6: tuple[IPv6Network, ...] = ()

    @property
    def index(self) -> int:
        """Position that numbers the ENI's table and rule priorities."""
        return 100 * self.network_card + self.device_number

    @property
    def gateway4(self) -> Optional[IPv4Address]:
        return self.subnet4.network_address + 1 if self.subnet4 is not None else None


T = TypeVar("T")


def _lines(text: str) -> list[str]:
    return [line.strip() for line in text.split("\n") if line.strip()]


def _each(key: str, text: str, conv: Callable[[str], T]) -> tuple[T, ...]:
    out = []
    for item in _lines(text):
        try:
            out.append(conv(item))
        except ValueError as err:
            raise MetadataError(key, item, str(err)) from None
    return tuple(out)


def _int(key: str, text: str) -> int:
    try:
        value = int(text.strip())
    except ValueError:
        raise MetadataError(key, text, "not an integer") from None
    if not 0 <= value < 100:
        raise MetadataError(key, text, "out of range 0..99")
    return value


def _net4(s: str) -> IPv4Network:
    return IPv4Network(s, strict=True)


def _net6(s: str) -> IPv6Network:
    # IMDS may send uncompressed forms (2600:1f16:0:0:0:0:0:0/64); ipaddress normalises.
    return IPv6Network(s, strict=True)


def parse_eni(mac: str, raw: Mapping[str, str], primary_mac: str) -> EniMetadata:
    """Turn raw IMDS values (absent keys simply missing) into an EniMetadata."""
    for key in REQUIRED_KEYS:
        if key not in raw:
            raise MetadataError(key, "", "required key missing")
    eni_id = raw["interface-id"].strip()
    if not eni_id.startswith("eni-"):
        raise MetadataError("interface-id", eni_id, "not an ENI id (eni-...)")
    subnet4 = None
    if "subnet-ipv4-cidr-block" in raw:
        subnets = _each("subnet-ipv4-cidr-block", raw["subnet-ipv4-cidr-block"], _net4)
        subnet4 = subnets[0] if subnets else None
    meta = EniMetadata(
        mac=mac,
        eni_id=eni_id,
        device_number=_int("device-number", raw["device-number"]),
        network_card=_int("network-card", raw["network-card"]) if "network-card" in raw else 0,
        is_primary=mac == primary_mac,
        ipv4s=_each("local-ipv4s", raw.get("local-ipv4s", ""), IPv4Address),
        subnet4=subnet4,
        ipv6s=_each("ipv6s", raw.get("ipv6s", ""), IPv6Address),
        subnet6=_each("subnet-ipv6-cidr-blocks", raw.get("subnet-ipv6-cidr-blocks", ""), _net6),
        ipv4_prefixes=_each("ipv4-prefix", raw.get("ipv4-prefix", ""), _net4),
        ipv6_prefixes=_each("ipv6-prefix", raw.get("ipv6-prefix", ""), _net6),
        vpc4=_each("vpc-ipv4-cidr-blocks", raw.get("vpc-ipv4-cidr-blocks", ""), _net4),
        vpc6=_each("vpc-ipv6-cidr-blocks", raw.get("vpc-ipv6-cidr-blocks", ""), _net6),
    )
    _check_consistent(meta)
    return meta


def _check_consistent(meta: EniMetadata) -> None:
    if meta.ipv4s and meta.subnet4 is None:
        raise MetadataError("subnet-ipv4-cidr-block", "", "IPv4 addresses without a subnet")
    for addr in meta.ipv4s:
        if meta.subnet4 is not None and addr not in meta.subnet4:
            raise MetadataError("local-ipv4s", str(addr), f"outside subnet {meta.subnet4}")
    if meta.ipv6s and not meta.subnet6:
        raise MetadataError("subnet-ipv6-cidr-blocks", "", "IPv6 addresses without a subnet")


def not_yet_reason(meta: EniMetadata) -> Optional[str]:
    """Why this metadata is still the partial view of a fresh attachment, if it is."""
    if not meta.is_primary and meta.device_number == 0 and meta.network_card == 0:
        return "device-number reads 0 on a secondary ENI"
    if not meta.ipv4s and not meta.ipv6s:
        return "no addresses yet"
    return None


def _listing(client: ImdsClient, mac: str) -> set[str]:
    try:
        return {k.rstrip("/") for k in client.get_list(f"network/interfaces/macs/{mac}/")}
    except ImdsAbsent:
        raise ImdsNotYet(f"{mac}: not listed in IMDS yet") from None


def _read_keys(client: ImdsClient, mac: str, keys: tuple[str, ...]) -> dict[str, str]:
    raw: dict[str, str] = {}
    for key in keys:
        try:
            raw[key] = client.get(f"network/interfaces/macs/{mac}/{key}")
        except ImdsAbsent:
            # Listed a moment ago, gone now: the attachment is still settling.
            raise ImdsNotYet(f"{mac}: {key} listed but not readable yet") from None
    return raw


def fetch_eni(client: ImdsClient, mac: str, primary_mac: str) -> EniMetadata:
    """All of one ENI's metadata: its listing, then each key present (11 requests for
    a dual-stack ENI with a token, however many addresses it has)."""
    present = _listing(client, mac)
    keys = tuple(k for k in (*STATIC_KEYS, *DYNAMIC_KEYS) if k in present)
    meta = parse_eni(mac, _read_keys(client, mac, keys), primary_mac)
    reason = not_yet_reason(meta)
    if reason:
        raise ImdsNotYet(f"{mac}: {reason}")
    return meta


def fetch_dynamic(client: ImdsClient, known: EniMetadata) -> EniMetadata:
    """Re-read only what can change while attached (refresh): the listing, then each
    dynamic key present. Absent from the listing means none, as IMDS documents."""
    present = _listing(client, known.mac)
    keys = tuple(k for k in DYNAMIC_KEYS if k in present)
    raw = _read_keys(client, known.mac, keys)
    fresh = replace(
        known,
        ipv4s=_each("local-ipv4s", raw.get("local-ipv4s", ""), IPv4Address),
        ipv6s=_each("ipv6s", raw.get("ipv6s", ""), IPv6Address),
        ipv4_prefixes=_each("ipv4-prefix", raw.get("ipv4-prefix", ""), _net4),
        ipv6_prefixes=_each("ipv6-prefix", raw.get("ipv6-prefix", ""), _net6),
    )
    _check_consistent(fresh)
    if not fresh.ipv4s and not fresh.ipv6s:
        # An ENI always has a primary address: an empty answer is not "none".
        raise ImdsNotYet(f"{known.mac}: IMDS lists no addresses")
    return fresh


def wait_for_eni(
    client: ImdsClient,
    mac: str,
    primary_mac: str,
    timeout: float,
    *,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> EniMetadata:
    """fetch_eni, polling while the attachment propagates, for at most `timeout` s."""
    deadline = clock() + timeout
    delay = 0.05
    while True:
        try:
            return fetch_eni(client, mac, primary_mac)
        except ImdsNotYet as err:
            if clock() + delay > deadline:
                raise
            log.debug("%s; polling again in %.2fs", err, delay)
            sleep(delay)
            delay = min(delay * 2, 1.0)
