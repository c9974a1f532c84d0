"""Link messages decoded without pyroute2: the handful of attributes ec2net uses.

pyroute2 decodes every attribute of an RTM_NEWLINK message (statistics, the IPv6
settings of the link, ...), about a millisecond each in Python. On a host with a
thousand container links, that made every link dump cost a second or more, and a burst
of link events outran the daemon's reading until the socket overflowed. Here one walk
over the attributes keeps the header's index and flags and five attributes: name, MAC,
MTU, master and the kind of a virtual link (IFLA_LINKINFO / IFLA_INFO_KIND).
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Optional

NLMSG = struct.Struct("=IHHII")  # len, type, flags, seq, pid
IFINFO = struct.Struct("=BxHiII")  # family, type, index, flags, change
_NLA = struct.Struct("=HH")  # len, type
_U32 = struct.Struct("=I")
_NLA_TYPE = 0x3FFF  # without NLA_F_NESTED and NLA_F_NET_BYTEORDER
IFLA_ADDRESS, IFLA_IFNAME, IFLA_MTU, IFLA_MASTER, IFLA_LINKINFO = 1, 3, 4, 10, 18
IFLA_INFO_KIND = 1
NLMSG_ERROR, NLMSG_DONE = 2, 3
RTM_NEWLINK, RTM_DELLINK, RTM_GETLINK = 16, 17, 18
NLM_F_REQUEST, NLM_F_DUMP, NLM_F_DUMP_INTR = 0x1, 0x300, 0x10


@dataclass(frozen=True)
class LinkFields:
    index: int
    flags: int  # IFF_*
    name: str
    mac: str  # lowercase, "" when the link has none
    kind: str  # IFLA_INFO_KIND ("veth", "bridge", ...), "" for a NIC
    master: int  # ifindex of the bridge or bond it is a port of, 0 if none
    mtu: int


def messages(data: bytes) -> Iterator[tuple[int, int, int, int, int]]:
    """(offset, length, type, flags, seq) of each netlink message in a buffer."""
    pos = 0
    while pos + NLMSG.size <= len(data):
        length, kind, flags, seq, _ = NLMSG.unpack_from(data, pos)
        if length < NLMSG.size or pos + length > len(data):
            return
        yield pos, length, kind, flags, seq
        pos += (length + 3) & ~3


def _attrs(data: bytes, start: int, end: int) -> dict[int, tuple[int, int]]:
    """Attribute type -> (offset, length) of its payload, in [start, end)."""
    out: dict[int, tuple[int, int]] = {}
    pos = start
    while pos + 4 <= end:
        length, kind = _NLA.unpack_from(data, pos)
        if length < 4 or pos + length > end:
            break
        out.setdefault(kind & _NLA_TYPE, (pos + 4, length - 4))
        pos += (length + 3) & ~3
    return out


def _string(data: bytes, where: Optional[tuple[int, int]]) -> str:
    if where is None:
        return ""
    off, length = where
    return data[off : off + length].split(b"\0", 1)[0].decode(errors="replace")


def _u32(data: bytes, where: Optional[tuple[int, int]]) -> int:
    if where is None or where[1] < 4:
        return 0
    return int(_U32.unpack_from(data, where[0])[0])


def link_fields(data: bytes, pos: int, length: int) -> LinkFields:
    """The fields of the RTM_NEWLINK or RTM_DELLINK message at `pos`."""
    body = pos + NLMSG.size
    _, _, index, flags, _ = IFINFO.unpack_from(data, body)
    attrs = _attrs(data, body + IFINFO.size, pos + length)
    mac = ""
    if IFLA_ADDRESS in attrs:
        off, n = attrs[IFLA_ADDRESS]
        mac = ":".join(f"{b:02x}" for b in data[off : off + n])
    kind = ""
    if IFLA_LINKINFO in attrs:
        off, n = attrs[IFLA_LINKINFO]
        kind = _string(data, _attrs(data, off, off + n).get(IFLA_INFO_KIND))
    return LinkFields(
        index=int(index),
        flags=int(flags),
        name=_string(data, attrs.get(IFLA_IFNAME)),
        mac=mac,
        kind=kind,
        master=_u32(data, attrs.get(IFLA_MASTER)),
        mtu=_u32(data, attrs.get(IFLA_MTU)),
    )


def link_dump_request(seq: int) -> bytes:
    """RTM_GETLINK, NLM_F_DUMP, all families."""
    header = NLMSG.pack(NLMSG.size + IFINFO.size, RTM_GETLINK, NLM_F_REQUEST | NLM_F_DUMP, seq, 0)
    return header + IFINFO.pack(0, 0, 0, 0, 0)
