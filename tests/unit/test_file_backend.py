"""FileBackend without a kernel: which files it writes, which it reports as changed to
the activator, and which files it takes for its own (pure file work under tmp_path)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Optional, cast

from ec2net.backends import by_name
from ec2net.backends.activators import Activation, Kernel
from ec2net.backends.base import ApplyReport, Intent
from ec2net.backends.files import FileBackend, _owner
from ec2net.backends.netlink import NetlinkBackend
from ec2net.model import ChangeSet, Link
from ec2net.plan import table_for
from tests.unit.test_render import inputs


class Manager:
    """Records what the backend hands the network manager."""

    def __init__(self) -> None:
        self.activations: list[list[Activation]] = []
        self.released: list[Path] = []

    def release(self, paths: Sequence[Path]) -> None:
        self.released += paths

    def activate(
        self, activations: Sequence[Activation], changes: ChangeSet, kernel: Kernel
    ) -> ApplyReport:
        self.activations.append(list(activations))
        return ApplyReport()


class NoKernel:
    managed = False

    def __init__(self, links: list[Link]) -> None:
        self._links = links

    def links(self) -> list[Link]:
        return self._links

    def present(self, index: int) -> bool:
        return any(ln.index == index for ln in self._links)


def backend(
    tmp_path: Path, links: list[Link], name: str = "networkd"
) -> tuple[FileBackend, Manager]:
    manager = Manager()
    kernel = cast(NetlinkBackend, NoKernel(links))  # only links() and managed are read
    return FileBackend(by_name(name), manager, kernel, root=str(tmp_path)), manager


def intents(scenario: str = "same_subnet_as_primary") -> list[Intent]:
    return [
        Intent(i.plan.mac, i.plan.ifname, table_for(i.eni), i.link, i.plan, i.eni)
        for i in inputs(scenario)
        if not i.eni.is_primary
    ]


def written(manager: Manager) -> dict[str, tuple[str, ...]]:
    return {a.ifname: tuple(p.name for p in a.written) for a in manager.activations[-1]}


def test_only_changed_files_are_activated(tmp_path: Path) -> None:
    wanted = intents()
    fb, manager = backend(tmp_path, [i.link for i in wanted if i.link is not None])
    fb.apply(ChangeSet(()), wanted)
    first = written(manager)
    assert first and all(first.values())
    # new files: the manager has never seen them
    assert all(a.created == a.written for a in manager.activations[-1])
    fb.apply(ChangeSet(()), wanted)
    assert manager.activations[-1] == []  # unchanged: the manager is not disturbed
    path = next(iter(fb.ours()))
    path.write_text(path.read_text() + "# edited\n")
    fb.apply(ChangeSet(()), wanted)
    assert [a.written for a in manager.activations[-1]] == [(path,)]
    assert manager.activations[-1][0].created == ()  # rewritten: the manager has a copy
    assert "# edited" not in path.read_text()


def test_files_keep_the_descriptors_mode(tmp_path: Path) -> None:
    wanted = intents()
    fb, _ = backend(tmp_path, [i.link for i in wanted if i.link is not None], "nm")
    fb.apply(ChangeSet(()), wanted)
    modes = {p.stat().st_mode & 0o777 for p in fb.ours()}
    assert modes == {0o600}


def test_removal_releases_then_deletes(tmp_path: Path) -> None:
    wanted = intents()
    fb, manager = backend(tmp_path, [i.link for i in wanted if i.link is not None])
    fb.apply(ChangeSet(()), wanted)
    ours = sorted(fb.ours())
    gone = [Intent(i.mac, i.ifname, i.table, None, None, None) for i in wanted]
    fb.apply(ChangeSet(()), gone)
    assert sorted(manager.released) == ours and fb.ours() == {}
    assert sorted(p for a in manager.activations[-1] for p in a.removed) == ours


def test_owner_is_decided_by_the_header_alone(tmp_path: Path) -> None:
    mac = "02:00:0a:00:02:14"
    cases: dict[str, Optional[str]] = {
        f"# Managed by ec2net for eni-1 ({mac}); removed on detach\n": mac,
        f"; Managed by ec2net for eni-1 ({mac})\n": mac,  # another comment syntax
        f"# Written by hand, not Managed by ec2net ({mac})\n": None,
        f"DEVICE=eth1\n# Managed by ec2net for eni-1 ({mac})\n": None,  # not first
        "# Managed by ec2net, no MAC\n": None,
    }
    for i, (text, owner) in enumerate(cases.items()):
        path = tmp_path / f"f{i}"
        path.write_text(text)
        assert _owner(path) == owner, text


def test_files_the_manager_failed_to_take_are_activated_again(tmp_path: Path) -> None:
    """ifup (or a reload) fails: the next run must activate again, not find the files
    unchanged and skip the manager."""
    import pytest

    from ec2net.errors import ApplyFailed

    wanted = intents()
    fb, manager = backend(tmp_path, [i.link for i in wanted if i.link is not None], "ifcfg")
    calls = []

    def failing(
        activations: Sequence[Activation], changes: ChangeSet, kernel: Kernel
    ) -> ApplyReport:
        calls.append(list(activations))
        raise ApplyFailed("ifup eth1: exit 1")

    manager.activate = failing  # type: ignore[method-assign]
    with pytest.raises(ApplyFailed):
        fb.apply(ChangeSet(()), wanted)
    assert fb.ours() == {}  # nothing left that would read as "already applied"
    # ... and the manager forgot whatever it read of them: absent file, no copy
    assert sorted(manager.released) == sorted(p for a in calls[0] for p in a.written)
    del manager.activate
    fb.apply(ChangeSet(()), wanted)
    assert {a.ifname for a in manager.activations[-1]} == {a.ifname for a in calls[0]}
    assert all(a.written for a in manager.activations[-1])
