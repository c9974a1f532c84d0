"""`backend.name = auto`: which manager owns the links, from process names and files."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from ec2net import backend_names, backends, config
from ec2net.backend_names import BackendName
from ec2net.backends import (
    DESCRIPTORS,
    NAMES,
    NETWORK_SCRIPTS,
    Facts,
    by_name,
    choose,
    file_backends,
    gather_facts,
    open_backend,
)
from ec2net.backends.files import FileBackend
from ec2net.cli import build_parser
from ec2net.errors import ConfigError
from ec2net.manpage import verbs


@pytest.mark.parametrize(
    ("running", "scripts", "expected"),
    [
        ({"NetworkManager", "systemd-network"}, True, "nm"),
        ({"NetworkManager"}, True, "nm"),  # RHEL 8: NM reads ifcfg itself
        ({"systemd-network", "sshd"}, False, "networkd"),
        ({"systemd-network"}, True, "networkd"),
        ({"sshd"}, True, "ifcfg"),
        (set(), False, "netlink"),
    ],
)
def test_choose(running: set[str], scripts: bool, expected: str) -> None:
    assert choose(Facts(frozenset(running), scripts)) == expected


def test_gather_facts_reads_proc_and_root(tmp_path: Path) -> None:
    proc = tmp_path / "proc"
    for pid, comm in (("1", "systemd"), ("420", "systemd-network"), ("self", "x")):
        (proc / pid).mkdir(parents=True)
        (proc / pid / "comm").write_text(comm + "\n")
    (proc / "999").mkdir()  # a process that ended: no comm
    root = tmp_path / "root"
    facts = gather_facts(proc, root)
    assert facts == Facts(frozenset({"systemd", "systemd-network"}), False)
    script = root / NETWORK_SCRIPTS.lstrip("/")
    script.parent.mkdir(parents=True)
    script.write_text("")
    assert gather_facts(proc, root).network_scripts


# --- one descriptor per backend: everything else reads it ---------------------------


def test_file_backends_are_complete() -> None:
    """Each file backend has what opening and `render` need, and writes only into its
    own directories."""
    from tests.unit.test_render import inputs

    assert {d.name for d in file_backends()} == {"ifcfg", "networkd", "nm"}
    for desc in file_backends():
        assert desc.renderer is not None and desc.activator is not None and desc.dirs
        for inp in inputs("ipv6"):
            for path in desc.renderer(inp):
                assert path.parent in desc.dirs, (desc.name, path)


def test_netlink_is_always_available_and_lowest() -> None:
    netlink = by_name("netlink")
    assert netlink.available(Facts(frozenset(), False)) and not netlink.writes_files
    assert netlink.priority < min(d.priority for d in file_backends())
    assert len(set(NAMES)) == len(NAMES) == len(DESCRIPTORS)


def test_config_and_cli_take_the_descriptors_names() -> None:
    for name in ("auto", *NAMES):
        assert config.parse({"backend": {"name": name}}, "x.toml") == {"backend": name}
    with pytest.raises(ConfigError, match=r"backend\.name.*must be one of auto, nm"):
        config.parse({"backend": {"name": "wicked"}}, "x.toml")
    doc = next(f.doc for f in config.SCHEMA if (f.section, f.key) == ("backend", "name"))
    assert all(f"{d.name} ({d.title})" in doc for d in DESCRIPTORS)
    render = verbs(build_parser())["render"]
    choices = next(a.choices for a in render._actions if a.dest == "backend")
    assert list(choices or ()) == [d.name for d in file_backends()]


def test_the_names_config_reads_are_the_registrys() -> None:
    """config.py reads backend_names (it cannot import the registry): the same list."""
    assert tuple(d.known for d in DESCRIPTORS) == backend_names.ALL


def test_a_new_backend_is_one_entry(monkeypatch: pytest.MonkeyPatch) -> None:
    """Config validation, the CLI and auto-detection follow a new entry by themselves."""
    ifcfg = by_name("ifcfg")
    wicked = BackendName("wicked", "SUSE wicked")
    new = replace(ifcfg, known=wicked, priority=40, available=lambda f: "wickedd" in f.running)
    monkeypatch.setattr(backends, "DESCRIPTORS", (*DESCRIPTORS, new))
    monkeypatch.setattr(backend_names, "ALL", (*backend_names.ALL, wicked))
    assert config.parse({"backend": {"name": "wicked"}}, "x.toml") == {"backend": "wicked"}
    assert choose(Facts(frozenset({"wickedd", "NetworkManager"}), False)) == "wicked"
    assert choose(Facts(frozenset({"NetworkManager"}), False)) == "nm"
    render = verbs(build_parser())["render"]
    assert "wicked" in next(a.choices or () for a in render._actions if a.dest == "backend")


@pytest.mark.parametrize("name", NAMES)
def test_open_backend_carries_the_descriptor(tmp_path: Path, name: str) -> None:
    desc = by_name(name)
    settings = config.Settings(backend=name, files_root=str(tmp_path), settle_timeout=7.0)
    backend = open_backend(settings)
    try:
        assert backend.name == name
        assert backend.primary_ok is desc.primary_ok
        assert backend.settle_timeout == (7.0 if desc.settles else 0.0)
        assert backend.adds_own_objects is desc.adds_own_objects
        if desc.writes_files:
            assert isinstance(backend, FileBackend)
            assert backend.kernel.managed is desc.adds_own_objects
    finally:
        backend.close()


def test_unknown_backend_at_open_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"backend\.name"):
        open_backend(config.Settings(backend="wicked"))
