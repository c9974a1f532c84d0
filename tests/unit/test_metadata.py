"""metadata: parsing raw IMDS text into typed records (pure)."""

from __future__ import annotations

import ipaddress

import pytest

from ec2net.errors import MetadataError
from ec2net.metadata import not_yet_reason, parse_eni

MAC = "02:00:0a:00:02:14"
RAW = {
    "device-number": "1",
    "interface-id": "eni-0bbbbbbbbbbbbbbb1",
    "local-ipv4s": "10.0.2.20\n10.0.2.22\n10.0.2.21",
    "subnet-ipv4-cidr-block": "10.0.2.0/24",
    "ipv6s": "2600:1f16:292:2::20",
    "subnet-ipv6-cidr-blocks": "2600:1f16:292:2:0:0:0:0/64",
    "vpc-ipv4-cidr-blocks": "10.0.0.0/16\n100.64.0.0/16",
    "vpc-ipv6-cidr-blocks": "2600:1f16:292::/56",
}


def test_parse_keeps_primary_first_and_normalises_uncompressed_ipv6() -> None:
    eni = parse_eni(MAC, RAW, primary_mac="02:00:0a:00:01:0a")
    assert eni.ipv4s[0] == ipaddress.IPv4Address("10.0.2.20")
    assert [str(a) for a in eni.ipv4s[1:]] == ["10.0.2.22", "10.0.2.21"]
    assert eni.subnet6 == (ipaddress.IPv6Network("2600:1f16:292:2::/64"),)
    assert eni.vpc4 == (
        ipaddress.IPv4Network("10.0.0.0/16"),
        ipaddress.IPv4Network("100.64.0.0/16"),
    )
    assert eni.network_card == 0
    assert eni.index == 1
    assert not eni.is_primary


def test_network_card_numbers_the_index() -> None:
    eni = parse_eni(MAC, {**RAW, "network-card": "1", "device-number": "0"}, "x")
    assert eni.index == 100
    assert not_yet_reason(eni) is None  # card 1 / device 0 is a real position


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("local-ipv4s", "10.0.2.20\n10.0.2.300"),
        ("local-ipv4s", "10.0.9.20"),  # outside the subnet
        ("device-number", "one"),
        ("device-number", "-1"),
        ("subnet-ipv4-cidr-block", "10.0.2.1/24"),  # host bits set
        ("ipv6s", "2600::zz"),
        ("interface-id", "i-0123"),
        ("ipv4-prefix", "10.0.2.64/33"),
    ],
)
def test_bad_values_name_the_key_and_value(key: str, value: str) -> None:
    with pytest.raises(MetadataError) as err:
        parse_eni(MAC, {**RAW, key: value}, "x")
    assert err.value.key == key
    assert key in str(err.value)


def test_missing_required_key_is_an_error() -> None:
    raw = dict(RAW)
    del raw["interface-id"]
    with pytest.raises(MetadataError, match="interface-id"):
        parse_eni(MAC, raw, "x")


def test_device_number_zero_on_secondary_is_not_yet() -> None:
    eni = parse_eni(MAC, {**RAW, "device-number": "0"}, primary_mac="02:00:0a:00:01:0a")
    assert not_yet_reason(eni) is not None
    primary = parse_eni(MAC, {**RAW, "device-number": "0"}, primary_mac=MAC)
    assert not_yet_reason(primary) is None


def test_ipv6_only_eni() -> None:
    raw = {k: v for k, v in RAW.items() if k not in ("local-ipv4s", "subnet-ipv4-cidr-block")}
    eni = parse_eni(MAC, raw, "x")
    assert eni.ipv4s == ()
    assert eni.subnet4 is None
    assert len(eni.ipv6s) == 1
