"""Properties, checked on generated inputs (hypothesis):

- the metadata parsers turn ANY text or bytes in any key into an EniMetadata or a
  MetadataError (ImdsNotYet from a fetch), never another exception;
- the planner gives every ENI its own table, covers each owned address by exactly one
  rule block per priority, and is deterministic;
- diff then apply converges: applying a delta to a simulated kernel and diffing again
  leaves nothing to do, and never touches an address that is not ours.
"""

from __future__ import annotations

import contextlib
import ipaddress
from collections.abc import Mapping
from dataclasses import replace
from typing import Optional, Union

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ec2net.diff import Current, Delta, diff_interface
from ec2net.errors import ImdsAbsent, ImdsNotYet, MetadataError
from ec2net.imds import ImdsClient, decode_body
from ec2net.metadata import (
    DYNAMIC_KEYS,
    STATIC_KEYS,
    EniMetadata,
    fetch_dynamic,
    fetch_eni,
    parse_eni,
)
from ec2net.model import (
    PRIO_DEFAULT,
    PRIO_MAIN,
    PRIO_VPC,
    TABLE_BASE,
    AddressSpec,
    Family,
    InterfacePlan,
    IPAddress,
    IPNetwork,
    Link,
    RouteSpec,
    RuleSpec,
)
from ec2net.plan import plan_interface
from tests.unit.planning import plan

# Moderate counts: the whole file runs in a few seconds.
FEW = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
MANY = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

MAC = "02:00:0a:00:02:14"
PRIMARY = "02:00:0a:00:01:0a"
KEYS = (*STATIC_KEYS, *DYNAMIC_KEYS)
GOOD = {
    "device-number": "1",
    "interface-id": "eni-0bbbbbbbbbbbbbbb1",
    "local-ipv4s": "10.0.2.20\n10.0.2.21",
    "subnet-ipv4-cidr-block": "10.0.2.0/24",
    "ipv6s": "2600:1f16:292:2::20",
    "subnet-ipv6-cidr-blocks": "2600:1f16:292:2:0:0:0:0/64",
    "vpc-ipv4-cidr-blocks": "10.0.0.0/16",
    "vpc-ipv6-cidr-blocks": "2600:1f16:292::/56",
    "ipv4-prefix": "10.0.2.64/28",
    "ipv6-prefix": "2600:1f16:292:2:a000::/80",
}

# --- metadata parsers: total over any input -------------------------------------------

# Text that is nearly right reaches the deep checks; arbitrary text the shallow ones.
_near_line = st.one_of(
    st.ip_addresses().map(str),
    st.ip_addresses(v=4).map(lambda a: f"{a}/{a.max_prefixlen}"),
    st.builds(lambda a, n: f"{a}/{n}", st.ip_addresses(), st.integers(-2, 300)),
    st.integers(-5, 200).map(str),
    st.sampled_from(["10.0.2.20", "10.0.2.0/24", "2600:1f16:292:2::/64", "eni-0abc12345", ""]),
    st.text(max_size=12),
)
_near = st.lists(_near_line, max_size=6).map("\n".join)
any_text = st.one_of(st.text(max_size=60), _near)


def _parses_or_metadata_error(raw: Mapping[str, str]) -> None:
    try:
        eni = parse_eni(MAC, raw, PRIMARY)
    except MetadataError as err:
        assert err.key and err.reason  # names the key and why
        return
    assert isinstance(eni, EniMetadata)
    for addr in eni.ipv4s:  # what parses is consistent
        assert eni.subnet4 is not None and addr in eni.subnet4


@MANY
@given(key=st.sampled_from(KEYS), value=any_text)
def test_any_text_in_one_key(key: str, value: str) -> None:
    _parses_or_metadata_error({**GOOD, key: value})


@FEW
@given(key=st.sampled_from(KEYS), data=st.binary(max_size=80))
def test_any_bytes_in_one_key(key: str, data: bytes) -> None:
    try:
        text = decode_body(key, data)
    except MetadataError as err:
        assert err.key == key
        return
    _parses_or_metadata_error({**GOOD, key: text})


@MANY
@given(raw=st.dictionaries(st.sampled_from(KEYS), any_text, max_size=len(KEYS)))
def test_any_set_of_keys(raw: dict[str, str]) -> None:
    _parses_or_metadata_error(raw)


class _FakeImds(ImdsClient):
    """Serves one ENI's raw values as IMDS would: a listing, 404 for the rest."""

    def __init__(self, raw: Mapping[str, str], listing: Optional[str] = None) -> None:
        super().__init__(("http://127.0.0.1:9",), sleep=lambda s: None)
        self.raw = raw
        self.listing = listing if listing is not None else "\n".join(raw)

    def get(self, path: str) -> str:
        prefix = f"network/interfaces/macs/{MAC}/"
        key = path[len(prefix) :]
        if key == "":
            return self.listing
        if key in self.raw:
            return self.raw[key]
        raise ImdsAbsent(path)


@FEW
@given(
    raw=st.dictionaries(st.sampled_from(KEYS), any_text, max_size=len(KEYS)),
    listing=st.one_of(st.none(), any_text),
)
def test_fetches_raise_only_metadata_errors_or_not_yet(
    raw: dict[str, str], listing: Optional[str]
) -> None:
    client = _FakeImds({**GOOD, **raw}, listing)
    try:
        eni = fetch_eni(client, MAC, PRIMARY)
    except (MetadataError, ImdsNotYet):
        eni = parse_eni(MAC, GOOD, PRIMARY)
    with contextlib.suppress(MetadataError, ImdsNotYet):
        fetch_dynamic(client, eni)


# --- generated valid ENIs for the planner ---------------------------------------------

SUBNETS4 = [ipaddress.IPv4Network(f"10.0.{n}.0/24") for n in range(1, 4)]
SUBNETS6 = [ipaddress.IPv6Network(f"2600:1f16:292:{n}::/64") for n in range(1, 4)]


@st.composite
def enis(draw: st.DrawFn) -> list[EniMetadata]:
    """1-5 ENIs with distinct (card, device), possibly sharing subnets, with disjoint
    addresses; some IPv6-only, some IPv4-only."""
    positions = draw(
        st.lists(
            st.tuples(st.integers(0, 2), st.integers(0, 6)), min_size=1, max_size=5, unique=True
        )
    )
    used: set[int] = set()
    out: list[EniMetadata] = []
    for n, (card, dev) in enumerate(positions):
        s = draw(st.integers(0, len(SUBNETS4) - 1))
        v4 = draw(st.booleans())
        v6 = draw(st.booleans()) or not v4
        ipv4s: tuple[ipaddress.IPv4Address, ...] = ()
        ipv6s: tuple[ipaddress.IPv6Address, ...] = ()
        prefixes4: tuple[ipaddress.IPv4Network, ...] = ()
        if v4:
            free = [o for o in range(4, 64) if o not in used]
            offs = draw(st.lists(st.sampled_from(free), min_size=1, max_size=6, unique=True))
            used.update(offs)
            ipv4s = tuple(SUBNETS4[s].network_address + o for o in offs)
            if draw(st.booleans()):
                # one /28 per ENI from the subnet's upper half, never an address's
                prefixes4 = (ipaddress.IPv4Network(f"10.0.{s + 1}.{128 + 16 * (n % 8)}/28"),)
        if v6:
            offs6 = draw(st.lists(st.integers(1, 2**16), min_size=1, max_size=4, unique=True))
            ipv6s = tuple(SUBNETS6[s].network_address + (n << 20) + o for o in offs6)
        out.append(
            EniMetadata(
                mac=f"02:00:00:00:{n:02x}:01",
                eni_id=f"eni-0{n:016x}",
                device_number=dev,
                network_card=card,
                is_primary=False,
                ipv4s=ipv4s,
                subnet4=SUBNETS4[s] if v4 else None,
                ipv6s=ipv6s,
                subnet6=(SUBNETS6[s],) if v6 else (),
                ipv4_prefixes=prefixes4,
                vpc4=(ipaddress.IPv4Network("10.0.0.0/16"),),
                vpc6=(ipaddress.IPv6Network("2600:1f16:292::/56"),),
            )
        )
    return out


def _pairs(metas: list[EniMetadata]) -> list[tuple[EniMetadata, Link]]:
    return [(m, Link(3 + i, f"ens{5 + i}", m.mac, "ena")) for i, m in enumerate(metas)]


def _owned(eni: EniMetadata) -> list[Union[IPAddress, IPNetwork]]:
    return [*eni.ipv4s, *eni.ipv6s, *eni.ipv4_prefixes, *eni.ipv6_prefixes]


@FEW
@given(metas=enis())
def test_tables_unique_per_card_and_device(metas: list[EniMetadata]) -> None:
    state = plan(_pairs(metas))
    tables = [p.table for p in state.interfaces]
    assert len(set(tables)) == len(metas)
    by_mac = {m.mac: m for m in metas}
    for p in state.interfaces:
        m = by_mac[p.mac]
        assert p.table == TABLE_BASE + 100 * m.network_card + m.device_number


@FEW
@given(metas=enis())
def test_every_owned_address_has_exactly_one_block_per_priority(
    metas: list[EniMetadata],
) -> None:
    state = plan(_pairs(metas))
    rules = [r for p in state.interfaces for r in p.rules]
    for eni in metas:
        i = eni.index
        for owned in _owned(eni):
            net = ipaddress.ip_network(owned)
            family = Family.V4 if net.version == 4 else Family.V6
            covering = [
                r
                for r in rules
                if r.family is family and r.src is not None and net.subnet_of(r.src)  # type: ignore[arg-type]
            ]
            assert sorted(r.priority for r in covering) == [
                PRIO_VPC + i,
                PRIO_MAIN + i,
                PRIO_DEFAULT + i,
            ], (owned, covering)
            assert len({r.src for r in covering}) == 1  # one block, used at the three


@FEW
@given(metas=enis())
def test_planning_is_deterministic(metas: list[EniMetadata]) -> None:
    pairs = _pairs(metas)
    assert plan(pairs) == plan(list(reversed(pairs)))
    assert plan(pairs) == plan(pairs)


# --- diff and apply converge ------------------------------------------------------------


def _apply(cur: Current, delta: Delta) -> Current:
    """What a kernel that accepted every change would then hold; added addresses
    become ours, as the engine records them."""
    addrs = set(cur.link_addresses)
    owned = set(cur.owned_ips)
    routes, rules = set(cur.routes), set(cur.rules)
    for obj in delta.delete:
        if isinstance(obj, AddressSpec):
            addrs = {a for a in addrs if a.address.ip != obj.address.ip}
            owned.discard(obj.address.ip)
        elif isinstance(obj, RouteSpec):
            routes.discard(obj)
        elif isinstance(obj, RuleSpec):
            rules.discard(obj)
    for obj in delta.add:
        if isinstance(obj, AddressSpec):
            addrs.add(obj)
            owned.add(obj.address.ip)
        elif isinstance(obj, RouteSpec):
            routes.add(obj)
        elif isinstance(obj, RuleSpec):
            rules.add(obj)
    return Current(frozenset(addrs), frozenset(owned), frozenset(routes), frozenset(rules))


@st.composite
def plan_and_current(draw: st.DrawFn) -> tuple[InterfacePlan, Current, InterfacePlan]:
    """A plan, a kernel state partly like it, partly stale (an older plan of the same
    ENI), with foreign addresses; and a second plan to move to."""
    metas = draw(enis())
    eni, link = _pairs(metas)[0]
    want = plan_interface(eni, link)
    other = metas[1] if len(metas) > 1 else eni
    older = plan_interface(
        replace(other, device_number=eni.device_number, network_card=eni.network_card), link
    )
    have_addrs = draw(st.sets(st.sampled_from(sorted(want.addresses | older.addresses, key=str))))
    foreign = AddressSpec(link.name, ipaddress.IPv4Interface("169.254.10.20/32"), False)
    addrs = set(have_addrs) | ({foreign} if draw(st.booleans()) else set())
    present_ips = sorted({a.address.ip for a in addrs}, key=str)
    owned = draw(st.sets(st.sampled_from(present_ips))) if present_ips else set()
    owned.discard(foreign.address.ip)  # a lease is never ours
    routes = draw(st.sets(st.sampled_from(sorted(want.routes | older.routes, key=str))))
    rules = draw(st.sets(st.sampled_from(sorted(want.rules | older.rules, key=str))))
    cur = Current(frozenset(addrs), frozenset(owned), frozenset(routes), frozenset(rules))
    return want, cur, older


@MANY
@given(case=plan_and_current())
def test_apply_then_diff_is_empty(case: tuple[InterfacePlan, Current, InterfacePlan]) -> None:
    want, cur, older = case
    for target in (want, older, None):  # converge, move to another plan, remove all
        delta = diff_interface(target, cur)
        for obj in delta.delete:
            if isinstance(obj, AddressSpec):
                assert obj.address.ip in cur.owned_ips  # only ours is ever deleted
        cur = _apply(cur, delta)
        again = diff_interface(target, cur)
        assert again.add == [] and again.delete == [], (target, again)
    # after removal nothing of ours is left, and foreign addresses are still there
    assert cur.routes == frozenset() and cur.rules == frozenset()
    assert cur.owned_ips == frozenset()
