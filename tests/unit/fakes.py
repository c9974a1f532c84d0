"""In-memory stand-ins for the kernel and IMDS, so the engine's record keeping, table
hand-over, unplug path and crash recovery run as unit tests (no root, milliseconds).

`FakeKernel` is a Backend holding links, addresses, our routes and rules; `crash_after`
makes `apply` die (like kill -9: a BaseException nothing catches) after that many
changes. `FakeImds` serves an IMDS tree from a dict.
"""

from __future__ import annotations

import ipaddress
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Optional

from ec2net.backends.base import ApplyReport
from ec2net.config import Settings
from ec2net.engine import Engine
from ec2net.errors import ImdsAbsent
from ec2net.imds import ImdsClient
from ec2net.model import AddressSpec, ChangeSet, Link, MtuSpec, Op, RouteSpec, RuleSpec
from ec2net.snapshot import Snapshot
from ec2net.state import Store
from ec2net.targets import Target

PRIMARY_MAC = "02:00:0a:00:01:0a"


class Killed(BaseException):
    """The process died here (kill -9): nothing after this point ran."""


@dataclass
class FakeKernel:
    links_: dict[str, Link] = field(default_factory=dict)
    addrs: dict[int, set[AddressSpec]] = field(default_factory=dict)
    routes: set[RouteSpec] = field(default_factory=set)
    rules: set[RuleSpec] = field(default_factory=set)
    crash_after: Optional[int] = None
    crash_on_snapshot: Optional[int] = None  # die when taking the Nth snapshot (1-based)
    refuse: set[str] = field(default_factory=set)  # str(obj) the kernel answers EPERM
    snapshots: int = 0
    applied: int = 0
    name: str = "netlink"
    settle_timeout: float = 0.0
    primary_ok: bool = True
    adds_own_objects: bool = False

    def plug(self, name: str, mac: str, index: int, driver: str = "ena", mtu: int = 1500) -> Link:
        link = Link(index, name, mac, driver, mtu=mtu)
        self.links_[name] = link
        self.addrs.setdefault(index, set())
        return link

    def unplug(self, name: str) -> None:
        """The kernel drops a gone device's addresses and routes, but not rules."""
        link = self.links_.pop(name)
        self.addrs.pop(link.index, None)
        self.routes = {r for r in self.routes if r.ifname != name}

    # --- Backend ----------------------------------------------------------------------
    def links(self) -> list[Link]:
        return sorted(self.links_.values(), key=lambda ln: ln.index)

    def present(self, index: int) -> bool:
        return any(ln.index == index for ln in self.links_.values())

    def snapshot(self) -> Snapshot:
        self.snapshots += 1
        if self.crash_on_snapshot == self.snapshots:
            raise Killed
        return Snapshot(
            links=tuple(self.links()),
            addresses={i: frozenset(a) for i, a in self.addrs.items()},
            routes=frozenset(self.routes),
            rules=frozenset(self.rules),
        )

    def set_up(self, ifname: str) -> bool:
        link = self.links_.get(ifname)
        if link is None or link.up:
            return False
        self.links_[ifname] = replace(link, up=True)
        return True

    def blocked(self, ifname: str) -> Optional[str]:
        return None

    def close(self) -> None:
        pass

    def apply(self, changes: ChangeSet, targets: Sequence[Target] = ()) -> ApplyReport:
        report = ApplyReport()
        for change in changes.changes:
            if self.crash_after is not None and self.applied >= self.crash_after:
                raise Killed
            self.applied += 1
            if str(change.obj) in self.refuse:
                report.failed.append((change, "EPERM"))
                continue
            self._one(change.op, change.obj)
            report.applied.append(change)
        return report

    def _one(self, op: Op, obj: object) -> None:
        if isinstance(obj, MtuSpec):
            self.links_[obj.ifname] = replace(self.links_[obj.ifname], mtu=obj.mtu)
        elif isinstance(obj, AddressSpec):
            link = self.links_.get(obj.ifname)
            if link is None:
                return
            have = self.addrs.setdefault(link.index, set())
            same = {a for a in have if a.address.ip == obj.address.ip}
            if op is Op.ADD:
                have.add(obj) if not same else None
            else:
                have -= same
        elif isinstance(obj, RouteSpec):
            (self.routes.add if op is Op.ADD else self.routes.discard)(obj)
        elif isinstance(obj, RuleSpec):
            (self.rules.add if op is Op.ADD else self.rules.discard)(obj)

    def state(self) -> tuple[frozenset[AddressSpec], frozenset[RouteSpec], frozenset[RuleSpec]]:
        addrs = frozenset(a for found in self.addrs.values() for a in found)
        return addrs, frozenset(self.routes), frozenset(self.rules)


class FakeImds(ImdsClient):
    """IMDS as a dict of meta-data paths; listings are derived from the keys."""

    def __init__(self, tree: Optional[dict[str, str]] = None) -> None:
        super().__init__(("http://127.0.0.1:9",), sleep=lambda s: None)
        self.tree: dict[str, str] = {"mac": PRIMARY_MAC, **(tree or {})}
        self.requests = 0
        self._count = threading.Lock()  # get_many's requests overlap

    def get(self, path: str) -> str:
        with self._count:
            self.requests += 1
        if path in self.tree:
            return self.tree[path]
        prefix = path if path.endswith("/") else path + "/"
        children = sorted(
            {k[len(prefix) :].split("/")[0] + ("/" if "/" in k[len(prefix) :] else "")
             for k in self.tree if k.startswith(prefix)}
        )  # fmt: skip
        if children:
            return "\n".join(children)
        raise ImdsAbsent(f"imds: {path} not found")

    def eni(
        self,
        mac: str,
        device: int,
        ipv4s: Sequence[str] = (),
        *,
        subnet: str = "10.0.2.0/24",
        ipv6s: Sequence[str] = (),
        subnet6: str = "2600:1f16:292:2::/64",
        eni_id: Optional[str] = None,
        prefixes4: Sequence[str] = (),
        prefixes6: Sequence[str] = (),
    ) -> None:
        base = f"network/interfaces/macs/{mac}/"
        for key in [k for k in self.tree if k.startswith(base)]:
            del self.tree[key]
        if prefixes4:
            self.tree[base + "ipv4-prefix"] = "\n".join(prefixes4)
        if prefixes6:
            self.tree[base + "ipv6-prefix"] = "\n".join(prefixes6)
        self.tree[base + "device-number"] = str(device)
        self.tree[base + "interface-id"] = eni_id or "eni-" + mac.replace(":", "")
        self.tree[base + "vpc-ipv4-cidr-blocks"] = "10.0.0.0/16"
        if ipv4s:
            self.tree[base + "local-ipv4s"] = "\n".join(ipv4s)
            self.tree[base + "subnet-ipv4-cidr-block"] = subnet
        if ipv6s:
            self.tree[base + "ipv6s"] = "\n".join(ipv6s)
            self.tree[base + "subnet-ipv6-cidr-blocks"] = subnet6
            self.tree[base + "vpc-ipv6-cidr-blocks"] = "2600:1f16:292::/56"

    def drop(self, mac: str) -> None:
        base = f"network/interfaces/macs/{mac}/"
        for key in [k for k in self.tree if k.startswith(base)]:
            del self.tree[key]


def settings(tmp: Path, **kw: object) -> Settings:
    base: dict[str, object] = {"propagation_timeout": 0.0, "lock_timeout": 1.0}
    return Settings(runtime_dir=str(tmp / "run"), **{**base, **kw})  # type: ignore[arg-type]


def engine(kernel: FakeKernel, imds: FakeImds, tmp: Path, **kw: object) -> Engine:
    s = settings(tmp, **kw)
    return Engine(s, kernel, imds, Store(Path(s.runtime_dir)))


def ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    return ipaddress.ip_address(text)
