"""The packages, built from this tree once per session (`make packages rpm-el6`, the
`dist` fixture in conftest.py), checked for what they install and what their maintainer
scripts do (what they replace: test_replaces.py).

Needs root and the tools tools/setup.sh installs (rpm, debhelper, dh-python, lintian):
a missing tool fails the test rather than skipping it, so CI cannot pass without them.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from ec2net import config
from tests.package.helpers import ROOT, VERSION
from tests.package.helpers import one as _one
from tests.package.helpers import run as _run

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

pytestmark = pytest.mark.package

COMMANDS = ("ec2net", "ec2ifup", "ec2ifdown", "ec2ifscan")
UNITS = ("ec2net@.service", "ec2net-scan.service", "ec2net-watch.service")
# Documentation every package ships beside README.md (the alert rules for Prometheus).
ALERT_RULES_AND_MIGRATION = ("ec2net.rules.yml", "migration.md")
MAN_PAGES = (
    "man8/ec2net.8",
    "man8/ec2ifup.8",
    "man8/ec2ifdown.8",
    "man8/ec2ifscan.8",
    "man5/ec2net.toml.5",
)
# Nothing of the package may reload or re-trigger anyone else's networking.
FOREIGN = ("udevadm", "networkctl", "NetworkManager", "nmcli", "systemd-networkd", "ifup")


def _rpm(rpmdb: Path, *args: str) -> str:
    return _run("rpm", "--dbpath", str(rpmdb), *args)


def _rpm_files(dist: Path, rpmdb: Path, pattern: str) -> set[str]:
    return set(_rpm(rpmdb, "-qlp", str(_one(dist, pattern))).split())


def _code_lines(script: str) -> list[str]:
    return [
        ln.strip() for ln in script.splitlines() if ln.strip() and not ln.strip().startswith("#")
    ]


def _guard(lines: list[str], i: int) -> str:
    """The condition of the `if` block line i is in (the scripts nest no blocks)."""
    return next(ln for ln in reversed(lines[:i]) if ln.startswith("if "))


def _index(lines: list[str], text: str) -> int:
    found = [i for i, ln in enumerate(lines) if text in ln]
    assert len(found) == 1, (text, lines)
    return found[0]


def _check_ec2net_calls(lines: list[str], tolerant: str) -> None:
    """ec2net itself runs only when the init system runs and never fails the script."""
    for i, line in enumerate(lines):
        if re.search(r"(^|/)ec2net (migrate|down)", line):
            assert line.endswith(tolerant), line
            guard = _guard(lines, i)
            assert "/run/systemd/system" in guard or "initctl status" in guard, guard


def _check_restarts(lines: list[str]) -> None:
    """Every restarting line names ec2net-watch and no other unit; nothing foreign."""
    for line in lines:
        assert not any(f in line for f in FOREIGN), line
        if re.search(r"restart|_dh_action", line) and "=" not in line.split()[0]:
            assert "ec2net-watch" in line, line
            others = set(re.findall(r"[\w@.*-]+\.service", line)) - {"ec2net-watch.service"}
            assert not others, line


def test_versions_agree() -> None:
    spec = (ROOT / "packaging/rpm/ec2-net-utils.spec").read_text()
    assert re.search(rf"^Version:\s+{re.escape(VERSION)}$", spec, re.M)
    changelog = (ROOT / "debian/changelog").read_text().splitlines()[0]
    assert changelog.startswith(f"ec2-net-utils ({VERSION})"), changelog
    assert f"- {VERSION}-1" in spec.split("%changelog", 1)[1]
    init = (ROOT / "src/ec2net/__init__.py").read_text()
    assert f'__version__ = "{VERSION}"' in init  # what `ec2net --version` prints


# --- RPM --------------------------------------------------------------------------------


def test_rpm_installs_everything(dist: Path, rpmdb: Path) -> None:
    files = _rpm_files(dist, rpmdb, "ec2-net-utils-*-1.noarch.rpm")
    for cmd in COMMANDS:
        assert f"/usr/bin/{cmd}" in files
    for unit in UNITS:
        assert f"/usr/lib/systemd/system/{unit}" in files
    assert "/usr/lib/udev/rules.d/81-ec2net.rules" in files
    assert "/usr/lib/systemd/networkd.conf.d/80-ec2net.conf" in files
    assert "/etc/cloud/cloud.cfg.d/90-ec2net.cfg" in files
    assert "/usr/lib/systemd/system-preset/80-ec2net.preset" in files
    assert "/etc/ec2net/ec2net.toml" in files
    for page in MAN_PAGES:
        assert any(f.startswith(f"/usr/share/man/{page}") for f in files), page
    sitelib = {f for f in files if "/site-packages/ec2net/" in f}
    for module in ("cli.py", "engine.py", "sysfiles.py", "data/ec2net@.service", "py.typed"):
        assert any(f.endswith(f"/ec2net/{module}") for f in sitelib), module
    assert any(f.endswith(f"ec2_net_utils-{VERSION}.dist-info/entry_points.txt") for f in files)
    assert not any("/etc/init/" in f for f in files)
    for doc in ALERT_RULES_AND_MIGRATION:  # %{_pkgdocdir}: versioned on older rpm
        assert any(re.search(rf"/usr/share/doc/ec2-net-utils[^/]*/{doc}$", f) for f in files), doc


def test_rpm_config_is_noreplace(dist: Path, rpmdb: Path) -> None:
    rpm = str(_one(dist, "ec2-net-utils-*-1.noarch.rpm"))
    flags = _rpm(rpmdb, "-qp", "--qf", "[%{FILENAMES} %{FILEFLAGS:fflags}\n]", rpm)
    assert "/etc/ec2net/ec2net.toml cn" in flags.splitlines()


def test_rpm_requires(dist: Path, rpmdb: Path) -> None:
    requires = _rpm(rpmdb, "-qp", "--requires", str(_one(dist, "ec2-net-utils-*-1.noarch.rpm")))
    lines = {ln.strip() for ln in requires.splitlines()}
    assert "python3-pyroute2" in lines
    assert "python3 >= 3.9" in lines
    assert ("python3-tomli" in lines) == (sys.version_info < (3, 11)), lines  # built by python3


def _rpm_scripts(rpmdb: Path, rpm: Path) -> dict[str, list[str]]:
    scripts = _rpm(rpmdb, "-qp", "--scripts", str(rpm))
    parts = re.findall(r"^(\w+) scriptlet \(using /bin/sh\):\n(.*?)(?=^\w+ scriptlet|\Z)",
                       scripts, re.M | re.S)  # fmt: skip
    return {name: _code_lines(text) for name, text in parts}


def test_rpm_scripts_enable_and_restart_only_the_daemon(dist: Path, rpmdb: Path) -> None:
    parts = _rpm_scripts(rpmdb, _one(dist, "ec2-net-utils-*-1.noarch.rpm"))
    assert set(parts) == {"preinstall", "postinstall", "preuninstall", "postuninstall",
                          "posttrans"}, parts  # fmt: skip
    post = "\n".join(parts["postinstall"])
    assert "preset" in post and "ec2net-scan.service" in post and "ec2net-watch.service" in post
    assert "$1 -eq 1" in post  # first install only: upgrades keep the admin's choice
    for name, lines in parts.items():
        _check_restarts(lines)
        _check_ec2net_calls(lines, "|| :")
        for line in lines:
            if "ec2net@" in line:  # the per-ENI units: only stopped, and only on erase
                assert "stop" in line and "restart" not in line, (name, line)
                assert name == "preuninstall"
    assert "$1 -eq 0" in parts["preuninstall"][0]
    assert any("try-restart ec2net-watch.service" in ln for ln in parts["postuninstall"])


def test_rpm_scripts_switch_and_remove(dist: Path, rpmdb: Path) -> None:
    parts = _rpm_scripts(rpmdb, _one(dist, "ec2-net-utils-*-1.noarch.rpm"))
    # The marker of a first install of ec2net, written before the files are.
    pre = parts["preinstall"]
    assert "$1 -eq 1" in pre[0] and "! -e /usr/bin/ec2net" in pre[0]
    assert "/run/ec2-net-utils.first-install" in pre[1]
    # After the transaction (the obsoleted package is gone): migrate, then, on a first
    # install, the daemon.
    trans = parts["posttrans"]
    migrate = _index(trans, "/usr/bin/ec2net migrate")
    start = _index(trans, "systemctl start ec2net-watch.service")
    assert migrate < start and "first = yes" in _guard(trans, start)
    others = [ln for name, lines in parts.items() if name != "posttrans" for ln in lines]
    assert not any("ec2net migrate" in ln for ln in others), others
    # Erase: the daemon, the per-ENI units, then whatever is left.
    preun = parts["preuninstall"]
    watch = _index(preun, "disable --now ec2net-scan.service ec2net-watch.service")
    units = _index(preun, "stop 'ec2net@*.service'")
    down = _index(preun, "/usr/bin/ec2net down --all")
    assert watch < units < down and "$1 -eq 0" in _guard(preun, down)
    postun = parts["postuninstall"]
    gone = _index(postun, "rm -rf /run/ec2net")
    assert "$1 -eq 0" in _guard(postun, gone)


def test_rpm_el6_ships_upstart_jobs_instead_of_units(dist: Path, rpmdb: Path) -> None:
    files = _rpm_files(dist, rpmdb, "ec2-net-utils-*-1.el6.noarch.rpm")
    assert {"/etc/init/ec2net-scan.conf", "/etc/init/ec2net-watch.conf"} <= files
    assert not any("systemd" in f or "/udev/" in f for f in files), files
    assert {f"/usr/bin/{c}" for c in COMMANDS} <= files
    rpm = _one(dist, "ec2-net-utils-*-1.el6.noarch.rpm")
    scripts = _rpm(rpmdb, "-qp", "--scripts", str(rpm))
    assert "systemctl" not in scripts
    _check_restarts(_code_lines(scripts))
    assert "upstart" in _rpm(rpmdb, "-qp", "--requires", str(rpm)).split()
    # The same switch and removal as under systemd, through initctl.
    parts = _rpm_scripts(rpmdb, rpm)
    assert set(parts) == {"preinstall", "preuninstall", "postuninstall", "posttrans"}, parts
    for lines in parts.values():
        _check_ec2net_calls(lines, "|| :")
    trans = parts["posttrans"]
    assert _index(trans, "ec2net migrate") < _index(trans, "initctl start ec2net-watch")
    preun = parts["preuninstall"]
    assert _index(preun, "initctl stop ec2net-watch") < _index(preun, "ec2net down --all")
    assert "$1 -eq 0" in _guard(preun, _index(preun, "ec2net down --all"))
    assert "$1 -eq 0" in _guard(parts["postuninstall"],
                                _index(parts["postuninstall"], "rm -rf /run/ec2net"))  # fmt: skip


# --- .deb -------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def deb_tree(dist: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    root = tmp_path_factory.mktemp("deb")
    deb = str(_one(dist, "ec2-net-utils_*_all.deb"))
    _run("dpkg-deb", "-x", deb, str(root / "data"))
    _run("dpkg-deb", "-e", deb, str(root / "control"))
    yield root


def test_deb_installs_everything(dist: Path) -> None:
    listing = _run("dpkg-deb", "-c", str(_one(dist, "ec2-net-utils_*_all.deb")))
    files = {ln.split()[5].lstrip(".") for ln in listing.splitlines()}
    for cmd in COMMANDS:
        assert f"/usr/bin/{cmd}" in files
    for unit in UNITS:  # bookworm's debhelper and lintian want /lib
        assert f"/lib/systemd/system/{unit}" in files
    assert "/lib/udev/rules.d/81-ec2net.rules" in files
    assert "/usr/lib/systemd/networkd.conf.d/80-ec2net.conf" in files
    assert "/etc/cloud/cloud.cfg.d/90-ec2net.cfg" in files
    assert "/etc/ec2net/ec2net.toml" in files
    for page in MAN_PAGES:
        assert f"/usr/share/man/{page}.gz" in files, page
    for module in ("cli.py", "engine.py", "sysfiles.py", "data/ec2net@.service", "py.typed"):
        assert f"/usr/lib/python3/dist-packages/ec2net/{module}" in files, module
    assert not any(f.startswith("/etc/init/") for f in files)
    assert "/usr/share/doc/ec2-net-utils/ec2net.rules.yml" in files
    assert "/usr/share/doc/ec2-net-utils/migration.md.gz" in files


def test_deb_control(dist: Path, deb_tree: Path) -> None:
    control = (deb_tree / "control/control").read_text()
    depends = re.search(r"^Depends: (.*)$", control, re.M)
    assert depends is not None
    names = {d.strip().split()[0] for d in re.split(r"[,|]", depends.group(1))}
    assert {"python3", "python3-pyroute2"} <= names
    # Replaces amazon-ec2-net-utils, every version of it (test_replaces.py installs it).
    assert re.search(r"^Conflicts: amazon-ec2-net-utils$", control, re.M), control
    assert re.search(r"^Replaces: amazon-ec2-net-utils$", control, re.M), control
    assert f"Version: {VERSION}\n" in control
    # An admin's edit of either survives upgrades (docs/migration.md: remove vs purge).
    assert sorted((deb_tree / "control/conffiles").read_text().split()) == [
        "/etc/cloud/cloud.cfg.d/90-ec2net.cfg",
        "/etc/ec2net/ec2net.toml",
    ]


def test_deb_maintainer_scripts_restart_only_the_daemon(deb_tree: Path) -> None:
    scripts = {p.name: p.read_text() for p in (deb_tree / "control").iterdir()
               if p.name in ("preinst", "postinst", "prerm", "postrm")}  # fmt: skip
    assert "postinst" in scripts and "prerm" in scripts
    assert "enable 'ec2net-watch.service'" in scripts["postinst"]
    assert "enable 'ec2net-scan.service'" in scripts["postinst"]
    for name, text in scripts.items():
        lines = _code_lines(text)
        _check_restarts(lines)
        _check_ec2net_calls(lines, "|| true")
        for i, line in enumerate(lines):
            if "ec2net-scan.service" in line:  # enabled for boot, never started or stopped
                assert "deb-systemd-helper" in line, (name, line)
            if "ec2net@" in line:  # per-ENI units: stopped on removal only
                assert "stop" in line and name == "prerm", (name, line)
                assert '"$1" = remove' in _guard(lines, i), (name, line)
            if "deb-systemd-invoke" in line and "stop" in line:
                assert '"$1" = remove' in _guard(lines, i), (name, line)


def test_deb_scripts_switch_and_remove(deb_tree: Path) -> None:
    scripts = {p.name: _code_lines(p.read_text()) for p in (deb_tree / "control").iterdir()
               if p.name in ("preinst", "postinst", "prerm", "postrm")}  # fmt: skip
    # configure: migrate before the debhelper part starts (or restarts) the daemon.
    post = scripts["postinst"]
    migrate = _index(post, "ec2net migrate")
    guard = _guard(post, migrate)
    assert '"$1" = configure' in guard and '-z "${DPKG_ROOT:-}"' in guard
    assert migrate < _index(post, "deb-systemd-invoke $_dh_action 'ec2net-watch.service'")
    # remove (not upgrade): the daemon, the per-ENI units, then whatever is left.
    prerm = scripts["prerm"]
    down = _index(prerm, "ec2net down --all")
    watch = next(i for i, ln in enumerate(prerm) if "stop 'ec2net-watch.service'" in ln)
    assert watch < _index(prerm, "stop 'ec2net@*.service'") < down
    assert '"$1" = remove' in _guard(prerm, down) and "DPKG_ROOT" in _guard(prerm, down)
    postrm = scripts["postrm"]
    gone = _index(postrm, '/run/ec2net"')
    assert "rm -rf" in postrm[gone] and '"$1" = purge' in _guard(postrm, gone)


def test_deb_default_config_is_the_commented_defaults(deb_tree: Path) -> None:
    text = (deb_tree / "data/etc/ec2net/ec2net.toml").read_text()
    assert text == config.render_default()
    assert config.parse(tomllib.loads(text), "ec2net.toml") == {}


def test_lintian_has_no_errors(dist: Path) -> None:
    proc = subprocess.run(
        ["lintian", "--pedantic", "--display-info", str(_one(dist, "ec2-net-utils_*.changes"))],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    print("lintian:\n" + (proc.stdout or "(nothing)\n"))
    errors = [ln for ln in proc.stdout.splitlines() if ln.startswith("E:")]
    assert not errors, proc.stdout
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze")
def test_systemd_analyze_verify_deb_units(deb_tree: Path, tmp_path: Path) -> None:
    # The units as shipped, pointed at a stand-in ec2net (no /usr/bin/ec2net on this host).
    stub = tmp_path / "bin/ec2net"
    stub.parent.mkdir()
    stub.write_text("#!/bin/sh\n")
    stub.chmod(0o755)
    unit_dir = tmp_path / "units"
    unit_dir.mkdir()
    for unit in UNITS:
        text = (deb_tree / "data/lib/systemd/system" / unit).read_text()
        assert "/usr/bin/ec2net " in text
        (unit_dir / unit).write_text(text.replace("/usr/bin/ec2net ", f"{stub} "))
    (unit_dir / "ec2net@eth1.service").symlink_to(unit_dir / "ec2net@.service")
    names = ["ec2net-scan.service", "ec2net-watch.service", "ec2net@eth1.service"]
    proc = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", *(str(unit_dir / n) for n in names)],
        capture_output=True, text=True, check=False, env={"SYSTEMD_UNIT_PATH": f"{unit_dir}:"},
    )  # fmt: skip
    problems = [
        ln for ln in proc.stderr.splitlines()
        if "ec2net" in ln and "sys-subsystem-net-devices" not in ln
    ]  # fmt: skip
    assert proc.returncode == 0 and not problems, proc.stderr


# --- wheel ------------------------------------------------------------------------------


def test_wheel_has_entry_points_and_data(dist: Path) -> None:
    wheel = _one(dist, f"ec2_net_utils-{VERSION}-py3-none-any.whl")
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        entry_points = zf.read(f"ec2_net_utils-{VERSION}.dist-info/entry_points.txt").decode()
    scripts = dict(re.findall(r"^(\S+) = (\S+)$", entry_points, re.M))
    assert scripts == {
        "ec2net": "ec2net.cli:main",
        "ec2ifup": "ec2net.cli:ec2ifup",
        "ec2ifdown": "ec2net.cli:ec2ifdown",
        "ec2ifscan": "ec2net.cli:ec2ifscan",
    }
    data = {p.name for p in (ROOT / "src/ec2net/data").iterdir() if p.is_file()}
    assert data and {f"ec2net/data/{n}" for n in data} <= names
    assert {"ec2net/py.typed", "ec2net/cli.py", "ec2net/manpage.py"} <= names
    rules = f"ec2_net_utils-{VERSION}.data/data/share/doc/ec2-net-utils/ec2net.rules.yml"
    assert rules in names  # the alert rules, as documentation
