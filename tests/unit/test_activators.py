"""Activators: the exact commands each network manager is given (a recording runner
stands in for subprocess), and the networkd check of which .network file it applied."""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Optional

import pytest

from ec2net.backends.activators import (
    Activation,
    IfcfgActivator,
    NetworkdActivator,
    NmActivator,
    skip_dad,
)
from ec2net.backends.base import ApplyReport
from ec2net.errors import ApplyFailed
from ec2net.model import AddressSpec, Change, ChangeSet, Link, Op

OURS = Path("/run/systemd/network/00-ec2net-ens6.network")
UUID6 = "0b9c0ff4-5d0a-5b7e-9c56-6a1f3d1e0006"
UUID7 = "0b9c0ff4-5d0a-5b7e-9c56-6a1f3d1e0007"
ADD = ChangeSet(
    (Change(Op.ADD, AddressSpec("ens6", ipaddress.ip_interface("10.0.2.20/24"), True)),)
)


class Recorder:
    """A Runner: records argv and timeout, answers from a table of argv prefixes."""

    def __init__(self, answers: Optional[dict[tuple[str, ...], str]] = None) -> None:
        self.calls: list[tuple[str, ...]] = []
        self.timeouts: list[float] = []
        self.answers = answers or {}

    def __call__(self, argv: Sequence[str], timeout: float) -> str:
        self.calls.append(tuple(argv))
        self.timeouts.append(timeout)
        for prefix, out in self.answers.items():
            if tuple(argv[: len(prefix)]) == prefix:
                return out
        return ""


class FakeKernel:
    def __init__(self, log: Optional[list[tuple[str, ...]]] = None) -> None:
        self.applied: list[ChangeSet] = []
        self.log = log if log is not None else []

    def link(self, name: str) -> Optional[Link]:
        return Link(7, name, "02:00:00:00:00:06", "ena")

    def apply(self, changes: ChangeSet) -> ApplyReport:
        self.applied.append(changes)
        self.log.append(("<netlink apply>",))
        return ApplyReport(applied=list(changes.changes))


def keyfile(tmp_path: Path, ifname: str, uuid: str) -> Path:
    path = tmp_path / f"ec2net-{ifname}.nmconnection"
    path.write_text(f"# Managed by ec2net\n\n[connection]\nid=ec2net-{ifname}\nuuid={uuid}\n")
    return path


# --- NetworkManager --------------------------------------------------------------


def test_nm_load_then_reapply_when_our_profile_is_active(tmp_path: Path) -> None:
    path = keyfile(tmp_path, "ens6", UUID6)
    run = Recorder({("nmcli", "-g", "GENERAL.CON-UUID"): UUID6 + "\n"})
    report = NmActivator(run, tmp_path / "conf").activate(
        [Activation("ens6", (path,), ())], ADD, FakeKernel()
    )
    assert run.calls == [
        ("nmcli", "connection", "load", str(path)),
        ("nmcli", "-g", "GENERAL.CON-UUID", "device", "show", "ens6"),
        ("nmcli", "device", "reapply", "ens6"),
    ]
    assert report.applied == list(ADD.changes)  # verify, not nmcli, says what took effect


def test_nm_connection_up_when_another_profile_is_active(tmp_path: Path) -> None:
    p6, p7 = keyfile(tmp_path, "ens6", UUID6), keyfile(tmp_path, "ens7", UUID7)
    run = Recorder({("nmcli", "-g", "GENERAL.CON-UUID"): "\n"})  # nothing active yet
    acts = [Activation("ens6", (p6,), ()), Activation("ens7", (p7,), ())]
    NmActivator(run, tmp_path / "conf").activate(acts, ChangeSet(()), FakeKernel())
    # One load for every file, then one look at each device: one per ENI.
    assert run.calls == [
        ("nmcli", "connection", "load", str(p6), str(p7)),
        ("nmcli", "-g", "GENERAL.CON-UUID", "device", "show", "ens6"),
        ("nmcli", "--wait", "30", "connection", "up", "uuid", UUID6),
        ("nmcli", "-g", "GENERAL.CON-UUID", "device", "show", "ens7"),
        ("nmcli", "--wait", "30", "connection", "up", "uuid", UUID7),
    ]
    assert run.timeouts[2] > 30  # the command outlives its own --wait


def test_nm_nothing_written_runs_nothing(tmp_path: Path) -> None:
    run = Recorder()
    NmActivator(run, tmp_path / "conf").activate([], ChangeSet(()), FakeKernel())
    NmActivator(run, tmp_path / "conf").release([])
    assert run.calls == []


def test_nm_removal_deletes_our_profile_by_uuid(tmp_path: Path) -> None:
    ours = Path("/run/NetworkManager/system-connections/ec2net-ens6.nmconnection")
    listing = (
        f"{UUID7}:/etc/NetworkManager/system-connections/eth0.nmconnection\n"
        f"{UUID6}:{ours}\n"
        "ffffffff-0000-0000-0000-000000000000:\n"  # in memory only, no file
    )
    run = Recorder({("nmcli", "-t"): listing})
    NmActivator(run, tmp_path / "conf").release(
        [ours, Path("/run/NetworkManager/x/gone.nmconnection")]
    )
    assert run.calls == [
        ("nmcli", "-t", "-f", "UUID,FILENAME", "connection", "show"),
        ("nmcli", "connection", "delete", "uuid", UUID6),
    ]


def test_nm_turns_dad_off_on_the_eni_before_loading_its_profile(tmp_path: Path) -> None:
    conf = tmp_path / "conf"
    for ifname in ("ens6", "ens7"):
        (conf / ifname).mkdir(parents=True)
        (conf / ifname / "accept_dad").write_text("1\n")
    path = keyfile(tmp_path, "ens6", UUID6)
    seen: list[str] = []

    def run(argv: Sequence[str], timeout: float) -> str:
        if argv[:3] == ["nmcli", "connection", "load"]:
            seen.append((conf / "ens6" / "accept_dad").read_text())
        return ""

    NmActivator(run, conf).activate([Activation("ens6", (path,), ())], ADD, FakeKernel())
    assert seen == ["0\n"]  # already off when NetworkManager gets the profile
    assert (conf / "ens7" / "accept_dad").read_text() == "1\n"  # not ours to touch


def test_nm_dad_left_alone_where_it_cannot_or_must_not_be_set(tmp_path: Path) -> None:
    conf = tmp_path / "conf"
    (conf / "ens6").mkdir(parents=True)  # no accept_dad: IPv6 off on the link
    outside = tmp_path / "accept_dad"
    outside.write_text("1\n")
    assert not skip_dad(conf, "ens6")
    assert not skip_dad(conf, "..")  # a name that would leave the directory
    assert not skip_dad(conf, "a/b")
    assert not skip_dad(conf, "")
    assert outside.read_text() == "1\n"
    (conf / "ens6" / "accept_dad").write_text("0\n")
    assert skip_dad(conf, "ens6")


def test_nm_failure_is_retryable_and_stops(tmp_path: Path) -> None:
    path = keyfile(tmp_path, "ens6", UUID6)
    calls: list[tuple[str, ...]] = []

    def failing(argv: Sequence[str], timeout: float) -> str:
        calls.append(tuple(argv))
        raise ApplyFailed("nmcli connection load: exit 8: failed")

    with pytest.raises(ApplyFailed) as err:
        NmActivator(failing, tmp_path / "conf").activate(
            [Activation("ens6", (path,), ())], ADD, FakeKernel()
        )
    assert err.value.retryable and len(calls) == 1


class FakeNm:
    """A Runner that answers busctl's calls as NetworkManager would (nm_bus.py's
    formats); `autoconnect` says after how many looks at the device, counted from the
    load, NetworkManager has activated our freshly loaded profile (None: never)."""

    def __init__(self, active: str = "", known: bool = True, autoconnect: Optional[int] = 1):
        self.calls: list[tuple[str, ...]] = []
        self.active = active
        self.known = known
        self.autoconnect = autoconnect
        self.loaded = False
        self.looks_after_load = 0

    def __call__(self, argv: Sequence[str], timeout: float) -> str:
        call = tuple(argv)
        self.calls.append(call)
        if call[0] == "nmcli":
            return ""
        method = call[-1] if call[2] == "get-property" else call[6]
        if method == "LoadConnections":
            self.loaded = True
            return "bas true 0\n"
        if method == "GetDeviceByIpIface":
            if self.loaded:
                self.looks_after_load += 1
                if self.autoconnect is not None and self.looks_after_load >= self.autoconnect:
                    self.known, self.active = True, UUID6
            if not self.known:
                raise ApplyFailed("busctl: exit 1: No device found for the requested iface.")
            return 'o "/org/freedesktop/NetworkManager/Devices/5"\n'
        if method == "ActiveConnection":
            return (
                'o "/org/freedesktop/NetworkManager/ActiveConnection/3"\n'
                if self.active
                else 'o "/"\n'
            )
        if method == "Uuid":
            return f's "{self.active}"\n'
        return ""

    def methods(self) -> list[str]:
        out = []
        for c in self.calls:
            if c[0] == "nmcli":
                out.append(" ".join(c[1:]))
            else:
                out.append(c[-1] if c[2] == "get-property" else c[6])
        return out


LOOK = ["GetDeviceByIpIface", "ActiveConnection"]


def bus_activate(tmp_path: Path, nm: FakeNm, created: bool = True, wait: float = 2.0) -> None:
    path = keyfile(tmp_path, "ens6", UUID6)
    act = Activation("ens6", (path,), (), (path,) if created else ())
    NmActivator(nm, tmp_path / "conf", bus=True, autoconnect_wait=wait).activate(
        [act], ADD, FakeKernel()
    )


def test_nm_bus_hotplug_is_one_load_and_networkmanagers_own_autoconnect(
    tmp_path: Path,
) -> None:
    nm = FakeNm(active="")
    bus_activate(tmp_path, nm)
    # A profile NetworkManager never had: the load comes first (nothing to ask before),
    # NetworkManager activates what it just read; no reapply of the same, no
    # `connection up` restarting that activation, no nmcli.
    assert nm.methods() == ["LoadConnections", *LOOK, "Uuid"]
    assert nm.calls[0][-3:] == ("as", "1", str(tmp_path / "ec2net-ens6.nmconnection"))


def test_nm_bus_device_not_known_yet_is_waited_for(tmp_path: Path) -> None:
    nm = FakeNm(known=False, autoconnect=3)
    bus_activate(tmp_path, nm)
    assert nm.methods() == [
        "LoadConnections",
        "GetDeviceByIpIface",
        "GetDeviceByIpIface",
        *LOOK,
        "Uuid",
    ]


def test_nm_bus_changed_profile_already_active_is_reapplied(tmp_path: Path) -> None:
    nm = FakeNm(active=UUID6, autoconnect=None)
    bus_activate(tmp_path, nm, created=False)
    # asked before the load: the version NetworkManager applies is the older one
    assert nm.methods() == [*LOOK, "Uuid", "LoadConnections", "Reapply"]
    assert nm.calls[-1][4] == "/org/freedesktop/NetworkManager/Devices/5"


def test_nm_bus_changed_profile_on_an_idle_device_is_autoconnected(tmp_path: Path) -> None:
    nm = FakeNm(active="", autoconnect=1)
    bus_activate(tmp_path, nm, created=False)
    assert nm.methods() == [*LOOK, "LoadConnections", *LOOK, "Uuid"]


def test_nm_bus_device_held_by_another_profile_is_taken_with_connection_up(
    tmp_path: Path,
) -> None:
    up = f"--wait 30 connection up uuid {UUID6}"
    for created in (True, False):
        nm = FakeNm(active=UUID7, autoconnect=None)
        bus_activate(tmp_path, nm, created=created)
        methods = nm.methods()
        assert methods[-1] == up and methods.count(up) == 1
        assert "Reapply" not in methods and methods.count("GetDeviceByIpIface") == 1


def test_nm_bus_no_autoconnect_in_time_means_connection_up(tmp_path: Path) -> None:
    nm = FakeNm(active="", autoconnect=None)
    bus_activate(tmp_path, nm, wait=0.2)
    methods = nm.methods()
    assert methods[:3] == ["LoadConnections", *LOOK]
    assert methods[-1] == f"--wait 30 connection up uuid {UUID6}"
    assert methods.count("GetDeviceByIpIface") >= 3  # it looked again until the deadline


def test_nm_bus_profiles_networkmanager_could_not_load_fail_retryably(tmp_path: Path) -> None:
    path = keyfile(tmp_path, "ens6", UUID6)

    def run(argv: Sequence[str], timeout: float) -> str:
        if "LoadConnections" in argv:
            return f'bas true 1 "{path}"\n'
        return 'o "/"\n' if "ActiveConnection" in argv else 'o "/org/x/Devices/5"\n'

    with pytest.raises(ApplyFailed) as err:
        NmActivator(run, tmp_path / "conf", bus=True).activate(
            [Activation("ens6", (path,), (), (path,))], ADD, FakeKernel()
        )
    assert err.value.retryable and str(path) in str(err.value)


# --- network-scripts (ifcfg) -----------------------------------------------------

IFCFG = Path("/etc/sysconfig/network-scripts/ifcfg-ens6")
ROUTE = Path("/etc/sysconfig/network-scripts/route-ens6")


def test_ifcfg_with_dhcp_runs_ifup_then_netlink() -> None:
    run = Recorder()
    kernel = FakeKernel(run.calls)
    acts = [Activation("ens6", (IFCFG, ROUTE), ()), Activation("ens7", (ROUTE,), ())]
    report = IfcfgActivator(True, run).activate(acts, ADD, kernel)
    # dhclient first (it adds the primary address), then the rest over netlink; ens7's
    # ifcfg file did not change, so it is not bounced.
    assert run.calls == [("ifup", "ens6"), ("<netlink apply>",)]
    assert kernel.applied == [ADD] and report.applied == list(ADD.changes)


def test_ifcfg_without_dhcp_is_netlink_only() -> None:
    run, kernel = Recorder(), FakeKernel()
    IfcfgActivator(False, run).activate([Activation("ens6", (IFCFG,), ())], ADD, kernel)
    IfcfgActivator(False, run).release([IFCFG])
    assert run.calls == [] and kernel.applied == [ADD]


def test_ifcfg_removal_with_dhcp_runs_ifdown_and_tolerates_a_gone_device() -> None:
    calls: list[tuple[str, ...]] = []

    def gone(argv: Sequence[str], timeout: float) -> str:
        calls.append(tuple(argv))
        raise ApplyFailed("ifdown ens6: exit 1: no such device")

    IfcfgActivator(True, gone).release([ROUTE, IFCFG])
    assert calls == [("ifdown", "ens6")]


# --- systemd-networkd --------------------------------------------------------------


def state(tmp_path: Path, network_file: str) -> Path:
    links = tmp_path / "links"
    links.mkdir()
    (links / "7").write_text(f"ADMIN_STATE=configured\nNETWORK_FILE={network_file}\n")
    return links


def test_networkd_reloads_once_and_checks_each_link(tmp_path: Path) -> None:
    run = Recorder()
    act = NetworkdActivator(state(tmp_path, str(OURS)), wait=0.2, runner=run)
    report = act.activate([Activation("ens6", (OURS,), ())], ADD, FakeKernel())
    assert run.calls == [("networkctl", "reload")]
    assert report.applied == list(ADD.changes)
    run.calls.clear()
    act.activate([], ChangeSet(()), FakeKernel())
    assert run.calls == []  # nothing changed: networkd is not disturbed


def test_ours_applied(tmp_path: Path) -> None:
    act = NetworkdActivator(state(tmp_path, str(OURS)), wait=0.2, runner=Recorder())
    assert act._check_applied("ens6", 7, OURS) == str(OURS)


def test_an_earlier_file_that_matches_is_named(tmp_path: Path) -> None:
    act = NetworkdActivator(state(tmp_path, "/etc/systemd/network/00-aaa.network"), wait=0.2)
    with pytest.raises(ApplyFailed, match=r"00-aaa\.network"):
        act._check_applied("ens6", 7, OURS)


def test_not_reported_yet_is_a_warning_not_an_error(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "links").mkdir()
    act = NetworkdActivator(tmp_path / "links", wait=0.1)
    with caplog.at_level(logging.WARNING):
        assert act._check_applied("ens6", 7, OURS) is None
    assert [r.getMessage() for r in caplog.records] == [
        "ens6: networkd has not reported a .network file yet"
    ]
