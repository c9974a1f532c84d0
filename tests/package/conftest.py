"""The packages, built from this tree once per session (`make packages rpm-el6`) for
every test module of tests/package."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from tests.package.helpers import TOOLS, run


@pytest.fixture(scope="session")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if os.geteuid() != 0:
        pytest.skip("package builds run as root (dpkg-buildpackage, rpmbuild)")
    missing = [t for t in TOOLS if shutil.which(t) is None]
    assert not missing, f"missing {missing}: run tools/setup.sh"
    out = tmp_path_factory.mktemp("dist")
    run("make", f"DIST={out}", "packages", "rpm-el6")
    return out


@pytest.fixture(scope="session")
def rpmdb(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # Debian's rpm keeps its database in $HOME: queries use a throwaway one.
    return tmp_path_factory.mktemp("rpmdb")
