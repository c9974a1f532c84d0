"""The networkd activator checks which .network file networkd really applied."""

from __future__ import annotations

from pathlib import Path

import pytest

from ec2net.backends.activators import NetworkdActivator
from ec2net.errors import ApplyFailed

OURS = Path("/run/systemd/network/00-ec2net-ens6.network")


def state(tmp_path: Path, network_file: str) -> NetworkdActivator:
    links = tmp_path / "links"
    links.mkdir()
    (links / "7").write_text(f"ADMIN_STATE=configured\nNETWORK_FILE={network_file}\n")
    return NetworkdActivator(links, wait=0.2)


def test_ours_applied(tmp_path: Path) -> None:
    state(tmp_path, str(OURS))._check_applied("ens6", 7, OURS)


def test_an_earlier_file_that_matches_is_named(tmp_path: Path) -> None:
    act = state(tmp_path, "/etc/systemd/network/00-aaa.network")
    with pytest.raises(ApplyFailed, match=r"00-aaa\.network"):
        act._check_applied("ens6", 7, OURS)


def test_not_reported_yet_is_not_an_error(tmp_path: Path) -> None:
    (tmp_path / "links").mkdir()
    NetworkdActivator(tmp_path / "links", wait=0.1)._check_applied("ens6", 7, OURS)
