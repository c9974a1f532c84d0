"""Man pages ec2net(8) and ec2net.toml(5), generated from the sources they document.

ec2net(8) walks `ec2net.cli.build_parser()` (the parser `--help` prints), so every verb
and argument, including ones added later, appears with the same help text;
ec2net.toml(5) walks `ec2net.config.SCHEMA` (every section and key with its type,
default and doc) and shows the commented default file the packages install. The
packages run `python3 -m ec2net.manpage --out DIR` at build time.

Why not argparse-manpage (PyPI 4.x; Debian 12 ships 1.2.2 as python3-argparse-manpage):
it would replace only the ec2net(8) walker below (~150 lines), not ec2net.toml(5),
so the groff helpers stay anyway. Its page has none of our sections (exit status,
environment, files, compatibility commands) without post-processing, the two
versions differ in API and output, and it would become a build dependency of the
.deb, the RPM (EL6 has no package of it) and `make man`. It costs more than it saves.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Optional

from ec2net import __version__, cli, config, sysfiles
from ec2net.state import write_if_changed

# The seed-compatible commands (pyproject's [project.scripts]) and the verb each runs.
COMPAT = {"ec2ifup": "up", "ec2ifdown": "down", "ec2ifscan": "scan"}

# Shown in ec2net.toml(5); a unit test parses it with config.parse, so it cannot rot.
EXAMPLE = """\
[interfaces]
exclude_names = ["cni*"]
exclude_macs = ["02:aa:bb:cc:dd:ee"]

[refresh]
interval = 30
"""

_SEE_ALSO_8 = ("ec2net.toml(5)", "ip-rule(8)", "ip-route(8)", "systemd.service(5)", "udev(7)")


def esc(text: str) -> str:
    """Text for a groff line: backslashes and hyphens escaped (options stay copyable),
    `code` spans in bold, and no line may start with a control character."""
    out = text.replace("\\", "\\e").replace("-", "\\-")
    out = re.sub(r"`([^`]+)`", r"\\fB\1\\fR", out)
    return "\n".join(
        "\\&" + line if line.startswith((".", "'")) else line for line in out.split("\n")
    )


def _bold(text: str) -> str:
    return f"\\fB{esc(text)}\\fR"


def _ital(text: str) -> str:
    return f"\\fI{esc(text)}\\fR"


def _header(name: str, section: int, title: str) -> list[str]:
    epoch = os.environ.get("SOURCE_DATE_EPOCH", "")
    date = time.strftime("%Y-%m-%d", time.gmtime(int(epoch))) if epoch.isdigit() else ""
    return [
        f'.TH "{name.upper()}" "{section}" "{date}" "ec2\\-net\\-utils {__version__}" "{title}"',
        ".nh",  # no hyphenation: command and option names must stay whole
        ".ad l",
    ]


def _para(text: str) -> list[str]:
    return [".PP", esc(text)]


# --- ec2net(8): from the argparse parser ---------------------------------------------


def _metavar(action: argparse.Action) -> str:
    if action.metavar is not None:
        return str(action.metavar)
    if action.choices is not None:
        return "{" + ",".join(str(c) for c in action.choices) + "}"
    return action.dest.upper() if action.option_strings else action.dest


def _takes_value(action: argparse.Action) -> bool:
    return action.nargs != 0


def _usage_token(action: argparse.Action) -> str:
    """One argument as the synopsis shows it: options bold, values italic."""
    if action.option_strings:
        token = _bold(action.option_strings[-1])
        if _takes_value(action):
            token += " " + _ital(_metavar(action))
        return token if action.required else f"[{token}]"
    token = _ital(_metavar(action))
    if action.nargs == "?":
        return f"[{token}]"
    if action.nargs == "*":
        return f"[{token} ...]"
    if action.nargs == "+":
        return f"{token} ..."
    return token


def _help_text(action: argparse.Action, prog: str) -> str:
    text = action.help or ""
    if "%" in text:  # argparse's own interpolation: %(default)s, %(prog)s, ...
        text = text % {**vars(action), "prog": prog}
    default = action.default
    shown = default not in (None, False, "", argparse.SUPPRESS) and _takes_value(action)
    if shown and "default" not in text.lower():
        text = f"{text} (default: {default})" if text else f"default: {default}"
    return text


def _documented(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    return [
        a
        for a in parser._actions
        if a.help != argparse.SUPPRESS
        and not isinstance(a, (argparse._HelpAction, argparse._SubParsersAction))
    ]


def _argument_items(parser: argparse.ArgumentParser) -> list[str]:
    out: list[str] = []
    for action in _documented(parser):
        if action.option_strings:
            head = ", ".join(_bold(o) for o in action.option_strings)
            if _takes_value(action):
                head += " " + _ital(_metavar(action))
        else:
            head = _ital(_metavar(action))
        out += [".TP", head, esc(_help_text(action, parser.prog) or "(no description)")]
    return out


def verbs(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    """The parser's subcommands in the order they were added, by name."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _verb_help(parser: argparse.ArgumentParser) -> dict[str, str]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return {a.dest: a.help or "" for a in action._choices_actions}
    return {}


def _epilog_sections(epilog: str) -> list[tuple[str, str]]:
    """Split "Exit status: ... Environment: ..." into man sections by those labels."""
    parts = re.split(r"(?:^|(?<=\. ))([A-Z][a-z]+(?: [a-z]+)?): ", epilog)
    lead, rest = parts[0].strip(), parts[1:]
    sections = [(rest[i].upper(), rest[i + 1].strip()) for i in range(0, len(rest) - 1, 2)]
    return ([("NOTES", lead)] if lead else []) + sections


def _whatis(description: str) -> str:
    first = re.split(r"[:.]", description, maxsplit=1)[0].strip()
    return first[:1].lower() + first[1:]


def render_ec2net8(parser: Optional[argparse.ArgumentParser] = None) -> str:
    parser = parser or cli.build_parser()
    prog = parser.prog
    subs = verbs(parser)
    short = _verb_help(parser)
    names = ", ".join([prog, *COMPAT])
    lines = _header(prog, 8, "System Administration")
    lines += [".SH NAME", f"{esc(names)} \\- {esc(_whatis(parser.description or prog))}"]

    lines += [".SH SYNOPSIS"]
    general = " ".join(_usage_token(a) for a in _documented(parser) if a.dest != "version")
    for name, sub in subs.items():
        args = " ".join(_usage_token(a) for a in _documented(sub))
        lines += [".br", f"{_bold(prog)} {general} {_bold(name)} {args}".rstrip()]
    for compat, verb in COMPAT.items():
        if verb in subs:
            args = " ".join(_usage_token(a) for a in _documented(subs[verb]))
            lines += [".br", f"{_bold(compat)} {args}".rstrip()]

    lines += [".SH DESCRIPTION", esc(parser.description or "")]
    lines += [
        ".PP",
        f"Every command accepts {_bold('-h')}, {_bold('--help')}; the general options "
        "below go before the command.",
    ]
    lines += [".SH OPTIONS", ".TP", f"{_bold('-h')}, {_bold('--help')}", "show help and exit"]
    lines += _argument_items(parser)

    lines += [".SH COMMANDS"]
    for name, sub in subs.items():
        args = " ".join(_usage_token(a) for a in _documented(sub))
        lines += [f".SS {_bold(name)} {args}".rstrip()]
        lines += [esc(sub.description or short.get(name, ""))]
        if sub.epilog:
            lines += _para(sub.epilog)
        items = _argument_items(sub)
        if items:
            lines += [".RS", *items, ".RE"]

    present = {c: v for c, v in COMPAT.items() if v in subs}
    if present:
        lines += [".SH COMPATIBILITY COMMANDS"]
        lines += _para(
            "The names of the original ec2-net-utils run the same code as these commands:"
        )
        for compat, verb in present.items():
            lines += [".TP", _bold(compat), f"{_bold(f'{prog} {verb}')}, with the same arguments."]

    for title, text in _epilog_sections(parser.epilog or ""):
        lines += [f'.SH "{title}"', esc(text)]

    lines += [".SH FILES"]
    files = [
        (config.DEFAULT_CONFIG, "configuration, see ec2net.toml(5)"),
        (config.DEFAULT_RUNTIME_DIR, "runtime state: one record per configured ENI, locks"),
        (
            f"/{sysfiles.UDEV_DIR}/{sysfiles.RULES}",
            "udev rule that starts ec2net@IFACE.service when an ENI appears "
            "(/lib/udev/rules.d on Debian 12)",
        ),
        (
            f"/{sysfiles.UNIT_DIR}/",
            "systemd units " + ", ".join(sysfiles.UNITS) + " (/lib/systemd/system on Debian 12)",
        ),
        (f"/{sysfiles.UPSTART_DIR}/", "upstart jobs " + ", ".join(sysfiles.UPSTART_JOBS)),
    ]
    for path, what in files:
        lines += [".TP", _ital(path), esc(what)]
    lines += [".SH SEE ALSO", esc(", ".join(_SEE_ALSO_8))]
    return "\n".join(lines) + "\n"


# --- ec2net.toml(5): from config.SCHEMA ----------------------------------------------


def render_ec2net_toml5() -> str:
    defaults = config.Settings()
    lines = _header("ec2net.toml", 5, "File Formats")
    lines += [".SH NAME", "ec2net.toml \\- configuration file of ec2net"]
    lines += [".SH SYNOPSIS", _ital(config.DEFAULT_CONFIG)]
    lines += [".SH DESCRIPTION"]
    lines += [
        esc(
            "A TOML file read by every ec2net(8) command and by the daemon at start and "
            "on SIGHUP. The environment variable EC2NET_CONFIG names another file. Every "
            "section and key is optional: a missing key, or a missing file at the default "
            "path, means the default. An unknown section or key, a value of the wrong "
            "type or out of range stops the command with exit status 2 and a message "
            "naming the file, the key and the reason."
        )
    ]
    section = ""
    for field in config.SCHEMA:
        if field.section != section:
            section = field.section
            lines += [f".SH {esc(f'[{section}]')}"]
        value = config._toml_value(getattr(defaults, field.attr))
        kind = config._KIND_NAMES[field.kind]
        lines += [
            ".TP",
            f"{_bold(field.key)} = {_ital(kind)}",
            esc(field.doc),
            ".br",
            f"Default: {_bold(value)}.",
        ]
    lines += [".SH EXAMPLE"]
    lines += _para(
        "The packages install this file with every key commented out at its default. "
        "Leave ENIs owned by a Kubernetes CNI alone and poll IMDS more often:"
    )
    lines += [".PP", ".nf", ".RS 4", esc(EXAMPLE.rstrip("\n")), ".RE", ".fi"]
    lines += [".SH FILES", ".TP", _ital(config.DEFAULT_CONFIG), "the configuration file"]
    lines += [".SH SEE ALSO", "ec2net(8)"]
    return "\n".join(lines) + "\n"


def render() -> dict[str, str]:
    """{file name: content}: the two pages and one-line pages for the compat names."""
    pages = {"ec2net.8": render_ec2net8(), "ec2net.toml.5": render_ec2net_toml5()}
    for compat in COMPAT:
        pages[f"{compat}.8"] = ".so man8/ec2net.8\n"
    return pages


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(
        prog="python3 -m ec2net.manpage",
        description="Write the man pages ec2net(8) and ec2net.toml(5) (and one-line pages "
        "for ec2ifup, ec2ifdown, ec2ifscan) into DIR.",
    )
    p.add_argument("--out", metavar="DIR", required=True, help="output directory")
    args = p.parse_args(argv)
    out = Path(args.out)
    for name, content in render().items():
        write_if_changed(out / name, content)
        print(out / name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
