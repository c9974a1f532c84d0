"""The backends by name: what configuration, its validation and its documentation need
to know of them, with no import of the registry (`ec2net.backends`), which loads the
renderers and reads the configuration itself. A leaf module: it imports nothing of
ec2net, so config.py can read it without an import cycle.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class BackendName:
    name: str  # backend.name, `render --backend`
    title: str  # what it drives, for the docs and messages
    # The manager applies files on its own time (backend.settle_timeout applies).
    settles: bool = False


NM = BackendName("nm", "NetworkManager", settles=True)
NETWORKD = BackendName("networkd", "systemd-networkd", settles=True)
IFCFG = BackendName("ifcfg", "RHEL network-scripts")
NETLINK = BackendName("netlink", "the kernel, over rtnetlink")

# In the order the documentation lists them (the registry's order).
ALL: tuple[BackendName, ...] = (NM, NETWORKD, IFCFG, NETLINK)
