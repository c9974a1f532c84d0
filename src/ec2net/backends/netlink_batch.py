"""Pipelined rtnetlink requests and dumps behind `NetlinkBackend`.

Every message is encoded and decoded by pyroute2's message classes (`rtmsg`, `fibmsg`,
`ifaddrmsg`, `ifinfmsg`; `MarshalRtnl` for everything received); this module only
batches them. The socket is a plain rtnetlink socket so that many requests go out per
`sendmsg` (the kernel handles every message of one datagram in order, inside the call)
and each gets its own NLMSG_ERROR ack, matched by sequence number.

Cost: pyroute2 encodes one whole request in ~100 us (0.9) or ~50 us (0.7), more than
the kernel takes to apply it, and a bulk apply sends thousands that differ only in a few
values. So each request is a frozen `Request` (class, type, flags, fields, attributes),
and `Encoder` has pyroute2 encode each distinct part once: the header and fixed fields
per shape, and each attribute per value (a rule's table, priority and protocol repeat
across hundreds of rules). A request's bytes are those parts joined, with only the
header's length and sequence number filled in, at the offsets pyroute2's own header
definition gives. The result is byte for byte what pyroute2's `encode()` makes of the
whole message (tests/unit/test_netlink_encoder.py checks it on both versions).

Acks that overflow the receive buffer are lost (ENOBUFS): the unacknowledged requests
are sent again, which is safe because an add that already happened answers EEXIST and
a delete answers ENOENT/ESRCH. NETLINK_CAP_ACK stays off: pyroute2 finds the extended
ack text only behind a full copy of the request.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import os
import socket
from collections.abc import Sequence
from typing import Any, Optional

from pyroute2.netlink import (
    NETLINK_EXT_ACK,
    NETLINK_GET_STRICT_CHK,
    NLM_F_ACK,
    NLM_F_CREATE,
    NLM_F_DUMP,
    NLM_F_DUMP_INTR,
    NLM_F_EXCL,
    NLM_F_REPLACE,
    NLM_F_REQUEST,
    NLMSG_DONE,
    NLMSG_ERROR,
    SOL_NETLINK,
)
from pyroute2.netlink.rtnl import (
    RTM_DELADDR,
    RTM_DELROUTE,
    RTM_DELRULE,
    RTM_GETADDR,
    RTM_GETLINK,
    RTM_GETNEIGH,
    RTM_GETROUTE,
    RTM_GETRULE,
    RTM_NEWADDR,
    RTM_NEWLINK,
    RTM_NEWROUTE,
    RTM_NEWRULE,
    rt_proto,
    rt_type,
)
from pyroute2.netlink.rtnl.fibmsg import FR_ACT_TO_TBL, fibmsg
from pyroute2.netlink.rtnl.ifaddrmsg import (
    IFA_F_NODAD,
    IFA_F_NOPREFIXROUTE,
    IFA_F_PERMANENT,
    ifaddrmsg,
)
from pyroute2.netlink.rtnl.ifinfmsg import IFF_UP, ifinfmsg
from pyroute2.netlink.rtnl.marshal import MarshalRtnl
from pyroute2.netlink.rtnl.ndmsg import NUD_FAILED, ndmsg
from pyroute2.netlink.rtnl.rtmsg import rtmsg

from ec2net.backends.netlink_encode import Attr, Encoder, Request
from ec2net.errors import Ec2NetError
from ec2net.model import (
    RTPROT_EC2NET,
    AddressSpec,
    Family,
    IPAddress,
    Op,
    RouteSpec,
    RuleSpec,
    Scope,
    family_of,
)

# Message types, flags and socket options as pyroute2 exports them (the same names in
# 0.7 and 0.9); re-exported for netlink.py.
# SO_*BUFFORCE (asm-generic/socket.h) are in neither pyroute2 nor Python < 3.13's socket.
SO_RCVBUFFORCE = 33
SO_SNDBUFFORCE = 32
RTN_UNICAST: int = rt_type["unicast"]
RTPROT_RA: int = rt_proto["ra"]
F_ADD = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL
F_DEL = NLM_F_REQUEST | NLM_F_ACK
# A take-over: the object with the same key (another tool's) becomes ours in place.
F_REPLACE = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE
# linux/rtnetlink.h (not in pyroute2): a route lookup's answer names the table the
# lookup took (rtm_table / RTA_TABLE), not the route's own.
RTM_F_LOOKUP_TABLE = 0x1000

__all__ = [
    # pyroute2's constants are re-exported: netlink.py reads them as nb.NAME
    "FR_ACT_TO_TBL",
    "F_ADD",
    "F_DEL",
    "F_REPLACE",
    "IFA_F_NODAD",
    "IFA_F_NOPREFIXROUTE",
    "IFA_F_PERMANENT",
    "IFF_UP",
    "NLMSG_DONE",
    "NLMSG_ERROR",
    "NLM_F_ACK",
    "NLM_F_CREATE",
    "NLM_F_DUMP",
    "NLM_F_DUMP_INTR",
    "NLM_F_EXCL",
    "NLM_F_REPLACE",
    "NLM_F_REQUEST",
    "NUD_FAILED",
    "OK",
    "RTM_DELADDR",
    "RTM_DELROUTE",
    "RTM_DELRULE",
    "RTM_GETADDR",
    "RTM_GETLINK",
    "RTM_GETROUTE",
    "RTM_GETRULE",
    "RTM_NEWADDR",
    "RTM_NEWLINK",
    "RTM_NEWROUTE",
    "RTM_NEWRULE",
    "RTN_UNICAST",
    "RTPROT_RA",
    "Channel",
    "Message",
    "NetlinkUnavailable",
    "Request",
    "Verdict",
    "ack_verdict",
    "address_dump",
    "address_request",
    "link_dump",
    "link_up_request",
    "neigh_dump",
    "open_socket",
    "route_dump",
    "route_get",
    "route_request",
    "rule_dump",
    "rule_request",
]

Message = Any  # a decoded pyroute2 message
Verdict = tuple[int, str]  # (errno, reason); errno 0 = done
OK: Verdict = (0, "")

_RECV_SIZE = 1 << 20
_ACK_TRUESIZE = 1024  # kernel memory charged per queued ack, rounded up
_MAX_RETRIES = 5


class NetlinkUnavailable(Ec2NetError):
    """The rtnetlink socket itself failed (not one object): nothing can be applied."""

    retryable = True


def open_socket() -> socket.socket:
    """An rtnetlink socket in the calling thread's network namespace, with buffers big
    enough to keep a few thousand acks in flight."""
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
    try:
        sock.bind((0, 0))
        for force, plain in (
            (SO_RCVBUFFORCE, socket.SO_RCVBUF),
            (SO_SNDBUFFORCE, socket.SO_SNDBUF),
        ):
            try:
                sock.setsockopt(socket.SOL_SOCKET, force, 8 << 20)
            except PermissionError:
                sock.setsockopt(socket.SOL_SOCKET, plain, 8 << 20)  # capped at rmem_max
        for opt in (NETLINK_EXT_ACK, NETLINK_GET_STRICT_CHK):
            # Older kernels: no error text, unfiltered dumps; the callers filter too.
            with contextlib.suppress(OSError):
                sock.setsockopt(SOL_NETLINK, opt, 1)
        sock.settimeout(10.0)
    except BaseException:
        sock.close()
        raise
    return sock


def ack_verdict(msg: Message) -> Verdict:
    """The answer an NLMSG_ERROR carries. pyroute2 0.7 decodes a plain ack as `nlmsg`
    and 0.9 as `nlmsgerr`; both put the error, if any, in header['error']."""
    exc = msg["header"].get("error")
    if exc is None:
        return OK
    code = getattr(exc, "code", None) or getattr(exc, "errno", None)
    if not isinstance(code, int) or code <= 0:
        return errno.EIO, f"EIO: undecodable ack ({exc!r})"
    reason = errno.errorcode.get(code, str(code)) + ": " + os.strerror(code)
    text = msg.get_attr("NLMSGERR_ATTR_MSG")  # extended ack, when the kernel gave one
    if text:
        reason += f" ({text})"
    return code, reason


class Channel:
    """Requests and dumps on one rtnetlink socket. Not thread-safe."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._seq = 1
        self._buf = bytearray(_RECV_SIZE)
        self._marshal = MarshalRtnl()
        self._encoder = Encoder()
        rcv = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
        snd = sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF)
        self.max_inflight = max(16, rcv // _ACK_TRUESIZE)
        self.max_send = max(4096, snd // 2 - 64)

    def _next_seq(self, count: int) -> int:
        if self._seq + count > 0x7FFFFFFF:
            self._seq = 1
        base = self._seq
        self._seq += count
        return base

    def _recv(self) -> int:
        try:
            return self.sock.recv_into(self._buf)
        except socket.timeout as exc:
            raise NetlinkUnavailable("rtnetlink: no answer within 10 s") from exc

    def _parse(self, size: int, marshal: Optional[Any] = None) -> list[Message]:
        return list((marshal or self._marshal).parse(bytes(self._buf[:size])))

    def dump(self, request: Request, marshal: Optional[Any] = None) -> list[Message]:
        """All messages of one dump, decoded; retried when the kernel flags the dump
        as interrupted by a concurrent change. `request` names the message type and
        carries any filter in its fields. `marshal`: a pyroute2 Marshal decoding the
        answers instead of MarshalRtnl (the link dump's, netlink_links.LinkMarshal)."""
        out: list[Message] = []
        for _ in range(_MAX_RETRIES):
            seq = self._next_seq(1)
            data = self._encode(request.with_flags(NLM_F_REQUEST | NLM_F_DUMP), seq)
            try:
                self.sock.send(data)
            except OSError as exc:
                raise NetlinkUnavailable(f"rtnetlink dump: {exc}") from exc
            out = []
            interrupted = False
            done = False
            while not done:
                for msg in self._parse(self._recv(), marshal):
                    header = msg["header"]
                    if header["sequence_number"] != seq:
                        continue  # a late ack of an earlier exchange
                    interrupted |= bool(header["flags"] & NLM_F_DUMP_INTR)
                    if header["type"] == NLMSG_DONE:
                        done = True
                    elif header["type"] == NLMSG_ERROR:
                        raise NetlinkUnavailable(f"rtnetlink dump: {ack_verdict(msg)[1]}")
                    else:
                        out.append(msg)
            if not interrupted:
                break
        return out

    def exchange(self, requests: Sequence[Request]) -> list[Verdict]:
        """Send requests in order; per request the kernel's answer as (errno, reason),
        (0, "") when done. Callers decide which errnos mean "already so".

        The first pass asks for answers on errors only: every request but the last of
        each datagram goes without NLM_F_ACK, so the kernel answers only those it
        refuses, and the last one's ack says the whole datagram was handled (the kernel
        handles a datagram's messages in order and queues their answers in order).
        Decoding one ack per request costs more than the kernel's work. If answers were
        lost (ENOBUFS), the requests of that datagram without a known answer are sent
        again, each acknowledged (an add that happened answers EEXIST, a delete
        ENOENT); verify reads the kernel back after the apply in any case."""
        results: list[Verdict] = [OK] * len(requests)
        base = self._next_seq(len(requests))
        wire: list[Optional[bytes]] = [None] * len(requests)
        pending = list(range(len(requests)))
        self._encoder.prepare(requests)
        errors_only = True
        for _ in range(_MAX_RETRIES):
            if not pending:
                break
            pending = self._round(requests, wire, base, pending, results, errors_only=errors_only)
            if errors_only:
                errors_only = False
                wire = [None] * len(requests)  # again with NLM_F_ACK on each
        if pending:
            raise NetlinkUnavailable(f"rtnetlink: {len(pending)} requests never acknowledged")
        return results

    def _encode(self, request: Request, seq: int) -> bytes:
        return self._encoder.encode(request, seq)

    def query(self, requests: Sequence[Request]) -> list[Message | Verdict]:
        """Questions that the kernel answers with one message each (a route lookup):
        per request that message, or the (errno, reason) of its refusal. Sent many per
        datagram, as many as the receive buffer holds answers for."""
        answers: list[Message | Verdict] = [(errno.EIO, "EIO: no answer")] * len(requests)
        base = self._next_seq(len(requests))
        self._encoder.prepare(requests)
        for start in range(0, len(requests), self.max_inflight):
            chunk = range(start, min(start + self.max_inflight, len(requests)))
            data = b"".join(self._encode(requests[i], base + i) for i in chunk)
            try:
                self.sock.send(data)
            except OSError as exc:
                raise NetlinkUnavailable(f"rtnetlink send: {exc}") from exc
            waiting = {base + i: i for i in chunk}
            while waiting:
                for msg in self._parse(self._recv()):
                    idx = waiting.pop(msg["header"]["sequence_number"], None)
                    if idx is None:
                        continue  # a late answer of an earlier exchange
                    if msg["header"]["type"] == NLMSG_ERROR:
                        answers[idx] = ack_verdict(msg)
                    else:
                        answers[idx] = msg
        return answers

    def _round(
        self,
        requests: Sequence[Request],
        wire: list[Optional[bytes]],
        base: int,
        pending: list[int],
        results: list[Verdict],
        *,
        errors_only: bool = False,
    ) -> list[int]:
        """One pass over pending requests; returns those whose answer was lost."""
        lost: list[int] = []
        pos = 0
        while pos < len(pending):
            # A chunk: as many requests as the send buffer takes and the receive
            # buffer can hold answers for (were every one refused).
            chunk: list[int] = []
            size = 0
            while pos < len(pending) and len(chunk) < self.max_inflight:
                idx = pending[pos]
                data = wire[idx]
                if data is None:
                    req = requests[idx]
                    flags = req.flags & ~NLM_F_ACK if errors_only else None
                    data = wire[idx] = self._encoder.encode(req, base + idx, flags)
                if chunk and size + len(data) > self.max_send:
                    break
                chunk.append(idx)
                size += len(data)
                pos += 1
            last = chunk[-1]
            if errors_only:  # the barrier: the chunk's last request is acknowledged
                wire[last] = self._encode(requests[last], base + last)
            try:
                self.sock.send(b"".join(wire[i] or b"" for i in chunk))
            except OSError as exc:
                raise NetlinkUnavailable(f"rtnetlink send: {exc}") from exc
            by_seq = {base + i: i for i in chunk}
            lost.extend(self._collect(by_seq, results, base + last if errors_only else None))
            if errors_only:
                wire[last] = None  # encoded without NLM_F_ACK if it is sent again
        return sorted(lost)

    def _collect(
        self, by_seq: dict[int, int], results: list[Verdict], barrier: Optional[int] = None
    ) -> list[int]:
        """Answers to one chunk. With a `barrier` (errors only), the chunk is done when
        the barrier's ack came; requests without an answer then were done."""
        waiting = dict(by_seq)
        while waiting and (barrier is None or barrier in waiting):
            try:
                size = self._recv()
            except OSError as exc:
                if exc.errno != errno.ENOBUFS:
                    raise NetlinkUnavailable(f"rtnetlink receive: {exc}") from exc
                # Some answers were dropped. The kernel finished the whole datagram
                # inside send(), so whatever is queued now is all that will come.
                self._drain(waiting, results)
                # Shrink later chunks to what the buffer really held this time.
                got = len(by_seq) - len(waiting)
                self.max_inflight = max(1, min(self.max_inflight // 2, max(got, 4) * 3 // 4))
                return list(waiting.values())
            self._take(size, waiting, results)
        return []

    def _take(self, size: int, waiting: dict[int, int], results: list[Verdict]) -> None:
        for msg in self._parse(size):
            header = msg["header"]
            if header["type"] != NLMSG_ERROR:
                continue
            idx = waiting.pop(header["sequence_number"], None)
            if idx is not None:
                results[idx] = ack_verdict(msg)

    def _drain(self, waiting: dict[int, int], results: list[Verdict]) -> None:
        self.sock.setblocking(False)
        try:
            while waiting:
                try:
                    size = self.sock.recv_into(self._buf)
                except BlockingIOError:
                    break
                except OSError as exc:
                    if exc.errno == errno.ENOBUFS:
                        continue
                    raise NetlinkUnavailable(f"rtnetlink receive: {exc}") from exc
                self._take(size, waiting, results)
        finally:
            self.sock.settimeout(10.0)


# -- dump requests and requests for the model's objects --------------------------------


def link_dump() -> Request:
    fields = (("family", 0), ("ifi_type", 0), ("index", 0), ("flags", 0), ("change", 0))
    return Request(ifinfmsg, RTM_GETLINK, 0, fields)


def address_dump(index: int) -> Request:
    """Addresses of one link (the kernel filters by index under strict checking)."""
    fields = (("family", 0), ("prefixlen", 0), ("flags", 0), ("scope", 0), ("index", index))
    return Request(ifaddrmsg, RTM_GETADDR, 0, fields)


def route_dump(family: Family, proto: int) -> Request:
    """Routes of one protocol (the kernel filters under strict checking)."""
    zero = ("dst_len", "src_len", "tos", "table", "scope", "type", "flags")
    fields = (*((name, 0) for name in zero), ("family", int(family)), ("proto", proto))
    return Request(rtmsg, RTM_GETROUTE, 0, fields)


def neigh_dump(family: Family) -> Request:
    fields = (("family", int(family)), ("ifindex", 0), ("state", 0), ("flags", 0), ("ndm_type", 0))
    return Request(ndmsg, RTM_GETNEIGH, 0, fields)


def route_get(
    dst: IPAddress,
    src: Optional[IPAddress] = None,
    *,
    iif: Optional[int] = None,
    oif: Optional[int] = None,
) -> Request:
    """The kernel's own route lookup (what `ip route get` asks): for a packet from `src`
    to `dst`, leaving this host (no `iif`) or arriving on `iif` (the input path, which
    applies rp_filter). No packet is sent."""
    bits = 32 if dst.version == 4 else 128
    fields = (
        ("family", 2 if dst.version == 4 else 10),
        ("dst_len", bits),
        ("src_len", bits if src is not None else 0),
        ("tos", 0),
        ("table", 0),
        ("proto", 0),
        ("scope", 0),
        ("type", 0),
        # IPv6 refuses the flag: its answer names the route's table, the lookup's too.
        ("flags", RTM_F_LOOKUP_TABLE if dst.version == 4 else 0),
    )
    attrs: tuple[Attr, ...] = (("RTA_DST", str(dst)),)
    if src is not None:
        attrs += (("RTA_SRC", str(src)),)
    if iif is not None:
        attrs += (("RTA_IIF", iif),)
    if oif is not None:
        attrs += (("RTA_OIF", oif),)
    return Request(rtmsg, RTM_GETROUTE, NLM_F_REQUEST, fields, attrs)


def rule_dump(family: Family) -> Request:
    zero = ("dst_len", "src_len", "tos", "table", "res1", "res2", "action", "flags")
    fields = (*((name, 0) for name in zero), ("family", int(family)))
    return Request(fibmsg, RTM_GETRULE, 0, fields)


def link_up_request(index: int) -> Request:
    # flags, then the mask of flags to change
    fields = (
        ("family", 0),
        ("ifi_type", 0),
        ("index", index),
        ("flags", IFF_UP),
        ("change", IFF_UP),
    )
    return Request(ifinfmsg, RTM_NEWLINK, F_DEL, fields)  # a plain acked request


def link_mtu_request(index: int, mtu: int) -> Request:
    fields = (("family", 0), ("ifi_type", 0), ("index", index), ("flags", 0), ("change", 0))
    return Request(ifinfmsg, RTM_NEWLINK, F_DEL, fields, (("IFLA_MTU", mtu),))


def address_request(op: Op, spec: AddressSpec, index: int, *, replace: bool = False) -> Request:
    """`replace`: the address is there already (another tool's, with a lease's lifetime):
    it stays, without a lifetime (no IFA_CACHEINFO means forever)."""
    addr = spec.address
    text = _text(addr.ip)
    flags = 0
    if op is Op.ADD:
        if spec.noprefixroute:
            flags |= IFA_F_NOPREFIXROUTE
        if addr.version == 6:
            flags |= IFA_F_NODAD  # usable at once, not tentative for 1-2 s
    fields = (
        ("family", int(family_of(addr))),
        ("prefixlen", addr.network.prefixlen),
        ("flags", flags & 0xFF),
        ("scope", int(Scope.UNIVERSE)),
        ("index", index),
    )
    attrs: tuple[Attr, ...]
    if op is Op.ADD:
        kind, how = RTM_NEWADDR, F_REPLACE if replace else F_ADD
        attrs = (("IFA_LOCAL", text),)  # the kernel takes it for IFA_ADDRESS too
    else:
        # IFA_ADDRESS as well so that a delete matches the prefix length too.
        kind, how = RTM_DELADDR, F_DEL
        attrs = (("IFA_LOCAL", text), ("IFA_ADDRESS", text))
    if flags:
        attrs += (("IFA_FLAGS", flags),)
    return Request(ifaddrmsg, kind, how, fields, attrs)


@functools.lru_cache(maxsize=4096)
def _text(addr: IPAddress) -> str:
    """An address as pyroute2 takes it. A source block's address recurs in its three
    rules, a gateway in every table's routes: made into text once (ipaddress's str()
    is a good part of building a bulk apply's requests)."""
    return str(addr)


def _table_byte(table: int) -> int:
    # Tables above 255 only fit RTA_TABLE/FRA_TABLE; the header then says "unspec".
    return table if table < 256 else 0


def route_request(
    op: Op,
    spec: RouteSpec,
    oif: Optional[int],
    proto: int = RTPROT_EC2NET,
    *,
    replace: bool = False,
) -> Request:
    """`proto` 0 on delete matches any protocol (a network manager's objects, another
    tool's); `replace` on add takes the place of the route with the same key."""
    dst = spec.dst
    if op is Op.ADD:
        kind, how = RTM_NEWROUTE, F_REPLACE if replace else F_ADD
    else:
        kind, how = RTM_DELROUTE, F_DEL
    fields = (
        ("family", int(family_of(dst))),
        ("dst_len", dst.prefixlen),
        ("src_len", 0),
        ("tos", 0),
        ("flags", 0),
        ("table", _table_byte(spec.table)),
        ("proto", proto if op is Op.DEL else RTPROT_EC2NET),  # on delete: only ours
        ("scope", int(spec.scope)),
        ("type", int(spec.kind)),  # RTN_UNICAST or RTN_LOCAL (same numbers)
    )
    attrs: tuple[Attr, ...] = (("RTA_TABLE", spec.table),)
    if dst.prefixlen:
        attrs += (("RTA_DST", _text(dst.network_address)),)
    if oif is not None:
        attrs += (("RTA_OIF", oif),)
    if spec.gateway is not None:
        attrs += (("RTA_GATEWAY", _text(spec.gateway)),)
    if spec.src is not None:
        attrs += (("RTA_PREFSRC", _text(spec.src)),)
    if spec.metric is not None:
        attrs += (("RTA_PRIORITY", spec.metric),)
    return Request(rtmsg, kind, how, fields, attrs)


def rule_request(op: Op, spec: RuleSpec, proto: int = RTPROT_EC2NET) -> Request:
    """`proto` 0 on delete matches any protocol (a network manager's rules)."""
    # NLM_F_EXCL matters on add: without it the kernel adds an identical duplicate rule.
    kind, how = (RTM_NEWRULE, F_ADD) if op is Op.ADD else (RTM_DELRULE, F_DEL)
    fields = (
        ("family", int(spec.family)),
        ("dst_len", 0),
        ("tos", 0),
        ("res1", 0),
        ("res2", 0),
        ("flags", 0),
        ("src_len", spec.src.prefixlen if spec.src is not None else 0),
        ("table", _table_byte(spec.table)),
        ("action", FR_ACT_TO_TBL),
    )
    attrs: tuple[Attr, ...] = (("FRA_PRIORITY", spec.priority), ("FRA_TABLE", spec.table))
    if op is Op.ADD or proto:
        attrs += (("FRA_PROTOCOL", RTPROT_EC2NET if op is Op.ADD else proto),)
    if spec.src is not None:
        attrs += (("FRA_SRC", _text(spec.src.network_address)),)
    if spec.suppress_prefixlength is not None:
        attrs += (("FRA_SUPPRESS_PREFIXLEN", spec.suppress_prefixlength),)
    return Request(fibmsg, kind, how, fields, attrs)
