"""The Encoder's bytes are pyroute2's own encoding of the whole message, for every kind
of request the netlink backend sends, whatever was cached before (both pyroute2
versions run this file)."""

from __future__ import annotations

import ipaddress

from ec2net.backends import netlink_batch as nb
from ec2net.backends.netlink_encode import Encoder, Request, encode_whole
from ec2net.model import (
    PRIO_DEFAULT,
    PRIO_MAIN,
    PRIO_VPC,
    TABLE_MAIN,
    AddressSpec,
    Family,
    Op,
    RouteSpec,
    RuleSpec,
    Scope,
)

ip_if = ipaddress.ip_interface
ip_net = ipaddress.ip_network
ip_addr = ipaddress.ip_address


def requests() -> list[Request]:
    out: list[Request] = []
    for i, table in enumerate((10001, 10102, 200)):
        for op in (Op.ADD, Op.DEL):
            for addr in (f"10.{i}.0.5/24", f"10.{i}.0.77/24", f"2001:db8:{i}::9/64"):
                spec = AddressSpec(f"e{i}", ip_if(addr), noprefixroute=i != 1)
                out.append(nb.address_request(op, spec, 3 + i))
            routes = (
                RouteSpec(
                    table, ip_net(f"10.{i}.0.0/24"), "e", None, Scope.LINK, ip_addr("10.0.0.5")
                ),
                RouteSpec(table, ip_net("0.0.0.0/0"), "e", ip_addr(f"10.{i}.0.1")),
                RouteSpec(table, ip_net("::/0"), "e", ip_addr("fe80:ec2::1")),
            )
            for route in routes:
                out.append(nb.route_request(op, route, 3 + i))
                out.append(nb.route_request(op, route, None, 0))
            for src in (
                ip_net(f"10.{i}.0.5/32"),
                ip_net(f"10.{i}.0.64/27"),
                ip_net("2001:db8::/64"),
                None,
            ):
                fam = Family.V6 if src is not None and src.version == 6 else Family.V4
                for prio, tab, sup in (
                    (PRIO_VPC + i, table, 0),
                    (PRIO_MAIN + i, TABLE_MAIN, 0),
                    (PRIO_DEFAULT + i, table, None),
                ):
                    rule = RuleSpec(prio, fam, tab, src, sup)
                    out.append(nb.rule_request(op, rule))
                    out.append(nb.rule_request(op, rule, 0))
    out += [nb.link_dump(), nb.address_dump(3), nb.route_dump(Family.V6, 236)]
    out += [nb.rule_dump(Family.V4), nb.link_up_request(4)]
    return out


def test_bulk_encoding_is_pyroute2s() -> None:
    reqs = requests()
    enc = Encoder()
    enc.prepare(reqs)
    got = [enc.encode(r, 100 + i) for i, r in enumerate(reqs)]
    assert got == [encode_whole(r, 100 + i) for i, r in enumerate(reqs)]
    assert len(set(got)) == len(got)  # distinct requests stay distinct


def test_unprepared_and_repeated_requests_encode_alike() -> None:
    reqs = requests()
    enc = Encoder()
    for seq in (7, 0x7FFFFFF0):
        assert [enc.encode(r, seq) for r in reqs] == [encode_whole(r, seq) for r in reqs]


def test_sequence_number_and_length_are_the_requests() -> None:
    from pyroute2.netlink.rtnl.marshal import MarshalRtnl

    reqs = requests()[:40]
    enc = Encoder()
    wire = b"".join(enc.encode(r, 5000 + i) for i, r in enumerate(reqs))
    msgs = list(MarshalRtnl().parse(wire))
    assert [m["header"]["sequence_number"] for m in msgs] == list(range(5000, 5040))
    assert [m["header"]["type"] for m in msgs] == [r.type for r in reqs]
    assert sum(m["header"]["length"] for m in msgs) == len(wire)


def test_flags_given_apart_encode_as_the_request_with_them() -> None:
    reqs = requests()
    enc = Encoder()
    enc.prepare(reqs)
    for i, r in enumerate(reqs):
        plain = r.flags & ~nb.NLM_F_ACK
        assert enc.encode(r, i, plain) == encode_whole(r.with_flags(plain), i)
        assert enc.encode(r, i) == encode_whole(r, i)  # the request's own flags still
