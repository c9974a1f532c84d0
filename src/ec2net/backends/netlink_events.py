"""rtnetlink link events for the watch daemon.

A plain netlink socket joined to RTMGRP_LINK and RTMGRP_IPV6_ROUTE, read without
blocking from the daemon's select loop; pyroute2 only decodes the messages. Of the IPv6
routes only the default routes learned from router advertisements (main table, proto
ra) become events: an ENI's table routes via the link's RA router, which often arrives
after the ENI was configured (until then they go via fe80:ec2::1). IPv4 routes and
addresses are never joined, so bulk programming does not flood the socket. A lost
event (ENOBUFS: the kernel dropped messages because we were slow) is reported as
`Resync`, on which the daemon re-reads every link (`dump_links`).

Link messages are decoded as netlink_links.LinkMsg (pyroute2's ifinfmsg narrowed to
the attributes the daemon needs): a burst of container links must not outrun the
reader. Route messages are decoded as their header and fixed fields only (`RouteHeader`)
and decoded whole only when those say they can be an RA default route: a routing
daemon programming thousands of IPv6 routes costs no attribute decoding.
"""

from __future__ import annotations

import enum
import errno
import ipaddress
import os
import socket
import time
from dataclasses import dataclass
from typing import Any, ClassVar, Optional, Union

from pyroute2.netlink import NETLINK_ROUTE, NLMSG_DONE, NLMSG_ERROR
from pyroute2.netlink.rtnl import (
    RTM_DELROUTE,
    RTM_NEWLINK,
    RTM_NEWROUTE,
    RTMGRP_IPV6_ROUTE,
    RTMGRP_LINK,
    rt_proto,
)
from pyroute2.netlink.rtnl.rtmsg import rtmsg

from ec2net.backends import netlink_links as links
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

DUMP_TIMEOUT = 5.0


class RouteHeader(rtmsg):  # type: ignore[misc]  # pyroute2 is untyped
    """rtmsg's header and fixed fields (dst_len, proto, ...), its attributes left
    undecoded: an empty nla_map makes pyroute2 skip the attribute chain."""

    nla_map = ()


class EventMarshal(links.LinkMarshal):
    """The event socket's messages: links narrowed, routes as their header only."""

    msg_map: ClassVar[dict[int, Any]] = {
        **links.LinkMarshal.msg_map,
        RTM_NEWROUTE: RouteHeader,
        RTM_DELROUTE: RouteHeader,
    }


class RouteEventMarshal(EventMarshal):
    """After a loss: link messages as their netlink header only (a bare nlmsg), as the
    re-read of every link supersedes them; routes as in EventMarshal."""

    msg_map: ClassVar[dict[int, Any]] = {RTM_NEWROUTE: RouteHeader, RTM_DELROUTE: RouteHeader}


def _event(msg: links.Message) -> LinkEvent:
    f = links.link_fields(msg)
    change = LinkChange.NEW if msg["header"]["type"] == RTM_NEWLINK else LinkChange.DEL
    return LinkEvent(change, f.index, f.name, f.mac, f.kind, f.master)


def dump_links() -> list[LinkEvent]:
    """Every link in this network namespace, as NEW LinkEvents (one RTM_GETLINK dump
    on a socket of its own)."""
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_ROUTE) as sock:
        sock.settimeout(DUMP_TIMEOUT)
        sock.bind((0, 0))
        seq = int(time.monotonic() * 1000) & 0x7FFFFFFF
        sock.send(links.link_dump_request(seq))
        marshal = links.LinkMarshal()
        out: list[LinkEvent] = []
        while True:
            for msg in marshal.parse(sock.recv(1 << 16)):
                kind = msg["header"]["type"]
                if kind == NLMSG_DONE:
                    return out
                if kind == NLMSG_ERROR:
                    code = links.error_code(msg)
                    raise OSError(code, f"link dump: {os.strerror(code)}")
                if kind == RTM_NEWLINK:
                    out.append(_event(msg))


class LinkEvents:
    def __init__(self) -> None:
        self._sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_ROUTE)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF)
        self._sock.bind((0, RTMGRP_LINK | RTMGRP_IPV6_ROUTE))
        self._sock.setblocking(False)
        self._marshal = EventMarshal()
        self._routes_only = RouteEventMarshal()

    def fileno(self) -> int:
        return self._sock.fileno()

    def close(self) -> None:
        self._sock.close()

    def read(self) -> list[Event]:
        """What is queued now, for at most READ_SLICE seconds (never blocks). Lost
        events give one Resync, first in the list, and no link events: the re-read of
        every link the Resync asks for supersedes them, so once a loss is seen the link
        messages of this read are not decoded (most of a storm's reading)."""
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
                    if not lost:
                        out = [ev for ev in out if isinstance(ev, RouterEvent)]
                    lost = True
                    continue
                raise
            out += decode_events(self._routes_only if lost else self._marshal, data)
        return [Resync(), *out] if lost else out


def decode_events(marshal: EventMarshal, data: bytes) -> list[Event]:
    """The events in what one recv() returned."""
    out: list[Event] = []
    for msg in marshal.parse(data):
        kind = msg["header"]["type"]
        if isinstance(msg, links.LinkMsg):
            out.append(_event(msg))
        elif kind in (RTM_NEWROUTE, RTM_DELROUTE) and _maybe_ra_default(msg):
            whole = rtmsg(msg.data, offset=msg.offset)
            whole.decode()
            router = _router_event(whole, kind == RTM_NEWROUTE)
            if router is not None:
                out.append(router)
    return out


def _maybe_ra_default(header: links.Message) -> bool:
    """What a RouteHeader alone says: a default route learned from an RA (the rest,
    table and gateway, is ra_default_router's)."""
    return bool(header["dst_len"] == 0 and header["proto"] == RTPROT_RA)


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
