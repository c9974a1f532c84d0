"""What the packages replace: real rpm, dnf, dpkg and apt transactions in scratch roots,
from each package users have today to the ones this tree builds (the `dist` fixture).

The old packages are stand-ins built here (rpmbuild, dpkg-deb): their names, versions
and relations as released, one marker file and a script that logs their own removal.
A scratch root is a chroot with a shell, rm, and logging stand-ins for systemctl,
initctl, the debhelper helpers and python3 (so /usr/bin/ec2net, a python3 script, logs
its arguments instead of running): the package scripts run for real inside it, change
nothing outside it, and /stub.log shows what they called, in order. A root with
/run/systemd/system (or initctl) looks like a booted host; one without, like an image
build. Needs root and rpm, dnf, createrepo_c, dpkg and apt (tools/setup.sh).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.package.helpers import VERSION, one, run

pytestmark = pytest.mark.package

TOOLS = ("rpm", "rpmbuild", "dnf", "createrepo_c", "dpkg", "dpkg-deb", "apt-get", "ldd")
PATH = "/usr/sbin:/usr/bin:/sbin:/bin"
OURS = f"ec2-net-utils-{VERSION}-1"
OURS_EL6 = f"ec2-net-utils-{VERSION}-1.el6"
BASE = "fake-base-1-1"
# Logging stand-ins in a root: what the package scripts may call.
STUBS = (
    "usr/bin/systemctl",
    "usr/bin/python3",
    "usr/bin/deb-systemd-helper",
    "usr/bin/deb-systemd-invoke",
    "usr/bin/py3compile",
    "usr/bin/py3clean",
)


@dataclass(frozen=True)
class Fake:
    name: str
    version: str
    release: str = "1"
    relations: tuple[str, ...] = ()
    files: tuple[str, ...] = ()  # besides the marker

    @property
    def nvr(self) -> str:
        return f"{self.name}-{self.version}-{self.release}"


FAKE_RPMS = (
    # The original fork's package (RHEL 6/7).
    Fake("ec2-net-utils", "1.0", "2"),
    # Amazon Linux 2's.
    Fake(
        "amazon-ec2-net-utils",
        "1.7.3",
        "1",
        ("Provides: ec2-net-utils = 1.7.3-1", "Obsoletes: ec2-net-utils < 1.7.3"),
    ),
    # Amazon Linux 2023's line (2.7.4: AWS's newest release).
    Fake("amazon-ec2-net-utils", "2.7.4"),
    # A release above the Obsoletes range: only the Conflicts keeps it out.
    Fake("amazon-ec2-net-utils", "3.0.0"),
    # An earlier ec2net, which has /usr/bin/ec2net: its upgrade is no first install.
    Fake("ec2-net-utils", "1.9", files=("/usr/bin/ec2net",)),
    # Something that needs AWS's tool.
    Fake("needs-aws", "1", relations=("Requires: amazon-ec2-net-utils",)),
)
REPLACED_RPMS = (
    "ec2-net-utils-1.0-2",
    "amazon-ec2-net-utils-1.7.3-1",
    "amazon-ec2-net-utils-2.7.4-1",
)
# Debian 12's, Debian 13's, AWS's own.
AWS_DEBS = ("2.3.0", "2.4.1", "2.7.4")


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(PATH=PATH, DEBIAN_FRONTEND="noninteractive", LC_ALL="C")
    env.update(extra)
    return env


def _tool(*argv: str, ok: bool = True, env: Mapping[str, str] | None = None) -> str:
    """stdout and stderr of a tool; it must succeed (ok) or fail (not ok)."""
    proc = subprocess.run(
        argv, capture_output=True, text=True, check=False, env=dict(env or _env())
    )
    out = proc.stdout + proc.stderr
    assert (proc.returncode == 0) == ok, f"{argv}: exit {proc.returncode}\n{out[-4000:]}"
    return out


# --- scratch roots ----------------------------------------------------------------------


def _copy_binary(root: Path, src: str, dest: str) -> None:
    target = root / dest
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(src, target)
    for lib in re.findall(r"(/\S+) \(0x", run("ldd", src)):
        copy = root / lib.lstrip("/")
        if not copy.exists():
            copy.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(lib, copy)


def _stub(path: Path, log: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f'#!/bin/sh\necho "{path.name} $*" >> {log}\n')
    path.chmod(0o755)


# systemctl: a unit is enabled once a preset ran (is-enabled answers accordingly).
SYSTEMCTL = """#!/bin/sh
echo "systemctl $*" >> /stub.log
case "$*" in *preset*) : > /preset-done ;; esac
case "$*" in *is-enabled*) [ -e /preset-done ] ;; esac
"""


def _root(path: Path, init: str | None = "systemd") -> Path:
    """A chroot for package scripts; init: "systemd", "upstart" or None (not booted)."""
    for d in ("dev", "etc", "tmp", "var/tmp", "var/run", "run"):
        (path / d).mkdir(parents=True, exist_ok=True)
    (path / "dev/null").write_text("")  # a plain file takes the redirections
    _copy_binary(path, shutil.which("dash") or "/bin/dash", "bin/sh")
    _copy_binary(path, shutil.which("rm") or "/bin/rm", "bin/rm")
    for stub in STUBS:
        _stub(path / stub, "/stub.log")
    (path / "usr/bin/systemctl").write_text(SYSTEMCTL)
    if init == "systemd":
        (path / "run/systemd/system").mkdir(parents=True)
    if init == "upstart":
        _stub(path / "sbin/initctl", "/stub.log")
    (path / "stub.log").write_text("")
    return path


def _calls(root: Path, log: Path | None = None) -> list[str]:
    """What the scripts called since the last look (the log is emptied)."""
    log = log or root / "stub.log"
    lines = log.read_text().splitlines()
    log.write_text("")
    return [re.sub(r"^python3 /usr/bin/ec2net ", "ec2net ", ln).strip() for ln in lines]


def _fake_files(root: Path) -> list[str]:
    return sorted(p.name for p in (root / "usr/share/fake").glob("*"))


@pytest.fixture(scope="session")
def tools() -> None:
    missing = [t for t in TOOLS if shutil.which(t, path=PATH) is None]
    assert not missing, f"missing {missing}: run tools/setup.sh"


# --- RPM --------------------------------------------------------------------------------


def _spec(fake: Fake) -> str:
    files = ("/usr/share/fake/" + fake.nvr, *fake.files)
    install = "\n".join(
        f"mkdir -p %{{buildroot}}{os.path.dirname(f)} && echo {fake.nvr} > %{{buildroot}}{f}"
        for f in files
    )
    return "\n".join(
        [
            f"Name: {fake.name}",
            f"Version: {fake.version}",
            f"Release: {fake.release}",
            f"Summary: stand-in for {fake.nvr}",
            "License: MIT",
            "BuildArch: noarch",
            *fake.relations,
            "%description",
            "A stand-in built by tests/package: name, version, relations, a marker.",
            "%install",
            install,
            "%files",
            *files,
            "%postun",
            f'echo "{fake.nvr} postun $1" >> /stub.log',
            "",
        ]
    )


def _base_spec(requires: set[str]) -> str:
    """A package that provides what ours require (python3, pyroute2, /bin/sh, ...)."""
    provides = []
    for req in sorted(requires):
        if req.startswith(("rpmlib(", "config(")):
            continue
        name, _, version = re.sub(r"\s+(>=|=)\s+", " ", req).partition(" ")
        provides.append(f"Provides: {name} = {version}" if version else f"Provides: {name}")
    head = ["Name: fake-base", "Version: 1", "Release: 1", "Summary: what ours require"]
    tail = ["%description", "Stand-in for the system ec2-net-utils needs.", "%files", ""]
    return "\n".join([*head, "License: MIT", "BuildArch: noarch", *provides, *tail])


@pytest.fixture(scope="session")
def rpms(dist: Path, tools: None, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    work = tmp_path_factory.mktemp("fake-rpms")
    out = work / "rpms"
    ours = {OURS: one(dist, f"{OURS}.noarch.rpm"), OURS_EL6: one(dist, f"{OURS_EL6}.noarch.rpm")}
    requires: set[str] = set()
    for rpm in ours.values():
        query = run("rpm", "--dbpath", str(work / "db"), "-qpR", str(rpm))
        requires |= {ln.strip() for ln in query.splitlines() if ln.strip()}
    specs = {f.nvr: _spec(f) for f in FAKE_RPMS}
    specs[BASE] = _base_spec(requires)
    built = dict(ours)
    for nvr, text in specs.items():
        spec = work / f"{nvr}.spec"
        spec.write_text(text)
        _tool("rpmbuild", "-bb", "--quiet", "--nodeps", "--dbpath", str(work / "db"),
              "--define", f"_topdir {work / 'top'}", "--define", f"_rpmdir {out}",
              "--define", "_build_name_fmt %{NAME}-%{VERSION}-%{RELEASE}.%{ARCH}.rpm",
              str(spec))  # fmt: skip
        built[nvr] = one(out, f"{nvr}.noarch.rpm")
    return built


def _rpm(root: Path, *args: str | Path, ok: bool = True) -> str:
    return _tool("rpm", "--root", str(root), *map(str, args), ok=ok)


def _installed(root: Path) -> set[str]:
    query = run("rpm", "--root", str(root), "-qa", "--qf", "%{NAME}-%{VERSION}-%{RELEASE}\n")
    return set(query.split())


def _rpm_root(path: Path, rpms: dict[str, Path], *nvrs: str, init: str | None = "systemd") -> Path:
    root = _root(path, init)
    _rpm(root, "-i", rpms[BASE], *(rpms[n] for n in nvrs))
    _calls(root)
    return root


PRESET = "systemctl --no-reload preset ec2net-scan.service ec2net-watch.service"
SWITCH = [
    "ec2net migrate",
    "systemctl -q is-enabled ec2net-watch.service",
    "systemctl daemon-reload",
    "systemctl start ec2net-watch.service",
]


@pytest.mark.parametrize("old", REPLACED_RPMS)
def test_rpm_upgrade_replaces_the_old_package(
    old: str, rpms: dict[str, Path], tmp_path: Path
) -> None:
    root = _rpm_root(tmp_path, rpms, old)
    _rpm(root, "-U", rpms[OURS])
    assert _installed(root) == {BASE, OURS}
    assert _fake_files(root) == []  # the old one's files went with it
    # Same name (the fork): an upgrade, the old one's postun sees one left; another
    # name: obsoleted, erased (0 left). Either way the first install of ec2net: the
    # units are preset, and the switch runs once the old one is gone, in %posttrans.
    left = 1 if old.startswith("ec2-net-utils-") else 0
    assert _calls(root) == [PRESET, f"{old} postun {left}", *SWITCH]
    assert not (root / "run/ec2-net-utils.first-install").exists()


def test_rpm_upgrade_of_ec2net_migrates_without_starting(
    rpms: dict[str, Path], tmp_path: Path
) -> None:
    root = _rpm_root(tmp_path, rpms, "ec2-net-utils-1.9-1")
    _rpm(root, "-U", rpms[OURS])
    assert _installed(root) == {BASE, OURS}
    # No first install: the daemon keeps the state the admin left it in.
    assert _calls(root) == ["ec2-net-utils-1.9-1 postun 1", "ec2net migrate"]


def test_rpm_image_build_runs_nothing(rpms: dict[str, Path], tmp_path: Path) -> None:
    root = _rpm_root(tmp_path, rpms, "amazon-ec2-net-utils-2.7.4-1", init=None)
    (root / "run").rmdir()  # not even /run: the marker cannot be written
    _rpm(root, "-U", rpms[OURS])
    assert _installed(root) == {BASE, OURS}
    assert _calls(root) == [PRESET, "amazon-ec2-net-utils-2.7.4-1 postun 0"]


@pytest.mark.parametrize("op", ["-i", "-U"])
@pytest.mark.parametrize(
    "aws",
    [
        "amazon-ec2-net-utils-1.7.3-1",
        "amazon-ec2-net-utils-2.7.4-1",
        "amazon-ec2-net-utils-3.0.0-1",
    ],
)
def test_rpm_refuses_amazon_beside_ours(
    aws: str, op: str, rpms: dict[str, Path], tmp_path: Path
) -> None:
    root = _rpm_root(tmp_path, rpms, OURS)
    out = _rpm(root, op, rpms[aws], ok=False)
    assert f"amazon-ec2-net-utils conflicts with (installed) {OURS}" in out, out
    assert _installed(root) == {BASE, OURS}


def test_rpm_erase_stops_then_removes_everything(rpms: dict[str, Path], tmp_path: Path) -> None:
    root = _rpm_root(tmp_path, rpms, OURS)
    (root / "run/ec2net/records").mkdir(parents=True)
    _rpm(root, "-e", "ec2-net-utils")
    assert _calls(root) == [
        "systemctl --no-reload disable --now ec2net-scan.service ec2net-watch.service",
        "systemctl stop ec2net@*.service",
        "ec2net down --all",
    ]
    assert not (root / "run/ec2net").exists()
    assert _installed(root) == {BASE}


def test_rpm_el6_replaces_the_original_under_upstart(
    rpms: dict[str, Path], tmp_path: Path
) -> None:
    root = _rpm_root(tmp_path, rpms, "ec2-net-utils-1.0-2", init="upstart")
    _rpm(root, "-U", rpms[OURS_EL6])
    assert _installed(root) == {BASE, OURS_EL6}
    assert _calls(root) == [
        "ec2-net-utils-1.0-2 postun 1",
        "initctl status ec2net-watch",
        "ec2net migrate",
        "initctl start ec2net-watch",
    ]
    (root / "run/ec2net").mkdir(parents=True)
    _rpm(root, "-e", "ec2-net-utils")
    assert _calls(root) == [
        "initctl status ec2net-watch",
        "initctl stop ec2net-watch",
        "ec2net down --all",
    ]
    assert not (root / "run/ec2net").exists()


# --- dnf --------------------------------------------------------------------------------


def _repo(path: Path, *rpms: Path) -> Path:
    """A local repository (createrepo_c) and the reposdir naming it; returns the latter."""
    (path / "repo").mkdir(parents=True)
    for rpm in rpms:
        shutil.copy(rpm, path / "repo")
    _tool("createrepo_c", "-q", str(path / "repo"))
    reposd = path / "repos.d"
    reposd.mkdir()
    (reposd / "local.repo").write_text(
        f"[local]\nname=local\nbaseurl=file://{path / 'repo'}\ngpgcheck=0\n"
    )
    return reposd


def _dnf(root: Path, reposd: Path, *args: str | Path, ok: bool = True) -> str:
    return _tool("dnf", "-y", "--noplugins", f"--installroot={root}", "--releasever=1",
                 f"--setopt=reposdir={reposd}", f"--setopt=cachedir={reposd.parent / 'cache'}",
                 "--setopt=install_weak_deps=False", *map(str, args), ok=ok)  # fmt: skip


@pytest.mark.parametrize("how", ["upgrade", "install name", "install file"])
@pytest.mark.parametrize("old", REPLACED_RPMS)
def test_dnf_replaces_the_old_package(
    old: str, how: str, rpms: dict[str, Path], tmp_path: Path
) -> None:
    root = _rpm_root(tmp_path / "root", rpms, old)
    reposd = _repo(tmp_path, rpms[OURS])
    if how == "upgrade":  # replaces the old packages by itself (upgrade; Obsoletes)
        args: tuple[str | Path, ...] = ("upgrade",)
    elif how == "install file":
        args = ("install", rpms[OURS])
    elif old.startswith("amazon-"):
        args = ("install", "ec2-net-utils")
    else:  # dnf 4 leaves an installed name alone; a version asks for the upgrade
        args = ("install", f"ec2-net-utils-{VERSION}")
    _dnf(root, reposd, *args)
    assert _installed(root) == {BASE, OURS}
    calls = _calls(root)
    assert calls[-len(SWITCH) :] == SWITCH and any(c.startswith(f"{old} postun") for c in calls)


def test_dnf_keeps_ours_against_aws_releases(rpms: dict[str, Path], tmp_path: Path) -> None:
    root = _rpm_root(tmp_path / "root", rpms, OURS)
    aws = [n for n in rpms if n.startswith("amazon-ec2-net-utils-")]
    reposd = _repo(tmp_path, rpms[OURS], *(rpms[n] for n in aws))
    # 1.7.3's `Obsoletes: ec2-net-utils < 1.7.3` does not reach 2.0.0; nothing of AWS's
    # is an upgrade of anything installed.
    _dnf(root, reposd, "upgrade")
    _dnf(root, reposd, "distro-sync")
    for nvr in aws:  # asked for by version: refused (3.0.0 by the Conflicts alone)
        out = _dnf(root, reposd, "install", nvr, ok=False)
        assert f"{OURS}.noarch conflicts with amazon-ec2-net-utils" in out, out
    # No Provides: removing AWS's tool by name leaves ec2net alone.
    _dnf(root, reposd, "remove", "amazon-ec2-net-utils")
    assert _installed(root) == {BASE, OURS}
    assert _calls(root) == []


def test_dnf_leaves_a_tool_something_requires(rpms: dict[str, Path], tmp_path: Path) -> None:
    # No Provides either: ours does not stand in for AWS's tool, the upgrade skips it.
    installed = ("amazon-ec2-net-utils-2.7.4-1", "needs-aws-1-1")
    root = _rpm_root(tmp_path / "root", rpms, *installed)
    _dnf(root, _repo(tmp_path, rpms[OURS]), "upgrade")
    assert _installed(root) == {BASE, *installed}


# --- .deb -------------------------------------------------------------------------------


def _deb(out: Path, name: str, version: str, extra: str = "", postrm: bool = False) -> Path:
    src = out / f"{name}_{version}"
    (src / "DEBIAN").mkdir(parents=True)
    (src / "usr/share/fake").mkdir(parents=True)
    (src / f"usr/share/fake/{name}_{version}").write_text(f"{name} {version}\n")
    (src / "DEBIAN/control").write_text(
        f"Package: {name}\nVersion: {version}\nArchitecture: all\n{extra}"
        f"Maintainer: tests <tests@example.invalid>\nDescription: stand-in for {name}\n"
    )
    if postrm:  # DPKG_ROOT: the root's log also when the scripts run outside it
        script = src / "DEBIAN/postrm"
        script.write_text(f'#!/bin/sh\necho "{name} postrm $*" >> "$DPKG_ROOT/stub.log"\n')
        script.chmod(0o755)
    deb = out / f"{name}_{version}_all.deb"
    _tool("dpkg-deb", "--root-owner-group", "-Zgzip", "-b", str(src), str(deb))
    return deb


@pytest.fixture(scope="session")
def debs(dist: Path, tools: None, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("fake-debs")
    ours = one(dist, f"ec2-net-utils_{VERSION}_all.deb")
    built = {"ours": ours}
    for version in AWS_DEBS:
        built[version] = _deb(out, "amazon-ec2-net-utils", version, postrm=True)
    # What ours depends on, as installed on this host (python3:any: Multi-Arch allowed).
    depends = run("dpkg-deb", "-f", str(ours), "Depends")
    for name in sorted({d.split()[0].split(":")[0] for d in re.split(r"[,|]", depends)}):
        query = subprocess.run(["dpkg-query", "-W", "-f", "${Version}", name],
                               capture_output=True, text=True, check=False)  # fmt: skip
        version = query.stdout.strip() if query.returncode == 0 and query.stdout else "99"
        built[f"dep:{name}"] = _deb(out, name, version, "Multi-Arch: allowed\n")
    return built


def _dpkg(root: Path, *args: str | Path, ok: bool = True, path: str = PATH) -> str:
    return _tool("dpkg", f"--root={root}", *map(str, args), ok=ok, env=_env(PATH=path))


def _status(root: Path, name: str) -> str:
    query = subprocess.run(
        ["dpkg-query", f"--admindir={root}/var/lib/dpkg", "-W", "-f", "${db:Status-Status}", name],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    return query.stdout.strip() if query.returncode == 0 else "not-installed"


def _deb_root(
    path: Path, debs: dict[str, Path], *names: str, init: str | None = "systemd"
) -> Path:
    root = _root(path, init)
    admin = root / "var/lib/dpkg"
    for d in ("info", "updates", "triggers"):
        (admin / d).mkdir(parents=True)
    (admin / "status").write_text("")
    (admin / "available").write_text("")
    _dpkg(root, "-i", *(deb for key, deb in debs.items() if key.startswith("dep:")))
    if names:
        _dpkg(root, "-i", *(debs[n] for n in names))
    _calls(root)
    return root


# Removed: its files are gone; "config-files" (rc) since it has a postrm, as after
# `apt remove` (dpkg never purges a package it removes for a conflict).
REMOVED = ("not-installed", "config-files")
DEB_START = [
    "py3compile -p ec2-net-utils",
    "deb-systemd-helper unmask ec2net-watch.service",
    "deb-systemd-helper --quiet was-enabled ec2net-watch.service",
    "deb-systemd-helper enable ec2net-watch.service",
    "systemctl --system daemon-reload",
]


@pytest.mark.parametrize("aws", AWS_DEBS)
def test_dpkg_install_removes_amazon(aws: str, debs: dict[str, Path], tmp_path: Path) -> None:
    root = _deb_root(tmp_path, debs, aws)
    out = _dpkg(root, "-i", debs["ours"])
    # Conflicts + Replaces, the old one not essential: dpkg removes it by itself.
    assert f"Removing amazon-ec2-net-utils ({aws}), to allow configuration" in out, out
    assert _status(root, "amazon-ec2-net-utils") in REMOVED
    assert _status(root, "ec2-net-utils") == "installed"
    assert [f for f in _fake_files(root) if f.startswith("amazon")] == []
    calls = _calls(root)
    assert calls[0] == "amazon-ec2-net-utils postrm remove"
    assert calls[1:7] == ["ec2net migrate", *DEB_START], calls
    assert "deb-systemd-invoke start ec2net-watch.service" in calls


def test_apt_install_removes_amazon(debs: dict[str, Path], tmp_path: Path) -> None:
    root = _deb_root(tmp_path / "root", debs, "2.4.1")
    # apt on the scratch root alone: its own configuration (APT_CONFIG: the host's is not
    # read), the root's dpkg database, dpkg --root (scripts in the chroot).
    for d in (
        "etc/apt/apt.conf.d",
        "etc/apt/preferences.d",
        "etc/apt/sources.list.d",
        "var/lib/apt/lists/partial",
        "var/cache/apt/archives/partial",
        "var/log/apt",
    ):
        (root / d).mkdir(parents=True)  # fmt: skip
    conf = root / "etc/apt/apt.conf"
    conf.write_text(
        f'Dir "{root}/";\nDir::State::status "{root}/var/lib/dpkg/status";\n'
        f'Dir::Bin::dpkg "/usr/bin/dpkg";\nDPkg::Options {{ "--root={root}"; }};\n'
        'APT::Sandbox::User "root";\n'
    )
    out = _tool("apt-get", "-y", "install", str(debs["ours"]), env=_env(APT_CONFIG=str(conf)))
    assert re.search(r"will be REMOVED:\n\s+amazon-ec2-net-utils\n", out), out
    assert _status(root, "amazon-ec2-net-utils") in REMOVED
    assert _status(root, "ec2-net-utils") == "installed"
    calls = _calls(root)
    assert calls[0] == "amazon-ec2-net-utils postrm remove"
    assert calls.index("ec2net migrate") < calls.index(
        "deb-systemd-invoke start ec2net-watch.service"
    )


def test_dpkg_refuses_amazon_beside_ours(debs: dict[str, Path], tmp_path: Path) -> None:
    root = _deb_root(tmp_path, debs, "ours")
    out = _dpkg(root, "-i", debs["2.7.4"], ok=False)
    assert "ec2-net-utils conflicts with amazon-ec2-net-utils" in out, out
    assert _status(root, "ec2-net-utils") == "installed"
    assert _status(root, "amazon-ec2-net-utils") in REMOVED


def test_dpkg_remove_then_purge(debs: dict[str, Path], tmp_path: Path) -> None:
    root = _deb_root(tmp_path, debs, "ours")
    (root / "run/ec2net/records").mkdir(parents=True)
    _dpkg(root, "-r", "ec2-net-utils")
    calls = _calls(root)
    assert calls[:3] == [
        "deb-systemd-invoke stop ec2net-watch.service",
        "deb-systemd-invoke stop ec2net@*.service",
        "ec2net down --all",
    ], calls
    assert not (root / "run/ec2net").exists()
    assert (root / "etc/ec2net/ec2net.toml").exists()  # a conffile: kept until purge
    assert _status(root, "ec2-net-utils") == "config-files"
    _dpkg(root, "--purge", "ec2-net-utils")
    assert not (root / "etc/ec2net/ec2net.toml").exists()
    assert _status(root, "ec2-net-utils") == "not-installed"


def test_dpkg_upgrade_touches_no_interface(debs: dict[str, Path], tmp_path: Path) -> None:
    root = _deb_root(tmp_path, debs, "ours")
    _dpkg(root, "-i", debs["ours"])  # the same version again: prerm upgrade, configure
    calls = _calls(root)
    assert "ec2net down --all" not in calls and not any("ec2net@" in c for c in calls)
    assert calls[:2] == ["py3clean -p ec2-net-utils", "ec2net migrate"], calls  # prerm, postinst
    assert "deb-systemd-invoke restart ec2net-watch.service" in calls


def test_dpkg_other_root_runs_no_ec2net(debs: dict[str, Path], tmp_path: Path) -> None:
    # --force-script-chrootless: the scripts run on this host with DPKG_ROOT set. What
    # they call is taken from a directory of stand-ins put first in PATH.
    root = _deb_root(tmp_path / "root", debs, "2.4.1", init=None)
    stubs, log = tmp_path / "stubs", tmp_path / "stubs.log"
    for name in ("ec2net", *(Path(s).name for s in STUBS)):
        _stub(stubs / name, str(log))
    log.write_text("")
    _dpkg(root, "--force-script-chrootless", "-i", debs["ours"], path=f"{stubs}:{PATH}")
    assert _status(root, "amazon-ec2-net-utils") in REMOVED
    assert _status(root, "ec2-net-utils") == "installed"
    (root / "run/ec2net").mkdir()
    _dpkg(root, "--force-script-chrootless", "-r", "ec2-net-utils", path=f"{stubs}:{PATH}")
    calls = _calls(root, log)
    assert calls and not any(c.startswith(("ec2net ", "python3")) for c in calls), calls
    assert not (root / "run/ec2net").exists()  # postrm: under DPKG_ROOT
