"""File backends driven by the engine in the simulated VPC.

Only the ifcfg backend can run here (its activator applies over netlink what the files
say; networkd and NetworkManager need their daemons, proved in the system tier). What
is proved: `up` writes the network-scripts files and the addresses are reachable
through the check; files are ours only (a user's EC2SYNC=no file is honoured, never
touched); nothing stale survives `down`, detach + `scan`, or an ENI re-using a name.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import pytest

from ec2net.backend_names import BackendName
from ec2net.backends import by_name
from ec2net.backends.activators import Activation, Kernel
from ec2net.backends.base import ApplyReport
from ec2net.backends.files import FileBackend
from ec2net.backends.netlink import NetlinkBackend
from ec2net.config import load
from ec2net.engine import Engine
from ec2net.imds import ImdsClient
from ec2net.model import ChangeSet, Op
from ec2net.state import Store
from ec2sim.netns import run_in_netns
from ec2sim.world import Eni
from tests.world.conftest import Instance
from tests.world.test_foreign import replay_2x

pytestmark = pytest.mark.world

SECOND = "02:00:0a:00:02:14"
SCRIPTS = "etc/sysconfig/network-scripts"


@pytest.fixture
def ifcfg(instance: Instance, tmp_path: Path) -> Instance:
    root = tmp_path / "root"
    instance.write_config(backend={"name": "ifcfg", "files_root": str(root)})
    return instance


def scripts(inst: Instance) -> Path:
    return inst.config.parent / "root" / SCRIPTS


def files(inst: Instance) -> set[str]:
    d = scripts(inst)
    return {p.name for p in d.iterdir()} if d.exists() else set()


def reachable_all(inst: Instance, eni: Eni) -> list[str]:
    return [str(a) for a in (*eni.ipv4s, *eni.ipv6s) if not inst.reachable(str(a))]


def test_up_writes_files_and_routes(ifcfg: Instance) -> None:
    f = ifcfg.fabric
    empty = ifcfg.owned_state()
    eni = f.attach(SECOND, "eth1")
    ifcfg.ec2net("up", "eth1")
    assert reachable_all(ifcfg, eni) == []
    assert {"ifcfg-eth1", "route-eth1", "rule-eth1"} <= files(ifcfg)
    text = (scripts(ifcfg) / "ifcfg-eth1").read_text()
    assert text.startswith("# Managed by ec2net") and eni.mac in text.splitlines()[0]
    again = ifcfg.ec2net("up", "eth1")
    assert again.stdout.strip() == "eth1: unchanged", again.stdout
    ifcfg.ec2net("down", "eth1")
    assert files(ifcfg) == set()
    assert ifcfg.owned_state() == empty


def test_users_own_file_is_left_alone(ifcfg: Instance) -> None:
    f = ifcfg.fabric
    empty = ifcfg.owned_state()
    f.attach(SECOND, "eth1")
    scripts(ifcfg).mkdir(parents=True)
    mine = "DEVICE=eth1\nBOOTPROTO=dhcp\nEC2SYNC=no\n"
    (scripts(ifcfg) / "ifcfg-eth1").write_text(mine)
    out = ifcfg.ec2net("up", "eth1")
    assert "skipped" in out.stdout and "EC2SYNC=no" in out.stdout, out.stdout
    assert (scripts(ifcfg) / "ifcfg-eth1").read_text() == mine
    assert files(ifcfg) == {"ifcfg-eth1"}
    assert ifcfg.owned_state() == empty


def test_detach_scan_and_name_reuse_leave_nothing_stale(ifcfg: Instance) -> None:
    f = ifcfg.fabric
    first = f.attach(SECOND, "eth1")
    ifcfg.ec2net("up", "eth1")
    f.detach(first)
    # Another ENI arrives under the same name before anyone cleaned up.
    other = f.attach(f.new_eni("subnet-b", n_ipv4=2, n_ipv6=0), "eth1")
    ifcfg.ec2net("scan")
    assert reachable_all(ifcfg, other) == []
    text = (scripts(ifcfg) / "ifcfg-eth1").read_text()
    assert other.mac in text and first.mac not in text
    assert "route6-eth1" not in files(ifcfg)  # the first ENI's IPv6 files are gone
    f.detach(other)
    ifcfg.ec2net("scan")
    assert files(ifcfg) == set()


def test_orphan_files_of_ours_are_removed(ifcfg: Instance) -> None:
    d = scripts(ifcfg)
    d.mkdir(parents=True)
    orphan = d / "ifcfg-eth7"
    orphan.write_text("# Managed by ec2net for eni-0dead (02:00:00:00:de:ad); removed\n")
    foreign = d / "ifcfg-eth8"
    foreign.write_text("DEVICE=eth8\n")
    f = ifcfg.fabric
    f.attach(SECOND, "eth1")
    ifcfg.ec2net("up", "eth1")
    assert not orphan.exists()
    assert foreign.read_text() == "DEVICE=eth8\n"


@pytest.mark.parametrize(
    ("backend", "path", "mode"),
    [
        ("ifcfg", "etc/sysconfig/network-scripts/ifcfg-eth1", 0o644),
        ("networkd", "run/systemd/network/00-ec2net-eth1.network", 0o644),
        ("nm", "run/NetworkManager/system-connections/ec2net-eth1.nmconnection", 0o600),
    ],
)
def test_render_writes_under_root_only(
    instance: Instance, tmp_path: Path, backend: str, path: str, mode: int
) -> None:
    empty = instance.owned_state()
    instance.fabric.attach(SECOND, "eth1")
    root = tmp_path / "review"
    out = instance.ec2net("render", "--backend", backend, "--root", str(root), "eth1")
    target = root / path
    assert str(target) in out.stdout.splitlines(), out.stdout
    assert target.stat().st_mode & 0o777 == mode
    assert SECOND in target.read_text().splitlines()[0]
    # Review only: nothing configured.
    assert instance.owned_state() == empty
    printed = instance.ec2net("render", "--backend", backend, "eth1")
    assert f"==> /{path} <==" in printed.stdout


class ForeignProtocolManager:
    """Stands in for networkd or NetworkManager: applies the additions with its own
    protocol (`static`), as they do, and never removes anything, like networkd once
    our .network file is gone (its rules turn foreign and are kept)."""

    def __init__(self, inst: Instance) -> None:
        self.inst = inst

    def release(self, paths: Sequence[Path]) -> None:
        return None

    def activate(
        self, activations: Sequence[Activation], changes: ChangeSet, kernel: Kernel
    ) -> ApplyReport:
        for change in changes.changes:
            if change.op is not Op.ADD:
                continue
            obj = change.obj
            words = str(obj).split()
            six = words[0] == "-6"
            words = words[1:] if six else words
            kind, rest = words[0], words[1:]
            if kind == "address":
                cmd = ["addr", "add", *rest]
            elif kind == "route":
                cmd = ["route", "add", *rest, "proto", "static"]
            else:
                cmd = ["rule", "add", *rest, "protocol", "static"]
            self.inst.ip(*(["-6"] if six else []), *cmd)
        return ApplyReport(applied=[c for c in changes.changes if c.op is Op.ADD])


def test_managed_objects_without_our_protocol_are_removed(
    instance: Instance, tmp_path: Path
) -> None:
    """Under networkd/nm the kernel objects carry the manager's protocol: the engine must
    still see them as the ENI's (by table and priority) and remove them on `down`, and
    nothing else: a foreign rule with the same protocol stays."""
    f = instance.fabric
    eni = f.attach(SECOND, "eth1")
    instance.ip("rule", "add", "pref", "512", "from", "10.0.9.0/24", "lookup", "77",
                "protocol", "static")  # fmt: skip
    before = instance.ip("rule", "show")
    settings = replace(load(instance.env()), settle_timeout=5.0)
    descriptor = replace(by_name("networkd"), known=BackendName("fake-networkd", "a stand-in"))

    def run(verb: str) -> None:
        def body() -> None:
            kernel = NetlinkBackend(managed=True)
            backend = FileBackend(
                descriptor, ForeignProtocolManager(instance), kernel, root=str(tmp_path / "r")
            )
            store = Store(instance.runtime)
            store.ensure()
            imds = ImdsClient((f.imds_url,), timeout=0.5, retries=2)
            engine = Engine(settings, backend, imds, store)
            try:
                engine.up("eth1") if verb == "up" else engine.down("eth1")
            finally:
                backend.close()

        run_in_netns(instance.ns, body)

    run("up")
    assert reachable_all(instance, eni) == []
    rules = instance.ip("rule", "show")
    assert "lookup 10001" in rules and "20001:" in rules
    run("down")
    assert instance.ip("rule", "show") == before
    assert instance.ip("route", "show", "table", "10001") == ""


def test_a_name_network_scripts_cannot_take_exits_2(ifcfg: Instance) -> None:
    empty = ifcfg.owned_state()
    ifcfg.fabric.attach(SECOND, "eth1")
    ifcfg.ip("link", "set", "dev", "eth1", "name", "eth;1")  # still down: renamable
    out = ifcfg.ec2net("up", "eth;1", check=False)
    assert out.returncode == 2, out
    assert "eth;1: backend ifcfg cannot configure an interface with this name" in out.stderr
    assert files(ifcfg) == set()
    assert ifcfg.owned_state() == empty


def test_netlink_takes_any_name_linux_takes(instance: Instance) -> None:
    eni = instance.fabric.attach(SECOND, "eth1")
    odd = "e;$(x)'\"-1.2"
    instance.ip("link", "set", "dev", "eth1", "name", odd)
    instance.ec2net("up", odd)
    assert reachable_all(instance, eni) == []
    instance.ec2net("down", odd)


class SwitchingManager(ForeignProtocolManager):
    """A stand-in for networkd moving a link from another tool's .network file to
    ec2net's: it drops that tool's rules first (they were its own), then adds ours with
    its own protocol, as networkd does."""

    def __init__(self, inst: Instance, theirs: Sequence[str]) -> None:
        super().__init__(inst)
        self.theirs = list(theirs)

    def activate(
        self, activations: Sequence[Activation], changes: ChangeSet, kernel: Kernel
    ) -> ApplyReport:
        for rule in self.theirs:
            six = ":" in rule
            self.inst.ip(*(["-6"] if six else []), "rule", "del", *rule.split())
        self.theirs = []
        plain = []
        for change in changes.changes:
            if change.op is Op.ADD and change.theirs:  # ours in the place of theirs
                words = str(change.obj).split()
                if "route" in words[:2]:  # addresses: their lifetime is the manager's
                    six = words[0] == "-6"
                    rest = words[2:] if six else words[1:]
                    self.inst.ip(*(["-6"] if six else []), "route", "replace", *rest,
                                 "proto", "static")  # fmt: skip
                continue
            plain.append(change)
        return super().activate(activations, ChangeSet(tuple(plain)), kernel)


def test_a_take_over_under_a_manager_releases_theirs_once_ours_are_applied(
    instance: Instance, tmp_path: Path
) -> None:
    """The other tool's rule `pref 10001 from A/32 lookup 10001` and ours for the same
    source (with suppress_prefixlength 0) carry the same protocol under a manager, and a
    delete of theirs names no suppress_prefixlength: once the manager has removed theirs
    itself (networkd does, moving the link to ec2net's file), the kernel would remove
    ours instead. So the releases wait for the manager, and only what is still there is
    released."""
    f = instance.fabric
    eni = f.attach(SECOND, "eth1")
    replay_2x(instance, eni)
    theirs = [f"pref 10001 from {a} lookup 10001 proto static" for a in (*eni.ipv4s, *eni.ipv6s)]
    settings = replace(load(instance.env()), settle_timeout=5.0)
    descriptor = replace(by_name("networkd"), known=BackendName("fake-networkd", "a stand-in"))

    def body() -> None:
        kernel = NetlinkBackend(managed=True)
        manager = SwitchingManager(instance, theirs)
        backend = FileBackend(descriptor, manager, kernel, root=str(tmp_path / "r"))
        store = Store(instance.runtime)
        store.ensure()
        imds = ImdsClient((f.imds_url,), timeout=0.5, retries=2)
        try:
            Engine(settings, backend, imds, store).up("eth1", take_over=True)
        finally:
            backend.close()

    run_in_netns(instance.ns, body)
    rules = instance.ip("rule", "show")
    assert "10001:\tfrom 10.0.2.22 lookup 10001 suppress_prefixlength 0" in rules, rules
    assert reachable_all(instance, eni) == []
