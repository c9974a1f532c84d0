"""The documentation stands alone and matches the code: the README's configuration
table lists every key of the schema with its real default, and every relative link in
the docs resolves inside the repository."""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

import pytest

from ec2net.config import SCHEMA, Settings

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.9/3.10 hosts
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[2]
DOCS = sorted(
    [ROOT / "README.md", ROOT / "ec2sim/README.md", ROOT / "systest/README.md",
     *(ROOT / "docs").glob("*.md")]
)  # fmt: skip
ROW = re.compile(r"^\| `([a-z0-9_]+\.[a-z0-9_]+)` \| (?:`([^|]+)`|unset) \|", re.MULTILINE)


def readme_defaults() -> dict[str, Any]:
    text = (ROOT / "README.md").read_text()
    table = text[text.index("## Configuration") :]
    table = table[: table.index("\n## ")]
    return {
        key: tomllib.loads(f"v = {value}")["v"] if value else None  # "unset": no default
        for key, value in ROW.findall(table)
    }


def test_readme_config_table_lists_every_key_with_its_default() -> None:
    documented = readme_defaults()
    defaults = Settings()
    expected = {}
    for field in SCHEMA:
        value = getattr(defaults, field.attr)
        if field.kind == "mtu_table":
            value = dict(value)
        expected[f"{field.section}.{field.key}"] = (
            list(value) if isinstance(value, tuple) else value
        )
    assert documented == expected


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(doc: Path) -> None:
    links = re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", doc.read_text())
    broken = [link for link in links if not (doc.parent / link).exists()]
    assert broken == []


def test_no_reference_to_documents_outside_the_repository() -> None:
    """Every document a file names is in the repository: a docs/*.md path exists, and
    a bare name is some Markdown file of the tree (notes kept elsewhere are not)."""
    tracked = [
        p
        for p in [*ROOT.glob("*.md"), *ROOT.glob("[!.]*/**/*.md"), *ROOT.glob("[!.]*/**/*.py")]
        if ".venv" not in p.parts
    ]
    ours = {p.name for p in tracked if p.suffix == ".md"}
    missing = set()
    for path in tracked:
        for name in re.findall(r"\b((?:docs/)?[a-z][a-z-]*\.md)\b", path.read_text()):
            known = (ROOT / name).exists() if "/" in name else name in ours
            if not known:
                missing.add((str(path.relative_to(ROOT)), name))
    assert missing == set()
