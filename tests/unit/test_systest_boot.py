"""A guest that cannot come up any more is given up at once, and a first boot gets one
more try.

Seen in CI: a trixie guest's kernel panicked under TCG while unpacking its initramfs
(a fault in a timer interrupt) before anything of ec2net's was installed; the test
waited the whole 300 s boot timeout and then failed without a second boot.
"""

from __future__ import annotations

import socket
import subprocess
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Optional, cast

import pytest

from systest.agent import Agent, AgentError
from systest.image import Image
from systest.qemu import BootInfo, Vm, VmError, first_boot

PANIC = (
    "[    1.245855] Kernel panic - not syncing: Fatal exception in interrupt\n"
    "[    1.246234] ---[ end Kernel panic - not syncing: Fatal exception in interrupt ]---\n"
)


def _vm(tmp_path: Path) -> Vm:
    d = tmp_path / "image"
    image = Image("trixie-nm", "0" * 16, d, d / "vmlinuz", d / "initrd", d / "rootfs", "6.12")
    return Vm(image, "ns", tmp_path / "vm", "tap0", "02:00:00:00:00:05", accel="tcg")


def test_a_panicked_kernel_is_a_boot_failure(tmp_path: Path) -> None:
    vm = _vm(tmp_path)
    assert vm.boot_failure() is None  # no console yet
    vm.console_log.write_text("[    0.000000] Linux version 6.12\n" + "x" * 100_000 + "\n")
    assert vm.boot_failure() is None
    with vm.console_log.open("a") as f:
        f.write(PANIC)
    assert vm.boot_failure() == "the guest kernel panicked"


def test_an_earlier_boots_panic_is_kept_but_not_taken_for_this_boot(tmp_path: Path) -> None:
    vm = _vm(tmp_path)
    vm.console_log.write_text(PANIC)
    vm._keep_earlier_console()
    assert vm.boot_failure() is None
    assert "Kernel panic" in (vm.workdir / "console.prev.log").read_text()


def test_an_ended_qemu_is_a_boot_failure(tmp_path: Path) -> None:
    vm = _vm(tmp_path)
    vm._proc = subprocess.Popen(["sh", "-c", "exit 3"])
    vm._proc.wait()
    assert vm.boot_failure() == "QEMU ended (exit status 3)"


def test_wait_ready_ends_with_the_reason_to_give_up(
    connected: tuple[Agent, socket.socket],
) -> None:
    silent_agent, _ = connected  # the guest never answers (its port closed)
    asked = threading.Event()

    def give_up() -> Optional[str]:
        if asked.is_set():
            return "the guest kernel panicked"
        asked.set()
        return None

    # the deadline is 10 minutes: the reason, not the deadline, ends this wait
    with pytest.raises(AgentError, match="not ready: the guest kernel panicked"):
        silent_agent.wait_ready(600.0, give_up)


class FakeVm:
    def __init__(self, fails: bool) -> None:
        self.fails = fails
        self.stopped = False

    def wait_booted(self, timeout: float) -> BootInfo:
        if self.fails:
            raise VmError("guest did not boot: the guest kernel panicked")
        return BootInfo(1.0, 2.0, "running", "")

    def stop(self) -> None:
        self.stopped = True


def _launcher(*fails: bool) -> tuple[list[FakeVm], Callable[[], Vm]]:
    made: list[FakeVm] = []

    def launch() -> Vm:
        vm = FakeVm(fails[len(made)])
        made.append(vm)
        return cast(Vm, vm)

    return made, launch


def test_a_failed_first_boot_is_stopped_and_booted_once_more() -> None:
    made, launch = _launcher(True, False)
    vm, info = first_boot(launch, 300.0)
    assert len(made) == 2 and made[0].stopped and not made[1].stopped
    assert cast(FakeVm, vm) is made[1] and info.state == "running"


def test_a_second_failure_is_the_tests_failure() -> None:
    made, launch = _launcher(True, True)
    with pytest.raises(VmError, match="kernel panicked"):
        first_boot(launch, 300.0)
    assert len(made) == 2


def test_a_good_first_boot_boots_once() -> None:
    made, launch = _launcher(False)
    vm, _ = first_boot(launch, 300.0)
    assert made == [cast(FakeVm, vm)]
