"""rtnetlink link events for the watch daemon.

A plain netlink socket joined to RTMGRP_LINK only (so bulk address/route programming
never floods it), read without blocking from the daemon's select loop; pyroute2 only
decodes the messages. A lost event (ENOBUFS: the kernel dropped messages because we
were slow) is reported as `Resync`, on which the daemon re-reads every link.
"""

from __future__ import annotations

import errno
import socket
from dataclasses import dataclass
from typing import Union

from pyroute2.netlink.rtnl.marshal import MarshalRtnl

NETLINK_ROUTE = 0
RTMGRP_LINK = 0x1
RTM_NEWLINK = 16
RTM_DELLINK = 17
RCVBUF = 1 << 20


@dataclass(frozen=True)
class LinkEvent:
    kind: str  # "new" or "del"
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
                        "new" if kind == RTM_NEWLINK else "del",
                        int(msg["index"]),
                        str(msg.get_attr("IFLA_IFNAME") or ""),
                        str(msg.get_attr("IFLA_ADDRESS") or "").lower(),
                    )
                )
