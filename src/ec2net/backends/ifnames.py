"""Which interface names each network manager can take (pure).

Linux accepts almost any 1-15 byte name: dots, dashes, `;`, `$`, `(`, quotes. The
netlink backend passes names as netlink attributes and takes them all. A file backend
puts the name where the manager's own syntax applies, so each declares a check here;
a name it cannot take is refused (errors.UnsupportedInterfaceName, exit 2) before
anything is rendered, never written half-escaped.
"""

from __future__ import annotations

import re
from typing import Callable, Optional

NameCheck = Callable[[str], Optional[str]]  # a reason the name cannot be taken, or None

IFNAMSIZ = 16  # including the terminating NUL

# network-scripts sources ifcfg-IF as shell and expands $DEVICE unquoted throughout
# (`ip link set dev ${DEVICE} up`), so only characters that are inert in an unquoted
# shell word are safe. A leading dash would read as an option to ifup/ip.
_SHELL_WORD = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")
# initscripts skips configuration files with these endings (backups, rpm leftovers).
_IGNORED_SUFFIXES = (".bak", ".old", ".orig", ".rpmnew", ".rpmorig", ".rpmsave")


def kernel(name: str) -> Optional[str]:
    """What the kernel itself refuses (dev_valid_name): every backend refuses it too."""
    if not name or name in (".", ".."):
        return "is not a valid interface name"
    if len(name.encode()) >= IFNAMSIZ:
        return f"is longer than {IFNAMSIZ - 1} bytes"
    if any(c in "/:" or c.isspace() for c in name):
        return "contains '/', ':' or white space, which Linux does not allow"
    return None


def network_scripts(name: str) -> Optional[str]:
    """ifcfg: a plain shell word that initscripts does not skip."""
    problem = kernel(name)
    if problem is not None:
        return problem
    if not _SHELL_WORD.fullmatch(name):
        return (
            "has characters network-scripts cannot take (it sources ifcfg files as shell "
            "and expands the name unquoted): only letters, digits, '_', '.', '-', "
            "not starting with '.' or '-'"
        )
    if name.endswith(_IGNORED_SUFFIXES):
        return f"ends like a backup file ({name.rsplit('.', 1)[-1]}), which network-scripts skips"
    return None


def keyfile(name: str) -> Optional[str]:
    """nm: the name is a keyfile value and part of the file name. GKeyFile treats a
    backslash as an escape and wants UTF-8; nmcli's terse output escapes backslashes
    too, so the profile could not be found again for removal."""
    problem = kernel(name)
    if problem is not None:
        return problem
    if "\\" in name:
        return "contains a backslash, which NetworkManager keyfiles escape"
    if not name.isascii() or not name.isprintable():
        return "has non-printable or non-ASCII characters, which keyfiles do not take as is"
    return None
