"""Boot a guest image under QEMU inside a test network namespace.

The VM's NICs are taps that must already exist in the namespace (see netns.py); QEMU is
started with ``ip netns exec`` (which execs, so the Popen pid IS the QEMU pid) and only
that pid is ever signalled. QMP and the agent use unix sockets in the work directory,
reachable from outside the namespace.

PCI layout (machine ``pc``, slots on pci.0): 3 root disk, 4 virtio-serial, 5 primary NIC
(``ens5`` as on Nitro), 6..31 free for ``hotplug_nic``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

from systest.agent import Agent, AgentError
from systest.guest_files import AGENT_PORT_NAME
from systest.image import Image, cache_dir, kernel_append
from systest.qmp import Qmp, QmpError

QEMU = "qemu-system-x86_64"
TCG_ACCEL = ["-accel", "tcg,thread=multi,tb-size=256", "-cpu", "max"]
KVM_ACCEL = ["-accel", "kvm", "-cpu", "host"]

PRIMARY_SLOT = 5
HOTPLUG_SLOTS = range(6, 32)
# What a kernel prints when it stops for good; seen once under TCG while unpacking the
# initramfs (a fault in a timer interrupt), on a first boot that nothing had touched.
PANIC_MARK = b"Kernel panic - not syncing"
# The console's end searched for it: a panic's own report is a few KiB.
PANIC_SCAN_BYTES = 64 * 1024
KERNEL_APPEND = (
    "root=/dev/vda rw console=ttyS0,115200 loglevel=4 systemd.show_status=auto random.trust_cpu=on"
)


def qemu_usable() -> Optional[str]:
    """None when QEMU can run here, else why not (the only reason to skip system tests)."""
    try:
        proc = subprocess.run(
            [QEMU, "--version"], check=False, capture_output=True, text=True, timeout=30
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"{QEMU} cannot run: {exc}"
    if proc.returncode != 0:
        return f"{QEMU} --version failed: {proc.stderr.strip()}"
    return None


def _kvm_probe(kernel: Path, timeout: float = 60.0) -> bool:
    # /dev/kvm can exist and still be unable to run a stock kernel (a paravirtual KVM
    # fails on `lock cmpxchg16b`): boot the real kernel with no root and call it usable
    # only if it gets as far as the "cannot mount root" panic.
    argv = [QEMU, *KVM_ACCEL, "-m", "256", "-nodefaults", "-no-user-config"]
    argv += ["-display", "none", "-no-reboot", "-serial", "stdio", "-kernel", str(kernel)]
    argv += ["-append", "console=ttyS0 panic=-1 root=/dev/nonexistent"]
    with tempfile.TemporaryFile() as out:
        try:
            proc = subprocess.Popen(
                argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )
        except OSError:
            return False
        deadline = time.monotonic() + timeout
        text = ""
        try:
            # Watch the output: a failing KVM pauses the VM instead of exiting.
            while proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.2)
                out.seek(0)
                text = out.read().decode(errors="replace")
                if any(
                    m in text for m in ("Kernel panic", "KVM internal error", "emulation failure")
                ):
                    break
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
        out.seek(0)
        text = out.read().decode(errors="replace")
    return "Kernel panic" in text and "KVM internal error" not in text


def choose_accel(kernel: Path) -> str:
    """Return "kvm" or "tcg": ``EC2NET_SYSTEST_ACCEL`` wins, else a cached boot probe."""
    env = os.environ.get("EC2NET_SYSTEST_ACCEL", "").strip().lower()
    if env in ("kvm", "tcg"):
        return env
    if env:
        raise ValueError(f"EC2NET_SYSTEST_ACCEL must be kvm or tcg, not {env!r}")
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return "tcg"
    st = os.stat("/dev/kvm")
    # Keyed by kernel content (not path): every image built from one base shares it.
    ident = hashlib.sha256(kernel.read_bytes())
    ident.update(f"|{st.st_rdev}|{os.uname().release}".encode())
    record = cache_dir() / f"accel-{ident.hexdigest()[:16]}.json"
    try:
        return str(json.loads(record.read_text())["accel"])
    except (OSError, ValueError, KeyError):
        pass
    accel = "kvm" if _kvm_probe(kernel) else "tcg"
    try:
        record.parent.mkdir(parents=True, exist_ok=True)
        record.write_text(json.dumps({"accel": accel}) + "\n")
    except OSError:
        pass
    return accel


class VmError(RuntimeError):
    pass


@dataclass
class BootInfo:
    agent_ready_s: float  # from QEMU start until the agent answered
    running_s: float  # from QEMU start until is-system-running --wait returned
    state: str  # "running" or "degraded"
    failed_units: str = ""


@dataclass
class Vm:
    image: Image
    netns: str
    workdir: Path  # keep it short: unix socket paths are limited to 107 bytes
    primary_tap: str
    primary_mac: str
    accel: Optional[str] = None  # None: choose_accel()
    smp: int = 2
    memory_mib: int = 1024
    extra_append: str = ""
    # More QEMU arguments, e.g. `-smbios` for a DMI identity (cloud_guest.smbios_args).
    extra_args: tuple[str, ...] = ()
    # False: a guest reboot ends QEMU (a panic loop cannot spin). True for tests that
    # reboot; QEMU keeps hot-plugged devices and the snapshot across the reset.
    allow_reboot: bool = False
    pid: Optional[int] = field(default=None, init=False)  # QEMU's, once started
    qmp: Qmp = field(init=False)
    agent: Agent = field(init=False)
    started_at: float = field(default=0.0, init=False)  # monotonic
    _proc: Optional[subprocess.Popen[bytes]] = field(default=None, init=False, repr=False)
    _nics: dict[str, str] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.qmp = Qmp(str(self.qmp_socket))
        self.agent = Agent(str(self.agent_socket))

    @property
    def qmp_socket(self) -> Path:
        return self.workdir / "qmp.sock"

    @property
    def agent_socket(self) -> Path:
        return self.workdir / "agent.sock"

    @property
    def console_log(self) -> Path:
        return self.workdir / "console.log"

    def argv(self) -> list[str]:
        accel = self.accel or choose_accel(self.image.kernel)
        self.accel = accel
        argv = ["ip", "netns", "exec", self.netns, QEMU, "-name", "systest"]
        argv += ["-machine", "pc", *(KVM_ACCEL if accel == "kvm" else TCG_ACCEL)]
        argv += ["-smp", str(self.smp), "-m", str(self.memory_mib)]
        argv += ["-nodefaults", "-no-user-config", "-display", "none"]
        if not self.allow_reboot:
            argv.append("-no-reboot")
        argv += ["-kernel", str(self.image.kernel), "-initrd", str(self.image.initrd)]
        append = f"{KERNEL_APPEND} {kernel_append(self.image.variant)} {self.extra_append}"
        argv += ["-append", " ".join(append.split())]
        argv += list(self.extra_args)
        argv += ["-chardev", f"file,id=console,path={self.console_log}"]
        argv += ["-serial", "chardev:console"]
        argv += [
            "-drive",
            f"file={self.image.rootfs},if=none,id=root,format=raw,snapshot=on",
            "-device",
            "virtio-blk-pci,drive=root,bus=pci.0,addr=0x3",
        ]
        argv += ["-chardev", f"socket,id=qmp,path={self.qmp_socket},server=on,wait=off"]
        argv += ["-mon", "chardev=qmp,mode=control"]
        argv += [
            "-device",
            "virtio-serial-pci,id=vser0,bus=pci.0,addr=0x4",
            "-chardev",
            f"socket,id=agent,path={self.agent_socket},server=on,wait=off",
            "-device",
            f"virtserialport,bus=vser0.0,chardev=agent,name={AGENT_PORT_NAME}",
        ]
        argv += [
            "-netdev",
            f"tap,id=net{PRIMARY_SLOT},ifname={self.primary_tap},script=no,downscript=no",
            "-device",
            f"virtio-net-pci,netdev=net{PRIMARY_SLOT},mac={self.primary_mac},"
            f"bus=pci.0,addr={PRIMARY_SLOT:#x},id=nic{PRIMARY_SLOT}",
        ]
        return argv

    def start(self) -> None:
        for sock in (self.qmp_socket, self.agent_socket):
            sock.unlink(missing_ok=True)
        self._keep_earlier_console()
        argv = self.argv()
        (self.workdir / "qemu.argv").write_text(json.dumps(argv) + "\n")
        self.started_at = time.monotonic()
        with (self.workdir / "qemu.stderr").open("wb") as err:
            self._proc = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=err, stderr=subprocess.STDOUT
            )
        self.pid = self._proc.pid
        try:
            self.qmp.connect(timeout=30)
            self.agent.connect(timeout=10)
        except (QmpError, AgentError) as exc:
            raise VmError(f"QEMU did not come up: {exc}\n{self.diagnostics()}") from exc

    def _keep_earlier_console(self) -> None:
        # An earlier boot's console (a failed first boot's) stays readable, and its
        # panic is not taken for this boot's.
        with contextlib.suppress(FileNotFoundError):
            self.console_log.replace(self.console_log.with_suffix(".prev.log"))

    def wait_booted(self, timeout: float = 300.0) -> BootInfo:
        """Wait for the agent, then for systemd to finish booting (running/degraded)."""
        deadline = self.started_at + timeout
        try:
            self.agent.wait_ready(max(1.0, deadline - time.monotonic()), self.boot_failure)
        except AgentError as exc:
            raise VmError(f"guest did not boot: {exc}\n{self.diagnostics()}") from exc
        return self._wait_running(deadline)

    def boot_failure(self) -> Optional[str]:
        """Why this boot can no longer come up (QEMU ended, the kernel panicked), or None."""
        proc = self._proc
        if proc is not None and proc.poll() is not None:
            return f"QEMU ended (exit status {proc.returncode})"
        try:
            with self.console_log.open("rb") as f:
                f.seek(max(0, f.seek(0, os.SEEK_END) - PANIC_SCAN_BYTES))
                if PANIC_MARK in f.read():
                    return "the guest kernel panicked"
        except OSError:
            pass
        return None

    def reboot(self, timeout: float = 300.0) -> BootInfo:
        """``systemctl reboot`` in the guest (needs ``allow_reboot``); waits for the new
        boot's agent (a new boot id) and for systemd. Times count from the request."""
        if not self.allow_reboot:
            raise VmError("this Vm was started with -no-reboot")
        old = self.agent.boot_id
        self.agent.run(["systemctl", "reboot", "--no-block"], timeout=60, check=True)
        self.started_at = time.monotonic()
        deadline = self.started_at + timeout
        while True:
            try:
                self.agent.wait_ready(max(1.0, deadline - time.monotonic()), self.boot_failure)
            except AgentError as exc:
                raise VmError(f"guest did not come back: {exc}\n{self.diagnostics()}") from exc
            if self.agent.boot_id != old:
                return self._wait_running(deadline)
            # the old agent answers until systemd stops it; a shutdown stuck on a unit
            # must end here, not hold the test run
            if time.monotonic() > deadline:
                raise VmError(
                    f"guest still in its old boot after {timeout} s\n{self.diagnostics()}"
                )
            time.sleep(0.5)

    def _wait_running(self, deadline: float) -> BootInfo:
        ready = time.monotonic() - self.started_at
        while True:
            try:
                res = self.agent.run(
                    ["systemctl", "is-system-running", "--wait"],
                    timeout=max(1.0, deadline - time.monotonic()),
                )
            except AgentError as exc:
                raise VmError(f"guest did not boot: {exc}\n{self.diagnostics()}") from exc
            state = res.stdout.strip()
            # Nothing said (seen once on trixie-nm right after a reboot: systemctl ended
            # without a word, too early in the boot for the bus): ask again.
            if state or res.stderr.strip() or time.monotonic() + 2 > deadline:
                break
            time.sleep(1)
        if state not in ("running", "degraded"):
            raise VmError(f"system state {state!r} ({res.stderr.strip()})\n{self.diagnostics()}")
        failed = ""
        if state == "degraded":
            failed = self.agent.run(["systemctl", "--failed", "--no-legend", "--plain"]).stdout
        return BootInfo(ready, time.monotonic() - self.started_at, state, failed)

    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    # ------------------------------------------------------------ hot-plug

    def hotplug_nic(self, tap_name: str, mac: str, slot: int) -> str:
        """Attach a virtio-net NIC backed by an existing tap in the namespace.

        Returns the QMP device id (``nic<slot>``); the guest names it ``ens<slot>``.
        """
        if slot not in HOTPLUG_SLOTS:
            raise ValueError(f"slot {slot} outside {HOTPLUG_SLOTS}")
        dev_id, net_id = f"nic{slot}", f"net{slot}"
        self.qmp.execute(
            "netdev_add",
            {"type": "tap", "id": net_id, "ifname": tap_name, "script": "no", "downscript": "no"},
        )
        try:
            self.qmp.execute(
                "device_add",
                {
                    "driver": "virtio-net-pci",
                    "id": dev_id,
                    "netdev": net_id,
                    "mac": mac,
                    "bus": "pci.0",
                    "addr": f"{slot:#x}",
                },
            )
        except QmpError:
            self.qmp.execute("netdev_del", {"id": net_id})
            raise
        self._nics[dev_id] = net_id
        return dev_id

    def unplug_nic(self, dev_id: str, timeout: float = 60.0) -> float:
        """Detach a hot-plugged NIC; returns seconds until QEMU reported DEVICE_DELETED.

        The guest must acknowledge the ACPI eject before the slot or tap can be reused, so
        the netdev is removed only after DEVICE_DELETED.
        """
        net_id = self._nics.get(dev_id, "net" + dev_id[len("nic") :])
        t0 = time.monotonic()
        self.qmp.execute("device_del", {"id": dev_id})
        self.qmp.wait_event("DEVICE_DELETED", timeout, lambda d: d.get("device") == dev_id)
        elapsed = time.monotonic() - t0
        self.qmp.execute("netdev_del", {"id": net_id})
        self._nics.pop(dev_id, None)
        return elapsed

    # ------------------------------------------------------------ teardown

    def console_tail(self, lines: int = 60) -> str:
        try:
            text = self.console_log.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def diagnostics(self) -> str:
        parts = [f"workdir {self.workdir}, qemu pid {self.pid}, alive {self.alive()}"]
        with contextlib.suppress(OSError):
            parts.append("qemu stderr: " + (self.workdir / "qemu.stderr").read_text()[-2000:])
        parts.append("console tail:\n" + self.console_tail())
        return "\n".join(parts)

    def stop(self, timeout: float = 10.0) -> None:
        """Quit QEMU: QMP quit, then SIGTERM, then SIGKILL, always to our pid only."""
        proc = self._proc
        self.agent.close()
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(QmpError, OSError):
                self.qmp.execute("quit", timeout=2)
            for sig in (signal.SIGTERM, signal.SIGKILL):
                try:
                    proc.wait(timeout=timeout)
                    break
                except subprocess.TimeoutExpired:
                    os.kill(proc.pid, sig)
            proc.wait()
        self.qmp.close()
        self._proc = None

    def __enter__(self) -> Vm:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def first_boot(launch: Callable[[], Vm], timeout: float = 300.0) -> tuple[Vm, BootInfo]:
    """Start a guest with ``launch`` and wait for it to boot, booting once more if it
    does not come up. Only for a first boot: nothing of ec2net's runs in it yet (it is
    installed afterwards), so a guest that fails there failed by TCG or the host (a
    kernel panic while unpacking the initramfs was seen once). A reboot is never retried.
    """
    vm = launch()
    try:
        return vm, vm.wait_booted(timeout)
    except VmError as exc:
        print(f"\n[systest] first boot failed, booting again: {exc}", file=sys.stderr)
        vm.stop()
    vm = launch()
    return vm, vm.wait_booted(timeout)
