"""IMDS faults x operations (`up`, `refresh`, `scan`, `down`, the `watch` daemon).

Rules: a fault the client can ride out (bursts, resets, expired or revoked tokens, one
endpoint down, propagation) changes nothing in the outcome: exit 0, converged. A fault
it cannot (no connection, no answer, IMDS disabled, hop limit) exits non-zero naming
IMDS and changes nothing. Either way the recovery run converges to the clean state,
foreign state is untouched and the primary answers every probe. One world per cell;
the cells of one fault run side by side (they mostly wait on timeouts).
"""

from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Callable

import pytest

from tests.fault.cells import DAEMON_OK_WITHIN, OPS, Apply, Cell, run_cell
from tests.fault.conftest import References
from tests.fault.harness import THIRD, FaultWorld, nft_drop, record, wait_for

pytestmark = [pytest.mark.world, pytest.mark.fault]

FULL = os.environ.get("EC2NET_FAULT_FULL") == "1"


@dataclass(frozen=True)
class Fault:
    name: str
    inject: Apply
    rides_out: bool
    ops: tuple[str, ...] = OPS
    expected_rc: tuple[int, ...] = (1,)
    one_token: bool = False
    settle: float = 0.0  # seconds the fault itself delays convergence


def _world_fault(**values: object) -> Apply:
    def inject(fw: FaultWorld) -> Callable[[], None]:
        faults = fw.fabric.world.faults
        with fw.fabric.world.lock:
            for key, value in values.items():
                setattr(faults, key, value)

        def recover() -> None:
            with fw.fabric.world.lock:
                for key in values:
                    setattr(faults, key, type(getattr(faults, key))())

        return recover

    return inject


def _nft(v4: bool, v6: bool) -> Apply:
    def inject(fw: FaultWorld) -> Callable[[], None]:
        stack = ExitStack()
        stack.enter_context(nft_drop(fw.fabric, v4=v4, v6=v6))
        return stack.close

    return inject


def _token_uses(n: int) -> Apply:
    def inject(fw: FaultWorld) -> Callable[[], None]:
        for inj in fw.servers_injected():
            inj.token_uses = n

        def recover() -> None:
            for inj in fw.servers_injected():
                inj.token_uses = 0

        return recover

    return inject


def _revoke(fw: FaultWorld) -> Callable[[], None]:
    assert fw.fabric.imds is not None
    fw.fabric.imds.revoke_tokens()  # shared by both endpoints: IMDS restarted
    return lambda: None


def _hop_limit(fw: FaultWorld) -> Callable[[], None]:
    # The silence bites when a token is needed: the cached one is revoked with it.
    recover = _world_fault(hop_limit_exceeded=True)(fw)
    _revoke(fw)
    return recover


def _v4_down(fw: FaultWorld) -> Callable[[], None]:
    assert fw.fabric.imds is not None
    inj = fw.fabric.imds.injected
    inj.down = True

    def recover() -> None:
        inj.down = False

    return recover


def _propagation(seconds: float) -> Apply:
    def inject(fw: FaultWorld) -> Callable[[], None]:
        # Only the ENI attached now fills in slowly; the configured one is settled.
        # Attached by the cell already (up, scan: its attach time counts) or just after.
        eni = fw.fabric.spare.get(THIRD) or fw.fabric.world.enis[THIRD]
        eni.propagation_delay = seconds
        return lambda: None

    return inject


ATTACHING = ("up", "scan", "watch")
FAULTS = [
    Fault("connect timeout (both endpoints)", _nft(True, True), rides_out=False),
    Fault("no answer (hang)", _world_fault(blackhole=True), rides_out=False),
    Fault("503 burst (3)", _world_fault(error_503_remaining=3), rides_out=True),
    Fault("429 throttling (3)", _world_fault(throttle_429_remaining=3), rides_out=True),
    Fault("connection reset (3)", _world_fault(reset_remaining=3), rides_out=True),
    Fault("token expiry mid-run", _token_uses(4), rides_out=True),
    Fault("all tokens 401 (IMDS restarted)", _revoke, rides_out=True, one_token=True),
    Fault("403 (IMDS disabled)", _world_fault(disabled=True), rides_out=False,
          expected_rc=(1, 2)),
    Fault("hop limit: token PUT silent", _hop_limit, rides_out=False),
    Fault("IPv4 endpoint down, IPv6 up", _v4_down, rides_out=True),
    Fault("IPv4 endpoint timing out, IPv6 up", _nft(True, False), rides_out=True),
    Fault("propagation 4 s", _propagation(4.0), rides_out=True, ops=ATTACHING, settle=4.0),
]  # fmt: skip
if FULL:
    FAULTS += [
        Fault("propagation 12 s", _propagation(12.0), rides_out=True, ops=ATTACHING, settle=12.0),
        Fault("propagation 28 s", _propagation(28.0), rides_out=True, ops=ATTACHING, settle=28.0),
    ]


def _token_revoke_needs_cache(fault: Fault) -> None:
    # The restart case is only meaningful with a token cached by the base run.
    assert fault.one_token is False or fault.inject is _revoke


@pytest.mark.parametrize("fault", FAULTS, ids=[f.name for f in FAULTS])
def test_imds_fault(fault: Fault, worlds: Callable[..., FaultWorld], refs: References) -> None:
    _token_revoke_needs_cache(fault)
    for name in ("both", "refreshed", "down"):
        refs[name]  # built before the cells race for them

    def cell(op: str) -> Cell:
        c = Cell("imds", fault.name, op)
        try:
            return run_cell(
                worlds(), refs, c, fault.inject, rides_out=fault.rides_out,
                expected_rc=fault.expected_rc, message_has=("imds",), one_token=fault.one_token,
                settle=fault.settle,
            )  # fmt: skip
        except AssertionError as err:
            c.fail(str(err))
            return c

    with ThreadPoolExecutor(max_workers=len(fault.ops)) as pool:
        cells = list(pool.map(cell, fault.ops))
    for c in cells:
        record(c.row())
    problems = [p for c in cells for p in c.problems]
    assert problems == [], "\n".join(problems)


STALE_OPS = (("down", "eth2"), ("scan",), ("refresh",), ("watch",))


@pytest.mark.parametrize("args", STALE_OPS, ids=[" ".join(a) for a in STALE_OPS])
def test_detached_eni_still_listed(
    args: tuple[str, ...], worlds: Callable[..., FaultWorld], refs: References
) -> None:
    """eth2 is detached but IMDS keeps listing it (as EC2 does for a while): its
    leftovers (the kernel keeps its rules) go, eth1 and foreign state stay."""
    expected = refs["base"]
    fw = worlds()
    fw.fabric.world.stale_after_detach = 30.0
    fw.must("up", "eth1")
    fw.fabric.attach(THIRD, "eth2")
    fw.must("up", "eth2")
    foreign = fw.foreign()
    c = Cell("imds", "detached ENI still listed", " ".join(args))
    if args == ("watch",):
        daemon = fw.start_daemon()
        time.sleep(1.2)
        fw.fabric.detach(THIRD)
        wait_for(lambda: fw.state() == expected, DAEMON_OK_WITHIN, every=0.5)
        fw.stop_daemon(daemon)
        c.rc = f"running, then {daemon.returncode}"
    else:
        fw.fabric.detach(THIRD)
        run = fw.ec2net(*args)
        c.rc = str(run.rc)
        if run.rc != 0:
            c.fail(f"exit {run.rc}\n{run.err[-800:]}")
    c.during = "IMDS lists eth2" if THIRD in fw.fabric.world.enis else "IMDS dropped eth2"
    c.after = c.judge("after", expected, fw.state())
    if fw.foreign() != foreign:
        c.fail("foreign state changed")
    if fw.probe.failed:
        c.fail(f"primary probes failed: {fw.probe.failed[:5]}")
    record(c.row())
    assert c.problems == [], "\n".join(c.problems)
