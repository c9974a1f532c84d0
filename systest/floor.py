"""The floor of a hot-plug: the fastest anything can configure an ENI in this guest.

A minimal handler gets the udev event and applies the ENI's addresses, routes, rules and
MTU with one `ip -force -batch`, from a file the host wrote before the NIC appeared: no
IMDS, no network manager, no interpreter. The objects are the ones ec2net plans for that
ENI (`ec2net.plan.plan_interface` on the host, from the simulator's own record of the
ENI), so what is timed is the same work ec2net does, done as cheaply as it can be done.

It is timed exactly as a tool's hot-plug is (`scenarios.hotplug`: from QMP device_add to
every address answering the client and the peer). While it runs no tool of the guest
may act: `disable_ec2net` stops the watch daemon and keeps the udev-started unit from
starting (its ConditionPathExists file). The handler also records when it ran (the
guest's /proc/uptime before and after `ip`), which `handler_times` maps to the host's
clock.

Unplug: the kernel removes the link's addresses and routes with the link; the rules are
not the link's, so `remove_rules` deletes them (outside the timed part).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Optional

from ec2net.metadata import EniMetadata
from ec2net.model import AddressSpec, Family, Link, RouteSpec, RuleSpec
from ec2net.plan import AWS_IPV6_ROUTER, PlanOptions, plan_interface
from ec2sim.world import Eni
from systest import scenarios, trace
from systest.vpc import VPC_MTU, VpcGuest

DIR = "/run/systest-floor"
HANDLER = f"{DIR}/handler"
RULE = "/run/udev/rules.d/99-systest-floor.rules"
IFNAME = "@IF@"  # replaced by the handler with the name udev gave the NIC

# udev runs RUN+= programs after every rule, after the rename: $name is the new name
# ($env{INTERFACE} still the kernel's eth0), $attr{address} the
# MAC. The shell and ip are all that runs.
HANDLER_SH = f"""#!/bin/sh
# systest floor: apply the batch the host left for this MAC ($2) to interface $1
PATH=/usr/sbin:/usr/bin:/sbin:/bin
f={DIR}/$2
[ -f "$f.batch4" ] || exit 0
read t0 _ < /proc/uptime
sed "s/{IFNAME}/$1/g" "$f.batch4" | ip -force -batch - > "$f.out" 2>&1
rc=$?
sed "s/{IFNAME}/$1/g" "$f.batch6" | ip -6 -force -batch - >> "$f.out" 2>&1
rc=$((rc + $?))
read t1 _ < /proc/uptime
echo "$t0 $t1 $rc" >> {DIR}/$2.log
"""
# /run may be mounted noexec: the shell reads the script
RULE_TEXT = (
    'ACTION=="add", SUBSYSTEM=="net", ATTR{address}=="?*", '
    f'RUN+="/bin/sh {HANDLER} $name $attr{{address}}"\n'
)


def metadata_of(g: VpcGuest, eni: Eni) -> EniMetadata:
    """What IMDS says about `eni`, as ec2net would have read it."""
    world = g.fabric.world
    subnet = world.subnet_of(eni)
    return EniMetadata(
        mac=eni.mac,
        eni_id=eni.eni_id,
        device_number=eni.device_number,
        network_card=eni.network_card,
        is_primary=eni.mac == world.primary_mac,
        ipv4s=tuple(eni.ipv4s),
        subnet4=subnet.cidr4,
        ipv6s=tuple(eni.ipv6s),
        subnet6=(subnet.cidr6,) if subnet.cidr6 is not None else (),
        ipv4_prefixes=tuple(eni.ipv4_prefixes),
        ipv6_prefixes=tuple(eni.ipv6_prefixes),
        vpc4=tuple(world.vpc_cidr4),
        vpc6=tuple(world.vpc_cidr6),
    )


def _addr_line(a: AddressSpec) -> str:
    nodad = " nodad" if a.family is Family.V6 else ""  # what ec2net's netlink does
    return f"address add {a.address} dev {a.ifname} noprefixroute{nodad}"


def _route_line(r: RouteSpec) -> str:
    # `ip route add default` would need -6; a prefix says its family itself
    text = str(r).replace("route ", "route add ", 1)
    return f"{text} proto 236"


def _rule_line(r: RuleSpec) -> str:
    text = str(r).removeprefix("-6 ").replace("rule ", "rule add ", 1)
    if r.src is None:  # "from all" needs the family: ec2net plans none such
        raise ValueError(f"no family in {r}")
    return f"{text} proto 236"


def batch_lines(
    g: VpcGuest, eni: Eni, mtu: Optional[int] = VPC_MTU
) -> tuple[list[str], list[str]]:
    """The ENI's planned objects as `ip -batch` lines, the interface named IFNAME; in
    ec2net's order (MTU, addresses, on-link routes, gateway routes, rules). One batch
    per family: `ip rule` takes the family from -6 only."""
    link = Link(0, IFNAME, eni.mac, "virtio_net", ipv6_routers=(AWS_IPV6_ROUTER,))
    plan = plan_interface(metadata_of(g, eni), link, PlanOptions(mtu=mtu))
    out: tuple[list[str], list[str]] = ([], [])
    out[0].append(f"link set dev {IFNAME} up" + (f" mtu {mtu}" if mtu is not None else ""))
    for a in sorted(plan.addresses, key=str):
        out[a.family is Family.V6].append(_addr_line(a))
    for r in sorted(plan.routes, key=lambda r: (r.gateway is not None, str(r))):
        out[r.family is Family.V6].append(_route_line(r))
    for rule in sorted(plan.rules, key=str):
        out[rule.family is Family.V6].append(_rule_line(rule))
    return out


def disable_ec2net(g: VpcGuest) -> None:
    """No ec2net process while the floor is timed: the daemon stopped, and the file
    that keeps the udev-started unit from starting (ConditionPathExists=!) put back."""
    g.agent.run(["systemctl", "stop", "ec2net-watch.service"], timeout=120, check=True)
    g.agent.run(["mkdir", "-p", "/run/ec2net"], check=True)
    g.agent.write_file("/run/ec2net/watch.running", b"")


def enable_ec2net(g: VpcGuest) -> None:
    """Undo `disable_ec2net`: the daemon runs again (its unit makes the file anew)."""
    g.agent.run(["rm", "-f", "/run/ec2net/watch.running"], check=True)
    g.agent.run(["systemctl", "start", "ec2net-watch.service"], timeout=300, check=True)


def install(g: VpcGuest) -> None:
    g.agent.write_file(HANDLER, HANDLER_SH.encode(), mode=0o755)
    g.agent.write_file(RULE, RULE_TEXT.encode())
    g.agent.run(["udevadm", "control", "--reload"], timeout=120, check=True)


def uninstall(g: VpcGuest) -> None:
    g.agent.run(["rm", "-rf", RULE, DIR], check=True)
    g.agent.run(["udevadm", "control", "--reload"], timeout=120, check=True)


def prepare(g: VpcGuest, eni: Eni) -> None:
    """Before the NIC appears: the batch for its MAC (the objects known in advance)."""
    for fam, lines in zip("46", batch_lines(g, eni)):
        g.agent.write_file(f"{DIR}/{eni.mac}.batch{fam}", "\n".join(lines) + "\n")


def handler_times(g: VpcGuest, eni: Eni) -> list[tuple[float, float, int]]:
    """(start, end) guest uptimes and ip's exit status of each handler run for `eni`."""
    try:
        text = g.agent.read_file(f"{DIR}/{eni.mac}.log").decode()
    except Exception:  # never ran: no log
        return []
    out = []
    for line in text.splitlines():
        t0, t1, rc = line.split()
        out.append((float(t0), float(t1), int(rc)))
    return out


def remove_rules(g: VpcGuest, eni: Eni) -> None:
    """After the unplug: the rules (the link took its addresses and routes along)."""
    for fam, lines in zip(("-4", "-6"), batch_lines(g, eni)):
        dels = [ln.replace("rule add ", "rule del ", 1) for ln in lines if ln.startswith("rule")]
        g.agent.run(["ip", fam, "-force", "-batch", "-"], input="\n".join(dels) + "\n")


@dataclass
class FloorPlug:
    result: scenarios.Hotplug
    handler_ms: Optional[float]  # the handler's start, ms after device_add (host clock)
    ip_ms: Optional[float]  # its `ip -batch` (uptime resolution: 10 ms)
    ip_rc: Optional[int]


def hotplug(
    g: VpcGuest, subnet: str, n_ipv4: int, timeout: float, *, n_ipv6: int = 1
) -> FloorPlug:
    """One hot-plug configured by the floor's handler, timed as a tool's is; then the
    unplug and the leftover check (the rules removed first, see the module doc)."""
    offset = trace.guest_clock_offset(g, samples=3)
    t0: list[float] = []

    def before(eni: Eni) -> None:
        prepare(g, eni)
        t0.append(time.monotonic())  # scenarios.hotplug's t0 follows within microseconds

    r, plugged = scenarios.hotplug(
        g, subnet, n_ipv4, timeout, n_ipv6=n_ipv6, unplug=False, tail=0.0, before_plug=before
    )
    runs = handler_times(g, plugged.eni)
    if not runs or runs[0][2] != 0:  # say why, for the benchmark's log
        mac = plugged.eni.mac
        out = g.agent.run(["sh", "-c", f"cat {DIR}/{mac}.out; journalctl -n 15 -u systemd-udevd"])
        print(f"floor handler for {mac}: {runs}\n{out.stdout}", flush=True)
    start = ip = rc = None
    if runs and t0:
        up0, up1, rc = runs[0]
        start = (up0 + offset - t0[0]) * 1000
        ip = (up1 - up0) * 1000
    r.unplug_s = g.unplug(plugged)
    remove_rules(g, plugged.eni)
    g.agent.run(["sh", "-c", f"rm -f {DIR}/{plugged.eni.mac}.*"])
    r.clean_s, r.leftovers = g.wait_clean(plugged, 30.0)
    return FloorPlug(r, start, ip, rc)
