"""ec2net and Debian's amazon-ec2-net-utils side by side, in the same QEMU guest set-up
on the same simulated VPC (tests/system's scenarios, systest/scenarios.py).

Run as root: `.venv/bin/python benchmarks/bench_system.py [--hotplugs 5] [--json FILE]`.
Per tool: one guest (networkd; ec2net installed from the current tree, or the image
with the AWS tool), two extra ENIs present at boot, N hot-plug/unplug rounds of an ENI
with three IPv4 addresses in another subnet, a real idle window, a secondary IP
assigned in IMDS, a Docker-style bridge. Prints one table; waits are bounded, so a
tool that does not get there is reported FAIL, never a hang or a crash.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import traceback
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from systest import harness, install, scenarios
from systest.image import ensure_image
from systest.qemu import qemu_usable
from systest.vpc import OTHER_SUBNET_MAC, VpcGuest

REPO = Path(__file__).resolve().parents[1]
# ec2net polls IMDS as often as the AWS tool's refresh timer, so the idle figures compare
REFRESH_INTERVAL = 60.0


@dataclass
class Tool:
    name: str
    variant: str
    installer: Optional[scenarios.Installer]
    units: tuple[str, ...]


@dataclass
class Measured:
    tool: str
    boot_s: Optional[float] = None
    hotplug_s: list[float] = field(default_factory=list)
    hotplug_failed: int = 0
    imds_per_attach: list[int] = field(default_factory=list)
    imds_idle_per_min: Optional[float] = None
    verdicts: dict[str, str] = field(default_factory=dict)  # scenario -> PASS / FAIL ...
    errors: list[str] = field(default_factory=list)


def _try(m: Measured, what: str, fn: Callable[[], None]) -> None:
    try:
        fn()
    except Exception as exc:  # a broken scenario is a FAIL in the table, not a crash
        m.errors.append(f"{what}: {exc!r}")
        m.verdicts.setdefault(what, "FAIL (error)")
        traceback.print_exc()


def run_tool(tool: Tool, args: argparse.Namespace) -> Measured:
    m = Measured(tool.name)
    workdir = harness.short_workdir()
    g = VpcGuest(ensure_image(tool.variant), workdir)
    log = print if args.verbose else (lambda *_: None)
    try:
        g.start()

        def boot() -> None:
            r = scenarios.boot_with_enis(g, tool.installer, args.timeout)
            m.boot_s = r.reach.seconds
            same = r.missing_of(r.same_subnet)
            other = r.missing_of(r.other_subnet)
            m.verdicts["ENI in another subnet"] = "FAIL" if other else "PASS"
            m.verdicts["same-subnet ENIs"] = f"FAIL ({len(same)} unreachable)" if same else "PASS"
            if not r.reach.ok:
                log(scenarios.guest_state(g, tool.units))

        def hotplugs() -> None:
            leftovers = 0
            for i in range(args.hotplugs):
                r, _ = scenarios.hotplug(g, "subnet-b", 3, args.timeout)
                print(
                    f"  {tool.name} hot-plug {i + 1}: "
                    + (f"{r.reach.seconds:.1f} s" if r.reach.seconds is not None else "FAIL")
                    + f", {r.imds_requests} IMDS requests, leftovers {len(r.leftovers)}",
                    flush=True,
                )
                if r.reach.seconds is None:
                    m.hotplug_failed += 1
                else:
                    m.hotplug_s.append(r.reach.seconds)
                m.imds_per_attach.append(r.imds_requests)
                leftovers += len(r.leftovers)
                if r.leftovers:
                    log("\n".join(r.leftovers))
            m.verdicts["detach leftovers"] = f"FAIL ({leftovers} left)" if leftovers else "PASS"

        def idle() -> None:
            m.imds_idle_per_min = scenarios.idle_imds_per_minute(g, args.idle)

        def secondary() -> None:
            r = scenarios.secondary_ip(g, OTHER_SUBNET_MAC, args.timeout)
            m.verdicts["secondary IP pickup"] = (
                f"PASS ({r.reach.seconds:.0f} s)" if r.reach.seconds is not None else "FAIL"
            )

        def bridge() -> None:
            r = scenarios.docker_bridge(g)
            n = len(r.unreachable)
            m.verdicts["Docker-style bridge"] = f"FAIL ({n} unreachable)" if n else "PASS"

        for what, fn in (
            ("boot with ENIs present", boot),
            ("detach leftovers", hotplugs),
            ("idle IMDS", idle),
            ("secondary IP pickup", secondary),
            ("Docker-style bridge", bridge),
        ):
            print(f"{tool.name}: {what}", flush=True)
            _try(m, what, fn)
    except Exception as exc:
        m.errors.append(f"guest: {exc!r}")
        traceback.print_exc()
    finally:
        g.stop()
        harness.remove_workdir(workdir)
    return m


def _span(values: Sequence[float], unit: str, digits: int = 1) -> str:
    if not values:
        return "-"
    med = statistics.median(values)
    return f"{med:.{digits}f}{unit} ({min(values):.{digits}f}-{max(values):.{digits}f})"


SCENARIOS = (
    "ENI in another subnet",
    "same-subnet ENIs",
    "Docker-style bridge",
    "detach leftovers",
    "secondary IP pickup",
)


def table(results: Sequence[Measured], hotplugs: int) -> list[list[str]]:
    rows = [["", *(m.tool for m in results)]]

    def fmt_hotplug(m: Measured) -> str:
        text = _span(m.hotplug_s, " s")
        n = len(m.hotplug_s) + m.hotplug_failed
        return text + (f", {m.hotplug_failed}/{n} FAIL" if m.hotplug_failed else "")

    rows.append([f"hot-plug -> all reachable (n={hotplugs})", *map(fmt_hotplug, results)])
    rows.append(["IMDS requests per attach", *(_span(m.imds_per_attach, "", 0) for m in results)])
    rows.append(
        [
            "IMDS requests per idle minute (2 ENIs)",
            *(
                "-" if m.imds_idle_per_min is None else f"{m.imds_idle_per_min:.1f}"
                for m in results
            ),
        ]
    )
    rows.append(
        [
            "boot with 2 ENIs -> all reachable",
            *("FAIL" if m.boot_s is None else f"{m.boot_s:.1f} s" for m in results),
        ]
    )
    for name in SCENARIOS:
        rows.append([name, *(m.verdicts.get(name, "not run") for m in results)])
    return rows


def render(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = []
    for n, row in enumerate(rows):
        lines.append("| " + " | ".join(c.ljust(w) for c, w in zip(row, widths)) + " |")
        if n == 0:
            lines.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hotplugs", type=int, default=5, help="hot-plug rounds per tool")
    parser.add_argument("--idle", type=float, default=60.0, help="idle window, seconds")
    parser.add_argument("--timeout", type=float, default=90.0, help="bound on each wait")
    parser.add_argument("--tools", default="ec2net,aws", help="comma list: ec2net, aws")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("-v", "--verbose", action="store_true", help="guest state on failure")
    args = parser.parse_args(argv)
    print("$ " + " ".join([Path(sys.executable).name, *sys.argv]), flush=True)
    reason = qemu_usable()
    if reason is not None:
        print(f"cannot run: {reason}")
        return 1

    pkg = install.package_for(REPO, harness.short_workdir())
    available = {
        "ec2net": Tool(
            f"ec2net ({pkg.kind})",
            "networkd",
            lambda g: install.install_ec2net(g.agent, pkg, refresh_interval=REFRESH_INTERVAL),
            ("ec2net*",),
        ),
        "aws": Tool(
            "amazon-ec2-net-utils 2.3.0",
            "aws",
            None,
            ("policy-routes@*", "refresh-policy-routes@*", "systemd-networkd"),
        ),
    }
    t0 = time.monotonic()
    results = [run_tool(available[name.strip()], args) for name in args.tools.split(",")]
    harness.remove_workdir(pkg.path.parent)
    rows = table(results, args.hotplugs)
    print(
        f"\nnetworkd guests under QEMU ({time.monotonic() - t0:.0f} s in all); ec2net "
        f"refresh.interval {REFRESH_INTERVAL:g} s; waits bounded at {args.timeout:g} s;"
        f" idle window {args.idle:g} s"
    )
    print(render(rows))
    for m in results:
        for err in m.errors:
            print(f"{m.tool}: {err}")
    if args.json:
        data: dict[str, Any] = {
            "command": sys.argv,
            "table": rows,
            "results": [m.__dict__ for m in results],
        }
        args.json.write_text(json.dumps(data, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
