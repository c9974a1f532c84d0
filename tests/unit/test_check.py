"""`ec2net check`'s pure part: what it asks, and how it judges the kernel's answers."""

from __future__ import annotations

import ipaddress

from ec2net import check
from ec2net.check import Answer, Kind, OtherRule, Path, Question
from ec2net.model import TABLE_MAIN, RouteSpec
from tests.unit.test_plan import eni

MAC = "02:00:0a:00:02:14"


def an_eni(**raw: str) -> check.Eni:
    meta = eni(MAC, local_ipv4s="10.0.2.20\n10.0.2.21", **raw)
    return check.Eni("eth1", 7, MAC, meta, 9001, 9001)


def test_every_source_is_asked_out_and_in() -> None:
    e = an_eni(ipv4_prefix="10.0.2.64/28")
    qs = check.questions([e], [])
    sources = {str(q.source) for q in qs}
    assert sources == {"10.0.2.20", "10.0.2.21", "10.0.2.65"}  # one of the prefix
    first = [q for q in qs if str(q.source) == "10.0.2.20"]
    assert [(str(q.dest), q.towards, q.inbound) for q in first] == [
        ("10.0.2.1", "gateway", False),
        ("198.51.100.7", "outside", False),
        ("198.51.100.7", "outside", True),
        ("10.0.0.1", "vpc", False),  # the VPC, not the ENI's subnet
        ("10.0.0.1", "vpc", True),
    ]
    assert all(q.expect == "eth1" for q in first if not q.inbound)


def test_an_outside_address_is_never_the_vpcs() -> None:
    e = an_eni(vpc_ipv4_cidr_blocks="10.0.0.0/16\n198.51.100.0/24")
    dests = {str(q.dest) for q in check.questions([e], []) if q.towards == "outside"}
    assert dests == {"203.0.113.7"}


def test_other_programs_main_routes_expect_their_device() -> None:
    bridge = RouteSpec(TABLE_MAIN, ipaddress.ip_network("172.17.0.0/16"), "docker0")
    inside = RouteSpec(TABLE_MAIN, ipaddress.ip_network("10.0.9.0/24"), "tun0")  # in the VPC
    qs = check.questions([an_eni()], [bridge, inside])
    routes = {(str(q.dest), q.expect) for q in qs if q.towards.startswith("route")}
    assert routes == {("172.17.255.254", "docker0")}  # not .1: docker0's own address


def test_wrong_paths_name_the_rule_that_takes_them() -> None:
    q = Question("eth1", ipaddress.ip_address("10.0.2.20"), ipaddress.ip_address("198.51.100.7"),
                 "outside", "eth1")  # fmt: skip
    wrong = Path(q, Answer(table=77, oif="eth0"))
    rules = [
        OtherRule(0, 255, None, "rule pref 0 from all lookup local"),
        OtherRule(
            100,
            77,
            ipaddress.ip_network("10.0.2.20/32"),
            "rule pref 100 from 10.0.2.20/32 lookup 77",
        ),
        OtherRule(32766, 254, None, "rule pref 32766 from all lookup main"),
    ]
    [p] = check.judge(
        [wrong, Path(q, Answer(table=10001, oif="eth1"))], {"eth1": 10001}, rules, {}
    )
    assert p.kind is Kind.WRONG_PATH
    assert p.what == (
        "eth1: 10.0.2.20 -> 198.51.100.7 (outside): leaves by eth0 (table 77), not eth1; "
        "rule pref 100 from 10.0.2.20/32 lookup 77 takes the lookup before ec2net's rules"
    )


def test_a_refused_arrival_is_rp_filter_only_when_strict() -> None:
    q = Question("eth1", ipaddress.ip_address("10.0.2.20"), ipaddress.ip_address("198.51.100.7"),
                 "outside", "", inbound=True)  # fmt: skip
    refused = Path(q, Answer(error=check.EINVAL, reason="EINVAL: Invalid argument"))
    [strict] = check.judge([refused], {}, [], {"eth1": 1})
    assert strict.kind is Kind.RP_FILTER and "set it to 2 (loose)" in strict.what
    [other] = check.judge([refused], {}, [], {"eth1": 2})
    assert other.kind is Kind.NO_ROUTE


def test_a_blocked_path_is_the_neighbours_problem_once() -> None:
    e = an_eni()
    q = check.questions([e], [])[0]
    blocked = Path(q, Answer(table=10001, oif="eth1"), blocked=True)
    assert not blocked.right
    assert check.judge([blocked], {}, [], {}) == []
    problems = check.link_problems([e], {"eth1": ipaddress.ip_address("10.0.2.1")})
    assert [p.kind for p in problems] == [Kind.NEIGHBOUR]
    changed = check.Eni("eth1", 7, MAC, e.eni, 1400, 9001)
    assert [p.kind for p in check.link_problems([changed], {})] == [Kind.MTU]
