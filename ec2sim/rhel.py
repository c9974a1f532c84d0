"""The real RHEL 7 network-scripts (initscripts 9.49) as an external tool for tests,
run inside the simulated instance like the system tier runs QEMU.

The scripts are never part of this repository: `locate_scripts()` finds them through
`EC2NET_RHEL_SCRIPTS` (a directory holding `sysconfig/network-scripts/` and
`rc.d/init.d/functions`), by default `../shared/peers/initscripts-9.49.54` beside the
checkout, and fails with a message saying so when they are absent.

What RHEL has and Debian lacks is given to them in a private mount namespace, held by
one process (`RhelHost`) that also sits in the instance's network namespace. The host's
own /etc, /usr and /run are never changed: the mount namespace is created with private
propagation, so nothing mounted in it is seen outside, and every overlay's upper layer
lives in the test's directory.
- /etc: an overlay adding `sysconfig/network` (NETWORKING=yes), `init.d/functions`, and
  `sysconfig/network-scripts/`, a bind mount of the test's directory of rendered files
  (the `files_root` the ifcfg backend writes under), into which the scripts are linked
  as RHEL installs them: scripts and ifcfg-/route-/rule- files side by side.
- /usr/bin: `sh` is bash and `ipcalc` is ipcalc-ng (RHEL's ipcalc), as the scripts
  assume; /usr/sbin (= /sbin): `arping` (Debian keeps it in /usr/bin), `ifup`, `ifdown`.
- /run: the test's own directory (`/run/netreport`, dhclient's pid files), which also
  hides the host's D-Bus and systemd sockets: the scripts see no NetworkManager and no
  systemd to redirect to. /var/lib/dhclient for leases.
- /sys: a sysfs of the instance's network namespace (the scripts read
  /sys/class/net/IF).
- The host name, in a UTS namespace of its own, is `localhost`, which the scripts do not
  send in DHCP requests: RHEL's dhclient takes `-H NAME`, Debian's refuses it.
Commands enter both namespaces with `nsenter` (argv lists, never a shell string).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, Optional

from ec2sim.netns import NETNS_DIR, kill_recorded, proc_start_time

ENV_VAR = "EC2NET_RHEL_SCRIPTS"
DEFAULT_SCRIPTS = Path(__file__).resolve().parents[1].parent / "shared/peers/initscripts-9.49.54"
SCRIPTS_SUBDIR = Path("sysconfig/network-scripts")
FUNCTIONS = Path("rc.d/init.d/functions")
FILES_DIR = Path("etc/sysconfig/network-scripts")  # under the backend's files_root
PATH = "/usr/sbin:/usr/bin:/sbin:/bin"

# Debian packages providing what the scripts call by RHEL's paths.
_TOOLS = {"ipcalc-ng": "ipcalc-ng", "arping": "iputils-arping", "bash": "bash"}
_HOLD = "import sys; print('ready', flush=True); sys.stdin.read()"


class ScriptsMissing(AssertionError):
    """The real network-scripts are not where the tests look (a failure, not a skip)."""


def locate_scripts() -> Path:
    """The initscripts tree named by EC2NET_RHEL_SCRIPTS (default beside the checkout)."""
    root = Path(os.environ.get(ENV_VAR) or DEFAULT_SCRIPTS)
    missing = [p for p in (SCRIPTS_SUBDIR / "ifup-eth", FUNCTIONS) if not (root / p).is_file()]
    if missing:
        raise ScriptsMissing(
            f"RHEL network-scripts not found: {root} lacks {', '.join(map(str, missing))}. "
            f"Set {ENV_VAR} to an initscripts-9.49 tree (sysconfig/network-scripts/ and "
            "rc.d/init.d/functions), e.g. shared/peers/initscripts-9.49.54 beside the checkout"
        )
    for tool, package in _TOOLS.items():
        if not any((Path(d) / tool).exists() for d in ("/usr/bin", "/usr/sbin")):
            raise ScriptsMissing(f"{tool} is missing: install the Debian package {package}")
    return root


@dataclass(frozen=True)
class Run:
    """One script run: what it was and what it said."""

    argv: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str

    def __str__(self) -> str:
        return f"{' '.join(self.argv)} -> exit {self.returncode}\n{self.stdout}{self.stderr}"


def _option_path(path: Path) -> str:
    text = str(path)
    if any(c in text for c in ",:"):  # overlay's option separators
        raise ValueError(f"unusable path for an overlay mount: {text}")
    return text


class RhelHost:
    """A RHEL-shaped view of the filesystem, joined to the instance's network namespace:
    `ifup`/`ifdown` there are the real scripts acting on the real kernel state."""

    def __init__(
        self,
        netns: str,
        files_root: Path,
        workdir: Path,
        *,
        scripts: Optional[Path] = None,
        timeout: float = 60.0,
    ) -> None:
        self.netns = netns
        self.files_dir = files_root / FILES_DIR
        self.work = workdir
        self.run_dir = workdir / "run"  # the namespace's /run
        self.scripts = scripts if scripts is not None else locate_scripts()
        self.timeout = timeout
        self._holder: Optional[subprocess.Popen[str]] = None
        self._holder_start: Optional[int] = None

    # --- lifecycle -------------------------------------------------------------------
    def __enter__(self) -> RhelHost:
        return self.start()

    def __exit__(
        self,
        exc_type: Optional[type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        self.stop()

    @property
    def pid(self) -> int:
        assert self._holder is not None, "RhelHost not started"
        return self._holder.pid

    def start(self) -> RhelHost:
        self._install_scripts()
        uppers = self._prepare_uppers()
        self._holder = subprocess.Popen(
            ["unshare", "--mount", "--uts", "--propagation", "private", "--",
             "nsenter", f"--net={NETNS_DIR / self.netns}", "--",
             sys.executable, "-c", _HOLD],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        self._holder_start = proc_start_time(self._holder.pid)
        try:
            assert self._holder.stdout is not None
            if self._holder.stdout.readline().strip() != "ready":
                raise RuntimeError(f"{self.netns}: the namespace holder did not start")
            self._mount(uppers)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """End dhclients the scripts left running in this namespace, then the holder."""
        if self._holder is None:
            return
        for pid in self.daemons():
            kill_recorded(pid, proc_start_time(pid))
        stdin: Optional[IO[str]] = self._holder.stdin
        if stdin is not None:
            stdin.close()  # the holder exits at end of input
        try:
            self._holder.wait(timeout=5)
        except subprocess.TimeoutExpired:
            kill_recorded(self._holder.pid, self._holder_start)
            self._holder.wait(timeout=5)
        self._holder = None

    def daemons(self) -> list[int]:
        """Pids of the processes the scripts started (dhclient's pid files) that still
        run in this mount namespace."""
        if self._holder is None:
            return []
        ours = os.stat(f"/proc/{self.pid}/ns/mnt").st_ino
        pids = []
        for path in sorted(self.run_dir.glob("dhclient*.pid")):
            text = path.read_text().strip()
            if not text.isdigit():
                continue
            try:
                if os.stat(f"/proc/{text}/ns/mnt").st_ino == ours:
                    pids.append(int(text))
            except FileNotFoundError:
                continue
        return pids

    # --- running the scripts ---------------------------------------------------------
    def run(
        self,
        argv: Sequence[str],
        *,
        timeout: Optional[float] = None,
        env: Optional[dict[str, str]] = None,
    ) -> Run:
        """Run argv as root on the RHEL view inside the instance (never raises on exit);
        `env` adds to a minimal environment."""
        proc = subprocess.run(
            self._enter(argv),
            capture_output=True,
            text=True,
            timeout=timeout or self.timeout,
            env={"PATH": PATH, "LANG": "C", "HOME": "/root", "TERM": "dumb", **(env or {})},
            cwd="/",
            check=False,
        )
        return Run(tuple(argv), proc.returncode, proc.stdout, proc.stderr)

    def ifup(self, name: str) -> Run:
        return self.run(["ifup", name])

    def ifdown(self, name: str) -> Run:
        return self.run(["ifdown", name])

    def _enter(self, argv: Sequence[str]) -> list[str]:
        return ["nsenter", f"--target={self.pid}", "--mount", "--uts", "--net", "--", *argv]

    def _must(self, argv: Sequence[str]) -> None:
        done = self.run(argv)
        if done.returncode != 0:
            raise RuntimeError(f"{self.netns}: {done}")

    # --- the RHEL view ---------------------------------------------------------------
    def _install_scripts(self) -> None:
        """Link the scripts into the rendered files' directory, as RHEL installs them."""
        self.files_dir.mkdir(parents=True, exist_ok=True)
        for script in sorted((self.scripts / SCRIPTS_SUBDIR).iterdir()):
            link = self.files_dir / script.name
            if not link.exists() and not link.is_symlink():
                link.symlink_to(script.resolve())

    def _prepare_uppers(self) -> dict[str, Path]:
        """The overlays' upper layers (in the test's directory), by mount point."""
        nets = SCRIPTS_SUBDIR  # sysconfig/network-scripts inside /etc
        etc = self.work / "etc"
        (etc / nets).mkdir(parents=True, exist_ok=True)  # the bind mount's target
        (etc / "sysconfig/network").write_text("NETWORKING=yes\n")
        _link(etc / "init.d/functions", (self.scripts / FUNCTIONS).resolve())
        usr_bin = self.work / "usr-bin"
        _link(usr_bin / "sh", Path("bash"))
        _link(usr_bin / "ipcalc", Path("ipcalc-ng"))
        usr_sbin = self.work / "usr-sbin"
        _link(usr_sbin / "arping", Path("/usr/bin/arping"))
        for verb in ("ifup", "ifdown"):
            _link(usr_sbin / verb, Path("/etc") / nets / verb)
        var_lib = self.work / "var-lib"
        (var_lib / "dhclient").mkdir(parents=True, exist_ok=True)
        (self.run_dir / "netreport").mkdir(parents=True, exist_ok=True)
        return {"/etc": etc, "/usr/bin": usr_bin, "/usr/sbin": usr_sbin, "/var/lib": var_lib}

    def _mount(self, uppers: dict[str, Path]) -> None:
        self._must(["hostname", "localhost"])
        self._must(["mount", "-t", "sysfs", "sysfs", "/sys"])
        self._must(["mount", "--bind", str(self.run_dir), "/run"])
        for target, upper in uppers.items():
            work = upper.with_name(upper.name + ".work")
            work.mkdir(exist_ok=True)
            options = (
                f"lowerdir={target},upperdir={_option_path(upper)},workdir={_option_path(work)}"
            )
            self._must(["mount", "-t", "overlay", "overlay", "-o", options, target])
        self._must(["mount", "--bind", str(self.files_dir), f"/etc/{SCRIPTS_SUBDIR}"])


def _link(path: Path, target: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.is_symlink():
        path.symlink_to(target)


def wait_gone(pids: Sequence[int], timeout: float = 5.0) -> list[int]:
    """Pids still alive after up to `timeout` s (a dhclient released by ifdown exits)."""
    deadline = time.monotonic() + timeout
    alive = [p for p in pids if proc_start_time(p) is not None]
    while alive and time.monotonic() < deadline:
        time.sleep(0.05)
        alive = [p for p in alive if proc_start_time(p) is not None]
    return alive
