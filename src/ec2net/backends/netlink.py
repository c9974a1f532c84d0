"""Netlink backend: reads links/addresses/owned routes and rules from the kernel and
applies a ChangeSet directly over rtnetlink.

Messages are encoded and decoded by pyroute2's message classes; `netlink_batch` sends
them many per datagram with one ack each (see its docstring). This module turns the
decoded kernel messages into model values and model changes into requests. It imports
pyroute2, so the backend registry imports it lazily.

Ownership: routes and rules are ours when their protocol is `RTPROT_EC2NET`; deletes
carry that protocol too, so the kernel never matches a foreign object. Addresses have
no protocol; `addresses()` returns all global ones and the state record decides. Routes
and rules of any other protocol in ENI tables are reported as theirs (foreign.py); a
take-over's changes replace them in place or delete them whatever their protocol.
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
from dataclasses import dataclass
from types import TracebackType
from typing import Optional

from ec2net import cloudinit
from ec2net.backends import netlink_batch as nb
from ec2net.backends import netlink_links as links
from ec2net.backends.base import ApplyReport
from ec2net.backends.netlink_events import ra_default_router
from ec2net.check import Answer, OtherRule, Question
from ec2net.errors import ApplyFailed
from ec2net.foreign import Theirs
from ec2net.model import (
    RTPROT_EC2NET,
    TABLE_MAIN,
    AddressSpec,
    ChangeSet,
    Family,
    IPAddress,
    IPInterface,
    IPNetwork,
    Link,
    MtuSpec,
    Op,
    RouteKind,
    RouteSpec,
    RuleSpec,
    Scope,
    eni_table_of,
    is_eni_table,
)
from ec2net.snapshot import Snapshot
from ec2net.targets import Target

# Answers that mean "the object is already as wanted".
_DONE_ON_ADD = frozenset({errno.EEXIST})
_DONE_ON_DEL = frozenset({errno.ENOENT, errno.ESRCH, errno.EADDRNOTAVAIL})

_SCOPES = frozenset(int(s) for s in Scope)
# A route without RTA_PRIORITY: IPv4 reports none (0), IPv6 the kernel's 1024.
_DEFAULT_METRIC = {Family.V4: None, Family.V6: 1024}
_KINDS = frozenset(int(k) for k in RouteKind)
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


@dataclass(frozen=True)
class _LinkRow:
    index: int
    name: str
    mac: str
    up: bool
    kind: str  # link kind (veth, bridge...), "" for hardware
    master: Optional[int]
    mtu: int


def _collect_router(msg: nb.Message, routers: dict[int, list[ipaddress.IPv6Address]]) -> None:
    """A default route learned from a router advertisement, in main: its gateway."""
    router = ra_default_router(msg)
    if router is None:
        return
    found = routers.setdefault(router[0], [])
    if router[1] not in found:
        found.append(router[1])


def _route(msg: nb.Message, family: Family, names: dict[int, str]) -> Optional[RouteSpec]:
    """A unicast or local (AnyIP) route as a model value; None for the kernel's own local
    and broadcast routes and for kinds ec2net never makes (blackhole, multicast...)."""
    if msg["type"] not in _KINDS or msg["scope"] not in _SCOPES:
        return None
    if msg["type"] == RouteKind.LOCAL and msg["proto"] != RTPROT_EC2NET:
        return None  # the kernel's own local routes
    gw, src, oif = (msg.get_attr(k) for k in ("RTA_GATEWAY", "RTA_PREFSRC", "RTA_OIF"))
    metric = msg.get_attr("RTA_PRIORITY")
    if metric == _DEFAULT_METRIC[family]:
        metric = None  # what every planned route has
    return RouteSpec(
        table=_table(msg),
        dst=_network(family, msg.get_attr("RTA_DST"), msg["dst_len"]),
        ifname=names.get(int(oif), "") if oif else "",
        gateway=ipaddress.ip_address(gw) if gw else None,
        scope=Scope(msg["scope"]),
        src=ipaddress.ip_address(src) if src else None,
        kind=RouteKind(msg["type"]),
        metric=int(metric) if metric else None,
    )


class NetlinkBackend:
    """The Backend protocol over rtnetlink. One instance per thread (not thread-safe)."""

    name = "netlink"
    settle_timeout = 0.0
    primary_ok = True
    adds_own_objects = False

    def __init__(self, netns: Optional[str] = None, *, managed: bool = False) -> None:
        self.netns = netns
        self.managed = managed
        try:
            self._sock, self._dgram = _open_sockets(netns)
        except OSError as exc:
            raise nb.NetlinkUnavailable(f"rtnetlink socket ({netns or 'current'}): {exc}") from exc
        self._chan = nb.Channel(self._sock)
        self._link_marshal = links.LinkMarshal()  # the link dump decoded narrowed

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

    # -- reading --------------------------------------------------------------------

    def _link_dump(self) -> list[_LinkRow]:
        out = []
        for msg in self._chan.dump(nb.link_dump(), self._link_marshal):
            f = links.link_fields(msg)
            out.append(
                _LinkRow(
                    index=f.index,
                    name=f.name,
                    mac=f.mac,
                    up=bool(f.flags & nb.IFF_UP),
                    kind=f.kind,
                    master=f.master or None,
                    mtu=f.mtu,
                )
            )
        return out

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

    def _links(
        self, rows: Sequence[_LinkRow], routers: dict[int, tuple[ipaddress.IPv6Address, ...]]
    ) -> list[Link]:
        return [
            Link(
                r.index,
                r.name,
                r.mac,
                self._driver(r.index, r.name, r.mac) or r.kind,
                r.up,
                routers.get(r.index, ()),
                r.master,
                r.mtu,
            )
            for r in sorted(rows, key=lambda r: r.index)
        ]

    def links(self) -> list[Link]:
        return self._links(self._link_dump(), {})

    def present(self, index: int) -> bool:
        try:  # an ioctl in this process's namespace: no netlink socket, thread-safe
            socket.if_indextoname(index)
        except OSError:
            return False
        return True

    def link(self, name: str) -> Optional[Link]:
        return next((ln for ln in self.links() if ln.name == name), None)

    def snapshot(self) -> Snapshot:
        """One dump of links, of addresses, of routes per family and of rules per
        family (the IPv6 route dump also gives the routers learned from RAs). The route
        dumps are unfiltered: other programs' routes in ENI tables are reported too."""
        rows = self._link_dump()
        names = {r.index: r.name for r in rows}
        routes: set[RouteSpec] = set()
        theirs: set[Theirs] = set()
        routers: dict[int, list[ipaddress.IPv6Address]] = {}
        for family in (Family.V4, Family.V6):
            for msg in self._chan.dump(nb.route_dump(family, 0)):
                if family is Family.V6:
                    _collect_router(msg, routers)
                route = _route(msg, family, names)
                if route is None:
                    continue
                proto = int(msg["proto"])
                ours = proto == RTPROT_EC2NET
                in_eni_table = is_eni_table(route.table)
                # Managed: a network manager added our routes with its own protocol.
                if ours or (self.managed and in_eni_table):
                    routes.add(route)
                if not ours and (in_eni_table or cloudinit.is_table(route.table)):
                    theirs.add(Theirs(route, proto))
        rules, their_rules = self._rules()
        return Snapshot(
            links=tuple(self._links(rows, {i: tuple(r) for i, r in routers.items()})),
            addresses=self._addresses(names),
            routes=frozenset(routes),
            rules=frozenset(rules),
            theirs=frozenset(theirs | their_rules),
        )

    def set_up(self, ifname: str) -> bool:
        """Bring the link administratively up; True if it was down. A missing link is
        no change (the next snapshot shows it gone)."""
        for row in self._link_dump():
            if row.name != ifname:
                continue
            if row.up:
                return False
            err, reason = self._chan.exchange([nb.link_up_request(row.index)])[0]
            if err:
                raise ApplyFailed(f"{ifname}: set link up: {reason}")
            return True
        return False

    def _addresses(self, names: dict[int, str]) -> dict[int, frozenset[AddressSpec]]:
        out: dict[int, set[AddressSpec]] = {}
        for msg in self._chan.dump(nb.address_dump(0)):
            index = int(msg["index"])
            if msg["scope"] != Scope.UNIVERSE or index not in names:
                continue
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
            spec = AddressSpec(
                names[index],
                address,
                bool(flags & nb.IFA_F_NOPREFIXROUTE),
                permanent=bool(flags & nb.IFA_F_PERMANENT),
            )
            out.setdefault(index, set()).add(spec)
        return {index: frozenset(found) for index, found in out.items()}

    def _rules(self) -> tuple[set[RuleSpec], set[Theirs]]:
        """Our rules, and other programs' rules into ENI tables."""
        ours: set[RuleSpec] = set()
        theirs: set[Theirs] = set()
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
                # Kernels before 4.17 report no protocol: such a rule is nobody's.
                proto = msg.get_attr("FRA_PROTOCOL")
                eni_table = eni_table_of(rule)
                # Managed: a network manager added our rules with its own protocol.
                if proto == RTPROT_EC2NET or (self.managed and eni_table is not None):
                    ours.add(rule)
                elsewhere = eni_table is None and cloudinit.is_table(rule.table)
                if (
                    proto is not None
                    and proto != RTPROT_EC2NET
                    and (eni_table is not None or elsewhere)
                ):
                    theirs.add(Theirs(rule, int(proto)))
        return ours, theirs

    # -- what `ec2net check` asks ------------------------------------------------------

    def lookup(self, questions: Sequence[Question]) -> list[Answer]:
        """The kernel's route lookup for each question (many per datagram)."""
        names = {r.index: r.name for r in self._link_dump()}
        index = {name: i for i, name in names.items()}
        requests = []
        for q in questions:
            if q.inbound:  # arriving on the ENI from q.dest, for q.source
                requests.append(nb.route_get(q.source, q.dest, iif=index.get(q.ifname, 0)))
            else:
                requests.append(nb.route_get(q.dest, q.source))
        answers = []
        for got in self._chan.query(requests):
            if isinstance(got, tuple):
                answers.append(Answer(error=got[0], reason=got[1]))
                continue
            oif = got.get_attr("RTA_OIF")
            answers.append(Answer(table=_table(got), oif=names.get(int(oif), "") if oif else ""))
        return answers

    def main_routes(self) -> list[RouteSpec]:
        """Routes of the main table, any protocol (other programs' among them)."""
        names = {r.index: r.name for r in self._link_dump()}
        out = []
        for family in (Family.V4, Family.V6):
            for msg in self._chan.dump(nb.route_dump(family, 0)):
                route = _route(msg, family, names)
                if route is not None and route.table == TABLE_MAIN:
                    out.append(route)
        return out

    def other_rules(self) -> list[OtherRule]:
        """Every rule that is not ec2net's, for messages."""
        out = []
        for family in (Family.V4, Family.V6):
            for msg in self._chan.dump(nb.rule_dump(family)):
                proto = msg.get_attr("FRA_PROTOCOL")
                if proto == RTPROT_EC2NET:
                    continue
                prio = int(msg.get_attr("FRA_PRIORITY") or 0)
                src = msg.get_attr("FRA_SRC")
                net = _network(family, src, msg["src_len"]) if src else None
                table = _table(msg, "FRA_TABLE")
                mark = msg.get_attr("FRA_FWMARK")
                text = f"rule pref {prio} from {net or 'all'}"
                text += f" fwmark {mark:#x}" if mark else ""
                text += f" lookup {table}" + (f" proto {proto}" if proto is not None else "")
                out.append(OtherRule(prio, table, net, text))
        return out

    def failed_neighbours(self) -> set[tuple[str, IPAddress]]:
        """(interface, address) of every IPv4 neighbour entry in state FAILED."""
        names = {r.index: r.name for r in self._link_dump()}
        out = set()
        for msg in self._chan.dump(nb.neigh_dump(Family.V4)):
            dst = msg.get_attr("NDA_DST")
            if dst and int(msg["state"]) & nb.NUD_FAILED and int(msg["ifindex"]) in names:
                out.add((names[int(msg["ifindex"])], ipaddress.ip_address(dst)))
        return out

    # -- apply ------------------------------------------------------------------------

    def blocked(self, ifname: str) -> Optional[str]:
        return None

    def apply(self, changes: ChangeSet, targets: Sequence[Target] = ()) -> ApplyReport:
        """Apply in order, all in a few datagrams; one verdict per change."""
        report = ApplyReport()
        if not changes:
            return report
        # The converge's snapshot resolved each target's link: no dump needed, and the
        # index stays right even if the link is renamed meanwhile.
        indices = {t.ifname: t.link.index for t in targets if t.link is not None}
        names = {c.obj.ifname for c in changes.changes if not isinstance(c.obj, RuleSpec)}
        if not names <= indices.keys():  # e.g. leftovers of a table no target holds
            indices = {row.name: row.index for row in self._link_dump()} | indices
        requests: list[nb.Request] = []
        verdicts: dict[int, nb.Verdict] = {}  # position in changes -> answer known now
        for pos, change in enumerate(changes.changes):
            obj = change.obj
            # Managed: a network manager added our objects with its own protocol; and
            # another tool's objects are deleted whatever theirs.
            del_proto = change.proto if change.theirs else 0 if self.managed else RTPROT_EC2NET
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
                requests.append(nb.address_request(change.op, obj, index, replace=change.theirs))
            elif isinstance(obj, MtuSpec):
                requests.append(nb.link_mtu_request(index, obj.mtu))
            else:
                requests.append(
                    nb.route_request(change.op, obj, index, del_proto, replace=change.theirs)
                )
        answers = iter(self._chan.exchange(requests))
        for pos, change in enumerate(changes.changes):
            err, reason = verdicts[pos] if pos in verdicts else next(answers)
            done = _DONE_ON_ADD if change.op is Op.ADD else _DONE_ON_DEL
            if err == 0 or err in done:
                report.applied.append(change)
            else:
                report.failed.append((change, reason))
        return report
