"""One hot-plug taken apart: what happens between QMP device_add and "every address
answers", on one time line (milliseconds after device_add, host clock).

Sources: the agent's link watch (kernel device, udev rename), the guest's journal
(kernel, systemd's unit jobs, ec2net at debug level, networkd or NetworkManager lines
naming the interface), the simulator's IMDS request log (host clock) and the fabric's
probes. Guest journal times are CLOCK_MONOTONIC; the offset to the host's is taken from
/proc/uptime read over the agent (the guest never suspends, so uptime and monotonic
agree), the sample with the shortest round trip wins (~10 ms resolution).
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass

from systest.vpc import Plugged, VpcGuest, addresses

# ec2net at debug level for the trace only: a drop-in, removed afterwards. Only the
# daemon's: the udev-started ec2net@IFACE.service starts no process while it runs
# (ConditionPathExists=!/run/ec2net/watch.running); the trace shows systemd skipping it.
DEBUG_DROPINS = {
    "ec2net-watch.service": "[Service]\nExecStart=\nExecStart=/usr/bin/env ec2net -v -v watch\n",
}
DROPIN_NAME = "90-systest-trace.conf"


@dataclass(frozen=True)
class Event:
    at_ms: float  # after QMP device_add
    source: str
    what: str


@dataclass(frozen=True)
class Trace:
    variant: str
    ifname: str
    events: list[Event]
    phases: list[tuple[str, float]]  # milestone, ms after device_add (in order)
    reach_ms: float | None


def guest_clock_offset(g: VpcGuest, samples: int = 7) -> float:
    """host monotonic minus guest monotonic, in seconds."""
    best: tuple[float, float] | None = None
    for _ in range(samples):
        t0 = time.monotonic()
        up = float(g.agent.read_file("/proc/uptime").split()[0])
        t1 = time.monotonic()
        if best is None or t1 - t0 < best[0]:
            best = (t1 - t0, (t0 + t1) / 2 - up)
    assert best is not None
    return best[1]


def enable_debug(g: VpcGuest) -> None:
    for unit, text in DEBUG_DROPINS.items():
        g.agent.write_file(f"/etc/systemd/system/{unit}.d/{DROPIN_NAME}", text)
    g.agent.run(["systemctl", "daemon-reload"], timeout=120, check=True)
    g.agent.run(["systemctl", "try-restart", "ec2net-watch.service"], timeout=120, check=True)


def disable_debug(g: VpcGuest) -> None:
    for unit in DEBUG_DROPINS:
        g.agent.run(["rm", "-f", f"/etc/systemd/system/{unit}.d/{DROPIN_NAME}"], check=True)
    g.agent.run(["systemctl", "daemon-reload"], timeout=120, check=True)
    g.agent.run(["systemctl", "try-restart", "ec2net-watch.service"], timeout=120, check=True)


def _journal(g: VpcGuest, since_guest: float) -> list[tuple[float, str, str]]:
    out = g.agent.run(["journalctl", "-b", "-o", "json", "-n", "3000", "--no-pager"], timeout=120)
    entries = []
    for line in out.stdout.splitlines():
        try:
            e = json.loads(line)
        except ValueError:
            continue
        mono = int(e.get("__MONOTONIC_TIMESTAMP", 0)) / 1e6
        if mono < since_guest:
            continue
        msg = e.get("MESSAGE")
        if not isinstance(msg, str):
            continue
        who = str(e.get("_SYSTEMD_UNIT") or e.get("SYSLOG_IDENTIFIER") or e.get("_COMM") or "?")
        entries.append((mono, who, msg))
    return entries


def _relevant(who: str, msg: str, p: Plugged) -> bool:
    names = (p.ifname, "eth0", p.eni.mac, p.eni.eni_id)
    if who.startswith(("ec2net", "systemd-networkd", "NetworkManager")) or who == "kernel":
        return any(n in msg for n in names) or who.startswith("ec2net")
    return who in ("init.scope", "systemd") and f"ec2net@{p.ifname}" in msg


def _first(events: list[Event], source: str, pattern: str) -> float | None:
    rx = re.compile(pattern)
    return next(
        (e.at_ms for e in events if e.source.startswith(source) and rx.search(e.what)), None
    )


def _last(events: list[Event], source: str, until: float | None) -> float | None:
    found = [
        e.at_ms
        for e in events
        if e.source.startswith(source) and (until is None or e.at_ms <= until)
    ]
    return max(found) if found else None


def trace_hotplug(g: VpcGuest, subnet: str, timeout: float) -> Trace:
    """Hot-plug a fresh dual-stack ENI with ec2net logging at debug level; return the
    merged time line and its milestones."""
    enable_debug(g)
    try:
        offset = guest_clock_offset(g)
        eni = g.fabric.new_eni(subnet, n_ipv4=3, n_ipv6=1)
        slot = g.next_slot()
        seen = g.agent.start_wait_link(eni.mac, timeout=60)
        named = g.agent.start_wait_link(eni.mac, timeout=60, ifname=f"ens{slot}")
        n0 = len(g.fabric.imds.log.entries()) if g.fabric.imds else 0
        t0 = time.monotonic()
        p = g.plug(eni)
        reach = g.wait_reachable(addresses(eni), timeout, since=t0)
        seen.result(60)
        named.result(60)
        time.sleep(2.0)  # let the tail (settle, verify) reach the journal
        events: list[Event] = []
        for at, label in ((seen.received_at, "link eth0 in /sys"), (named.received_at, "named")):
            if at is not None:
                events.append(Event((at - t0) * 1000, "agent", f"{label} ({p.ifname})"))
        if g.fabric.imds is not None:
            for e in g.fabric.imds.log.entries()[n0:]:
                events.append(
                    Event((e.time - t0) * 1000, "imds", f"{e.method} {e.path} {e.status}")
                )
        for mono, who, msg in _journal(g, t0 - offset - 1.0):
            if _relevant(who, msg, p):
                events.append(Event((mono + offset - t0) * 1000, who, msg.strip()[:160]))
        events.sort(key=lambda e: e.at_ms)
        reach_ms = None if reach.seconds is None else reach.seconds * 1000
        manager = "systemd-networkd" if "networkd" in g.image.variant else "NetworkManager"
        unit = f"ec2net@{p.ifname}"
        phases = [
            ("kernel: link in /sys", _first(events, "agent", "link eth0")),
            ("udev: renamed", _first(events, "agent", "named")),
            ("udev unit skipped (daemon runs)", _first(events, "init.scope", f"{unit}.*skipped")),
            ("unit job starting (no daemon?)", _first(events, "init.scope", f"Starting {unit}")),
            ("daemon: first line", _first(events, "ec2net-watch", ".")),
            ("daemon: files written", _first(events, "ec2net-watch", "wrote ")),
            ("daemon: converge done", _first(events, "ec2net-watch", r"configured \(")),
            ("first IMDS request", _first(events, "imds", ".")),
            ("last IMDS request", _last(events, "imds", reach_ms)),
            ("manager: first line", _first(events, manager, ".")),
            ("manager: last line", _last(events, manager, reach_ms)),
            ("all addresses answer", reach_ms),
        ]
        kept = [(name, at) for name, at in phases if at is not None]
        g.unplug(p)
        g.wait_clean(p, 30.0)
        return Trace(g.image.variant, p.ifname, events, kept, reach_ms)
    finally:
        disable_debug(g)


def render(t: Trace, full: bool = False) -> str:
    lines = [f"hot-plug trace, {t.variant}, {t.ifname} (ms after QMP device_add):"]
    prev = 0.0
    for name, at in sorted(t.phases, key=lambda x: x[1]):
        lines.append(f"  {at:8.0f}  (+{at - prev:6.0f})  {name}")
        prev = at
    if full:
        lines.append("  events:")
        lines += [f"  {e.at_ms:8.0f}  {e.source:<28} {e.what}" for e in t.events]
    return "\n".join(lines)
