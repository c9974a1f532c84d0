"""NetlinkBackend against a real kernel, in namespaces made here (needs root).

Every namespace is `e2nl<random>`, made with veth pairs x0/y0 and x1/y1 created inside
it, and deleted by name when the test ends, pass or fail.
"""

from __future__ import annotations

import ipaddress
import json
import os
import socket
import subprocess
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from ec2net.backends import netlink_batch as nb
from ec2net.backends.netlink import NetlinkBackend
from ec2net.model import (
    AddressSpec,
    Change,
    ChangeSet,
    Family,
    NetObject,
    Op,
    RouteSpec,
    RuleSpec,
    Scope,
)

pytestmark = [
    pytest.mark.world,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root for network namespaces"),
]

T = 10001
ip_if = ipaddress.ip_interface
ip_net = ipaddress.ip_network
ip_addr = ipaddress.ip_address


def addrs(be: NetlinkBackend, ifname: str) -> set[AddressSpec]:
    snap = be.snapshot()
    return set(snap.addresses_of(snap.link(ifname)))


def sh(ns: str, *args: str) -> str:
    return subprocess.run(
        ["ip", "-n", ns, *args], check=True, capture_output=True, text=True
    ).stdout


@pytest.fixture
def ns() -> Iterator[str]:
    name = f"e2nl{uuid.uuid4().hex[:10]}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        for i in (0, 1):
            sh(name, "link", "add", f"x{i}", "type", "veth", "peer", "name", f"y{i}")
            sh(name, "link", "set", f"x{i}", "up")
            sh(name, "link", "set", f"y{i}", "up")
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)


@pytest.fixture
def be(ns: str) -> Iterator[NetlinkBackend]:
    with NetlinkBackend(ns) as backend:
        yield backend


def adds(*objs: NetObject) -> ChangeSet:
    return ChangeSet(tuple(Change(Op.ADD, o) for o in objs))


def dels(*objs: NetObject) -> ChangeSet:
    return ChangeSet(tuple(Change(Op.DEL, o) for o in reversed(objs)))


def assert_all_applied(be: NetlinkBackend, changes: ChangeSet) -> None:
    report = be.apply(changes)
    assert report.failed == []
    assert report.applied == list(changes.changes)


def test_links(ns: str, be: NetlinkBackend) -> None:
    shown = {d["ifname"]: d for d in json.loads(sh(ns, "-j", "link", "show"))}
    links = {ln.name: ln for ln in be.links()}
    assert set(links) == {"lo", "x0", "y0", "x1", "y1"}
    for name in ("x0", "y1"):
        assert links[name].driver == "veth"
        assert links[name].mac == shown[name]["address"]
        assert links[name].index == shown[name]["ifindex"]
        assert links[name].up
    assert be.link("x1") == links["x1"]
    assert be.link("nosuch0") is None

    sh(ns, "link", "set", "x1", "down")
    assert be.link("x1") is not None and not be.link("x1").up  # type: ignore[union-attr]
    assert be.set_up("x1") is True
    assert be.set_up("x1") is False
    assert be.link("x1").up  # type: ignore[union-attr]


def test_ipv6_routers_from_ra_default_routes(ns: str, be: NetlinkBackend) -> None:
    sh(ns, "-6", "route", "add", "default", "via", "fe80::1", "dev", "x0", "proto", "ra")
    sh(ns, "-6", "route", "add", "default", "via", "fe80::2", "dev", "x1", "table", "5")
    links = {ln.name: ln for ln in be.snapshot().links}
    assert links["x0"].ipv6_routers == (ip_addr("fe80::1"),)
    assert links["x1"].ipv6_routers == ()  # static, and not in main


def test_snapshot_counts_one_dump_of_each_kind(ns: str, be: NetlinkBackend) -> None:
    """A snapshot costs one dump of links, one of addresses, and one of routes and of
    rules per family; its parts agree with the narrower reads."""
    sent: list[int] = []
    dump = be._chan.dump

    def counting(req: Any, marshal: Any = None) -> Any:
        sent.append(req.type)
        return dump(req, marshal)

    be._chan.dump = counting  # type: ignore[method-assign,assignment]
    snap = be.snapshot()
    kinds = {16 + 2: "link", 20 + 2: "addr", 24 + 2: "route", 32 + 2: "rule"}
    counts = {name: sent.count(t) for t, name in kinds.items()}
    assert counts == {"link": 1, "addr": 1, "route": 2, "rule": 2}, counts
    assert [ln.name for ln in snap.links] == [ln.name for ln in be.links()]


def test_ports_of_a_bridge_carry_their_master(ns: str, be: NetlinkBackend) -> None:
    sh(ns, "link", "add", "br9", "type", "bridge")
    sh(ns, "link", "set", "x1", "master", "br9")
    links = {ln.name: ln for ln in be.links()}
    assert links["x1"].master == links["br9"].index
    assert links["x0"].master is None


def test_addresses_round_trip(ns: str, be: NetlinkBackend) -> None:
    want = {
        AddressSpec("x0", ip_if("10.1.0.5/24"), True),
        AddressSpec("x0", ip_if("10.2.0.6/24"), False),
        AddressSpec("x0", ip_if("2001:db8:1::5/64"), True),
        AddressSpec("x0", ip_if("2001:db8:2::5/64"), False),
    }
    assert_all_applied(be, adds(*sorted(want, key=str)))
    assert addrs(be, "x0") == want  # fe80:: link-local of x0 is skipped
    assert addrs(be, "x1") == set()
    assert addrs(be, "nosuch0") == set()
    v6 = sh(ns, "-6", "addr", "show", "dev", "x0", "scope", "global")
    assert "tentative" not in v6  # NODAD: usable at once
    main = sh(ns, "route", "show", "table", "main")
    assert "10.2.0.0/24" in main and "10.1.0.0/24" not in main  # per noprefixroute

    assert_all_applied(be, dels(*sorted(want, key=str)))
    assert addrs(be, "x0") == set()


def test_routes_round_trip(ns: str, be: NetlinkBackend) -> None:
    sh(ns, "addr", "add", "10.1.0.5/24", "dev", "x0")
    routes = {
        RouteSpec(T, ip_net("10.1.0.0/24"), "x0", None, Scope.LINK, ip_addr("10.1.0.5")),
        RouteSpec(T, ip_net("0.0.0.0/0"), "x0", ip_addr("10.1.0.1")),
        RouteSpec(T, ip_net("::/0"), "x0", ip_addr("fe80:ec2::1")),
        RouteSpec(T + 1, ip_net("2001:db8::/64"), "x1"),
    }
    assert_all_applied(be, adds(*sorted(routes, key=str)))
    assert be.snapshot().routes == routes
    assert "default via 10.1.0.1 dev x0 proto 236" in sh(ns, "route", "show", "table", str(T))
    assert_all_applied(be, dels(*sorted(routes, key=str)))
    assert be.snapshot().routes == set()


def test_rules_round_trip(be: NetlinkBackend) -> None:
    rules = {
        RuleSpec(10001, Family.V4, T, ip_net("10.1.0.5/32"), 0),
        RuleSpec(25001, Family.V4, T, ip_net("10.1.0.0/28")),
        RuleSpec(20000, Family.V4, 254, None, 0),
        RuleSpec(10001, Family.V6, T, ip_net("2001:db8::/64"), 0),
        RuleSpec(25001, Family.V6, T, ip_net("2001:db8::5/128")),
        RuleSpec(20000, Family.V6, 254, None, 0),
    }
    assert_all_applied(be, adds(*sorted(rules, key=str)))
    assert be.snapshot().rules == rules
    assert_all_applied(be, dels(*sorted(rules, key=str)))
    assert be.snapshot().rules == set()


def test_foreign_objects_are_neither_returned_nor_touched(ns: str, be: NetlinkBackend) -> None:
    sh(ns, "addr", "add", "10.1.0.5/24", "dev", "x0")
    sh(ns, "rule", "add", "pref", "512", "table", "100")
    sh(ns, "route", "add", "10.50.0.0/24", "dev", "x0")
    sh(ns, "route", "add", "10.60.0.0/24", "dev", "x0", "table", str(T))
    mine_rule = RuleSpec(513, Family.V4, 100)
    mine_route = RouteSpec(T, ip_net("10.70.0.0/24"), "x0")
    assert_all_applied(be, adds(mine_rule, mine_route))
    assert be.snapshot().rules == {mine_rule}
    assert be.snapshot().routes == {mine_route}

    # Deleting look-alikes of the foreign objects matches nothing (protocol differs).
    lookalikes = (
        RuleSpec(512, Family.V4, 100),
        RouteSpec(254, ip_net("10.50.0.0/24"), "x0", scope=Scope.LINK),
        RouteSpec(T, ip_net("10.60.0.0/24"), "x0", scope=Scope.LINK),
    )
    assert_all_applied(be, dels(mine_rule, mine_route, *lookalikes))
    assert "512:\tfrom all lookup 100" in sh(ns, "rule", "show")
    assert "10.50.0.0/24 dev x0" in sh(ns, "route", "show")
    assert "10.60.0.0/24 dev x0" in sh(ns, "route", "show", "table", str(T))
    assert be.snapshot().rules == set()
    assert be.snapshot().routes == set()


def test_idempotent_adds_and_deletes(ns: str, be: NetlinkBackend) -> None:
    objs: list[NetObject] = [
        AddressSpec("x0", ip_if("10.1.0.5/24")),
        AddressSpec("x0", ip_if("2001:db8::5/64")),
        RouteSpec(T, ip_net("10.1.0.0/24"), "x0", None, Scope.LINK, ip_addr("10.1.0.5")),
        RouteSpec(T, ip_net("::/0"), "x0", ip_addr("fe80:ec2::1")),
        RuleSpec(10001, Family.V4, T, ip_net("10.1.0.5/32"), 0),
        RuleSpec(10001, Family.V6, T, ip_net("2001:db8::5/128"), 0),
    ]
    for _ in range(2):
        assert_all_applied(be, adds(*objs))
    assert len(sh(ns, "rule", "show").splitlines()) == 4  # no duplicate rule
    for _ in range(2):
        assert_all_applied(be, dels(*objs))
    assert be.snapshot().rules == set() and be.snapshot().routes == set()
    assert addrs(be, "x0") == set()


def test_errors_are_reported_per_object(ns: str, be: NetlinkBackend) -> None:
    good_before = AddressSpec("x0", ip_if("10.1.0.5/24"))
    no_device = RouteSpec(T, ip_net("10.9.0.0/24"), "nosuch0", ip_addr("10.1.0.1"))
    unreachable = RouteSpec(T, ip_net("10.8.0.0/24"), "x0", ip_addr("10.99.0.1"))
    good_after = RuleSpec(10001, Family.V4, T, ip_net("10.1.0.5/32"))
    changes = adds(good_before, no_device, unreachable, good_after)
    report = be.apply(changes)
    assert report.applied == [changes.changes[0], changes.changes[3]]
    failed = dict(report.failed)
    assert set(failed) == {changes.changes[1], changes.changes[2]}
    assert failed[changes.changes[1]].startswith("ENODEV")
    assert failed[changes.changes[2]].startswith("ENETUNREACH")
    assert be.snapshot().rules == {good_after}


def test_a_refused_last_request_is_its_datagrams_answer(ns: str, be: NetlinkBackend) -> None:
    """The last request of a datagram is the one acknowledged whatever its outcome:
    refused, its error is the answer that ends the wait."""
    good = AddressSpec("x0", ip_if("10.1.0.6/24"))
    unreachable = RouteSpec(T, ip_net("10.8.0.0/24"), "x0", ip_addr("10.99.0.1"))
    changes = adds(good, unreachable)
    report = be.apply(changes)
    assert report.applied == [changes.changes[0]]
    assert [c for c, _ in report.failed] == [changes.changes[1]]


def test_delete_after_device_vanished(ns: str, be: NetlinkBackend) -> None:
    objs: list[NetObject] = [
        AddressSpec("x1", ip_if("10.2.0.5/24")),
        RouteSpec(T, ip_net("10.2.0.0/24"), "x1", None, Scope.LINK, ip_addr("10.2.0.5")),
        RuleSpec(10001, Family.V4, T, ip_net("10.2.0.5/32")),
    ]
    assert_all_applied(be, adds(*objs))
    sh(ns, "link", "del", "x1")
    assert be.snapshot().routes == set()
    assert be.snapshot().rules == {objs[2]}  # rules outlive the device
    assert_all_applied(be, dels(*objs))
    assert be.snapshot().rules == set()


def _bulk(devs: int, per_dev: int) -> list[NetObject]:
    addrs: list[NetObject] = []
    routes: list[NetObject] = []
    rules: list[NetObject] = []
    for d in range(devs):
        dev, table = f"x{d}", T + d
        net = ipaddress.IPv4Network(f"10.{d}.0.0/22")
        routes.append(RouteSpec(table, net, dev, None, Scope.LINK, net.network_address + 10))
        routes.append(RouteSpec(table, ip_net("0.0.0.0/0"), dev, net.network_address + 1))
        for j in range(per_dev):
            ip = net.network_address + 10 + j
            addrs.append(AddressSpec(dev, ipaddress.IPv4Interface((ip, 22))))
            host = ipaddress.IPv4Network(ip)
            rules.append(RuleSpec(10000 + d, Family.V4, table, host, 0))
            rules.append(RuleSpec(25000 + d, Family.V4, table, host))
        addrs.append(AddressSpec(dev, ip_if(f"2001:db8:{d}::5/64")))
        rules.append(RuleSpec(25000 + d, Family.V6, table, ip_net(f"2001:db8:{d}::/64")))
    return addrs + routes + rules


def _check_bulk(be: NetlinkBackend, objs: list[NetObject]) -> None:
    assert_all_applied(be, adds(*objs))
    assert addrs(be, "x0") | addrs(be, "x1") == {o for o in objs if isinstance(o, AddressSpec)}
    assert be.snapshot().routes == {o for o in objs if isinstance(o, RouteSpec)}
    assert be.snapshot().rules == {o for o in objs if isinstance(o, RuleSpec)}
    assert_all_applied(be, dels(*objs))
    assert be.snapshot().rules == set() and be.snapshot().routes == set()
    assert addrs(be, "x0") == set() and addrs(be, "x1") == set()


def test_bulk_apply_reads_back(be: NetlinkBackend) -> None:
    objs = _bulk(2, 350)
    assert len(objs) > 2000
    _check_bulk(be, objs)


def test_bulk_apply_in_small_chunks(be: NetlinkBackend) -> None:
    be._chan.max_inflight = 37  # many datagrams, each with its own acks
    _check_bulk(be, _bulk(2, 120))


def test_lost_acks_are_recovered(ns: str) -> None:
    with NetlinkBackend(ns) as be:
        # A receive buffer far too small for the answers of one datagram: ENOBUFS.
        be._sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 2048)
        be._chan.max_inflight = 10_000
        objs = _bulk(1, 150)
        # Answers come only for refusals (and the datagram's last request): all fit.
        assert_all_applied(be, adds(*objs))
        assert be._chan.max_inflight == 10_000
        # Every add again: each answers EEXIST, far more than the buffer holds; the
        # requests without a known answer are sent again, acknowledged one by one.
        assert_all_applied(be, adds(*objs))
        assert be._chan.max_inflight < 10_000
    with NetlinkBackend(ns) as fresh:
        assert fresh.snapshot().rules == {o for o in objs if isinstance(o, RuleSpec)}
        assert addrs(fresh, "x0") == {o for o in objs if isinstance(o, AddressSpec)}


def test_batched_requests_decode_back() -> None:
    """Requests encoded into one datagram as `Channel` does decode back with
    MarshalRtnl into the same messages, in order, each with its own sequence number."""
    from pyroute2.netlink.rtnl.marshal import MarshalRtnl

    spec = RouteSpec(T, ip_net("10.1.0.0/24"), "x", None, Scope.LINK, ip_addr("10.1.0.5"))
    requests = [
        nb.address_request(Op.ADD, AddressSpec("x", ip_if("2001:db8::5/64")), 3),
        nb.address_request(Op.DEL, AddressSpec("x", ip_if("10.1.0.5/24"), False), 3),
        nb.route_request(Op.ADD, spec, 4),
        nb.rule_request(Op.DEL, RuleSpec(10001, Family.V6, T, ip_net("2001:db8::/64"), 0)),
        nb.link_up_request(4),
    ]
    chan = nb.Channel(nb.open_socket())
    try:
        wire = b"".join(chan._encode(r, 7 + i) for i, r in enumerate(requests))
    finally:
        chan.sock.close()
    a, d, r, f, up = list(MarshalRtnl().parse(wire))
    assert [m["header"]["sequence_number"] for m in (a, d, r, f, up)] == [7, 8, 9, 10, 11]
    assert [m["header"]["type"] for m in (a, d, r, f, up)] == [20, 21, 24, 33, 16]
    assert [m["header"]["flags"] for m in (a, d, r, f, up)] == [0x605, 5, 0x605, 5, 5]

    assert (a["family"], a["index"], a["prefixlen"]) == (10, 3, 64)
    assert a.get_attr("IFA_LOCAL") == "2001:db8::5"
    assert a.get_attr("IFA_FLAGS") == 0x202  # NOPREFIXROUTE | NODAD
    assert d.get_attr("IFA_ADDRESS") == "10.1.0.5" and d.get_attr("IFA_FLAGS") is None

    assert (r["dst_len"], r["table"], r["proto"], r["scope"]) == (24, 0, 236, 253)
    assert r.get_attr("RTA_TABLE") == T and r.get_attr("RTA_OIF") == 4
    assert r.get_attr("RTA_DST") == "10.1.0.0"
    assert r.get_attr("RTA_PREFSRC") == "10.1.0.5" and r.get_attr("RTA_GATEWAY") is None

    assert (f["family"], f["src_len"], f["table"], f["action"]) == (10, 64, 0, 1)
    assert f.get_attr("FRA_PRIORITY") == 10001 and f.get_attr("FRA_TABLE") == T
    assert f.get_attr("FRA_SRC") == "2001:db8::"
    assert f.get_attr("FRA_SUPPRESS_PREFIXLEN") == 0
    assert f.get_attr("FRA_PROTOCOL") == 236

    assert (up["index"], up["flags"], up["change"]) == (4, 1, 1)


def test_failed_ack_carries_kernel_text(ns: str, be: NetlinkBackend) -> None:
    """Both pyroute2 versions decode a failing ack to its errno, and the extended-ack
    text (kernel >= 4.12) when the kernel sent one."""
    change = Change(Op.ADD, RouteSpec(T, ip_net("10.8.0.0/24"), "x0", ip_addr("10.99.0.1")))
    report = be.apply(ChangeSet((change,)))
    ((failed, reason),) = report.failed
    assert failed == change
    assert reason.startswith("ENETUNREACH: Network is unreachable")
