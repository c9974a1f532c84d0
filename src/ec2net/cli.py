"""The `ec2net` command line (and the compat names ec2ifup, ec2ifdown, ec2ifscan).

The parser is built by `build_parser()` alone, so the man page generator and `--help`
share one source. Errors are mapped to exit codes once, in `main`.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, NoReturn, Optional

from ec2net import __version__, backends, sysfiles
from ec2net import config as config_mod
from ec2net.errors import EXIT_OK, EXIT_PERMANENT, EXIT_TRANSIENT, Ec2NetError, exit_code
from ec2net.results import lines as result_lines

if TYPE_CHECKING:
    from ec2net.engine import Engine
    from ec2net.imds import ImdsClient

log = logging.getLogger("ec2net")

DESCRIPTION = (
    "Configure EC2 Elastic Network Interfaces from the instance metadata service: "
    "addresses, a route table per ENI and source-based policy rules, so that replies "
    "leave by the ENI that owns their source address."
)
EPILOG = (
    "Exit status: 0 success (also when there was nothing to do), 1 transient failure "
    "(IMDS unreachable, lock busy: try again), 2 permanent failure (bad configuration, "
    "no such interface). Environment: EC2NET_CONFIG (config file, default "
    f"{config_mod.DEFAULT_CONFIG}), EC2NET_RUNTIME_DIR (state, default "
    f"{config_mod.DEFAULT_RUNTIME_DIR})."
)


STATUS_FORMATS = ("table", "json", "prometheus")


class _Parser(argparse.ArgumentParser):
    """argparse, with a hint when an option is given on the wrong side of the command
    (`ec2net --json status`): general options go before it, its own after it."""

    def error(self, message: str) -> NoReturn:
        if message.startswith("unrecognized arguments:"):
            hint = self._placement_hint(message.split(":", 1)[1].split())
            if hint:
                message += f" ({hint})"
        super().error(message)

    def _placement_hint(self, unknown: Sequence[str]) -> str:
        for token in unknown:
            option = token.split("=", 1)[0]
            if option in self._option_string_actions and option not in ("-h", "--help"):
                return f"{option} is a general option: put it before the command"
        for action in self._actions:
            if not isinstance(action, argparse._SubParsersAction):
                continue
            for token in unknown:
                option = token.split("=", 1)[0]
                owners = [
                    name
                    for name, sub in action.choices.items()
                    if option in sub._option_string_actions and option not in ("-h", "--help")
                ]
                if owners:
                    return (
                        f"{option} is an option of {', '.join(owners)}: put it after the command"
                    )
        return ""


TAKE_OVER_HELP = (
    "if another tool's routes and rules hold the ENI's table (amazon-ec2-net-utils, "
    "say), replace them with ec2net's instead of leaving the ENI to it; ec2net's rules go "
    "in before theirs go, so replies keep their path"
)


def build_parser(prog: str = "ec2net") -> argparse.ArgumentParser:
    p = _Parser(prog=prog, description=DESCRIPTION, epilog=EPILOG)
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    p.add_argument(
        "-v", "--verbose", action="count", default=0, help="more log output (twice for debug)"
    )
    p.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")
    sub = p.add_subparsers(dest="verb", metavar="COMMAND")
    sub.required = True

    def verb(name: str, help_: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=help_, description=help_)

    s = verb("up", "Configure one ENI: addresses, its route table and policy rules.")
    s.add_argument("iface", metavar="IFACE", help="interface name, e.g. ens6")
    s.add_argument(
        "--fresh-within",
        type=_seconds,
        default=0.0,
        metavar="SECONDS",
        help="nothing to do if ec2net configured this very link (same ifindex) within "
        "SECONDS: another trigger (the watch daemon) just did, so IMDS is not read again",
    )
    s.add_argument("--take-over", action="store_true", help=TAKE_OVER_HELP)
    s = verb(
        "down",
        "Remove everything ec2net configured for an interface (also after the device is gone).",
    )
    s.add_argument("iface", metavar="IFACE", nargs="?")
    s.add_argument(
        "--all",
        action="store_true",
        help="every ENI ec2net has a record of, instead of IFACE (a package's removal)",
    )
    s = verb("scan", "Configure every ENI present and clean up records of ENIs that are gone.")
    s.add_argument("--take-over", action="store_true", help=TAKE_OVER_HELP)
    s = verb(
        "migrate",
        "Hand the ENIs over from amazon-ec2-net-utils 1.x or 2.x or the original "
        "ec2-net-utils: take over their routes and rules, end their DHCP clients and "
        "units for the ENIs, remove their per-ENI files (what the packages run on install).",
    )
    s.add_argument("--dry-run", action="store_true", help="say what would be done; change nothing")
    s = verb("refresh", "Re-read secondary addresses from IMDS and apply changes.")
    s.add_argument("iface", metavar="IFACE", nargs="?", help="only this interface")
    s = verb("plan", "Show exactly what `up IFACE` would change; changes nothing.")
    s.add_argument("iface", metavar="IFACE")
    s.add_argument("--json", action="store_true", help="machine-readable output")
    s = verb("status", "Show the ENIs ec2net manages and whether their state is intact.")
    s.add_argument(
        "--format",
        choices=STATUS_FORMATS,
        default="table",
        help="table (default), json, or prometheus (the text exposition format, as the "
        "daemon keeps it in metrics.textfile, without the daemon's counters)",
    )
    s.add_argument(
        "--json", dest="format", action="store_const", const="json", help="same as --format json"
    )
    s = verb(
        "check",
        "Ask the kernel where a reply from each owned address would go (and what else "
        "breaks the path: another program's rule, rp_filter, the gateway's neighbour, the "
        "MTU, IMDS); sends no packet. Exit 0 when every path is right, 1 when one is not.",
    )
    s.add_argument("iface", metavar="IFACE", nargs="?", help="only this interface")
    s.add_argument("--json", action="store_true", help="machine-readable output")
    s = verb("metadata", "Print an IMDS meta-data value (as ec2net reads it).")
    s.add_argument(
        "path",
        metavar="PATH",
        nargs="?",
        default="",
        help="path under /latest/meta-data/, e.g. network/interfaces/macs/",
    )
    verb("watch", "Run the daemon: follow link events, poll IMDS for address changes.")
    s = verb(
        "render",
        "Write the files a file backend would install for the ENIs present (or IFACE), "
        "under DIR at their real paths, for review; without --root, print them.",
    )
    s.add_argument(
        "--backend",
        required=True,
        choices=[d.name for d in backends.file_backends()],
        help="file format",
    )
    s.add_argument("--root", metavar="DIR", help="directory standing for /")
    s.add_argument("iface", metavar="IFACE", nargs="?", help="only this interface")
    s = verb(
        "install-system-files",
        "Install the udev rule and systemd units, or the upstart jobs where upstart is "
        "the init (for pip installs; the packages install the same files).",
    )
    s.add_argument(
        "--root",
        metavar="DIR",
        help="directory standing for / (default /); packagers give their build root",
    )
    s.add_argument("--bindir", help="directory of the ec2net command (default: found on PATH)")
    s.add_argument(
        "--init",
        choices=sysfiles.INIT_CHOICES,
        help="whose files: systemd (udev rule and units) or upstart (jobs in /etc/init); "
        "auto: systemd if /run/systemd/system exists, else upstart if /sbin/initctl and "
        "/etc/init exist, else systemd. Default: auto, or systemd when --root is given",
    )
    s.add_argument(
        "--udev-override",
        action="store_true",
        help="only write the udev rule, to /etc/udev/rules.d where it overrides the "
        "packaged one: run this after changing interfaces.drivers",
    )
    return p


_journal: Optional[logging.Handler] = None  # the journal, when stderr is it


def _setup_logging(verbose: int, quiet: bool) -> None:
    level = logging.WARNING if quiet else logging.DEBUG if verbose > 1 else logging.INFO
    from ec2net import journal  # noqa: PLC0415

    global _journal  # noqa: PLW0603 (set once, before any verb runs)
    to_journal = _journal = journal.handler()  # under systemd: the ENI as journal fields too
    if to_journal is not None:
        logging.basicConfig(level=level, handlers=[to_journal])
    else:
        logging.basicConfig(level=level, format="%(levelname)s %(message)s", stream=sys.stderr)


class _Context:
    """Builds the engine's collaborators lazily: `--help` never imports pyroute2."""

    def __init__(self) -> None:
        self.settings = config_mod.load()

    def engine(self, backend: Optional[str] = None) -> Engine:
        from ec2net.backends import open_backend  # noqa: PLC0415 - lazy: pyroute2 is slow
        from ec2net.engine import Engine  # noqa: PLC0415
        from ec2net.imds import ImdsClient  # noqa: PLC0415
        from ec2net.state import Store  # noqa: PLC0415

        settings = self.settings if backend is None else replace(self.settings, backend=backend)
        store = Store(Path(settings.runtime_dir))
        store.ensure()
        imds = ImdsClient.from_settings(settings, store.token_cache)
        return Engine(settings, open_backend(settings), imds, store)

    def imds(self) -> ImdsClient:
        from ec2net.imds import ImdsClient  # noqa: PLC0415

        return ImdsClient.from_settings(self.settings)


def _text(value: Any) -> str:
    """An enum's value (engine.Action is a str Enum), anything else as str."""
    return str(getattr(value, "value", value))


def _print_results(results: Sequence[Any], as_json: bool = False, dry_run: bool = False) -> None:
    """The verb's result, once, on stdout (the engine logs results at DEBUG only); under
    systemd through the journal handler instead, with the ENI's fields."""
    if as_json:
        out = [
            {
                "interface": r.ifname,
                "action": _text(r.action),
                "detail": r.detail,
                "changes": [str(c) for c in r.changes.changes],
            }
            for r in results
        ]
        print(json.dumps(out, indent=2))
        return
    for r in results:
        text = "\n".join(result_lines(r, dry_run))
        if _journal is not None:  # as stdout would: whatever the log level
            _journal.handle(log.makeRecord(log.name, logging.INFO, "", 0, text, (), None))
        else:
            print(text)


def _seconds(text: str) -> float:
    value = float(text)
    if not 0 <= value <= 3600:
        raise argparse.ArgumentTypeError(f"{text}: seconds from 0 to 3600")
    return value


def _cmd_up(ctx: _Context, args: argparse.Namespace) -> int:
    engine = ctx.engine()
    _print_results(
        [engine.up(args.iface, fresh_within=args.fresh_within, take_over=args.take_over)]
    )
    return EXIT_OK


def _cmd_down(ctx: _Context, args: argparse.Namespace) -> int:
    engine = ctx.engine()
    _print_results(engine.down_all() if args.all else [engine.down(args.iface)])
    return EXIT_OK


def _cmd_scan(ctx: _Context, args: argparse.Namespace) -> int:
    take_over = bool(args.take_over)
    _print_results(ctx.engine().scan(take_over=lambda link: take_over))
    return EXIT_OK


def _cmd_migrate(ctx: _Context, args: argparse.Namespace) -> int:
    from ec2net.migrate import migrate  # noqa: PLC0415

    report = migrate(ctx.engine(), dry_run=args.dry_run)
    for line in report.lines:
        print(line)
    if report.errors:
        raise report.errors[0]
    return EXIT_OK


def _cmd_refresh(ctx: _Context, args: argparse.Namespace) -> int:
    _print_results(ctx.engine().refresh(args.iface))
    return EXIT_OK


def _cmd_plan(ctx: _Context, args: argparse.Namespace) -> int:
    _print_results([ctx.engine().up(args.iface, dry_run=True)], args.json, dry_run=True)
    return EXIT_OK


def _cmd_status(ctx: _Context, args: argparse.Namespace) -> int:
    from ec2net.metrics import exposition  # noqa: PLC0415
    from ec2net.status import collect, format_table  # noqa: PLC0415

    rows = collect(ctx.engine())
    if args.format == "json":
        print(json.dumps([r.as_json() for r in rows], indent=2))
    elif args.format == "prometheus":
        print(exposition(rows), end="")
    else:
        print(format_table(rows))
    return EXIT_OK


def _cmd_check(ctx: _Context, args: argparse.Namespace) -> int:
    from ec2net import check_kernel  # noqa: PLC0415
    from ec2net.check import format_text  # noqa: PLC0415

    # The kernel is read over netlink whatever the backend: nothing is changed.
    report = check_kernel.run(ctx.engine("netlink"), args.iface)
    print(json.dumps(report.as_json(), indent=2) if args.json else format_text(report))
    return EXIT_OK if report.ok else EXIT_TRANSIENT


def _cmd_metadata(ctx: _Context, args: argparse.Namespace) -> int:
    print(ctx.imds().get(args.path))
    return EXIT_OK


def _cmd_watch(ctx: _Context, args: argparse.Namespace) -> int:
    from ec2net.watch import run  # noqa: PLC0415

    return run(ctx.settings)


def _cmd_render(ctx: _Context, args: argparse.Namespace) -> int:
    from ec2net.render import Files, RenderInput  # noqa: PLC0415
    from ec2net.state import write_if_changed  # noqa: PLC0415

    desc = backends.by_name(args.backend)
    render = desc.renderer
    assert render is not None  # choices are the file backends

    def checked(inp: RenderInput) -> Files:
        desc.check_name(inp.plan.ifname)  # what that backend would refuse
        return render(inp)

    # Reads only: the kernel over netlink, IMDS; writes nothing outside --root.
    files = ctx.engine("netlink").render(checked, args.iface)
    for path, content in sorted(files.items()):
        if args.root is None:
            print(f"==> {path} <==\n{content}")
        else:
            target = Path(args.root) / path.relative_to("/")
            write_if_changed(target, content, desc.mode)
            print(target)
    return EXIT_OK


def _cmd_install_system_files(ctx: _Context, args: argparse.Namespace) -> int:
    from ec2net.sysfiles import install, install_udev_override  # noqa: PLC0415

    managed_by = ctx.settings.backend == "netlink"  # mark ENIs for networkd/NM to skip
    if args.udev_override:
        root = Path(args.root or "/")
        if install_udev_override(root, ctx.settings.drivers, managed_by):
            print(root / "etc/udev/rules.d" / "81-ec2net.rules")
        return EXIT_OK
    # A build root (packaging) gets the systemd files unless told otherwise: the build
    # host's init says nothing about the target's.
    init = args.init or (sysfiles.SYSTEMD if args.root else sysfiles.AUTO)
    dhcp = ctx.settings.ifcfg_dhcp
    root = Path(args.root or "/")
    drivers = ctx.settings.drivers
    for path in install(root, drivers, args.bindir, init, dhcp, managed_by=managed_by):
        print(path)
    return EXIT_OK


COMMANDS: dict[str, Callable[[_Context, argparse.Namespace], int]] = {
    "up": _cmd_up,
    "down": _cmd_down,
    "scan": _cmd_scan,
    "migrate": _cmd_migrate,
    "refresh": _cmd_refresh,
    "plan": _cmd_plan,
    "status": _cmd_status,
    "check": _cmd_check,
    "metadata": _cmd_metadata,
    "watch": _cmd_watch,
    "render": _cmd_render,
    "install-system-files": _cmd_install_system_files,
}


def main(
    argv: Optional[Sequence[str]] = None, prog: str = "ec2net", verb: Optional[str] = None
) -> int:
    """Run one command; its exit status. `verb`: the compat names (ec2ifup IFACE) take
    that command's arguments alone, and their errors name them."""
    parser = build_parser(prog)
    if verb is not None:
        verbs = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        verbs.choices[verb].prog = prog
        argv = [verb, *(sys.argv[1:] if argv is None else argv)]
    try:
        args = parser.parse_args(argv)
        if args.verb == "down" and args.all == (args.iface is not None):
            need = "the following arguments are required: IFACE (or --all)"
            parser.error(need if args.iface is None else "give IFACE or --all, not both")
    except SystemExit as stop:  # argparse: usage errors (2), --help and --version (0)
        return stop.code if isinstance(stop.code, int) else EXIT_PERMANENT
    _setup_logging(args.verbose, args.quiet)
    try:
        ctx = _Context()
        return COMMANDS[args.verb](ctx, args)
    except Ec2NetError as err:
        log.error("%s", err)
        return exit_code(err)
    except OSError as err:  # a file ec2net could not read or write, named, no traceback
        log.error("%s: %s", err.filename or "-", err.strerror or err)
        return exit_code(err)
    except KeyboardInterrupt:
        return 130


def _compat(verb: str, argv: Optional[Sequence[str]] = None) -> int:
    return main(argv, prog=f"ec2if{verb}", verb=verb)


def ec2ifup(argv: Optional[Sequence[str]] = None) -> int:
    return _compat("up", argv)


def ec2ifdown(argv: Optional[Sequence[str]] = None) -> int:
    return _compat("down", argv)


def ec2ifscan(argv: Optional[Sequence[str]] = None) -> int:
    return _compat("scan", argv)
