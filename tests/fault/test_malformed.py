"""Malformed IMDS values x operations.

IMDS answers 200 with a body that is wrong: a bad or out-of-subnet address, a bad
CIDR, an HTML page, NUL or non-UTF-8 bytes, an empty body, duplicates, thousands of
lines, a device-number that is not a number. Rules: nothing already configured is
removed; the command exits non-zero naming the key (and the bad value where it
prints); once IMDS is right again the next run converges. Duplicates of good values
may also be accepted, if they converge exactly (no duplicate objects).
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable, Optional

import pytest

from ec2sim.imds_state import error_page
from tests.fault.cells import OPS, Cell, run_cell
from tests.fault.conftest import References
from tests.fault.harness import SECOND, THIRD, FaultWorld, record

pytestmark = [pytest.mark.world, pytest.mark.fault]

DYNAMIC = ("local-ipv4s", "ipv6s")  # what refresh re-reads
FULL = os.environ.get("EC2NET_FAULT_FULL") == "1"
# The daemon takes one path for every bad value (the job fails, the ENI is kept); CI
# runs it for these, the report for all.
DAEMON_CASES = ("bad IPv4 address", "empty body", "duplicates", "device-number not a number")


@dataclass(frozen=True)
class Bad:
    name: str
    key: str
    body: Callable[[list[str]], bytes]  # from the ENI's real list for that key
    shows: str = ""  # a fragment of the bad value the message must show
    may_accept: bool = False  # a correct reading exists (duplicates of good values)


def _lines(values: list[str]) -> bytes:
    return "\n".join(values).encode()


CASES = [
    Bad("bad IPv4 address", "local-ipv4s", lambda v: _lines([*v, "10.0.2.999"]), "10.0.2.999"),
    Bad("address outside the subnet", "local-ipv4s", lambda v: _lines([*v, "10.9.9.9"]),
        "10.9.9.9"),
    Bad("bad IPv6 address", "ipv6s", lambda v: _lines([*v, "2600:1f16:292:2::zz"]), "::zz"),
    Bad("bad CIDR /200", "subnet-ipv4-cidr-block", lambda v: b"10.0.2.0/200", "/200"),
    Bad("HTML instead of a list", "local-ipv4s", lambda v: error_page(404), "<?xml"),
    Bad("NUL byte", "local-ipv4s", lambda v: _lines(v).replace(b"\n", b"\x00", 1)),
    Bad("non-UTF-8 bytes", "ipv6s", lambda v: _lines(v) + b"\n\xff\xfe\xfd"),
    Bad("empty body", "local-ipv4s", lambda v: b""),
    Bad("duplicates", "local-ipv4s", lambda v: _lines(v + v[:3]), may_accept=True),
    Bad("3000 lines, duplicates of good values", "local-ipv4s",
        lambda v: _lines((v * (3000 // max(1, len(v)) + 1))[:3000]), may_accept=True),
    Bad("4000 lines outside the subnet", "local-ipv4s",
        lambda v: _lines([*v, *(f"10.1.{i // 250}.{i % 250 + 1}" for i in range(4000))])),
    Bad("device-number not a number", "device-number", lambda v: b"1a", "1a"),
    Bad("device-number empty", "device-number", lambda v: b""),
]  # fmt: skip


def _real(fw: FaultWorld, mac: str, key: str) -> list[str]:
    eni = fw.fabric.world.enis.get(mac) or fw.fabric.spare[mac]
    if key == "local-ipv4s":
        return [str(a) for a in eni.ipv4s]
    if key == "ipv6s":
        return [str(a) for a in eni.ipv6s]
    return []


def _inject(bad: Bad) -> Callable[[FaultWorld], Callable[[], None]]:
    def inject(fw: FaultWorld) -> Callable[[], None]:
        bodies = {
            f"macs/{mac}/{bad.key}": bad.body(_real(fw, mac, bad.key)) for mac in (SECOND, THIRD)
        }
        for inj in fw.servers_injected():
            inj.bodies.update(bodies)

        def recover() -> None:
            for inj in fw.servers_injected():
                inj.bodies.clear()

        return recover

    return inject


def _rides_out(bad: Bad, op: str) -> Optional[bool]:
    if op == "down" or (op == "refresh" and bad.key not in DYNAMIC):
        return True  # never reads that key
    return None if bad.may_accept else False


@pytest.mark.parametrize("bad", CASES, ids=[b.name for b in CASES])
def test_malformed_value(bad: Bad, worlds: Callable[..., FaultWorld], refs: References) -> None:
    for name in ("both", "refreshed", "down"):
        refs[name]

    def cell(op: str) -> Cell:
        c = Cell("malformed", bad.name, op)
        wanted = tuple(w for w in (bad.key, bad.shows.lower()) if w)
        try:
            return run_cell(
                worlds(), refs, c, _inject(bad), rides_out=_rides_out(bad, op),
                message_has=wanted,
            )  # fmt: skip
        except AssertionError as err:
            c.fail(str(err))
            return c

    ops = [op for op in OPS if op != "watch" or FULL or bad.name in DAEMON_CASES]
    with ThreadPoolExecutor(max_workers=len(ops)) as pool:
        cells = list(pool.map(cell, ops))
    for c in cells:
        record(c.row())
    problems = [p for c in cells for p in c.problems]
    assert problems == [], "\n".join(problems)
