"""udev rules, systemd units and upstart jobs, rendered from templates in ec2net/data.

Renderers return {path: content}; `install` writes them atomically under a root. The
packages (RPM, .deb) install through the same code (`ec2net install-system-files
--root BUILDROOT --bindir /usr/bin`), so a pip install and a package ship one text.

Which init's files: systemd gets the udev rule (it only asks systemd to start
`ec2net@IFACE.service`) and the units; upstart gets the boot-scan task and the watch
daemon as jobs in /etc/init (the udev rule would be inert there: the daemon follows
link events itself).
"""

from __future__ import annotations

import shutil
import sys
from importlib import resources
from pathlib import Path
from typing import Optional

from ec2net import cloudinit

UNIT_DIR = "usr/lib/systemd/system"
UDEV_DIR = "usr/lib/udev/rules.d"
UPSTART_DIR = "etc/init"
UNITS = ("ec2net@.service", "ec2net-scan.service", "ec2net-watch.service")
RULES = "81-ec2net.rules"
# Keeps other software's routes and rules when networkd reconfigures links
# (docs/backends.md); inert where networkd does not run.
NETWORKD_CONF = "usr/lib/systemd/networkd.conf.d/80-ec2net.conf"
# Keeps cloud-init's EC2 datasource from configuring the secondary ENIs (cloudinit.py);
# inert where cloud-init is not installed. cloud-init reads /etc only.
CLOUD_INIT_DROPIN = str(cloudinit.DROPIN.relative_to("/"))
UPSTART_JOBS = ("ec2net-scan.conf", "ec2net-watch.conf")
# backend.ifcfg_dhcp: the extra rights dhclient needs, for every unit that may run ifup,
# in /etc (a configuration choice, not part of the package).
DHCP_DROPIN = "ifcfg-dhcp.conf"
DROPIN_DIR = "etc/systemd/system"

SYSTEMD = "systemd"
UPSTART = "upstart"
AUTO = "auto"
INIT_CHOICES = (AUTO, SYSTEMD, UPSTART)


def _write(path: Path, content: str) -> bool:
    # Imported on use: ec2net.state pulls in the IMDS client (http, ssl), and the CLI
    # reads this module's constants for every `--help`.
    from ec2net.state import write_if_changed  # noqa: PLC0415

    return write_if_changed(path, content)


# The rule's ID_NET_MANAGED_BY line, active only for the netlink backend (see the rule).
MANAGED_BY_PREFIX = "#netlink: "


def _template(name: str) -> str:
    return resources.files("ec2net").joinpath("data").joinpath(name).read_text()


def default_bindir() -> str:
    """Where the `ec2net` command lives for this installation."""
    found = shutil.which("ec2net")
    return str(Path(found).parent) if found else str(Path(sys.executable).parent)


def detect_init(root: Path = Path("/")) -> str:
    """The init system of the host whose / is `root`, from paths under it alone.

    systemd when `run/systemd/system` is a directory (systemd's own sd_booted() test:
    it exists only while systemd is PID 1); upstart when that is absent and both
    `sbin/initctl` and `etc/init` exist (RHEL 6, Amazon Linux 1, Ubuntu before 15.04);
    otherwise systemd: a chroot or image being built, or a container, where unit files
    are inert until booted and every current distribution boots systemd.
    """
    if (root / "run/systemd/system").is_dir():
        return SYSTEMD
    if (root / "sbin/initctl").exists() and (root / UPSTART_DIR).is_dir():
        return UPSTART
    return SYSTEMD


def udev_rule(drivers: tuple[str, ...], managed_by: bool = False) -> str:
    """The rule for `drivers`; `managed_by` (backend.name netlink) marks the ENIs
    ID_NET_MANAGED_BY=ec2net so that networkd and NetworkManager skip them."""
    text = _template(RULES).replace("@DRIVERS@", "|".join(drivers))
    if managed_by:
        text = text.replace("\n" + MANAGED_BY_PREFIX, "\n")
    return text


def dhcp_dropins() -> list[str]:
    return [f"{DROPIN_DIR}/{unit}.d/50-ec2net-{DHCP_DROPIN}" for unit in UNITS]


def render(
    drivers: tuple[str, ...],
    bindir: Optional[str] = None,
    init: str = SYSTEMD,
    ifcfg_dhcp: bool = False,
    managed_by: bool = False,
) -> dict[str, str]:
    """The files for `init` ("systemd" or "upstart"), as {relative path: content}."""
    bindir = bindir or default_bindir()
    if init == UPSTART:
        return {
            f"{UPSTART_DIR}/{job}": _template(job).replace("@BINDIR@", bindir)
            for job in UPSTART_JOBS
        }
    if init != SYSTEMD:
        raise ValueError(f"unknown init system {init!r}")
    hardening = _template("hardening.conf").rstrip("\n")
    out = {
        f"{UNIT_DIR}/{unit}": _template(unit)
        .replace("@BINDIR@", bindir)
        .replace("@HARDENING@", hardening)
        for unit in UNITS
    }
    out[f"{UDEV_DIR}/{RULES}"] = udev_rule(drivers, managed_by)
    out[NETWORKD_CONF] = _template("networkd.conf")
    out[CLOUD_INIT_DROPIN] = cloudinit.DROPIN_TEXT
    if ifcfg_dhcp:
        out.update(dict.fromkeys(dhcp_dropins(), _template(DHCP_DROPIN)))
    return out


def install_udev_override(root: Path, drivers: tuple[str, ...], managed_by: bool = False) -> bool:
    """The udev rule for `drivers` in /etc/udev/rules.d, where a file of the same name
    overrides the packaged one (packages own /usr/lib; a config change must not
    rewrite it). Returns whether it wrote."""
    content = udev_rule(drivers, managed_by)
    return _write(root / "etc/udev/rules.d" / RULES, content)


def install(
    root: Path,
    drivers: tuple[str, ...],
    bindir: Optional[str] = None,
    init: str = SYSTEMD,
    ifcfg_dhcp: bool = False,
    *,
    managed_by: bool = False,
) -> list[Path]:
    """Write the files for `init` under `root` ("auto": `detect_init(root)`); returns
    the paths that changed (a DHCP drop-in no longer configured is removed)."""
    if init == AUTO:
        init = detect_init(root)
    written = []
    files = render(drivers, bindir, init, ifcfg_dhcp, managed_by)
    for rel, content in files.items():
        path = root / rel
        if _write(path, content):
            written.append(path)
    for rel in dhcp_dropins():
        path = root / rel
        if rel not in files and path.exists():
            path.unlink()
            written.append(path)
    return written
