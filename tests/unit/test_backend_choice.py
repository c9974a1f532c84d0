"""`backend.name = auto`: which manager owns the links, from process names and files."""

from __future__ import annotations

from pathlib import Path

import pytest

from ec2net.backends import NETWORK_SCRIPTS, Facts, choose, gather_facts


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
