"""A TCP echo service and a reachability probe, both bound to a chosen namespace.

Sockets are created on a thread that entered the namespace (see `netns.run_in_netns`);
after that they are ordinary sockets used from any thread. So the service runs in the
test process and a probe costs no fork: a real TCP handshake through the fabric.
"""

from __future__ import annotations

import contextlib
import ipaddress
import socket
import struct
import threading
import time
from typing import Optional, Union

from ec2sim.netns import run_in_netns

ECHO_PORT = 7007  # "port 7" of the simulated instance, unprivileged-looking on purpose

AnyAddr = Union[str, ipaddress.IPv4Address, ipaddress.IPv6Address]


def _listen_socket(port: int) -> socket.socket:
    # one dual-stack socket covers every IPv4 and IPv6 address of the namespace
    sock = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    # IP_FREEBIND: listen even for addresses that are not (yet) configured
    sock.setsockopt(socket.SOL_IP, 15, 1)
    sock.bind(("::", port))
    sock.listen(64)
    return sock


class EchoServer:
    """Threaded TCP echo on all addresses of a namespace."""

    def __init__(self, ns: str, port: int = ECHO_PORT) -> None:
        self.ns = ns
        self.port = port
        self._sock: Optional[socket.socket] = None
        self._thread: Optional[threading.Thread] = None
        self._stopping = threading.Event()

    def start(self) -> EchoServer:
        self._sock = run_in_netns(self.ns, lambda: _listen_socket(self.port))
        self._thread = threading.Thread(
            target=self._accept_loop, name=f"echo-{self.ns}", daemon=True
        )
        self._thread.start()
        return self

    def _accept_loop(self) -> None:
        assert self._sock is not None
        while not self._stopping.is_set():
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    @staticmethod
    def _serve(conn: socket.socket) -> None:
        with conn:
            conn.settimeout(5.0)
            with contextlib.suppress(OSError):
                while True:
                    data = conn.recv(4096)
                    if not data:
                        return
                    conn.sendall(data)

    def stop(self) -> None:
        self._stopping.set()
        if self._sock is not None:
            # shutdown wakes the blocked accept(); close alone may not
            with contextlib.suppress(OSError):
                self._sock.shutdown(socket.SHUT_RDWR)
            self._sock.close()
            self._sock = None
        if self._thread is not None:
            self._thread.join(timeout=2.0)
            self._thread = None


def probe(
    ns: str,
    addr: AnyAddr,
    port: int = ECHO_PORT,
    *,
    source: Optional[AnyAddr] = None,
    timeout: float = 1.0,
) -> bool:
    """True if a TCP connection from namespace `ns` to `addr` completes and echoes.

    `source` binds the local address (the kernel must own it in `ns`). Any failure --
    refused, unreachable, timeout because the fabric dropped a packet -- is False.
    """
    ip = ipaddress.ip_address(str(addr))
    family = socket.AF_INET6 if ip.version == 6 else socket.AF_INET

    def make() -> socket.socket:
        sock = socket.socket(family, socket.SOCK_STREAM)
        if source is not None:
            sock.bind((str(source), 0))
        return sock

    try:
        sock = run_in_netns(ns, make)
    except OSError:
        return False
    with sock:
        sock.settimeout(timeout)
        try:
            sock.connect((str(ip), port))
        except OSError:
            return False
        return echoes(sock, b"ec2sim-probe\n")


def echoes(sock: socket.socket, payload: bytes) -> bool:
    """Send `payload` on a connected socket to the echo service; True if it comes back."""
    try:
        sock.sendall(payload)
        got = b""
        while len(got) < len(payload):
            chunk = sock.recv(len(payload) - len(got))
            if not chunk:
                return False
            got += chunk
        return got == payload
    except OSError:
        return False


def transfer(ns: str, addr: AnyAddr, payload: bytes, port: int = ECHO_PORT) -> tuple[bool, int]:
    """Send `payload` from namespace `ns` to the echo service at `addr` and read it back:
    (echoed intact, the connection's send MSS). The MSS says which MTU the path carried:
    above 8000 only if every link and the far end's NIC run jumbo frames."""
    ip = ipaddress.ip_address(str(addr))
    family = socket.AF_INET6 if ip.version == 6 else socket.AF_INET

    def connect() -> socket.socket:
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.settimeout(10)
        sock.connect((str(ip), port))
        return sock

    with run_in_netns(ns, connect) as sock:
        # the echo comes back while we send: read it concurrently or both sides block
        sender = threading.Thread(target=sock.sendall, args=(payload,), daemon=True)
        sender.start()
        got = bytearray()
        while len(got) < len(payload):
            chunk = sock.recv(1 << 16)
            if not chunk:
                break
            got += chunk
        sender.join(timeout=10)
        info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 104)
        snd_mss = struct.unpack_from("I", info, 16)[0]  # struct tcp_info: tcpi_snd_mss
    return bytes(got) == payload, snd_mss


class ProbeLoop:
    """Probes every address from `ns` all along (one thread per address, a new TCP
    connection every `every` seconds), for a switch that must keep every address
    answering: per address the probes sent, those that failed, and the longest time
    between two answers (a failed probe's `timeout` included)."""

    def __init__(
        self,
        ns: str,
        addrs: list[str],
        port: int = ECHO_PORT,
        *,
        every: float = 0.05,
        timeout: float = 1.0,
    ) -> None:
        self.ns = ns
        self.port = port
        self.every = every
        self.timeout = timeout
        self.sent = dict.fromkeys(addrs, 0)
        self.failed = dict.fromkeys(addrs, 0)
        self.longest_gap = dict.fromkeys(addrs, 0.0)
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._run, args=(a,), name=f"probe-{a}", daemon=True)
            for a in addrs
        ]

    def __enter__(self) -> ProbeLoop:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _run(self, addr: str) -> None:
        last = time.monotonic()
        while not self._stop.is_set():
            ok = probe(self.ns, addr, self.port, timeout=self.timeout)
            now = time.monotonic()
            self.sent[addr] += 1
            if ok:
                self.longest_gap[addr] = max(self.longest_gap[addr], now - last)
                last = now
            else:
                self.failed[addr] += 1
            self._stop.wait(self.every)
        if self.failed[addr]:  # still failing at the end: the gap runs until now
            self.longest_gap[addr] = max(self.longest_gap[addr], time.monotonic() - last)

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(self.timeout + 2.0)

    def failures(self) -> dict[str, int]:
        return {a: n for a, n in self.failed.items() if n}
