"""netlink_links (and the daemon's event decoding on top of it) on messages pyroute2
itself encodes, on 0.7 and 0.9 alike: the narrowed link class gives what the whole
ifinfmsg gives for the attributes ec2net reads, and nothing else is decoded."""

from __future__ import annotations

import errno
from typing import Any

from pyroute2.netlink import NLM_F_DUMP, NLM_F_REQUEST, NLMSG_DONE, NLMSG_ERROR, nlmsg, nlmsgerr
from pyroute2.netlink.rtnl import RTM_DELLINK, RTM_GETLINK, RTM_NEWLINK, RTM_NEWROUTE
from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg
from pyroute2.netlink.rtnl.marshal import MarshalRtnl
from pyroute2.netlink.rtnl.rtmsg import rtmsg

from ec2net.backends import netlink_batch as nb
from ec2net.backends import netlink_events as ne
from ec2net.backends import netlink_links as nl
from ec2net.backends.netlink_encode import Encoder

MAC = "02:ab:cd:00:00:07"


def _link(kind: int = RTM_NEWLINK, seq: int = 5, link_kind: str = "bridge") -> bytes:
    msg = ifinfmsg()
    msg["header"]["type"] = kind
    msg["header"]["sequence_number"] = seq
    msg["index"] = 7
    msg["flags"] = 0x1043
    msg["attrs"] = [
        ("IFLA_IFNAME", "sbr3"),
        ("IFLA_TXQLEN", 1000),
        ("IFLA_ADDRESS", MAC),
        ("IFLA_MTU", 9001),
        ("IFLA_GROUP", 0),
        ("IFLA_MASTER", 4),
        ("IFLA_LINKINFO", {"attrs": [("IFLA_INFO_KIND", link_kind)]}),
        ("IFLA_IFALIAS", "not read"),
    ]
    msg.encode()
    return bytes(msg.data)


def _route(dst_len: int, proto: int, seq: int = 9) -> bytes:
    msg = rtmsg()
    msg["header"]["type"] = RTM_NEWROUTE
    msg["header"]["sequence_number"] = seq
    msg.update(family=10, dst_len=dst_len, table=254, proto=proto, scope=0, type=1)
    attrs: list[tuple[str, Any]] = [("RTA_TABLE", 254), ("RTA_OIF", 3)]
    attrs += [("RTA_GATEWAY", "fe80::1")] if dst_len == 0 else [("RTA_DST", "2001:db8::")]
    msg["attrs"] = attrs
    msg.encode()
    return bytes(msg.data)


def _done(seq: int = 5) -> bytes:
    msg = nlmsg()
    msg["header"]["type"] = NLMSG_DONE
    msg["header"]["sequence_number"] = seq
    msg.encode()
    return bytes(msg.data)


def test_fields_match_the_whole_ifinfmsg() -> None:
    data = _link()
    whole = next(iter(MarshalRtnl().parse(data)))  # decoded first: see the next test
    info = whole.get_attr("IFLA_LINKINFO")
    theirs = nl.LinkFields(
        index=whole["index"],
        flags=whole["flags"],
        name=whole.get_attr("IFLA_IFNAME"),
        mac=whole.get_attr("IFLA_ADDRESS"),
        kind=info.get_attr("IFLA_INFO_KIND"),
        master=whole.get_attr("IFLA_MASTER"),
        mtu=whole.get_attr("IFLA_MTU"),
    )
    (msg,) = list(nl.LinkMarshal().parse(data))
    assert isinstance(msg, nl.LinkMsg)
    assert nl.link_fields(msg) == theirs
    assert theirs == nl.LinkFields(7, 0x1043, "sbr3", MAC, "bridge", 4, 9001)


def test_other_attributes_stay_undecoded() -> None:
    """Even after a whole ifinfmsg was decoded (pyroute2 marks a class's compiled
    nla_map in an attribute its subclasses inherit)."""
    list(MarshalRtnl().parse(_link()))
    (msg,) = list(nl.LinkMarshal().parse(_link()))
    names = [slot[0] for slot in msg["attrs"]]
    assert names == ["IFLA_IFNAME", "UNKNOWN", "IFLA_ADDRESS", "IFLA_MTU", "UNKNOWN",
                     "IFLA_MASTER", "IFLA_LINKINFO", "UNKNOWN"]  # fmt: skip


def test_a_link_without_attributes() -> None:
    msg = ifinfmsg()
    msg["header"]["type"] = RTM_DELLINK
    msg["index"] = 12
    msg.encode()
    (got,) = list(nl.LinkMarshal().parse(bytes(msg.data)))
    assert nl.link_fields(got) == nl.LinkFields(12, 0, "", "", "", 0, 0)


def test_the_dump_request_is_pyroute2s() -> None:
    data = nl.link_dump_request(77)
    req = nb.link_dump().with_flags(NLM_F_REQUEST | NLM_F_DUMP)
    assert data == Encoder().encode(req, 77)
    (msg,) = list(MarshalRtnl().parse(data))
    header = msg["header"]
    assert (header["type"], header["flags"], header["sequence_number"]) == (
        RTM_GETLINK,
        NLM_F_REQUEST | NLM_F_DUMP,
        77,
    )
    assert len(data) == 32  # nlmsghdr + ifinfomsg, no attributes


def test_an_error_gives_its_errno() -> None:
    err = nlmsgerr()
    err["header"]["type"] = NLMSG_ERROR
    err["header"]["sequence_number"] = 5
    err["error"] = -errno.EINVAL
    err.encode()
    data = bytes(err.data) + nl.link_dump_request(5)[:16]  # the request's header echoed
    data = len(data).to_bytes(4, "little") + data[4:]
    msgs = list(nl.LinkMarshal().parse(data))
    assert [m["header"]["type"] for m in msgs] == [NLMSG_ERROR]
    assert nl.error_code(msgs[0]) == errno.EINVAL
    assert nb.ack_verdict(msgs[0])[0] == errno.EINVAL


def test_a_buffer_of_several_messages() -> None:
    data = _link(seq=5) + _link(RTM_DELLINK, 5, "veth") + _done(5)
    msgs = list(nl.LinkMarshal().parse(data))
    assert [m["header"]["type"] for m in msgs] == [RTM_NEWLINK, RTM_DELLINK, NLMSG_DONE]
    assert [nl.link_fields(m).kind for m in msgs[:2]] == ["bridge", "veth"]


def test_events_of_links_and_ra_default_routes_only() -> None:
    ra, static = 9, 4
    data = _link() + _route(0, ra) + _route(64, ra) + _route(0, static) + _link(RTM_DELLINK)
    events = ne.decode_events(ne.EventMarshal(), data)
    assert events == [
        ne.LinkEvent(ne.LinkChange.NEW, 7, "sbr3", MAC, "bridge", 4),
        ne.RouterEvent(ne.LinkChange.NEW, 3, "fe80::1"),
        ne.LinkEvent(ne.LinkChange.DEL, 7, "sbr3", MAC, "bridge", 4),
    ]


def test_route_headers_skip_the_attributes() -> None:
    (msg,) = list(ne.EventMarshal().parse(_route(64, 9)))
    assert isinstance(msg, ne.RouteHeader)
    assert (msg["dst_len"], msg["proto"], msg["table"]) == (64, 9, 254)
    assert "attrs" not in msg


def test_after_a_loss_only_router_events_are_decoded() -> None:
    data = _link() + _route(0, 9) + _link(RTM_DELLINK)
    msgs = list(ne.RouteEventMarshal().parse(data))
    assert [type(m) for m in msgs] == [nlmsg, ne.RouteHeader, nlmsg]
    events = ne.decode_events(ne.RouteEventMarshal(), data)
    assert events == [ne.RouterEvent(ne.LinkChange.NEW, 3, "fe80::1")]
