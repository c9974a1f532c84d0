"""Another ENI tool's configuration on an ENI, replayed in the simulated VPC: ec2net
leaves the ENI to it (and says so), takes it over only when asked, and then without a
failed probe; `ec2net migrate` hands over from what amazon-ec2-net-utils 1.x and 2.x
leave behind.

The replays are the kernel objects and files those tools make, as their own scripts
and network-scripts/networkd make them (shapes in src/ec2net/othertools.py): every
address of the ENI answers through the source/destination check before ec2net runs.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from ec2sim.probe import ProbeLoop
from ec2sim.world import Eni
from tests.world.conftest import Instance

pytestmark = pytest.mark.world

SECOND = "02:00:0a:00:02:14"  # default world: subnet-b, 10.0.2.20-22, 2600:1f16:292:2::20
TABLE = 10001  # device-number 1, card 0: the same number in every tool
GW4 = "10.0.2.1"
GW6 = "fe80:ec2::1"
LEASE = ("valid_lft", "3600", "preferred_lft", "3600")  # a DHCP client's address


def addrs(eni: Eni) -> list[str]:
    return [str(a) for a in (*eni.ipv4s, *eni.ipv6s)]


def answering(inst: Instance, eni: Eni) -> list[str]:
    return [a for a in addrs(eni) if inst.reachable(a)]


def replay_2x(inst: Instance, eni: Eni) -> None:
    """What amazon-ec2-net-utils 2.x has networkd make: the DHCP address, secondaries as
    /32, routes in table 10001 and one rule per address at priority 10001 (protocol
    static), and a main-table default route with metric 513."""
    inst.ip("link", "set", "eth1", "up")
    first, *rest = eni.ipv4s
    inst.ip("addr", "add", f"{first}/24", "dev", "eth1", *LEASE)
    for a in rest:
        inst.ip("addr", "add", f"{a}/32", "dev", "eth1", "noprefixroute")
    for a6 in eni.ipv6s:
        inst.ip("-6", "addr", "add", f"{a6}/128", "dev", "eth1", "nodad", *LEASE)
    t = str(TABLE)
    inst.ip("route", "add", "default", "via", GW4, "dev", "eth1", "table", t, "proto", "static")
    inst.ip("route", "add", "10.0.2.0/24", "dev", "eth1", "table", t, "proto", "static")
    inst.ip("route", "add", "default", "via", GW4, "dev", "eth1", "metric", "513", "proto", "dhcp")
    inst.ip("-6", "route", "add", "default", "via", GW6, "dev", "eth1", "table", t,
            "proto", "static")  # fmt: skip
    inst.ip("-6", "route", "add", "2600:1f16:292:2::/64", "dev", "eth1", "table", t,
            "proto", "static")  # fmt: skip
    for a in eni.ipv4s:
        inst.ip("rule", "add", "pref", t, "from", str(a), "lookup", t, "proto", "static")
    for a6 in eni.ipv6s:
        inst.ip("-6", "rule", "add", "pref", t, "from", str(a6), "lookup", t, "proto", "static")


def files_2x(root: Path) -> list[Path]:
    run = root / "run/systemd/network"
    (run / "70-eth1.network.d").mkdir(parents=True)
    (run / "70-eth1.network").symlink_to("/usr/lib/systemd/network/80-ec2.network")
    for name in ("eni.conf", "ec2net_policy_4.conf", "ec2net_alias.conf"):
        (run / "70-eth1.network.d" / name).write_text("[Match]\nMACAddress=" + SECOND + "\n")
    return [run / "70-eth1.network", run / "70-eth1.network.d"]


def replay_1x(inst: Instance, eni: Eni) -> None:
    """What amazon-ec2-net-utils 1.x has network-scripts and dhclient make: the leased
    address, secondaries with the subnet's length, route-eth1's routes (table 10001 and
    a main default with metric 10001, protocol boot), and one rule per address with
    the priority the kernel picks (32765 and down)."""
    inst.ip("link", "set", "eth1", "up")
    first, *rest = eni.ipv4s
    inst.ip("addr", "add", f"{first}/24", "brd", "+", "dev", "eth1", *LEASE)
    for a in rest:
        inst.ip("addr", "add", f"{a}/24", "brd", "+", "dev", "eth1")
    for a6 in eni.ipv6s:
        inst.ip("-6", "addr", "add", f"{a6}/128", "dev", "eth1", "nodad", *LEASE)
    t = str(TABLE)
    inst.ip("route", "add", "default", "via", GW4, "dev", "eth1", "table", t, "proto", "boot")
    inst.ip("route", "add", "10.0.2.0/24", "dev", "eth1", "proto", "kernel", "scope", "link",
            "src", str(first), "table", t)  # fmt: skip
    inst.ip("route", "add", "default", "via", GW4, "dev", "eth1", "metric", t, "proto", "boot")
    inst.ip("-6", "route", "add", "default", "via", GW6, "dev", "eth1", "table", t,
            "proto", "boot")  # fmt: skip
    for a in eni.ipv4s:
        inst.ip("rule", "add", "from", str(a), "lookup", t)
    for a6 in eni.ipv6s:
        inst.ip("-6", "rule", "add", "from", str(a6), "lookup", t)


def files_1x(root: Path, eni: Eni) -> list[Path]:
    scripts = root / "etc/sysconfig/network-scripts"
    scripts.mkdir(parents=True)
    (scripts / "ifcfg-eth1").write_text(
        "DEVICE=eth1\nBOOTPROTO=dhcp\nONBOOT=yes\nPERSISTENT_DHCLIENT=yes\n"
        f"HWADDR={SECOND}\nDEFROUTE=no\nEC2SYNC=yes\nMAINROUTETABLE=yes\n"
    )
    (scripts / "route-eth1").write_text(
        f"default via {GW4} dev eth1 table {TABLE}\n"
        f"10.0.2.0/24 dev eth1 proto kernel scope link src {eni.ipv4s[0]} table {TABLE}\n"
        f"default via {GW4} dev eth1 metric {TABLE}\n"
    )
    (scripts / "route6-eth1").write_text(f"default via {GW6} dev eth1 table {TABLE}\n")
    (root / "etc/dhcp").mkdir(parents=True)
    (root / "etc/dhcp/dhclient-eth1.conf").write_text("timeout 300;\n")
    return [scripts / n for n in ("ifcfg-eth1", "route-eth1", "route6-eth1")] + [
        root / "etc/dhcp/dhclient-eth1.conf"
    ]


def fake_dhclient(root: Path, pid_name: str) -> subprocess.Popen[bytes]:
    """A process that looks like 1.x's dhclient for eth1 (name and argv) and writes its
    pid file where network-scripts keeps it."""
    script = root / "dhclient"
    script.write_text("#!/bin/sh\nwhile :; do sleep 1; done\n")
    script.chmod(0o755)
    proc = subprocess.Popen([str(script), "-pf", f"/var/run/{pid_name}", "eth1"])
    (root / "var/run").mkdir(parents=True, exist_ok=True)
    (root / "var/run" / pid_name).write_text(f"{proc.pid}\n")
    return proc


def eni_table(inst: Instance) -> dict[str, list[str]]:
    """Everything in table 10001 and every rule into it, any protocol."""
    out = {}
    for fam in ("-4", "-6"):
        out[f"routes{fam}"] = inst.ip(fam, "route", "show", "table", str(TABLE)).splitlines()
        rules = inst.ip(fam, "rule", "show").splitlines()
        out[f"rules{fam}"] = [ln for ln in rules if f"lookup {TABLE}" in ln]
    return out


def report(what: str, probes: ProbeLoop) -> None:
    """The figures of a switch (printed, never asserted: timing is the machine's)."""
    gaps = ", ".join(f"{a} {g * 1e3:.0f} ms" for a, g in probes.longest_gap.items())
    print(f"\n{what}: {sum(probes.sent.values())} probes, longest gap per address: {gaps}")


def not_ours(state: dict[str, list[str]]) -> list[str]:
    return [ln for lines in state.values() for ln in lines if "proto 236" not in ln]


def status(inst: Instance) -> list[dict[str, object]]:
    rows: list[dict[str, object]] = json.loads(inst.ec2net("status", "--json").stdout)
    return rows


@pytest.fixture
def root(tmp_path: Path) -> Path:
    path = tmp_path / "root"
    path.mkdir()
    return path


@pytest.fixture
def inst(instance: Instance, root: Path) -> Instance:
    instance.write_config(backend={"name": "netlink", "files_root": str(root)})
    return instance


def test_an_eni_of_amazon_ec2_net_utils_2x_is_left_alone(inst: Instance, root: Path) -> None:
    eni = inst.fabric.attach(SECOND, "eth1")
    replay_2x(inst, eni)
    files_2x(root)
    assert answering(inst, eni) == addrs(eni)  # their configuration works
    before = eni_table(inst), inst.ip("-br", "addr", "show", "eth1")  # no lifetimes
    up = inst.ec2net("up", "eth1", check=False)
    assert up.returncode == 2, up.stderr
    for words in ("table 10001 holds 4 rules and 4 routes", "amazon-ec2-net-utils 2.x",
                  "rule pref 10001 from 10.0.2.20/32 lookup 10001 proto static",
                  "up --take-over eth1"):  # fmt: skip
        assert words in up.stderr, up.stderr
    assert (eni_table(inst), inst.ip("-br", "addr", "show", "eth1")) == before  # untouched
    [row] = status(inst)
    assert row["state"] == "foreign" and row["interface"] == "eth1"
    assert "amazon-ec2-net-utils 2.x" in str(row["foreign_tool"])
    assert any("proto static" in str(x) for x in row["foreign"])  # type: ignore[attr-defined]
    table = inst.ec2net("status").stdout
    assert "eth1: table 10001 is amazon-ec2-net-utils 2.x's; left alone" in table, table
    metrics = inst.ec2net("status", "--format", "prometheus").stdout
    assert 'state="foreign"} 1' in metrics and 'state="ok"} 0' in metrics, metrics
    # a refresh (the daemon's round) looks again and still leaves it alone
    assert inst.ec2net("refresh", check=False).returncode == 2
    assert eni_table(inst) == before[0]
    assert answering(inst, eni) == addrs(eni)
    # gone: the record goes, and nothing of theirs is touched on the way
    assert inst.ec2net("down", "eth1").returncode == 0
    assert eni_table(inst) == before[0] and status(inst) == []


def test_take_over_replaces_them_with_every_address_answering(inst: Instance) -> None:
    eni = inst.fabric.attach(SECOND, "eth1")
    replay_2x(inst, eni)
    with ProbeLoop(inst.fabric.client_ns, addrs(eni), inst.fabric.echo_port) as probes:
        out = inst.ec2net("up", "--take-over", "eth1").stdout
    report("up --take-over from 2.x's objects", probes)
    assert probes.failures() == {}, (probes.failed, probes.longest_gap)
    assert min(probes.sent.values()) > 0
    assert "replace route 0.0.0.0/0 via 10.0.2.1 dev eth1 table 10001" in out, out
    assert "del theirs rule pref 10001 from 10.0.2.20/32 lookup 10001" in out, out
    assert not_ours(eni_table(inst)) == []
    [row] = status(inst)
    assert row["state"] == "ok" and row["owned_addresses"] == len(addrs(eni))
    # the leased addresses are ec2net's now, without the lease's lifetime
    addr = inst.ip("-4", "addr", "show", "eth1")
    assert "valid_lft forever" in addr and "valid_lft 3" not in addr, addr
    assert inst.ec2net("up", "eth1").stdout.strip() == "eth1: unchanged"
    assert answering(inst, eni) == addrs(eni)
    # adopted, so `down` removes them like any address of ec2net's
    inst.ec2net("down", "eth1")
    assert "scope global" not in inst.ip("addr", "show", "eth1")
    assert inst.owned_state()["records"] == ""


def test_objects_that_come_after_ec2net_are_left_as_they_are(inst: Instance) -> None:
    """An ENI that is ec2net's stays ec2net's: a rule another program adds into its
    table later is neither removed nor a reason to drop the ENI (and status says so)."""
    eni = inst.fabric.attach(SECOND, "eth1")
    inst.ec2net("up", "eth1")
    inst.ip("rule", "add", "pref", "500", "fwmark", "0x10", "lookup", str(TABLE))
    res = inst.ec2net("refresh")
    assert "objects ec2net did not create" in res.stderr, res.stderr
    assert "fwmark 0x10 lookup 10001" in inst.ip("rule", "show")
    [row] = status(inst)
    assert row["state"] == "ok" and row["foreign"], row
    assert "also holds another program's" in inst.ec2net("status").stdout
    assert answering(inst, eni) == addrs(eni)
    inst.ec2net("down", "eth1")
    assert "fwmark 0x10 lookup 10001" in inst.ip("rule", "show")


def test_scan_configures_the_others_and_reports_the_foreign_one(inst: Instance) -> None:
    f = inst.fabric
    eni = f.attach(SECOND, "eth1")
    other = f.attach(f.new_eni("subnet-a", n_ipv4=2, n_ipv6=1), "eth2")
    replay_2x(inst, eni)
    scan = inst.ec2net("scan", check=False)
    assert scan.returncode == 2 and "table 10001" in scan.stderr, scan.stderr
    assert answering(inst, other) == addrs(other)
    assert {r["interface"]: r["state"] for r in status(inst)} == {"eth1": "foreign", "eth2": "ok"}
    with ProbeLoop(f.client_ns, addrs(eni) + addrs(other), f.echo_port) as probes:
        inst.ec2net("scan", "--take-over")
    assert probes.failures() == {}
    assert {r["state"] for r in status(inst)} == {"ok"}


def test_migrate_from_2x(inst: Instance, root: Path) -> None:
    f = inst.fabric
    eni = f.attach(SECOND, "eth1")
    replay_2x(inst, eni)
    theirs = files_2x(root)
    dry = inst.ec2net("migrate", "--dry-run").stdout
    assert "eth1: amazon-ec2-net-utils 2.x: " in dry and all(
        p.is_symlink() or p.exists() for p in theirs
    )
    with ProbeLoop(f.client_ns, addrs(eni), f.echo_port) as probes:
        out = inst.ec2net("migrate").stdout
    report("migrate from 2.x", probes)
    assert probes.failures() == {}, (probes.failed, probes.longest_gap)
    assert "eth1: ec2net's now (table 10001)" in out, out
    assert not any(p.is_symlink() or p.exists() for p in theirs), out
    assert not_ours(eni_table(inst)) == []
    assert [r["state"] for r in status(inst)] == ["ok"]
    assert answering(inst, eni) == addrs(eni)
    # once more: nothing left to hand over
    assert "nothing left by amazon-ec2-net-utils" in inst.ec2net("migrate").stdout


def test_migrate_from_1x(inst: Instance, root: Path) -> None:
    f = inst.fabric
    eni = f.attach(SECOND, "eth1")
    replay_1x(inst, eni)
    theirs = files_1x(root, eni)
    dhclient = fake_dhclient(root, "dhclient-eth1.pid")
    try:
        assert answering(inst, eni) == addrs(eni)
        rules = [ln for ln in inst.ip("rule", "show").splitlines() if "lookup 10001" in ln]
        assert rules and all(ln.startswith("3276") for ln in rules), rules  # kernel-numbered
        up = inst.ec2net("up", "eth1", check=False)
        assert up.returncode == 2 and "amazon-ec2-net-utils 1.x" in up.stderr, up.stderr
        with ProbeLoop(f.client_ns, addrs(eni), f.echo_port) as probes:
            out = inst.ec2net("migrate").stdout
        report("migrate from 1.x", probes)
        assert probes.failures() == {}, (probes.failed, probes.longest_gap)
        assert dhclient.wait(timeout=5) == -9  # SIGKILL: its script never ran
        assert "ended amazon-ec2-net-utils 1.x's DHCP client" in out, out
        assert not any(p.exists() for p in theirs), out
        assert not (root / "var/run/dhclient-eth1.pid").exists()
        assert not_ours(eni_table(inst)) == []
        main = inst.ip("route", "show", "table", "main")
        assert f"metric {TABLE}" not in main, main  # route-eth1's main-table default
        assert [r["state"] for r in status(inst)] == ["ok"]
        assert answering(inst, eni) == addrs(eni)
        # detach: nothing of either tool is left
        f.detach(eni)
        inst.ec2net("scan")
        assert inst.owned_state() == {k: "" for k in inst.owned_state()}
        assert [ln for ln in inst.ip("rule", "show").splitlines() if "10001" in ln] == []
    finally:
        if dhclient.poll() is None:
            dhclient.kill()
            dhclient.wait()


def test_python_m_ec2net_migrate_help() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "ec2net", "migrate", "--help"],
        capture_output=True, text=True, check=False,
        env={"PYTHONPATH": str(Path(__file__).resolve().parents[2] / "src")},
    )  # fmt: skip
    assert proc.returncode == 0 and "amazon-ec2-net-utils" in proc.stdout
