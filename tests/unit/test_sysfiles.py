"""udev rule and systemd units: rendered, verified by systemd-analyze, hardened."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from ec2net.sysfiles import RULES, UDEV_DIR, UNIT_DIR, UNITS, install, render


def test_udev_rule_starts_unit_on_add_only() -> None:
    rule = render(("ena", "virtio_net"), "/usr/bin")[f"{UDEV_DIR}/{RULES}"]
    active = [ln for ln in rule.splitlines() if ln and not ln.startswith("#")]
    assert len(active) == 1
    assert 'ACTION=="add"' in active[0]
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
    assert len(install(tmp_path, ("ena",), "/usr/bin")) == len(UNITS) + 1
    assert install(tmp_path, ("ena",), "/usr/bin") == []
