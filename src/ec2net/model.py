"""Typed values that flow between the pipeline stages.

`Link` is what the kernel says about an interface; `AddressSpec`, `RouteSpec` and
`RuleSpec` are network objects in a form both the planner (desired) and a backend
(current, read back) produce, so that `diff` is plain set arithmetic.
"""

from __future__ import annotations

import enum
import ipaddress
from dataclasses import dataclass, field
from typing import Optional, Union

IPAddress = Union[ipaddress.IPv4Address, ipaddress.IPv6Address]
IPNetwork = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]
IPInterface = Union[ipaddress.IPv4Interface, ipaddress.IPv6Interface]

# Route/rule protocol number that marks objects as ours (rtnetlink `proto`). Values
# up to 4 are the kernel's; 9-19 and 42, 186-192 are taken by well-known daemons.
RTPROT_EC2NET = 236

TABLE_MAIN = 254
TABLE_LOCAL = 255

# Rule priorities. Per ENI index i = 100 * network_card + device_number:
#   PRIO_VPC + i   : from <owned block> lookup <table> suppress_prefixlength 0
#   PRIO_MAIN + i  : from <owned block> lookup main suppress_prefixlength 0
#   PRIO_DEFAULT + i: from <owned block> lookup <table>
# so in-VPC routes of the ENI win first, then specific main routes (bridges, pods,
# user routes), and only then the ENI's default route. Every rule belongs to exactly
# one ENI (none is shared), so removing one ENI never touches another's routing, and
# each ENI's files are self-contained. See docs/routing.md.
TABLE_BASE = 10000
PRIO_VPC = 10000
PRIO_MAIN = 20000
PRIO_DEFAULT = 25000
MAX_NETWORK_CARDS = 32


def is_eni_table(table: int) -> bool:
    """Whether `table` is in the range the ENI numbering can produce."""
    return TABLE_BASE <= table < TABLE_BASE + 100 * MAX_NETWORK_CARDS


def eni_table_of(obj: NetObject) -> Optional[int]:
    """The ENI table a route or rule belongs to, or None: a route in an ENI table, a
    rule looking one up, or an ENI's main-table rule (priority PRIO_MAIN + index, with a
    source and suppress_prefixlength 0). The one ownership predicate: diff scoping,
    results, status, file-backend cleanup and managed reads all ask this."""
    if isinstance(obj, RouteSpec):
        return obj.table if is_eni_table(obj.table) else None
    if isinstance(obj, MtuSpec):
        return None
    if isinstance(obj, RuleSpec):
        if is_eni_table(obj.table):
            return obj.table
        table = obj.priority - PRIO_MAIN + TABLE_BASE
        main = obj.table == TABLE_MAIN and obj.src is not None and obj.suppress_prefixlength == 0
        return table if main and is_eni_table(table) else None
    return None


def owns(obj: NetObject, table: int, ifname: str) -> bool:
    """Whether `obj` is part of the ENI with this table and interface name: routes and
    rules by table; addresses, the link's MTU and local (AnyIP) routes by interface."""
    if isinstance(obj, (AddressSpec, MtuSpec)):
        return obj.ifname == ifname
    if isinstance(obj, RouteSpec) and obj.kind is RouteKind.LOCAL:
        return obj.ifname == ifname
    return eni_table_of(obj) == table


class Family(enum.IntEnum):
    V4 = 2  # AF_INET
    V6 = 10  # AF_INET6


class Scope(enum.IntEnum):
    UNIVERSE = 0
    LINK = 253
    HOST = 254


class RouteKind(enum.IntEnum):
    """rtnetlink route types ec2net creates."""

    UNICAST = 1
    LOCAL = 2  # AnyIP: every address of the prefix is delivered locally


def family_of(value: Union[IPAddress, IPNetwork, IPInterface]) -> Family:
    return Family.V4 if value.version == 4 else Family.V6


@dataclass(frozen=True)
class Link:
    """An interface as the kernel reports it."""

    index: int
    name: str
    mac: str  # lowercase, colon separated
    driver: str  # sysfs driver ("ena", "virtio_net") or link kind ("veth")
    up: bool = True
    # IPv6 routers learned from RAs on this link (link-local), if any.
    ipv6_routers: tuple[ipaddress.IPv6Address, ...] = ()
    # Index of the bridge, bond or team this link is a port of: such a link carries no
    # addresses of its own (an ENI handed to VMs or containers) and is left alone.
    master: Optional[int] = None
    mtu: int = 1500


@dataclass(frozen=True)
class AddressSpec:
    ifname: str
    address: IPInterface
    noprefixroute: bool = True
    # Read back only: the address has no lifetime (a DHCP client's lease has one). Not
    # part of identity: a planned address is satisfied by one with a lifetime.
    permanent: bool = field(default=True, compare=False)

    @property
    def family(self) -> Family:
        return family_of(self.address)

    def __str__(self) -> str:
        flags = " noprefixroute" if self.noprefixroute else ""
        return f"address {self.address} dev {self.ifname}{flags}"


@dataclass(frozen=True)
class RouteSpec:
    table: int
    dst: IPNetwork
    ifname: str
    gateway: Optional[IPAddress] = None
    scope: Scope = Scope.UNIVERSE
    src: Optional[IPAddress] = None  # preferred source
    kind: RouteKind = RouteKind.UNICAST
    # None: the kernel's default (IPv4 0, IPv6 1024), which every planned route has;
    # read back as None too. Another tool's route may have its own.
    metric: Optional[int] = None

    @property
    def family(self) -> Family:
        return family_of(self.dst)

    @property
    def key(self) -> tuple[int, IPNetwork, int]:
        """What the kernel keys a route by (table, destination, metric): two routes with
        the same key cannot both be there, so ours can only replace the other."""
        return (self.table, self.dst, self.metric or 0)

    def __str__(self) -> str:
        local = "local " if self.kind is RouteKind.LOCAL else ""
        parts = [f"route {local}{self.dst}"]
        if self.gateway is not None:
            parts.append(f"via {self.gateway}")
        table = {TABLE_LOCAL: "local", TABLE_MAIN: "main"}.get(self.table, str(self.table))
        parts.append(f"dev {self.ifname} table {table}")
        if self.scope is Scope.LINK:
            parts.append("scope link")
        elif self.scope is Scope.HOST and self.kind is not RouteKind.LOCAL:
            parts.append("scope host")
        if self.src is not None:
            parts.append(f"src {self.src}")
        if self.metric is not None:
            parts.append(f"metric {self.metric}")
        return " ".join(parts)


@dataclass(frozen=True)
class RuleSpec:
    priority: int
    family: Family
    table: int
    src: Optional[IPNetwork] = None
    suppress_prefixlength: Optional[int] = None

    def __str__(self) -> str:
        parts = [f"rule pref {self.priority}"]
        parts.append(f"from {self.src}" if self.src is not None else "from all")
        parts.append(f"lookup {'main' if self.table == TABLE_MAIN else self.table}")
        if self.suppress_prefixlength is not None:
            parts.append(f"suppress_prefixlength {self.suppress_prefixlength}")
        return ("-6 " if self.family is Family.V6 else "") + " ".join(parts)


@dataclass(frozen=True)
class MtuSpec:
    """The link's MTU. Only ever set (ADD): `down` sets the MTU back that the link had
    before ec2net changed it."""

    ifname: str
    mtu: int

    @property
    def family(self) -> Family:
        return Family.V4  # a link property; any fixed value keeps sort_key total

    def __str__(self) -> str:
        return f"link {self.ifname} mtu {self.mtu}"


NetObject = Union[AddressSpec, RouteSpec, RuleSpec, MtuSpec]

# The MTU first: a route's MTU follows the link's when it is added.
_KIND_ORDER = {MtuSpec: 0, AddressSpec: 1, RouteSpec: 2, RuleSpec: 3}


def sort_key(obj: NetObject) -> tuple[int, int, int, str]:
    """A total order over mixed objects (IPv4 and IPv6 values do not compare). Routes
    without a gateway sort first: the kernel accepts a gateway only once a route in
    that table makes it reachable."""
    via = int(isinstance(obj, RouteSpec) and obj.gateway is not None)
    return (_KIND_ORDER[type(obj)], via, int(obj.family), str(obj))


@dataclass(frozen=True)
class InterfacePlan:
    """Everything one ENI should have, as planned."""

    mac: str
    eni_id: str
    ifname: str
    table: int
    addresses: frozenset[AddressSpec] = frozenset()
    routes: frozenset[RouteSpec] = frozenset()
    rules: frozenset[RuleSpec] = frozenset()
    mtu: Optional[int] = None  # None: the link's MTU is left as it is

    def objects(self) -> frozenset[NetObject]:
        mtu = (MtuSpec(self.ifname, self.mtu),) if self.mtu is not None else ()
        return frozenset((*self.addresses, *self.routes, *self.rules, *mtu))


class Op(enum.Enum):
    ADD = "add"
    DEL = "del"


@dataclass(frozen=True)
class Change:
    op: Op
    obj: NetObject
    # The change meets another tool's object (a take-over): an ADD replaces the object
    # with the same key in place (a route; an address made permanent), a DEL removes it
    # whatever its protocol.
    theirs: bool = False
    # A DEL of theirs: their protocol, so that the kernel matches theirs only (0: any).
    proto: int = 0

    @property
    def release(self) -> bool:
        """A take-over's delete of another tool's object."""
        return self.theirs and self.op is Op.DEL

    def __str__(self) -> str:
        if self.theirs:
            return f"{'replace' if self.op is Op.ADD else 'del theirs'} {self.obj}"
        return f"{self.op.value} {self.obj}"


@dataclass(frozen=True)
class ChangeSet:
    """Ordered changes: deletions rules -> routes -> addresses, then additions
    addresses -> routes -> rules, so nothing is ever routed through a half-built path;
    last, on a take-over, the other tool's rules and routes, once ours are in place."""

    changes: tuple[Change, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.changes)

    def __len__(self) -> int:
        return len(self.changes)


def rule_of_table(rule: RuleSpec, table: int) -> bool:
    """Whether `rule` belongs to the ENI of `table` (see `eni_table_of`)."""
    return eni_table_of(rule) == table
