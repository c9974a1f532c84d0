"""Interface names per manager: what each file backend can take, how it refuses the
rest (exit 2, before anything is written), and that a dot or dash renders cleanly."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from ec2net.backends import by_name, file_backends
from ec2net.backends.base import Intent
from ec2net.errors import UnsupportedInterfaceName, exit_code
from ec2net.model import ChangeSet
from ec2net.plan import table_for
from ec2net.render import RenderInput
from tests.unit.planning import plan
from tests.unit.test_file_backend import backend
from tests.unit.test_plan import SCENARIOS

ALL = {"ifcfg", "networkd", "nm"}
NAMES = {
    "eth1": ALL,
    "ens6.100": ALL,  # network-scripts treats a dot as a VLAN only with VLAN=yes
    "eth-1": ALL,
    "a_b": ALL,
    "x" * 15: ALL,
    "x;y": {"networkd", "nm"},
    "$x": {"networkd", "nm"},
    "a(b": {"networkd", "nm"},
    "a'b": {"networkd", "nm"},
    'a"b': {"networkd", "nm"},
    "-eth": {"networkd", "nm"},  # ifup -eth would read an option
    ".eth": {"networkd", "nm"},
    "eth0.bak": {"networkd", "nm"},  # initscripts skips ifcfg-*.bak
    "a\\b": {"networkd"},  # keyfiles and nmcli -t escape backslashes
    "\u00e9th": {"networkd"},
    "x" * 16: set(),  # longer than IFNAMSIZ - 1
    "a/b": set(),
    "a:b": set(),
    "a b": set(),
    "": set(),
    "..": set(),
}


@pytest.mark.parametrize("name", sorted(NAMES))
def test_which_backend_takes_which_name(name: str) -> None:
    took = {d.name for d in file_backends() if d.name_problem(name) is None}
    assert took == NAMES[name]


def test_the_refusal_is_permanent_and_says_why() -> None:
    with pytest.raises(UnsupportedInterfaceName) as err:
        by_name("ifcfg").check_name("eth;1")
    assert exit_code(err.value) == 2 and not err.value.retryable
    assert str(err.value).startswith("eth;1: backend ifcfg cannot configure")
    assert "network-scripts" in str(err.value) and "interfaces.exclude_names" in str(err.value)


def test_blocked_refuses_and_apply_writes_nothing(tmp_path: Path) -> None:
    two = SCENARIOS["same_subnet_as_primary"]()  # ens6 and ens7
    pairs = [(e, replace(ln, name={"ens6": "eth2", "ens7": "eth;1"}[ln.name])) for e, ln in two]
    fb, manager = backend(tmp_path, [ln for _, ln in pairs], "ifcfg")
    with pytest.raises(UnsupportedInterfaceName):
        fb.blocked("eth;1")
    assert fb.blocked("eth2") is None
    by_mac = {e.mac: (e, ln) for e, ln in pairs}
    intents = [
        Intent(p.mac, p.ifname, table_for(by_mac[p.mac][0]), by_mac[p.mac][1], p, by_mac[p.mac][0])
        for p in plan(pairs).interfaces
    ]
    assert {i.ifname for i in intents} == {"eth2", "eth;1"}
    with pytest.raises(UnsupportedInterfaceName):
        fb.apply(ChangeSet(()), intents)
    assert list(tmp_path.rglob("*")) == [] and manager.activations == []


@pytest.mark.parametrize("name", ["ens6.100", "eth-1"])
@pytest.mark.parametrize("backend_name", sorted(ALL))
def test_a_dot_or_dash_renders_like_any_name(backend_name: str, name: str) -> None:
    """Renamed, the files are the same but for the name: nothing is quoted or mangled."""
    render = by_name(backend_name).renderer
    assert render is not None

    def files(ifname: str) -> dict[str, str]:
        pairs = [(e, replace(ln, name=ifname)) for e, ln in SCENARIOS["ipv6"]()]
        out: dict[str, str] = {}
        for p in plan(pairs).interfaces:
            eni, link = pairs[0]
            out.update({str(k): v for k, v in render(RenderInput(p, link, eni)).items()})
        return out

    plain = files("ens6")
    renamed = files(name)
    assert renamed == {k.replace("ens6", name): v.replace("ens6", name) for k, v in plain.items()}
    assert all(name in path for path in renamed)
