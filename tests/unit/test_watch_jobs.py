"""The daemon's per-ENI job queue: a job queued behind a running one for the same ENI
is coalesced, but a re-converge from the record (what an IPv6 router event asks for)
never displaces a queued removal or `up`. Found in the QEMU tier: an unplug's router
events replaced its removal (its rules left behind), and a new ENI's first router its
`up` (the ENI unconfigured until the next scan)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ec2net import watch
from ec2net.backends.netlink_events import LinkChange, LinkEvent, RouterEvent
from ec2net.engine import Engine
from ec2net.metrics import JobKind
from tests.unit.fakes import PRIMARY_MAC, FakeImds, FakeKernel, engine, settings

ENI = "02:00:00:00:02:15"


def _daemon(tmp_path: Path, e: Engine) -> watch.Daemon:
    daemon = watch.Daemon(settings(tmp_path))

    @contextmanager
    def same_engine() -> Iterator[Engine]:
        yield e

    daemon._engine = same_engine  # type: ignore[method-assign]
    return daemon


def _world(tmp_path: Path) -> tuple[FakeKernel, Engine]:
    kernel = FakeKernel()
    kernel.plug("eth0", PRIMARY_MAC, 2)
    kernel.plug("eth2", ENI, 4)
    imds = FakeImds()
    imds.eni(PRIMARY_MAC, 0, ["10.0.1.10"], subnet="10.0.1.0/24")
    imds.eni(ENI, 2, ["10.0.2.30"], ipv6s=["2600:1f16:292:2::30"])
    return kernel, engine(kernel, imds, tmp_path)


def _drain(daemon: watch.Daemon) -> None:
    for _ in range(20):
        for fut in list(daemon.jobs.values()):
            fut.result(timeout=30)
        daemon._reap()
        if not daemon.jobs and not daemon.pending:
            return
    raise AssertionError(f"jobs never ended: {daemon.jobs} {daemon.pending}")


def test_router_events_after_an_unplug_do_not_replace_its_removal(tmp_path: Path) -> None:
    kernel, e = _world(tmp_path)
    e.scan()
    assert kernel.rules and e.store.load(ENI) is not None
    daemon = _daemon(tmp_path, e)
    try:
        daemon.known[4] = ("eth2", ENI)
        daemon.routers[4] = frozenset({"fe80::1"})
        gate = threading.Event()
        daemon.submit(f"mac {ENI}", lambda _e: gate.wait(30), JobKind.UP)  # busy
        kernel.unplug("eth2")  # addresses and routes go with the device, rules stay
        daemon.on_event(LinkEvent(LinkChange.DEL, 4, "eth2", ENI))
        daemon.known[4] = ("eth2", ENI)  # the router's removal reported after the link's
        daemon.on_router(RouterEvent(LinkChange.DEL, 4, "fe80::1"))
        gate.set()
        _drain(daemon)
    finally:
        daemon.pool.shutdown()
    assert kernel.rules == set() or all(
        "10.0.2.30" not in str(r) and "2600:1f16:292:2::30" not in str(r) for r in kernel.rules
    ), kernel.rules
    assert e.store.load(ENI) is None


def test_a_new_enis_first_router_does_not_replace_its_queued_up(tmp_path: Path) -> None:
    kernel, e = _world(tmp_path)
    daemon = _daemon(tmp_path, e)
    try:
        gate = threading.Event()
        daemon.submit(f"mac {ENI}", lambda _e: gate.wait(30), JobKind.UP)  # busy
        daemon.on_event(LinkEvent(LinkChange.NEW, 4, "eth2", ENI))  # queues its `up`
        daemon.on_router(RouterEvent(LinkChange.NEW, 4, "fe80::1"))  # the first RA
        gate.set()
        _drain(daemon)
    finally:
        daemon.pool.shutdown()
    assert e.store.load(ENI) is not None
    assert any("10.0.2.30" in str(r) for r in kernel.rules), kernel.rules


def test_the_loop_is_woken_only_once_the_job_is_done(tmp_path: Path) -> None:
    """The end-of-job wake must find the job done, or the loop's reap misses it and a
    queued follow-up (an unplug's removal) waits for the next refresh."""
    _, e = _world(tmp_path)
    daemon = _daemon(tmp_path, e)
    seen: list[bool] = []
    done = threading.Event()

    class Wake:
        def send(self, data: bytes) -> int:
            seen.append(all(f.done() for f in daemon.jobs.values()))
            done.set()
            return len(data)

    daemon._wake = Wake()  # type: ignore[assignment]
    try:
        for _ in range(20):
            done.clear()
            daemon.submit(f"mac {ENI}", lambda _e: None, JobKind.UP)
            assert done.wait(10)
            daemon._reap()
    finally:
        daemon.pool.shutdown()
    assert seen and all(seen), seen
