"""interfaces.mtu and prefixes.local over the in-memory kernel: the link ends with the
MTU the setting says, `down` sets back the one it had, status sees drift; delegated
prefixes become local routes only when asked, and go with the prefix."""

from __future__ import annotations

import ipaddress
from dataclasses import replace
from pathlib import Path

import pytest

from ec2net import status
from ec2net.model import TABLE_LOCAL, RouteKind
from ec2net.render import RenderInput, ifcfg, networkd, nm
from ec2net.state import Store
from tests.unit.fakes import PRIMARY_MAC, FakeImds, FakeKernel, engine

MAC1 = "02:00:00:00:02:14"


@pytest.fixture
def kernel() -> FakeKernel:
    k = FakeKernel()
    k.plug("eth0", PRIMARY_MAC, 2, mtu=9001)  # DHCP set the VPC's MTU on the primary
    k.plug("eth1", MAC1, 3)  # the driver's default, 1500
    return k


@pytest.fixture
def imds() -> FakeImds:
    i = FakeImds()
    i.eni(PRIMARY_MAC, 0, ["10.0.1.10"], subnet="10.0.1.0/24")
    i.eni(MAC1, 1, ["10.0.2.20"], eni_id="eni-0123456789abcdef0")
    return i


@pytest.mark.parametrize(
    ("setting", "overrides", "want"),
    [
        ("auto", (), 9001),
        ("keep", (), 1500),
        (8900, (), 8900),
        ("auto", (("eni-0123456789abcdef0", 1500),), 1500),
        ("keep", ((MAC1, 9001),), 9001),
    ],
)
def test_the_link_ends_with_the_mtu_the_setting_says_and_down_restores_it(  # noqa: PLR0917
    tmp_path: Path,
    kernel: FakeKernel,
    imds: FakeImds,
    setting: object,
    overrides: tuple[tuple[str, object], ...],
    want: int,
) -> None:
    e = engine(kernel, imds, tmp_path, mtu=setting, mtu_overrides=overrides)
    e.up("eth1")
    assert kernel.links_["eth1"].mtu == want
    rec = Store(tmp_path / "run").load(MAC1)
    assert rec is not None and rec.mtu_before == (1500 if want != 1500 else None)
    assert e.up("eth1").action.value == "unchanged"
    e.down("eth1")
    assert kernel.links_["eth1"].mtu == 1500


def test_plan_shows_the_mtu_and_status_reports_drift(
    tmp_path: Path, kernel: FakeKernel, imds: FakeImds
) -> None:
    e = engine(kernel, imds, tmp_path)
    planned = e.up("eth1", dry_run=True)
    assert "link eth1 mtu 9001" in [str(c.obj) for c in planned.changes.changes]
    assert kernel.links_["eth1"].mtu == 1500  # a dry run changes nothing
    e.up("eth1")
    assert [r.state.value for r in status.collect(e)] == ["ok"]
    kernel.links_["eth1"] = replace(kernel.links_["eth1"], mtu=1500)  # someone reset it
    rows = status.collect(e)
    assert rows[0].state.value == "drifted" and rows[0].drift == 1
    e.up("eth1")
    assert kernel.links_["eth1"].mtu == 9001


def test_renderers_carry_the_mtu(tmp_path: Path, kernel: FakeKernel, imds: FakeImds) -> None:
    e = engine(kernel, imds, tmp_path, mtu=8900)
    from ec2net.targets import resolve

    eni = e._wait(MAC1)
    target = resolve(e.want(eni, None), kernel.snapshot())
    assert target.plan is not None and target.link is not None
    inp = RenderInput(target.plan, target.link, eni, False)
    assert "MTU=8900\n" in "".join(ifcfg.render(inp).values())
    assert "MTUBytes=8900\n" in "".join(networkd.render(inp).values())
    assert "mtu=8900\n" in "".join(nm.render(inp).values())


def test_delegated_prefixes_become_local_routes_only_when_asked(
    tmp_path: Path, kernel: FakeKernel, imds: FakeImds
) -> None:
    imds.eni(MAC1, 1, ["10.0.2.20"], ipv6s=["2600:1f16:292:2::20"], prefixes4=["10.0.2.64/28"],
             prefixes6=["2600:1f16:292:2:a000::/80"])  # fmt: skip
    engine(kernel, imds, tmp_path / "off").up("eth1")
    assert not [r for r in kernel.routes if r.kind is RouteKind.LOCAL]
    e = engine(kernel, imds, tmp_path, prefixes_local=True)
    e.up("eth1")
    local = {(str(r.dst), r.table, r.ifname) for r in kernel.routes if r.kind is RouteKind.LOCAL}
    assert local == {
        ("10.0.2.64/28", TABLE_LOCAL, "eth1"),
        ("2600:1f16:292:2:a000::/80", TABLE_LOCAL, "eth1"),
    }
    imds.eni(MAC1, 1, ["10.0.2.20"], ipv6s=["2600:1f16:292:2::20"])  # prefixes unassigned
    e.refresh()
    assert not [r for r in kernel.routes if r.kind is RouteKind.LOCAL]
    imds.eni(MAC1, 1, ["10.0.2.20"], prefixes4=["10.0.2.64/28"])
    e.refresh()
    e.down("eth1")
    assert kernel.routes == set()


def test_local_route_lines_in_every_renderer(
    tmp_path: Path, kernel: FakeKernel, imds: FakeImds
) -> None:
    imds.eni(MAC1, 1, ["10.0.2.20"], prefixes4=["10.0.2.64/28"])
    e = engine(kernel, imds, tmp_path, prefixes_local=True, mtu="keep")
    from ec2net.targets import resolve

    eni = e._wait(MAC1)
    target = resolve(e.want(eni, None), kernel.snapshot())
    assert target.plan is not None and target.link is not None
    inp = RenderInput(target.plan, target.link, eni, False)
    route = "".join(ifcfg.render(inp).values())
    assert "local 10.0.2.64/28 dev eth1 table local proto 236" in route
    assert "Type=local\n" in "".join(networkd.render(inp).values())
    assert "type=local" in "".join(nm.render(inp).values())
    assert ipaddress.ip_network("10.0.2.64/28") in {r.dst for r in target.plan.routes}
