"""A new NIC that udev is still renaming: the daemon reads the ENI's metadata while
udev works and configures the link under the name udev gave it, reading IMDS once."""

from __future__ import annotations

import threading
from pathlib import Path

from ec2net import watch
from ec2net.converge import Action
from ec2net.model import Link
from ec2net.udev import Udev
from tests.unit.fakes import PRIMARY_MAC, FakeImds, FakeKernel, engine

ENI = "02:00:00:00:02:15"


def udev_dirs(tmp_path: Path) -> tuple[Path, Path]:
    run, sys_net = tmp_path / "udev", tmp_path / "net"
    (run / "data").mkdir(parents=True)
    (run / "control").touch()
    (sys_net / "eth1").mkdir(parents=True)
    (sys_net / "eth1" / "ifindex").write_text("4\n")
    return run, sys_net


def test_processing_until_the_database_entry_is_written(tmp_path: Path) -> None:
    run, sys_net = udev_dirs(tmp_path)
    udev = Udev(run, sys_net)
    assert udev.processing(4, "eth1")
    assert not udev.processing(5, "eth1")  # /sys shows another link under that name
    assert not udev.processing(4, "ens6")  # renamed already: udev is done with it
    assert not udev.wait(4, 0.05)  # bounded
    later = threading.Timer(0.05, (run / "data" / "n4").touch)
    later.start()
    assert udev.wait(4, 10.0)
    later.join()
    assert not udev.processing(4, "eth1")
    (run / "control").unlink()
    assert not Udev(run, sys_net).processing(7, "eth1")  # no udevd: nothing to wait for


class RenamingUdev(Udev):
    """udev renames eth1 to ens6 while the daemon waits; records what IMDS saw by then."""

    def __init__(self, tmp_path: Path, kernel: FakeKernel, imds: FakeImds) -> None:
        super().__init__(*udev_dirs(tmp_path))
        self.kernel, self.imds = kernel, imds
        self.requests_before_rename = -1

    def wait(self, index: int, timeout: float) -> bool:
        self.requests_before_rename = self.imds.requests
        link = self.kernel.links_.pop("eth1")
        self.kernel.plug("ens6", link.mac, link.index)
        (self.run_dir / "data" / f"n{index}").touch()
        return super().wait(index, timeout)


def test_metadata_is_read_while_udev_renames_and_the_new_name_is_configured(
    tmp_path: Path,
) -> None:
    kernel = FakeKernel()
    kernel.plug("eth0", PRIMARY_MAC, 2)
    kernel.plug("eth1", ENI, 4)
    imds = FakeImds()
    imds.eni(PRIMARY_MAC, 0, ["10.0.1.10"], subnet="10.0.1.0/24")
    imds.eni(ENI, 1, ["10.0.2.30"], ipv6s=["2600:1f16:292:2::30"])
    e = engine(kernel, imds, tmp_path)
    e.primary_mac()  # cached, as in a running daemon
    start = imds.requests
    udev = RenamingUdev(tmp_path, kernel, imds)
    result = watch._up_by_index(e, 4, udev)
    assert result is not None and result.action is Action.CONFIGURED
    assert result.ifname == "ens6"
    record = e.store.load(ENI)
    assert record is not None and record.ifname == "ens6"
    # the whole read happened before udev was done, and was not repeated after it
    assert udev.requests_before_rename == imds.requests > start


def test_no_udev_means_no_wait_and_the_same_result(tmp_path: Path) -> None:
    kernel = FakeKernel()
    kernel.plug("eth0", PRIMARY_MAC, 2)
    kernel.plug("eth1", ENI, 4)
    imds = FakeImds()
    imds.eni(PRIMARY_MAC, 0, ["10.0.1.10"], subnet="10.0.1.0/24")
    imds.eni(ENI, 1, ["10.0.2.30"])
    e = engine(kernel, imds, tmp_path)
    result = watch._up_by_index(e, 4, Udev(tmp_path / "none", tmp_path / "none"))
    assert result is not None and result.action is Action.CONFIGURED
    assert result.ifname == "eth1"


class RenamedAfterLookup(FakeKernel):
    """udev renames eth1 to ens6 right after the daemon's first look at the links."""

    looks = 0

    def links(self) -> list[Link]:
        found = super().links()
        self.looks += 1
        if self.looks == 1 and "eth1" in self.links_:
            link = self.links_.pop("eth1")
            self.plug("ens6", link.mac, link.index)
        return found


def test_a_rename_the_daemon_did_not_see_coming_is_followed(tmp_path: Path) -> None:
    kernel = RenamedAfterLookup()
    kernel.plug("eth0", PRIMARY_MAC, 2)
    kernel.plug("eth1", ENI, 4)
    imds = FakeImds()
    imds.eni(PRIMARY_MAC, 0, ["10.0.1.10"], subnet="10.0.1.0/24")
    imds.eni(ENI, 1, ["10.0.2.30"])
    e = engine(kernel, imds, tmp_path)
    result = watch._up_by_index(e, 4, Udev(tmp_path / "none", tmp_path / "none"))
    # configured in this job under its new name, not left to the rename's own event
    assert result is not None and result.action is Action.CONFIGURED
    assert result.ifname == "ens6"
