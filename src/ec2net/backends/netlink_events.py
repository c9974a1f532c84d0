"""rtnetlink link events for the watch daemon.

A plain netlink socket joined to RTMGRP_LINK and RTMGRP_IPV6_ROUTE, read without
blocking from the daemon's select loop; pyroute2 only decodes the messages. Of the IPv6
routes only the default routes learned from router advertisements (main table, proto
ra) become events: an ENI's table routes via the link's RA router, which often arrives
after the ENI was configured (until then they go via fe80:ec2::1). IPv4 routes and
addresses are never joined, so bulk programming does not flood the socket. A lost
event (ENOBUFS: the kernel dropped messages because we were slow) is reported as
`Resync`, on which the daemon re-reads every link (`dump_links`).

Link messages are decoded by netlink_raw (the few attributes the daemon needs, not
pyroute2's whole decoding, a millisecond a message): a burst of container links must
not outrun the reader. Route messages are handed to pyroute2 only when their header
says they can be an RA default route.
"""

from __future__ import annotations

import enum
import errno
import ipaddress
import os
import socket
import struct
import time
from dataclasses import dataclass
from typing import Any, Optional, Union

from pyroute2.netlink import NETLINK_ROUTE
from pyroute2.netlink.rtnl import (
    RTM_DELLINK,
    RTM_DELROUTE,
    RTM_NEWLINK,
    RTM_NEWROUTE,
    RTMGRP_IPV6_ROUTE,
    RTMGRP_LINK,
    rt_proto,
)
from pyroute2.netlink.rtnl.marshal import MarshalRtnl

from ec2net.backends import netlink_raw as raw
from ec2net.model import TABLE_MAIN

RCVBUF = 1 << 20
# One read() returns after this long even if more is queued, so a storm of events
# cannot keep the daemon's loop (its watchdog pings, its timers) from turning. What the
# kernel cannot queue meanwhile is lost and reported as Resync.
READ_SLICE = 0.2


class LinkChange(str, enum.Enum):
    """What happened to a link. A str Enum: `ev.kind == "del"` holds."""

    NEW = "new"  # appeared or changed (RTM_NEWLINK)
    DEL = "del"  # gone (RTM_DELLINK)


@dataclass(frozen=True)
class LinkEvent:
    kind: LinkChange
    index: int
    name: str
    mac: str
    # IFLA_INFO_KIND of a virtual link ("bridge", "veth", "dummy"...; "" for a NIC)
    # and IFLA_MASTER (the bridge or bond it is a port of): what lets the daemon drop
    # events of links that cannot be ENIs without a job.
    link_kind: str = ""
    master: int = 0


@dataclass(frozen=True)
class RouterEvent:
    """An IPv6 default router (from an RA) appeared on a link or left it."""

    kind: LinkChange
    index: int
    gateway: str


@dataclass(frozen=True)
class Resync:
    """Events were lost; the receiver must re-read all links."""


Event = Union[LinkEvent, RouterEvent, Resync]
RTPROT_RA: int = rt_proto["ra"]

# rtmsg: family, dst_len, src_len, tos, table, protocol, ...
_RT_DST_LEN, _RT_PROTOCOL = 1, 5
DUMP_TIMEOUT = 5.0


def _event(data: bytes, pos: int, length: int, kind: int) -> LinkEvent:
    f = raw.link_fields(data, pos, length)
    change = LinkChange.NEW if kind == RTM_NEWLINK else LinkChange.DEL
    return LinkEvent(change, f.index, f.name, f.mac, f.kind, f.master)


def dump_links() -> list[LinkEvent]:
    """Every link in this network namespace, as NEW LinkEvents (one RTM_GETLINK dump
    on a socket of its own)."""
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_ROUTE) as sock:
        sock.settimeout(DUMP_TIMEOUT)
        sock.bind((0, 0))
        seq = int(time.monotonic() * 1000) & 0x7FFFFFFF
        sock.send(raw.link_dump_request(seq))
        out: list[LinkEvent] = []
        while True:
            data = sock.recv(1 << 16)
            for pos, length, kind, _, _ in raw.messages(data):
                if kind == raw.NLMSG_DONE:
                    return out
                if kind == raw.NLMSG_ERROR:
                    code = struct.unpack_from("=i", data, pos + raw.NLMSG.size)[0]
                    raise OSError(-code, f"link dump: {os.strerror(-code)}")
                if kind == RTM_NEWLINK:
                    out.append(_event(data, pos, length, kind))


class LinkEvents:
    def __init__(self) -> None:
        self._sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_ROUTE)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF)
        self._sock.bind((0, RTMGRP_LINK | RTMGRP_IPV6_ROUTE))
        self._sock.setblocking(False)
        self._marshal = MarshalRtnl()

    def fileno(self) -> int:
        return self._sock.fileno()

    def close(self) -> None:
        self._sock.close()

    def read(self) -> list[Event]:
        """What is queued now, for at most READ_SLICE seconds (never blocks). Lost
        events give one Resync, first in the list."""
        out: list[Event] = []
        lost = False
        deadline = time.monotonic() + READ_SLICE
        while time.monotonic() < deadline:
            try:
                data = self._sock.recv(1 << 16)
            except BlockingIOError:
                break
            except OSError as err:
                if err.errno == errno.ENOBUFS:
                    lost = True
                    continue
                raise
            for pos, length, kind, _, _ in raw.messages(data):
                if kind in (RTM_NEWLINK, RTM_DELLINK):
                    out.append(_event(data, pos, length, kind))
                elif kind in (RTM_NEWROUTE, RTM_DELROUTE) and _maybe_ra_default(data, pos):
                    for msg in self._marshal.parse(data[pos : pos + length]):
                        router = _router_event(msg, kind == RTM_NEWROUTE)
                        if router is not None:
                            out.append(router)
        return [Resync(), *out] if lost else out


def _maybe_ra_default(data: bytes, pos: int) -> bool:
    """What the route message's header alone says: a default route learned from an RA
    (the rest, table and gateway, is ra_default_router's)."""
    body = pos + raw.NLMSG.size
    return data[body + _RT_DST_LEN] == 0 and data[body + _RT_PROTOCOL] == RTPROT_RA


def ra_default_router(msg: Any) -> Optional[tuple[int, ipaddress.IPv6Address]]:
    """(oif, gateway) of a default route learned from a router advertisement in main;
    None for any other route. The one test of what an RA router is: the snapshot's
    dump and the daemon's events both use it."""
    table = msg.get_attr("RTA_TABLE")
    table = msg["table"] if table is None else table
    if msg["proto"] != RTPROT_RA or msg["dst_len"] != 0 or int(table) != TABLE_MAIN:
        return None
    gw, oif = msg.get_attr("RTA_GATEWAY"), msg.get_attr("RTA_OIF")
    if gw is None or oif is None:
        return None
    return int(oif), ipaddress.IPv6Address(gw)


def _router_event(msg: Any, new: bool) -> Optional[RouterEvent]:
    found = ra_default_router(msg)
    if found is None:
        return None
    oif, gw = found
    return RouterEvent(LinkChange.NEW if new else LinkChange.DEL, oif, str(gw))
