"""cloud-init's own policy routing of a secondary ENI (cloud-init >= 24.1 rendering
through netplan into networkd), replayed in the simulated VPC: where ec2net's drop-in
keeps cloud-init to the primary, ec2net takes the ENI over without being asked and
without a failed probe, deletes cloud-init's rules and table routes once its own are
in, and leaves any other program's table alone; without the drop-in (cloud-init would
configure the ENI again) it leaves the ENI to cloud-init and says so.

The replay is what networkd makes of cloud-init's netplan configuration for the ENI
(measured on the trixie-netplan guest, tests/system/test_cloud_init.py): the DHCP
address with its lease, the secondaries with the subnet's length, a default route via
the DHCP router and the subnet routes in table 100 + index (index: the NIC's place in
(card, device) order; 101 here), one `from ADDR lookup 101` rule per address at the
priority the kernel picks (protocol static), and the DHCP routes in main with metric
(index + 1) * 100.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ec2net.cloudinit import DROPIN, DROPIN_TEXT
from ec2sim.probe import ProbeLoop
from ec2sim.world import Eni
from tests.world.conftest import Instance
from tests.world.test_foreign import LEASE, SECOND, addrs, answering, report

pytestmark = pytest.mark.world

CI_TABLE = "101"
GW4 = "10.0.2.1"


def replay_cloud_init(inst: Instance, eni: Eni) -> None:
    inst.ip("link", "set", "eth1", "up")
    first, *rest = eni.ipv4s
    inst.ip("addr", "add", f"{first}/24", "dev", "eth1", *LEASE)
    for a in rest:
        inst.ip("addr", "add", f"{a}/24", "dev", "eth1")
    for a6 in eni.ipv6s:
        inst.ip("-6", "addr", "add", f"{a6}/128", "dev", "eth1", "nodad", *LEASE)
    t = CI_TABLE
    inst.ip("route", "add", "default", "via", GW4, "dev", "eth1", "metric", "200", "proto", "dhcp")
    inst.ip("route", "add", "default", "via", GW4, "dev", "eth1", "table", t, "proto", "static")
    inst.ip("route", "add", "10.0.2.0/24", "dev", "eth1", "scope", "link", "table", t,
            "proto", "static")  # fmt: skip
    inst.ip("-6", "route", "add", "2600:1f16:292:2::/64", "dev", "eth1", "table", t,
            "proto", "static")  # fmt: skip
    for a in eni.ipv4s:
        inst.ip("rule", "add", "from", str(a), "lookup", t, "proto", "static")
    for a6 in eni.ipv6s:
        inst.ip("-6", "rule", "add", "from", str(a6), "lookup", t, "proto", "static")


def cloud_init_state(inst: Instance) -> list[str]:
    out = []
    for fam in ("-4", "-6"):
        out += inst.ip(fam, "route", "show", "table", CI_TABLE).splitlines()
        out += [ln for ln in inst.ip(fam, "rule").splitlines() if f"lookup {CI_TABLE}" in ln]
    return out


@pytest.fixture
def inst(instance: Instance, tmp_path: Path) -> Instance:
    """files_root holds ec2net's drop-in for cloud-init, as the packages install it."""
    root = tmp_path / "root"
    (root / DROPIN.parent.relative_to("/")).mkdir(parents=True)
    (root / DROPIN.relative_to("/")).write_text(DROPIN_TEXT)
    instance.write_config(backend={"name": "netlink", "files_root": str(root)})
    return instance


def test_without_the_drop_in_the_eni_is_left_to_cloud_init(instance: Instance) -> None:
    eni = instance.fabric.attach(SECOND, "eth1")
    replay_cloud_init(instance, eni)
    before = cloud_init_state(instance)
    up = instance.ec2net("up", "eth1", check=False)
    assert up.returncode == 2 and "by their shape cloud-init's" in up.stderr, up.stderr
    assert cloud_init_state(instance) == before
    [row] = json.loads(instance.ec2net("status", "--json").stdout)
    assert row["state"] == "foreign" and row["foreign_tool"] == "cloud-init", row
    # asked to, it takes the ENI over all the same
    instance.ec2net("up", "--take-over", "eth1")
    assert cloud_init_state(instance) == []
    assert answering(instance, eni) == addrs(eni)


def test_cloud_init_eni_taken_over_without_a_failed_probe(inst: Instance) -> None:
    eni = inst.fabric.attach(SECOND, "eth1")
    replay_cloud_init(inst, eni)
    # a user's table in the same range: never cloud-init's
    inst.ip("rule", "add", "pref", "900", "from", "192.168.77.0/24", "lookup", "200")
    inst.ip("route", "add", "192.168.77.0/24", "dev", "lo", "table", "200")
    # cloud-init's own routing: every IPv4 answers; its table has no IPv6 default route
    # (no DHCP exchange gives one), so the IPv6 address does not answer another subnet
    v4 = [str(a) for a in eni.ipv4s]
    assert answering(inst, eni) == v4
    assert len(cloud_init_state(inst)) == 3 + 4
    with ProbeLoop(inst.fabric.client_ns, v4, inst.fabric.echo_port) as probes:
        up = inst.ec2net("up", "eth1")  # no --take-over: cloud-init's ENIs are taken over
    report("up over cloud-init's objects", probes)
    assert probes.failures() == {}, (probes.failed, probes.longest_gap)
    assert "taking over from cloud-init" in up.stderr, up.stderr
    assert "del theirs rule" in up.stdout and "lookup 101" in up.stdout, up.stdout
    assert cloud_init_state(inst) == []
    assert answering(inst, eni) == addrs(eni)  # the IPv6 address too, now
    assert "from 192.168.77.0/24 lookup 200" in inst.ip("rule")
    assert "192.168.77.0/24 dev lo" in inst.ip("route", "show", "table", "200")
    [row] = json.loads(inst.ec2net("status", "--json").stdout)
    assert row["state"] == "ok" and row["owned_addresses"] == len(addrs(eni)), row
    assert answering(inst, eni) == addrs(eni)
    # the leased and static addresses are ec2net's now: a secondary unassigned in IMDS
    # leaves the guest (cloud-init would have kept it until the next render)
    gone = eni.ipv4s[-1]
    inst.fabric.unassign(SECOND, gone)
    inst.ec2net("refresh")
    assert f"{gone}/" not in inst.ip("addr", "show", "eth1")
    inst.ec2net("down", "eth1")
    assert "scope global" not in inst.ip("addr", "show", "eth1")
    assert "from 192.168.77.0/24 lookup 200" in inst.ip("rule")
