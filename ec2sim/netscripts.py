"""An emulator of RHEL network-scripts (initscripts) `ifup` / `ifdown` for one Ethernet
device, for tests: it reads the files a renderer wrote under a root directory
(ROOT/etc/sysconfig/network-scripts/) and runs, inside a namespace, the `ip` and
`sysctl` commands the real scripts would run, in their order, with their error handling.

Independent of ec2net on purpose: it knows the scripts' behaviour, not the renderer's
intent, so a file that the scripts would read differently from what the renderer meant
shows up as a routing difference in the world tests.

Emulated (ifup -> ifup-eth -> ifup-ipv6 -> ifup-post -> ifup-routes):
- ifcfg-IF parsed as shell assignments (single/double quotes, backslashes, comments);
  anything needing expansion (`$`, backticks) or other shell syntax is refused.
- DEVICE (or the link found by HWADDR when DEVICE is empty); HWADDR must match the
  link's MAC (unless equal to MACADDR), else ifup exits 1. MACADDR, MTU, ARP=yes|no.
- BOOTPROTO none/static (anything but dhcp/bootp): without IPADDR, IPADDR0..2 only the
  link comes up. Otherwise addresses IPADDR, IPADDR0, IPADDR1, ... in that order (a
  missing index from 2 on ends the list; gaps at 0 and 1 are skipped), PREFIXn, else
  NETMASKn, else the classful default; each one not yet listed on the link (the scripts'
  substring match on `ip addr ls`) is added as `ip addr add A/P brd B|+ dev IF
  $SCOPE label DEVICE` (SCOPE word-split, as unquoted in the script) -- without
  `noprefixroute` there, prefixes < 32 get a main-table route, as with the real scripts
  -- then `ip addr change ... valid_lft forever preferred_lft forever`. `brd +` stands
  for ipcalc's broadcast: equal up to /30; for /31 and /32 ipcalc may name the address
  itself, which only adds a local-table broadcast route the local route shadows.
- DEFROUTE (not "no") with GATEWAY inside the first address's network, or GATEWAYDEV:
  `ip route replace default ...` in main.
- The zeroconf route `169.254.0.0/16 dev IF metric 1000+ifindex scope link` unless
  NOZEROCONF is set (to anything).
- ifup-ipv6 when IPV6INIT is true: IPV6ADDR (default prefix /64), the per-device
  sysctls (forwarding, accept_ra, accept_redirects, autoconf from IPV6FORWARDING,
  IPV6_AUTOCONF, IPV6_ROUTER, IPV6_FORCE_ACCEPT_RA; skipped with IPV6_SET_SYSCTLS=no),
  IPV6_MTU, IPV6ADDR_SECONDARIES, IPV6_PRIVACY=rfc3041, IPV6_DEFAULTGW/IPV6_DEFAULTDEV
  (`ip -6 route add ::/0 via GW dev IF metric 1`), waiting for DAD to finish.
  Addresses are `ip -6 addr replace`d.
- ifup-routes unless NOROUTESET: route-IF then route6-IF, each line `ip -4|-6 route add
  LINE` and on failure `ip -4|-6 route replace LINE`; a route-IF with ADDRESSn= lines is
  the key=value format (ADDRESSn, NETMASKn, GATEWAYn -> `ADDR/PREFIX [via GW] dev IF`);
  then rule-IF, rule6-IF as `ip -4|-6 rule add LINE`. Lines are read as bash `read`
  reads them (outer whitespace and backslashes dropped, then split on whitespace);
  blank lines and lines starting with `#` are skipped, a `#` later in a line is not a
  comment (the words go to `ip`).
- ifdown (ifdown-eth -> ifdown-ipv6 -> ifdown-post -> ifdown-routes): IPv6 sysctls back
  to secure values, `addrgenmode eui64`, IPv6 routes/addresses of scope global and site
  flushed from main, all global addresses and IPv4 host-scope ones flushed, link down
  (routes through the link go with it, as the real ifdown-routes relies on), then each
  rule-IF line `ip rule del LINE` and rule6-IF line `ip -6 rule del LINE`. A device
  that is already gone (detached) only gets the rule deletions, as with the scripts.
- Commands whose failure the scripts only log are recorded, not raised (`Report`);
  failures the scripts silence (2>/dev/null, `sysctl -e`) or recover from (route add ->
  replace, "File exists" for the IPv6 default route) are marked tolerated.

Not emulated (NotImplementedError when configured, unless harmless to routing):
BOOTPROTO=dhcp/bootp (dhclient with RHEL's dhclient-script, which honours DEFROUTE and
PEERDNS; the Debian one here does not), DHCPV6C, aliases (DEVICE=eth0:1, ifcfg-IF:N),
bridges, bonds, teams, VLANs, tunnels, 6to4, NetworkManager delegation (NM_CONTROLLED
with NetworkManager running), ONBOOT/HOTPLUG gating (ifup is run explicitly), duplicate
address detection and announcements with arping (ARPCHECK/ARPUPDATE), ethtool options,
DNS (resolv.conf), firewalld zones, ifup-local/ifdown-local, the `IF.route` file, and
pathname expansion of route/rule lines. Unknown ifcfg keys are listed in the report's
warnings so that a renderer's key the scripts would act on cannot pass unnoticed.
"""

from __future__ import annotations

import ipaddress
import json
import re
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Optional

if TYPE_CHECKING:
    from ec2sim.fabric import Fabric

SCRIPTS_DIR = Path("etc/sysconfig/network-scripts")

# Runs one argv (inside the target namespace) and never raises on a non-zero exit.
Runner = Callable[[Sequence[str]], "subprocess.CompletedProcess[str]"]

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*=")
_COMMENT_OR_BLANK = re.compile(r"^\s*(#.*)?$")
_NEW_ROUTE_FORMAT = re.compile(r"^\s*ADDRESS[0-9]+=", re.MULTILINE)
_OPERATORS = frozenset(";&|<>()")

# Keys the emulation reads (first four lines), or that have no effect on addresses and
# routes (read by NetworkManager only, used for things left out on purpose, or markers
# like EC2SYNC that tools put in the file and the scripts ignore).
_KNOWN_TEXT = """
    DEVICE HWADDR MACADDR MTU TYPE BOOTPROTO ONBOOT ARP DEFROUTE GATEWAY GATEWAYDEV
    METRIC SCOPE NOZEROCONF IPV6INIT IPV6ADDR IPV6ADDR_SECONDARIES IPV6FORWARDING
    IPV6_AUTOCONF IPV6_ROUTER IPV6_FORCE_ACCEPT_RA IPV6_SET_SYSCTLS IPV6_MTU IPV6_PRIVACY
    IPV6_DEFAULTGW IPV6_DEFAULTDEV NOROUTESET
    NAME UUID NM_CONTROLLED USERCTL PEERDNS PEERROUTES IPV4_FAILURE_FATAL
    IPV6_FAILURE_FATAL IPV6_DEFROUTE IPV6_PEERDNS IPV6_PEERROUTES HOTPLUG ZONE
    ETHTOOL_OPTS LINKDELAY DEVTIMEOUT ARPCHECK ARPUPDATE DHCP_HOSTNAME
    PERSISTENT_DHCLIENT DHCPV6C EC2SYNC
"""
_KNOWN_KEYS = frozenset(_KNOWN_TEXT.split())
_INDEXED = re.compile(r"(IPADDR|PREFIX|NETMASK|BROADCAST|ARPCHECK|ARPUPDATE)[0-9]+")
# Device kinds ifup hands to other scripts than ifup-eth.
_OTHER_KINDS = ("BRIDGE", "MASTER", "TEAM_MASTER", "TEAM_CONFIG", "BONDING_OPTS", "VLAN")


class ConfigError(ValueError):
    """A file the scripts would not read the way this emulation can."""


class ScriptExit(RuntimeError):
    """ifup/ifdown gave up (the real script exits non-zero); `report` says how far."""

    def __init__(self, message: str, report: Report) -> None:
        super().__init__(message)
        self.report = report


@dataclass(frozen=True)
class Command:
    argv: tuple[str, ...]
    returncode: int
    stderr: str = ""
    tolerated: bool = False  # the scripts silence or recover from this failure

    @property
    def failed(self) -> bool:
        return self.returncode != 0

    def __str__(self) -> str:
        text = " ".join(self.argv)
        if self.failed:
            text += f"  -> exit {self.returncode}: {self.stderr.strip()}"
        return text


@dataclass
class Report:
    ifname: str
    commands: list[Command] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def failures(self) -> list[Command]:
        """Failed commands the scripts log and carry on after."""
        return [c for c in self.commands if c.failed and not c.tolerated]

    def __str__(self) -> str:
        lines = [f"{self.ifname}:", *(f"  {c}" for c in self.commands)]
        lines += [f"  warning: {w}" for w in self.warnings]
        return "\n".join(lines)


# --- parsing ------------------------------------------------------------------------


def _shell_word(text: str, where: str) -> tuple[str, str]:
    """One shell word from the start of `text` without expansions: (value, rest)."""
    out: list[str] = []
    i = 0
    while i < len(text):
        ch = text[i]
        if ch.isspace():
            break
        if ch == "'":
            end = text.find("'", i + 1)
            if end < 0:
                raise ConfigError(f"{where}: unterminated single quote")
            out.append(text[i + 1 : end])
            i = end + 1
        elif ch == '"':
            i += 1
            while True:
                if i >= len(text):
                    raise ConfigError(f"{where}: unterminated double quote")
                c = text[i]
                if c == '"':
                    i += 1
                    break
                if c in "$`":
                    raise ConfigError(f"{where}: expansion ({c}) is not emulated")
                if c == "\\" and i + 1 < len(text) and text[i + 1] in '$`"\\':
                    out.append(text[i + 1])
                    i += 2
                    continue
                out.append(c)
                i += 1
        elif ch == "\\":
            if i + 1 >= len(text):
                raise ConfigError(f"{where}: line continuation is not emulated")
            out.append(text[i + 1])
            i += 2
        elif ch in "$`":
            raise ConfigError(f"{where}: expansion ({ch}) is not emulated")
        elif ch in _OPERATORS:
            raise ConfigError(f"{where}: shell operator {ch!r} in an assignment")
        else:
            out.append(ch)
            i += 1
    return "".join(out), text[i:]


def parse_shell_vars(text: str, source: str = "<config>") -> dict[str, str]:
    """KEY=value lines as `. file` would set them (later assignments win)."""
    values: dict[str, str] = {}
    for lineno, line in enumerate(text.splitlines(), 1):
        where = f"{source}:{lineno}"
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        m = _NAME.match(stripped)
        if m is None:
            raise ConfigError(f"{where}: not a KEY=value assignment: {line!r}")
        value, rest = _shell_word(stripped[m.end() :], where)
        rest = rest.strip()
        if rest and not rest.startswith("#"):
            # `A=b c` runs command c with A set: never what a config file means
            raise ConfigError(f"{where}: unquoted whitespace in the value: {line!r}")
        values[m.group()[:-1]] = value
    return values


def read_lines(text: str) -> list[list[str]]:
    """The argument lists `while read line; ... ip ... $line` produces from a file."""
    out: list[list[str]] = []
    pending = ""
    for raw in text.splitlines():
        if raw.endswith("\\") and not raw.endswith("\\\\"):
            pending += raw[:-1]  # `read` without -r joins continued lines
            continue
        line, pending = pending + raw, ""
        # `read` drops backslashes (keeping the escaped character) and outer blanks
        line = re.sub(r"\\(.)", r"\1", line).strip()
        if _COMMENT_OR_BLANK.match(line):
            continue
        out.append(line.split())
    if pending.strip() and not _COMMENT_OR_BLANK.match(pending):
        out.append(pending.split())
    return out


def is_true(value: str) -> bool:
    return value.lower() in ("t", "y", "yes", "on", "true", "1")


def is_false(value: str) -> bool:
    return value.lower() in ("f", "n", "no", "off", "false", "0")


@dataclass(frozen=True)
class Ipv4Entry:
    address: ipaddress.IPv4Address
    prefix: int
    broadcast: str  # "+" unless BROADCASTn is given
    index: str  # the key suffix it came from ("", "0", "1", ...)


def _classful_prefix(addr: ipaddress.IPv4Address) -> int:
    first = int(addr) >> 24
    return 8 if first < 128 else 16 if first < 192 else 24


def expand_ipv4(cfg: dict[str, str], where: str) -> list[Ipv4Entry]:
    """IPADDR, IPADDR0..IPADDR255 with their prefixes, in the scripts' order."""
    entries: list[Ipv4Entry] = []
    for idx in ["", *(str(n) for n in range(256))]:
        raw = cfg.get(f"IPADDR{idx}", "")
        if not raw:
            if idx and int(idx) >= 2:
                break
            continue
        try:
            addr = ipaddress.IPv4Address(raw)
            prefix_text = cfg.get(f"PREFIX{idx}", "")
            netmask = cfg.get(f"NETMASK{idx}", "")
            if prefix_text:
                prefix = ipaddress.IPv4Network(f"0.0.0.0/{prefix_text}").prefixlen
            elif netmask:
                prefix = ipaddress.IPv4Network(f"0.0.0.0/{netmask}").prefixlen
            else:
                prefix = _classful_prefix(addr)
        except ValueError as err:
            raise ConfigError(f"{where}: IPADDR{idx}/PREFIX{idx}: {err}") from None
        entries.append(Ipv4Entry(addr, prefix, cfg.get(f"BROADCAST{idx}", "") or "+", idx))
    return entries


# --- the scripts ----------------------------------------------------------------------


class NetworkScripts:
    """ifup/ifdown for the files under `root`/etc/sysconfig/network-scripts, with every
    command run through `run` (which targets the instance's namespace)."""

    def __init__(self, root: Path, run: Runner, *, dad_timeout: float = 30.0) -> None:
        self.dir = root / SCRIPTS_DIR
        self._run = run
        self.dad_timeout = dad_timeout

    # -- helpers ----------------------------------------------------------------------
    def _exec(self, report: Report, argv: Sequence[str], *, tolerated: bool = False) -> Command:
        proc = self._run(list(argv))
        cmd = Command(tuple(argv), proc.returncode, proc.stderr or "", tolerated)
        report.commands.append(cmd)
        return cmd

    def _query(self, argv: Sequence[str]) -> subprocess.CompletedProcess[str]:
        """A read-only command (the scripts' `ip link show`, `ip addr ls` checks)."""
        return self._run(list(argv))

    def _link(self, dev: str) -> Optional[dict[str, Any]]:
        proc = self._query(["ip", "-j", "link", "show", "dev", dev])
        if proc.returncode != 0:
            return None
        data: list[dict[str, Any]] = json.loads(proc.stdout or "[]")
        return data[0] if data else None

    def _link_by_mac(self, mac: str) -> Optional[str]:
        proc = self._query(["ip", "-j", "link", "show"])
        links: list[dict[str, Any]] = json.loads(proc.stdout or "[]")
        for ln in links:
            if str(ln.get("address", "")).upper() == mac.upper():
                return str(ln["ifname"])
        return None

    def config(self, name: str) -> dict[str, str]:
        path = self.dir / f"ifcfg-{name}"
        try:
            text = path.read_text()
        except FileNotFoundError:
            raise ConfigError(f"ifup: configuration for {name} not found ({path})") from None
        return parse_shell_vars(text, str(path))

    def _device(self, name: str, cfg: dict[str, str], report: Report) -> str:
        for key in _OTHER_KINDS:
            if cfg.get(key):
                raise NotImplementedError(f"{name}: {key} (not an ifup-eth device)")
        kind = cfg.get("TYPE", "Ethernet")
        if kind not in ("Ethernet", ""):
            raise NotImplementedError(f"{name}: TYPE={kind} is not emulated (only Ethernet)")
        device = cfg.get("DEVICE", "")
        if not device and cfg.get("HWADDR"):
            device = self._link_by_mac(cfg["HWADDR"]) or ""
        if not device:
            raise ScriptExit(f"{name}: Device name does not seem to be present.", report)
        if ":" in device:
            raise NotImplementedError(f"{name}: alias device {device} is not emulated")
        for key in cfg:
            if key not in _KNOWN_KEYS and not _INDEXED.fullmatch(key):
                report.warnings.append(f"ifcfg key {key} is not emulated")
        return device

    def _check_mac(self, cfg: dict[str, str], link: dict[str, Any], report: Report) -> None:
        found = str(link.get("address", "")).upper()
        want = cfg.get("HWADDR", "").upper()
        if want and found != want and found != cfg.get("MACADDR", "").upper():
            raise ScriptExit(
                f"Device {link['ifname']} has different MAC address than expected, ignoring.",
                report,
            )

    # -- ifup ---------------------------------------------------------------------------
    def ifup(self, name: str) -> Report:
        """What `ifup NAME` does with ifcfg-NAME and its route/rule files."""
        report = Report(name)
        cfg = self.config(name)
        dev = self._device(name, cfg, report)
        link = self._link(dev)
        if link is None:
            raise ScriptExit(f"Device {dev} does not seem to be present.", report)
        self._check_mac(cfg, link, report)
        bootproto = cfg.get("BOOTPROTO", "none")
        if bootproto in ("dhcp", "bootp"):
            raise NotImplementedError(
                f"{name}: BOOTPROTO={bootproto} needs dhclient with RHEL's dhclient-script "
                "(DEFROUTE, PEERDNS); use static addresses in the simulated world"
            )
        if is_true(cfg.get("DHCPV6C", "")):
            raise NotImplementedError(f"{name}: DHCPV6C (dhclient -6) is not emulated")
        if cfg.get("MACADDR"):
            self._exec(report, ["ip", "link", "set", "dev", dev, "address", cfg["MACADDR"]])
        if cfg.get("MTU"):
            self._exec(report, ["ip", "link", "set", "dev", dev, "mtu", cfg["MTU"]])
        self._ifup_ipv4(dev, cfg, report)
        if not cfg.get("NOZEROCONF"):
            metric = str(1000 + int(link["ifindex"]))
            route = ["169.254.0.0/16", "dev", dev, "metric", metric, "scope", "link"]
            self._exec(report, ["ip", "route", "add", *route])
        self._ifup_ipv6(dev, cfg, report)
        # ifup-post: aliases, then routes and rules
        if any(self.dir.glob(f"ifcfg-{name}:*")):
            report.warnings.append(f"alias files ifcfg-{name}:* are not emulated")
        if (self.dir / f"{name}.route").exists():
            report.warnings.append(f"{name}.route is not emulated")
        if not is_true(cfg.get("NOROUTESET", "")):
            self._ifup_routes(dev, name, report)
        return report

    def _ifup_ipv4(self, dev: str, cfg: dict[str, str], report: Report) -> None:
        if not any(cfg.get(k) for k in ("IPADDR", "IPADDR0", "IPADDR1", "IPADDR2")):
            self._exec(report, ["ip", "link", "set", "dev", dev, "up"])
            return
        entries = expand_ipv4(cfg, f"ifcfg-{dev}")
        arp = cfg.get("ARP", "")
        if is_true(arp) or is_false(arp):
            state = "on" if is_true(arp) else "off"
            self._exec(report, ["ip", "link", "set", "dev", dev, "arp", state])
        if self._exec(report, ["ip", "link", "set", "dev", dev, "up"]).failed:
            raise ScriptExit(f"Failed to bring up {dev}.", report)
        scope = cfg.get("SCOPE", "").split()
        for e in entries:
            cidr = f"{e.address}/{e.prefix}"
            listed = self._query(["ip", "addr", "ls", dev]).stdout
            if cidr not in listed:  # the scripts' grep: a substring match
                argv = ["ip", "addr", "add", cidr, "brd", e.broadcast, "dev", dev]
                self._exec(report, [*argv, *scope, "label", dev])
            forever = ["valid_lft", "forever", "preferred_lft", "forever"]
            self._exec(report, ["ip", "addr", "change", cidr, "dev", dev, *forever])
        self._default_route(dev, cfg, entries[0] if entries else None, report)

    def _default_route(
        self, dev: str, cfg: dict[str, str], first: Optional[Ipv4Entry], report: Report
    ) -> None:
        gwdev = cfg.get("GATEWAYDEV", "")
        if is_false(cfg.get("DEFROUTE", "")) or (gwdev and gwdev != dev):
            return
        metric = ["metric", cfg["METRIC"]] if cfg.get("METRIC") else []
        gateway = cfg.get("GATEWAY", "")
        if gateway and first is not None:
            net = ipaddress.IPv4Network(f"{first.address}/{first.prefix}", strict=False)
            try:
                inside = ipaddress.IPv4Address(gateway) in net
            except ValueError:
                inside = False
            if inside:
                via = ["via", gateway, *(["dev", gwdev] if gwdev else [])]
                self._exec(report, ["ip", "route", "replace", "default", *metric, *via])
                return
        if gwdev == dev:
            self._exec(report, ["ip", "route", "replace", "default", *metric, "dev", dev])

    # -- ifup-ipv6 ------------------------------------------------------------------------
    def _ifup_ipv6(self, dev: str, cfg: dict[str, str], report: Report) -> None:
        init = cfg.get("IPV6INIT", "")
        if not is_true(init):
            if not init and (cfg.get("IPV6ADDR") or cfg.get("IPV6ADDR_SECONDARIES")):
                # initscripts 9.x skip IPv6 unless IPV6INIT=yes; 10.x unless it is "no"
                report.warnings.append("IPv6 addresses without IPV6INIT: version dependent")
            return
        if cfg.get("IPV6TO4INIT") == "yes":
            raise NotImplementedError(f"{dev}: IPV6TO4INIT (6to4) is not emulated")
        if cfg.get("IPV6ADDR") and not self._add_ipv6(dev, cfg["IPV6ADDR"], report):
            return  # ifup-ipv6 exits 1; ifup-eth goes on to ifup-post regardless
        if cfg.get("IPV6_SET_SYSCTLS", "") != "no":
            for key, value in self._ipv6_sysctls(cfg).items():
                self._exec(report, ["sysctl", "-e", "-w", f"{key_for(dev, key)}={value}"])
        mtu = cfg.get("IPV6_MTU", "")
        if mtu.isdigit() and 1280 <= int(mtu) <= 65535:
            self._exec(report, ["ip", "link", "set", "dev", dev, "mtu", mtu])
        for addr in cfg.get("IPV6ADDR_SECONDARIES", "").split():
            self._add_ipv6(dev, addr, report)
        if cfg.get("IPV6_PRIVACY") == "rfc3041" and cfg.get("IPV6_SET_SYSCTLS", "") != "no":
            argv = ["sysctl", "-e", "-w", f"{key_for(dev, 'use_tempaddr')}=2"]
            self._exec(report, argv)
        if cfg.get("IPV6_DEFAULTGW") or cfg.get("IPV6_DEFAULTDEV"):
            self._ipv6_default(dev, cfg, report)
        self._wait_tentative(dev, report)

    @staticmethod
    def _ipv6_sysctls(cfg: dict[str, str]) -> dict[str, int]:
        if cfg.get("IPV6FORWARDING") == "yes":
            forwarding = 0 if cfg.get("IPV6_ROUTER") == "no" else 1
            auto = 1 if cfg.get("IPV6_AUTOCONF") == "yes" else 0
            accept_ra = 2 if auto else 0
        else:
            forwarding, auto, accept_ra = 0, 1, 1
            if cfg.get("IPV6_AUTOCONF") == "no":
                auto = 0
                accept_ra = 1 if cfg.get("IPV6_FORCE_ACCEPT_RA") == "yes" else 0
        return {
            "forwarding": forwarding,
            "accept_ra": accept_ra,
            "accept_redirects": auto,
            "autoconf": auto,
        }

    def _add_ipv6(self, dev: str, text: str, report: Report) -> bool:
        """ipv6_add_addr_on_device: validate, bring the link up, default /64, replace."""
        addr, _, plen = text.partition("/")
        try:
            ipaddress.IPv6Interface(f"{addr}/{plen or 64}")
        except ValueError:
            report.warnings.append(f"invalid IPv6 address {text!r} skipped")
            return False
        link = self._link(dev)
        if link is None:
            return False
        if "UP" not in link.get("flags", []):
            self._exec(report, ["ip", "link", "set", "dev", dev, "up"])
        cidr = f"{addr}/{plen or 64}"
        cmd = self._exec(report, ["ip", "-6", "addr", "replace", cidr, "dev", dev])
        # the scripts treat exit 2 (a kernel refusal) as success, only 1 as a failure
        return cmd.returncode in (0, 2)

    def _ipv6_default(self, dev: str, cfg: dict[str, str], report: Report) -> None:
        gw_text = cfg.get("IPV6_DEFAULTGW", "")
        gw, _, scope = gw_text.partition("%")
        gwdev = cfg.get("IPV6_DEFAULTDEV", "")
        if gw in ("", "::"):
            if gwdev == dev:  # an Ethernet link needs a next hop
                report.warnings.append(f"IPV6_DEFAULTDEV={gwdev} without a gateway: no route")
            return
        if scope and gwdev and scope != gwdev:
            gwdev = ""  # the scope suffix wins
        via_dev = scope or gwdev
        if via_dev and via_dev != dev:
            return  # belongs to another interface
        if not via_dev and gw.lower().startswith("fe80:"):
            report.warnings.append(f"link-local IPV6_DEFAULTGW {gw_text} without a device")
            return
        argv = ["ip", "-6", "route", "add", "::/0", "via", gw]
        argv += ["dev", via_dev] if via_dev else []
        cmd = self._exec(report, [*argv, "metric", "1"])
        if cmd.failed and "File exists" in cmd.stderr:
            report.commands[-1] = Command(cmd.argv, cmd.returncode, cmd.stderr, True)

    def _wait_tentative(self, dev: str, report: Report) -> None:
        deadline = time.monotonic() + self.dad_timeout
        while True:
            out = self._query(["ip", "-6", "addr", "show", "dev", dev, "tentative"]).stdout
            if not out.strip():
                return
            if "dadfailed" in out:
                report.warnings.append(f"{dev}: duplicate address detection failed")
                return
            if time.monotonic() >= deadline:
                report.warnings.append(f"{dev}: addresses still tentative")
                return
            time.sleep(0.1)

    # -- ifup-routes ----------------------------------------------------------------------
    def _route_files(self, dev: str, nick: str, kinds: Sequence[str]) -> list[Path]:
        names = [dev] if nick == dev else [dev, nick]
        return [self.dir / f"{k}-{n}" for n in names for k in kinds]

    def _ifup_routes(self, dev: str, nick: str, report: Report) -> None:
        for path in self._route_files(dev, nick, ("route", "route6")):
            if not path.is_file():
                continue
            text = path.read_text()
            if _NEW_ROUTE_FORMAT.search(text):
                self._key_value_routes(path, text, dev, report)
            else:
                self._ip_file(path, text, report)
        for path in self._route_files(dev, nick, ("rule", "rule6")):
            if path.is_file():
                self._ip_file(path, path.read_text(), report)

    def _ip_file(self, path: Path, text: str, report: Report) -> None:
        """handle_ip_file: route-/route6-/rule-/rule6- lines, `ip -4|-6 TYPE add`."""
        head = path.name.split("-", 1)[0]
        kind = head.rstrip("6")
        family = "-6" if kind != head else "-4"
        for words in read_lines(text):
            cmd = self._exec(report, ["ip", family, kind, "add", *words])
            if cmd.failed and kind == "route":
                # the script retries as `replace`: the add's failure is only a warning
                report.commands[-1] = Command(cmd.argv, cmd.returncode, cmd.stderr, True)
                self._exec(report, ["ip", family, "route", "replace", *words])

    def _key_value_routes(self, path: Path, text: str, dev: str, report: Report) -> None:
        cfg = parse_shell_vars(text, str(path))
        n = 0
        while cfg.get(f"ADDRESS{n}"):
            addr = cfg[f"ADDRESS{n}"]
            mask = cfg.get(f"NETMASK{n}", "")
            try:
                ip = ipaddress.IPv4Address(addr)
                plen = ipaddress.IPv4Network(f"0.0.0.0/{mask}").prefixlen if mask else None
            except ValueError as err:
                raise ConfigError(f"{path}: ADDRESS{n}/NETMASK{n}: {err}") from None
            words = [f"{addr}/{plen if plen is not None else _classful_prefix(ip)}"]
            if cfg.get(f"GATEWAY{n}"):
                words += ["via", cfg[f"GATEWAY{n}"]]
            words += ["dev", dev]
            cmd = self._exec(report, ["ip", "route", "add", *words])
            if cmd.failed:
                report.commands[-1] = Command(cmd.argv, cmd.returncode, cmd.stderr, True)
                self._exec(report, ["ip", "route", "replace", *words])
            n += 1

    # -- ifdown ---------------------------------------------------------------------------
    def ifdown(self, name: str) -> Report:
        """What `ifdown NAME` does: addresses and link first, the rules last."""
        report = Report(name)
        cfg = self.config(name)
        dev = self._device(name, cfg, report)
        link = self._link(dev)
        if link is not None:
            found = str(link.get("address", "")).upper()
            want = cfg.get("HWADDR", "").upper()
            if want and not cfg.get("MACADDR") and found != want:
                raise ScriptExit(f"Device {dev} has MAC address {found}, not {want}.", report)
            self._ifdown_ipv6(dev, cfg, report)
            for argv in (
                ["ip", "addr", "flush", "dev", dev, "scope", "global"],
                ["ip", "-4", "addr", "flush", "dev", dev, "scope", "host"],
                ["ip", "link", "set", "dev", dev, "down"],
            ):
                self._exec(report, argv, tolerated=True)  # 2>/dev/null in ifdown-eth
        # ifdown-post -> ifdown-routes, for a vanished device too
        for path in self._route_files(dev, name, ("rule", "rule6")):
            if not path.is_file():
                continue
            family = ["-6"] if path.name.startswith("rule6-") else []
            for words in read_lines(path.read_text()):
                self._exec(report, ["ip", *family, "rule", "del", *words])
        return report

    def _ifdown_ipv6(self, dev: str, cfg: dict[str, str], report: Report) -> None:
        if cfg.get("IPV6_SET_SYSCTLS", "") != "no":
            for key in ("forwarding", "accept_ra", "accept_redirects"):
                argv = ["sysctl", "-e", "-w", f"{key_for(dev, key)}=0"]
                self._exec(report, argv, tolerated=True)
        silenced = [
            ["ip", "link", "set", dev, "addrgenmode", "eui64"],
            ["ip", "-6", "route", "flush", "dev", dev, "scope", "global"],
            ["ip", "-6", "route", "flush", "dev", dev, "scope", "site"],
            ["ip", "-6", "addr", "flush", "dev", dev, "scope", "global"],
            ["ip", "-6", "addr", "flush", "dev", dev, "scope", "site"],
        ]
        for argv in silenced:
            self._exec(report, argv, tolerated=True)


def key_for(dev: str, key: str) -> str:
    """The sysctl name of a per-device IPv6 setting (SYSCTLDEVICE: a dot becomes /)."""
    return f"net.ipv6.conf.{dev.replace('.', '/', 1)}.{key}"


def fabric_runner(fabric: Fabric, ns: Optional[str] = None) -> Runner:
    """Run commands in `ns` (default: the instance) through the fabric, never raising."""
    target = ns or fabric.instance_ns

    def run(argv: Sequence[str]) -> subprocess.CompletedProcess[str]:
        return fabric.run(target, argv, check=False)

    return run
