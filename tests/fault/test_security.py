"""Facts for the report's security section, measured rather than claimed: the file
modes ec2net gives its runtime state, and that no code path hands a shell a string."""

from __future__ import annotations

import ast
import stat
from pathlib import Path
from typing import Callable

import pytest

from tests.fault.cells import Cell
from tests.fault.harness import FaultWorld, record

pytestmark = [pytest.mark.world, pytest.mark.fault]

SRC = Path(__file__).resolve().parents[2] / "src" / "ec2net"


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_runtime_file_modes(worlds: Callable[..., FaultWorld]) -> None:
    fw = worlds()
    fw.must("up", "eth1")
    run = fw.runtime
    files = {
        "runtime dir": run,
        "records (enis/*.json)": next((run / "enis").glob("*.json")),
        "IMDS token cache": run / "imds-token",
        "locks (locks/*.lock)": next((run / "locks").glob("*.lock")),
        "instance.json": run / "instance.json",
    }
    problems = []
    for what, path in files.items():
        mode = _mode(path)
        record_mode(what, mode)
        if mode & stat.S_IWOTH or mode & stat.S_IWGRP:
            problems.append(f"{what} {oct(mode)} is writable by others")
    if _mode(files["IMDS token cache"]) & 0o077:
        problems.append(f"the token cache is readable by others: {oct(_mode(run / 'imds-token'))}")
    assert problems == []


def record_mode(what: str, mode: int) -> None:
    record(Cell("modes", what, "up", rc="0", during=oct(mode)).row())


def test_no_shell_built_from_data() -> None:
    """No `shell=True`, os.system, os.popen or *exec* of strings anywhere in ec2net."""
    hits = []
    for path in sorted(SRC.rglob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.keyword) and node.arg == "shell":
                hits.append(f"{path.name}:{node.value.lineno} shell=")
            if (
                isinstance(node, ast.Attribute)
                and node.attr in ("system", "popen", "execl")
                and isinstance(node.value, ast.Name)
                and node.value.id == "os"
            ):
                hits.append(f"{path.name}:{node.lineno} os.{node.attr}")
            if isinstance(node, ast.Name) and node.id in ("eval", "exec"):
                hits.append(f"{path.name}:{node.lineno} {node.id}")
    record(Cell("modes", "shell commands built from data", "-", rc="0",
                during=f"{len(hits)} found").row())  # fmt: skip
    assert hits == []
