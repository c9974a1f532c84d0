"""The overlapping workers: results in order, a call's exception raised to its caller,
and a thread count fixed from the first use on, however many calls and clients."""

from __future__ import annotations

import threading

import pytest

from ec2net import imds
from ec2net.imds import ImdsClient
from ec2net.overlap import Workers
from ec2sim.imds import ImdsServer


def _named(prefix: str) -> int:
    return sum(1 for t in threading.enumerate() if t.name.startswith(prefix + "-"))


def test_results_in_order_and_calls_overlap() -> None:
    together = threading.Barrier(4, timeout=5)

    def meet(i: int) -> int:
        together.wait()  # four calls at once, or a BrokenBarrierError
        return i * i

    w: Workers[int, int] = Workers(meet, 4, "t-order")
    assert w.map(range(4)) == [0, 1, 4, 9]


def test_the_first_failure_in_order_is_raised() -> None:
    def fail_odd(i: int) -> int:
        if i % 2:
            raise ValueError(f"odd {i}")
        return i

    w: Workers[int, int] = Workers(fail_odd, 3, "t-fail")
    with pytest.raises(ValueError, match="odd 1"):
        w.map(range(6))
    assert w.map([0, 2]) == [0, 2]  # the workers outlive a failed call


def test_the_thread_count_is_fixed_from_the_first_use() -> None:
    w: Workers[int, int] = Workers(lambda i: i, 3, "t-count")
    assert _named("t-count") == 0  # nothing started before the first use
    for n in (1, 10, 100):
        assert w.map(range(n)) == list(range(n))
        assert _named("t-count") == 3


def test_clients_share_one_set_of_imds_threads(server: ImdsServer) -> None:
    for _ in range(5):  # e.g. the daemon's reloads, each making a new client
        ImdsClient((server.url,)).get_many(["mac", "instance-id", "instance-type"])
    assert _named("ec2net-imds") == imds.PARALLEL
