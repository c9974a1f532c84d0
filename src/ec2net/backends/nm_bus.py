"""NetworkManager's D-Bus API through `busctl`: the argv of each call and the parse of
its reply.

Why not nmcli on the hot path: every nmcli start loads libnm's whole view of
NetworkManager (every device, profile and active connection) before it does anything;
measured under QEMU/TCG in the bookworm NM guest, `nmcli connection load` took about
0.4 s from the daemon's fork to NetworkManager's audit line, all of it on the path of
a hot-plugged ENI, while NetworkManager itself needs the CPU to activate. `busctl`
(shipped with systemd, so wherever NetworkManager runs under systemd) makes the one
method call. Calls, names and replies are NetworkManager's documented API:

- Settings.LoadConnections(as filenames) -> (b status, as failures)
- GetDeviceByIpIface(s iface) -> o device
- Device.ActiveConnection (property, o; "/" when none) and its Uuid (s)
- Device.Reapply(a{sa{sv}} connection, t version_id, u flags): the empty dict means
  "the applied profile's current settings", as `nmcli device reapply` does.

busctl prints a reply as its signature then each value; strings and object paths are
double-quoted with C escapes: `bas true 1 "/run/x.nmconnection"`, `o "/org/..."`.
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from pathlib import Path

from ec2net.errors import ApplyFailed

SERVICE = "org.freedesktop.NetworkManager"
ROOT = "/org/freedesktop/NetworkManager"
SETTINGS = ROOT + "/Settings"
BUSCTL = ("busctl", "--system")
NO_OBJECT = "/"


def load_argv(paths: Sequence[Path]) -> list[str]:
    return [
        *BUSCTL,
        "call",
        SERVICE,
        SETTINGS,
        SERVICE + ".Settings",
        "LoadConnections",
        "as",
        str(len(paths)),
        *map(str, paths),
    ]


def device_argv(ifname: str) -> list[str]:
    return [*BUSCTL, "call", SERVICE, ROOT, SERVICE, "GetDeviceByIpIface", "s", ifname]


def active_connection_argv(device: str) -> list[str]:
    return [*BUSCTL, "get-property", SERVICE, device, SERVICE + ".Device", "ActiveConnection"]


def uuid_argv(active: str) -> list[str]:
    return [*BUSCTL, "get-property", SERVICE, active, SERVICE + ".Connection.Active", "Uuid"]


def reapply_argv(device: str) -> list[str]:
    # an empty settings dict (the profile as NetworkManager now has it), version 0
    # (whichever is applied), no flags
    method = [SERVICE + ".Device", "Reapply", "a{sa{sv}}tu", "0", "0", "0"]
    return [*BUSCTL, "call", SERVICE, device, *method]


def _words(out: str, signature: str) -> list[str]:
    try:
        words = shlex.split(out)
    except ValueError as exc:
        raise ApplyFailed(f"busctl: unreadable reply {out.strip()!r}: {exc}") from exc
    if not words or words[0] != signature:
        raise ApplyFailed(f"busctl: expected a {signature!r} reply, got {out.strip()!r}")
    return words[1:]


def parse_load(out: str) -> list[str]:
    """The files NetworkManager could not load; ApplyFailed when it did not try."""
    words = _words(out, "bas")
    if len(words) < 2 or words[0] not in ("true", "false") or not words[1].isdigit():
        raise ApplyFailed(f"busctl: unreadable LoadConnections reply {out.strip()!r}")
    if words[0] != "true":
        raise ApplyFailed("NetworkManager did not load the profiles (LoadConnections false)")
    failures = words[2:]
    if len(failures) != int(words[1]):
        raise ApplyFailed(f"busctl: unreadable LoadConnections reply {out.strip()!r}")
    return failures


def parse_object(out: str) -> str:
    """An object path reply (`o "/org/..."`)."""
    words = _words(out, "o")
    if len(words) != 1 or not words[0].startswith("/"):
        raise ApplyFailed(f"busctl: expected an object path, got {out.strip()!r}")
    return words[0]


def parse_string(out: str) -> str:
    words = _words(out, "s")
    if len(words) != 1:
        raise ApplyFailed(f"busctl: expected a string, got {out.strip()!r}")
    return words[0]
