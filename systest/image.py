"""Build (and cache) the Debian guest images (bookworm and trixie) for the system tests.

Two stages, each cached by a content hash so repeated runs cost nothing:

* base: ``debootstrap --variant=minbase`` with the packages every variant needs, the
  initramfs configured for virtio (``MODULES=list``), docs and locales trimmed. Stored as
  one ``base-<hash>.tar.zst``; shared by the variants because debootstrap is the slow part.
* variant: the base unpacked, variant packages added with apt in a chroot, guest config
  (machine-id, primary NIC, agent unit) written, then packed into a raw ext4 image with
  ``mkfs.ext4 -d`` (no loop mounts) next to the kernel and initrd pulled from ``/boot``.

Every build happens in a temporary directory inside the cache and is renamed into place,
so a crashed or concurrent build never leaves a half image behind; a per-key ``flock``
keeps two test runs from building the same thing twice.
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import inspect
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

from systest import cloud_guest, peer, peer1x, rhel_guest
from systest.aptsource import SUITES, apt_mirror
from systest.guest_files import (
    AGENT_GUEST_PATH,
    AGENT_UDEV_RULE,
    AGENT_UNIT,
    AWS_DRIVER_EDITS,
    ECHO_UNIT,
    GUEST_TOOLS_PATH,
    JOURNALD_CONF,
    MODPROBE_BLACKLIST,
    NETWORKD_PRIMARY,
    NM_CONF,
    NM_PRIMARY,
    PRIMARY_IFNAME,
)

DEFAULT_CACHE = "/var/cache/ec2net-systest"

BASE_PACKAGES: tuple[str, ...] = (
    "systemd",
    "systemd-sysv",
    "udev",
    "iproute2",
    "python3",
    "python3-pyroute2",
    "dbus",
    "kmod",
    "initramfs-tools",
    "zstd",  # initramfs-tools only recommends it; without it the initrd falls back to gzip
    "procps",
    "iputils-ping",  # tests check reachability from inside the guest
    "linux-image-cloud-amd64",
)

# A variant is "<suite>-<flavour>", e.g. "trixie-nm". systemd-networkd ships in the
# systemd package (bookworm) so that flavour needs nothing extra; trixie split out
# systemd-resolved, which the AWS tool's postinst enables, so its flavours add it.
# "aws": networkd plus Debian's amazon-ec2-net-utils (2.3.0 on bookworm, 2.4.1 on
# trixie); "aws274": networkd plus AWS's release 2.7.4 from its own `make install`
# (see peer.py), with only what its scripts run (curl) and systemd-resolved;
# "aws274deb": the same release as a Debian package built from its own debian/ (a
# package swap to ec2net's .deb); "aws173": RHEL 7's network-scripts (as "ifcfg") with
# AWS's 1.7.3 RPM (peer1x.py), eth* names, the original's design as on Amazon Linux 2.
FLAVOUR_PACKAGES: dict[str, tuple[str, ...]] = {
    "networkd": (),
    "nm": ("network-manager",),
    "aws": ("amazon-ec2-net-utils", "systemd-resolved"),
    "aws274": ("curl", "systemd-resolved"),
    "aws274deb": ("curl", "systemd-resolved"),
    "ifcfg": rhel_guest.PACKAGES,
    # As the AMIs have them (cloud_guest.py): cloud-init's EC2 datasource renders the
    # primary, through netplan into networkd (Ubuntu, Debian 13's images) or into
    # ifupdown (Debian 12's images).
    "netplan": cloud_guest.NETPLAN_PACKAGES,
    "ifupdown": cloud_guest.IFUPDOWN_PACKAGES,
    # the netplan guest plus AWS's release 2.7.4 (the benchmark's column beside ec2net)
    "netplan274": (*cloud_guest.NETPLAN_PACKAGES, "curl", "systemd-resolved"),
    "aws173": (*rhel_guest.PACKAGES, *peer1x.PACKAGES),
}
# The network manager each flavour runs.
FLAVOUR_MANAGER = {
    "networkd": "networkd",
    "nm": "nm",
    "aws": "networkd",
    "aws274": "networkd",
    "aws274deb": "networkd",
    "ifcfg": "ifcfg",
    "netplan": "networkd",
    "ifupdown": "netlink",  # no manager: ifupdown's dhclient is no daemon ec2net defers to
    "netplan274": "networkd",
    "aws173": "ifcfg",
}
# Kernel command-line words a flavour boots with: 1.7.3 handles eth* names only.
FLAVOUR_KERNEL_APPEND = {"aws173": "net.ifnames=0"}
# The primary NIC's name in the guest (slot 5: ens5 as on Nitro, or eth0).
FLAVOUR_PRIMARY = {"aws173": "eth0"}
# Where the guest keeps a peer's package file, for an offline reinstall.
PEER_PACKAGES = peer1x.GUEST_PACKAGES
VARIANTS = tuple(f"{suite}-{flavour}" for suite in SUITES for flavour in FLAVOUR_PACKAGES)
# Where ec2net runs in the system tier: both releases, both managers.
# and RHEL 7's network-scripts on Debian 12 (rhel_guest.py), the original's platform.
EC2NET_VARIANTS = (
    *(f"{suite}-{m}" for suite in SUITES for m in ("networkd", "nm")),
    "bookworm-ifcfg",
)
# Guests that boot like the AMIs people use: cloud-init from the simulated IMDS.
CLOUD_INIT_VARIANTS = cloud_guest.VARIANTS
# Flavours with AWS's release 2.7.4 (peer.py): built for the benchmark only.
AWS274_FLAVOURS = ("aws274", "netplan274")
# Every flavour built from the 2.7.4 tree (its make install, or its own .deb).
PEER_274_FLAVOURS = (*AWS274_FLAVOURS, "aws274deb")

# The guests of the switch scenarios (tests/system/test_switch.py): the old tool
# installed, ec2net installed over it.
SWITCH_VARIANTS = ("bookworm-aws173", "trixie-aws", "trixie-aws274deb")


def split_variant(variant: str) -> tuple[str, str]:
    """("trixie", "nm") for "trixie-nm"; ValueError for anything not in VARIANTS."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; known: {sorted(VARIANTS)}")
    suite, _, flavour = variant.partition("-")
    return suite, flavour


def manager_of(variant: str) -> str:
    return FLAVOUR_MANAGER[split_variant(variant)[1]]


def kernel_append(variant: str) -> str:
    return FLAVOUR_KERNEL_APPEND.get(split_variant(variant)[1], "")


def primary_ifname(variant: str) -> str:
    return FLAVOUR_PRIMARY.get(split_variant(variant)[1], PRIMARY_IFNAME)


def eth_names(variant: str) -> bool:
    """Whether the guest keeps the kernel's ethN names (hot-plugged NICs are not
    named after their slot)."""
    return "net.ifnames=0" in kernel_append(variant).split()


INITRAMFS_MODULES = ("virtio_pci", "virtio_net", "virtio_blk", "virtio_console", "ext4")


TRIM_DIRS = (
    "usr/share/doc",
    "usr/share/man",
    "usr/share/info",
    "usr/share/locale",
    "usr/share/lintian",
    "var/cache/apt",
    "var/lib/apt/lists",
)

# Timers and services that only cost CPU under TCG and never matter to a test.
MASKED_UNITS = (
    "apt-daily.timer",
    "apt-daily-upgrade.timer",
    "dpkg-db-backup.timer",
    "e2scrub_all.timer",
    "e2scrub_reap.service",
    "fstrim.timer",
    "getty@tty1.service",  # no display: the serial getty is the only useful one
)

Log = Callable[[str], None]
TAR = ("tar", "--numeric-owner", "--xattrs", "--zstd")


def _stderr_log(msg: str) -> None:
    print(f"[systest.image] {msg}", file=sys.stderr, flush=True)


@dataclass(frozen=True)
class Image:
    """A built guest: everything QEMU needs to boot it."""

    variant: str
    key: str
    directory: Path
    kernel: Path
    initrd: Path
    rootfs: Path
    kernel_version: str


class BuildError(RuntimeError):
    pass


# One build step (debootstrap, an apt-get in the chroot) takes 1-3 min here; a stalled
# mirror must fail the build, not hold it forever.
STEP_TIMEOUT_S = 1200


def cache_dir() -> Path:
    return Path(os.environ.get("EC2NET_SYSTEST_CACHE", DEFAULT_CACHE))


def _run(argv: Sequence[str], log_file: Path, env: Optional[dict[str, str]] = None) -> None:
    with log_file.open("ab") as out:
        out.write(("\n$ " + " ".join(argv) + "\n").encode())
        out.flush()
        try:
            proc = subprocess.run(
                list(argv),
                check=False,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                timeout=STEP_TIMEOUT_S,
            )
        except subprocess.TimeoutExpired:
            raise BuildError(f"{argv[0]} ran past {STEP_TIMEOUT_S} s; log {log_file}") from None
    if proc.returncode != 0:
        tail = log_file.read_bytes()[-4000:].decode(errors="replace")
        raise BuildError(f"{argv[0]} failed with {proc.returncode}; log {log_file}:\n{tail}")


def _chroot_env() -> dict[str, str]:
    return {
        "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
        "DEBIAN_FRONTEND": "noninteractive",
        "LC_ALL": "C",
        "HOME": "/root",
    }


def _chroot(root: Path, argv: Sequence[str], log_file: Path) -> None:
    # A private pid and mount namespace gives the chroot its own /proc and guarantees that
    # any daemon a maintainer script starts dies with it; nothing to unmount afterwards.
    _run(
        ["unshare", "--fork", "--pid", f"--mount-proc={root}/proc", "chroot", str(root), *argv],
        log_file,
        env=_chroot_env(),
    )


def _write(root: Path, rel: str, content: str, mode: int = 0o644) -> None:
    path = root / rel.lstrip("/")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(content)
    os.chmod(path, mode)


def _trim(root: Path) -> None:
    for rel in TRIM_DIRS:
        d = root / rel
        if not d.is_dir():
            continue
        for child in d.iterdir():
            if child.is_dir() and not child.is_symlink():
                shutil.rmtree(child)
            else:
                child.unlink()
    (root / "var/lib/apt/lists/partial").mkdir(parents=True, exist_ok=True)
    (root / "var/cache/apt/archives/partial").mkdir(parents=True, exist_ok=True)
    for log in (root / "var/log").rglob("*"):
        if log.is_file():
            log.write_bytes(b"")


def _hash(*parts: str) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(part.encode())
        h.update(b"\0")
    return h.hexdigest()[:16]


@contextmanager
def _locked(cache: Path, name: str) -> Iterator[None]:
    cache.mkdir(parents=True, exist_ok=True)
    with (cache / f".lock-{name}").open("w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


# ---------------------------------------------------------------- base stage

DPKG_EXCLUDES = """\
# Test image: keep later package installs as small as the trimmed base.
path-exclude=/usr/share/doc/*
path-exclude=/usr/share/man/*
path-exclude=/usr/share/info/*
path-exclude=/usr/share/locale/*
path-exclude=/usr/share/lintian/*
"""


def _build_base(root: Path, suite: str, mirror: str, log_file: Path) -> None:
    _run(
        [
            "debootstrap",
            "--variant=minbase",
            "--include=" + ",".join(BASE_PACKAGES),
            "--components=main",
            suite,
            str(root),
            mirror,
        ],
        log_file,
        # The kernel's postinst would build a MODULES=most initrd that we replace anyway.
        env={**os.environ, "INITRD": "No", "LC_ALL": "C"},
    )
    _write(root, "etc/dpkg/dpkg.cfg.d/01-systest-nodoc", DPKG_EXCLUDES)
    _write(root, "etc/initramfs-tools/modules", "\n".join(INITRAMFS_MODULES) + "\n")
    conf = root / "etc/initramfs-tools/initramfs.conf"
    text = conf.read_text()
    text = re.sub(r"(?m)^MODULES=.*$", "MODULES=list", text)
    text = re.sub(r"(?m)^#?\s*COMPRESS=.*$", "COMPRESS=zstd", text)
    conf.write_text(text)
    _chroot(root, ["update-initramfs", "-c", "-k", "all"], log_file)
    _trim(root)


def _base_key(suite: str) -> str:
    return _hash(suite, json.dumps(BASE_PACKAGES), inspect.getsource(_build_base), DPKG_EXCLUDES)


def ensure_base(suite: str, cache: Optional[Path] = None, log: Log = _stderr_log) -> Path:
    """Return the cached base tarball of `suite`, building it first if needed."""
    cache = cache or cache_dir()
    key = _base_key(suite)
    target = cache / f"base-{key}.tar.zst"
    with _locked(cache, f"base-{key}"):
        if target.is_file():
            return target
        mirror = apt_mirror(suite)
        log(f"building base {suite} {key} from {mirror} (debootstrap, ~1-2 min)")
        t0 = time.monotonic()
        with tempfile.TemporaryDirectory(prefix=".tmp-base-", dir=cache) as tmp:
            root = Path(tmp) / "root"
            log_file = cache / f"base-{key}.log"
            log_file.write_bytes(b"")
            _build_base(root, suite, mirror, log_file)
            partial = Path(tmp) / "base.tar.zst"
            _run(
                [*TAR, "-cf", str(partial), "-C", str(root), "."],
                log_file,
            )
            os.replace(partial, target)
        log(f"base {key} built in {time.monotonic() - t0:.0f} s")
    return target


# ---------------------------------------------------------------- variant stage


def _agent_source() -> Path:
    return Path(__file__).with_name("agent_guest.py")


def _tools_source() -> Path:
    return Path(__file__).with_name("guest_tools.py")


def variant_key(variant: str) -> str:
    suite, flavour = split_variant(variant)
    return _hash(
        _base_key(suite),
        variant,
        json.dumps(FLAVOUR_PACKAGES[flavour]),
        Path(__file__).read_text(),
        Path(__file__).with_name("guest_files.py").read_text(),
        _agent_source().read_text(),
        _tools_source().read_text(),
        *(
            [peer.tree_digest(peer.peer_dir())]
            if flavour in (*AWS274_FLAVOURS, "aws274deb")
            else []
        ),
        *([Path(peer1x.__file__).read_text(), peer1x.digest()] if flavour == "aws173" else []),
        *(
            [Path(rhel_guest.__file__).read_text(), rhel_guest.scripts_digest()]
            if FLAVOUR_MANAGER[flavour] == "ifcfg"
            else []
        ),
        *([Path(cloud_guest.__file__).read_text()] if flavour in cloud_guest.FLAVOURS else []),
    )


def _configure(root: Path, variant: str, key: str, log_file: Path) -> None:
    flavour = split_variant(variant)[1]
    extra = FLAVOUR_PACKAGES[flavour]
    if extra:
        # Nothing may start inside the chroot; resolv.conf only lives for the install.
        _write(root, "usr/sbin/policy-rc.d", "#!/bin/sh\nexit 101\n", 0o755)
        resolv = root / "etc/resolv.conf"
        resolv.unlink(missing_ok=True)
        shutil.copyfile("/etc/resolv.conf", resolv)
        _chroot(root, ["apt-get", "update", "-q"], log_file)
        _chroot(
            root,
            ["apt-get", "install", "-y", "-q", "--no-install-recommends", *extra],
            log_file,
        )
        if flavour == "aws":
            # Debian's package file, kept for an offline reinstall after ec2net's removal
            dst = root / PEER_PACKAGES.lstrip("/")
            dst.mkdir(parents=True, exist_ok=True)
            for deb in (root / "var/cache/apt/archives").glob("amazon-ec2-net-utils_*.deb"):
                shutil.copyfile(deb, dst / deb.name)
        _chroot(root, ["apt-get", "clean"], log_file)
        (root / "usr/sbin/policy-rc.d").unlink()
        resolv.unlink()
        resolv.write_text("")

    # A fixed machine-id: no first-boot work, and stable DHCP client ids across boots.
    _write(root, "etc/machine-id", hashlib.sha256(key.encode()).hexdigest()[:32] + "\n", 0o444)
    dbus_id = root / "var/lib/dbus/machine-id"
    dbus_id.parent.mkdir(parents=True, exist_ok=True)
    dbus_id.unlink(missing_ok=True)
    dbus_id.symlink_to("/etc/machine-id")
    _write(root, "etc/hostname", "systest\n")
    _write(root, "etc/hosts", "127.0.0.1\tlocalhost\n127.0.1.1\tsystest\n::1\tlocalhost\n")
    _write(root, "etc/fstab", "/dev/vda\t/\text4\tdefaults\t0\t1\n")
    _write(root, "etc/systemd/journald.conf.d/10-systest.conf", JOURNALD_CONF)
    _write(root, "etc/modprobe.d/systest-blacklist.conf", MODPROBE_BLACKLIST)

    agent_dst = root / AGENT_GUEST_PATH.lstrip("/")
    agent_dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(_agent_source(), agent_dst)
    _write(root, "etc/udev/rules.d/90-systest-agent.rules", AGENT_UDEV_RULE)
    _write(root, "etc/systemd/system/systest-agent.service", AGENT_UNIT)
    _chroot(root, ["systemctl", "enable", "systest-agent.service"], log_file)
    shutil.copyfile(_tools_source(), root / GUEST_TOOLS_PATH.lstrip("/"))
    _write(root, "etc/systemd/system/systest-echo.service", ECHO_UNIT)
    _chroot(root, ["systemctl", "enable", "systest-echo.service"], log_file)
    _chroot(root, ["systemctl", "mask", *MASKED_UNITS], log_file)
    # Empty root password: a login on the serial console is the debugging path of last
    # resort, and the guest is reachable only from its own test namespace.
    _chroot(root, ["passwd", "-d", "root"], log_file)

    if flavour in AWS274_FLAVOURS:
        peer.make_install(peer.peer_dir(), root, log_file)
        _chroot(root, ["systemctl", "enable", "systemd-resolved.service"], log_file)
    if flavour == "aws274deb":
        deb = peer.build_deb(peer.peer_dir(), cache_dir())
        dst = root / PEER_PACKAGES.lstrip("/")
        dst.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(deb, dst / deb.name)
        # its postinst enables networkd and resolved (nothing starts in the chroot)
        _chroot(root, ["dpkg", "-i", f"{PEER_PACKAGES}/{deb.name}"], log_file)
    if flavour in ("aws", "aws274deb", *AWS274_FLAVOURS):
        for rel, old, new in AWS_DRIVER_EDITS:
            path = root / rel
            text = path.read_text()
            if old not in text:
                raise BuildError(f"{rel}: {old!r} not found; the package changed")
            path.write_text(text.replace(old, new))
    if FLAVOUR_MANAGER[flavour] == "networkd" and flavour not in cloud_guest.FLAVOURS:
        _write(root, "etc/systemd/network/10-systest-primary.network", NETWORKD_PRIMARY)
        _chroot(root, ["systemctl", "enable", "systemd-networkd.service"], log_file)
    elif flavour in cloud_guest.FLAVOURS:
        cloud_guest.configure(root, flavour, lambda argv: _chroot(root, argv, log_file))
    elif flavour == "ifcfg":
        rhel_guest.install(root)
        _chroot(root, ["systemctl", "enable", rhel_guest.UNIT], log_file)
        _chroot(root, ["systemctl", "disable", "systemd-networkd.service"], log_file)
    elif flavour == "aws173":
        rhel_guest.install(root, primary_ifname(variant), rhel_guest.NETWORK_1X)
        rpm = peer1x.stage(root, peer1x.build_rpm(cache_dir()))
        _chroot(root, [*peer1x.RPM_INSTALL, "-i", rpm], log_file)
        for argv in peer1x.divert_dhclient():
            _chroot(root, argv, log_file)
        _chroot(root, ["systemctl", "enable", rhel_guest.UNIT, *peer1x.ENABLED_UNITS], log_file)
        # On Amazon Linux 2 something always pulls network-online.target in at boot, so
        # ec2net-ifup@eth0 (After= it) finds the primary's dhclient running and skips.
        _chroot(
            root,
            ["systemctl", "add-wants", "multi-user.target", "network-online.target"],
            log_file,
        )
        _chroot(root, ["systemctl", "disable", "systemd-networkd.service"], log_file)
    elif flavour == "nm":
        _write(root, "etc/NetworkManager/system-connections/primary.nmconnection", NM_PRIMARY)
        os.chmod(root / "etc/NetworkManager/system-connections/primary.nmconnection", 0o600)
        _write(root, "etc/NetworkManager/conf.d/90-systest.conf", NM_CONF)
        _chroot(root, ["systemctl", "enable", "NetworkManager.service"], log_file)
        _chroot(root, ["systemctl", "disable", "systemd-networkd.service"], log_file)
    _trim(root)


def _dir_size_mib(root: Path) -> int:
    out = subprocess.run(
        ["du", "-s", "-x", "--block-size=1M", str(root)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return int(out.split()[0])


def _build_variant(tmp: Path, variant: str, key: str, base: Path, log_file: Path) -> Image:
    suite, flavour = split_variant(variant)
    root = tmp / "root"
    root.mkdir()
    _run(
        [*TAR, "-xf", str(base), "-C", str(root)],
        log_file,
    )
    _configure(root, variant, key, log_file)

    kernels = sorted((root / "boot").glob("vmlinuz-*"))
    if len(kernels) != 1:
        raise BuildError(f"expected one kernel in /boot, found {kernels}")
    kver = kernels[0].name[len("vmlinuz-") :]
    shutil.copyfile(kernels[0], tmp / "vmlinuz")
    shutil.copyfile(root / "boot" / f"initrd.img-{kver}", tmp / "initrd.img")

    packages = subprocess.run(
        ["chroot", str(root), "dpkg-query", "-W", "-f=${Package} ${Version}\n"],
        check=True,
        capture_output=True,
        text=True,
        env=_chroot_env(),
    ).stdout

    used = _dir_size_mib(root)
    # Headroom so tests can install packages and write logs in the guest.
    size_mib = used + used // 4 + 768
    rootfs = tmp / "rootfs.img"
    with rootfs.open("wb") as fh:
        fh.truncate(size_mib * 1024 * 1024)
    _run(
        ["mkfs.ext4", "-q", "-F", "-m", "0", "-L", "systest-root", "-d", str(root), str(rootfs)],
        log_file,
    )
    shutil.rmtree(root)
    (tmp / "packages.txt").write_text(packages)
    manifest = {
        "variant": variant,
        "key": key,
        "suite": suite,
        "kernel_version": kver,
        "packages": list(BASE_PACKAGES) + list(FLAVOUR_PACKAGES[flavour]),
        "rootfs_used_mib": used,
        "rootfs_size_mib": size_mib,
    }
    (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return _load(tmp, variant, key)


def _load(directory: Path, variant: str, key: str) -> Image:
    manifest = json.loads((directory / "manifest.json").read_text())
    return Image(
        variant=variant,
        key=key,
        directory=directory,
        kernel=directory / "vmlinuz",
        initrd=directory / "initrd.img",
        rootfs=directory / "rootfs.img",
        kernel_version=str(manifest["kernel_version"]),
    )


def ensure_image(variant: str, cache: Optional[Path] = None, log: Log = _stderr_log) -> Image:
    """Return the cached image for ``variant`` (one of VARIANTS), building if needed."""
    cache = cache or cache_dir()
    key = variant_key(variant)
    final = cache / f"{variant}-{key}"
    with _locked(cache, f"{variant}-{key}"):
        if (final / "manifest.json").is_file():
            return _load(final, variant, key)
        base = ensure_base(split_variant(variant)[0], cache, log)
        log(f"building image {variant}-{key}")
        t0 = time.monotonic()
        tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{variant}-", dir=cache))
        try:
            log_file = tmp / "build.log"
            _build_variant(tmp, variant, key, base, log_file)
            elapsed = time.monotonic() - t0
            manifest = json.loads((tmp / "manifest.json").read_text())
            manifest["build_seconds"] = round(elapsed, 1)
            (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
            os.chmod(tmp, 0o755)  # noqa: S103 - mkdtemp made it 0700; images are not secret
            os.rename(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        log(f"image {variant}-{key} built in {elapsed:.0f} s")
    return _load(final, variant, key)


def prune(cache: Optional[Path] = None, log: Log = _stderr_log) -> None:
    """Remove cached bases and images that the current recipe would not produce.

    Explicit only (``--prune``): another checkout sharing the cache may still use them.
    """
    cache = cache or cache_dir()
    keep = {f"base-{_base_key(s)}.{ext}" for s in SUITES for ext in ("tar.zst", "log")}
    for v in VARIANTS:
        try:
            keep.add(f"{v}-{variant_key(v)}")
        except peer.PeerMissing:
            # without the release tree its images' keys are unknown: keep them all
            keep |= {e.name for e in cache.glob(f"{v}-*")}
    keep |= {f".lock-{name.split('.')[0]}" for name in keep}
    for entry in sorted(cache.iterdir()) if cache.is_dir() else []:
        if entry.name in keep or entry.name.startswith(("accel-", ".tmp-")):
            continue
        log(f"removing {entry}")
        if entry.is_dir():
            shutil.rmtree(entry)
        else:
            entry.unlink()


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description="Build the system-test guest images.")
    parser.add_argument("variants", nargs="*", default=[*EC2NET_VARIANTS, *CLOUD_INIT_VARIANTS])
    parser.add_argument("--prune", action="store_true", help="drop stale cache entries")
    args = parser.parse_args(argv)
    if args.prune:
        prune()
    for variant in args.variants:
        image = ensure_image(variant)
        print(f"{variant}: {image.directory}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
