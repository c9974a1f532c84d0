"""Whether udev is still working on a new network link.

udevd names a new NIC (eth0 -> ens6) while it processes the kernel's `add` event, and
writes the link's database entry (`/run/udev/data/n<ifindex>`) once the rename is done,
before any RUN program starts; networkd and NetworkManager wait for that entry before
they touch a link. The daemon reads IMDS for a new link's MAC meanwhile (the MAC does
not change) and takes the link's name only when udev is done with it.

Where no udevd runs (a container, the simulated VPC), or the link is not the one this
/sys shows (another network namespace's), there is nothing to wait for.
"""

from __future__ import annotations

import time
from pathlib import Path

from ec2net import cancel

RUN_DIR = Path("/run/udev")
SYS_NET = Path("/sys/class/net")
POLL = 0.01


class Udev:
    def __init__(self, run_dir: Path = RUN_DIR, sys_net: Path = SYS_NET) -> None:
        self.run_dir = run_dir
        self.sys_net = sys_net

    def processing(self, index: int, name: str) -> bool:
        """udev runs here and has not finished with link `index` (now called `name`)."""
        if not (self.run_dir / "control").exists() or self._done(index):
            return False
        try:
            return int((self.sys_net / name / "ifindex").read_text()) == index
        except (OSError, ValueError):
            return False  # renamed meanwhile (then udev is done), or not this namespace's

    def wait(self, index: int, timeout: float) -> bool:
        """Until udev is done with the link (True) or `timeout` seconds (False)."""
        deadline = time.monotonic() + timeout
        while not self._done(index):
            if time.monotonic() >= deadline:
                return False
            cancel.pause(POLL)
        return True

    def _done(self, index: int) -> bool:
        return (self.run_dir / "data" / f"n{index}").exists()
