#!/bin/bash
# Set-up shared by tools/test and tools/demo on a fresh Debian (bookworm) machine, as
# root: Debian packages for the simulated VPC and the system tier, and a virtualenv
# (.venv) with the Python tools. Idempotent: a second run installs nothing.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(
    iproute2 nftables dnsmasq-base isc-dhcp-client procps
    python3 python3-venv python3-pyroute2 python3-pytest python3-tomli
    qemu-system-x86 qemu-utils debootstrap e2fsprogs cpio zstd
    # packages and man pages (Makefile, tests/package)
    make rpm debhelper dh-python pybuild-plugin-pyproject python3-all dpkg-dev lintian
    python3-setuptools python3-wheel python3-build python3-installer groff-base man-db
    systemd
    # the real RHEL network-scripts in tests/world (ipcalc is ipcalc-ng on RHEL)
    ipcalc-ng
    # ifup-eth's duplicate-address check and announcements (/sbin/arping on RHEL)
    iputils-arping
    # ifup-eth's ETHTOOL_OPTS and link checks
    ethtool
)
missing=()
for pkg in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
    echo "setup: installing ${missing[*]}"
    apt-get update -q
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
stamp=.venv/.requirements
if ! cmp -s requirements-dev.txt "$stamp"; then
    .venv/bin/pip install -q --disable-pip-version-check -r requirements-dev.txt
    .venv/bin/pip install -q --disable-pip-version-check --no-deps -e .
    cp requirements-dev.txt "$stamp"
fi
