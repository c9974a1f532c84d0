"""Guests that boot like the AMIs people use: Debian's cloud-init, its EC2 datasource
chosen from the DMI identity QEMU gives the guest (`smbios_args`), reading the
simulated IMDS, rendering the primary's network configuration.

- `netplan` (Debian 13, as Ubuntu's and Debian 13's images): cloud-init -> netplan ->
  systemd-networkd. cloud-init >= 24.1 does policy routing of its own there, and its
  hot-plug handling is on by default for EC2.
- `ifupdown` (Debian 12, as Debian 12's images): cloud-init -> /etc/network/interfaces.d
  -> ifupdown and dhclient; no network manager daemon.

Nothing else of an AMI's configuration is copied: the packages are Debian's, and the
only edit is the driver match of cloud-init's hot-plug udev rule (the guest's NICs are
virtio_net, EC2's ena), as for the AWS tool's rule (guest_files.AWS_DRIVER_EDITS).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Callable

FLAVOURS = ("netplan", "ifupdown", "netplan274")
VARIANTS = ("trixie-netplan", "bookworm-ifupdown")
# The netplan guest with AWS's release 2.7.4 beside cloud-init (benchmark only).
AWS274_VARIANT = "trixie-netplan274"

NETPLAN_PACKAGES: tuple[str, ...] = ("cloud-init", "netplan.io", "isc-dhcp-client")
IFUPDOWN_PACKAGES: tuple[str, ...] = ("cloud-init", "ifupdown", "isc-dhcp-client")

# cloud-init's EC2 datasource limits its hot-plug hook to EC2's drivers.
DATASOURCE = "usr/lib/python3/dist-packages/cloudinit/sources/DataSourceEc2.py"
HOTPLUG_DRIVERS = ('=="vif|ena|ixgbevf"', '=="vif|ena|ixgbevf|virtio_net"')

# What Debian 12's cloud image has: ifupdown reads what cloud-init renders.
INTERFACES = """\
# ifupdown: cloud-init writes the configuration into interfaces.d
source /etc/network/interfaces.d/*

auto lo
iface lo inet loopback
"""

# The test image's own settings for cloud-init (an AMI has its own; these only keep a
# minimal image from failing modules that need what it leaves out: no sudo, no
# resize2fs, no ssh-keygen, no locales: 22.4's locale module fails without them).
# No datasource_list: ds-identify chooses Ec2 from DMI as on EC2 (Debian's list names
# every datasource).
CLOUD_CFG = """\
users: []
locale: false
resize_rootfs: false
ssh_genkeytypes: []
"""

Chroot = Callable[[Sequence[str]], None]


def configure(root: Path, flavour: str, chroot: Chroot) -> None:
    (root / "etc/cloud/cloud.cfg.d").mkdir(parents=True, exist_ok=True)
    (root / "etc/cloud/cloud.cfg.d/10-systest.cfg").write_text(CLOUD_CFG)
    if flavour.startswith("netplan"):
        src = root / DATASOURCE
        text = src.read_text()
        old, new = HOTPLUG_DRIVERS
        if old not in text:
            raise RuntimeError(f"{DATASOURCE}: {old!r} not found; cloud-init changed")
        src.write_text(text.replace(old, new))
        chroot(["systemctl", "enable", "systemd-networkd.service"])
    else:
        (root / "etc/network").mkdir(parents=True, exist_ok=True)
        (root / "etc/network/interfaces").write_text(INTERFACES)
        (root / "etc/network/interfaces.d").mkdir(exist_ok=True)
        chroot(["systemctl", "disable", "systemd-networkd.service"])


def is_cloud_init(variant: str) -> bool:
    return variant in (*VARIANTS, AWS274_VARIANT)


def system_uuid(instance_id: str) -> str:
    """An EC2-style SMBIOS system UUID (it starts with `ec2`), stable per instance."""
    raw = uuid.uuid5(uuid.NAMESPACE_URL, f"ec2sim:{instance_id}").hex
    return str(uuid.UUID("ec2" + raw[3:]))


def smbios_args(instance_id: str, instance_type: str) -> list[str]:
    """QEMU arguments for the DMI identity of an EC2 Nitro instance: what ds-identify
    and cloud-init's EC2 datasource read (sys_vendor, product_uuid)."""
    ident = system_uuid(instance_id)
    return [
        "-smbios",
        f"type=1,manufacturer=Amazon EC2,product={instance_type},serial={ident},uuid={ident}",
        "-smbios",
        "type=3,manufacturer=Amazon EC2,asset=Amazon EC2",
    ]
