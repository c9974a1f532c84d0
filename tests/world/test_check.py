"""`ec2net check` against real traffic: for every routing scenario and for each way
other software breaks a path without touching ec2net's objects, check's verdict on
every path agrees with a TCP probe through the source/destination check (no path called
right that drops, none called wrong that passes), and each breakage is named.

The world has a host outside the VPC (198.51.100.100, 2001:db8::100): check's
"outside" question stands for any address outside the VPC, which leaves by the same
route. "vpc" stands for another subnet of the VPC: the client's (subnet-c)."""

from __future__ import annotations

import ipaddress
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any, Callable

import pytest

from tests.world.conftest import Instance, two_card_world

pytestmark = pytest.mark.world

SECOND = "02:00:0a:00:02:14"  # default world: subnet-b, 10.0.2.20-22, 2600:1f16:292:2::20
PRIMARY_GW = "10.0.1.1"


@pytest.fixture
def inst(make_instance: Callable[..., Instance]) -> Iterator[Instance]:
    yield make_instance(outside=True)


def check(inst: Instance) -> tuple[int, dict[str, Any]]:
    proc = inst.ec2net("check", "--json", check=False)
    assert proc.returncode in (0, 1), proc.stderr
    report: dict[str, Any] = json.loads(proc.stdout)
    assert proc.returncode == (0 if report["ok"] else 1)
    return proc.returncode, report


def verdicts(report: dict[str, Any]) -> dict[tuple[str, str], bool]:
    """(source, towards) -> right, over both directions (a reply needs both)."""
    out: dict[tuple[str, str], bool] = {}
    for p in report["paths"]:
        if p["towards"] == "gateway":
            continue  # the router itself: its own input is not behind the check
        key = (p["source"], p["towards"])
        out[key] = out.get(key, True) and p["right"]
    return out


def probed(inst: Instance, report: dict[str, Any], ctr: str = "") -> dict[tuple[str, str], bool]:
    """The same (source, towards) by TCP from a host that stands there."""
    f = inst.fabric
    out = {}
    for source, towards in verdicts(report):
        if towards == "outside":
            ns = f.outside_ns
        elif towards == "vpc":
            ns = f.client_ns
        elif towards.endswith("dev docker0") and ctr:
            ns = ctr
        else:
            continue
        out[(source, towards)] = f.probe(ns, source)
    return out


def assert_agree(inst: Instance, report: dict[str, Any], ctr: str = "") -> None:
    said = verdicts(report)
    real = probed(inst, report, ctr)
    assert real, "nothing probed"
    wrong = {k: (said[k], real[k]) for k in real if said[k] != real[k]}
    assert wrong == {}, f"check (said, probe) disagree: {wrong}"


def kinds(report: dict[str, Any]) -> set[str]:
    return {p["kind"] for p in report["problems"]}


def sysctl(inst: Instance, *settings: str) -> None:
    ns = inst.fabric.instance_ns
    subprocess.run(["ip", "netns", "exec", ns, "sysctl", "-qw", *settings], check=True)


# --- the routing scenarios: every path right, and the probes agree ---------------------


def test_other_subnet_eni(inst: Instance) -> None:
    inst.fabric.attach(SECOND, "eth1")
    inst.ec2net("up", "eth1")
    rc, report = check(inst)
    assert rc == 0 and report["problems"] == [], report["problems"]
    towards = {p["towards"] for p in report["paths"]}
    assert towards == {"gateway", "outside", "vpc"}
    assert len(report["paths"]) == 3 * 5 + 4  # 3 IPv4 x (gw, 2 x out/in), IPv6 2 x 2
    assert_agree(inst, report)
    text = inst.ec2net("check").stdout
    assert "10.0.2.20 -> 198.51.100.7 (outside): table 10001 dev eth1: ok" in text
    assert text.endswith("every path is right\n")


def test_same_subnet_enis_and_a_docker_bridge(inst: Instance) -> None:
    f = inst.fabric
    ctr = f.docker_bridge()
    f.attach(f.new_eni("subnet-a", n_ipv4=2, n_ipv6=1), "eth1")
    f.attach(f.new_eni("subnet-a", n_ipv4=1, n_ipv6=0), "eth2")
    inst.ec2net("scan")
    rc, report = check(inst)
    assert rc == 0, report["problems"]
    bridge = [p for p in report["paths"] if p["towards"] == "route 172.17.0.0/16 dev docker0"]
    assert bridge and all(p["via"] == "docker0" and p["right"] for p in bridge)
    assert_agree(inst, report, ctr)


def test_delegated_prefixes_and_two_cards(make_instance: Callable[..., Instance]) -> None:
    inst = make_instance(world=two_card_world(), outside=True)
    f = inst.fabric
    card1 = f.attach(f.new_eni("subnet-b", device_number=0, network_card=1, n_ipv4=2), "eth1")
    f.attach(f.new_eni("subnet-d", device_number=1, network_card=0, n_ipv4=1), "eth2")
    p4 = ipaddress.IPv4Network("10.0.2.64/28")
    p6 = ipaddress.IPv6Network("2600:1f16:292:2:a000::/80")
    f.assign(card1.mac, p4)
    f.assign(card1.mac, p6)
    inst.ec2net("scan")
    inst.ip("addr", "add", f"{p4[1]}/32", "dev", "lo")  # as a pod would use it
    inst.ip("-6", "addr", "add", f"{p6[1]}/128", "dev", "lo", "nodad")
    rc, report = check(inst)
    assert rc == 0, report["problems"]
    sources = {p["source"] for p in report["paths"]}
    assert {str(p4[1]), str(p6[1])} <= sources  # one address of each prefix
    tables = {p["table"] for p in report["paths"] if p["direction"] == "out"}
    assert {10100, 10001} <= tables
    assert_agree(inst, report)


# --- breakages: named, and the probes agree ----------------------------------------------


def test_another_programs_rule_that_takes_the_lookup(inst: Instance) -> None:
    inst.fabric.attach(SECOND, "eth1")
    inst.ec2net("up", "eth1")
    inst.ip("route", "add", "default", "via", PRIMARY_GW, "dev", "eth0", "table", "77")
    inst.ip("rule", "add", "pref", "100", "from", "10.0.2.20", "lookup", "77")
    rc, report = check(inst)
    assert rc == 1 and kinds(report) == {"wrong_path"}
    problems = [p["problem"] for p in report["problems"]]
    assert all(p.startswith("eth1: 10.0.2.20 -> ") for p in problems), problems
    assert any(
        "leaves by eth0 (table 77), not eth1; rule pref 100 from 10.0.2.20/32 lookup 77" in p
        for p in problems
    ), problems
    assert_agree(inst, report)  # .20 fails from outside and the VPC; .21, .22 answer
    assert not inst.fabric.probe(inst.fabric.outside_ns, "10.0.2.20")
    assert inst.ec2net("status", "--json").stdout.count('"ok"') == 1  # ours intact


def test_a_main_table_route_of_another_program(inst: Instance) -> None:
    inst.fabric.attach(SECOND, "eth1")
    inst.ec2net("up", "eth1")
    # a VPN's route for the outside network through the primary
    inst.ip("route", "add", "198.51.100.0/24", "via", PRIMARY_GW, "dev", "eth0")
    rc, report = check(inst)
    assert rc == 1 and kinds(report) == {"wrong_path"}
    wrong = {(p["source"], p["towards"]) for p in report["paths"] if not p["right"]}
    assert wrong == {(a, "outside") for a in ("10.0.2.20", "10.0.2.21", "10.0.2.22")}
    assert_agree(inst, report)


def test_strict_rp_filter(inst: Instance) -> None:
    f = inst.fabric
    f.attach(SECOND, "eth1")
    inst.ec2net("up", "eth1")
    sysctl(inst, "net.ipv4.conf.all.rp_filter=1", "net.ipv4.conf.eth1.rp_filter=1")
    # with ec2net's rules the reverse path is the ENI: strict is fine
    rc, report = check(inst)
    assert rc == 0, report["problems"]
    assert_agree(inst, report)
    # once another program's rule sends the way back elsewhere, strict drops on arrival
    inst.ip("route", "add", "default", "via", PRIMARY_GW, "dev", "eth0", "table", "77")
    inst.ip("rule", "add", "pref", "100", "to", "198.51.100.0/24", "lookup", "77")
    rc, report = check(inst)
    assert rc == 1 and kinds(report) == {"wrong_path", "rp_filter"}
    rp = [p["problem"] for p in report["problems"] if p["kind"] == "rp_filter"]
    assert rp and all("rp_filter is 1 (strict) on eth1 and the way back" in p for p in rp), rp
    assert_agree(inst, report)


def test_the_gateway_does_not_answer_arp(inst: Instance) -> None:
    f = inst.fabric
    eni = f.attach(SECOND, "eth1")
    inst.ec2net("up", "eth1")
    port = f.ports[eni.mac].name
    rules = (
        "add table arp e2check\n"
        "add chain arp e2check in { type filter hook input priority 0; }\n"
        "add chain arp e2check out { type filter hook output priority 0; }\n"
        f'add rule arp e2check in iifname "{port}" drop\n'
        f'add rule arp e2check out oifname "{port}" drop\n'
    )
    nft = ["ip", "netns", "exec", f.router_ns, "nft", "-f", "-"]
    subprocess.run(nft, input=rules, text=True, check=True)
    inst.ip("neigh", "flush", "dev", "eth1")
    # a datagram to the gateway makes the kernel ask for its MAC (and give up: FAILED)
    send = (
        "import socket; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); "
        "s.bind(('10.0.2.20', 0)); s.sendto(b'x', ('10.0.2.1', 9))"
    )
    f.run(f.instance_ns, [sys.executable, "-c", send])
    deadline = time.monotonic() + 10
    while "FAILED" not in inst.ip("neigh", "show", "dev", "eth1") and time.monotonic() < deadline:
        time.sleep(0.2)
    rc, report = check(inst)
    assert rc == 1 and "neighbour" in kinds(report), report["problems"]
    said = [p["problem"] for p in report["problems"] if p["kind"] == "neighbour"]
    assert said == [
        "eth1: the gateway 10.0.2.1 does not answer ARP (neighbour entry FAILED): "
        "nothing leaves by this ENI"
    ]
    assert_agree(inst, report)  # IPv4 drops; IPv6 (NDP) still answers


def test_an_mtu_changed_behind_ec2nets_back(inst: Instance) -> None:
    inst.fabric.attach(SECOND, "eth1")
    inst.ec2net("up", "eth1")
    inst.ip("link", "set", "eth1", "mtu", "1400")
    rc, report = check(inst)
    assert rc == 1 and kinds(report) == {"mtu"}
    [problem] = report["problems"]
    assert problem["problem"].startswith("eth1: MTU 1400, not the 1500 ec2net set")
    assert_agree(inst, report)  # every path still right: small packets pass


def test_imds_that_hands_out_no_token(inst: Instance) -> None:
    inst.fabric.attach(SECOND, "eth1")
    inst.ec2net("up", "eth1")
    inst.fabric.world.faults.disabled = True
    try:
        rc, report = check(inst)
    finally:
        inst.fabric.world.faults.disabled = False
    assert rc == 1 and kinds(report) == {"imds"}
    assert "token request was answered 403" in report["problems"][0]["problem"]
