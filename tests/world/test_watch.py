"""The watch daemon and concurrent triggers in the simulated VPC."""

from __future__ import annotations

import ipaddress
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Callable

import pytest

from ec2sim.fabric import Fabric
from tests.world.conftest import Instance

pytestmark = pytest.mark.world

SECOND = "02:00:0a:00:02:14"


def wait_for(cond: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.1)
    return cond()


@pytest.fixture
def daemon(instance: Instance) -> Iterator[subprocess.Popen[str]]:
    text = instance.config.read_text().replace("[imds]", "[refresh]\ninterval = 1\n[imds]")
    instance.config.write_text(text)
    proc = subprocess.Popen(
        ["ip", "netns", "exec", instance.ns, sys.executable, "-m", "ec2net", "-v", "watch"],
        env=instance.env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    time.sleep(1.0)  # past the initial scan
    yield proc
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_daemon_configures_refreshes_and_cleans(
    instance: Instance, daemon: subprocess.Popen[str]
) -> None:
    f: Fabric = instance.fabric
    empty = instance.owned_state()
    f.spare[SECOND].propagation_delay = 3.0  # fills in over 3 s, as a fresh attachment
    eni = f.attach(SECOND, "eth1")
    addrs = [str(a) for a in (*eni.ipv4s, *eni.ipv6s)]
    assert wait_for(lambda: all(instance.reachable(a) for a in addrs), 15), daemon.stderr
    new = ipaddress.IPv4Address("10.0.2.60")
    f.assign(SECOND, new)
    assert wait_for(lambda: instance.reachable(new), 5)  # interval 1 s + jitter
    f.unassign(SECOND, new)
    assert wait_for(lambda: str(new) not in instance.ip("addr", "show", "dev", "eth1"), 5)
    f.detach(SECOND)
    assert wait_for(lambda: instance.owned_state() == empty, 5)
    # re-attached under another name
    f.attach(SECOND, "eth5")
    assert wait_for(lambda: all(instance.reachable(a) for a in addrs), 10)
    daemon.send_signal(signal.SIGTERM)
    assert daemon.wait(timeout=10) == 0
    # stopping the daemon leaves the ENI configured (it does not break networking)
    assert all(instance.reachable(a) for a in addrs)


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
