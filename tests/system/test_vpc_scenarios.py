"""ec2net on a real OS: a Debian guest under QEMU whose NICs sit in ec2sim's simulated
VPC (taps on the fabric's subnets, IMDS from its simulator, router advertisements,
every IPv4 and IPv6 packet through the source/destination check), on Debian 12 and 13,
each with networkd and with NetworkManager.

One boot per variant is shared by the module (pytest groups the tests by variant), in
order: install + reboot with two ENIs present, hot-plug/unplug (dual-stack ENIs and an
IPv6-only one), two ENIs at once, a detach while the ENI is being configured, a
secondary IPv4 and IPv6 appearing in IMDS and then removed, a delegated prefix, a
Docker-style bridge, a second reboot, and (trixie networkd) the netlink backend under
networkd. Reachability is real TCP from the client (another subnet) and the peer (the
primary's subnet), IPv6 included. Timings are printed (`-s`), never asserted.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from typing import Optional

import pytest

from systest import harness, install, scenarios
from systest.image import CLOUD_INIT_VARIANTS, EC2NET_VARIANTS, ensure_image, manager_of
from systest.vpc import (
    IPV6_ONLY_SUBNET,
    OTHER_SUBNET_MAC,
    PRIMARY_MAC,
    SAME_SUBNET_MAC,
    VPC6,
    VPC_MTU,
    VpcGuest,
    addresses,
)

pytestmark = pytest.mark.system

REFRESH_INTERVAL = 5.0  # the guest's refresh.interval: secondary IPs within seconds
REACH_TIMEOUT = 120.0  # generous: TCG on two shared cores
UNITS = ("ec2net*",)
# interfaces.mtu stays "auto" (the primary's, from DHCP); one ENI has an override.
OVERRIDE_MTU = 8900
MTU_OVERRIDES = {SAME_SUBNET_MAC: OVERRIDE_MTU}


def _ms(seconds: Optional[float]) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.0f} ms"


# The cloud-init guests (cloud_guest.py) run the set too, under `make systemtest` only
# (conftest.py marks them `extended`).
@pytest.fixture(scope="module", params=(*EC2NET_VARIANTS, *CLOUD_INIT_VARIANTS))
def guest(
    request: pytest.FixtureRequest, qemu_available: None, ec2net_package: install.Package
) -> Iterator[VpcGuest]:
    variant = str(request.param)
    image = ensure_image(variant)
    workdir = harness.short_workdir()
    g = VpcGuest(image, workdir)
    try:
        boot = g.start()
        print(f"\n[{variant}] first boot ({g.qemu.accel}): {boot.state} {boot.running_s:.1f} s")
        yield g
    finally:
        keep = os.environ.get("EC2NET_SYSTEST_KEEP") == "1"
        if keep and g.vm is not None:
            print("\n" + g.vm.diagnostics())
        g.stop()
        if keep:
            print(f"kept system-test workdir {workdir}")
        else:
            harness.remove_workdir(workdir)


@pytest.fixture(scope="module")
def booted_with_enis(guest: VpcGuest, ec2net_package: install.Package) -> scenarios.BootWithEnis:
    def installer(g: VpcGuest) -> None:
        install.install_ec2net(g.agent, ec2net_package, REFRESH_INTERVAL, MTU_OVERRIDES)

    return scenarios.boot_with_enis(guest, installer, REACH_TIMEOUT)


def _variant(g: VpcGuest) -> str:
    return g.image.variant


def _manager(g: VpcGuest) -> str:
    return manager_of(g.image.variant)


def test_boot_with_two_extra_enis(
    guest: VpcGuest, booted_with_enis: scenarios.BootWithEnis
) -> None:
    r = booted_with_enis
    print(
        f"\n[{_variant(guest)}] install {r.install_s:.1f} s; reboot: systemd {r.boot.state} "
        f"{r.boot.running_s:.1f} s, every address reachable {_ms(r.reach.seconds)} after reboot"
    )
    assert r.reach.ok, f"unreachable: {r.reach.missing}\n" + scenarios.guest_state(guest, UNITS)
    assert r.boot.state == "running", scenarios.failed_units_log(guest, r.boot.failed_units)
    # `backend.name = auto` chose the guest's network manager, which applied our files.
    status = json.loads(guest.agent.run(["ec2net", "status", "--json"], timeout=60).stdout)
    assert len(status) == 2 and {row["backend"] for row in status} == {_manager(guest)}, status
    drifted = [row["interface"] for row in status if row["state"] != "ok"]
    plans = [guest.agent.run(["ec2net", "plan", i], timeout=60).stdout for i in drifted]
    assert drifted == [], "\n".join([str(status), *plans, scenarios.guest_state(guest, UNITS)])
    # interfaces.mtu through the guest's manager: "auto" is the primary's MTU, which DHCP
    # set to the VPC's; the override wins for its ENI; jumbo segments cross the check.
    mtus = guest.link_mtus()
    got = (mtus[PRIMARY_MAC], mtus[OTHER_SUBNET_MAC], mtus[SAME_SUBNET_MAC])
    assert got == (VPC_MTU, VPC_MTU, OVERRIDE_MTU), mtus
    for addr in ("10.0.2.21", f"{VPC6}:2::20"):
        intact, mss = guest.transfer(addr)
        assert intact and mss > 8000, (addr, intact, mss)


def test_hotplug_and_unplug(guest: VpcGuest, booted_with_enis: scenarios.BootWithEnis) -> None:
    problems = []
    for subnet, n_ipv4, n_ipv6 in (
        ("subnet-b", 3, 1),
        ("subnet-a", 2, 1),
        (IPV6_ONLY_SUBNET, 0, 2),
    ):
        r, plugged = scenarios.hotplug(
            guest, subnet, n_ipv4, REACH_TIMEOUT, n_ipv6=n_ipv6, unplug=False, tail=1.0
        )
        # The udev rule's part: the ENI's own unit is asked for (the daemon alone also
        # configures the ENI, which is why reachability does not prove the rule), and
        # since the daemon runs, its condition keeps it from starting any process.
        unit = f"ec2net@{plugged.ifname}.service"
        asked = _unit_asked(guest, unit)
        if asked != ("no", "0"):
            problems.append(f"{unit}: condition, main pid {asked} (udev rule, daemon ready)")
        # the daemon logs its job's result once the job ends: after the ENI answers
        found = _journal_lines(guest, plugged.eni.eni_id)
        deadline = time.monotonic() + 30
        while not any(ln.get("EC2NET_IFNAME") == plugged.ifname for ln in found):
            if time.monotonic() > deadline:
                break
            time.sleep(1)
            found = _journal_lines(guest, plugged.eni.eni_id)
        if not any(ln.get("EC2NET_IFNAME") == plugged.ifname for ln in found):
            problems.append(
                f"journalctl EC2NET_ENI_ID={plugged.eni.eni_id}: {found[:3]}; ec2net's latest: "
                + str(_journal_lines(guest, "", lines=8))
            )
        # NetworkManager adds IPv6 addresses with DAD; ec2net turns it off on the ENI
        # (through the hardened unit's one writable corner of /proc/sys)
        if _manager(guest) == "nm":
            path = f"/proc/sys/net/ipv6/conf/{plugged.ifname}/accept_dad"
            dad = guest.agent.read_file(path).decode().strip()
            if dad != "0":
                problems.append(f"{plugged.ifname}: accept_dad {dad}, not 0")
        mtu = guest.link_mtus().get(plugged.eni.mac)
        if mtu != VPC_MTU:
            problems.append(f"{plugged.ifname}: MTU {mtu}, not the primary's {VPC_MTU}")
        scenarios.unplug_and_check(guest, plugged, r)
        state = _unit_state(guest, unit, "inactive")
        if state != "inactive":
            problems.append(f"{unit} is {state} after unplug (BindsTo=)")
        print(
            f"\n[{_variant(guest)}] hot-plug into {subnet} ({len(r.addrs)} addresses): "
            f"all reachable {_ms(r.reach.seconds)} after device_add, "
            f"{r.imds_requests} IMDS requests (to 1 s after); unplug {_ms(r.unplug_s)}, "
            f"clean {_ms(r.clean_s)} after DEVICE_DELETED"
        )
        # every round runs (and is measured) before anything is asserted
        if not r.reach.ok:
            problems.append(f"{subnet}: unreachable {r.reach.missing}")
        if r.others_missing:
            problems.append(f"{subnet}: broke {r.others_missing}")
        if r.leftovers:
            problems.append(f"{subnet}: left behind after unplug {r.leftovers}")
    assert problems == [], "\n".join([*problems, scenarios.guest_state(guest, UNITS)])
    # and the ENIs that stay are still fine
    assert guest.unreachable(guest.all_addresses()) == []


def _journal_lines(guest: VpcGuest, eni_id: str, lines: int = 0) -> list[dict[str, str]]:
    """ec2net's journal lines about one ENI, found by its journal field (all of
    ec2net's, the latest `lines`, for an empty `eni_id`)."""
    match = f"EC2NET_ENI_ID={eni_id}" if eni_id else "_SYSTEMD_UNIT=ec2net-watch.service"
    argv = ["journalctl", "-b", "-o", "json", match, *([f"-n{lines}"] if lines else [])]
    out = guest.agent.run(argv, timeout=30).stdout
    keep = ("MESSAGE", "_TRANSPORT", "_SYSTEMD_UNIT", "EC2NET_IFNAME", "EC2NET_ENI_ID")
    rows = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    return [{k: str(r.get(k, ""))[:120] for k in keep} for r in rows]


def _unit_asked(guest: VpcGuest, unit: str, timeout: float = 30.0) -> tuple[str, str]:
    """(ConditionResult, ExecMainPID) once systemd evaluated the unit's condition: a
    request from udev that the running daemon made moot is ("no", "0")."""
    props = ("ConditionResult", "ExecMainPID", "ConditionTimestampMonotonic")
    argv = ["systemctl", "show", *(f"--property={p}" for p in props), unit]
    deadline = time.monotonic() + timeout
    while True:
        out = guest.agent.run(argv, timeout=30).stdout.splitlines()
        got = dict(line.partition("=")[::2] for line in out)
        if got.get(props[2], "0") not in ("", "0") or time.monotonic() > deadline:
            return got.get(props[0], ""), got.get(props[1], "")
        time.sleep(0.5)


def _unit_state(guest: VpcGuest, unit: str, want: str, timeout: float = 30.0) -> str:
    """The unit's ActiveState once it is `want`, or the last seen at the timeout."""
    deadline = time.monotonic() + timeout
    while True:
        state = guest.agent.run(["systemctl", "is-active", unit], timeout=30).stdout.strip()
        if state == want or time.monotonic() > deadline:
            return state
        time.sleep(0.5)


def test_two_enis_hotplugged_at_once(
    guest: VpcGuest, booted_with_enis: scenarios.BootWithEnis
) -> None:
    r = scenarios.two_at_once(guest, REACH_TIMEOUT)
    print(
        f"\n[{_variant(guest)}] two ENIs at once ({len(r.addrs)} addresses): all reachable "
        f"{_ms(r.reach.seconds)} after the first device_add, {r.imds_requests} IMDS requests"
    )
    state = scenarios.guest_state(guest, UNITS)
    assert r.reach.ok, f"unreachable: {r.reach.missing}\n{state}"
    assert r.others_missing == [], state
    assert r.leftovers == [], state


def test_detach_while_configuring(
    guest: VpcGuest, booted_with_enis: scenarios.BootWithEnis
) -> None:
    r = scenarios.detach_while_configuring(guest, REACH_TIMEOUT)
    print(
        f"\n[{_variant(guest)}] unplugged {_ms(r.unplugged_after_s)} after device_add; "
        f"the next ENI on that table reachable {_ms(r.reuse.seconds)}"
    )
    state = scenarios.guest_state(guest, UNITS)
    assert r.leftovers == [], state
    assert r.failed_units == "", scenarios.failed_units_log(guest, r.failed_units)
    assert r.others_missing == [], state
    assert r.reuse.ok, f"unreachable: {r.reuse.missing}\n{state}"


def test_daemon_restarted_and_killed_during_hotplugs(
    guest: VpcGuest, booted_with_enis: scenarios.BootWithEnis
) -> None:
    """An upgrade's `systemctl restart` of the daemon right after a device_add (SIGTERM
    mid-attach), and a kill -9 of it right after the next (systemd restarts it, 5 s
    later): both ENIs end configured exactly once (one record each, every ENI `ok`, no
    rule twice), and their unplug leaves nothing."""
    f = guest.fabric
    problems: list[str] = []
    plugged = []
    for subnet, stop in (
        ("subnet-b", ["systemctl", "restart", "ec2net-watch.service"]),
        ("subnet-a", ["systemctl", "kill", "--signal=SIGKILL", "ec2net-watch.service"]),
    ):
        eni = f.new_eni(subnet, n_ipv4=2, n_ipv6=1)
        t0 = time.monotonic()
        p = guest.plug(eni)
        guest.agent.run(stop, timeout=120, check=True)
        reach = guest.wait_reachable(addresses(eni), REACH_TIMEOUT, since=t0)
        print(
            f"\n[{_variant(guest)}] {stop[1]} of the daemon right after device_add: "
            f"{p.ifname} reachable {_ms(reach.seconds)} after device_add"
        )
        if not reach.ok:
            problems.append(f"{p.ifname} ({stop[1]}): unreachable {reach.missing}")
        plugged.append(p)
    active = _unit_state(guest, "ec2net-watch.service", "active", timeout=60)
    if active != "active":
        problems.append(f"ec2net-watch.service is {active}")
    status = json.loads(guest.agent.run(["ec2net", "status", "--json"], timeout=60).stdout)
    by_name = {row["interface"]: row["state"] for row in status}
    for p in plugged:
        if by_name.get(p.ifname) != "ok":
            problems.append(f"{p.ifname}: status {by_name.get(p.ifname)}")
    listed = guest.agent.run(["ls", "/run/ec2net/enis"], timeout=30).stdout.split()
    records = [name for name in listed if name.endswith(".json")]
    if len(records) != len(status):
        problems.append(f"records {records} for {len(status)} ENIs")
    for family in ("-4", "-6"):
        rules = guest.agent.run(["ip", family, "rule"], timeout=30).stdout.splitlines()
        twice = sorted({r for r in rules if rules.count(r) > 1})
        if twice:
            problems.append(f"rules twice: {twice}")
    for p in plugged:
        guest.unplug(p)
        _, left = guest.wait_clean(p, 30.0)
        if left:
            problems.append(f"{p.ifname}: left behind after unplug {left}")
    assert problems == [], "\n".join([*problems, scenarios.guest_state(guest, UNITS)])


@pytest.fixture(scope="module")
def secondaries(guest: VpcGuest, booted_with_enis: scenarios.BootWithEnis) -> scenarios.Secondary:
    return scenarios.secondary_ip(guest, OTHER_SUBNET_MAC, 3 * REFRESH_INTERVAL + 30)


def test_secondary_ip_from_imds(guest: VpcGuest, secondaries: scenarios.Secondary) -> None:
    r = secondaries
    print(
        f"\n[{_variant(guest)}] secondary {' and '.join(r.addrs)} assigned in IMDS: "
        f"reachable {_ms(r.reach.seconds)} later (refresh.interval {REFRESH_INTERVAL:g} s)"
    )
    assert r.reach.ok, f"unreachable: {r.reach.missing}\n" + scenarios.guest_state(guest, UNITS)


def test_secondary_ip_removed_from_imds(guest: VpcGuest, secondaries: scenarios.Secondary) -> None:
    r = scenarios.remove_secondary(
        guest, OTHER_SUBNET_MAC, secondaries.addrs, 3 * REFRESH_INTERVAL + 30
    )
    print(
        f"\n[{_variant(guest)}] {' and '.join(r.addrs)} unassigned in IMDS: gone from the "
        f"guest {_ms(r.gone_s)} later (refresh.interval {REFRESH_INTERVAL:g} s)"
    )
    if r.others_missing:
        # seen on trixie-nm: NetworkManager's reapply drops the ENI's other IPv6 briefly
        print(f"  disturbed for a moment: {r.others_missing}")
    state = scenarios.guest_state(guest, UNITS)
    assert r.gone_s is not None, f"still in the guest: {r.still}\n{state}"
    assert r.others_lasting == [], state


def test_delegated_prefix(guest: VpcGuest, booted_with_enis: scenarios.BootWithEnis) -> None:
    r = scenarios.delegated_prefix(guest, OTHER_SUBNET_MAC, 3 * REFRESH_INTERVAL + 30)
    print(
        f"\n[{_variant(guest)}] prefixes {' and '.join(r.prefixes)} delegated: "
        f"{' and '.join(r.used)} on lo reachable {_ms(r.reach.seconds)} later"
    )
    assert r.reach.ok, f"unreachable: {r.reach.missing}\n" + scenarios.guest_state(guest, UNITS)


def test_docker_bridge_reaches_every_host_address(
    guest: VpcGuest, booted_with_enis: scenarios.BootWithEnis
) -> None:
    r = scenarios.docker_bridge(guest)
    print(f"\n[{_variant(guest)}] container -> {len(r.probes)} host addresses")
    assert r.unreachable == [], scenarios.guest_state(guest, UNITS)
    assert guest.unreachable(guest.all_addresses()) == []


def test_reboot_keeps_everything_reachable(
    guest: VpcGuest, booted_with_enis: scenarios.BootWithEnis
) -> None:
    r = scenarios.reboot(guest, REACH_TIMEOUT)
    print(
        f"\n[{_variant(guest)}] reboot: systemd {r.boot.state} {r.boot.running_s:.1f} s, "
        f"every address reachable {_ms(r.reach.seconds)} after the reboot request"
    )
    assert r.reach.ok, f"unreachable: {r.reach.missing}\n" + scenarios.guest_state(guest, UNITS)


# Only the trixie networkd guest (systemd 257 honours ID_NET_MANAGED_BY): the indirect
# parameter reuses that variant's module guest, after its other scenarios.
@pytest.mark.parametrize("guest", ["trixie-networkd"], indirect=True)
def test_netlink_backend_left_alone_by_networkd(
    guest: VpcGuest, booted_with_enis: scenarios.BootWithEnis, ec2net_package: install.Package
) -> None:
    def switch(g: VpcGuest) -> None:
        install.switch_backend(g.agent, ec2net_package, "netlink", REFRESH_INTERVAL, MTU_OVERRIDES)

    r = scenarios.netlink_under_networkd(guest, switch, REACH_TIMEOUT)
    print(
        f"\n[{_variant(guest)}] netlink backend, networkd matching ens*: reachable "
        f"{_ms(r.reach.seconds)} after device_add; ID_NET_MANAGED_BY {r.managed_by}; "
        f"networkd says {r.setup_state}; primary IPv6 after the restart: "
        f"{r.primary6_missing or 'back'}"
    )
    state = scenarios.guest_state(guest, UNITS)
    assert r.reach.ok, f"unreachable: {r.reach.missing}\n{state}"
    eni_if = next(i for i in r.managed_by if i != "ens5")
    assert r.managed_by == {eni_if: "ec2net", "ens5": ""}, r.managed_by
    assert r.setup_state == "unmanaged", r.setup_state
    assert r.before and r.after_reload == r.before, (r.before, r.after_reload)
    assert r.after_restart == r.before, (r.before, r.after_restart)
    assert r.reach_after == [], state
