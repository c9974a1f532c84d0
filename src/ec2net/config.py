"""Settings: the TOML configuration file, validated against one schema.

The schema (`SCHEMA`) is data so that the same source produces the validation, the
commented default file and the ec2net.toml(5) man page.
"""

from __future__ import annotations

import logging
import os
import stat
import sys
from dataclasses import dataclass
from typing import Any, Callable, Optional, Union

from ec2net import backend_names
from ec2net.errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.9/3.10 hosts
    import tomli as tomllib

log = logging.getLogger(__name__)

DEFAULT_CONFIG = "/etc/ec2net/ec2net.toml"
DEFAULT_RUNTIME_DIR = "/run/ec2net"
# The commented default file is 3 KB; a file that excludes or sets the MTU of every
# ENI the table scheme can number (32 cards x 100) by ENI id fits in about 150 KB, and
# real ones hold a handful of lines. A larger file is not a configuration: it is
# refused before it is parsed (tomllib holds the whole document in memory).
MAX_CONFIG_BYTES = 256 * 1024


@dataclass(frozen=True)
class Settings:
    drivers: tuple[str, ...] = ("ena", "ixgbevf", "vif")
    exclude_names: tuple[str, ...] = ()
    exclude_macs: tuple[str, ...] = ()
    exclude_eni_ids: tuple[str, ...] = ()
    manage_primary: bool = False
    # "auto" (the primary's MTU), "keep" (never touch) or a number; per ENI id or MAC.
    mtu: Union[str, int] = "auto"
    mtu_overrides: tuple[tuple[str, Union[str, int]], ...] = ()
    prefixes_local: bool = False
    refresh_interval: float = 60.0
    imds_endpoints: tuple[str, ...] = ("http://169.254.169.254", "http://[fd00:ec2::254]")
    imds_timeout: float = 1.0
    imds_retries: int = 4
    propagation_timeout: float = 30.0
    allow_imdsv1: bool = False
    token_ttl: int = 21600
    imds_fwmark: Optional[int] = None
    backend: str = "auto"
    files_root: str = "/"
    ifcfg_dhcp: bool = False
    settle_timeout: float = 20.0
    lock_timeout: float = 60.0
    metrics_textfile: str = ""
    config_path: str = DEFAULT_CONFIG
    runtime_dir: str = DEFAULT_RUNTIME_DIR


@dataclass(frozen=True)
class Field:
    section: str
    key: str
    attr: str
    kind: str  # "str", "bool", "number", "int", "list"
    doc: str
    check: Optional[Callable[[Any], Optional[str]]] = None  # returns a reason or None


MTU_MIN, MTU_MAX = 576, 9216
MTU_ENA_EXPRESS = 8900  # ENA Express needs the MTU at or below this


def _mtu_value(v: Any) -> Optional[str]:
    if v in ("auto", "keep"):
        return None
    if isinstance(v, int) and not isinstance(v, bool):
        return None if MTU_MIN <= v <= MTU_MAX else f"must be {MTU_MIN} to {MTU_MAX}"
    return 'must be "auto", "keep" or a number of bytes'


def _mtu_overrides(v: Any) -> Optional[str]:
    for key, value in v.items():
        if not (key.startswith("eni-") or _mac_list([key]) is None):
            return f"{key!r} is neither an ENI id (eni-...) nor a MAC address"
        reason = _mtu_value(value)
        if reason:
            return f"{key}: {reason}"
    return None


def _positive(v: Any) -> Optional[str]:
    return None if v > 0 else "must be greater than 0"


def _ttl(v: Any) -> Optional[str]:
    return None if 1 <= v <= 21600 else "must be between 1 and 21600"


def _fwmark(v: Any) -> Optional[str]:
    return None if 1 <= v <= 0xFFFFFFFF else "must be between 1 and 0xFFFFFFFF"


def _endpoints(v: Any) -> Optional[str]:
    for url in v:
        if not (url.startswith("http://")):
            return f"{url!r} is not an http:// URL (IMDS is plain HTTP on a link-local address)"
    return None if v else "needs at least one endpoint"


def _backend(v: Any) -> Optional[str]:
    names = ("auto", *(d.name for d in backend_names.ALL))
    return None if v in names else f"must be one of {', '.join(names)}"


def _absolute(v: Any) -> Optional[str]:
    return None if str(v).startswith("/") else "must be an absolute path"


def _mac_list(v: Any) -> Optional[str]:
    for mac in v:
        parts = mac.split(":")
        if len(parts) != 6 or not all(len(p) == 2 for p in parts):
            return f"{mac!r} is not a MAC address like 02:aa:bb:cc:dd:ee"
        try:
            [int(p, 16) for p in parts]
        except ValueError:
            return f"{mac!r} is not a MAC address like 02:aa:bb:cc:dd:ee"
    return None


SCHEMA: tuple[Field, ...] = (
    Field(
        "interfaces",
        "drivers",
        "drivers",
        "list",
        "Kernel drivers whose interfaces are ENIs (udev ID_NET_DRIVER). After a change, "
        "`ec2net install-system-files --udev-override` updates the udev rule.",
    ),
    Field(
        "interfaces",
        "exclude_names",
        "exclude_names",
        "list",
        'Interface names (shell globs allowed, e.g. "eth9" or "cni*") never touched.',
    ),
    Field(
        "interfaces",
        "exclude_macs",
        "exclude_macs",
        "list",
        "MAC addresses of ENIs never touched (e.g. ENIs owned by a CNI).",
        _mac_list,
    ),
    Field(
        "interfaces",
        "exclude_eni_ids",
        "exclude_eni_ids",
        "list",
        "ENI ids (eni-...) never touched.",
    ),
    Field(
        "interfaces",
        "manage_primary",
        "manage_primary",
        "bool",
        "Also configure the primary ENI (secondary addresses and policy rules). Off: "
        "the primary is left to the boot network configuration.",
    ),
    Field(
        "interfaces",
        "mtu",
        "mtu",
        "mtu",
        '"auto": the MTU the primary ENI runs with (DHCP sets it from the VPC, 9001 '
        'inside one); "keep": never change the MTU; or a number of bytes (576 to 9216; '
        "ENA Express needs 8900 or less). `down` sets back the MTU the link had.",
        _mtu_value,
    ),
    Field(
        "interfaces",
        "mtu_overrides",
        "mtu_overrides",
        "mtu_table",
        "Per-ENI MTU: a TOML table from ENI id or MAC (keys quoted) to a value as for "
        "interfaces.mtu; it wins over interfaces.mtu for that ENI.",
        _mtu_overrides,
    ),
    Field(
        "prefixes",
        "local",
        "prefixes_local",
        "bool",
        "Also route every delegated prefix (IPv4 and IPv6) as local (AnyIP, table local), "
        "so a service bound to the wildcard answers on every address of the prefix. Off: "
        "the prefixes get rules only (a CNI hands their addresses to pods).",
    ),
    Field(
        "refresh",
        "interval",
        "refresh_interval",
        "number",
        "Seconds between IMDS polls for secondary address changes.",
        _positive,
    ),
    Field(
        "imds",
        "endpoints",
        "imds_endpoints",
        "list",
        "IMDS base URLs, tried in order.",
        _endpoints,
    ),
    Field(
        "imds",
        "timeout",
        "imds_timeout",
        "number",
        "Seconds to wait for one IMDS answer.",
        _positive,
    ),
    Field(
        "imds",
        "retries",
        "imds_retries",
        "int",
        "Retries (exponential backoff with jitter) after a transient IMDS error.",
        lambda v: None if v >= 0 else "must be 0 or more",
    ),
    Field(
        "imds",
        "propagation_timeout",
        "propagation_timeout",
        "number",
        "Seconds to wait for a newly attached ENI's metadata to appear.",
        _positive,
    ),
    Field(
        "imds",
        "allow_imdsv1",
        "allow_imdsv1",
        "bool",
        "Fall back to IMDSv1 when no token can be had. A security choice: off.",
    ),
    Field(
        "imds",
        "token_ttl",
        "token_ttl",
        "int",
        "Lifetime in seconds requested for the IMDSv2 session token.",
        _ttl,
    ),
    Field(
        "imds",
        "fwmark",
        "imds_fwmark",
        "int",
        "Firewall mark (SO_MARK) set on every IMDS socket, for a locked-down IMDS that "
        "lets only marked sockets through (systemd's locked mode uses 0x7FFF0815). "
        "Unset: sockets are not marked.",
        _fwmark,
    ),
    Field(
        "backend",
        "name",
        "backend",
        "str",
        "How changes are applied: auto (the network manager that runs here, else "
        "netlink), or one of "
        + ", ".join(f"{d.name} ({d.title})" for d in backend_names.ALL)
        + ".",
        _backend,
    ),
    Field(
        "backend",
        "files_root",
        "files_root",
        "str",
        "Directory the file backends write their files under (an image root; tests).",
        _absolute,
    ),
    Field(
        "backend",
        "ifcfg_dhcp",
        "ifcfg_dhcp",
        "bool",
        "ifcfg: take each ENI's primary IPv4 address from DHCP (dhclient kept running) "
        "instead of writing it statically.",
    ),
    Field(
        "backend",
        "settle_timeout",
        "settle_timeout",
        "number",
        "Seconds to wait for "
        + " or ".join(d.title for d in backend_names.ALL if d.settles)
        + " to apply rendered files.",
        _positive,
    ),
    Field(
        "runtime",
        "lock_timeout",
        "lock_timeout",
        "number",
        "Seconds to wait for another ec2net working on the same interface.",
        _positive,
    ),
    Field(
        "metrics",
        "textfile",
        "metrics_textfile",
        "str",
        "File the daemon keeps Prometheus metrics in, rewritten after each job and "
        "refresh, for node_exporter's textfile collector (a *.prom file in its "
        "directory). Empty: no file.",
        lambda v: None if v == "" else _absolute(v),
    ),
)

_KINDS: dict[str, Callable[[Any], bool]] = {
    "str": lambda v: isinstance(v, str),
    "bool": lambda v: isinstance(v, bool),
    "int": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    "list": lambda v: isinstance(v, list) and all(isinstance(x, str) for x in v),
    "mtu": lambda v: isinstance(v, (str, int)) and not isinstance(v, bool),
    "mtu_table": lambda v: isinstance(v, dict),
}
_KIND_NAMES = {
    "str": "a string",
    "bool": "true or false",
    "int": "an integer",
    "number": "a number",
    "list": "a list of strings",
    "mtu": '"auto", "keep" or a number',
    "mtu_table": "a table of ENI ids or MACs to MTUs",
}


def parse(data: dict[str, Any], path: str) -> dict[str, Any]:
    """Validate a parsed TOML document; return Settings field values it sets."""
    fields = {(f.section, f.key): f for f in SCHEMA}
    sections = {f.section for f in SCHEMA}
    values: dict[str, Any] = {}
    for section, table in data.items():
        if section not in sections:
            raise ConfigError(path, section, "unknown section")
        if not isinstance(table, dict):
            raise ConfigError(path, section, "must be a table ([section])")
        for key, value in table.items():
            field = fields.get((section, key))
            name = f"{section}.{key}"
            if field is None:
                raise ConfigError(path, name, "unknown key")
            if not _KINDS[field.kind](value):
                raise ConfigError(path, name, f"must be {_KIND_NAMES[field.kind]}")
            reason = field.check(value) if field.check else None
            if reason:
                raise ConfigError(path, name, reason)
            if field.kind == "list":
                lower = field.key == "exclude_macs"
                values[field.attr] = tuple(v.lower() if lower else v for v in value)
            elif field.kind == "mtu_table":
                values[field.attr] = tuple(sorted((k.lower(), v) for k, v in value.items()))
            else:
                values[field.attr] = value
    for name, mtu in [("interfaces.mtu", values.get("mtu")), *(
        (f"interfaces.mtu_overrides.{k}", v) for k, v in values.get("mtu_overrides", ())
    )]:  # fmt: skip
        if isinstance(mtu, int) and mtu > MTU_ENA_EXPRESS:
            log.warning("%s: %s = %d: ENA Express needs %d or less", path, name, mtu,
                        MTU_ENA_EXPRESS)  # fmt: skip
    return values


def load(environ: Optional[dict[str, str]] = None) -> Settings:
    """Read the config file named by EC2NET_CONFIG (or the default path); a missing
    file at the default path means defaults, a missing file named explicitly is an error."""
    env = os.environ if environ is None else environ
    explicit = env.get("EC2NET_CONFIG")
    path = explicit or DEFAULT_CONFIG
    runtime_dir = env.get("EC2NET_RUNTIME_DIR") or DEFAULT_RUNTIME_DIR
    values: dict[str, Any] = {}
    try:
        raw = read_config(path)
    except FileNotFoundError:
        if explicit:
            raise ConfigError(path, "-", "file not found") from None
        raw = b""
    except OSError as err:
        raise ConfigError(path, "-", err.strerror or str(err)) from None
    if raw:
        try:
            data = tomllib.loads(raw.decode("utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
            raise ConfigError(path, "-", f"not valid TOML: {err}") from None
        values = parse(data, path)
    if "EC2NET_IMDS_URL" in env:  # tests and benchmarks point at a simulator
        values["imds_endpoints"] = (env["EC2NET_IMDS_URL"],)
    return Settings(config_path=path, runtime_dir=runtime_dir, **values)


def read_config(path: str) -> bytes:
    """The file's bytes, if only root (or the user running ec2net) can change it and it
    is at most MAX_CONFIG_BYTES; else ConfigError. ec2net runs as root and the file
    names paths it writes (metrics.textfile, backend.files_root): a file another user
    can write would let that user choose what root overwrites."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOCTTY | os.O_NONBLOCK)
    try:
        st = os.fstat(fd)
        if os.path.samestat(st, os.stat(os.devnull)):
            return b""  # "no configuration", as the tests and some images say
        if not stat.S_ISREG(st.st_mode):
            raise ConfigError(path, "-", "not a regular file")
        _check_trusted(path, "file", st)
        parent = os.path.dirname(os.path.realpath(path))
        dst = os.stat(parent)
        if not (dst.st_mode & stat.S_ISVTX):  # a sticky directory (/tmp) keeps our file
            _check_trusted(path, f"directory {parent}", dst)
        chunks: list[bytes] = []
        size = 0
        while size <= MAX_CONFIG_BYTES:
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    finally:
        os.close(fd)
    if size > MAX_CONFIG_BYTES:
        raise ConfigError(path, "-", f"larger than {MAX_CONFIG_BYTES} bytes: not a configuration")
    return b"".join(chunks)


def _check_trusted(path: str, what: str, st: os.stat_result) -> None:
    me = os.geteuid()
    if st.st_uid not in (0, me):
        raise ConfigError(
            path, "-", f"{what} is owned by uid {st.st_uid}; ec2net takes its configuration "
            "only from root (chown root)"
        )  # fmt: skip
    if st.st_mode & 0o022:
        raise ConfigError(
            path, "-", f"{what} is writable by group or others (mode "
            f"{stat.S_IMODE(st.st_mode):04o}); ec2net takes its configuration only from "
            "root (chmod go-w)"
        )  # fmt: skip


def render_default() -> str:
    """The commented default configuration file shipped in packages."""
    defaults = Settings()
    out = ["# ec2net configuration. Every key is optional; shown are the defaults.", ""]
    section = ""
    for field in SCHEMA:
        if field.section != section:
            if section:
                out.append("")
            section = field.section
            out.append(f"[{section}]")
        out.append(f"# {field.doc}")
        value = getattr(defaults, field.attr)
        if field.kind == "mtu_table" and not value:
            out.append(f"#{field.key} = {{}}")
            continue
        # TOML has no null: a key unset by default is shown without a value
        out.append(
            f"# {field.key}: unset" if value is None else f"#{field.key} = {_toml_value(value)}"
        )
    return "\n".join(out) + "\n"


def _toml_value(value: Any) -> str:
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, tuple) and all(isinstance(v, tuple) for v in value) and value:
        return "{ " + ", ".join(f'"{k}" = {_toml_value(v)}' for k, v in value) + " }"
    if isinstance(value, tuple):
        return "[" + ", ".join(f'"{v}"' for v in value) + "]"
    return f'"{value}"'
