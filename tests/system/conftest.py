"""Fixtures for the system tier: a cached guest image, a namespace LAN, a booted guest.

Run with ``python3 -m pytest -q -s tests/system`` (as root). EC2NET_SYSTEST_KEEP=1 keeps
the work directory (console log, QEMU argv, dnsmasq log) after the test.
"""

from __future__ import annotations

import os
from collections.abc import Generator, Iterator
from pathlib import Path

import pytest

from systest import harness, install
from systest.image import (
    CLOUD_INIT_VARIANTS,
    EC2NET_VARIANTS,
    SWITCH_VARIANTS,
    Image,
    ensure_image,
)
from systest.qemu import BootInfo, Vm, qemu_usable

PRIMARY_IP = "10.0.1.10"
# Guests whose scenario set runs under `make systemtest` only (CI's 50-minute budget).
EXTENDED_VARIANTS = ("bookworm-networkd", "trixie-nm")
# The guest that runs the whole scenario set in CI; the other CI guests run the
# scenarios whose path differs by network manager (boot, hot-plug, secondaries,
# reboot), the rest (two at once, detach while configuring, daemon restarts, prefix,
# Docker) goes through the same manager code and runs there under `make systemtest`.
FULL_SET_VARIANT = "trixie-networkd"
MANAGER_SCENARIOS = (
    "test_boot_with_two_extra_enis",
    "test_hotplug_and_unplug",
    "test_secondary_ip_from_imds",
    "test_secondary_ip_removed_from_imds",
    "test_reboot_keeps_everything_reachable",
)


@pytest.fixture(scope="session")
def qemu_available() -> None:
    reason = qemu_usable()
    if reason is not None:
        pytest.skip(f"system tests need QEMU: {reason}")
    if os.geteuid() != 0:
        pytest.skip("system tests need root (network namespaces, taps, debootstrap)")


@pytest.fixture
def variant() -> str:
    """Image variant; a test overrides it with ``@pytest.mark.parametrize("variant", ...)``."""
    return "bookworm-networkd"


@pytest.fixture
def guest_image(qemu_available: None, variant: str) -> Image:
    return ensure_image(variant)  # cached after the first build


@pytest.fixture
def workdir() -> Iterator[Path]:
    path = harness.short_workdir()
    yield path
    if os.environ.get("EC2NET_SYSTEST_KEEP") == "1":
        print(f"\nkept system-test workdir {path}")
    else:
        harness.remove_workdir(path)


@pytest.fixture
def lan(qemu_available: None, workdir: Path) -> Iterator[harness.Lan]:
    taps = ("tap0", "tap1", "tap2", "tap3")
    with (
        harness.namespace() as ns,
        harness.lan(ns, workdir, taps, {harness.PRIMARY_MAC: PRIMARY_IP}) as net,
    ):
        yield net


def _variant_of(item: pytest.Item) -> object:
    """The guest variant a test is parametrized with (directly or indirectly), or None."""
    callspec = getattr(item, "callspec", None)
    return callspec.params.get("guest") if callspec is not None else None


# A wrapper: the markers go on before the other implementations run (the mark plugin's
# `-m` deselection among them); the order is set after them, pytest's own reordering by
# fixture parameter included, which would put a test parametrized indirectly with one
# variant in a group (and a boot) of its own.
@pytest.hookimpl(wrapper=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> Generator[None, None, None]:
    # CI's subset (tools/test deselects the marker `extended`; `make systemtest` runs
    # all): one guest per network manager, the current stable's networkd (every
    # scenario), NetworkManager and network-scripts on Debian 12 (Debian's pyroute2
    # 0.7.2; MANAGER_SCENARIOS), and each cloud-init guest's own scenario
    # (test_cloud_init.py: boot, take-over, reboot, hot-plug; 3 and 6 min); the scenario
    # set on the cloud-init guests and the switches from AWS's tools (6-10 min a guest)
    # only under `make systemtest`.
    for item in items:
        variant = _variant_of(item)
        # test_cloud_init.py's one scenario per cloud-init guest (its fixture is
        # `ci_guest`, not `guest`) stays in CI
        if variant in CLOUD_INIT_VARIANTS or variant in EXTENDED_VARIANTS:
            item.add_marker(pytest.mark.extended)
        if item.path.name == "test_switch.py":
            item.add_marker(pytest.mark.extended)
        if (
            item.path.name == "test_vpc_scenarios.py"
            and variant not in (None, FULL_SET_VARIANT)
            and getattr(item, "originalname", item.name) not in MANAGER_SCENARIOS
        ):
            item.add_marker(pytest.mark.extended)
    yield
    # One boot per guest: the tests that take a `guest` variant, each module's variant's
    # together in definition order; they keep the places they had among the other tests.
    order = {
        v: i for i, v in enumerate((*EC2NET_VARIANTS, *CLOUD_INIT_VARIANTS, *SWITCH_VARIANTS))
    }

    def key(item: pytest.Item) -> tuple[str, int, int]:
        path, line, _ = item.location  # by module first: its guests are module-scoped
        return (path, order.get(str(_variant_of(item)), -1), line or 0)

    places = [i for i, item in enumerate(items) if _variant_of(item) is not None]
    for place, item in zip(places, sorted((items[i] for i in places), key=key)):
        items[place] = item


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    # Remember each phase's outcome on the item so fixtures can tell a failed test.
    report = yield
    setattr(item, f"systest_{report.when}_failed", report.failed)
    return report


@pytest.fixture
def booted(
    request: pytest.FixtureRequest, guest_image: Image, lan: harness.Lan, workdir: Path
) -> Iterator[tuple[Vm, BootInfo]]:
    with harness.booted_vm(guest_image, lan.netns, workdir / "vm", lan.taps[0]) as (vm, info):
        yield vm, info
        failed = getattr(request.node, "systest_call_failed", False)
        if failed or os.environ.get("EC2NET_SYSTEST_KEEP") == "1":
            print("\n" + vm.diagnostics())
            print("dnsmasq log tail:\n" + "\n".join(lan.dnsmasq.log().splitlines()[-20:]))


REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def ec2net_package(
    qemu_available: None, tmp_path_factory: pytest.TempPathFactory
) -> install.Package:
    """What the guests get: the .deb built from the tree (a wheel on request)."""
    pkg = install.package_for(REPO, tmp_path_factory.mktemp("ec2net-package"))
    print(f"\ninstalling ec2net into guests from {pkg.kind} {pkg.path.name}")
    return pkg
