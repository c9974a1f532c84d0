"""RHEL 7's network-scripts installed into a Debian guest's root, where RHEL has them.

The scripts are an external tool, never part of this repository: the same tree the
ifcfg world tests run (``ec2sim.rhel.locate_scripts``: ``EC2NET_RHEL_SCRIPTS``, default
``../shared/peers/initscripts-9.49.54`` beside the checkout). A RHEL 7 system has, and a
Debian one lacks: the scripts in /etc/sysconfig/network-scripts, /etc/sysconfig/network
saying NETWORKING=yes, /etc/init.d/functions (RHEL's /etc/init.d is rc.d/init.d),
/sbin/ifup and /sbin/ifdown, `ipcalc` being ipcalc-ng, `arping` in /sbin, /bin/sh being
bash, and /run/netreport. RHEL's `network` service brings the primary up from its ifcfg
file at boot; here a small unit does the same for the primary alone (ec2net brings up
the ENIs it renders, at boot and on hot-plug).
"""

from __future__ import annotations

import shutil
from pathlib import Path

from ec2sim.rhel import FUNCTIONS, SCRIPTS_SUBDIR, locate_scripts
from systest import peer
from systest.guest_files import PRIMARY_IFNAME

# What the scripts call, by Debian package (bash, iproute2 and procps are in the base).
PACKAGES = ("ipcalc-ng", "iputils-arping", "ethtool", "isc-dhcp-client")
UNIT = "systest-network.service"

# The primary as a RHEL 7 AMI's ifcfg-eth0 has it: DHCP for both families, from boot.
# DHCP_SEND_HOSTNAME=no: the scripts would pass `-H NAME`, which Debian's dhclient lacks.
PRIMARY_IFCFG = """\
DEVICE={primary}
TYPE=Ethernet
ONBOOT=yes
BOOTPROTO=dhcp
PERSISTENT_DHCLIENT=yes
DHCP_SEND_HOSTNAME=no
IPV6INIT=yes
DHCPV6C=yes
NM_CONTROLLED=no
"""

NETWORK_UNIT = """\
[Unit]
Description=The primary NIC from its ifcfg file (what RHEL 7's network service does)
Wants=network.target
Before=network.target network-online.target
After=network-pre.target
BindsTo=sys-subsystem-net-devices-{primary}.device
After=sys-subsystem-net-devices-{primary}.device

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/usr/sbin/ifup {primary}
ExecStop=/usr/sbin/ifdown {primary}
TimeoutStartSec=120

[Install]
WantedBy=multi-user.target network-online.target
"""

# /etc/sysconfig/network of the guest with AWS's 1.7.3 (peer1x.py): its ifcfg files for
# the ENIs have no DHCP_SEND_HOSTNAME, and the scripts would pass `-H NAME`, which
# Debian's dhclient lacks; RHEL reads this file's value as every interface's default.
NETWORK_1X = "NETWORKING=yes\nDHCP_SEND_HOSTNAME=no\n"

TMPFILES = "d /run/netreport 0755 root root -\n"


def scripts_digest() -> str:
    """Content hash of the scripts tree: part of the image's cache key."""
    return peer.tree_digest(locate_scripts())


def _symlink(path: Path, target: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.is_symlink() or path.exists():
        path.unlink()
    path.symlink_to(target)


def install(root: Path, primary: str = PRIMARY_IFNAME, network: str = "NETWORKING=yes\n") -> None:
    """Put the scripts and what they expect into the guest tree at `root` (a merged-/usr
    Debian: /sbin is /usr/sbin, /bin is /usr/bin); `primary` is the primary NIC's name,
    `network` the content of /etc/sysconfig/network."""
    src = locate_scripts()
    dst = root / "etc" / SCRIPTS_SUBDIR
    shutil.copytree(src / SCRIPTS_SUBDIR, dst, symlinks=True, dirs_exist_ok=True)
    (root / "etc/rc.d/init.d").mkdir(parents=True, exist_ok=True)
    shutil.copy2(src / FUNCTIONS, root / "etc" / FUNCTIONS)
    # RHEL's modes, not the (read-only) source tree's: ec2net's units run as root
    # without CAP_DAC_OVERRIDE, so the directory must be writable by its owner.
    for path in (dst, *dst.iterdir(), root / "etc" / FUNCTIONS):
        if not path.is_symlink():
            path.chmod(0o755 if path.is_dir() or path.stat().st_mode & 0o111 else 0o644)
    _symlink(root / "etc/init.d/functions", "../rc.d/init.d/functions")
    (root / "etc/sysconfig/network").write_text(network)
    (dst / f"ifcfg-{primary}").write_text(PRIMARY_IFCFG.format(primary=primary))
    for verb in ("ifup", "ifdown"):
        _symlink(root / "usr/sbin" / verb, f"/etc/{SCRIPTS_SUBDIR}/{verb}")
    _symlink(root / "usr/sbin/arping", "/usr/bin/arping")
    _symlink(root / "usr/bin/ipcalc", "ipcalc-ng")
    _symlink(root / "usr/bin/sh", "bash")
    (root / "var/lib/dhclient").mkdir(parents=True, exist_ok=True)
    (root / "etc/tmpfiles.d").mkdir(parents=True, exist_ok=True)
    (root / "etc/tmpfiles.d/systest-netreport.conf").write_text(TMPFILES)
    (root / "etc/systemd/system" / UNIT).write_text(NETWORK_UNIT.format(primary=primary))
