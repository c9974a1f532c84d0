"""cloud-init's own policy routing of secondary ENIs, and how ec2net takes those ENIs
over (pure, but for reading cloud-init's rendered files in `rendered_enis`).

cloud-init's EC2 datasource (24.1 and later, rendering through netplan) configures
every NIC that IMDS gives a `device-number`, but the primary: DHCP on it, its secondary
addresses, and in table `100 + index` (index: the NIC's place in (network-card,
device-number) order) a default route and the subnet routes, with one
`from ADDR lookup TABLE` rule per address at a kernel-assigned priority. At boot, at a
new instance, and on Ubuntu 24.04+ and Debian 13 on every hot-plug too.

ec2net takes such ENIs over (docs/backends.md says why): its objects go in first,
then cloud-init's rules and table routes for that ENI are deleted, as in a take-over of
another tool (foreign.py), without being asked, because cloud-init is kept from
configuring the ENI again: the drop-in `DROPIN` (installed with the udev rule and
units) sets the EC2 datasource's documented `apply_full_imds_network_config: false`,
so cloud-init renders the primary only (DHCP), and `updates.network.when` to
`boot-new-instance` and `boot`, so that a configuration rendered before ec2net was
installed is replaced at the next boot, and a hot-plug is no longer cloud-init's
event (with the primary-only configuration, cloud-init's hot-plug handler would
otherwise retry for a NIC it can never find).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from pathlib import PurePosixPath
from typing import Optional

from ec2net.foreign import Theirs
from ec2net.model import IPAddress, RouteSpec, RuleSpec

TOOL = "cloud-init"

# `100 + index`: a NIC's table; an instance has at most a few hundred NICs.
TABLE_FIRST = 100
TABLE_LAST = 100 + 255

DROPIN = PurePosixPath("/etc/cloud/cloud.cfg.d/90-ec2net.cfg")

DROPIN_TEXT = """\
# Managed by ec2net: ec2net configures the secondary ENIs (addresses, policy routing,
# secondary-address changes, detach). cloud-init's EC2 datasource renders the primary
# only (DHCP), at every boot, so that nothing it rendered before ec2net was installed
# configures a secondary ENI again; hot-plug events are ec2net's alone.
# Remove this file (and run `cloud-init clean --configs network` and reboot, or wait
# for a new instance) to give the secondary ENIs back to cloud-init.
datasource:
  Ec2:
    apply_full_imds_network_config: false
updates:
  network:
    when: [boot-new-instance, boot]
"""


def is_table(table: Optional[int]) -> bool:
    """A table cloud-init's EC2 datasource numbers NICs with."""
    return table is not None and TABLE_FIRST <= table <= TABLE_LAST


def _host(addr: IPAddress) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    return ipaddress.ip_network(addr)


def objects_for(
    ifname: str, addresses: Iterable[IPAddress], found: Iterable[Theirs]
) -> frozenset[Theirs]:
    """cloud-init's objects for one ENI among `found` (everything in its table range):
    the rules `from ADDR lookup T` for an address of the ENI, and the routes in such a
    table T. A table only counts where a rule of one of the ENI's addresses looks it up,
    so no other program's table in the same range is ever taken for cloud-init's."""
    hosts = {_host(a) for a in addresses}
    objs = list(found)
    tables = {
        t.obj.table
        for t in objs
        if isinstance(t.obj, RuleSpec)
        and is_table(t.obj.table)
        and t.obj.src in hosts
        and t.obj.suppress_prefixlength is None
    }
    return frozenset(
        t
        for t in objs
        if (isinstance(t.obj, RuleSpec) and t.obj.table in tables and t.obj.src in hosts)
        or (isinstance(t.obj, RouteSpec) and t.obj.table in tables and t.obj.ifname == ifname)
    )
