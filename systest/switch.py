"""Switching a live instance from AWS's tool to ec2net, traffic flowing, and back.

The guest runs the old tool (AWS's 1.7.3 RPM on RHEL 7 network-scripts, Debian's 2.4.1
or AWS's 2.7.4 .deb on networkd) with two ENIs it configured; a `ContinuousProbe` keeps
real TCP echoes going from the client and the peer to every address of the instance (a
thread per pair, one probe every `interval` with a short timeout, every failure and the
longest gap between successes recorded); then the upgrade a user would run (`rpm -U`,
`apt install ./ec2-net-utils_*.deb`). Afterwards each ENI must be ec2net's and nothing
the old tool made may be left or doubled; a reboot and a detach must leave what a fresh
ec2net configuration of the same ENIs has (the ENIs plugged again, on the same guest);
removing ec2net must leave none of its files, objects or records, and the old package
must install and work again. Everything is measured and returned; tests assert.
"""

from __future__ import annotations

import ipaddress
import json
import shlex
import socket
import subprocess
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from ec2net.model import RTPROT_EC2NET
from ec2sim.netns import run_in_netns
from ec2sim.probe import echoes
from systest import install
from systest.agent import Result
from systest.guest_files import AWS_DRIVER_EDITS, ECHO_PORT
from systest.image import PEER_PACKAGES, split_variant
from systest.peer1x import RPM_INSTALL
from systest.vpc import OTHER_SUBNET_MAC, SAME_SUBNET_MAC, Plugged, Reach, VpcGuest, addresses

MARK = "# Managed by ec2net"
IFCFG_DIR = "/etc/sysconfig/network-scripts"
# Where the old tools and ec2net keep per-interface files, beyond vpc's STATE_DIRS.
EXTRA_DIRS = (IFCFG_DIR, "/etc/dhcp", "/run/systemd/network")
EC2NET_UNITS = ("ec2net-watch.service", "ec2net-scan.service")
PROBE_INTERVAL = 0.15
PROBE_TIMEOUT = 1.0
# After every ENI is ec2net's, the probes go on this long (late effects of the switch).
TAIL = 10.0

# ------------------------------------------------------------------ continuous probe


def probe_once(ns: str, addr: str, timeout: float) -> Optional[str]:
    """One TCP echo from `ns` to the guest's echo service at `addr`: None when it echoed;
    "connect" when the handshake did not complete (the network: routing, the check);
    "echo" when it did but the echo did not come back in time (the guest's echo service
    starved of CPU: the handshake is the kernel's, the echo user space's)."""
    ip = ipaddress.ip_address(addr)
    family = socket.AF_INET6 if ip.version == 6 else socket.AF_INET
    try:
        sock = run_in_netns(ns, lambda: socket.socket(family, socket.SOCK_STREAM))
    except OSError:
        return "connect"
    with sock:
        sock.settimeout(timeout)
        try:
            sock.connect((addr, ECHO_PORT))
        except OSError:
            return "connect"
        return None if echoes(sock, b"systest-switch\n") else "echo"


@dataclass
class PairLog:
    source: str
    addr: str
    probes: int = 0
    failures: list[float] = field(default_factory=list)  # seconds after the start
    connect_failures: int = 0  # of those, the handshake did not complete
    longest_gap: float = 0.0  # between two successes (or the start and the first)
    last_ok: Optional[float] = None


@dataclass
class ProbeReport:
    seconds: float
    pairs: list[PairLog]
    marks: list[tuple[float, str]]

    @property
    def failed(self) -> int:
        return sum(len(p.failures) for p in self.pairs)

    @property
    def connect_failed(self) -> int:
        return sum(p.connect_failures for p in self.pairs)

    def connect_failed_of(self, addrs: set[str]) -> int:
        """Probes without a handshake, of these addresses only."""
        return sum(p.connect_failures for p in self.pairs if p.addr in addrs)

    @property
    def probes(self) -> int:
        return sum(p.probes for p in self.pairs)

    def gap_by_addr(self) -> dict[str, float]:
        """The longest gap between successes per address (the worse of both sources)."""
        out: dict[str, float] = {}
        for p in self.pairs:
            out[p.addr] = max(out.get(p.addr, 0.0), p.longest_gap)
        return out

    def failures(self) -> list[str]:
        return [
            f"{p.addr} from {p.source}: {len(p.failures)} failed "
            f"({p.connect_failures} no handshake) at "
            + ", ".join(f"{t:.1f}" for t in p.failures[:8])
            + (" ..." if len(p.failures) > 8 else "")
            + " s"
            for p in self.pairs
            if p.failures
        ]

    def summary(self) -> str:
        marks = "; ".join(f"{label} at {t:.1f} s" for t, label in self.marks)
        gaps = ", ".join(f"{a} {g * 1000:.0f} ms" for a, g in self.gap_by_addr().items())
        return (
            f"{self.probes} probes in {self.seconds:.1f} s, {self.failed} failed, "
            f"{self.connect_failed} of them without a handshake "
            f"({marks}); longest gap per address: {gaps}"
        )


class ContinuousProbe:
    """Real TCP echo probes of every (source, address) pair, a thread each, every
    `interval` seconds, each bounded by `timeout`, until `stop()`."""

    def __init__(
        self,
        g: VpcGuest,
        addrs: Sequence[str],
        sources: Optional[Mapping[str, str]] = None,
        interval: float = PROBE_INTERVAL,
        timeout: float = PROBE_TIMEOUT,
    ) -> None:
        self.g = g
        self.interval = interval
        self.timeout = timeout
        srcs = dict(sources or g.sources())
        self.pairs = [(n, ns, PairLog(n, a)) for n, ns in srcs.items() for a in addrs]
        self.marks: list[tuple[float, str]] = []
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.t0 = 0.0

    def _run(self, ns: str, log: PairLog) -> None:
        last = self.t0
        while not self._stop.is_set():
            t = time.monotonic()
            kind = probe_once(ns, log.addr, self.timeout)
            now = time.monotonic()
            log.probes += 1
            if kind is None:
                log.longest_gap = max(log.longest_gap, now - last)
                last = now
                log.last_ok = now - self.t0
            else:
                log.failures.append(t - self.t0)
                log.connect_failures += kind == "connect"
            self._stop.wait(max(0.0, self.interval - (time.monotonic() - t)))
        # a pair failing at the end counts its open gap too
        log.longest_gap = max(log.longest_gap, time.monotonic() - last - self.interval)

    def start(self) -> ContinuousProbe:
        self.t0 = time.monotonic()
        for name, ns, log in self.pairs:
            t = threading.Thread(target=self._run, args=(ns, log), name=f"probe-{name}")
            t.daemon = True
            t.start()
            self._threads.append(t)
        return self

    def mark(self, label: str) -> None:
        self.marks.append((time.monotonic() - self.t0, label))

    def stop(self) -> ProbeReport:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=self.timeout + 5)
        return ProbeReport(time.monotonic() - self.t0, [p for _, _, p in self.pairs], self.marks)


# ------------------------------------------------------------------ guest state


def eni_state(g: VpcGuest, p: Plugged) -> dict[str, Any]:
    """What the guest holds for the ENI (guest_tools eni-state)."""
    args = ["eni-state", "--ifname", p.ifname, "--table", str(p.table)]
    for a in addresses(p.eni):
        args += ["--addr", a]
    for d in EXTRA_DIRS:
        args += ["--dir", d]
    state: dict[str, Any] = json.loads(g.tools(*args))
    state["ifname"] = p.ifname
    return state


_VOLATILE = ("valid_life_time", "preferred_life_time", "expires", "label")


def _clean(item: dict[str, Any], ifname: str = "") -> str:
    """One object as a stable string: lifetimes left out, the ENI's own interface name
    (which a replug may change) as IF."""
    out = {k: v for k, v in item.items() if k not in _VOLATILE}
    for key in ("dev", "oif", "iif"):
        if ifname and out.get(key) == ifname:
            out[key] = "IF"
    # the router's link-local address of an RA changes with its port (a replug makes a
    # new tap); the VPC's fixed fe80:ec2::1 stays as it is
    gw = str(out.get("gateway", ""))
    if gw.startswith("fe80:") and gw != "fe80:ec2::1":
        out["gateway"] = "RA-ROUTER"
    return json.dumps(out, sort_keys=True)


def comparable(state: dict[str, Any]) -> dict[str, list[str]]:
    """The kernel objects of an ENI without lifetimes, link-local addresses and their
    routes: what a fresh configuration of the same ENI must equal."""
    n = str(state.get("ifname", ""))
    return {
        "addrs": sorted(
            _clean(a, n) for a in state["addrs"] if not str(a.get("local", "")).startswith("fe80:")
        ),
        "rules": sorted(_clean(r, n) for r in state["rules"]),
        "routes": sorted(_clean(r, n) for r in state["routes"]),
        "main": sorted(
            _clean(r, n) for r in state["main"] if not str(r.get("dst", "")).startswith("fe80:")
        ),
    }


def differences(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    """`a` against `b` (both eni_state), as lines "- only in a" / "+ only in b"."""
    ca, cb = comparable(a), comparable(b)
    out = []
    for kind in ca:
        out += [f"{kind} - {x}" for x in ca[kind] if x not in cb[kind]]
        out += [f"{kind} + {x}" for x in cb[kind] if x not in ca[kind]]
    return out


def _ours(first_line: str) -> bool:
    return first_line.startswith(MARK)


def _proto(item: dict[str, Any]) -> str:
    return str(item.get("protocol", ""))


def old_tool_left(kind: str, p: Plugged, state: dict[str, Any]) -> list[str]:
    """What the old tool (`kind`: "1x" or "2x") still has for the ENI: its files, its
    rules and routes, its main-table default, its dhclients and units; also any rule
    doubled."""
    n = p.ifname
    left = []
    files: dict[str, str] = state["files"]
    for path, first in files.items():
        name = Path(path).name
        if kind == "1x":
            if name in (f"ifcfg-{n}", f"route-{n}", f"route6-{n}") and not _ours(first):
                left.append(f"file {path} (not ec2net's: {first!r})")
            if name == f"dhclient-{n}.conf":
                left.append(f"file {path}")
        elif any(
            name.startswith(f"{pre}-{n}.network") or f"/{pre}-{n}.network.d/" in path
            for pre in ("70", "07")  # 07-: AWS's own .deb (its debian/ patch)
        ):
            left.append(f"file {path}")
    ours = str(RTPROT_EC2NET)
    keys = [
        (r.get("priority"), r.get("src"), r.get("srclen"), r.get("table")) for r in state["rules"]
    ]
    left += [f"rule doubled {k}" for k in sorted({k for k in keys if keys.count(k) > 1}, key=str)]
    if kind == "1x":
        # the ifcfg backend marks every rule and table route it makes
        left += [f"rule {_clean(r)}" for r in state["rules"] if _proto(r) != ours]
        left += [f"route {_clean(r)}" for r in state["routes"] if _proto(r) != ours]
    # a main-table default on the ENI (1.x: `metric 1000N`); the kernel's RA default
    # route (protocol ra) is the link's own, there with any tool
    left += [
        f"main default {_clean(r)}"
        for r in state["main"]
        if r.get("dst") == "default" and _proto(r) != "ra"
    ]
    left += [f"dhclient {d}" for d in state["dhclients"]]
    old_units = ("ec2net-ifup@",) if kind == "1x" else ("policy-routes@", "refresh-policy-routes@")
    left += [f"unit {u}" for u in state["units"] if u.startswith(old_units)]
    return left


def status_rows(g: VpcGuest) -> list[dict[str, Any]]:
    res = g.agent.run(["ec2net", "status", "--json"], timeout=120)
    if not res.ok:
        return []
    try:
        rows: list[dict[str, Any]] = json.loads(res.stdout or "[]")
    except ValueError:
        return []
    return rows


def all_ok(rows: list[dict[str, Any]], macs: Sequence[str]) -> bool:
    by_mac = {str(r.get("mac", "")).lower(): r for r in rows}
    return all(by_mac.get(m.lower(), {}).get("state") == "ok" for m in macs)


def wait_status_ok(g: VpcGuest, macs: Sequence[str], timeout: float) -> Optional[float]:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if all_ok(status_rows(g), macs):
            return time.monotonic() - t0
        time.sleep(1.0)
    return None


def adopted_lifetimes(state: dict[str, Any]) -> list[str]:
    """Addresses of the ENI that would still expire (a DHCP lease's lifetime) although
    no dhclient renews them any more."""
    if state["dhclients"]:
        return []
    forever = 4294967295
    return [
        f"{a.get('local')}/{a.get('prefixlen')} valid_lft {a.get('valid_life_time')}"
        for a in state["addrs"]
        if a.get("scope") == "global" and a.get("valid_life_time", forever) != forever
    ]


def has_ra_default(state: dict[str, Any]) -> bool:
    return any(r.get("dst") == "default" and _proto(r) == "ra" for r in state["main"])


def settled_state(g: VpcGuest, p: Plugged, timeout: float = 30.0) -> dict[str, Any]:
    """The ENI's state once its link has the router's advertisement (the daemon then
    moves the table's IPv6 routes to the RA router): snapshots taken a moment apart,
    one before the RA and one after, would differ in that alone."""
    deadline = time.monotonic() + timeout
    while True:
        state = eni_state(g, p)
        if not p.eni.ipv6s or has_ra_default(state) or time.monotonic() > deadline:
            break
        time.sleep(1.0)
    wait_status_ok(g, [p.eni.mac], 20.0)
    return eni_state(g, p)


# ------------------------------------------------------------------ the old tool


@dataclass
class OldTool:
    plugged: list[Plugged]
    reach: Reach  # every address under the old tool, from the first device_add
    answering: list[str]  # the addresses that answered (the probes' set)
    state: dict[str, dict[str, Any]]  # by ifname, as the old tool made it


def kind_of(variant: str) -> str:
    return "1x" if split_variant(variant)[1] == "aws173" else "2x"


def old_tool_enis(g: VpcGuest, timeout: float) -> OldTool:
    """Hot-plug the ENI in another subnet (device 1) and the one in the primary's subnet
    (device 2) and let the old tool configure them."""
    t0 = time.monotonic()
    plugged = [g.plug(g.fabric.spare[mac]) for mac in (OTHER_SUBNET_MAC, SAME_SUBNET_MAC)]
    addrs = g.all_addresses()
    reach = g.wait_reachable(addrs, timeout, since=t0)
    missing = {m.split()[0] for m in reach.missing}
    answering = [a for a in addrs if a not in missing]
    return OldTool(plugged, reach, answering, {p.ifname: eni_state(g, p) for p in plugged})


# ------------------------------------------------------------------ ec2net's package


def package_for_guest(variant: str, tree: Path, out_dir: Path) -> install.Package:
    """What the user upgrades to: ec2net's RPM on the 1.x guest, its .deb otherwise."""
    if kind_of(variant) == "1x":
        return install.Package("rpm", install.build_rpm(tree, out_dir))
    return install.Package("deb", install.build_deb(tree, out_dir))


def _sh(g: VpcGuest, cmd: str, timeout: float = 600.0) -> Result:
    env = {"DEBIAN_FRONTEND": "noninteractive", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}
    return g.agent.run(["bash", "-c", cmd], timeout=timeout, env=env)


OLD_PACKAGE = "amazon-ec2-net-utils"
PACKAGE = "ec2-net-utils"


def replaces_old(package: install.Package) -> bool:
    """Whether the package itself takes the old one's place (RPM Obsoletes, .deb
    Conflicts); read on the host."""
    if package.kind == "rpm":
        argv = ["rpm", "-qp", "--obsoletes", str(package.path)]
    else:
        argv = ["dpkg-deb", "-f", str(package.path), "Conflicts"]
    out = subprocess.run(argv, check=False, capture_output=True, text=True).stdout
    return OLD_PACKAGE in out


def upgrade_command(package: install.Package, guest_path: str) -> str:
    if package.kind == "rpm":
        # without Obsoletes both packages would own ec2ifup.8.gz: the old one stays
        # installed until it is erased by hand (see switch_to_ec2net)
        extra = "" if replaces_old(package) else " --replacefiles"
        return f"rpm -U {' '.join(RPM_INSTALL[1:])}{extra} {shlex.quote(guest_path)}"
    return (
        "apt-get install -y -q --no-install-recommends -o Dpkg::Options::=--force-confold "
        + shlex.quote(guest_path)
    )


def package_scripts(g: VpcGuest, package: install.Package) -> str:
    if package.kind == "rpm":
        return _sh(g, f"rpm -q --scripts {PACKAGE}").stdout
    return _sh(g, f"cat /var/lib/dpkg/info/{PACKAGE}.postinst").stdout


def old_installed(g: VpcGuest, package: install.Package) -> bool:
    if package.kind == "rpm":
        return _sh(g, f"rpm -q {OLD_PACKAGE}").ok
    out = _sh(g, f"dpkg-query -W -f='${{Status}}' {OLD_PACKAGE}").stdout
    return "ok installed" in out


@dataclass
class Switched:
    probe: ProbeReport
    command: str
    output: str
    rc: int
    command_s: float
    settle_s: Optional[float]  # from the command until every ENI's status is ok
    by_hand: list[str]  # steps the package did not do itself (ran here instead)
    status: list[dict[str, Any]]
    state: dict[str, dict[str, Any]]  # by ifname, afterwards
    old_left: list[str]  # what the old tool still has
    expiring: list[str]  # adopted addresses that would expire
    missing: list[str]  # (source, address) pairs not answering afterwards
    journal: str = ""  # the guest's journal from the upgrade on (times: seconds of probe)
    # What the switch is judged on: the hot-plugged ENIs' addresses, and the primary's
    # where the old tool never configured it (1.x). 2.x configures the primary from its
    # package's file, gone with the package: networkd moves the primary to the file
    # migrate writes for it, a DHCP exchange that is the old package's removal's doing.
    judged: frozenset[str] = frozenset()


def switch_to_ec2net(
    g: VpcGuest,
    old: OldTool,
    package: install.Package,
    refresh_interval: float,
    timeout: float,
) -> Switched:
    """Probes running, the upgrade a user would run; then wait for every ENI to be
    ec2net's and probe `TAIL` seconds more."""
    guest_path = f"{install.GUEST_DIR}/{package.path.name}"
    g.agent.write_file(guest_path, package.path.read_bytes())
    # the operator's configuration first (virtio_net among the drivers): a conffile the
    # package keeps (rpm writes its own as .rpmnew, dpkg keeps the old with confold)
    g.agent.write_file("/etc/ec2net/ec2net.toml", install.config_toml(refresh_interval))
    kind = kind_of(g.image.variant)
    guest_t0 = float(g.agent.run(["date", "+%s.%N"], check=True).stdout.strip())
    probe = ContinuousProbe(g, old.answering).start()
    time.sleep(2.0)
    command = upgrade_command(package, guest_path)
    probe.mark("upgrade")
    t0 = time.monotonic()
    res = _sh(g, command)
    command_s = time.monotonic() - t0
    probe.mark("package installed")
    by_hand: list[str] = [] if replaces_old(package) else [f"{command} (not replacing the old)"]
    if res.ok:
        # Until the packages run the switch themselves (pkg branch), do their steps.
        if old_installed(g, package):
            step = (
                f"rpm -e {' '.join(RPM_INSTALL[1:])} {OLD_PACKAGE}"
                if package.kind == "rpm"
                else f"dpkg -r {OLD_PACKAGE}"
            )
            by_hand.append(step)
            _sh(g, step)
        if "ec2net migrate" not in package_scripts(g, package):
            for step in ("ec2net migrate", "systemctl restart ec2net-watch.service"):
                by_hand.append(step)
                _sh(g, step)
        if by_hand:
            probe.mark("steps by hand done")
    macs = [p.eni.mac for p in old.plugged]
    settle = wait_status_ok(g, macs, timeout)
    probe.mark("status ok" if settle is not None else "status not ok")
    time.sleep(TAIL)
    report = probe.stop()
    journal = _sh(
        g, f"journalctl --no-pager -o short-unix --since @{guest_t0:.0f} | grep -v ' kernel: '"
    ).stdout
    state = {p.ifname: eni_state(g, p) for p in old.plugged}
    left = [
        f"{p.ifname}: {x}" for p in old.plugged for x in old_tool_left(kind, p, state[p.ifname])
    ]
    expiring = [f"{n}: {x}" for n, s in state.items() for x in adopted_lifetimes(s)]
    return Switched(
        report,
        command,
        (res.stdout + res.stderr)[-4000:],
        res.rc,
        command_s,
        settle,
        by_hand,
        status_rows(g),
        state,
        left,
        expiring,
        g.unreachable(g.all_addresses()),
        _relative(journal, guest_t0),
        frozenset(a for p in old.plugged for a in addresses(p.eni))
        | (frozenset(g.all_addresses()) if kind == "1x" else frozenset()),
    )


def _relative(journal: str, t0: float) -> str:
    """Journal lines with their time as seconds since `t0` (the probes' zero, within the
    agent's round trip)."""
    out = []
    for line in journal.splitlines():
        stamp, _, rest = line.partition(" ")
        try:
            out.append(f"{float(stamp) - t0:7.1f} {rest}")
        except ValueError:
            out.append(line)
    return "\n".join(out)


# ------------------------------------------------------------------ reboot, detach


@dataclass
class Afterwards:
    reboot_reach: Reach
    rebooted: dict[str, dict[str, Any]]
    old_left_after_reboot: list[str]
    status_after_reboot: list[dict[str, Any]]
    detach_left: list[str]
    fresh_reach: Reach
    fresh: dict[str, dict[str, Any]]  # the same ENIs plugged again: ec2net from scratch
    reboot_vs_fresh: list[str]
    switch_vs_fresh: list[str]
    replugged: list[Plugged]


def reboot_detach_fresh(g: VpcGuest, old: OldTool, sw: Switched, timeout: float) -> Afterwards:
    """Reboot (every address answers, the state as after the switch), detach both ENIs
    (nothing left), plug them again (a fresh ec2net configuration): the rebooted state
    must equal the fresh one."""
    kind = kind_of(g.image.variant)
    g.reboot()
    reach = g.wait_reachable(g.all_addresses(), timeout, since=g.qemu.started_at)
    macs = [p.eni.mac for p in old.plugged]
    wait_status_ok(g, macs, 60.0)
    rebooted = {p.ifname: settled_state(g, p) for p in old.plugged}
    left_reboot = [
        f"{p.ifname}: {x}" for p in old.plugged for x in old_tool_left(kind, p, rebooted[p.ifname])
    ]
    status = status_rows(g)
    detach_left: list[str] = []
    for p in old.plugged:
        g.unplug(p)
    for p in old.plugged:
        detach_left += [f"{p.ifname}: {x}" for x in g.wait_clean(p, 30.0, EXTRA_DIRS)[1]]
    t0 = time.monotonic()
    again = [g.plug(p.eni) for p in old.plugged]
    fresh_reach = g.wait_reachable(g.all_addresses(), timeout, since=t0)
    wait_status_ok(g, macs, 60.0)
    fresh = {p.eni.mac: settled_state(g, p) for p in again}
    by_mac_reboot = {p.eni.mac: rebooted[p.ifname] for p in old.plugged}
    by_mac_switch = {p.eni.mac: sw.state[p.ifname] for p in old.plugged}
    vs_reboot, vs_switch = [], []
    for p in again:
        vs_reboot += [
            f"{p.ifname}: {d}" for d in differences(by_mac_reboot[p.eni.mac], fresh[p.eni.mac])
        ]
        vs_switch += [
            f"{p.ifname}: {d}" for d in differences(by_mac_switch[p.eni.mac], fresh[p.eni.mac])
        ]
    return Afterwards(
        reach,
        rebooted,
        left_reboot,
        status,
        detach_left,
        fresh_reach,
        {p.ifname: fresh[p.eni.mac] for p in again},
        vs_reboot,
        vs_switch,
        again,
    )


# ------------------------------------------------------------------ and back


@dataclass
class Back:
    remove_command: str
    remove_output: str
    remove_rc: int
    ec2net_left: list[str]  # files, objects, records, units of ec2net after removal
    conffiles: list[str]  # what is left under /etc/ec2net (per the package manager)
    reinstall_output: str
    reinstall_rc: int
    reach: Reach  # the old tool's addresses after the trigger
    old_state: dict[str, dict[str, Any]]


_EC2NET_LEFT = r"""
import json, os, subprocess
MARK = "# Managed by ec2net"
out = []
if os.path.exists("/run/ec2net"):
    out.append("dir /run/ec2net: " + " ".join(sorted(os.listdir("/run/ec2net"))))
for top in ("/run/systemd/network", "/etc/sysconfig/network-scripts", "/run/NetworkManager",
            "/etc/systemd/network", "/etc/NetworkManager/system-connections",
            "/etc/udev/rules.d", "/usr/lib/udev/rules.d", "/usr/lib/systemd/system",
            "/etc/systemd/system"):
    for dirpath, _, files in os.walk(top):
        for name in files:
            path = os.path.join(dirpath, name)
            try:
                first = open(path, errors="replace").readline()
            except OSError:
                first = ""
            # migrate's file for the primary (2.x had configured it) is the primary's
            # configuration from then on, kept on purpose: without it the primary
            # would have no DHCP once 2.x's file is gone
            if path == "/etc/systemd/network/80-ec2net-primary.network":
                continue
            if first.startswith(MARK) or "ec2net" in name:
                out.append("file " + path)
for fam in ("-4", "-6"):
    for what in (["rule", "show"], ["route", "show", "table", "all"]):
        res = subprocess.run(["ip", "-j", fam, *what], capture_output=True, text=True)
        for item in json.loads(res.stdout or "[]"):
            if str(item.get("protocol")) in ("236", "ec2net"):
                out.append(what[0] + " " + json.dumps(item, sort_keys=True))
units = subprocess.run(["systemctl", "list-units", "--all", "--plain", "--no-legend",
                        "ec2net*"], capture_output=True, text=True).stdout
for line in units.splitlines():
    f = line.split()
    if len(f) >= 3 and f[2] in ("active", "activating", "failed", "reloading"):
        out.append("unit " + " ".join(f[:4]))
conf = []
if os.path.isdir("/etc/ec2net"):
    conf = sorted(os.path.join(d, n) for d, _, ns in os.walk("/etc/ec2net") for n in ns)
print(json.dumps({"left": out, "conffiles": conf}))
"""


def remove_command(package: install.Package) -> str:
    if package.kind == "rpm":
        return f"rpm -e {' '.join(RPM_INSTALL[1:])} {PACKAGE}"
    return f"apt-get purge -y -q {PACKAGE}"


def reinstall_command(g: VpcGuest, package: install.Package) -> str:
    files = _sh(g, f"ls {PEER_PACKAGES}").stdout.split()
    if not files:
        return "false # no package file kept in the image"
    path = f"{PEER_PACKAGES}/{files[0]}"
    if package.kind == "rpm":
        return f"{' '.join(RPM_INSTALL)} -i {shlex.quote(path)}"
    return f"apt-get install -y -q --no-install-recommends {shlex.quote(path)}"


def reapply_driver_edits(g: VpcGuest) -> list[str]:
    """The image's virtio_net edits of the AWS package's udev rule and 80-ec2.network."""
    problems = []
    for rel, old, new in AWS_DRIVER_EDITS:
        path = "/" + rel
        text = g.agent.read_file(path).decode()
        if old not in text:
            problems.append(f"{path}: {old!r} not found")
            continue
        g.agent.write_file(path, text.replace(old, new))
    return problems


def remove_and_back(
    g: VpcGuest, old: OldTool, plugged: list[Plugged], package: install.Package, timeout: float
) -> Back:
    """Remove ec2net the package manager's way, check it left nothing, then reinstall the
    old package offline and let it configure the ENIs again (udev add events)."""
    cmd = remove_command(package)
    res = _sh(g, cmd)
    found = json.loads(g.agent.run(["python3", "-c", _EC2NET_LEFT], timeout=120).stdout)
    again = reinstall_command(g, package)
    res2 = _sh(g, again)
    output = res2.stdout + res2.stderr
    if kind_of(g.image.variant) == "2x":
        output += "".join(f"\n{p}" for p in reapply_driver_edits(g))
        _sh(g, "systemctl daemon-reload && udevadm control --reload && networkctl reload")
    devs = " ".join(f"/sys/class/net/{p.ifname}" for p in plugged)
    _sh(g, f"udevadm trigger --action=add --settle {devs}")
    t0 = time.monotonic()
    # the ENIs' addresses that answered under the old tool before (2.x's setup makes
    # the primary flap at times: seen "answered once, then not" under 2.4.1 and 2.7.4)
    eni_addrs = {a for p in plugged for a in addresses(p.eni)}
    reach = g.wait_reachable([a for a in old.answering if a in eni_addrs], timeout, since=t0)
    return Back(
        cmd,
        (res.stdout + res.stderr)[-3000:],
        res.rc,
        list(found["left"]),
        list(found["conffiles"]),
        output[-3000:],
        res2.rc,
        reach,
        {p.ifname: eni_state(g, p) for p in plugged},
    )
