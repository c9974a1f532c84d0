"""A locked-down IMDS in the simulated VPC: `prohibit` routes to both IMDS endpoints
in a table every lookup consults, and a rule that lets sockets with systemd's mark
through (its locked mode). ec2net gets through with `imds.fwmark` and fails clearly
without it."""

from __future__ import annotations

import pytest

from ec2sim.layout import IMDS_V4, IMDS_V6
from tests.world.conftest import Instance

pytestmark = pytest.mark.world

SECOND = "02:00:0a:00:02:14"  # default world: subnet-b, 10.0.2.20-22, 2600:1f16:292:2::20
MARK = 0x7FFF0815
LOCK_TABLE = "1000"


def lock_down(inst: Instance) -> None:
    for fam, dst in (("-4", f"{IMDS_V4}/32"), ("-6", f"{IMDS_V6}/128")):
        inst.ip(fam, "route", "add", "prohibit", dst, "table", LOCK_TABLE)
        inst.ip(fam, "rule", "add", "priority", "1000", "lookup", LOCK_TABLE)
        inst.ip(fam, "rule", "add", "priority", "900", "fwmark", hex(MARK), "lookup", "main")


def set_fwmark(inst: Instance, mark: int) -> None:
    text = inst.config.read_text()
    assert "[imds]\n" in text
    inst.config.write_text(text.replace("[imds]\n", f"[imds]\nfwmark = {mark:#x}\n"))


def test_up_needs_the_mark_and_says_so(instance: Instance) -> None:
    f = instance.fabric
    eni = f.attach(SECOND, "eth1")
    lock_down(instance)
    before = f.imds_requests()
    failed = instance.ec2net("up", "eth1", check=False)
    assert failed.returncode == 2, failed.stderr  # permanent: retrying cannot help
    assert "imds.fwmark" in failed.stderr
    assert "Permission denied" in failed.stderr  # the prohibit route's answer, named
    assert f.imds_requests() == before  # nothing got out
    assert instance.owned_state()["records"] == ""

    set_fwmark(instance, MARK)
    instance.ec2net("up", "eth1")
    assert f.imds_requests() > before
    for addr in (*eni.ipv4s, *eni.ipv6s):
        assert instance.reachable(str(addr)), addr
    # the lock is still in place for everyone else
    assert "prohibit" in instance.ip("route", "show", "table", LOCK_TABLE)


def test_wrong_mark_is_refused_like_none(instance: Instance) -> None:
    f = instance.fabric
    f.attach(SECOND, "eth1")
    lock_down(instance)
    set_fwmark(instance, MARK + 1)
    failed = instance.ec2net("up", "eth1", check=False)
    assert failed.returncode == 2
    assert "imds.fwmark" in failed.stderr
