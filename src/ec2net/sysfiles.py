"""udev rules and systemd units, rendered from templates shipped in ec2net/data.

Renderers return {path: content}; `install` writes them atomically under a root.
"""

from __future__ import annotations

import shutil
import sys
from importlib import resources
from pathlib import Path
from typing import Optional

from ec2net.state import write_if_changed

UNIT_DIR = "usr/lib/systemd/system"
UDEV_DIR = "usr/lib/udev/rules.d"
UNITS = ("ec2net@.service", "ec2net-scan.service", "ec2net-watch.service")
RULES = "81-ec2net.rules"


def _template(name: str) -> str:
    return resources.files("ec2net").joinpath("data").joinpath(name).read_text()


def default_bindir() -> str:
    """Where the `ec2net` command lives for this installation."""
    found = shutil.which("ec2net")
    return str(Path(found).parent) if found else str(Path(sys.executable).parent)


def render(drivers: tuple[str, ...], bindir: Optional[str] = None) -> dict[str, str]:
    bindir = bindir or default_bindir()
    hardening = _template("hardening.conf").rstrip("\n")
    out = {
        f"{UNIT_DIR}/{unit}": _template(unit)
        .replace("@BINDIR@", bindir)
        .replace("@HARDENING@", hardening)
        for unit in UNITS
    }
    out[f"{UDEV_DIR}/{RULES}"] = _template(RULES).replace("@DRIVERS@", "|".join(drivers))
    return out


def install(root: Path, drivers: tuple[str, ...], bindir: Optional[str] = None) -> list[Path]:
    written = []
    for rel, content in render(drivers, bindir).items():
        path = root / rel
        if write_if_changed(path, content):
            written.append(path)
    return written
