"""plan + diff: golden desired states per routing scenario, and the diff rules (pure)."""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path

import pytest

from ec2net.diff import Current, changeset, diff_interface
from ec2net.metadata import EniMetadata, parse_eni
from ec2net.model import (
    PRIO_MAIN,
    TABLE_MAIN,
    AddressSpec,
    Link,
    Op,
    RuleSpec,
    rule_of_table,
    sort_key,
)
from ec2net.plan import plan_interface
from tests.unit.planning import Planned, plan

GOLDEN = Path(__file__).parent / "golden"
PRIMARY = "02:00:0a:00:01:0a"


def eni(mac: str, **raw: str) -> EniMetadata:
    base = {
        "device-number": "1",
        "interface-id": "eni-0" + mac.replace(":", "")[-16:].rjust(16, "0"),
        "local-ipv4s": "10.0.2.20",
        "subnet-ipv4-cidr-block": "10.0.2.0/24",
        "vpc-ipv4-cidr-blocks": "10.0.0.0/16",
    }
    base.update({k.replace("_", "-"): v for k, v in raw.items()})
    return parse_eni(mac, {k: v for k, v in base.items() if v}, PRIMARY)


def link(name: str, mac: str, index: int = 3) -> Link:
    return Link(index, name, mac, "ena")


def render(state: Planned) -> str:
    lines = []
    for p in state.interfaces:
        lines.append(f"# {p.ifname} {p.mac} {p.eni_id} table {p.table}")
        lines += [str(o) for o in sorted(p.addresses, key=sort_key)]
        lines += [str(o) for o in sorted(p.routes, key=sort_key)]
        lines += [str(o) for o in sorted(p.rules, key=sort_key)]
    return "\n".join(lines) + "\n"


SCENARIOS = {
    "other_subnet_secondaries": lambda: [
        (
            eni("02:00:00:00:02:14", local_ipv4s="10.0.2.20\n10.0.2.21\n10.0.2.22\n10.0.2.40"),
            link("ens6", "02:00:00:00:02:14"),
        ),
    ],
    "same_subnet_as_primary": lambda: [
        (
            eni(
                "02:00:00:00:01:15",
                local_ipv4s="10.0.1.21\n10.0.1.22",
                subnet_ipv4_cidr_block="10.0.1.0/24",
            ),
            link("ens6", "02:00:00:00:01:15"),
        ),
        (
            eni(
                "02:00:00:00:01:16",
                device_number="2",
                local_ipv4s="10.0.1.31",
                subnet_ipv4_cidr_block="10.0.1.0/24",
            ),
            link("ens7", "02:00:00:00:01:16", 4),
        ),
    ],
    "ipv6": lambda: [
        (
            eni(
                "02:00:00:00:02:14",
                ipv6s="2600:1f16:292:2::20\n2600:1f16:292:2::21",
                subnet_ipv6_cidr_blocks="2600:1f16:292:2::/64",
                vpc_ipv6_cidr_blocks="2600:1f16:292::/56",
            ),
            link("ens6", "02:00:00:00:02:14"),
        ),
    ],
    "delegated_prefixes": lambda: [
        (
            eni(
                "02:00:00:00:02:14",
                ipv4_prefix="10.0.2.64/28",
                ipv6s="2600:1f16:292:2::20",
                subnet_ipv6_cidr_blocks="2600:1f16:292:2::/64",
                ipv6_prefix="2600:1f16:292:2:a000::/80",
            ),
            link("ens6", "02:00:00:00:02:14"),
        ),
    ],
    "two_cards": lambda: [
        (
            eni("02:00:00:00:02:14", network_card="1", device_number="0"),
            link("ens6", "02:00:00:00:02:14"),
        ),
        (
            eni(
                "02:00:00:00:03:14",
                network_card="0",
                device_number="1",
                local_ipv4s="10.0.3.20",
                subnet_ipv4_cidr_block="10.0.3.0/24",
            ),
            link("ens7", "02:00:00:00:03:14", 4),
        ),
    ],
    "managed_primary": lambda: [
        (
            eni(
                PRIMARY,
                device_number="0",
                local_ipv4s="10.0.1.10\n10.0.1.11",
                subnet_ipv4_cidr_block="10.0.1.0/24",
            ),
            link("ens5", PRIMARY, 2),
        ),
    ],
}


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_golden_plan(name: str) -> None:
    got = render(plan(SCENARIOS[name]()))
    path = GOLDEN / f"plan_{name}.txt"
    if os.environ.get("UPDATE_GOLDEN"):
        path.write_text(got)
    assert got == path.read_text()


def test_two_cards_never_share_a_table() -> None:
    state = plan(SCENARIOS["two_cards"]())
    assert sorted(p.table for p in state.interfaces) == [10001, 10100]


def test_secondary_addresses_aggregate_into_blocks() -> None:
    e = eni("02:00:00:00:02:14", local_ipv4s="10.0.2.20\n10.0.2.21\n10.0.2.22\n10.0.2.23")
    p = plan_interface(e, link("ens6", e.mac))
    v4_sources = sorted(str(r.src) for r in p.rules if r.suppress_prefixlength is None)
    assert v4_sources == ["10.0.2.20/30"]


def test_primary_own_address_is_never_planned() -> None:
    e = eni(
        PRIMARY,
        device_number="0",
        local_ipv4s="10.0.1.10\n10.0.1.11",
        subnet_ipv4_cidr_block="10.0.1.0/24",
    )
    p = plan_interface(e, link("ens5", PRIMARY))
    assert [str(a.address) for a in p.addresses] == ["10.0.1.11/32"]


# --- diff -----------------------------------------------------------------------------


def _plan() -> tuple[EniMetadata, Link]:
    e = eni("02:00:00:00:02:14", local_ipv4s="10.0.2.20\n10.0.2.21")
    return e, link("ens6", e.mac)


def test_diff_from_nothing_adds_everything_in_order() -> None:
    e, ln = _plan()
    p = plan_interface(e, ln)
    cs = changeset(diff_interface(p, Current(frozenset(), frozenset(), frozenset(), frozenset())))
    kinds = [type(c.obj).__name__ for c in cs.changes]
    assert all(c.op is Op.ADD for c in cs.changes)
    assert kinds == sorted(kinds, key=["AddressSpec", "RouteSpec", "RuleSpec"].index)
    assert len(cs) == len(p.objects())


def test_diff_of_converged_state_is_empty() -> None:
    e, ln = _plan()
    p = plan_interface(e, ln)
    cur = Current(p.addresses, frozenset(a.address.ip for a in p.addresses), p.routes, p.rules)
    assert not changeset(diff_interface(p, cur))


def test_foreign_address_satisfies_plan_but_is_never_deleted() -> None:
    e, ln = _plan()
    p = plan_interface(e, ln)
    dhcp = AddressSpec("ens6", ipaddress.IPv4Interface("10.0.2.20/24"), noprefixroute=False)
    stranger = AddressSpec("ens6", ipaddress.IPv4Interface("192.168.7.1/24"))
    cur = Current(frozenset({dhcp, stranger}), frozenset(), p.routes, p.rules)
    d = diff_interface(p, cur)
    assert [str(a.address) for a in d.add if isinstance(a, AddressSpec)] == ["10.0.2.21/32"]
    assert d.delete == []
    # removal deletes only what the record says we added
    owned = frozenset({ipaddress.ip_address("10.0.2.21")})
    gone = diff_interface(None, Current(frozenset({dhcp, stranger}), owned, p.routes, p.rules))
    assert [str(a.address) for a in gone.delete if isinstance(a, AddressSpec)] == []
    added = AddressSpec("ens6", ipaddress.IPv4Interface("10.0.2.21/32"))
    gone = diff_interface(
        None, Current(frozenset({dhcp, stranger, added}), owned, p.routes, p.rules)
    )
    assert [o for o in gone.delete if isinstance(o, AddressSpec)] == [added]
    assert set(gone.delete) >= set(p.routes) | set(p.rules)


def test_removed_secondary_is_deleted() -> None:
    e, ln = _plan()
    old = plan_interface(e, ln)
    e2 = eni("02:00:00:00:02:14", local_ipv4s="10.0.2.20")
    new = plan_interface(e2, ln)
    owned = frozenset(a.address.ip for a in old.addresses)
    cs = changeset(diff_interface(new, Current(old.addresses, owned, old.routes, old.rules)))
    dels = [str(c.obj) for c in cs.changes if c.op is Op.DEL]
    assert "address 10.0.2.21/32 dev ens6 noprefixroute" in dels
    # the aggregated block 10.0.2.20/31 shrinks back to the single address
    assert any("from 10.0.2.20/31" in d for d in dels)
    adds = [str(c.obj) for c in cs.changes if c.op is Op.ADD]
    assert any("from 10.0.2.20/32" in a for a in adds)


def test_every_rule_belongs_to_one_eni() -> None:
    """No rule is shared: removing one ENI can never take another's routing with it."""
    state = plan(SCENARIOS["two_cards"]())
    seen: set[RuleSpec] = set()
    for p in state.interfaces:
        assert all(rule_of_table(r, p.table) for r in p.rules)
        main = [r for r in p.rules if r.table == TABLE_MAIN]
        assert main and all(r.priority == PRIO_MAIN + p.table - 10000 for r in main)
        assert all(r.src is not None and r.suppress_prefixlength == 0 for r in main)
        assert not seen & p.rules
        seen |= p.rules
