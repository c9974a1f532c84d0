"""The fault suite's world: a fixed two-ENI VPC with foreign state, a primary probe,
bounded ec2net runs and the result rows that tools/reliability-report tabulates."""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Optional

from ec2sim import netns
from ec2sim.fabric import Fabric
from ec2sim.imds_state import Injected
from ec2sim.probe import probe
from ec2sim.world import Eni, World, default_world
from tests.fault.state import State, read_state
from tests.world.conftest import SRC

SECOND = "02:00:0a:00:02:14"  # eth1: configured before every fault
THIRD = "02:00:0a:00:02:28"  # eth2: attached during the fault
NEW_ADDR = ipaddress.IPv4Address("10.0.2.50")  # assigned to eth1 before a refresh
RESULTS_ENV = "EC2NET_FAULT_RESULTS"
# Bounds: a run past these counts as hung (the IMDS client's worst case under a
# blackhole is retries x endpoints x timeout plus backoff, a few seconds here).
RUN_BOUND = 60.0
DAEMON_STOP_BOUND = 5.0  # generous over the daemon's documented 2 s

_A4, _A6 = ipaddress.IPv4Address, ipaddress.IPv6Address


def extra_mac(k: int) -> str:
    return f"02:00:0a:00:03:{k:02x}"


def fault_world(extra_enis: int = 0) -> World:
    """default_world with more addresses on eth1 (wider crash windows), a fixed third
    ENI and `extra_enis` more (eth3...), so two fresh worlds give identical state."""
    w = default_world()
    second = w.enis[SECOND]
    second.ipv4s = [_A4(f"10.0.2.{n}") for n in range(20, 32)]
    second.ipv6s = [_A6("2600:1f16:292:2::20"), _A6("2600:1f16:292:2::21")]
    third = Eni(
        eni_id="eni-0ccccccccccccccc2",
        mac=THIRD,
        subnet_id="subnet-b",
        device_number=2,
        ipv4s=[_A4(f"10.0.2.{n}") for n in range(40, 46)],
        ipv6s=[_A6("2600:1f16:292:2::40")],
    )
    w.enis[THIRD] = third
    for k in range(extra_enis):
        eni = Eni(
            eni_id=f"eni-0ddddddddddddd{k:03d}",
            mac=extra_mac(k),
            subnet_id="subnet-b",
            device_number=3 + k,
            ipv4s=[_A4(f"10.0.2.{100 + 4 * k + n}") for n in range(3)],
            ipv6s=[_A6(f"2600:1f16:292:2::1{k:02x}")],
        )
        w.enis[eni.mac] = eni
    return w


# --- foreign state: what other software put there, never to be touched -------------

FOREIGN_V4 = [
    # CNI-like rules and tables: small table numbers, priorities below and above ours
    ("rule", "add", "pref", "100", "from", "10.0.9.0/24", "lookup", "7"),
    ("rule", "add", "pref", "512", "fwmark", "0x10", "lookup", "100"),
    ("rule", "add", "pref", "30000", "from", "10.0.8.0/24", "lookup", "101"),
    ("route", "add", "192.168.50.0/24", "via", "10.0.1.1", "dev", "eth0", "table", "7"),
    ("route", "add", "default", "via", "10.0.1.1", "dev", "eth0", "table", "100"),
    ("route", "add", "10.0.8.0/24", "via", "10.0.1.1", "dev", "eth0", "table", "101"),
    # a user's route, and a network manager's own route and address (other protocols)
    ("route", "add", "10.0.3.0/25", "via", "10.0.1.1", "dev", "eth0"),
    ("route", "add", "198.51.100.0/24", "via", "10.0.1.1", "dev", "eth0", "proto", "static"),
    ("addr", "add", "192.168.77.5/24", "dev", "eth0"),
]
FOREIGN_V6 = [
    ("rule", "add", "pref", "600", "from", "fd00:9::/64", "lookup", "102"),
    ("route", "add", "fd00:9::/64", "via", "fe80:ec2::1", "dev", "eth0", "table", "102"),
    ("route", "add", "2001:db8:5::/48", "via", "fe80:ec2::1", "dev", "eth0", "proto", "boot"),
]
# On the ENI itself: a manager's address and route; present while eth1 is.
FOREIGN_ETH1_V4 = [
    ("addr", "add", "192.168.88.5/24", "dev", "eth1"),
    ("route", "add", "203.0.113.0/24", "via", "192.168.88.1", "dev", "eth1", "proto", "dhcp"),
]


def foreign_view(ns: str, *, eth1: bool = True) -> State:
    """The foreign objects alone (the rest of `State` is judged against references)."""
    keep: tuple[str, ...] = (
        "10.0.9.0", "0x10", "10.0.8.0", "192.168.50.0", "fd00:9::", "10.0.3.0", "198.51.100",
        "192.168.77.5", "2001:db8:5::", '"table": "7"', '"table": "100"', '"table": "101"',
        '"table": "102"', '"priority": 0,', '"priority": 32766', '"priority": 32767',
    )  # fmt: skip
    if eth1:
        keep += ("192.168.88.5", "203.0.113.0")
    objs = [o for o in read_state(ns).objects if any(k in o for k in keep)]
    for line in netns.run(["ip", "-n", ns, "-o", "addr", "show", "dev", "docker0"]).stdout.split(
        "\n"
    ):
        if " inet " in line:
            objs.append("docker0 " + line.split()[3])
    return State(tuple(sorted(objs)))


# --- results ------------------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    """One outcome, as the report shows it."""

    table: str  # "imds", "malformed", "crash", "race", "daemon"
    case: str  # the fault, trial or race
    op: str
    exit: str  # exit code(s) seen, or "running" for the daemon
    during: str  # state during the fault: "kept", "converged", ...
    after: str  # state after recovery
    message: str
    lost: int
    leaked: int
    ok: bool
    problem: str = ""  # the first rule broken, one line


def record(row: Row) -> None:
    """Append the row to $EC2NET_FAULT_RESULTS/rows.jsonl (one write: atomic append)."""
    target = os.environ.get(RESULTS_ENV)
    if not target:
        return
    path = Path(target) / "rows.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    line = (json.dumps(asdict(row), sort_keys=True) + "\n").encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)


def first_error(text: str) -> str:
    lines = [ln for ln in text.splitlines() if ln.startswith(("ERROR", "WARNING"))]
    return (lines[-1] if lines else text.strip().splitlines()[-1] if text.strip() else "")[:160]


# --- the primary probe ------------------------------------------------------------------


class PrimaryProbe:
    """TCP probes from the client to the primary's IPv4 and IPv6 addresses, all along."""

    def __init__(self, fabric: Fabric, every: float = 0.2) -> None:
        primary = fabric.world.primary()
        self.fabric = fabric
        self.addrs = [str(primary.ipv4s[0]), str(primary.ipv6s[0])]
        self.every = every
        self.sent = 0
        self.failed: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="primary-probe", daemon=True)

    def start(self) -> PrimaryProbe:
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            for addr in self.addrs:
                self.sent += 1
                if not probe(self.fabric.client_ns, addr, self.fabric.echo_port, timeout=2.0):
                    self.failed.append(f"{time.monotonic():.1f} {addr}")
            self._stop.wait(self.every)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5.0)


# --- the world of one case ----------------------------------------------------------------


@dataclass
class Run:
    rc: int
    out: str
    err: str
    seconds: float


@dataclass
class FaultWorld:
    """A started fabric, the instance's runtime dir and config, and a probe."""

    fabric: Fabric
    tmp: Path
    probe: PrimaryProbe
    daemons: list[subprocess.Popen[str]] = field(default_factory=list)
    monitor: Optional[subprocess.Popen[bytes]] = None
    # argv before `ip netns exec` (nsenter into a private mount namespace, say) and
    # extra environment of every ec2net run
    wrap: list[str] = field(default_factory=list)
    extra_env: dict[str, str] = field(default_factory=dict)

    @property
    def ns(self) -> str:
        return self.fabric.instance_ns

    @property
    def runtime(self) -> Path:
        return self.tmp / "run"

    @property
    def config(self) -> Path:
        return self.tmp / "ec2net.toml"

    def write_config(
        self, *, timeout: float = 0.25, retries: int = 4, interval: float = 1, extra: str = ""
    ) -> None:
        self.config.write_text(
            # ENIs are veths here; so is the Docker bridge's port, which is no ENI.
            "[interfaces]\ndrivers = [\"veth\"]\nexclude_names = [\"veth*\"]\n"
            f"[refresh]\ninterval = {interval}\n"
            f"[imds]\ntimeout = {timeout}\nretries = {retries}\npropagation_timeout = 30\n"
            "[backend]\nname = \"netlink\"\n" + extra
        )  # fmt: skip

    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "PYTHONPATH": SRC,
            "EC2NET_CONFIG": str(self.config),
            "EC2NET_RUNTIME_DIR": str(self.runtime),
            **self.extra_env,
        }

    def argv(self, *args: str) -> list[str]:
        return [*self.wrap, *netns.ns_exec_argv(self.ns, [sys.executable, "-m", "ec2net", *args])]

    def popen(self, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            self.argv(*args), env=self.env(), stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True,
        )  # fmt: skip

    def ec2net(self, *args: str, bound: float = RUN_BOUND) -> Run:
        started = time.monotonic()
        proc = self.popen(*args)
        try:
            out, err = proc.communicate(timeout=bound)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
            raise AssertionError(f"ec2net {' '.join(args)} hung past {bound}s\n{err}") from None
        return Run(proc.returncode, out, err, time.monotonic() - started)

    def must(self, *args: str) -> Run:
        run = self.ec2net(*args)
        assert run.rc == 0, f"ec2net {' '.join(args)} exited {run.rc}\n{run.out}\n{run.err}"
        return run

    def ip(self, *args: str) -> str:
        return self.fabric.ip(self.ns, *args)

    def state(self) -> State:
        return read_state(self.ns)

    def foreign(self) -> State:
        return foreign_view(self.ns, eth1="eth1" in self.fabric.links())

    def servers_injected(self) -> list[Injected]:
        return [s.injected for s in (self.fabric.imds, self.fabric.imds6) if s is not None]

    def start_daemon(self) -> subprocess.Popen[str]:
        proc = self.popen("-v", "watch")
        self.daemons.append(proc)
        return proc

    def stop_daemon(
        self, proc: subprocess.Popen[str], bound: float = DAEMON_STOP_BOUND, measure: float = 0.0
    ) -> float:
        """SIGTERM and wait; returns the seconds to exit. Past `bound` it raises, after
        waiting up to `measure` more seconds so the message says how long it took."""
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=bound + measure)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        took = time.monotonic() - started
        if took > bound:
            late = f"exited after {took:.1f} s" if took < bound + measure else "killed"
            raise AssertionError(f"ec2net watch still running {bound}s after SIGTERM ({late})")
        return took

    def start_monitor(self) -> None:
        """`ip monitor` of addresses, rules and routes (unbuffered lines on stdout)."""
        argv = ["ip", "-n", self.ns, "monitor", "address", "rule", "route"]
        self.monitor = subprocess.Popen(argv, stdout=subprocess.PIPE, bufsize=0)
        time.sleep(0.05)  # subscribed before anything changes

    def stop_monitor(self) -> None:
        if self.monitor is not None:
            self.monitor.kill()  # by its pid
            self.monitor.communicate(timeout=5)
            self.monitor = None

    def close(self) -> None:
        self.stop_monitor()
        self.probe.stop()
        for proc in self.daemons:
            if proc.poll() is None:
                proc.kill()  # by its own pid; never by name
            with contextlib.suppress(Exception):
                proc.communicate(timeout=5)


def new_world(
    tmp: Path, make: Callable[..., Fabric], *, foreign: bool = True, extra_enis: int = 0
) -> FaultWorld:
    fabric = make(world=fault_world(extra_enis), attach=[(SECOND, "eth1")])
    # One service behind both endpoints: tokens valid on either (as on EC2).
    if fabric.imds is not None and fabric.imds6 is not None:
        fabric.imds6.tokens = fabric.imds.tokens
    tmp.mkdir(parents=True, exist_ok=True)
    fw = FaultWorld(fabric, tmp, PrimaryProbe(fabric))
    fw.write_config()
    if foreign:
        fabric.docker_bridge()
        add_foreign(fw, FOREIGN_V4, "-4")
        add_foreign(fw, FOREIGN_V6, "-6")
        fw.ip("link", "set", "eth1", "up")  # as the manager that owns its lease would
        add_foreign(fw, FOREIGN_ETH1_V4, "-4")
    fw.probe.start()
    return fw


def add_foreign(fw: FaultWorld, lines: list[tuple[str, ...]], fam: str) -> None:
    for line in lines:
        fw.ip(fam, *line)


def wait_for(cond: Callable[[], bool], timeout: float, every: float = 0.2) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(every)
    return cond()


@contextlib.contextmanager
def nft_drop(fabric: Fabric, v4: bool = True, v6: bool = True) -> Iterator[None]:
    """Drop TCP to the IMDS endpoints in the router: connects time out (no RST)."""
    rules = []
    if v4:
        rules.append("ip daddr 169.254.169.254 tcp dport 80 drop")
    if v6:
        rules.append("ip6 daddr fd00:ec2::254 tcp dport 80 drop")
    text = "table inet ec2net_fault {\n chain input {\n  type filter hook input priority -10;\n"
    text += "".join(f"  {r}\n" for r in rules) + " }\n}\n"
    fabric.run(fabric.router_ns, ["nft", "-f", "-"], input=text)
    try:
        yield
    finally:
        fabric.run(fabric.router_ns, ["nft", "delete", "table", "inet", "ec2net_fault"])


def token_puts(fabric: Fabric) -> int:
    return fabric.imds_requests(method="PUT")


def cached_token(fw: FaultWorld) -> Optional[str]:
    try:
        return str(json.loads((fw.runtime / "imds-token").read_text())["token"])
    except (OSError, ValueError, KeyError):
        return None
