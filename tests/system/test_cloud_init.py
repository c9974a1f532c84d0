"""ec2net beside cloud-init, on guests that boot like the AMIs people use: Debian's
cloud-init, its EC2 datasource chosen from the DMI identity (QEMU -smbios), reading the
simulated IMDS (instance id, hostname, the primary's network configuration, user data).

- trixie-netplan (cloud-init 25.1.4 -> netplan -> networkd; cloud-init's hot-plug hook
  on, as on Ubuntu 24.04+): cloud-init configures two hot-plugged ENIs with its own
  policy routing (tables 101, 102). Installing ec2net takes them over live (its rules and
  routes gone, every address answering), the reboot renders the primary only (the
  drop-in 90-ec2net.cfg), and a hot-plug with cloud-init's hook still installed is
  ec2net's alone.
- bookworm-ifupdown (cloud-init 22.4.2 -> ifupdown, no network manager): `auto` picks
  netlink; the same boot, reboot and hot-plug.

The rest of the scenario set runs on both guests in tests/system/test_vpc_scenarios.py
(`make systemtest`; CI runs only this module's test on them, see conftest.py).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from typing import Callable, Optional

import pytest

from systest import cloud_guest, harness, install, scenarios
from systest.image import ensure_image, manager_of
from systest.vpc import OTHER_SUBNET_MAC, SAME_SUBNET_MAC, VpcGuest, addresses, system_world

pytestmark = pytest.mark.system

REACH_TIMEOUT = 180.0
CLOUD_INIT_TIMEOUT = 240.0  # cloud-init's Python under TCG: minutes, not seconds
MARKER = "/var/lib/systest-user-data"
USER_DATA = f"""\
#cloud-config
write_files:
- path: {MARKER}
  content: written by cloud-init from the simulator's user-data
"""


def _ms(seconds: Optional[float]) -> str:
    return "-" if seconds is None else f"{seconds:.1f} s"


@pytest.fixture(scope="module", params=cloud_guest.VARIANTS)
def ci_guest(
    request: pytest.FixtureRequest, qemu_available: None, ec2net_package: install.Package
) -> Iterator[VpcGuest]:
    variant = str(request.param)
    world = system_world()
    world.user_data = USER_DATA
    workdir = harness.short_workdir()
    g = VpcGuest(ensure_image(variant), workdir, world)
    try:
        boot = g.start()
        print(f"\n[{variant}] first boot ({g.qemu.accel}): {boot.state} {boot.running_s:.1f} s")
        yield g
    finally:
        keep = os.environ.get("EC2NET_SYSTEST_KEEP") == "1"
        if keep and g.vm is not None:
            print("\n" + g.vm.diagnostics())
        g.stop()
        if not keep:
            harness.remove_workdir(workdir)


def _sh(g: VpcGuest, cmd: str, timeout: float = 120.0) -> str:
    res = g.agent.run(["sh", "-c", cmd], timeout=timeout)
    return res.stdout + res.stderr


def cloud_init_done(g: VpcGuest, timeout: float = CLOUD_INIT_TIMEOUT) -> tuple[int, str]:
    """`cloud-init status --wait --long`: exit status 0 is done without errors."""
    res = g.agent.run(["cloud-init", "status", "--wait", "--long"], timeout=timeout)
    return res.rc, res.stdout + res.stderr


def policy_rules(g: VpcGuest) -> list[dict[str, object]]:
    """Every rule into cloud-init's table range (100 + index) on the guest."""
    found: list[dict[str, object]] = []
    for fam in ("-4", "-6"):
        out = g.agent.run(["ip", "-j", fam, "rule"], timeout=60, check=True).stdout
        for rule in json.loads(out or "[]"):
            table = str(rule.get("table", ""))
            if table.isdigit() and 100 <= int(table) <= 355:
                found.append(rule)
    return found


def wait_for(check: Callable[[], bool], timeout: float) -> Optional[float]:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if check():
            return time.monotonic() - t0
        time.sleep(2.0)
    return None


def netplan_files(g: VpcGuest) -> list[str]:
    out = _sh(g, "ls /run/systemd/network/ 2>/dev/null")
    return sorted(n for n in out.split() if n.startswith("10-netplan-"))


def test_cloud_init_boot_enis_take_over_reboot_hotplug(
    ci_guest: VpcGuest, ec2net_package: install.Package
) -> None:
    g = ci_guest
    variant = g.image.variant
    netplan = variant == "trixie-netplan"
    world = g.fabric.world
    problems: list[str] = []

    # 1. cloud-init from the simulator: datasource, identity, user data, no errors
    rc, status = cloud_init_done(g)
    version = _sh(g, "cloud-init --version").strip()
    print(f"\n[{variant}] {version}; cloud-init status rc {rc}:\n{status}")
    assert rc == 0 and "status: done" in status, status
    assert "DataSourceEc2" in status, status
    assert _sh(g, "hostname").strip() == "ip-10-0-1-10", _sh(g, "hostname")
    assert "from the simulator's user-data" in _sh(g, f"cat {MARKER}")
    iid = _sh(g, "cat /var/lib/cloud/data/instance-id").strip()
    assert iid == world.instance_id, iid
    assert _sh(g, "cat /sys/class/dmi/id/sys_vendor").strip() == "Amazon EC2"
    # ds-identify chose the datasource from DMI, as on EC2
    ds = _sh(g, "cat /run/cloud-init/ds-identify.log 2>/dev/null")
    found = [ln for ln in ds.splitlines() if ln.startswith(("Found single", "found=", "ret="))]
    print(f"[{variant}] ds-identify: {found}")
    if ds.strip():
        assert "Ec2" in ds and "single entry in datasource_list" not in ds, ds

    # 2. two ENIs hot-plugged before ec2net is there: cloud-init's hot-plug hook (netplan
    # guest) configures them with its own policy routing
    other, same = g.fabric.spare[OTHER_SUBNET_MAC], g.fabric.spare[SAME_SUBNET_MAC]
    t0 = time.monotonic()
    g.plug(other)
    g.plug(same)
    eni_addrs = [*addresses(other), *addresses(same)]
    if netplan:
        took = wait_for(lambda: len(policy_rules(g)) >= len(eni_addrs), CLOUD_INIT_TIMEOUT)
        print(
            f"[{variant}] cloud-init's hot-plug: {len(policy_rules(g))} rules in its tables "
            f"{_ms(took)} after device_add; {netplan_files(g)}"
        )
        assert took is not None, _sh(g, "ip rule; cat /run/cloud-init/hook-hotplug.log")
        before = g.wait_reachable(eni_addrs, REACH_TIMEOUT, since=t0)
        # cloud-init's own routing: what answers and what not (printed, not asserted)
        print(f"[{variant}] under cloud-init alone: missing {before.missing}")
    else:
        time.sleep(10.0)
        hook = _sh(g, "ls /etc/udev/rules.d/")
        print(f"[{variant}] udev rules: {hook.split()}; no cloud-init hot-plug on 22.4")

    # 3. ec2net installed; the daemon restarted with the test's configuration takes the
    # ENIs over live: cloud-init's rules and routes go, every address answers
    t1 = time.monotonic()
    install.install_ec2net(g.agent, ec2net_package, 5.0)
    assert "apply_full_imds_network_config: false" in _sh(
        g, "cat /etc/cloud/cloud.cfg.d/90-ec2net.cfg"
    )
    g.agent.run(["systemctl", "restart", "ec2net-watch.service"], timeout=120, check=True)
    reach = g.wait_reachable(eni_addrs, REACH_TIMEOUT, since=t1)
    gone = wait_for(lambda: not policy_rules(g), 60.0)
    print(
        f"[{variant}] after install: every ENI address answers {_ms(reach.seconds)}, "
        f"cloud-init's rules gone {_ms(gone)}; log:\n"
        + _sh(g, "journalctl -b -u ec2net-watch --no-pager | grep -i 'cloud-init' | tail -4")
    )
    if not reach.ok:
        problems.append(f"after install unreachable {reach.missing}")
    if gone is None:
        problems.append(f"cloud-init's rules left after install: {policy_rules(g)}")

    # 4. reboot: cloud-init renders the primary only; ec2net configures both ENIs
    boot = g.reboot()
    start = g.qemu.started_at
    addrs = [*addresses(world.primary()), *eni_addrs]
    reach = g.wait_reachable(addrs, REACH_TIMEOUT, since=start)
    rc, status = cloud_init_done(g)
    rendered = _sh(g, "cat /etc/netplan/50-cloud-init.yaml /etc/network/interfaces.d/* 2>&1")
    print(
        f"[{variant}] reboot: systemd {boot.state} {boot.running_s:.1f} s, every address "
        f"{_ms(reach.seconds)} after the reboot request; cloud-init rc {rc}; "
        f"netplan files {netplan_files(g)}"
    )
    if not reach.ok:
        problems.append(f"after reboot unreachable {reach.missing}")
    if rc != 0:
        problems.append(f"cloud-init after reboot: {status}")
    if policy_rules(g):
        problems.append(f"cloud-init's rules after reboot: {policy_rules(g)}")
    for mac in (other.mac, same.mac):
        if mac in rendered.lower():
            problems.append(f"cloud-init rendered {mac} again:\n{rendered}")
    if netplan and netplan_files(g) != ["10-netplan-ens5.link", "10-netplan-ens5.network"]:
        problems.append(f"netplan files for ENIs: {netplan_files(g)}")
    status_rows = json.loads(g.agent.run(["ec2net", "status", "--json"], timeout=60).stdout)
    backends = {row["backend"] for row in status_rows}
    states = {row["interface"]: row["state"] for row in status_rows}
    print(f"[{variant}] ec2net status: backend {backends}, {states}")
    if backends != {manager_of(variant)} or set(states.values()) != {"ok"} or len(states) != 2:
        problems.append(f"status {status_rows}")

    # 5. a hot-plug with cloud-init's hook installed: ec2net's alone; unplug leaves nothing
    hooks_before = _sh(g, "cat /run/cloud-init/hook-hotplug.log 2>/dev/null | wc -l").strip()
    r, plugged = scenarios.hotplug(g, "subnet-b", 2, REACH_TIMEOUT, unplug=False, tail=1.0)
    time.sleep(15.0 if netplan else 1.0)  # cloud-init's hook runs after udev's rename
    hooks = _sh(g, "cat /run/cloud-init/hook-hotplug.log 2>/dev/null | wc -l").strip()
    ci_log = _sh(g, "grep -i 'hotplug' /var/log/cloud-init.log | tail -3")
    print(
        f"[{variant}] hot-plug: every address {_ms(r.reach.seconds)} after device_add, "
        f"{r.imds_requests} IMDS requests; cloud-init hook runs {hooks_before} -> {hooks}:\n"
        f"{ci_log}"
    )
    if not r.reach.ok:
        problems.append(f"hot-plug unreachable {r.reach.missing}")
    if policy_rules(g) or (netplan and f"10-netplan-{plugged.ifname}.network" in netplan_files(g)):
        problems.append(f"cloud-init configured the hot-plugged ENI: {policy_rules(g)}")
    scenarios.unplug_and_check(g, plugged, r)
    print(f"[{variant}] unplug: clean {_ms(r.clean_s)} after DEVICE_DELETED")
    if r.leftovers:
        problems.append(f"left after unplug {r.leftovers}")
    if r.others_missing:
        problems.append(f"hot-plug broke {r.others_missing}")
    assert problems == [], "\n".join([*problems, scenarios.guest_state(g, ("ec2net*",))])
