"""IMDS requests per refresh and per daemon round, counted by a fake IMDS: a no-change
refresh costs one request per address list and writes nothing, the daemon's rounds
average at most one request per IPv4-only ENI, and keys that newly appear (a delegated
prefix, a first IPv6 address) or disappear are still picked up within a bounded number
of rounds."""

from __future__ import annotations

from pathlib import Path

import pytest

from ec2net import watch
from ec2net.converge import Action
from tests.unit.fakes import PRIMARY_MAC, FakeImds, FakeKernel, engine, settings

V4 = "02:00:00:00:02:14"  # IPv4 only
DUAL = "02:00:00:00:02:15"  # IPv4 and IPv6
BASE = "network/interfaces/macs/"


@pytest.fixture
def kernel() -> FakeKernel:
    k = FakeKernel()
    k.plug("eth0", PRIMARY_MAC, 2)
    k.plug("eth1", V4, 3)
    k.plug("eth2", DUAL, 4)
    return k


@pytest.fixture
def imds() -> FakeImds:
    i = FakeImds()
    i.eni(PRIMARY_MAC, 0, ["10.0.1.10"], subnet="10.0.1.0/24")
    i.eni(V4, 1, ["10.0.2.20", "10.0.2.21"])
    i.eni(DUAL, 2, ["10.0.2.30"], ipv6s=["2600:1f16:292:2::30", "2600:1f16:292:2::31"])
    return i


def test_no_change_refresh_reads_each_address_list_once_and_writes_nothing(
    tmp_path: Path, kernel: FakeKernel, imds: FakeImds
) -> None:
    e = engine(kernel, imds, tmp_path)
    e.scan()
    applied, before = kernel.applied, imds.requests
    results = e.refresh()
    assert {r.action for r in results} == {Action.UNCHANGED}
    assert imds.requests - before == 1 + 2  # IPv4-only: local-ipv4s; dual: + ipv6s
    assert kernel.applied == applied  # no netlink write


def test_listing_round_costs_one_request_per_eni(
    tmp_path: Path, kernel: FakeKernel, imds: FakeImds
) -> None:
    e = engine(kernel, imds, tmp_path)
    e.scan()
    before = imds.requests
    e.refresh(listing=lambda mac: True)
    assert imds.requests - before == 2


def test_a_delegated_prefix_is_found_by_the_listing_round_only(
    tmp_path: Path, kernel: FakeKernel, imds: FakeImds
) -> None:
    e = engine(kernel, imds, tmp_path)
    e.scan()
    imds.tree[f"{BASE}{V4}/ipv4-prefix"] = "10.0.2.64/28"
    e.refresh()
    assert not any("10.0.2.64/28" in str(r) for r in kernel.rules)
    before = imds.requests
    e.refresh(listing=lambda mac: mac == V4)
    assert imds.requests - before == 2 + 2  # V4: listing + ipv4-prefix; dual: its lists
    assert any("10.0.2.64/28" in str(r) for r in kernel.rules)


def test_a_list_that_vanishes_is_confirmed_by_the_listing(
    tmp_path: Path, kernel: FakeKernel, imds: FakeImds
) -> None:
    e = engine(kernel, imds, tmp_path)
    e.scan()
    del imds.tree[f"{BASE}{DUAL}/ipv6s"]  # the last IPv6 address unassigned
    e.refresh()
    addrs, _, _ = kernel.state()
    assert not [a for a in addrs if a.address.version == 6]
    assert [a for a in addrs if str(a.address.ip) == "10.0.2.30"]


def test_an_empty_answer_is_never_none(tmp_path: Path, kernel: FakeKernel, imds: FakeImds) -> None:
    e = engine(kernel, imds, tmp_path)
    e.scan()
    for key in ("local-ipv4s", "ipv6s"):
        del imds.tree[f"{BASE}{DUAL}/{key}"]
    with pytest.raises(Exception, match="lists no addresses"):
        e.refresh(ifname="eth2")
    addrs, _, _ = kernel.state()
    assert [a for a in addrs if str(a.address.ip) == "10.0.2.30"]  # state kept


def test_daemon_rounds_average_one_request_per_ipv4_eni_and_find_new_keys(
    tmp_path: Path, kernel: FakeKernel, imds: FakeImds
) -> None:
    kernel.unplug("eth2")
    e = engine(kernel, imds, tmp_path)
    e.scan()
    daemon = watch.Daemon(settings(tmp_path))
    try:
        before = imds.requests
        for _ in range(2 * watch.LISTING_EVERY):
            e.refresh(listing=daemon._listing_due)
        assert imds.requests - before == 2 * watch.LISTING_EVERY  # 1 per round
        imds.tree[f"{BASE}{V4}/ipv6s"] = "2600:1f16:292:2::21"
        imds.tree[f"{BASE}{V4}/subnet-ipv6-cidr-blocks"] = "2600:1f16:292:2::/64"
        rounds = 0
        while not any(a.address.version == 6 for a in kernel.state()[0]):
            rounds += 1
            assert rounds <= watch.LISTING_EVERY, "new key not picked up in bound"
            e.refresh(listing=daemon._listing_due)
    finally:
        daemon.pool.shutdown()
