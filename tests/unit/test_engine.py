"""The engine over an in-memory kernel: records, table hand-over, the unplug path,
table conflicts, leftovers and crash recovery, each in milliseconds and without root."""

from __future__ import annotations

import ipaddress
import json
import threading
from dataclasses import replace
from pathlib import Path

import pytest

from ec2net.converge import Action
from ec2net.errors import ApplyFailed, InterfaceGone, TableConflict
from ec2net.model import AddressSpec, Family, RouteSpec, RuleSpec
from ec2net.state import Phase, Store
from tests.unit.fakes import PRIMARY_MAC, FakeImds, FakeKernel, Killed, engine, ip

MAC1 = "02:00:00:00:02:14"
MAC2 = "02:00:00:00:02:15"
MAC3 = "02:00:00:00:02:16"


@pytest.fixture
def kernel() -> FakeKernel:
    k = FakeKernel()
    k.plug("eth0", PRIMARY_MAC, 2)
    k.plug("eth1", MAC1, 3)
    return k


@pytest.fixture
def imds() -> FakeImds:
    i = FakeImds()
    i.eni(PRIMARY_MAC, 0, ["10.0.1.10"], subnet="10.0.1.0/24")
    i.eni(MAC1, 1, ["10.0.2.20", "10.0.2.21"], ipv6s=["2600:1f16:292:2::20"])
    return i


def ours(kernel: FakeKernel) -> tuple[set[str], set[str], set[str]]:
    addrs, routes, rules = kernel.state()
    return {str(a) for a in addrs}, {str(r) for r in routes}, {str(r) for r in rules}


def clean_state(tmp_path: Path, kernel: FakeKernel, imds: FakeImds, verb: str) -> object:
    """What a fresh run of `verb` gives on a fresh kernel with the same links."""
    fresh = FakeKernel()
    for ln in kernel.links():
        fresh.plug(ln.name, ln.mac, ln.index, ln.driver)
    e = engine(fresh, imds, tmp_path / "clean")
    e.up("eth1") if verb == "up" else e.scan()
    return ours(fresh)


def test_up_records_what_it_added(tmp_path: Path, kernel: FakeKernel, imds: FakeImds) -> None:
    r = engine(kernel, imds, tmp_path).up("eth1")
    assert r.action is Action.CONFIGURED
    addrs, routes, rules = ours(kernel)
    assert len(routes) == 6  # per family: subnet, VPC, default
    assert addrs == {
        "address 10.0.2.20/24 dev eth1 noprefixroute",
        "address 10.0.2.21/32 dev eth1 noprefixroute",
        "address 2600:1f16:292:2::20/128 dev eth1 noprefixroute",
    }
    assert len(rules) == 2 * 3  # 10.0.2.20/31 (an exact block) and the IPv6 address
    rec = Store(tmp_path / "run").load(MAC1)
    assert rec is not None and rec.phase == Phase.APPLIED.value and rec.table == 10001
    assert set(rec.owned_ips) == {"10.0.2.20", "10.0.2.21", "2600:1f16:292:2::20"}
    again = engine(kernel, imds, tmp_path).up("eth1")
    assert again.action is Action.UNCHANGED and not again.changes


def test_fresh_within_spares_imds_for_that_very_link_only(
    tmp_path: Path, kernel: FakeKernel, imds: FakeImds
) -> None:
    engine(kernel, imds, tmp_path).up("eth1")  # the daemon, a moment before the unit
    before = imds.requests
    r = engine(kernel, imds, tmp_path).up("eth1", fresh_within=10)
    assert r.action is Action.UNCHANGED and imds.requests == before
    # without it (an operator's `ec2net up`) IMDS is read again
    engine(kernel, imds, tmp_path).up("eth1")
    assert imds.requests > before
    # the same MAC on a new link (unplugged, plugged again): the record is not for it
    kernel.unplug("eth1")
    kernel.plug("eth1", MAC1, 9)
    before = imds.requests
    r = engine(kernel, imds, tmp_path).up("eth1", fresh_within=10)
    assert imds.requests > before and r.action is Action.CONFIGURED
    assert "address 10.0.2.21/32 dev eth1 noprefixroute" in ours(kernel)[0]


def test_a_nic_that_goes_while_imds_does_not_list_it_ends_the_wait(
    tmp_path: Path, kernel: FakeKernel, imds: FakeImds
) -> None:
    """A detach during the propagation wait: the wait (which holds the ENI's lock that
    the detach's cleanup needs) ends when the link goes, not at the timeout."""
    kernel.plug("eth2", MAC2, 4)  # not listed in IMDS (being attached, or detached)
    e = engine(kernel, imds, tmp_path, propagation_timeout=5.0)  # without: ImdsNotYet
    timer = threading.Timer(0.3, kernel.unplug, args=("eth2",))
    timer.start()
    try:
        with pytest.raises(InterfaceGone, match="went away"):
            e.up("eth2")
    finally:
        timer.cancel()
    # and the lock is free again
    assert e.down("eth2").action is Action.UNCHANGED


def test_reconverge_works_from_the_record_without_imds(
    tmp_path: Path, kernel: FakeKernel, imds: FakeImds
) -> None:
    e = engine(kernel, imds, tmp_path)
    e.up("eth1")
    kernel.routes = {r for r in kernel.routes if r.dst.version == 4}  # lost its IPv6 table
    before = imds.requests
    r = e.reconverge("eth1")
    assert r.action is Action.CONFIGURED and imds.requests == before
    assert ours(kernel) == clean_state(tmp_path, kernel, imds, "up")
    before = imds.requests
    # a record of the same MAC on an earlier link is not this link's: left to `up`
    kernel.unplug("eth1")
    kernel.plug("eth1", MAC1, 9)
    assert e.reconverge("eth1").action is Action.UNCHANGED and imds.requests == before


def test_one_snapshot_per_converge_plus_verify(
    tmp_path: Path, kernel: FakeKernel, imds: FakeImds
) -> None:
    for n in range(2, 7):
        mac = f"02:00:00:00:03:{n:02x}"
        kernel.plug(f"eth{n}", mac, 10 + n)
        imds.eni(mac, n, [f"10.0.3.{n + 10}"], subnet="10.0.3.0/24")
    e = engine(kernel, imds, tmp_path)
    e.scan()
    assert kernel.snapshots == 2  # the converge's and verify's, for six ENIs
    kernel.snapshots = 0
    results = e.refresh()
    assert {r.action for r in results} == {Action.UNCHANGED}
    assert kernel.snapshots == 1  # nothing changed: nothing to verify


def test_address_already_on_the_link_is_never_ours(
    tmp_path: Path, kernel: FakeKernel, imds: FakeImds
) -> None:
    dhcp = AddressSpec("eth1", ipaddress.ip_interface("10.0.2.20/24"), False)
    kernel.addrs[3].add(dhcp)
    e = engine(kernel, imds, tmp_path)
    e.up("eth1")
    rec = Store(tmp_path / "run").load(MAC1)
    assert rec is not None and "10.0.2.20" not in rec.owned_ips
    e.down("eth1")
    assert kernel.addrs[3] == {dhcp}


@pytest.mark.parametrize("verb", ["up", "scan"])
def test_kill_at_every_instant_of_a_converge_then_rerun_converges(
    tmp_path: Path, kernel: FakeKernel, imds: FakeImds, verb: str
) -> None:
    want = clean_state(tmp_path, kernel, imds, verb)
    probe = FakeKernel()
    for ln in kernel.links():
        probe.plug(ln.name, ln.mac, ln.index)
    engine(probe, imds, tmp_path / "probe").up("eth1")
    total = probe.applied
    assert total > 10
    # A kill before each change, and one while verifying after the last.
    for k in range(total + 1):
        kern = FakeKernel()
        for ln in kernel.links():
            kern.plug(ln.name, ln.mac, ln.index)
        run = tmp_path / f"k{k}"
        if k < total:
            kern.crash_after = k
        else:
            kern.crash_on_snapshot = 2
        e = engine(kern, imds, run)
        with pytest.raises(Killed):
            e.up("eth1") if verb == "up" else e.scan()
        rec = Store(run / "run").load(MAC1)
        # Intent was on disk before the first change: the record covers what was added.
        assert rec is not None and rec.phase == Phase.APPLYING.value
        added = {a.address.ip for found in kern.addrs.values() for a in found}
        assert added <= rec.owned()
        kern.crash_after = kern.crash_on_snapshot = None
        engine(kern, imds, run).up("eth1") if verb == "up" else engine(kern, imds, run).scan()
        assert ours(kern) == want, f"after a kill at change {k}"
        assert Store(run / "run").load(MAC1).phase == Phase.APPLIED.value  # type: ignore[union-attr]


def test_down_after_a_killed_up_removes_everything_it_added(
    tmp_path: Path, kernel: FakeKernel, imds: FakeImds
) -> None:
    for k in (0, 1, 3, 8, 14):
        kern = FakeKernel()
        for ln in kernel.links():
            kern.plug(ln.name, ln.mac, ln.index)
        kern.crash_after = k
        run = tmp_path / f"k{k}"
        with pytest.raises(Killed):
            engine(kern, imds, run).up("eth1")
        kern.crash_after = None
        engine(kern, imds, run).down("eth1")
        assert ours(kern) == (set(), set(), set()), f"after a kill at change {k}"
        assert Store(run / "run").records() == []


def test_killed_removal_keeps_its_record_and_the_next_run_finishes(
    tmp_path: Path, kernel: FakeKernel, imds: FakeImds
) -> None:
    engine(kernel, imds, tmp_path).up("eth1")
    kernel.applied, kernel.crash_after = 0, 4
    with pytest.raises(Killed):
        engine(kernel, imds, tmp_path).down("eth1")
    rec = Store(tmp_path / "run").load(MAC1)
    assert rec is not None and rec.phase == Phase.REMOVING.value
    kernel.crash_after = None
    engine(kernel, imds, tmp_path).down("eth1")
    assert ours(kernel) == (set(), set(), set())
    assert Store(tmp_path / "run").records() == []


def test_partial_removal_keeps_the_record_and_fails(
    tmp_path: Path, kernel: FakeKernel, imds: FakeImds
) -> None:
    engine(kernel, imds, tmp_path).up("eth1")
    stuck = next(r for r in kernel.rules if r.family is Family.V4)
    kernel.refuse.add(str(stuck))
    with pytest.raises(ApplyFailed):
        engine(kernel, imds, tmp_path).down("eth1")
    assert kernel.rules == {stuck}
    rec = Store(tmp_path / "run").load(MAC1)
    assert rec is not None and rec.phase == Phase.REMOVING.value
    kernel.refuse.clear()
    engine(kernel, imds, tmp_path).down("eth1")
    assert kernel.rules == set() and Store(tmp_path / "run").records() == []


def test_unplug_then_daemon_path_removes_rules(
    tmp_path: Path, kernel: FakeKernel, imds: FakeImds
) -> None:
    engine(kernel, imds, tmp_path).up("eth1")
    kernel.unplug("eth1")
    assert kernel.rules  # the kernel keeps rules of a gone device
    r = engine(kernel, imds, tmp_path).down_mac(MAC1)
    assert r.action is Action.REMOVED
    assert ours(kernel) == (set(), set(), set())


def test_table_handed_over_in_one_scan(tmp_path: Path, kernel: FakeKernel, imds: FakeImds) -> None:
    engine(kernel, imds, tmp_path).up("eth1")
    kernel.unplug("eth1")
    imds.drop(MAC1)
    kernel.plug("eth1", MAC2, 7)  # a new ENI at the same device number, same name
    imds.eni(MAC2, 1, ["10.0.2.30"])
    results = engine(kernel, imds, tmp_path).scan()
    assert {r.action for r in results} == {Action.CONFIGURED, Action.REMOVED}
    want = clean_state(tmp_path, kernel, imds, "scan")
    assert ours(kernel) == want
    assert [r.mac for r in Store(tmp_path / "run").records()] == [MAC2]


def test_two_new_enis_claiming_one_table_are_both_refused(
    tmp_path: Path, kernel: FakeKernel, imds: FakeImds
) -> None:
    kernel.plug("eth2", MAC2, 4)
    imds.eni(MAC2, 1, ["10.0.2.30"])  # stale device-number: the same as eth1's
    kernel.plug("eth3", MAC3, 5)
    imds.eni(MAC3, 3, ["10.0.2.40"])
    with pytest.raises(TableConflict, match="table 10001"):
        engine(kernel, imds, tmp_path).scan()
    assert {r.table for r in kernel.routes} == {10003}  # the third ENI was configured
    assert [r.mac for r in Store(tmp_path / "run").records()] == [MAC3]


def test_a_new_eni_never_takes_a_live_enis_table(
    tmp_path: Path, kernel: FakeKernel, imds: FakeImds
) -> None:
    engine(kernel, imds, tmp_path).up("eth1")
    before = ours(kernel)
    kernel.plug("eth2", MAC2, 4)
    imds.eni(MAC2, 1, ["10.0.2.30"])
    with pytest.raises(TableConflict, match=r"eth2: .*table 10001 belongs to eth1"):
        engine(kernel, imds, tmp_path).up("eth2")
    assert ours(kernel) == before


def test_scan_sweeps_leftovers_no_record_points_to(
    tmp_path: Path, kernel: FakeKernel, imds: FakeImds
) -> None:
    stale_rule = RuleSpec(10005, Family.V4, 10005, ipaddress.ip_network("10.0.9.9/32"), 0)
    stale_main = RuleSpec(20005, Family.V4, 254, ipaddress.ip_network("10.0.9.9/32"), 0)
    stale_route = RouteSpec(10005, ipaddress.ip_network("0.0.0.0/0"), "eth1", ip("10.0.2.1"))
    kernel.rules |= {stale_rule, stale_main}
    kernel.routes.add(stale_route)
    engine(kernel, imds, tmp_path).scan()
    assert stale_rule not in kernel.rules and stale_main not in kernel.rules
    assert stale_route not in kernel.routes
    assert {r.table for r in kernel.routes} == {10001}


@pytest.mark.parametrize(
    "content",
    [
        '{"mac": "02:00:00:00:02:14", "table": 10001, "owned_ips": ["10.0.2.21"], "ver',
        "\0\0\0garbage",
        json.dumps(
            {
                "mac": MAC1,
                "eni_id": "eni-x",
                "ifname": "eth1",
                "ifindex": 3,
                "table": 10001,
                "owned_ips": ["10.0.2.21"],
                "version": 99,
                "phase": "something-new",
            }
        ),
    ],
    ids=["truncated", "garbage", "newer-version"],
)
def test_unreadable_record_is_set_aside_never_taken_as_nothing(
    tmp_path: Path, kernel: FakeKernel, imds: FakeImds, content: str
) -> None:
    engine(kernel, imds, tmp_path).up("eth1")
    path = tmp_path / "run" / "enis" / (MAC1.replace(":", "-") + ".json")
    path.write_text(content)
    salvaged = content.startswith("{") and content.endswith("}")  # JSON that parses
    # A secondary address that IMDS no longer lists: ours only if the record says so.
    imds.eni(MAC1, 1, ["10.0.2.20"], ipv6s=["2600:1f16:292:2::20"])
    engine(kernel, imds, tmp_path).refresh()
    assert path.with_name(path.name + ".unreadable").read_text() == content
    have = {str(a.address.ip) for a in kernel.addrs[3]}
    if salvaged:
        assert "10.0.2.21" not in have  # salvaged as ours: removed as IMDS now says
    else:
        assert "10.0.2.21" in have  # ownership unknown: left alone, never guessed
    assert "10.0.2.20" in have
    rec = Store(tmp_path / "run").load(MAC1)
    assert rec is not None and rec.table == 10001 and rec.phase == Phase.APPLIED.value
    assert {str(r) for r in kernel.rules} == {str(r) for r in clean_rules(tmp_path, imds)}


def clean_rules(tmp_path: Path, imds: FakeImds) -> frozenset[RuleSpec]:
    fresh = FakeKernel()
    fresh.plug("eth0", PRIMARY_MAC, 2)
    fresh.plug("eth1", MAC1, 3)
    engine(fresh, imds, tmp_path / "clean-rules").up("eth1")
    return frozenset(fresh.rules)


def test_ports_of_a_bridge_are_left_alone_quietly(
    tmp_path: Path, kernel: FakeKernel, imds: FakeImds
) -> None:
    kernel.links_["eth1"] = replace(kernel.links_["eth1"], master=9)
    r = engine(kernel, imds, tmp_path).up("eth1")
    assert r.action is Action.SKIPPED and "bridge" in r.detail
    assert imds.requests <= 1  # at most the primary's MAC: no ENI reads for a port
    assert ours(kernel) == (set(), set(), set())


def test_refresh_does_not_resurrect_an_eni_removed_meanwhile(
    tmp_path: Path, kernel: FakeKernel, imds: FakeImds
) -> None:
    e = engine(kernel, imds, tmp_path)
    e.up("eth1")
    real_get = imds.get

    def get_then_down(path: str) -> str:
        value = real_get(path)
        if path.endswith("local-ipv4s") and Store(tmp_path / "run").records():
            engine(kernel, FakeImds(imds.tree), tmp_path).down("eth1")
        return value

    imds.get = get_then_down  # type: ignore[method-assign]
    e.refresh()
    assert ours(kernel) == (set(), set(), set())


def test_a_name_the_backend_refuses_fails_that_link_only(
    tmp_path: Path, kernel: FakeKernel, imds: FakeImds
) -> None:
    from ec2net.errors import UnsupportedInterfaceName

    kernel.plug("a;b", MAC2, 4)
    imds.eni(MAC2, 2, ["10.0.2.30"])

    def blocked(ifname: str) -> str | None:
        if ";" in ifname:
            raise UnsupportedInterfaceName(ifname, "ifcfg", "is not a shell word")
        return None

    kernel.blocked = blocked  # type: ignore[method-assign]
    with pytest.raises(UnsupportedInterfaceName):
        engine(kernel, imds, tmp_path).scan()
    assert {r.table for r in kernel.routes} == {10001}  # eth1 was configured all the same


def test_a_garbled_primary_mac_is_an_error_naming_the_key(
    tmp_path: Path, kernel: FakeKernel, imds: FakeImds
) -> None:
    from ec2net.errors import MetadataError

    imds.tree["mac"] = "<html>oops</html>"
    with pytest.raises(MetadataError, match="mac"):
        engine(kernel, imds, tmp_path).up("eth1")
    assert ours(kernel) == (set(), set(), set())
