"""The ENI tools ec2net replaces, as they are found on a host: which files each one
writes per interface, what those files say, and how their kernel objects look. Read
only; `migrate.py` acts on it.

- amazon-ec2-net-utils 1.x (Amazon Linux 2), and the original ec2-net-utils for RHEL
  6/7 that shares its design, on RHEL network-scripts: per ENI `ethN` an
  `ifcfg-ethN` with `EC2SYNC=yes` (DHCP, `DEFROUTE=no`), `route-ethN` (in table
  10000+N a default route and the subnet route; in main a default route with metric
  10000+N), `route6-ethN`, `/etc/dhcp/dhclient-ethN.conf`, a dhclient per ENI and
  family (pid files `/var/run/dhclient-ethN.pid`, `dhclient6-ethN.pid`), started by
  the unit `ec2net-ifup@ethN.service`, whose dhclient hook adds the secondary
  addresses and one `from ADDR lookup 10000+N` rule per address without a priority
  (the kernel numbers them 32765 and down).
- amazon-ec2-net-utils 2.x (Amazon Linux 2023, Debian), on systemd-networkd:
  `/run/systemd/network/70-IF.network` (a link to the package's `80-ec2.network`) and
  drop-ins in `70-IF.network.d/` (`07-` in AWS's own Debian package), rules
  `from ADDR lookup T` at priority T = 10000 + 100 * card + device, routes in table T,
  and the units `policy-routes@IF.service`, `refresh-policy-routes@IF.timer`.
"""

from __future__ import annotations

import contextlib
import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Optional

from ec2net import cloudinit, foreign
from ec2net.foreign import Theirs
from ec2net.model import TABLE_BASE, TABLE_MAIN, RouteSpec
from ec2net.render import is_ours
from ec2net.render.ifcfg import DIR as NETWORK_SCRIPTS

AWS_1X = "amazon-ec2-net-utils 1.x"
AWS_2X = "amazon-ec2-net-utils 2.x"

NETWORKD_RUN = PurePosixPath("/run/systemd/network")
DHCP_CONF = PurePosixPath("/etc/dhcp")
PID_DIR = PurePosixPath("/var/run")
# Rules added without a priority get one below the kernel's main rule (32766).
KERNEL_NUMBERED_FROM = 30000

_ETH = re.compile(r"eth(\d+)")


def host(root: Path, path: PurePosixPath) -> Path:
    return root / path.relative_to("/")


def shell_value(text: str, key: str) -> Optional[str]:
    """The last KEY=value assignment in a shell-style file, unquoted."""
    value = None
    for line in text.splitlines():
        name, sep, rest = line.strip().partition("=")
        if sep and name == key:
            value = rest.split("#", 1)[0].strip().strip("\"'")
    return value


def _read(path: Path) -> Optional[str]:
    try:
        return path.read_text()
    except (OSError, UnicodeDecodeError):
        return None


@dataclass(frozen=True)
class Found:
    """What one old tool left for one interface."""

    tool: str
    ifname: str
    files: tuple[Path, ...] = ()  # its per-interface files, to remove once ec2net has it
    pid_files: tuple[Path, ...] = ()  # its DHCP clients' pid files
    units: tuple[str, ...] = ()  # its per-interface units, to stop
    # Routes its files put in the main table (1.x's `default ... metric 10000+N`).
    main_routes: tuple[RouteSpec, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.files or self.pid_files or self.units or self.main_routes)


def find_1x(root: Path, ifname: str) -> Found:
    """1.x's files for `ifname`, if its ifcfg file says EC2SYNC=yes and is not ec2net's
    own (the ifcfg backend writes that file as its own): that file, its route files
    (unless ec2net's), its dhclient configuration, its dhclients' pid files."""
    scripts = host(root, NETWORK_SCRIPTS)
    ifcfg = _read(scripts / f"ifcfg-{ifname}")
    if ifcfg is None or is_ours(ifcfg) or shell_value(ifcfg, "EC2SYNC") != "yes":
        return Found(AWS_1X, ifname)
    files = [scripts / f"ifcfg-{ifname}"]
    main: list[RouteSpec] = []
    for name in (f"route-{ifname}", f"route6-{ifname}"):
        text = _read(scripts / name)
        if text is not None and not is_ours(text):
            files.append(scripts / name)
            main += [r for r in parse_route_file(text, ifname) if r.table == TABLE_MAIN]
    conf = host(root, DHCP_CONF) / f"dhclient-{ifname}.conf"
    if conf.exists():
        files.append(conf)
    pids = [host(root, PID_DIR) / f"dhclient{v}-{ifname}.pid" for v in ("", "6")]
    return Found(
        AWS_1X,
        ifname,
        tuple(files),
        tuple(p for p in pids if p.exists()),
        (f"ec2net-ifup@{ifname}.service",),
        tuple(main),
    )


def find_2x(root: Path, ifname: str) -> Found:
    """2.x's files for `ifname`: its .network file (a link into its package) and the
    drop-in directory beside it."""
    # 70- upstream; 07- in the Debian package built from the release's own debian/
    # (its update-networkd-priorities patch, to sort before netplan's files)
    files: tuple[Path, ...] = ()
    for prefix in ("70", "07"):
        base = host(root, NETWORKD_RUN) / f"{prefix}-{ifname}.network"
        dropins = base.with_name(base.name + ".d")
        files += tuple(p for p in (base, dropins) if p.is_symlink() or p.exists())
    if not files:
        return Found(AWS_2X, ifname)
    units = (
        f"refresh-policy-routes@{ifname}.timer",
        f"refresh-policy-routes@{ifname}.service",
        f"policy-routes@{ifname}.service",
    )
    return Found(AWS_2X, ifname, files, (), units)


def find(root: Path, ifname: str) -> list[Found]:
    return [f for f in (find_1x(root, ifname), find_2x(root, ifname)) if f]


def recognise(root: Path, ifname: str, table: int, theirs: Iterable[Theirs]) -> Optional[str]:
    """Whose objects these are, from their shape and the files beside them, or None."""
    found = list(theirs)
    if any(cloudinit.is_table(t.obj.table) for t in found):
        return cloudinit.TOOL
    rules = foreign.rules(found)
    if any(r.priority == table for r in rules) or find_2x(root, ifname):
        return AWS_2X
    eth = _ETH.fullmatch(ifname)
    numbered = eth is not None and table == TABLE_BASE + int(eth.group(1))
    kernel_numbered = bool(rules) and all(r.priority >= KERNEL_NUMBERED_FROM for r in rules)
    if find_1x(root, ifname) or (numbered and kernel_numbered):
        return AWS_1X
    return None


def parse_route_file(text: str, ifname: str) -> list[RouteSpec]:
    """The routes of a network-scripts `route-IF`/`route6-IF` file in `ip route` line
    form (`DEST [via GW] [dev IF] [proto P] [scope S] [src A] [table T] [metric M]`);
    lines of the older ADDRESSn= form and lines that do not parse are skipped."""
    out: list[RouteSpec] = []
    for line in text.splitlines():
        words = line.split("#", 1)[0].split()
        if not words or "=" in words[0]:
            continue
        with contextlib.suppress(ValueError, IndexError):
            out.append(_route_line(words, ifname))
    return out


def _route_line(words: list[str], ifname: str) -> RouteSpec:
    dest = words[0]
    options = dict(zip(words[1::2], words[2::2]))
    gateway = options.get("via")
    dst = ipaddress.ip_network(dest if dest != "default" else _default(gateway), strict=False)
    table = options.get("table", "main")
    metric = options.get("metric")
    return RouteSpec(
        table=TABLE_MAIN if table == "main" else int(table),
        dst=dst,
        ifname=options.get("dev", ifname),
        gateway=ipaddress.ip_address(gateway) if gateway else None,
        metric=int(metric) if metric and int(metric) else None,
    )


def _default(gateway: Optional[str]) -> str:
    return "::/0" if gateway is not None and ":" in gateway else "0.0.0.0/0"
