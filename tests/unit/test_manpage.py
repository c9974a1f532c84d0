"""Man pages: generated from the parser and SCHEMA, so every verb and key is in them."""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ec2net import cli, config, manpage

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[2]


def _plain(groff: str) -> str:
    """The page's words without font escapes, hyphens unescaped."""
    return groff.replace("\\fB", "").replace("\\fI", "").replace("\\fR", "").replace("\\-", "-")


def test_every_verb_and_argument_is_documented() -> None:
    page = manpage.render_ec2net8()
    text = _plain(page)
    subs = manpage.verbs(cli.build_parser())
    assert {"up", "down", "scan", "watch", "install-system-files"} <= set(subs)
    for name, sub in subs.items():
        assert f".SS {name}" in text, name
        assert sub.description and _plain(manpage.esc(sub.description)) in text
        for action in sub._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            for opt in action.option_strings:
                assert opt in text, (name, opt)
            if not action.option_strings:
                assert manpage._metavar(action) in text, (name, action.dest)
            if action.help:
                assert _plain(manpage.esc(action.help)) in text, (name, action.help)
    for opt in ("--verbose", "--quiet", "--version"):
        assert opt in text


def test_a_verb_added_later_appears_by_itself(monkeypatch: pytest.MonkeyPatch) -> None:
    real = cli.build_parser

    def extended(prog: str = "ec2net") -> argparse.ArgumentParser:
        p = real(prog)
        sub = next(a for a in p._actions if isinstance(a, argparse._SubParsersAction))
        s = sub.add_parser("frobnicate", help="Frobnicate an ENI.", description="Frob it.")
        s.add_argument("--level", type=int, default=3, help="how hard")
        s.add_argument("target", metavar="TARGET", nargs="+", help="what to frob")
        return p

    monkeypatch.setattr(cli, "build_parser", extended)
    text = _plain(manpage.render_ec2net8())
    assert ".SS frobnicate --level LEVEL TARGET ..." in text.replace("[", "").replace("]", "")
    assert "how hard (default: 3)" in text
    assert "what to frob" in text


def test_every_schema_key_is_documented() -> None:
    text = _plain(manpage.render_ec2net_toml5())
    defaults = config.Settings()
    for field in config.SCHEMA:
        assert f".SH [{field.section}]" in text
        value = config._toml_value(getattr(defaults, field.attr))
        entry = (
            f"{field.key} = {config._KIND_NAMES[field.kind]}\n{field.doc.replace('`', '')}\n"
            f".br\nDefault: {value}."
        )
        assert entry in text, field.key


def test_example_is_a_valid_config() -> None:
    assert config.parse(tomllib.loads(manpage.EXAMPLE), "EXAMPLE")


def test_compat_names_match_the_console_scripts() -> None:
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert set(scripts) == {"ec2net", *manpage.COMPAT}
    for name, verb in manpage.COMPAT.items():
        assert scripts[name] == f"ec2net.cli:ec2if{verb}"
    pages = manpage.render()
    assert set(pages) == {"ec2net.8", "ec2net.toml.5", *(f"{c}.8" for c in manpage.COMPAT)}


def test_escaping() -> None:
    assert manpage.esc("--root") == "\\-\\-root"
    assert manpage.esc(".hidden\n'quote") == "\\&.hidden\n\\&'quote"
    assert manpage.esc("a\\b `up IFACE`") == "a\\eb \\fBup IFACE\\fR"


@pytest.mark.skipif(shutil.which("groff") is None, reason="no groff")
def test_groff_has_no_warnings(tmp_path: Path) -> None:
    assert manpage.main(["--out", str(tmp_path)]) == 0
    for name in ("ec2net.8", "ec2net.toml.5"):
        proc = subprocess.run(
            ["groff", "-man", "-Tutf8", "-ww", "-z", str(tmp_path / name)],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        assert proc.returncode == 0 and proc.stderr == "", (name, proc.stderr)
    if shutil.which("man") is None:
        return
    env = {"MANWIDTH": "80", "PATH": "/usr/bin:/bin", "LC_ALL": "C.UTF-8"}
    for name, word in (("ec2net.8", "install-system-files"), ("ec2net.toml.5", "lock_timeout")):
        proc = subprocess.run(
            ["man", "--warnings", "-E", "UTF-8", "-l", str(tmp_path / name)],
            capture_output=True, text=True, check=False, env=env,
        )  # fmt: skip
        assert proc.returncode == 0 and proc.stderr == "", (name, proc.stderr)
        assert word in proc.stdout
