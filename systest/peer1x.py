"""AWS's amazon-ec2-net-utils 1.7.3, the original's network-scripts design, as Amazon
Linux 2 users have it: an RPM, in a guest with RHEL 7's network-scripts.

Never part of this repository: the RPM is built on the host from the release tree
(``EC2NET_SYSTEST_PEER1X``, default ``../shared/peers/amazon-ec2-net-utils-1.7.3``
beside the checkout) with the release's own spec, and cached under the tree's content
hash. Debian's rpm lacks Amazon Linux's macros; the build defines what the spec uses
(``amzn 2``, ``_unitdir``, ``_udevrulesdir``) and runs brp-compress with bash (its
``read -d`` is a bashism; Debian's /bin/sh is dash). Its dependencies are dpkg packages,
hence ``--nodeps`` at build and install time.

What the release expects of the system and a Debian guest lacks (besides what
rhel_guest.py provides): ``eth*`` names (the guest boots with ``net.ifnames=0``), and
RHEL's dhclient-script, which sources ``/etc/dhcp/dhclient-enter-hooks.d/*.sh`` (Amazon's
dhclient) and each executable ``/etc/dhcp/dhclient.d/NAME.sh``, calling ``NAME_config``
after a lease is bound, renewed or rebound (IPv4 and IPv6) and ``NAME_restore`` when it
ends, and which honours ``DEFROUTE=no`` and ``PEERDNS=no`` of the interface's ifcfg file.
Debian's dhclient-script runs hooks only from files whose names have no dot, and knows
nothing of ifcfg files: the two hooks below give it RHEL's behaviour.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from systest import peer

VERSION = "1.7.3"
NAME = "amazon-ec2-net-utils"
DEFAULT_TREE = Path("..") / "shared" / "peers" / f"{NAME}-{VERSION}"
RPM_NAME = f"{NAME}-{VERSION}-1.noarch.rpm"
# Where the guest keeps the peers' package files (reinstalls work offline).
GUEST_PACKAGES = "/root/peer-packages"

# What the spec needs that Debian's rpm does not define (Amazon Linux 2's values).
RPM_DEFINES = (
    "amzn 2",
    "_unitdir /usr/lib/systemd/system",
    "_udevrulesdir /usr/lib/udev/rules.d",
    "__brp_compress /bin/bash /usr/lib/rpm/brp-compress %{?_prefix}",
)

# Sourced by Debian's dhclient-script before it acts (run-parts skips names with dots).
ENTER_HOOK_PATH = "/etc/dhcp/dhclient-enter-hooks.d/systest-rhel-enter"
ENTER_HOOK = """\
# systest: what RHEL's (Amazon's) dhclient-script does before acting on a lease.
# Sourced by Debian's dhclient-script.
# 1. Amazon's dhclient sources /etc/dhcp/dhclient-enter-hooks.d/*.sh, which Debian's
#    run-parts never lists (dots in the name).
for systest_hook in /etc/dhcp/dhclient-enter-hooks.d/*.sh; do
    [ -f "$systest_hook" ] && . "$systest_hook"
done
unset systest_hook
# 2. RHEL's script honours the interface's ifcfg file: DEFROUTE=no adds no default
#    route to main, PEERDNS=no leaves resolv.conf alone.
systest_ifcfg="/etc/sysconfig/network-scripts/ifcfg-${interface}"
if [ -r "$systest_ifcfg" ]; then
    if grep -qs '^[[:space:]]*DEFROUTE=["]*no' "$systest_ifcfg"; then
        new_routers=""
    fi
    if grep -qs '^[[:space:]]*PEERDNS=["]*no' "$systest_ifcfg"; then
        make_resolv_conf() { :; }
    fi
fi
unset systest_ifcfg
"""

# Sourced by Debian's dhclient-script after it acted: RHEL's dhclient.d calls.
EXIT_HOOK_PATH = "/etc/dhcp/dhclient-exit-hooks.d/systest-rhel-dhclient-d"
EXIT_HOOK = """\
# systest: RHEL's dhclient-script calls NAME_config of each executable
# /etc/dhcp/dhclient.d/NAME.sh once a lease is in place (IPv4 and IPv6) and
# NAME_restore once it is gone. Sourced by Debian's dhclient-script; each hook runs in
# a subshell, so one that exits cannot end the script.
case "$reason" in
    BOUND|RENEW|REBIND|REBOOT|BOUND6|RENEW6|REBIND6) systest_action=config ;;
    EXPIRE|FAIL|RELEASE|STOP|EXPIRE6|RELEASE6|STOP6) systest_action=restore ;;
    *) systest_action= ;;
esac
if [ -n "$systest_action" ]; then
    for systest_f in /etc/dhcp/dhclient.d/*.sh; do
        [ -x "$systest_f" ] || continue
        systest_sub=${systest_f##*/}
        systest_sub=${systest_sub%.sh}
        ( . "$systest_f" && "${systest_sub}_${systest_action}" )
    done
fi
unset systest_action systest_f systest_sub
"""

# The release's ec2net-ifup@.service is BindsTo= its device without After= it, and its
# udev rule starts it from RUN, before systemd sees the device plugged: systemd 219
# (Amazon Linux 2) lets it run, systemd 252 stops it at once ("Unnecessary job was
# removed"). Ordering it after the device makes the start wait for it, as 219 did.
UNIT_DROPIN_PATH = "/etc/systemd/system/ec2net-ifup@.service.d/systest-al2.conf"
UNIT_DROPIN = """\
# systest: Amazon Linux 2's systemd (219) ran this unit although its device was not
# plugged yet; later systemd stops it unless it waits for the device.
[Unit]
After=sys-subsystem-net-devices-%i.device
"""

# 1.7.3 writes `supersede dhcp-server-identifier 255.255.255.255;` into each ENI's
# dhclient-ethN.conf (broadcast requests for same-subnet ENIs). EC2's DHCP server
# answers such a REQUEST; the simulated VPC's dnsmasq (authoritative) NAKs it ("wrong
# server-ID") and dhclient loops. The guest's dhclient (diverted) reads that file
# without that one line; everything else of the file and the command stands.
DHCLIENT = "/usr/sbin/dhclient"
# in a directory of its own, so that the process is still called "dhclient" (comm)
DHCLIENT_REAL = "/usr/lib/systest-dhclient/dhclient"
DHCLIENT_WRAPPER = f"""\
#!/bin/bash
# systest: dhclient, less 1.7.3's `supersede dhcp-server-identifier` (see peer1x.py):
# the simulated VPC's dnsmasq NAKs a REQUEST naming a server other than itself.
args=()
while (($#)); do
    if [ "$1" = -cf ] && [ -n "${{2:-}}" ] &&
        grep -qs '^supersede dhcp-server-identifier' "$2"; then
        mkdir -p /run/systest-dhclient
        conf=/run/systest-dhclient/${{2##*/}}
        grep -v '^supersede dhcp-server-identifier' "$2" > "$conf"
        args+=(-cf "$conf")
        shift 2
        continue
    fi
    args+=("$1")
    shift
done
exec {DHCLIENT_REAL} "${{args[@]}}"
"""

# Amazon Linux 2 enables the boot scan by preset; the spec's %post does not.
ENABLED_UNITS = ("ec2net-scan.service",)
# What its scripts run that neither the base nor rhel_guest.PACKAGES has.
PACKAGES = ("rpm", "curl", "bsdextrautils")  # bsdextrautils: rev


PeerMissing = peer.PeerMissing


def tree() -> Path:
    env = os.environ.get("EC2NET_SYSTEST_PEER1X")
    path = Path(env) if env else (peer.REPO / DEFAULT_TREE).resolve()
    if not (path / f"{NAME}.spec").is_file():
        raise PeerMissing(
            f"{NAME} {VERSION} not found at {path} "
            "(set EC2NET_SYSTEST_PEER1X to its source directory)"
        )
    return path


def digest() -> str:
    """The release tree's content hash and this recipe's: the RPM's and the image's key."""
    h = hashlib.sha256(peer.tree_digest(tree()).encode())
    h.update("\0".join(RPM_DEFINES).encode())
    return h.hexdigest()[:16]


def build_rpm(cache: Path) -> Path:
    """The release's RPM from its own spec, built once per tree content (`cache`)."""
    out_dir = cache / f"peer-rpm-{NAME}-{VERSION}-{digest()}"
    rpm = out_dir / RPM_NAME
    if rpm.is_file():
        return rpm
    src = tree()
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".tmp-peer-rpm-", dir=cache) as tmp:
        work = Path(tmp)
        (work / "SOURCES").mkdir()
        # Source: .../archive/VERSION.tar.gz, unpacking to NAME-VERSION/
        subprocess.run(
            [
                "tar",
                "-C",
                str(src),
                "--sort=name",
                "--owner=0",
                "--group=0",
                f"--transform=s,^\\.,{NAME}-{VERSION},",
                "-czf",
                str(work / "SOURCES" / f"{VERSION}.tar.gz"),
                ".",
            ],
            check=True,
        )
        argv = ["rpmbuild", "-bb", "--nodeps", "--nocheck", "--dbpath", str(work / "db")]
        for define in (
            f"_topdir {work}",
            f"_sourcedir {work}/SOURCES",
            f"_rpmdir {work}/out",
            "_build_name_fmt %{NAME}-%{VERSION}-%{RELEASE}.%{ARCH}.rpm",
            *RPM_DEFINES,
        ):
            argv += ["--define", define]
        argv.append(str(src / f"{NAME}.spec"))
        proc = subprocess.run(argv, check=False, capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"rpmbuild of {NAME} {VERSION} failed:\n{proc.stdout[-3000:]}")
        partial = work / "final"
        partial.mkdir()
        shutil.copyfile(work / "out" / RPM_NAME, partial / RPM_NAME)
        os.chmod(partial, 0o755)  # noqa: S103 - a package cache, not secret
        os.rename(partial, out_dir)
    return rpm


def stage(root: Path, rpm: Path) -> str:
    """Put the RPM, the dhclient-script hooks and the unit's drop-in into the guest tree
    (the drop-in lives in /etc, so it outlives the package, as an admin's would); returns
    the RPM's path in the guest (the image build then runs `rpm -i` in the chroot)."""
    dst = root / GUEST_PACKAGES.lstrip("/")
    dst.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(rpm, dst / rpm.name)
    for path, text in (
        (ENTER_HOOK_PATH, ENTER_HOOK),
        (EXIT_HOOK_PATH, EXIT_HOOK),
        (UNIT_DROPIN_PATH, UNIT_DROPIN),
        (f"{DHCLIENT}.systest", DHCLIENT_WRAPPER),
    ):
        target = root / path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
        target.chmod(0o755 if text.startswith("#!") else 0o644)
    return f"{GUEST_PACKAGES}/{rpm.name}"


def divert_dhclient() -> list[list[str]]:
    """The chroot commands that put DHCLIENT_WRAPPER in dhclient's place (run after
    `stage`, which writes the wrapper as DHCLIENT + '.systest')."""
    return [
        ["mkdir", "-p", str(Path(DHCLIENT_REAL).parent)],
        ["dpkg-divert", "--local", "--rename", "--divert", DHCLIENT_REAL, "--add", DHCLIENT],
        ["mv", f"{DHCLIENT}.systest", DHCLIENT],
    ]


RPM_INSTALL = ("rpm", "--force-debian", "--nodeps")
