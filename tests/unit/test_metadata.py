"""metadata: parsing raw IMDS text into typed records (pure)."""

from __future__ import annotations

import ipaddress
import tracemalloc

import pytest

from ec2net import metadata
from ec2net.errors import MetadataError
from ec2net.metadata import MAX_LINES, not_yet_reason, parse_eni

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


# --- garbage from IMDS: always a MetadataError naming the key and the value ---------

HTML_404 = (
    '<?xml version="1.0" encoding="iso-8859-1"?>\n<!DOCTYPE html>\n'
    "<html><head><title>404 - Not Found</title></head><body><h1>404 - Not Found</h1>"
    "</body></html>"
)


@pytest.mark.parametrize(
    ("key", "value", "reason"),
    [
        ("local-ipv4s", "10.0.2.20\n10.0.2.300", "10.0.2.300"),  # bad IP
        ("local-ipv4s", "10.0.2.20\n10.0.3.20", "outside subnet"),
        ("local-ipv4s", "10.0.2.20\n224.0.0.1", "not an address an ENI can own"),
        ("local-ipv4s", "10.0.2.1", "reserved"),  # the VPC router
        ("local-ipv4s", "10.0.2.255", "reserved"),
        ("local-ipv4s", "10.0.2.20\n10.0.2.21\n10.0.2.20", "listed twice"),
        ("local-ipv4s", "10.0.2.20/24", "not an address"),
        ("local-ipv4s", "", "empty"),
        ("local-ipv4s", "\n\n", "empty"),
        ("local-ipv4s", HTML_404, "HTML"),
        ("local-ipv4s", "10.0.2.20\x00", "NUL"),
        ("ipv6s", "2600:1f16:292:2::20%eth1", "not an address"),  # a scope id
        ("ipv6s", "2600:1f16:292:9::20", "outside subnet"),
        ("ipv6s", "fe80::1", "not an address an ENI can own"),
        ("ipv6s", "2600:1f16:292:2::20\n2600:1f16:292:2:0:0:0:20", "listed twice"),
        ("subnet-ipv4-cidr-block", "10.0.2.0/200", "200"),
        ("subnet-ipv4-cidr-block", "10.0.0.0/8", "not a length EC2 uses"),
        ("subnet-ipv4-cidr-block", "10.0.2.0/24\n10.0.3.0/24", "2 lines"),
        ("subnet-ipv6-cidr-blocks", "2600:1f16:292:2::/200", "200"),
        ("subnet-ipv6-cidr-blocks", "::/0", "not a length EC2 uses"),
        ("vpc-ipv4-cidr-blocks", "10.0.0.0/-1", "-1"),
        ("ipv4-prefix", "10.0.2.64/29", "not a length EC2 uses"),
        ("ipv4-prefix", "10.0.9.64/28", "outside subnet"),
        ("ipv6-prefix", "2600:1f16:292:9:a000::/80", "outside subnet"),
        ("device-number", "one", "not a number"),
        ("device-number", "+1", "not a number"),
        ("device-number", "1_0", "not a number"),
        ("device-number", "\u0661", "not a number"),  # an Arabic-Indic digit: int() takes it
        ("device-number", "100", "out of range"),
        ("device-number", "1\n2", "2 lines"),
        ("network-card", "32", "out of range"),
        ("interface-id", "eni-0bbb bbb", "not an ENI id"),
        ("interface-id", HTML_404, "HTML"),
    ],
)
def test_garbage_is_a_metadata_error_naming_key_and_value(
    key: str, value: str, reason: str
) -> None:
    with pytest.raises(MetadataError) as err:
        parse_eni(MAC, {**RAW, key: value}, "x")
    assert err.value.key == key
    assert reason in str(err.value)
    assert key in str(err.value)
    # the offending value (or its start) is in the message
    shown = err.value.value[: MetadataError.SHOWN]
    assert repr(shown)[1:-1][:20] in str(err.value)


def test_thousands_of_lines_are_refused_by_the_bound_per_key() -> None:
    many = "\n".join(f"10.0.{n // 250}.{n % 250 + 4}" for n in range(3000))
    raw = {**RAW, "subnet-ipv4-cidr-block": "10.0.0.0/16", "local-ipv4s": many}
    with pytest.raises(MetadataError, match="3000 lines, more than the 100") as err:
        parse_eni(MAC, raw, "x")
    assert err.value.key == "local-ipv4s"
    assert len(str(err.value)) < 300  # the message keeps only the value's start
    # at the bound itself the list is taken
    ok = "\n".join(f"10.0.2.{n}" for n in range(10, 10 + MAX_LINES["local-ipv4s"]))
    assert len(parse_eni(MAC, {**RAW, "local-ipv4s": ok}, "x").ipv4s) == 100


def test_trailing_newline_and_crlf_are_tolerated() -> None:
    eni = parse_eni(MAC, {**RAW, "local-ipv4s": "10.0.2.20\r\n10.0.2.21\n"}, "x")
    assert [str(a) for a in eni.ipv4s] == ["10.0.2.20", "10.0.2.21"]


def test_ipv6_only_eni_has_no_ipv4_keys() -> None:
    raw = {k: v for k, v in RAW.items() if k not in ("local-ipv4s", "subnet-ipv4-cidr-block")}
    eni = parse_eni(MAC, raw, "x")
    assert eni.ipv4s == ()
    assert eni.subnet4 is None
    assert not_yet_reason(eni) is None
    # IPv4 addresses without an IPv4 subnet cannot be right
    with pytest.raises(MetadataError, match="without a subnet"):
        parse_eni(MAC, {**raw, "local-ipv4s": "10.0.2.20"}, "x")


def test_a_body_of_100000_lines_is_refused_without_splitting_it() -> None:
    """100,000 short lines fit in imds.MAX_BODY; as a list they would take megabytes."""
    body = "10.0.2.20\n" + "1\n" * 99_999
    tracemalloc.start()
    try:
        with pytest.raises(MetadataError, match="100001 lines, more than the 100 EC2 allows"):
            metadata._lines("local-ipv4s", body)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < len(body)  # not a copy of it, let alone a list of its lines


def test_a_reason_that_quotes_a_long_value_is_cut() -> None:
    with pytest.raises(MetadataError) as err:
        metadata._each("local-ipv4s", "9" * 200_000, metadata._addr4)
    assert len(str(err.value)) < 400
