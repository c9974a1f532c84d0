"""Link messages (RTM_NEWLINK, RTM_DELLINK) as pyroute2 decodes them, narrowed to the
attributes ec2net reads: name, MAC, MTU, master and the kind of a virtual link.

The daemon decodes every link event (a host starting containers sends thousands) and
each converge dumps every link. `LinkMsg` is pyroute2's `ifinfmsg` with an `nla_map`
of those five attributes: pyroute2 still walks every attribute of a message and keeps
the others as undecoded `UNKNOWN` slots (0.7 and 0.9 alike), so the saving over the
whole `ifinfmsg` is the decoders and nested maps it no longer sets up, not the walk:
~0.25 ms a message against ~0.32 ms, on 0.9 and 0.7 (benchmarks/bench_link_decode.py).
`LinkMarshal` splits a buffer into messages with pyroute2's own header parsing; a
message of another type is decoded as a bare `nlmsg` (header only), an error as
`nlmsgerr`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from pyroute2.netlink import NLM_F_DUMP, NLM_F_REQUEST, NLMSG_ERROR, nla, nlmsgerr
from pyroute2.netlink.nlsocket import Marshal
from pyroute2.netlink.rtnl import RTM_DELLINK, RTM_GETLINK, RTM_NEWLINK
from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg

Message = Any  # a decoded pyroute2 message


class LinkMsg(ifinfmsg):  # type: ignore[misc]  # pyroute2 is untyped
    """ifinfmsg with only the attributes ec2net reads; the others stay UNKNOWN."""

    # pyroute2 compiles a class's nla_map on first use and marks it compiled in a class
    # attribute, which a subclass inherits: without its own flag, LinkMsg would decode
    # with ifinfmsg's compiled (whole) map once any ifinfmsg had been made.
    _nlmsg_base__compiled_nla = False
    nla_map = (
        (1, "IFLA_ADDRESS", "l2addr"),
        (3, "IFLA_IFNAME", "asciiz"),
        (4, "IFLA_MTU", "uint32"),
        (10, "IFLA_MASTER", "uint32"),
        (18, "IFLA_LINKINFO", "linkinfo"),
    )

    class linkinfo(nla):  # type: ignore[misc]  # named as pyroute2 names its NLA classes
        """IFLA_LINKINFO with IFLA_INFO_KIND only (not the kind's IFLA_INFO_DATA)."""

        _nlmsg_base__compiled_nla = False
        prefix = "IFLA_INFO_"
        nla_map = ((1, "IFLA_INFO_KIND", "asciiz"),)


class LinkMarshal(Marshal):  # type: ignore[misc]
    """Splits what an rtnetlink socket returned into messages, decoding link messages
    as LinkMsg. nlmsgerr for errors is named here because pyroute2 0.7 decodes an
    error without extended-ack attributes as a bare nlmsg otherwise."""

    msg_map: ClassVar[dict[int, Any]] = {
        RTM_NEWLINK: LinkMsg,
        RTM_DELLINK: LinkMsg,
        NLMSG_ERROR: nlmsgerr,
    }


@dataclass(frozen=True)
class LinkFields:
    index: int
    flags: int  # IFF_*
    name: str
    mac: str  # lowercase, "" when the link has none
    kind: str  # IFLA_INFO_KIND ("veth", "bridge", ...), "" for a NIC
    master: int  # ifindex of the bridge or bond it is a port of, 0 if none
    mtu: int


def link_fields(msg: Message) -> LinkFields:
    """The fields of a LinkMsg. One pass over its attribute slots: get_attr would walk
    them once per attribute. A slot's value is decoded only here, when read."""
    found: dict[str, Any] = {}
    for slot in msg["attrs"]:
        name = slot[0]
        if name != "UNKNOWN" and name not in found:
            found[name] = slot[1]
    info = found.get("IFLA_LINKINFO")
    kind = info.get_attr("IFLA_INFO_KIND") if info is not None else None
    return LinkFields(
        index=int(msg["index"]),
        flags=int(msg["flags"]),
        name=str(found.get("IFLA_IFNAME") or ""),
        mac=str(found.get("IFLA_ADDRESS") or "").lower(),
        kind=str(kind or ""),
        master=int(found.get("IFLA_MASTER") or 0),
        mtu=int(found.get("IFLA_MTU") or 0),
    )


def link_dump_request(seq: int) -> bytes:
    """RTM_GETLINK, NLM_F_DUMP, all families, encoded by pyroute2."""
    msg = ifinfmsg()
    msg["header"]["type"] = RTM_GETLINK
    msg["header"]["flags"] = NLM_F_REQUEST | NLM_F_DUMP
    msg["header"]["sequence_number"] = seq
    msg["family"] = 0
    msg.encode()
    return bytes(msg.data)


def error_code(msg: Message) -> int:
    """The errno an NLMSG_ERROR (decoded as nlmsgerr) carries; 0 for an ack."""
    return -int(msg["error"])
