"""Install ec2net into a running guest the way a user would, from the current tree.

`package_for(tree)` builds what to install from the current tree: the .deb (`make deb`,
into a temporary directory) by default, or a wheel with EC2NET_SYSTEST_PACKAGE=wheel.
Neither writes into the checkout. `install_ec2net` is the one place that puts it into
the guest.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from systest.agent import Agent

# What the wheel is built from.
TREE_INPUTS = ("pyproject.toml", "README.md", "src")

DRIVERS = ("ena", "ixgbevf", "vif", "virtio_net")
GUEST_DIR = "/root/systest-install"  # the guest's, not the host's

# Unpack a wheel into the system's site directory and write its console scripts, which
# is all pip does for a pure-Python wheel (the image has no pip, on purpose).
_UNPACK = r"""
import configparser, os, shutil, site, sys, zipfile
wheel, = sys.argv[1:]
target = site.getsitepackages()[0]
with zipfile.ZipFile(wheel) as zf:
    tops = {n.split("/")[0] for n in zf.namelist()}
    for top in tops:
        shutil.rmtree(os.path.join(target, top), ignore_errors=True)
    zf.extractall(target)
    info = next(t for t in tops if t.endswith(".dist-info"))
eps = configparser.ConfigParser()
eps.read(os.path.join(target, info, "entry_points.txt"))
for name, ref in eps.items("console_scripts"):
    module, func = ref.split(":")
    path = os.path.join("/usr/local/bin", name)
    with open(path, "w") as fh:
        fh.write(f"#!/usr/bin/python3\nimport sys\nfrom {module} import {func}\n"
                 f"sys.exit({func}())\n")
    os.chmod(path, 0o755)
print(target)
"""


@dataclass(frozen=True)
class Package:
    kind: str  # "wheel" or "deb"
    path: Path


def config_toml(
    refresh_interval: float,
    backend: str = "auto",
    mtu_overrides: Optional[Mapping[str, int]] = None,
) -> str:
    drivers = ", ".join(f'"{d}"' for d in DRIVERS)
    overrides = ", ".join(f'"{k}" = {v}' for k, v in (mtu_overrides or {}).items())
    # backend normally stays at its default (auto): the guest's network manager decides;
    # interfaces.mtu too ("auto": the primary's, which DHCP set).
    return (
        "# written by the system tests\n"
        f"[interfaces]\ndrivers = [{drivers}]\nmtu_overrides = {{ {overrides} }}\n\n"
        f"[refresh]\ninterval = {refresh_interval:g}\n\n"
        f'[backend]\nname = "{backend}"\n'
    )


def switch_backend(
    agent: Agent,
    package: Package,
    backend: str,
    refresh_interval: float = 5.0,
    mtu_overrides: Optional[Mapping[str, int]] = None,
) -> None:
    """Set backend.name, re-render the udev rule (its ID_NET_MANAGED_BY line depends on
    it) and restart the daemon, as an operator changing the setting would."""
    agent.write_file(
        "/etc/ec2net/ec2net.toml", config_toml(refresh_interval, backend, mtu_overrides)
    )
    argv = ["--udev-override"] if package.kind == "deb" else []
    agent.run(["ec2net", "install-system-files", *argv], timeout=300, check=True)
    agent.run(["udevadm", "control", "--reload"], timeout=120, check=True)
    agent.run(["systemctl", "restart", "ec2net-watch.service"], timeout=300, check=True)


def build_deb(tree: Path, out_dir: Path) -> Path:
    """The .deb of the tree, as `make deb` builds it (from a copy, into `out_dir`)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(
        ["make", "-C", str(tree), "deb", f"DIST={out_dir}"],
        check=False,
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"make deb failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    debs = list(out_dir.glob("ec2-net-utils_*_all.deb"))
    if len(debs) != 1:
        raise RuntimeError(f"expected one .deb in {out_dir}, found {debs}")
    return debs[0]


# Debian's Python path, for ec2net's RPM in a Debian guest (rpm's own default is
# site-packages, which Debian's python3 does not read).
GUEST_SITELIB = "/usr/lib/python3/dist-packages"


def build_rpm(tree: Path, out_dir: Path) -> Path:
    """The RPM of the tree, as `make rpm` builds it, for a Debian guest's Python."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for old in out_dir.glob("ec2-net-utils-*.rpm"):
        old.unlink()
    proc = subprocess.run(
        [
            "make",
            "-C",
            str(tree),
            "rpm",
            f"DIST={out_dir}",
            f"RPM_DEFINES=--define 'python3_sitelib {GUEST_SITELIB}'",
        ],
        check=False,
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"make rpm failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    rpms = [p for p in out_dir.glob("ec2-net-utils-*.noarch.rpm") if ".el6" not in p.name]
    if len(rpms) != 1:
        raise RuntimeError(f"expected one .rpm in {out_dir}, found {rpms}")
    return rpms[0]


def build_wheel(tree: Path, out_dir: Path) -> Path:
    """A wheel of the tree, built from a copy so the checkout gets no build/ or egg-info."""
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="e2q-wheel-") as tmp:
        src = Path(tmp) / "tree"
        src.mkdir()
        for name in TREE_INPUTS:
            path = tree / name
            if path.is_dir():
                shutil.copytree(path, src / name, ignore=shutil.ignore_patterns("__pycache__"))
            else:
                shutil.copyfile(path, src / name)
        for old in out_dir.glob("*.whl"):
            old.unlink()
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "wheel",
                "-q",
                "--no-deps",
                "-w",
                str(out_dir),
                str(src),
            ],
            check=False,
            capture_output=True,
            text=True,
        )
        if proc.returncode != 0:
            raise RuntimeError(f"pip wheel failed:\n{proc.stdout}\n{proc.stderr}")
    wheels = list(out_dir.glob("*.whl"))
    if len(wheels) != 1:
        raise RuntimeError(f"expected one wheel in {out_dir}, found {wheels}")
    return wheels[0]


def package_for(tree: Path, out_dir: Path) -> Package:
    """The .deb built from the tree (what an operator installs); a wheel with
    EC2NET_SYSTEST_PACKAGE=wheel (the pip path: wheel plus install-system-files)."""
    want = os.environ.get("EC2NET_SYSTEST_PACKAGE", "deb").strip().lower() or "deb"
    if want == "wheel":
        return Package("wheel", build_wheel(tree, out_dir))
    if want != "deb":
        raise ValueError(f"EC2NET_SYSTEST_PACKAGE must be wheel or deb, not {want!r}")
    return Package("deb", build_deb(tree, out_dir))


def install_ec2net(
    agent: Agent,
    package: Package,
    refresh_interval: float = 5.0,
    mtu_overrides: Optional[Mapping[str, int]] = None,
    backend: str = "auto",
) -> None:
    """Install `package` in the guest and enable ec2net's boot and watch units.

    The units are enabled, not started: the caller reboots (or hot-plugs) next, as an
    image builder or an operator would.
    """
    guest_pkg = f"{GUEST_DIR}/{package.path.name}"
    agent.write_file(guest_pkg, package.path.read_bytes())
    if package.kind == "deb":
        agent.run(["dpkg", "-i", guest_pkg], timeout=300, check=True)
    else:
        agent.run(["python3", "-c", _UNPACK, guest_pkg], timeout=300, check=True)
    agent.write_file(
        "/etc/ec2net/ec2net.toml",
        config_toml(refresh_interval, backend=backend, mtu_overrides=mtu_overrides),
    )
    # Rendered after the config: the udev rule's driver match comes from it (virtio_net).
    # The package ships units and rule; an operator then overrides only the rule in /etc.
    if package.kind == "deb":
        argv, rule_path = ["--udev-override"], "/etc/udev/rules.d/81-ec2net.rules"
    else:
        argv, rule_path = [], "/usr/lib/udev/rules.d/81-ec2net.rules"
    agent.run(["ec2net", "install-system-files", *argv], timeout=300, check=True)
    rule = agent.read_file(rule_path).decode()
    if "virtio_net" not in rule:
        raise RuntimeError(f"the rendered udev rule does not match virtio_net:\n{rule}")
    agent.run(["systemctl", "daemon-reload"], timeout=300, check=True)
    agent.run(
        ["systemctl", "enable", "ec2net-scan.service", "ec2net-watch.service"],
        timeout=300,
        check=True,
    )
    agent.run(["udevadm", "control", "--reload"], timeout=120, check=True)
    # The package's postinst started the daemon with the packaged configuration; as an
    # operator after an edit: the daemon reads the new one (virtio_net among the
    # drivers), else it would skip every ENI of this guest while the per-ENI unit,
    # whose condition defers to the running daemon, starts nothing.
    agent.run(["systemctl", "try-restart", "ec2net-watch.service"], timeout=300, check=True)
