"""rtnetlink link events for the watch daemon.

A plain netlink socket joined to RTMGRP_LINK only (so bulk address/route programming
never floods it), read without blocking from the daemon's select loop; pyroute2 only
decodes the messages. A lost event (ENOBUFS: the kernel dropped messages because we
were slow) is reported as `Resync`, on which the daemon re-reads every link.
"""

from __future__ import annotations

import enum
import errno
import socket
from dataclasses import dataclass
from typing import Union

from pyroute2.netlink import NETLINK_ROUTE
from pyroute2.netlink.rtnl import RTM_DELLINK, RTM_NEWLINK, RTMGRP_LINK
from pyroute2.netlink.rtnl.marshal import MarshalRtnl

RCVBUF = 1 << 20


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


@dataclass(frozen=True)
class Resync:
    """Events were lost; the receiver must re-read all links."""


Event = Union[LinkEvent, Resync]


class LinkEvents:
    def __init__(self) -> None:
        self._sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_ROUTE)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF)
        self._sock.bind((0, RTMGRP_LINK))
        self._sock.setblocking(False)
        self._marshal = MarshalRtnl()

    def fileno(self) -> int:
        return self._sock.fileno()

    def close(self) -> None:
        self._sock.close()

    def read(self) -> list[Event]:
        """Everything queued now (never blocks)."""
        out: list[Event] = []
        while True:
            try:
                data = self._sock.recv(1 << 16)
            except BlockingIOError:
                return out
            except OSError as err:
                if err.errno == errno.ENOBUFS:
                    out.append(Resync())
                    continue
                raise
            for msg in self._marshal.parse(data):
                kind = msg["header"]["type"]
                if kind not in (RTM_NEWLINK, RTM_DELLINK):
                    continue
                out.append(
                    LinkEvent(
                        LinkChange.NEW if kind == RTM_NEWLINK else LinkChange.DEL,
                        int(msg["index"]),
                        str(msg.get_attr("IFLA_IFNAME") or ""),
                        str(msg.get_attr("IFLA_ADDRESS") or "").lower(),
                    )
                )
