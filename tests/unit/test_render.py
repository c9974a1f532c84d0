"""Renderers: golden files per routing scenario and backend, and every rendered address,
route and rule parsed back into model values and compared with the plan (pure).

Regenerate the goldens after an intended change: UPDATE_GOLDEN=1 pytest tests/unit.
"""

from __future__ import annotations

import configparser
import ipaddress
import os
import subprocess
import sys
from pathlib import Path, PurePosixPath
from typing import Optional

import pytest

from ec2net.backends import file_backends
from ec2net.model import (
    RTPROT_EC2NET,
    TABLE_MAIN,
    AddressSpec,
    Family,
    RouteSpec,
    RuleSpec,
    Scope,
    family_of,
)
from ec2net.plan import families_of
from ec2net.render import Files, Renderer, RenderInput, header, is_ours, networkd, nm
from tests.unit.planning import plan
from tests.unit.test_plan import SCENARIOS

GOLDEN = Path(__file__).parent / "golden" / "render"


def renderers() -> dict[str, Renderer]:
    return {d.name: d.renderer for d in file_backends() if d.renderer is not None}


BACKENDS = sorted(renderers())
DHCP_SCENARIOS = ("ipv6", "other_subnet_secondaries")


def inputs(scenario: str, dhcp: bool = False) -> list[RenderInput]:
    pairs = SCENARIOS[scenario]()
    by_mac = {e.mac: (e, ln) for e, ln in pairs}
    return [
        RenderInput(p, by_mac[p.mac][1], by_mac[p.mac][0], dhcp) for p in plan(pairs).interfaces
    ]


def render_all(backend: str, scenario: str, dhcp: bool = False) -> Files:
    files: Files = {}
    for inp in inputs(scenario, dhcp):
        files.update(renderers()[backend](inp))
    return files


def dump(files: Files) -> str:
    return "\n".join(f"== {path}\n{text}" for path, text in sorted(files.items()))


CASES = [(b, s, False) for b in BACKENDS for s in sorted(SCENARIOS)]
CASES += [("ifcfg", s, True) for s in DHCP_SCENARIOS]


@pytest.mark.parametrize(("backend", "scenario", "dhcp"), CASES)
def test_golden(backend: str, scenario: str, dhcp: bool) -> None:
    got = dump(render_all(backend, scenario, dhcp))
    path = GOLDEN / backend / f"{scenario}{'_dhcp' if dhcp else ''}.txt"
    if os.environ.get("UPDATE_GOLDEN"):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(got)
    assert got == path.read_text()


def test_paths() -> None:
    ifcfg_dir = PurePosixPath("/etc/sysconfig/network-scripts")
    assert set(render_all("ifcfg", "other_subnet_secondaries")) == {
        ifcfg_dir / n for n in ("ifcfg-ens6", "route-ens6", "rule-ens6")
    }
    assert set(render_all("ifcfg", "ipv6")) == {
        ifcfg_dir / f"{kind}-ens6" for kind in ("ifcfg", "route", "route6", "rule", "rule6")
    }
    assert set(render_all("networkd", "same_subnet_as_primary")) == {
        PurePosixPath(f"/run/systemd/network/00-ec2net-{n}.network") for n in ("ens6", "ens7")
    }
    assert set(render_all("nm", "ipv6")) == {
        PurePosixPath("/run/NetworkManager/system-connections/ec2net-ens6.nmconnection")
    }


@pytest.mark.parametrize(("backend", "scenario", "dhcp"), CASES)
def test_every_file_starts_with_the_header(backend: str, scenario: str, dhcp: bool) -> None:
    for inp in inputs(scenario, dhcp):
        for path, text in renderers()[backend](inp).items():
            assert text.startswith(header(inp)), path
            assert is_ours(text) and text.endswith("\n"), path


def test_output_does_not_depend_on_hash_seed() -> None:
    code = (
        "from tests.unit.test_render import CASES, dump, render_all\n"
        "print(''.join(dump(render_all(*c)) for c in CASES))"
    )
    outs = {
        subprocess.run(
            [sys.executable, "-c", code],
            env={**os.environ, "PYTHONHASHSEED": seed, "PYTHONPATH": "src:."},
            cwd=Path(__file__).parents[2],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        for seed in ("1", "2")
    }
    assert len(outs) == 1


# --- parsing the files back ------------------------------------------------------------
# Each format is read back into RouteSpec/RuleSpec/AddressSpec with the defaults its
# manager applies, so a dropped field or a wrong default shows up as a set difference.

FAMILIES = {"ipv4": Family.V4, "ipv6": Family.V6}
SCOPES = {"link": Scope.LINK, "global": Scope.UNIVERSE, "253": Scope.LINK, "0": Scope.UNIVERSE}


def route(
    ifname: str,
    table: str,
    dst: str,
    *,
    gateway: Optional[str] = None,
    scope: Optional[str] = None,
    src: Optional[str] = None,
) -> RouteSpec:
    net = ipaddress.ip_network(dst)
    gw = ipaddress.ip_address(gateway) if gateway else None
    # `ip route`, networkd and NM all default a gateway-less IPv4 route to link scope.
    default = Scope.LINK if net.version == 4 and gw is None else Scope.UNIVERSE
    return RouteSpec(
        int(table),
        net,
        ifname,
        gw,
        SCOPES[scope] if scope else default,
        ipaddress.ip_address(src) if src else None,
    )


def rule(
    family: Family, priority: str, table: str, src: Optional[str], sup: Optional[str]
) -> RuleSpec:
    net = ipaddress.ip_network(src) if src and src != "all" else None
    return RuleSpec(
        int(priority),
        family,
        TABLE_MAIN if table == "main" else int(table),
        net if net is None or net.prefixlen else None,  # 0.0.0.0/0 is "from all"
        int(sup) if sup is not None else None,
    )


def _lines(text: str) -> list[str]:
    return [ln for ln in text.splitlines() if ln.strip() and not ln.startswith("#")]


def _words(line: str) -> dict[str, str]:
    words = line.split()
    return dict(zip(words[::2], words[1::2]))


def _wanted(inp: RenderInput) -> tuple[set[AddressSpec], set[RouteSpec], set[RuleSpec]]:
    return set(inp.plan.addresses), set(inp.plan.routes), set(inp.plan.rules)


@pytest.mark.parametrize(("scenario", "dhcp"), [(s, d) for s in SCENARIOS for d in (0, 1)])
def test_ifcfg_gives_the_planned_objects(scenario: str, dhcp: bool) -> None:
    for inp in inputs(scenario, dhcp):
        files = {p.name: t for p, t in renderers()["ifcfg"](inp).items()}
        name = inp.plan.ifname
        routes: set[RouteSpec] = set()
        rules: set[RuleSpec] = set()
        for family, six in ((Family.V4, ""), (Family.V6, "6")):
            parsed = []
            for line in _lines(files.get(f"route{six}-{name}", "")):
                dst, *rest = line.replace("default", "0.0.0.0/0" if not six else "::/0").split()
                kv = _words(" ".join(rest))
                assert kv["proto"] == str(RTPROT_EC2NET)
                gw, scope, src = kv.get("via"), kv.get("scope"), kv.get("src")
                parsed.append(route(kv["dev"], kv["table"], dst, gateway=gw, scope=scope, src=src))
            assert sorted(parsed, key=lambda r: r.gateway is not None) == parsed  # on-link first
            routes |= set(parsed)
            for line in _lines(files.get(f"rule{six}-{name}", "")):
                kv = _words(line)
                assert kv["protocol"] == str(RTPROT_EC2NET)
                sup = kv.get("suppress_prefixlength")
                rules.add(rule(family, kv["priority"], kv["lookup"], kv["from"], sup))

        cfg = dict(ln.split("=", 1) for ln in _lines(files[f"ifcfg-{name}"]))
        assert cfg["HWADDR"].lower() == inp.plan.mac and cfg["EC2SYNC"] == "yes"
        assert cfg["BOOTPROTO"] == ("dhcp" if dhcp else "none")
        ips = [f"{v}/{cfg['PREFIX' + k[6:]]}" for k, v in cfg.items() if k.startswith("IPADDR")]
        ips += [cfg["IPV6ADDR"]] if "IPV6ADDR" in cfg else []
        ips += cfg.get("IPV6ADDR_SECONDARIES", "").strip('"').split()
        addresses = {AddressSpec(name, ipaddress.ip_interface(a)) for a in ips}
        want, want_routes, want_rules = _wanted(inp)
        if dhcp:  # the primary IPv4 comes from dhclient
            want = {a for a in want if a.address.ip != inp.eni.ipv4s[0]}
        else:  # the only way network-scripts adds an IPv4 address without prefix route
            assert cfg.get("SCOPE") == ("noprefixroute" if ips else None)
        assert (addresses, routes, rules) == (want, want_routes, want_rules)


def _sections(text: str) -> list[tuple[str, dict[str, str]]]:
    out: list[tuple[str, dict[str, str]]] = []
    for ln in _lines(text):
        if ln.startswith("["):
            out.append((ln.strip("[]"), {}))
        else:
            key, _, value = ln.partition("=")
            assert key not in out[-1][1], f"{key} twice in one section"
            out[-1][1][key] = value
    return out


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_networkd_gives_the_planned_objects(scenario: str) -> None:
    for inp in inputs(scenario):
        name = inp.plan.ifname
        (text,) = networkd.render(inp).values()
        sections = _sections(text)
        assert sections[0] == ("Match", {"MACAddress": inp.plan.mac})
        has_v6 = Family.V6 in families_of([inp.plan])
        assert dict(sections)["Network"]["LinkLocalAddressing"] == ("ipv6" if has_v6 else "no")
        addresses, routes, rules = set(), set(), set()
        for kind, kv in sections:
            if kind == "Address":
                assert kv["AddPrefixRoute"] == "no"
                addresses.add(AddressSpec(name, ipaddress.ip_interface(kv["Address"])))
            elif kind == "Route":
                assert kv["Protocol"] == str(RTPROT_EC2NET)
                assert ("Gateway" in kv) == (kv.get("GatewayOnLink") == "yes")
                gw, scope, src = kv.get("Gateway"), kv.get("Scope"), kv.get("PreferredSource")
                dst = kv["Destination"]
                routes.add(route(name, kv["Table"], dst, gateway=gw, scope=scope, src=src))
            elif kind == "RoutingPolicyRule":
                frm, sup = kv.get("From"), kv.get("SuppressPrefixLength")
                fam = family_of(ipaddress.ip_network(frm)) if frm else FAMILIES[kv["Family"]]
                rules.add(rule(fam, kv["Priority"], kv["Table"], frm, sup))
        assert (addresses, routes, rules) == _wanted(inp)


def _numbered(section: configparser.SectionProxy, key: str) -> list[str]:
    """Values of key1, key2, ... up to the first gap."""
    out: list[str] = []
    while f"{key}{len(out) + 1}" in section:
        out.append(section[f"{key}{len(out) + 1}"])
    return out


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_nm_gives_the_planned_objects(scenario: str) -> None:
    for inp in inputs(scenario):
        name = inp.plan.ifname
        (text,) = nm.render(inp).values()
        ini = configparser.ConfigParser(interpolation=None)
        ini.optionxform = str  # type: ignore[assignment,method-assign]
        ini.read_string(text)
        assert ini["connection"]["uuid"] == nm.connection_uuid(inp.plan.mac)
        assert ini["ethernet"]["mac-address"].lower() == inp.plan.mac
        addresses, routes, rules = set(), set(), set()
        for family, s in ((Family.V4, ini["ipv4"]), (Family.V6, ini["ipv6"])):
            if s["method"] == "disabled":
                assert family not in families_of([inp.plan])
                continue
            assert s["route-table"] == str(inp.plan.table) and s["never-default"] == "true"
            addresses |= {
                AddressSpec(name, ipaddress.ip_interface(a)) for a in _numbered(s, "address")
            }
            for n, value in enumerate(_numbered(s, "route"), 1):
                dst, _, gw = value.partition(",")
                opts = dict(o.split("=") for o in s[f"route{n}_options"].split(","))
                assert bool(gw) == (opts.get("onlink") == "true")
                scope, src = opts.get("scope"), opts.get("src")
                routes.add(route(name, opts["table"], dst, gateway=gw, scope=scope, src=src))
            for value in _numbered(s, "routing-rule"):
                kv = _words(value)
                sup = kv.get("suppress_prefixlength")
                rules.add(rule(family, kv["priority"], kv["table"], kv["from"], sup))
        assert (addresses, routes, rules) == _wanted(inp)


def test_nm_uuid_is_stable_per_mac() -> None:
    assert nm.connection_uuid("02:00:00:00:02:14") == nm.connection_uuid("02:00:00:00:02:14")
    assert nm.connection_uuid("02:00:00:00:02:14") != nm.connection_uuid("02:00:00:00:02:15")
