"""Log records with the ENI as journal fields, under systemd.

When stderr is the journal (systemd says so in JOURNAL_STREAM), every message goes to
journald over its native protocol instead, with fields a fleet can search by:
`EC2NET_IFNAME`, `EC2NET_MAC` and `EC2NET_ENI_ID` (`journalctl EC2NET_ENI_ID=eni-...`
finds every line about one ENI), beside MESSAGE, PRIORITY and SYSLOG_IDENTIFIER.
Elsewhere the text on stderr is unchanged.

The protocol is a few lines (`KEY=value` per field, one datagram per message, a value
with a newline as `KEY`, its length in 8 bytes little-endian, the value), so it is
written here rather than with python3-systemd: that library is packaged on RHEL and
Debian but not installed on minimal images (nor on RHEL 6), and its JournalHandler
would still need this module's knowledge of which ENI a message is about.

Which ENI: messages start with the interface name (or `mac MAC` in the daemon's
jobs). The converge and the engine tell this module, as they learn it, which MAC and
ENI id an interface name stands for (`remember`).
"""

from __future__ import annotations

import logging
import os
import socket
import struct
import sys
import threading
from typing import Optional

SOCKET = "/run/systemd/journal/socket"
IDENTIFIER = "ec2net"
MAX_DATAGRAM = 64 * 1024  # what a message is cut to (journald takes far more)

# logging level -> syslog priority
_PRIORITY = {
    logging.CRITICAL: 2,
    logging.ERROR: 3,
    logging.WARNING: 4,
    logging.INFO: 6,
    logging.DEBUG: 7,
}

_lock = threading.Lock()
_by_name: dict[str, tuple[str, str]] = {}  # ifname -> (mac, eni id)
_by_mac: dict[str, tuple[str, str]] = {}  # mac -> (ifname, eni id)
# Each keeps the latest this many: a daemon sees every ENI ever attached go by (the soak,
# tests/fault/test_soak.py, attaches a new one each time), an instance has far fewer at
# once.
MAX_REMEMBERED = 1024


def remember(ifname: str, mac: str, eni_id: str) -> None:
    """What an interface name stands for, from now on (names are reused: the latest)."""
    if not ifname or not mac:
        return
    with _lock:
        for table, key, value in (
            (_by_name, ifname, (mac, eni_id)),
            (_by_mac, mac, (ifname, eni_id)),
        ):
            table.pop(key, None)  # the latest last
            table[key] = value
            while len(table) > MAX_REMEMBERED:
                del table[next(iter(table))]


def fields_of(message: str) -> dict[str, str]:
    """The ENI fields for a message that starts with `IFNAME:` or `mac MAC:`."""
    head = message.split(":", 1)[0] if ":" in message else ""
    if head.startswith("mac "):
        mac = message[4:21]
        with _lock:
            ifname, eni_id = _by_mac.get(mac, ("", ""))
        found = {"EC2NET_MAC": mac, "EC2NET_IFNAME": ifname, "EC2NET_ENI_ID": eni_id}
    else:
        with _lock:
            known = _by_name.get(head)
        if known is None:
            return {}
        found = {"EC2NET_IFNAME": head, "EC2NET_MAC": known[0], "EC2NET_ENI_ID": known[1]}
    return {k: v for k, v in found.items() if v}


def encode(fields: dict[str, str]) -> bytes:
    out = bytearray()
    for key, value in fields.items():
        data = value.encode("utf-8", "replace")
        if b"\n" in data:
            out += key.encode() + b"\n" + struct.pack("<Q", len(data)) + data + b"\n"
        else:
            out += key.encode() + b"=" + data + b"\n"
    return bytes(out[:MAX_DATAGRAM])


def stderr_is_the_journal() -> bool:
    """systemd sets JOURNAL_STREAM to the device and inode of the stream it connected to
    stdout/stderr: the journal only if that is still our stderr."""
    stream = os.environ.get("JOURNAL_STREAM", "")
    try:
        dev, ino = (int(x) for x in stream.split(":"))
        st = os.fstat(sys.stderr.fileno())
    except (ValueError, OSError, AttributeError):
        return False
    return (st.st_dev, st.st_ino) == (dev, ino)


class JournalHandler(logging.Handler):
    """Sends each record to journald; falls back to stderr if the socket fails."""

    def __init__(self, path: str = SOCKET) -> None:
        super().__init__()
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.fallback = logging.StreamHandler(sys.stderr)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
            if record.exc_info:
                message += "\n" + logging.Formatter().formatException(record.exc_info)
            fields = {
                "MESSAGE": message,
                "PRIORITY": str(_PRIORITY.get(record.levelno, 6)),
                "SYSLOG_IDENTIFIER": IDENTIFIER,
                "CODE_FILE": record.pathname or "",
                "CODE_LINE": str(record.lineno),
                "CODE_FUNC": record.funcName or "",
                **fields_of(message),
            }
            self.sock.sendto(encode(fields), self.path)
        except OSError:
            self.fallback.emit(record)
        except Exception:
            self.handleError(record)

    def close(self) -> None:
        self.sock.close()
        super().close()


def handler() -> Optional[logging.Handler]:
    """The journal handler when stderr is the journal, else None (stderr as it is)."""
    return JournalHandler() if stderr_is_the_journal() else None
