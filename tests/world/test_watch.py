"""The watch daemon and concurrent triggers in the simulated VPC."""

from __future__ import annotations

import contextlib
import ipaddress
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest

from ec2sim.fabric import Fabric
from tests.world.conftest import Instance

pytestmark = pytest.mark.world

SECOND = "02:00:0a:00:02:14"
# READY=1 comes once the link-event socket is open (no event can be missed after it);
# here that takes about a second, the bound is for a loaded machine.
READY_TIMEOUT = 30.0


def wait_for(cond: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.1)
    return cond()


@dataclass
class Daemon:
    """`ec2net watch` in the instance namespace, with the service manager's side of
    sd_notify: a datagram socket the daemon finds in $NOTIFY_SOCKET."""

    proc: subprocess.Popen[bytes]
    notify: socket.socket
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_notify(self, field: str, timeout: float) -> list[str]:
        """Every message received until one holds the line `field` (e.g. READY=1);
        fails if the daemon exits first or `timeout` seconds pass."""
        seen: list[str] = []
        deadline = time.monotonic() + timeout
        while field not in (line for msg in seen for line in msg.split("\n")):
            left = deadline - time.monotonic()
            if left <= 0 or self.proc.poll() is not None:
                raise AssertionError(
                    f"no {field} from the daemon (exit {self.proc.poll()}, got {seen}):\n"
                    + self.output()
                )
            self.notify.settimeout(min(left, 0.5))
            try:
                seen.append(self.notify.recv(4096).decode())
            except socket.timeout:
                continue
        return seen


@contextlib.contextmanager
def running_daemon(instance: Instance, interval: float) -> Iterator[Daemon]:
    text = instance.config.read_text().replace(
        "[imds]", f"[refresh]\ninterval = {interval:g}\n[imds]"
    )
    instance.config.write_text(text)
    # A short path of our own: AF_UNIX paths are limited to 107 bytes. Path sockets
    # live in the file system, so the daemon reaches it from its network namespace.
    tmp = Path(tempfile.mkdtemp(prefix="ec2net-notify-"))
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(tmp / "notify"))
    log = tmp / "daemon.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            ["ip", "netns", "exec", instance.ns, sys.executable, "-m", "ec2net", "-v", "watch"],
            env={**instance.env(), "NOTIFY_SOCKET": str(tmp / "notify")},
            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    d = Daemon(proc, sock, log)
    try:
        d.wait_notify("READY=1", READY_TIMEOUT)
        yield d
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        sock.close()
        shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture
def daemon(instance: Instance) -> Iterator[Daemon]:
    with running_daemon(instance, interval=1) as d:
        yield d


def test_daemon_configures_refreshes_and_cleans(instance: Instance, daemon: Daemon) -> None:
    f: Fabric = instance.fabric
    empty = instance.owned_state()
    f.spare[SECOND].propagation_delay = 3.0  # fills in over 3 s, as a fresh attachment
    eni = f.attach(SECOND, "eth1")
    addrs = [str(a) for a in (*eni.ipv4s, *eni.ipv6s)]
    assert wait_for(lambda: all(instance.reachable(a) for a in addrs), 15), daemon.output()
    new = ipaddress.IPv4Address("10.0.2.60")
    f.assign(SECOND, new)
    assert wait_for(lambda: instance.reachable(new), 5), daemon.output()  # interval 1 s
    f.unassign(SECOND, new)
    assert wait_for(lambda: str(new) not in instance.ip("addr", "show", "dev", "eth1"), 5)
    f.detach(SECOND)
    assert wait_for(lambda: instance.owned_state() == empty, 5), daemon.output()
    # re-attached under another name
    f.attach(SECOND, "eth5")
    assert wait_for(lambda: all(instance.reachable(a) for a in addrs), 10), daemon.output()
    daemon.proc.send_signal(signal.SIGTERM)
    daemon.wait_notify("STOPPING=1", 10)
    assert daemon.proc.wait(timeout=10) == 0, daemon.output()
    # stopping the daemon leaves the ENI configured (it does not break networking)
    assert all(instance.reachable(a) for a in addrs)
    # each job that changed something says so, starting with the ENI's name (the
    # journal's fields key on it); the refreshes that changed nothing stay silent
    said = [ln for ln in daemon.output().splitlines() if ": configured" in ln]
    assert any("eth1: configured" in ln for ln in said), daemon.output()
    assert any("eth5: configured" in ln for ln in said), daemon.output()
    assert "unchanged" not in daemon.output()


def test_ipv6_routes_follow_the_links_ra_router_without_waiting_for_a_refresh(
    instance: Instance,
) -> None:
    f: Fabric = instance.fabric
    with running_daemon(instance, interval=600) as daemon:  # no refresh in this test
        eni = f.attach(SECOND, "eth1")
        v6 = str(eni.ipv6s[0])
        assert wait_for(lambda: instance.reachable(v6), 15), daemon.output()

        def table_gateways() -> set[str]:
            out = instance.ip("-6", "route", "show", "table", "10001")
            return {w[w.index("via") + 1] for w in map(str.split, out.splitlines()) if "via" in w}

        assert table_gateways() == {"fe80:ec2::1"}  # no RA yet: EC2's fixed router address
        # the router's own link-local address announces itself (the kernel's RA route)
        port = f.ip(f.router_ns, "-6", "-o", "addr", "show", "dev", f.ports[SECOND].name)
        own = [w[3].split("/")[0] for w in map(str.split, port.splitlines())]
        router = next(a for a in own if a.startswith("fe80:") and a != "fe80:ec2::1")
        ra_route = ("default", "via", router, "dev", "eth1", "proto", "ra", "metric", "1025")
        instance.ip("-6", "route", "add", *ra_route)
        assert wait_for(lambda: table_gateways() == {router}, 10), daemon.output()
        assert instance.reachable(v6)
        assert "drift" not in instance.ec2net("status").stdout
        # the router leaves: back to the fixed address, still without IMDS being asked
        requests = f.imds_requests()
        instance.ip("-6", "route", "del", *ra_route)
        assert wait_for(lambda: table_gateways() == {"fe80:ec2::1"}, 10), daemon.output()
        assert instance.reachable(v6)
        assert f.imds_requests() == requests


def test_parallel_operations_end_in_the_desired_state(instance: Instance) -> None:
    f = instance.fabric
    enis = [f.attach(f.new_eni("subnet-b", n_ipv4=3, n_ipv6=1), f"eth{i}") for i in range(1, 6)]
    ops = []
    for i in range(1, 6):
        ops += [("up", f"eth{i}"), ("refresh", f"eth{i}"), ("up", f"eth{i}"), ("down", f"eth{i}")]
    with ThreadPoolExecutor(max_workers=20) as pool:
        procs = list(pool.map(lambda op: instance.ec2net(*op, check=False), ops))
    assert [p.returncode for p in procs if p.returncode not in (0,)] == [], [
        p.stderr for p in procs if p.returncode
    ]
    # whatever the interleaving, a final round of up converges and rules are unique
    with ThreadPoolExecutor(max_workers=5) as pool:
        list(pool.map(lambda i: instance.ec2net("up", f"eth{i}"), range(1, 6)))
    rules = instance.ip("-4", "rule", "show").splitlines()
    ours = [r for r in rules if "proto 236" in r]
    assert len(ours) == len(set(ours))
    for eni in enis:
        assert all(instance.reachable(str(a)) for a in (*eni.ipv4s, *eni.ipv6s))
