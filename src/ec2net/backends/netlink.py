"""Netlink backend: reads links/addresses/owned routes and rules from the kernel and
applies a ChangeSet directly over rtnetlink.

Messages are encoded and decoded by pyroute2's message classes; `netlink_batch` sends
them many per datagram with one ack each (see its docstring). This module turns the
decoded kernel messages into model values and model changes into requests. It imports
pyroute2, so the backend registry imports it lazily.

Ownership: routes and rules are ours when their protocol is `RTPROT_EC2NET`; deletes
carry that protocol too, so the kernel never matches a foreign object. Addresses have
no protocol; `addresses()` returns all global ones and the state record decides.
Under a file backend a network manager adds our objects with its own protocol
(NetworkManager cannot set one), so there `managed` also counts everything in the
ENI tables and the ENIs' main-table rules as ours, and deletes match any protocol. The
diff scopes every delete to one ENI's table and priorities, so nothing else matches.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import ipaddress
import os
import socket
import struct
from collections.abc import Sequence
from types import TracebackType
from typing import Optional

from ec2net.backends import netlink_batch as nb
from ec2net.backends.base import ApplyReport, Intent
from ec2net.errors import ApplyFailed
from ec2net.model import (
    PRIO_MAIN,
    RTPROT_EC2NET,
    TABLE_BASE,
    TABLE_MAIN,
    AddressSpec,
    ChangeSet,
    Family,
    IPInterface,
    IPNetwork,
    Link,
    Op,
    RouteSpec,
    RuleSpec,
    Scope,
    is_eni_table,
)

# Answers that mean "the object is already as wanted".
_DONE_ON_ADD = frozenset({errno.EEXIST})
_DONE_ON_DEL = frozenset({errno.ENOENT, errno.ESRCH, errno.EADDRNOTAVAIL})

_SCOPES = frozenset(int(s) for s in Scope)
_CLONE_NEWNET = 0x40000000
_SIOCETHTOOL = 0x8946
_ETHTOOL_GDRVINFO = 0x00000003
_DRVINFO_SIZE = 196  # struct ethtool_drvinfo


def _setns(fd: int) -> None:
    setns = getattr(os, "setns", None)  # Python >= 3.12
    if setns is not None:
        setns(fd, _CLONE_NEWNET)
        return
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.setns(fd, _CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def _open_sockets(netns: Optional[str]) -> tuple[socket.socket, socket.socket]:
    """The rtnetlink socket plus a datagram socket for ethtool ioctls, both created in
    `netns` (a name under /run/netns) or the current namespace. Only the calling thread
    switches, and it switches back before returning."""
    if netns is None:
        return nb.open_socket(), socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    target = os.open(os.path.join("/run/netns", netns), os.O_RDONLY | os.O_CLOEXEC)
    # thread-self: /proc/self/ns/net is the main thread's namespace, not ours.
    saved = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        _setns(target)
        try:
            rt = nb.open_socket()
            try:
                dgram = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            except BaseException:
                rt.close()
                raise
        finally:
            _setns(saved)
    finally:
        os.close(target)
        os.close(saved)
    return rt, dgram


def _network(family: int, text: Optional[str], prefixlen: int) -> IPNetwork:
    if family == Family.V4:
        return ipaddress.IPv4Network((text or "0.0.0.0", prefixlen), strict=False)
    return ipaddress.IPv6Network((text or "::", prefixlen), strict=False)


def _table(msg: nb.Message, attr: str = "RTA_TABLE") -> int:
    """The full table number: the attribute when present, else the header byte."""
    table = msg.get_attr(attr)
    return int(msg["table"] if table is None else table)


def _managed_rule(rule: RuleSpec) -> bool:
    """An ENI's rule as a network manager added it (without our protocol)."""
    if is_eni_table(rule.table):
        return True
    main = rule.table == TABLE_MAIN and rule.src is not None
    return (
        main
        and rule.suppress_prefixlength == 0
        and is_eni_table(rule.priority - PRIO_MAIN + TABLE_BASE)
    )


class NetlinkBackend:
    """NetState + Applier over rtnetlink. One instance per thread (not thread-safe)."""

    name = "netlink"
    settle_timeout = 0.0
    primary_ok = True

    def __init__(self, netns: Optional[str] = None, *, managed: bool = False) -> None:
        self.netns = netns
        self.managed = managed
        try:
            self._sock, self._dgram = _open_sockets(netns)
        except OSError as exc:
            raise nb.NetlinkUnavailable(f"rtnetlink socket ({netns or 'current'}): {exc}") from exc
        self._chan = nb.Channel(self._sock)

    def close(self) -> None:
        self._sock.close()
        self._dgram.close()

    def __enter__(self) -> NetlinkBackend:
        return self

    def __exit__(
        self,
        exc_type: Optional[type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        self.close()

    # -- links ----------------------------------------------------------------------

    def _link_names(self) -> dict[int, tuple[str, str, bool, str]]:
        """index -> (name, mac, up, link kind)."""
        out: dict[int, tuple[str, str, bool, str]] = {}
        for msg in self._chan.dump(nb.link_dump()):
            name = str(msg.get_attr("IFLA_IFNAME") or "")
            mac = str(msg.get_attr("IFLA_ADDRESS") or "").lower()
            info = msg.get_attr("IFLA_LINKINFO")
            kind = str(info.get_attr("IFLA_INFO_KIND") or "") if info is not None else ""
            out[int(msg["index"])] = (name, mac, bool(int(msg["flags"]) & nb.IFF_UP), kind)
        return out

    def _ipv6_routers(self) -> dict[int, tuple[ipaddress.IPv6Address, ...]]:
        routers: dict[int, list[ipaddress.IPv6Address]] = {}
        for msg in self._chan.dump(nb.route_dump(Family.V6, nb.RTPROT_RA)):
            if msg["proto"] != nb.RTPROT_RA or msg["dst_len"] != 0 or _table(msg) != TABLE_MAIN:
                continue
            gw, oif = msg.get_attr("RTA_GATEWAY"), msg.get_attr("RTA_OIF")
            if gw is None or oif is None:
                continue
            addr = ipaddress.IPv6Address(gw)
            found = routers.setdefault(int(oif), [])
            if addr not in found:
                found.append(addr)
        return {index: tuple(found) for index, found in routers.items()}

    def _driver(self, index: int, name: str, mac: str) -> str:
        """The bound driver's name as udev's ID_NET_DRIVER would say it, or ""."""
        # /sys shows the namespace of whoever mounted it: trust it only when the entry
        # is this very device (same index and MAC).
        base = os.path.join("/sys/class/net", name)
        try:
            with open(os.path.join(base, "ifindex")) as f:
                same = int(f.read()) == index
            with open(os.path.join(base, "address")) as f:
                same = same and f.read().strip() == mac
            if same:
                return os.path.basename(os.readlink(os.path.join(base, "device", "driver")))
        except (OSError, ValueError):
            pass
        # ethtool asks the device itself, in our namespace; virtual links answer too.
        info = bytearray(_DRVINFO_SIZE)
        struct.pack_into("=I", info, 0, _ETHTOOL_GDRVINFO)
        cbuf = (ctypes.c_char * _DRVINFO_SIZE).from_buffer(info)
        ifreq = struct.pack("16sP16x", name.encode()[:15], ctypes.addressof(cbuf))  # ifreq
        try:
            fcntl.ioctl(self._dgram.fileno(), _SIOCETHTOOL, ifreq)
        except OSError:
            return ""
        finally:
            del cbuf  # release the export so `info` may be freed
        return bytes(info[4:36]).split(b"\0", 1)[0].decode(errors="replace")

    def links(self) -> list[Link]:
        routers = self._ipv6_routers()
        out = []
        for index, (name, mac, up, kind) in sorted(self._link_names().items()):
            driver = self._driver(index, name, mac) or kind
            out.append(Link(index, name, mac, driver, up, routers.get(index, ())))
        return out

    def set_up(self, ifname: str) -> bool:
        """Bring the link administratively up; True if it was down. A missing link is
        no change (the caller finds out from `link()`)."""
        for index, (name, _mac, up, _kind) in self._link_names().items():
            if name != ifname:
                continue
            if up:
                return False
            err, reason = self._chan.exchange([nb.link_up_request(index)])[0]
            if err:
                raise ApplyFailed(f"{ifname}: set link up: {reason}")
            return True
        return False

    def link(self, name: str) -> Optional[Link]:
        for found in self.links():
            if found.name == name:
                return found
        return None

    # -- addresses, routes, rules ---------------------------------------------------

    def addresses(self, ifname: str) -> set[AddressSpec]:
        index = next((i for i, v in self._link_names().items() if v[0] == ifname), None)
        if index is None:
            return set()
        out: set[AddressSpec] = set()
        for msg in self._chan.dump(nb.address_dump(index)):
            if msg["index"] != index or msg["scope"] != Scope.UNIVERSE:
                continue  # the kernel filters by index only under strict checking
            text = msg.get_attr("IFA_LOCAL") or msg.get_attr("IFA_ADDRESS")
            if text is None:
                continue
            flags = msg.get_attr("IFA_FLAGS")
            flags = int(msg["flags"] if flags is None else flags)
            address: IPInterface
            if msg["family"] == Family.V4:
                address = ipaddress.IPv4Interface((text, msg["prefixlen"]))
            else:
                address = ipaddress.IPv6Interface((text, msg["prefixlen"]))
                if address.ip.is_link_local:
                    continue
            out.add(AddressSpec(ifname, address, bool(flags & nb.IFA_F_NOPREFIXROUTE)))
        return out

    def owned_routes(self) -> set[RouteSpec]:
        names = {index: v[0] for index, v in self._link_names().items()}
        out: set[RouteSpec] = set()
        for family in (Family.V4, Family.V6):
            proto = 0 if self.managed else RTPROT_EC2NET  # 0: no kernel-side filter
            for msg in self._chan.dump(nb.route_dump(family, proto)):
                scope = msg["scope"]
                if msg["type"] != nb.RTN_UNICAST:
                    continue
                if msg["proto"] != RTPROT_EC2NET and not (
                    self.managed and is_eni_table(_table(msg))
                ):
                    continue  # not ours, or an unfiltered dump (kernel before 4.20)
                if scope not in _SCOPES:
                    continue
                gw, src, oif = (msg.get_attr(k) for k in ("RTA_GATEWAY", "RTA_PREFSRC", "RTA_OIF"))
                out.add(
                    RouteSpec(
                        table=_table(msg),
                        dst=_network(family, msg.get_attr("RTA_DST"), msg["dst_len"]),
                        ifname=names.get(int(oif), "") if oif else "",
                        gateway=ipaddress.ip_address(gw) if gw else None,
                        scope=Scope(scope),
                        src=ipaddress.ip_address(src) if src else None,
                    )
                )
        return out

    def owned_rules(self) -> set[RuleSpec]:
        out: set[RuleSpec] = set()
        for family in (Family.V4, Family.V6):
            for msg in self._chan.dump(nb.rule_dump(family)):
                suppress = msg.get_attr("FRA_SUPPRESS_PREFIXLEN")
                src = msg.get_attr("FRA_SRC")
                rule = RuleSpec(
                    priority=int(msg.get_attr("FRA_PRIORITY") or 0),
                    family=family,
                    table=_table(msg, "FRA_TABLE"),
                    src=_network(family, src, msg["src_len"]) if src else None,
                    # The kernel reports "unset" as 0xffffffff (-1).
                    suppress_prefixlength=(
                        int(suppress)
                        if suppress is not None and suppress not in (0xFFFFFFFF, -1)
                        else None
                    ),
                )
                if msg.get_attr("FRA_PROTOCOL") == RTPROT_EC2NET or (
                    self.managed and _managed_rule(rule)
                ):
                    out.add(rule)
        return out

    # -- apply ------------------------------------------------------------------------

    def blocked(self, ifname: str) -> Optional[str]:
        return None

    def apply(self, changes: ChangeSet, intents: Sequence[Intent] = ()) -> ApplyReport:
        """Apply in order, all in a few datagrams; one verdict per change."""
        report = ApplyReport()
        if not changes:
            return report
        indices = {v[0]: index for index, v in self._link_names().items()}
        requests: list[nb.Request] = []
        verdicts: dict[int, nb.Verdict] = {}  # position in changes -> answer known now
        # Managed: a network manager added our objects with its own protocol.
        del_proto = 0 if self.managed else RTPROT_EC2NET
        for pos, change in enumerate(changes.changes):
            obj = change.obj
            if isinstance(obj, RuleSpec):
                requests.append(nb.rule_request(change.op, obj, del_proto))  # needs no device
                continue
            index = indices.get(obj.ifname)
            if index is None:
                if change.op is Op.DEL:
                    # Addresses and routes vanish with their device.
                    verdicts[pos] = nb.OK
                else:
                    verdicts[pos] = (errno.ENODEV, f"ENODEV: no interface {obj.ifname}")
                continue
            if isinstance(obj, AddressSpec):
                requests.append(nb.address_request(change.op, obj, index))
            else:
                requests.append(nb.route_request(change.op, obj, index, del_proto))
        answers = iter(self._chan.exchange(requests))
        for pos, change in enumerate(changes.changes):
            err, reason = verdicts[pos] if pos in verdicts else next(answers)
            done = _DONE_ON_ADD if change.op is Op.ADD else _DONE_ON_DEL
            if err == 0 or err in done:
                report.applied.append(change)
            else:
                report.failed.append((change, reason))
        return report
