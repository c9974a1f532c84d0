#!/bin/bash
# Set-up on a fresh Debian (bookworm) machine, as root, in two sets:
#   tools/setup.sh demo   what tools/demo uses, nothing more: the simulated VPC's tools
#                         and Debian's Python with its pyroute2 (no virtualenv)
#   tools/setup.sh        everything (tools/test, make): the demo set, the packages for
#                         the simulated VPC's extras, the system tier and the package
#                         builds, and a virtualenv (.venv) with the Python tools
# Idempotent: a second run installs nothing.
set -euo pipefail
cd "$(dirname "$0")/.."

SET=${1:-all}
case "$SET" in
    demo | all) ;;
    *) echo "usage: tools/setup.sh [demo|all]" >&2; exit 2 ;;
esac

# tools/demo: namespaces, links and routes (ip), the router's source/destination
# check (nft), ec2net and the simulator on the system Python.
DEMO_PACKAGES=(
    iproute2 nftables python3 python3-pyroute2
)
# The rest of what the tests, benchmarks and package builds need ("all" only).
APT_PACKAGES=(
    iproute2 nftables dnsmasq-base isc-dhcp-client procps
    python3 python3-venv python3-pyroute2 python3-pytest python3-tomli
    qemu-system-x86 qemu-utils debootstrap e2fsprogs cpio zstd
    # packages and man pages (Makefile, tests/package)
    make rpm debhelper dh-python pybuild-plugin-pyproject python3-all dpkg-dev lintian
    python3-setuptools python3-wheel python3-build python3-installer groff-base man-db
    systemd
    # tests/package/test_replaces.py: dnf transactions (upgrade, Obsoletes, Conflicts)
    # on scratch roots from a local repository
    dnf createrepo-c
    # property-based unit tests (tests/unit/test_properties.py) under /usr/bin/python3
    python3-hypothesis
    # the real RHEL network-scripts in tests/world (ipcalc is ipcalc-ng on RHEL)
    ipcalc-ng
    # ifup-eth's duplicate-address check and announcements (/sbin/arping on RHEL)
    iputils-arping
    # ifup-eth's ETHTOOL_OPTS and link checks
    ethtool
    # the metrics tests parse ec2net's output with prometheus_client's parser
    python3-prometheus-client
    # tests/fault/test_clocks.py: the daemon's wall clock stepped (libfaketime), never
    # the host's
    faketime
)
missing=()
wanted=("${DEMO_PACKAGES[@]}")
[ "$SET" = demo ] || wanted+=("${APT_PACKAGES[@]}")
for pkg in "${wanted[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
    echo "setup: installing ${missing[*]}"
    apt-get update -q
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

[ "$SET" = all ] || exit 0

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

# promtool (the alert rules' tests, tests/world/test_alerts.py): taken from Debian's
# prometheus package, unpacked under .cache without installing the package, whose
# postinst would set up and start a Prometheus server on this machine.
PROMTOOL=.cache/prometheus/usr/bin/promtool
if [ ! -x "$PROMTOOL" ]; then
    tmp=$(mktemp -d)
    if ! (cd "$tmp" && apt-get download -q prometheus); then
        apt-get update -q
        (cd "$tmp" && apt-get download -q prometheus)
    fi
    mkdir -p .cache/prometheus
    dpkg-deb -x "$tmp"/prometheus_*.deb .cache/prometheus
    rm -rf "$tmp"
fi
