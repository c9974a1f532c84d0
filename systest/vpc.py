"""A QEMU guest as the instance in ec2sim's simulated VPC.

The fabric runs in tap mode: every ENI's router port is a tap in the router namespace,
and QEMU runs in that namespace, so the guest's primary NIC and each hot-plugged ENI NIC
sit on their subnets behind the source/destination check, get DHCP from the fabric's
dnsmasq and IMDS at 169.254.169.254 from its simulator (whose request log counts the
guest's requests). Reachability is proved as in the world tests: real TCP from the
client (another subnet) and the peer (the primary's subnet) to the guest's echo service.

Order of a hot-plug is EC2's: the ENI is attached in IMDS (and routed) first, then the
NIC appears (QMP device_add); on unplug the NIC goes (device_del, DEVICE_DELETED), then
IMDS forgets the ENI.
"""

from __future__ import annotations

import ipaddress
import json
import os
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Optional

from ec2sim import probe
from ec2sim.fabric import Fabric
from ec2sim.netns import cleanup_orphans, proc_start_time, write_sysctls
from ec2sim.world import Eni, Subnet, World
from systest import cloud_guest
from systest.agent import Agent
from systest.guest_files import ECHO_PORT, GUEST_TOOLS_PATH
from systest.image import Image, eth_names
from systest.qemu import HOTPLUG_SLOTS, BootInfo, Vm, first_boot

LABEL = "systest"
CONTAINER_NS = "systest-ctr"
DOCKER_BRIDGE_ADDR = "172.17.0.1/16"
DOCKER_CTR_ADDR = "172.17.0.2/16"

# The VPC's router knows every address's NIC without asking; the router namespace must
# ask (ARP, NDP). A probe of an address before the guest holds it leaves a FAILED
# neighbour entry for the kernel's 3 x 1 s retransmits, which quantised hot-plug
# measurements to ~3.1 s: an ENI's router port retries every 50 ms instead.
NEIGH_RETRANS_MS = "50"
# wait_reachable's probe cadence per (source, address): the resolution of every
# "reachable after" figure. Probes overlap, so a lost SYN costs nothing.
PROBE_EVERY = 0.1


PRIMARY_MAC = "02:00:0a:00:01:0a"
OTHER_SUBNET_MAC = "02:00:0a:00:02:14"
SAME_SUBNET_MAC = "02:00:0a:00:01:1e"


def _v4(*addrs: str) -> list[ipaddress.IPv4Address]:
    return [ipaddress.IPv4Address(a) for a in addrs]


def _v6(*addrs: str) -> list[ipaddress.IPv6Address]:
    return [ipaddress.IPv6Address(a) for a in addrs]


VPC6 = "2600:1f16:292"
# A VPC's links run jumbo frames and DHCP says so; the guest's NICs start at 1500.
VPC_MTU = 9001
IPV6_ONLY_SUBNET = "subnet-d6"


def system_world() -> World:
    """Dual-stack VPC for the guest (10.0.0.0/16, 2600:1f16:292::/56, links at 9001):
    the primary (10.0.1.10, ::10) in subnet-a; an ENI in subnet-b with two secondary
    IPv4 and one IPv6 (device 1); an ENI in the primary's subnet with one secondary
    IPv4 and one IPv6 (device 2). subnet-d6 is IPv6-only (hot-plugged IPv6-only ENIs go
    there). The client lives in subnet-c, the peer in subnet-a. Both extra ENIs are kept
    aside by the fabric until attached."""
    subnets = {
        s: Subnet(
            s,
            ipaddress.IPv4Network(f"10.0.{n}.0/24"),
            ipaddress.IPv6Network(f"{VPC6}:{n}::/64"),
        )
        for n, s in ((1, "subnet-a"), (2, "subnet-b"), (3, "subnet-c"))
    }
    subnets[IPV6_ONLY_SUBNET] = Subnet(
        IPV6_ONLY_SUBNET, None, ipaddress.IPv6Network(f"{VPC6}:d6::/64")
    )
    enis = [
        Eni(
            "eni-0aaaaaaaaaaaaaaa0",
            PRIMARY_MAC,
            "subnet-a",
            0,
            ipv4s=_v4("10.0.1.10"),
            ipv6s=_v6(f"{VPC6}:1::10"),
        ),
        Eni(
            "eni-0bbbbbbbbbbbbbbb1",
            OTHER_SUBNET_MAC,
            "subnet-b",
            1,
            ipv4s=_v4("10.0.2.20", "10.0.2.21", "10.0.2.22"),
            ipv6s=_v6(f"{VPC6}:2::20"),
        ),
        Eni(
            "eni-0ccccccccccccccc2",
            SAME_SUBNET_MAC,
            "subnet-a",
            2,
            ipv4s=_v4("10.0.1.30", "10.0.1.31"),
            ipv6s=_v6(f"{VPC6}:1::30"),
        ),
    ]
    return World(
        vpc_cidr4=[ipaddress.IPv4Network("10.0.0.0/16")],
        vpc_cidr6=[ipaddress.IPv6Network(f"{VPC6}::/56")],
        subnets=subnets,
        enis={e.mac: e for e in enis},
        primary_mac=PRIMARY_MAC,
        instance_type="m6i.xlarge",  # Nitro, like the guest's NIC naming
        mtu=VPC_MTU,
    )


def addresses(eni: Eni) -> list[str]:
    return [str(a) for a in (*eni.ipv4s, *eni.ipv6s)]


@dataclass
class Plugged:
    eni: Eni
    slot: int
    dev_id: str
    name: Optional[str] = None  # the guest's, where it is not the slot's (ethN guests)

    @property
    def ifname(self) -> str:
        return self.name or f"ens{self.slot}"

    @property
    def table(self) -> int:
        # the AWS tool's numbering, which ec2net keeps
        return 10000 + 100 * self.eni.network_card + self.eni.device_number


@dataclass
class Reach:
    """Outcome of waiting until every (source, address) pair echoes."""

    seconds: Optional[float]  # None: not all within the timeout, or a pair failed again
    missing: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.seconds is not None


class VpcGuest:
    def __init__(self, image: Image, workdir: Path, world: Optional[World] = None) -> None:
        self.image = image
        self.workdir = workdir
        # ra: router advertisements (default route, M flag for DHCPv6) as in a VPC
        self.fabric = Fabric(world or system_world(), dhcp=True, ra=True, taps=True, label=LABEL)
        self.vm: Optional[Vm] = None
        self.plugged: dict[str, Plugged] = {}  # by MAC
        self._last_slot = 0
        self.boot: Optional[BootInfo] = None

    # ------------------------------------------------------------ lifecycle

    def start(self, boot_timeout: float = 300.0) -> BootInfo:
        cleanup_orphans(LABEL)  # worlds (and their QEMU) of crashed earlier runs
        try:
            self.fabric.start()
            world = self.fabric.world
            primary = world.primary()
            extra: tuple[str, ...] = ()
            if cloud_guest.is_cloud_init(self.image.variant):
                extra = tuple(cloud_guest.smbios_args(world.instance_id, world.instance_type))

            def launch() -> Vm:
                vm = Vm(
                    self.image,
                    self.fabric.router_ns,
                    self.workdir / "vm",
                    self.fabric.tap_of(primary.mac),
                    primary.mac,
                    allow_reboot=True,
                    extra_args=extra,
                )
                self.vm = vm
                vm.start()
                # recorded with the world: a crashed run's QEMU is ended by pid with it
                assert vm.pid is not None
                self.fabric.state.pids.append((vm.pid, proc_start_time(vm.pid)))
                self.fabric.state.save()
                return vm

            _, self.boot = first_boot(launch, boot_timeout)
            return self.boot
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        if self.vm is not None:
            self.vm.stop()
        self.fabric.stop()

    def __enter__(self) -> VpcGuest:
        return self

    def __exit__(
        self,
        exc_type: Optional[type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        self.stop()

    @property
    def qemu(self) -> Vm:
        assert self.vm is not None, "not started"
        return self.vm

    @property
    def agent(self) -> Agent:
        return self.qemu.agent

    def reboot(self, timeout: float = 300.0) -> BootInfo:
        self.boot = self.qemu.reboot(timeout)
        return self.boot

    # ------------------------------------------------------------ ENIs

    def used_slots(self) -> set[int]:
        return {p.slot for p in self.plugged.values()}

    def next_slot(self) -> int:
        """The PCI slot the next `plug` takes (the guest names its NIC ens<slot>): the
        next free one after the last used, not the lowest. A NIC added to a slot the
        guest has just ejected can go unseen (measured: the bench's IPv6-only ENI,
        plugged right after an unplug, never appeared, for either tool)."""
        used = self.used_slots()
        after = [s for s in HOTPLUG_SLOTS if s > self._last_slot and s not in used]
        return next(iter(after), None) or next(s for s in HOTPLUG_SLOTS if s not in used)

    def plug(self, eni: Eni) -> Plugged:
        """Attach `eni` in the VPC, then hot-plug its NIC into a free PCI slot."""
        slot = self.next_slot()
        self._last_slot = slot
        self.fabric.attach(eni, f"ens{slot}")
        port = self.fabric.tap_of(eni.mac)
        write_sysctls(
            self.fabric.router_ns,
            {f"net.ipv{v}.neigh.{port}.retrans_time_ms": NEIGH_RETRANS_MS for v in (4, 6)},
        )
        try:
            dev_id = self.qemu.hotplug_nic(self.fabric.tap_of(eni.mac), eni.mac, slot)
        except BaseException:
            self.fabric.detach(eni.mac)
            raise
        plugged = Plugged(eni, slot, dev_id)
        if eth_names(self.image.variant):
            # the kernel's ethN (the lowest free number), not the slot's name
            plugged.name = self.agent.wait_link(eni.mac, timeout=60)
        self.plugged[eni.mac] = plugged
        return plugged

    def unplug(self, plugged: Plugged, timeout: float = 60.0) -> float:
        """Unplug the NIC (waits for the guest's eject), then detach in the VPC.
        Returns the seconds until QEMU reported DEVICE_DELETED."""
        took = self.qemu.unplug_nic(plugged.dev_id, timeout)
        self.fabric.detach(plugged.eni.mac)
        self.plugged.pop(plugged.eni.mac, None)
        return took

    def attached_enis(self) -> list[Eni]:
        with self.fabric.world.lock:
            return [e for e in self.fabric.world.attached() if e.mac in self.fabric.ports]

    def all_addresses(self) -> list[str]:
        return [a for e in self.attached_enis() for a in addresses(e)]

    # ------------------------------------------------------------ reachability

    def sources(self) -> dict[str, str]:
        return {"client": self.fabric.client_ns, "peer": self.fabric.peer_ns}

    def wait_reachable(
        self,
        addrs: Sequence[str],
        timeout: float,
        sources: Optional[Mapping[str, str]] = None,
        probe_timeout: float = 0.7,
        since: Optional[float] = None,
    ) -> Reach:
        """Probe every (source, address) pair until each has echoed once, then confirm
        all of them in one more round. `seconds` counts from `since` (a monotonic time,
        e.g. just before the QMP device_add; default: now) to the last first success.

        A new probe starts every PROBE_EVERY while the older ones still wait: a SYN that
        reached the guest before the address (or the rule its answer needs) is lost,
        and TCP would resend it only after 1 s; one probe at a time, each waiting out
        its timeout, measured in steps of `probe_timeout` (0.7 s) instead."""
        srcs = dict(sources or self.sources())
        start = time.monotonic() if since is None else since
        deadline = time.monotonic() + timeout
        first: dict[tuple[str, str], float] = {}
        lock = threading.Lock()

        def chase(name: str, ns: str, addr: str) -> None:
            answered = threading.Event()

            def one() -> None:
                if self.fabric.probe(ns, addr, timeout=probe_timeout):
                    with lock:
                        first.setdefault((name, addr), time.monotonic())
                    answered.set()

            probes: list[threading.Thread] = []
            while not answered.is_set() and time.monotonic() < deadline:
                probes = [t for t in probes if t.is_alive()]
                probes.append(threading.Thread(target=one, daemon=True))
                probes[-1].start()
                answered.wait(PROBE_EVERY)
            for t in probes:
                t.join()  # each bounded by its own timeout

        pairs = [(n, ns, a) for n, ns in srcs.items() for a in addrs]
        threads = [threading.Thread(target=chase, args=p, daemon=True) for p in pairs]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        missing = [f"{a} from {n}" for n, _, a in pairs if (n, a) not in first]
        if missing:
            return Reach(None, missing)
        again = self.unreachable(addrs, srcs, probe_timeout=3.0)
        if again:
            return Reach(None, [f"{m} (answered once, then not)" for m in again])
        return Reach(max(first.values(), default=start) - start)

    def unreachable(
        self,
        addrs: Sequence[str],
        sources: Optional[Mapping[str, str]] = None,
        probe_timeout: float = 2.0,
    ) -> list[str]:
        """One parallel round: the pairs that do not echo now."""
        srcs = dict(sources or self.sources())
        pairs = [(n, ns, a) for n, ns in srcs.items() for a in addrs]
        ok: dict[int, bool] = {}

        def one(i: int, ns: str, addr: str) -> None:
            ok[i] = self.fabric.probe(ns, addr, timeout=probe_timeout)

        threads = [
            threading.Thread(target=one, args=(i, ns, a), daemon=True)
            for i, (_, ns, a) in enumerate(pairs)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return [f"{a} from {n}" for i, (n, _, a) in enumerate(pairs) if not ok.get(i)]

    def transfer(self, addr: str, size: int = 4 << 20) -> tuple[bool, int]:
        """`size` random bytes from the client through the check to the guest's echo
        service at `addr` and back: (intact, the client's send MSS, which says what MTU
        the path and the guest's NIC carried)."""
        return probe.transfer(self.fabric.client_ns, addr, os.urandom(size), ECHO_PORT)

    # ------------------------------------------------------------ inside the guest

    def link_mtus(self) -> dict[str, int]:
        """The MTU of each of the guest's links, by MAC address."""
        out = self.agent.run(["ip", "-j", "link", "show"], timeout=60, check=True).stdout
        return {
            str(link["address"]): int(link["mtu"])
            for link in json.loads(out)
            if link.get("link_type") == "ether"
        }

    def tools(self, *args: str, timeout: float = 120.0) -> str:
        argv = ["python3", GUEST_TOOLS_PATH, *args]
        return self.agent.run(argv, timeout=timeout, check=True).stdout

    def guest_probe(self, addrs: Sequence[str], netns: Optional[str] = None) -> dict[str, bool]:
        """TCP echo probes from inside the guest (from its namespace `netns` if given)."""
        argv = ["python3", GUEST_TOOLS_PATH, "probe", str(ECHO_PORT), "2", *addrs]
        if netns is not None:
            argv = ["ip", "netns", "exec", netns, *argv]
        out = self.agent.run(argv, timeout=120, check=True).stdout
        result: dict[str, bool] = json.loads(out)
        return result

    def docker_bridge(self) -> str:
        """What Docker sets up: docker0 172.17.0.1/16, forwarding, and a "container"
        namespace behind a veth with 172.17.0.2 and its default route via the bridge."""
        self.agent.run(
            ["ip", "-batch", "-"],
            input="\n".join(
                [
                    "link add docker0 type bridge",
                    f"addr add {DOCKER_BRIDGE_ADDR} dev docker0",
                    "link set docker0 up",
                    f"netns add {CONTAINER_NS}",
                    f"link add vethctr type veth peer name eth0 netns {CONTAINER_NS}",
                    "link set vethctr master docker0",
                    "link set vethctr up",
                ]
            )
            + "\n",
            check=True,
        )
        gw = DOCKER_BRIDGE_ADDR.split("/", maxsplit=1)[0]
        self.agent.run(
            ["ip", "-n", CONTAINER_NS, "-batch", "-"],
            input=f"link set lo up\nlink set eth0 up\naddr add {DOCKER_CTR_ADDR} dev eth0\n"
            f"route add default via {gw}\n",
            check=True,
        )
        self.agent.run(["sysctl", "-q", "-w", "net.ipv4.ip_forward=1"], check=True)
        return CONTAINER_NS

    def leftovers(self, plugged: Plugged, dirs: Sequence[str] = ()) -> list[str]:
        """What the guest still holds for a detached ENI (`dirs`: more places to look
        for files naming it, e.g. network-scripts)."""
        args = ["leftovers", "--ifname", plugged.ifname, "--mac", plugged.eni.mac]
        args += ["--eni-id", plugged.eni.eni_id, "--table", str(plugged.table)]
        for addr in addresses(plugged.eni):
            args += ["--addr", addr]
        for d in dirs:
            args += ["--dir", d]
        found: list[str] = json.loads(self.tools(*args))
        return found

    def wait_clean(
        self, plugged: Plugged, timeout: float, dirs: Sequence[str] = ()
    ) -> tuple[Optional[float], list[str]]:
        """Poll `leftovers` until none (returns the seconds) or the timeout."""
        start = time.monotonic()
        while True:
            found = self.leftovers(plugged, dirs)
            if not found:
                return time.monotonic() - start, []
            if time.monotonic() - start > timeout:
                return None, found
            time.sleep(1.0)

    def imds_requests(self) -> int:
        return self.fabric.imds_requests()

    def journal(self, *units: str, lines: int = 80) -> str:
        argv = ["journalctl", "--no-pager", "-o", "short-monotonic", "-n", str(lines)]
        for unit in units:
            argv += ["-u", unit]
        return self.agent.run(argv, timeout=60).stdout
