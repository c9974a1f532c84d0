"""Connecting to QEMU's unix sockets, which appear only once QEMU has started."""

from __future__ import annotations

import socket
import time


def connect_unix(path: str, deadline: float) -> socket.socket:
    """Connect to `path`, retrying until the monotonic `deadline`; the last OSError
    is raised if it never accepts."""
    while True:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(path)
            return sock
        except OSError:
            sock.close()
            if time.monotonic() >= deadline:
                raise
            time.sleep(0.05)
