"""ENI metadata: typed records parsed from raw IMDS text, and the reads that fetch them.

`parse_eni` is pure: raw key -> text in, a frozen `EniMetadata` out, or a MetadataError
naming the key and value before anything is applied. `fetch_eni` reads only the keys
the ENI's own listing says exist, so optional keys cost nothing when absent.
"""

from __future__ import annotations

import ipaddress
import logging
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Callable, Optional, TypeVar

from ec2net import cancel
from ec2net.errors import ImdsAbsent, ImdsNotYet, InterfaceGone, MetadataError
from ec2net.imds import ImdsClient
from ec2net.model import MAX_NETWORK_CARDS

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
# Static keys that first appear with an ENI's first IPv6 address or prefix.
_IPV6_STATIC = ("subnet-ipv6-cidr-blocks", "vpc-ipv6-cidr-blocks")


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


# Lines accepted per key. EC2's largest types allow 50 private IPv4 and 50 IPv6
# addresses per ENI (delegated prefixes count against the same limit), a VPC up to 50
# IPv4 and 5 IPv6 CIDR blocks, a subnet one block per family. Twice that leaves room
# for types to come; a longer list is a broken answer, and parsing thousands of lines
# into thousands of rules is what must never happen.
MAX_LINES = {
    "device-number": 1,
    "network-card": 1,
    "interface-id": 1,
    "subnet-ipv4-cidr-block": 1,
    "subnet-ipv6-cidr-blocks": 2,
    "vpc-ipv4-cidr-blocks": 100,
    "vpc-ipv6-cidr-blocks": 10,
    "local-ipv4s": 100,
    "ipv6s": 100,
    "ipv4-prefix": 100,
    "ipv6-prefix": 100,
}
# An ENI's directory lists about 25 keys.
MAX_LISTING = 200
# Device numbers are below 100 in EC2 (15 ENIs per card at most), and the table scheme
# 10000 + 100 * card + device needs that; cards beyond the numbered range would leave it.
MAX_DEVICE_NUMBER = 99
MAX_CARD = MAX_NETWORK_CARDS - 1
# Prefix lengths EC2 can hand out: subnets /16-/28 (IPv4) and /44-/64 (IPv6), VPC
# blocks likewise; delegated prefixes are exactly /28 (IPv4) and /80 (IPv6).
SUBNET4_LENGTHS = range(16, 29)
SUBNET6_LENGTHS = range(44, 65)
PREFIX4_LENGTH = 28
PREFIX6_LENGTH = 80

_ENI_ID = re.compile(r"eni-[0-9a-f]{8,17}")
_NUMBER = re.compile(r"[0-9]{1,3}")
_V4_CHARS = re.compile(r"[0-9.]+")
_V6_CHARS = re.compile(r"[0-9A-Fa-f:.]+")
_NET4_CHARS = re.compile(r"[0-9./]+")
_NET6_CHARS = re.compile(r"[0-9A-Fa-f:./]+")
_PAGE = re.compile(r"\s*<")

T = TypeVar("T")


def _text(key: str, text: str) -> str:
    """The value's text if it can be a value at all: not empty, no NUL, not a page."""
    if "\x00" in text:
        raise MetadataError(key, text, "contains a NUL byte")
    if not text or text.isspace():  # (no copies: a body can be MAX_BODY long)
        raise MetadataError(key, text, "empty answer (IMDS answers 404 for a key that is not set)")
    if _PAGE.match(text):
        raise MetadataError(key, text, "an HTML page, not a value")
    return text


def _too_many(key: str, text: str, limit: int, what: str) -> None:
    """Refuse a body of far too many lines before splitting it: 100,000 short lines fit
    in imds.MAX_BODY, and as a list of strings they would take megabytes."""
    newlines = text.count("\n")
    if newlines > 2 * limit + 8:
        raise MetadataError(key, text, f"{newlines + 1} {what}, more than the {limit} EC2 allows")


def _lines(key: str, text: str) -> list[str]:
    limit = MAX_LINES.get(key, 1)
    _too_many(key, _text(key, text), limit, "lines")
    lines = [line.strip() for line in text.split("\n") if line.strip()]
    if len(lines) > limit:
        raise MetadataError(key, text, f"{len(lines)} lines, more than the {limit} EC2 allows")
    return lines


def _each(key: str, text: str, conv: Callable[[str], T]) -> tuple[T, ...]:
    out: list[T] = []
    for item in _lines(key, text):
        try:
            value = conv(item)
        except ValueError as err:
            raise MetadataError(key, item, str(err) or "not valid") from None
        if value in out:
            raise MetadataError(key, item, "listed twice")
        out.append(value)
    return tuple(out)


def _one(key: str, text: str, conv: Callable[[str], T]) -> T:
    return _each(key, text, conv)[0]  # _lines allows one line for single-valued keys


def _number(limit: int) -> Callable[[str], int]:
    def conv(s: str) -> int:
        # not int(): it takes "+1", "1_0" and non-ASCII digits
        if not _NUMBER.fullmatch(s):
            raise ValueError("not a number")
        value = int(s)
        if value > limit:
            raise ValueError(f"out of range 0..{limit}")
        return value

    return conv


def _eni_id(s: str) -> str:
    if not _ENI_ID.fullmatch(s):
        raise ValueError("not an ENI id (eni-...)")
    return s


def _chars(pattern: re.Pattern[str], s: str) -> str:
    # ipaddress alone would take scope ids ("fe80::1%eth0") and other oddities
    if not pattern.fullmatch(s):
        raise ValueError("not an address")
    return s


def _unicast(addr: IPv4Address | IPv6Address) -> None:
    if addr.is_multicast or addr.is_loopback or addr.is_unspecified or addr.is_link_local:
        raise ValueError("not an address an ENI can own")


def _addr4(s: str) -> IPv4Address:
    addr = IPv4Address(_chars(_V4_CHARS, s))
    _unicast(addr)
    return addr


def _addr6(s: str) -> IPv6Address:
    addr = IPv6Address(_chars(_V6_CHARS, s))
    _unicast(addr)
    return addr


N = TypeVar("N", IPv4Network, IPv6Network)


def _network(cls: type[N], chars: re.Pattern[str], lengths: range) -> Callable[[str], N]:
    """A parser of one CIDR of `cls` whose length EC2 uses for this key. IMDS may send
    uncompressed IPv6 forms (2600:1f16:0:0:0:0:0:0/64): ipaddress normalises them."""

    def conv(s: str) -> N:
        net = cls(_chars(chars, s), strict=True)
        if net.prefixlen not in lengths:
            raise ValueError(f"/{net.prefixlen} is not a length EC2 uses here")
        return net

    return conv


def _net4(lengths: range) -> Callable[[str], IPv4Network]:
    return _network(IPv4Network, _NET4_CHARS, lengths)


def _net6(lengths: range) -> Callable[[str], IPv6Network]:
    return _network(IPv6Network, _NET6_CHARS, lengths)


_SUBNET4 = _net4(SUBNET4_LENGTHS)
_SUBNET6 = _net6(SUBNET6_LENGTHS)
_PREFIX4 = _net4(range(PREFIX4_LENGTH, PREFIX4_LENGTH + 1))
_PREFIX6 = _net6(range(PREFIX6_LENGTH, PREFIX6_LENGTH + 1))


@dataclass(frozen=True)
class _Dynamic:
    ipv4s: tuple[IPv4Address, ...]
    ipv6s: tuple[IPv6Address, ...]
    ipv4_prefixes: tuple[IPv4Network, ...]
    ipv6_prefixes: tuple[IPv6Network, ...]


def _dynamic(raw: Mapping[str, str]) -> _Dynamic:
    """The keys that can change while attached; an absent key means none."""

    def opt(key: str, conv: Callable[[str], T]) -> tuple[T, ...]:
        return _each(key, raw[key], conv) if key in raw else ()

    return _Dynamic(
        ipv4s=opt("local-ipv4s", _addr4),
        ipv6s=opt("ipv6s", _addr6),
        ipv4_prefixes=opt("ipv4-prefix", _PREFIX4),
        ipv6_prefixes=opt("ipv6-prefix", _PREFIX6),
    )


def parse_eni(mac: str, raw: Mapping[str, str], primary_mac: str) -> EniMetadata:
    """Turn raw IMDS values (absent keys simply missing) into an EniMetadata, or raise
    MetadataError naming the first key whose value cannot be right."""
    for key in REQUIRED_KEYS:
        if key not in raw:
            raise MetadataError(key, "", "required key missing")

    def opt(key: str, conv: Callable[[str], T]) -> tuple[T, ...]:
        return _each(key, raw[key], conv) if key in raw else ()

    subnet4 = opt("subnet-ipv4-cidr-block", _SUBNET4)
    dyn = _dynamic(raw)
    meta = EniMetadata(
        mac=mac,
        eni_id=_one("interface-id", raw["interface-id"], _eni_id),
        device_number=_one("device-number", raw["device-number"], _number(MAX_DEVICE_NUMBER)),
        network_card=_one("network-card", raw["network-card"], _number(MAX_CARD))
        if "network-card" in raw
        else 0,
        is_primary=mac == primary_mac,
        ipv4s=dyn.ipv4s,
        subnet4=subnet4[0] if subnet4 else None,
        ipv6s=dyn.ipv6s,
        subnet6=opt("subnet-ipv6-cidr-blocks", _SUBNET6),
        ipv4_prefixes=dyn.ipv4_prefixes,
        ipv6_prefixes=dyn.ipv6_prefixes,
        vpc4=opt("vpc-ipv4-cidr-blocks", _SUBNET4),
        vpc6=opt("vpc-ipv6-cidr-blocks", _SUBNET6),
    )
    _check_consistent(meta)
    return meta


def _check_consistent(meta: EniMetadata) -> None:
    """Addresses and prefixes must lie in the ENI's subnet (EC2 assigns them from it),
    and the subnet's first four and last IPv4 addresses are the VPC's own."""
    if (meta.ipv4s or meta.ipv4_prefixes) and meta.subnet4 is None:
        raise MetadataError("subnet-ipv4-cidr-block", "", "IPv4 addresses without a subnet")
    if (meta.ipv6s or meta.ipv6_prefixes) and not meta.subnet6:
        raise MetadataError("subnet-ipv6-cidr-blocks", "", "IPv6 addresses without a subnet")
    if meta.subnet4 is not None:
        s4 = meta.subnet4
        for addr in meta.ipv4s:
            if addr not in s4:
                raise MetadataError("local-ipv4s", str(addr), f"outside subnet {s4}")
            if int(addr) - int(s4.network_address) < 4 or addr == s4.broadcast_address:
                raise MetadataError("local-ipv4s", str(addr), f"reserved by the VPC in {s4}")
        for p4 in meta.ipv4_prefixes:
            if not p4.subnet_of(s4):
                raise MetadataError("ipv4-prefix", str(p4), f"outside subnet {s4}")
    for addr6 in meta.ipv6s:
        if not any(addr6 in s6 for s6 in meta.subnet6):
            raise MetadataError("ipv6s", str(addr6), f"outside subnet {_show(meta.subnet6)}")
    for p6 in meta.ipv6_prefixes:
        if not any(p6.subnet_of(s6) for s6 in meta.subnet6):
            raise MetadataError("ipv6-prefix", str(p6), f"outside subnet {_show(meta.subnet6)}")


def _show(nets: tuple[IPv6Network, ...]) -> str:
    return ", ".join(str(n) for n in nets)


def not_yet_reason(meta: EniMetadata) -> Optional[str]:
    """Why this metadata is still the partial view of a fresh attachment, if it is."""
    if not meta.is_primary and meta.device_number == 0 and meta.network_card == 0:
        return "device-number reads 0 on a secondary ENI"
    if not meta.ipv4s and not meta.ipv6s:
        return "no addresses yet"
    return None


def _listing(client: ImdsClient, mac: str) -> set[str]:
    key = f"network/interfaces/macs/{mac}/"
    try:
        text = client.get(key)
    except ImdsAbsent:
        raise ImdsNotYet(f"{mac}: not listed in IMDS yet") from None
    _too_many(key, _text(key, text), MAX_LISTING, "entries")
    lines = [line.strip() for line in text.split("\n") if line.strip()]
    if len(lines) > MAX_LISTING:
        raise MetadataError(key, text, f"{len(lines)} entries, more than {MAX_LISTING}")
    return {line.rstrip("/") for line in lines}


def _read_keys(
    client: ImdsClient, mac: str, keys: tuple[str, ...], *, listed: bool = True
) -> dict[str, str]:
    """Each key's text. A 404 on a key the listing just named is an attachment still
    settling (ImdsNotYet); with `listed` false the ImdsAbsent is the caller's."""
    answers = client.get_many([f"network/interfaces/macs/{mac}/{key}" for key in keys])
    raw: dict[str, str] = {}
    for key, answer in zip(keys, answers):  # the first key's error counts, as in a sequence
        if isinstance(answer, ImdsAbsent):
            if not listed:
                raise answer
            # Listed a moment ago, gone now: the attachment is still settling.
            raise ImdsNotYet(f"{mac}: {key} listed but not readable yet") from None
        if isinstance(answer, BaseException):
            raise answer
        raw[key] = answer
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


def _dynamic_values(known: EniMetadata) -> dict[str, tuple[object, ...]]:
    return {
        "local-ipv4s": known.ipv4s,
        "ipv6s": known.ipv6s,
        "ipv4-prefix": known.ipv4_prefixes,
        "ipv6-prefix": known.ipv6_prefixes,
    }


def known_dynamic(known: EniMetadata) -> tuple[str, ...]:
    """The dynamic keys `known` has values for: those IMDS listed at the last read."""
    values = _dynamic_values(known)
    return tuple(k for k in DYNAMIC_KEYS if values[k])


def fetch_dynamic(client: ImdsClient, known: EniMetadata, *, listing: bool = False) -> EniMetadata:
    """Re-read what can change while attached (refresh), at one request per key.

    Without `listing`: each dynamic key `known` has values for (a dual-stack ENI costs
    two requests). A key that answers 404 may have lost its last value: the listing
    then decides, as below. With `listing`: the ENI's listing, plus the keys it names
    that `known` lacks (a first IPv6 address, a delegated prefix); keys no longer
    listed mean none, and keys still listed keep the values `known` has, as they were
    read one interval ago and are read again in the next (a poller alternates the two,
    so each round costs one request per ENI and key, see watch.py)."""
    mac = known.mac
    have = known_dynamic(known)
    if not listing:
        try:
            raw = _read_keys(client, mac, have, listed=False)
        except ImdsAbsent:
            return fetch_dynamic(client, known, listing=True)
    else:
        present = _listing(client, mac)
        new = tuple(k for k in DYNAMIC_KEYS if k in present and k not in have)
        if not known.subnet6 and {"ipv6s", "ipv6-prefix"} & set(new):
            # IPv6 came to an IPv4-only ENI: its subnet and VPC blocks came with it.
            new += tuple(k for k in _IPV6_STATIC if k in present)
        raw = _read_keys(client, mac, new)
        values = _dynamic_values(known)
        raw.update({k: "\n".join(map(str, values[k])) for k in have if k in present})
    dyn = _dynamic(raw)
    fresh = replace(
        known,
        ipv4s=dyn.ipv4s,
        ipv6s=dyn.ipv6s,
        ipv4_prefixes=dyn.ipv4_prefixes,
        ipv6_prefixes=dyn.ipv6_prefixes,
    )
    if "subnet-ipv6-cidr-blocks" in raw:
        fresh = replace(
            fresh,
            subnet6=_each("subnet-ipv6-cidr-blocks", raw["subnet-ipv6-cidr-blocks"], _SUBNET6),
            vpc6=_each("vpc-ipv6-cidr-blocks", raw["vpc-ipv6-cidr-blocks"], _SUBNET6)
            if "vpc-ipv6-cidr-blocks" in raw
            else known.vpc6,
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
    sleep: Callable[[float], None] = cancel.pause,
    gone: Callable[[], bool] = lambda: False,
) -> EniMetadata:
    """fetch_eni, polling while the attachment propagates, for at most `timeout` s in
    all: the client's requests share that budget, so a slow IMDS cannot stretch it.
    The default sleep ends at once when the process is told to stop. `gone()` says the
    NIC went away: a detach, so there is nothing left to wait for (the caller holds
    the ENI's lock, which the cleanup of that detach needs)."""
    deadline = clock() + timeout
    delay = 0.05
    with client.budget(timeout):
        while True:
            try:
                return fetch_eni(client, mac, primary_mac)
            except ImdsNotYet as err:
                if gone():
                    msg = f"{mac}: the NIC went away while IMDS did not list it"
                    raise InterfaceGone(msg) from err
                if clock() + delay > deadline:
                    raise
                log.debug("%s; polling again in %.2fs", err, delay)
                sleep(delay)
                delay = min(delay * 2, 1.0)
