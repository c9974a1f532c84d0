"""Smoke test of the system-test harness itself (no product installed yet).

Proves: the cached image boots to systemd `running`, the primary gets its DHCP
reservation, and a NIC hot-plugged over QMP appears in the guest as a udev-processed
virtio_net link and disappears again on unplug. Timings are printed, not asserted:
TCG speed depends on the machine's load.
"""

from __future__ import annotations

import time

import pytest

from systest.harness import Lan
from systest.qemu import BootInfo, Vm

from .conftest import FULL_SET_VARIANT, PRIMARY_IP

pytestmark = pytest.mark.system

HOTPLUG_MAC = "02:00:00:00:00:06"
HOTPLUG_SLOT = 6


def _wait_primary_address(vm: Vm, timeout: float = 90.0) -> float:
    start = time.monotonic()
    while True:
        out = vm.agent.run(["ip", "-4", "-o", "addr", "show", "dev", "ens5"]).stdout
        if f"inet {PRIMARY_IP}/" in out:
            return time.monotonic() - start
        if time.monotonic() - start > timeout:
            pytest.fail(f"ens5 did not get {PRIMARY_IP} within {timeout} s: {out!r}")
        time.sleep(0.5)


# The guest CI builds for its scenarios anyway: an image of the smoke test's own would
# cost CI a debootstrap and a boot of a guest nothing else there uses.
@pytest.mark.parametrize("variant", [FULL_SET_VARIANT])
def test_boot_dhcp_hotplug_unplug(booted: tuple[Vm, BootInfo], lan: Lan, variant: str) -> None:
    vm, boot = booted
    print(
        f"\n[{variant}] boot ({vm.accel}): agent ready {boot.agent_ready_s:.1f} s, "
        f"systemd {boot.state} {boot.running_s:.1f} s"
    )
    assert boot.state == "running", f"failed units:\n{boot.failed_units}"

    waited = _wait_primary_address(vm)
    print(f"primary {PRIMARY_IP} on ens5 ({waited:.1f} s after boot finished)")
    # From the guest: the host may have no ping, the image has.
    ping = vm.agent.run(["ping", "-c", "1", "-W", "5", lan.gateway], timeout=30)
    assert ping.ok, ping.stdout + ping.stderr

    # Twice into the same slot: the second round proves unplug really freed slot and tap.
    for round_no in (1, 2):
        seen = vm.agent.start_wait_link(HOTPLUG_MAC, timeout=60)
        named = vm.agent.start_wait_link(HOTPLUG_MAC, timeout=60, ifname=f"ens{HOTPLUG_SLOT}")
        t0 = time.monotonic()
        dev = vm.hotplug_nic(lan.taps[1], HOTPLUG_MAC, HOTPLUG_SLOT)
        qmp_ms = (time.monotonic() - t0) * 1000
        first = seen.result(90)
        named.result(90)
        assert seen.received_at is not None and named.received_at is not None
        link_ms = (seen.received_at - t0) * 1000
        rename_ms = (named.received_at - t0) * 1000

        vm.agent.run(["udevadm", "settle", "--timeout=60"], timeout=90, check=True)
        props = vm.agent.run(
            ["udevadm", "info", "--query=property", f"/sys/class/net/ens{HOTPLUG_SLOT}"],
            check=True,
        ).stdout
        assert "ID_NET_DRIVER=virtio_net" in props.splitlines(), props
        mac = vm.agent.read_file(f"/sys/class/net/ens{HOTPLUG_SLOT}/address").decode().strip()
        assert mac == HOTPLUG_MAC

        gone = vm.agent.start_wait_link(HOTPLUG_MAC, present=False, timeout=90)
        t1 = time.monotonic()
        deleted_s = vm.unplug_nic(dev)
        gone.result(120)
        assert gone.received_at is not None
        gone_ms = (gone.received_at - t1) * 1000
        links = vm.agent.run(["ip", "-o", "link"], check=True).stdout
        assert HOTPLUG_MAC not in links and f"ens{HOTPLUG_SLOT}:" not in links, links
        print(
            f"hot-plug #{round_no}: device_add returned {qmp_ms:.0f} ms, "
            f"link visible ({first.get('ifname')}) {link_ms:.0f} ms, "
            f"named ens{HOTPLUG_SLOT} {rename_ms:.0f} ms after QMP; "
            f"unplug: DEVICE_DELETED {deleted_s * 1000:.0f} ms, link gone {gone_ms:.0f} ms"
        )
