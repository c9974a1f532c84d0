"""rtnetlink link events for the watch daemon.

A plain netlink socket joined to RTMGRP_LINK and RTMGRP_IPV6_ROUTE, read without
blocking from the daemon's select loop; pyroute2 only decodes the messages. Of the IPv6
routes only the default routes learned from router advertisements (main table, proto
ra) become events: an ENI's table routes via the link's RA router, which often arrives
after the ENI was configured (until then they go via fe80:ec2::1). IPv4 routes and
addresses are never joined, so bulk programming does not flood the socket. A lost
event (ENOBUFS: the kernel dropped messages because we were slow) is reported as
`Resync`, on which the daemon re-reads every link.
"""

from __future__ import annotations

import enum
import errno
import ipaddress
import socket
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
            for msg in self._marshal.parse(data):
                kind = msg["header"]["type"]
                if kind in (RTM_NEWROUTE, RTM_DELROUTE):
                    router = _router_event(msg, kind == RTM_NEWROUTE)
                    if router is not None:
                        out.append(router)
                    continue
                if kind not in (RTM_NEWLINK, RTM_DELLINK):
                    continue
                info = msg.get_attr("IFLA_LINKINFO")
                out.append(
                    LinkEvent(
                        LinkChange.NEW if kind == RTM_NEWLINK else LinkChange.DEL,
                        int(msg["index"]),
                        str(msg.get_attr("IFLA_IFNAME") or ""),
                        str(msg.get_attr("IFLA_ADDRESS") or "").lower(),
                        str(info.get_attr("IFLA_INFO_KIND") or "") if info is not None else "",
                        int(msg.get_attr("IFLA_MASTER") or 0),
                    )
                )
        return [Resync(), *out] if lost else out


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
