"""The command line at every door: bad input exits 2 with a clear message and changes
nothing; configuration errors name file, key and reason; `plan` says what it would do;
every verb prints its result once."""

from __future__ import annotations

import ipaddress
import json
import logging
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable

import pytest

from ec2net import cli
from ec2net.model import AddressSpec, Change, ChangeSet, Family, Op, RuleSpec

ADDR = AddressSpec("eth1", ipaddress.ip_interface("10.0.2.20/24"), True)
RULE = RuleSpec(10001, Family.V4, 10001, ipaddress.ip_network("10.0.2.20/32"))


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty config file and a runtime dir that must stay unwritten."""
    config = tmp_path / "ec2net.toml"
    config.write_text("")
    monkeypatch.setenv("EC2NET_CONFIG", str(config))
    monkeypatch.setenv("EC2NET_RUNTIME_DIR", str(tmp_path / "run"))
    monkeypatch.delenv("EC2NET_IMDS_URL", raising=False)
    return tmp_path


def python_m_ec2net(*argv: str) -> subprocess.CompletedProcess[str]:
    """`python -m ec2net` from this tree (the Debian python has no editable install)."""
    src = str(Path(cli.__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")])}
    return subprocess.run(
        [sys.executable, "-m", "ec2net", *argv],
        capture_output=True,
        text=True,
        check=False,
        env=env,
    )


def untouched(tmp: Path) -> bool:
    return not (tmp / "run").exists()


USAGE = [
    ([], "the following arguments are required: COMMAND"),
    (["frobnicate"], "argument COMMAND: invalid choice: 'frobnicate'"),
    (["up"], "ec2net up: error: the following arguments are required: IFACE"),
    (["down"], "the following arguments are required: IFACE"),
    (["plan"], "the following arguments are required: IFACE"),
    (["down", "eth1", "--all"], "give IFACE or --all, not both"),
    (["migrate", "eth1"], "unrecognized arguments: eth1"),
    (["up", "eth1", "eth2"], "unrecognized arguments: eth2"),
    (["up", "--fresh-within", "-1", "eth1"], "--fresh-within: -1: seconds from 0 to 3600"),
    (["up", "--fresh-within", "soon", "eth1"], "--fresh-within: invalid _seconds value"),
    (["scan", "eth1"], "unrecognized arguments: eth1"),
    (["refresh", "eth1", "eth2"], "unrecognized arguments: eth2"),
    (["--json", "status"], "--json is an option of plan, status, check: put it after the command"),
    (["--json", "plan", "eth1"], "--json is an option of plan, status, check: put it after"),
    (["up", "eth1", "-v"], "-v is a general option: put it before the command"),
    (["status", "--bogus"], "unrecognized arguments: --bogus"),
    (["up", "--json", "eth1"], "unrecognized arguments: --json"),
    (["render"], "the following arguments are required: --backend"),
    (["render", "--backend", "wicked"], "argument --backend: invalid choice: 'wicked'"),
    (["install-system-files", "--init", "sysv"], "argument --init: invalid choice: 'sysv'"),
    (["--verbose=3", "scan"], "argument -v/--verbose: ignored explicit argument '3'"),
]


@pytest.mark.parametrize(("argv", "message"), USAGE)
def test_bad_input_exits_2_and_changes_nothing(
    env: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    assert cli.main(argv) == 2
    out, err = capsys.readouterr()
    assert message in err and out == ""
    assert untouched(env)


@pytest.mark.parametrize(
    ("compat", "argv", "message"),
    [
        (cli.ec2ifup, [], "ec2ifup: error: the following arguments are required: IFACE"),
        (cli.ec2ifdown, [], "ec2ifdown: error: the following arguments are required: IFACE"),
        (cli.ec2ifup, ["eth1", "eth2"], "unrecognized arguments: eth2"),
        (cli.ec2ifscan, ["eth1"], "unrecognized arguments: eth1"),
    ],
)
def test_compat_names_say_their_own_name(
    env: Path, capsys: pytest.CaptureFixture[str], compat: Any, argv: list[str], message: str
) -> None:
    assert compat(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "ec2ifup up" not in err
    assert untouched(env)


def test_help_and_version_exit_0(env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--version"]) == 0
    assert capsys.readouterr().out.startswith("ec2net ")
    assert cli.ec2ifup(["--help"]) == 0
    assert capsys.readouterr().out.startswith(
        "usage: ec2ifup [-h] [--fresh-within SECONDS] [--take-over] IFACE"
    )


def test_python_m_ec2net_exits_2(env: Path) -> None:
    proc = python_m_ec2net("up")
    assert proc.returncode == 2, proc
    assert "the following arguments are required: IFACE" in proc.stderr
    assert untouched(env)


CONFIGS = [
    ("[interfaces]\nfrobs = 1\n", "interfaces.frobs: unknown key"),
    ("[nonsense]\nx = 1\n", "nonsense: unknown section"),
    ("interfaces = 3\n", "interfaces: must be a table"),
    ("[refresh]\ninterval = 'often'\n", "refresh.interval: must be a number"),
    ("[refresh]\ninterval = 0\n", "refresh.interval: must be greater than 0"),
    ("[interfaces]\nexclude_names = 'eth*'\n", "interfaces.exclude_names: must be a list"),
    ("[interfaces]\nexclude_macs = ['02:aa']\n", "interfaces.exclude_macs: '02:aa' is not a MAC"),
    ("[interfaces]\nmanage_primary = 'yes'\n", "interfaces.manage_primary: must be"),
    ("[backend]\nname = 'wicked'\n", "backend.name: must be one of auto, nm, networkd"),
    ("[backend]\nfiles_root = 'relative'\n", "backend.files_root: must be an absolute path"),
    ("[backend\nname = 'nm'\n", "-: not valid TOML"),
    ("[imds]\ntoken_ttl = 0\n", "imds.token_ttl: must be between 1 and 21600"),
]


def errors(caplog: pytest.LogCaptureFixture) -> list[str]:
    # In-process, pytest owns the root logger; the CLI's stderr handler is proven below.
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]


@pytest.mark.parametrize(("text", "message"), CONFIGS)
@pytest.mark.parametrize("argv", [["up", "eth1"], ["plan", "eth1"], ["status"], ["scan"]])
def test_config_errors_name_file_key_and_reason(
    env: Path,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
    *,
    text: str,
    message: str,
    argv: list[str],
) -> None:
    config = env / "ec2net.toml"
    config.write_text(text)
    assert cli.main(argv) == 2
    assert [m for m in errors(caplog) if m.startswith(f"{config}: {message}")], errors(caplog)
    assert capsys.readouterr().out == "" and untouched(env)


def test_a_config_file_named_but_missing_exits_2(
    env: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("EC2NET_CONFIG", str(env / "nope.toml"))
    assert cli.main(["scan"]) == 2
    assert errors(caplog) == [f"{env / 'nope.toml'}: -: file not found"]
    assert untouched(env)


def test_config_error_reaches_stderr(env: Path) -> None:
    (env / "ec2net.toml").write_text("[interfaces]\nfrobs = 1\n")
    proc = python_m_ec2net("scan")
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr == f"ERROR {env / 'ec2net.toml'}: interfaces.frobs: unknown key\n"
    assert untouched(env)


# --- what each verb prints ----------------------------------------------------------


class FakeResult:
    def __init__(
        self, ifname: str, action: str, changes: tuple[Change, ...] = (), detail: str = ""
    ):
        self.ifname, self.action, self.detail = ifname, action, detail
        self.changes = ChangeSet(changes)


class FakeEngine:
    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []

    def up(
        self,
        ifname: str,
        dry_run: bool = False,
        fresh_within: float = 0.0,
        take_over: bool = False,
    ) -> FakeResult:
        self.calls.append(("up", dry_run))
        self.fresh_within = fresh_within
        self.take_over = take_over
        if ifname == "eth1":
            return FakeResult("eth1", "configured", (Change(Op.ADD, ADDR), Change(Op.DEL, RULE)))
        if ifname == "eth2":
            return FakeResult("eth2", "unchanged")
        return FakeResult(ifname, "skipped", detail="excluded by name")

    def down(self, ifname: str) -> FakeResult:
        return FakeResult(ifname, "removed", (Change(Op.DEL, ADDR),))

    def down_all(self) -> list[FakeResult]:
        self.calls.append(("down_all", None))
        return [self.down("eth1"), self.down("eth2")]

    def scan(self, take_over: Callable[[Any], bool] = lambda link: False) -> list[FakeResult]:
        self.scan_take_over = take_over(None)
        return [self.up("eth1"), self.up("eth2")]


@pytest.fixture
def engine(env: Path, monkeypatch: pytest.MonkeyPatch) -> FakeEngine:
    fake = FakeEngine()
    monkeypatch.setattr(cli._Context, "engine", lambda self, backend=None: fake)
    return fake


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> list[str]:
    assert cli.main(list(argv)) == 0
    return capsys.readouterr().out.splitlines()


def test_plan_says_what_it_would_do(
    engine: FakeEngine, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(capsys, "plan", "eth1") == [
        "eth1: would add address 10.0.2.20/24 dev eth1 noprefixroute",
        f"eth1: would delete {RULE}",
    ]
    assert engine.calls[0] == ("up", True)  # a dry run
    assert run(capsys, "plan", "eth2") == ["eth2: nothing to change"]
    assert run(capsys, "plan", "cni0") == ["cni0: skipped (excluded by name)"]


def test_plan_json(engine: FakeEngine, capsys: pytest.CaptureFixture[str]) -> None:

    out = json.loads("\n".join(run(capsys, "plan", "eth1", "--json")))
    assert out[0]["interface"] == "eth1" and out[0]["action"] == "configured"
    assert out[0]["changes"][0] == "add address 10.0.2.20/24 dev eth1 noprefixroute"


def test_up_passes_fresh_within_to_the_engine(
    engine: FakeEngine, capsys: pytest.CaptureFixture[str]
) -> None:
    run(capsys, "up", "eth2")
    assert engine.fresh_within == 0.0  # by hand: always read IMDS
    run(capsys, "up", "--fresh-within", "10", "eth2")
    assert engine.fresh_within == 10.0  # what ec2net@.service passes


def test_take_over_reaches_the_engine_only_when_asked(
    engine: FakeEngine, capsys: pytest.CaptureFixture[str]
) -> None:
    run(capsys, "up", "eth2")
    assert engine.take_over is False
    run(capsys, "up", "--take-over", "eth2")
    assert engine.take_over is True
    run(capsys, "scan")
    assert engine.scan_take_over is False
    run(capsys, "scan", "--take-over")
    assert engine.scan_take_over is True


def test_down_all_removes_every_recorded_eni(
    engine: FakeEngine, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(capsys, "down", "--all") == [
        "eth1: removed",
        "  del address 10.0.2.20/24 dev eth1 noprefixroute",
        "eth2: removed",
        "  del address 10.0.2.20/24 dev eth1 noprefixroute",
    ]
    assert engine.calls == [("down_all", None)]


def test_up_down_scan_print_each_result_once(
    engine: FakeEngine, capsys: pytest.CaptureFixture[str]
) -> None:
    up = run(capsys, "up", "eth1")
    assert up[0] == "eth1: configured" and len(up) == 3 and up[1].startswith("  add address")
    assert run(capsys, "down", "eth1") == [
        "eth1: removed",
        "  del address 10.0.2.20/24 dev eth1 noprefixroute",
    ]
    scan = run(capsys, "scan")
    assert [ln for ln in scan if not ln.startswith("  ")] == [
        "eth1: configured",
        "eth2: unchanged",
    ]


class RenderingEngine:
    """engine.render as far as the CLI sees it: the renderer over the ENIs present."""

    def __init__(self, ifname: str) -> None:
        self.ifname = ifname

    def render(self, renderer: Any, ifname: Any = None) -> Any:
        from ec2net.render import RenderInput
        from tests.unit.planning import plan
        from tests.unit.test_plan import SCENARIOS

        pairs = [(e, replace(ln, name=self.ifname)) for e, ln in SCENARIOS["ipv6"]()]
        p = plan(pairs).interfaces[0]
        return renderer(RenderInput(p, pairs[0][1], pairs[0][0]))


@pytest.mark.parametrize(
    ("backend", "ifname", "code"),
    [("ifcfg", "eth;1", 2), ("nm", "eth;1", 0), ("nm", "a\\b", 2), ("networkd", "a\\b", 0)],
)
def test_render_refuses_what_that_backend_would(
    env: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
    *,
    backend: str,
    ifname: str,
    code: int,
) -> None:
    fake = RenderingEngine(ifname)
    monkeypatch.setattr(cli._Context, "engine", lambda self, backend=None: fake)
    assert cli.main(["render", "--backend", backend]) == code
    out = capsys.readouterr().out
    if code:
        assert out == ""
        assert errors(caplog)[0].startswith(f"{ifname}: backend {backend} cannot configure")
    else:
        assert "==> /" in out and ifname in out
