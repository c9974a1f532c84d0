"""udev rule and systemd units: rendered, verified by systemd-analyze, hardened."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from ec2net import cli
from ec2net.manpage import verbs
from ec2net.sysfiles import (
    INIT_CHOICES,
    RULES,
    UDEV_DIR,
    UNIT_DIR,
    UNITS,
    UPSTART_DIR,
    UPSTART_JOBS,
    detect_init,
    install,
    render,
)


def test_udev_rule_asks_systemd_for_the_unit() -> None:
    rule = render(("ena", "virtio_net"), "/usr/bin")[f"{UDEV_DIR}/{RULES}"]
    active = [ln for ln in rule.splitlines() if ln and not ln.startswith("#")]
    assert len(active) == 1
    # move: after a rename systemd sees the device only then (the system tier proves it)
    assert 'ACTION=="add|move"' in active[0]
    assert 'ENV{ID_NET_DRIVER}=="ena|virtio_net"' in active[0]
    assert 'ENV{SYSTEMD_WANTS}+="ec2net@$name.service"' in active[0]
    assert "RUN" not in active[0]  # no work in udev's own process


def test_units_are_bounded_and_hardened() -> None:
    files = render(("ena",), "/usr/bin")
    per_if = files[f"{UNIT_DIR}/ec2net@.service"]
    assert "BindsTo=sys-subsystem-net-devices-%i.device" in per_if
    assert "ExecStop=/usr/bin/ec2net down %I" in per_if
    assert "RestartPreventExitStatus=2" in per_if
    assert re.search(r"TimeoutStartSec=\d+", per_if)
    for unit in UNITS:
        text = files[f"{UNIT_DIR}/{unit}"]
        assert "CapabilityBoundingSet=CAP_NET_ADMIN\n" in text
        assert "ProtectSystem=strict" in text
        assert "RestrictAddressFamilies=AF_NETLINK AF_INET AF_INET6 AF_UNIX" in text
        assert "@" not in text.replace("ec2net@", "").replace("@system-service", "")
    assert "Type=notify" in files[f"{UNIT_DIR}/ec2net-watch.service"]


def test_the_udev_unit_stands_aside_while_the_daemon_runs() -> None:
    """ec2net@IFACE starts no process while ec2net-watch is ready: the file its
    condition names is the one the daemon's unit creates after READY=1 and removes after
    it stopped, however (ExecStopPost runs after a crash too)."""
    files = render(("ena",), "/usr/bin")
    per_if = files[f"{UNIT_DIR}/ec2net@.service"]
    watch = files[f"{UNIT_DIR}/ec2net-watch.service"]
    [marker] = re.findall(r"^ConditionPathExists=!(\S+)$", per_if, re.M)
    assert f"ExecStartPost=/usr/bin/touch {marker}" in watch
    assert f"ExecStopPost=/usr/bin/rm -f {marker}" in watch
    assert marker.startswith("/run/ec2net/")  # writable by the hardened unit
    assert "ReadWritePaths=/run/ec2net" in watch


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze")
def test_systemd_analyze_verify(tmp_path: Path) -> None:
    bindir = tmp_path / "bin"
    bindir.mkdir()
    exe = bindir / "ec2net"
    exe.write_text("#!/bin/sh\n")
    exe.chmod(0o755)
    install(tmp_path, ("ena",), str(bindir))
    unit_dir = tmp_path / UNIT_DIR
    units = [str(unit_dir / "ec2net-scan.service"), str(unit_dir / "ec2net-watch.service")]
    # a template is verified through an instance of it
    (unit_dir / "ec2net@eth1.service").symlink_to(unit_dir / "ec2net@.service")
    units.append(str(unit_dir / "ec2net@eth1.service"))
    proc = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", *units],
        capture_output=True, text=True, check=False, env={"SYSTEMD_UNIT_PATH": f"{unit_dir}:"},
    )  # fmt: skip
    problems = [
        ln for ln in proc.stderr.splitlines()
        if "ec2net" in ln and "sys-subsystem-net-devices" not in ln
    ]  # fmt: skip
    assert proc.returncode == 0 and not problems, proc.stderr
    sec = subprocess.run(
        ["systemd-analyze", "security", "--offline=yes", str(unit_dir / "ec2net-watch.service")],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    score = re.search(r"Overall exposure level for \S+: ([\d.]+)", sec.stdout)
    assert score is not None, sec.stdout + sec.stderr
    print("systemd-analyze security exposure (ec2net-watch):", score.group(1))
    assert float(score.group(1)) < 5.0  # a bare unit scores 9.6


def test_install_is_idempotent(tmp_path: Path) -> None:
    assert len(install(tmp_path, ("ena",), "/usr/bin")) == len(UNITS) + 3  # + rule, confs
    assert install(tmp_path, ("ena",), "/usr/bin") == []


def _host(root: Path, *paths: str) -> Path:
    for rel in paths:
        path = root / rel
        if rel.endswith("/"):
            path.mkdir(parents=True, exist_ok=True)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("")
    return root


def test_detect_init(tmp_path: Path) -> None:
    systemd = _host(tmp_path / "a", "run/systemd/system/", "sbin/initctl", "etc/init/")
    assert detect_init(systemd) == "systemd"  # booted systemd wins over leftovers
    upstart = _host(tmp_path / "b", "sbin/initctl", "etc/init/", "run/")
    assert detect_init(upstart) == "upstart"
    assert detect_init(_host(tmp_path / "c", "sbin/initctl")) == "systemd"  # no job dir
    assert detect_init(_host(tmp_path / "d", "etc/")) == "systemd"  # chroot, container


def test_upstart_jobs_replace_units_and_rule() -> None:
    files = render(("ena",), "/opt/ec2net/bin", "upstart")
    assert set(files) == {f"{UPSTART_DIR}/{job}" for job in UPSTART_JOBS}
    scan = files[f"{UPSTART_DIR}/ec2net-scan.conf"]
    active = [ln.strip() for ln in scan.splitlines() if ln.strip() and not ln.startswith("#")]
    assert "start on stopped rc RUNLEVEL=[2345]" in active
    assert "task" in active
    assert any(ln.startswith("/opt/ec2net/bin/ec2net scan") for ln in active)
    watch = files[f"{UPSTART_DIR}/ec2net-watch.conf"]
    assert "respawn" in watch.splitlines() and "/opt/ec2net/bin/ec2net watch" in watch
    assert "@" not in "".join(files.values())
    with pytest.raises(ValueError, match="unknown init"):
        render(("ena",), "/usr/bin", "sysv")


def test_install_auto_follows_the_host(tmp_path: Path) -> None:
    _host(tmp_path, "sbin/initctl", "etc/init/")
    written = install(tmp_path, ("ena",), "/usr/bin", "auto")
    assert sorted(p.name for p in written) == sorted(UPSTART_JOBS)
    assert not (tmp_path / UNIT_DIR).exists() and not (tmp_path / UDEV_DIR).exists()


def test_cli_root_defaults_to_systemd(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _host(tmp_path, "sbin/initctl", "etc/init/")  # looks like upstart: --root ignores that
    env = {"EC2NET_CONFIG": "/dev/null"}
    with pytest.MonkeyPatch.context() as mp:
        for k, v in env.items():
            mp.setenv(k, v)
        assert (
            cli.main(["install-system-files", "--root", str(tmp_path), "--bindir", "/usr/bin"])
            == 0
        )
        assert (tmp_path / UNIT_DIR / "ec2net@.service").is_file()
        assert not (tmp_path / UPSTART_DIR / "ec2net-scan.conf").exists()
        args = ["install-system-files", "--root", str(tmp_path), "--init", "upstart"]
        assert cli.main(args) == 0
    assert (tmp_path / UPSTART_DIR / "ec2net-scan.conf").is_file()
    assert str(tmp_path / UPSTART_DIR / "ec2net-watch.conf") in capsys.readouterr().out


def test_udev_override_goes_to_etc_with_the_configured_drivers(tmp_path: Path) -> None:
    from ec2net.sysfiles import install_udev_override

    assert install_udev_override(tmp_path, ("ena", "virtio_net"))
    rule = (tmp_path / "etc/udev/rules.d/81-ec2net.rules").read_text()
    assert "ena|virtio_net" in rule
    assert not install_udev_override(tmp_path, ("ena", "virtio_net"))  # unchanged
    assert not (tmp_path / "usr").exists()  # the packaged files are not touched


def test_cli_init_choices_are_sysfiles() -> None:
    sub = verbs(cli.build_parser())["install-system-files"]
    init = next(a for a in sub._actions if a.dest == "init")
    assert tuple(init.choices or ()) == INIT_CHOICES == ("auto", "systemd", "upstart")


def test_netlink_backend_marks_enis_managed_by_ec2net(tmp_path: Path) -> None:
    """backend.name netlink: networkd 256+ and NetworkManager skip the ENIs (a link whose
    ID_NET_MANAGED_BY names someone else); the primary (Nitro PCI slot 5) is never
    marked. Every other backend: the line stays a comment."""

    def active(rule: str) -> list[str]:
        return [ln for ln in rule.splitlines() if ln and not ln.startswith("#")]

    plain = render(("ena",), "/usr/bin")[f"{UDEV_DIR}/{RULES}"]
    assert not any("ID_NET_MANAGED_BY" in ln for ln in active(plain))
    marked = active(render(("ena",), "/usr/bin", managed_by=True)[f"{UDEV_DIR}/{RULES}"])
    assert len(marked) == 2 and marked[0] == active(plain)[0]
    line = marked[1]
    assert 'ENV{ID_NET_MANAGED_BY}="ec2net"' in line and 'ENV{ID_NET_DRIVER}=="ena"' in line
    assert 'ENV{ID_PATH}!="pci-0000:00:05.0|xen-vif-0"' in line
    # the CLI reads backend.name, for the packaged rule and the /etc override alike
    conf = tmp_path / "ec2net.toml"
    conf.write_text('[backend]\nname = "netlink"\n')
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("EC2NET_CONFIG", str(conf))
        args = ["install-system-files", "--root", str(tmp_path), "--bindir", "/usr/bin"]
        assert cli.main(args) == 0
        assert cli.main([*args[:3], "--udev-override"]) == 0
    for rel in (f"{UDEV_DIR}/{RULES}", f"etc/udev/rules.d/{RULES}"):
        assert 'ID_NET_MANAGED_BY}="ec2net"' in "\n".join(active((tmp_path / rel).read_text()))
