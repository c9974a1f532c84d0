"""systemd notification (sd_notify datagram protocol over $NOTIFY_SOCKET), stdlib only."""

from __future__ import annotations

import os
import socket
from typing import Optional


def notify(message: str, environ: Optional[dict[str, str]] = None) -> bool:
    """Send e.g. "READY=1" to the service manager; False when not run under one."""
    env = os.environ if environ is None else environ
    addr = env.get("NOTIFY_SOCKET")
    if not addr:
        return False
    if addr.startswith("@"):  # abstract namespace socket
        addr = "\0" + addr[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
        try:
            sock.connect(addr)
            sock.sendall(message.encode())
        except OSError:
            return False
    return True


def watchdog_interval(environ: Optional[dict[str, str]] = None) -> Optional[float]:
    """Half the watchdog timeout systemd set for us (seconds), if any."""
    env = os.environ if environ is None else environ
    usec = env.get("WATCHDOG_USEC")
    pid = env.get("WATCHDOG_PID")
    if not usec or (pid and pid != str(os.getpid())):
        return None
    try:
        return int(usec) / 2e6
    except ValueError:
        return None
