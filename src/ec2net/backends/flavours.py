"""The three file backends: renderer, directories and activator of each."""

from __future__ import annotations

from ec2net.backends.activators import (
    Activator,
    IfcfgActivator,
    NetworkdActivator,
    NmActivator,
)
from ec2net.backends.files import FileBackend, Flavour
from ec2net.backends.netlink import NetlinkBackend
from ec2net.config import Settings
from ec2net.render import ifcfg, networkd, nm

IFCFG_DIR = "/etc/sysconfig/network-scripts"

FLAVOURS = {
    # The primary's own ifcfg file is the user's: `blocked` keeps us off it.
    "ifcfg": Flavour(
        "ifcfg",
        ifcfg.render,
        (IFCFG_DIR,),
        user_file=IFCFG_DIR + "/ifcfg-{ifname}",
        primary_ok=True,
    ),
    "networkd": Flavour("networkd", networkd.render, ("/run/systemd/network",)),
    # NetworkManager ignores keyfiles readable by others.
    "nm": Flavour("nm", nm.render, ("/run/NetworkManager/system-connections",), mode=0o600),
}


def open_file_backend(name: str, settings: Settings) -> FileBackend:
    activator: Activator
    if name == "ifcfg":
        activator = IfcfgActivator(settings.ifcfg_dhcp)
    elif name == "networkd":
        activator = NetworkdActivator()
    else:
        activator = NmActivator()
    return FileBackend(
        FLAVOURS[name],
        activator,
        NetlinkBackend(managed=name != "ifcfg"),
        root=settings.files_root,
        dhcp=settings.ifcfg_dhcp,
        settle_timeout=0.0 if name == "ifcfg" else settings.settle_timeout,
    )
