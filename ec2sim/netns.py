"""Network-namespace primitives for the simulator: run code or commands inside a namespace,
batch `ip` operations, and record what a world created so a crash leaves nothing behind.

Only `ip`/`nft` argv lists are executed (never shell strings built from names), and
processes are ended only by a recorded pid whose start time still matches.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import json
import os
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, TypeVar

T = TypeVar("T")

CLONE_NEWNET = 0x40000000
NETNS_DIR = Path("/run/netns")
STATE_DIR = Path(os.environ.get("EC2SIM_STATE_DIR", "/run/ec2sim"))

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


class NetnsError(RuntimeError):
    pass


def run_in_netns(ns: str, fn: Callable[[], T]) -> T:
    """Call `fn` on a short-lived thread that has entered namespace `ns`.

    Sockets keep the namespace they were created in, so a socket made here can be used
    from any thread afterwards. The main thread's namespace is never changed.
    """
    result: list[T] = []
    error: list[BaseException] = []

    def body() -> None:
        try:
            fd = os.open(NETNS_DIR / ns, os.O_RDONLY | os.O_CLOEXEC)
            try:
                if _libc.setns(fd, CLONE_NEWNET) != 0:
                    err = ctypes.get_errno()
                    raise OSError(err, f"setns({ns}): {os.strerror(err)}")
            finally:
                os.close(fd)
            result.append(fn())
        except BaseException as exc:
            error.append(exc)

    t = threading.Thread(target=body, name=f"netns-{ns}", daemon=True)
    t.start()
    t.join()
    if error:
        raise error[0]
    return result[0]


def write_sysctls(ns: str, values: dict[str, str]) -> None:
    """Write sysctls (dotted keys, e.g. net.ipv4.ip_forward) inside `ns`.

    /proc/sys/net resolves against the calling *thread's* namespace, so one setns thread
    does all writes without spawning `sysctl` processes.
    """

    def body() -> None:
        for key, value in values.items():
            path = Path("/proc/sys") / key.replace(".", "/")
            path.write_text(value)

    run_in_netns(ns, body)


def read_sysctl(ns: str, key: str) -> str:
    path = Path("/proc/sys") / key.replace(".", "/")
    return run_in_netns(ns, path.read_text)


def run(
    argv: Sequence[str],
    *,
    check: bool = True,
    input: Optional[str] = None,
    timeout: float = 30.0,
    env: Optional[dict[str, str]] = None,
) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        list(argv),
        input=input,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        check=False,
    )
    if check and proc.returncode != 0:
        raise NetnsError(
            f"{' '.join(argv)} failed ({proc.returncode}): {proc.stderr.strip()}"
            + (f"\ninput:\n{input}" if input else "")
        )
    return proc


def ns_exec_argv(ns: str, argv: Sequence[str]) -> list[str]:
    return ["ip", "netns", "exec", ns, *argv]


def ip_batch(ns: Optional[str], lines: Sequence[str], *, force: bool = False) -> None:
    """Run many `ip` commands in one process (one fork instead of one per object).

    Lines are built from validated values (addresses from `ipaddress`, names we chose).
    """
    if not lines:
        return
    argv = ["ip"]
    if ns is not None:
        argv += ["-n", ns]
    if force:
        argv.append("-force")
    argv += ["-batch", "-"]
    run(argv, input="\n".join(lines) + "\n")


def add_netns(name: str) -> None:
    run(["ip", "netns", "add", name])


def del_netns(name: str) -> bool:
    if not (NETNS_DIR / name).exists():
        return False
    return run(["ip", "netns", "del", name], check=False).returncode == 0


def list_netns() -> list[str]:
    if not NETNS_DIR.is_dir():
        return []
    return sorted(p.name for p in NETNS_DIR.iterdir())


# --- processes -------------------------------------------------------------------


def proc_start_time(pid: int) -> Optional[int]:
    """Start time (clock ticks since boot) of `pid`, or None if it does not exist.

    Recorded with each pid so a recycled pid is never signalled.
    """
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # the command name may contain spaces/parens: fields resume after the last ')'
    fields = stat[stat.rindex(")") + 2 :].split()
    return int(fields[19])


def pid_alive(pid: int, start: Optional[int]) -> bool:
    now = proc_start_time(pid)
    return now is not None and (start is None or now == start)


def kill_recorded(pid: int, start: Optional[int], timeout: float = 2.0) -> None:
    """SIGTERM then SIGKILL a recorded process, only if it is still the same process."""
    if pid == os.getpid() or not pid_alive(pid, start):
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)  # reap our own children so they vanish
        if not pid_alive(pid, start):
            return
        time.sleep(0.01)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


# --- state file ------------------------------------------------------------------


@dataclass
class WorldState:
    """What one world created, written before creating it so a crash can be undone."""

    prefix: str
    owner_pid: int
    owner_start: Optional[int]
    namespaces: list[str] = field(default_factory=list)
    pids: list[tuple[int, Optional[int]]] = field(default_factory=list)
    tmpdir: Optional[str] = None
    label: str = ""

    @property
    def path(self) -> Path:
        return STATE_DIR / f"{self.prefix}.json"

    def save(self) -> None:
        STATE_DIR.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(
            json.dumps(
                {
                    "prefix": self.prefix,
                    "owner_pid": self.owner_pid,
                    "owner_start": self.owner_start,
                    "namespaces": self.namespaces,
                    "pids": [list(p) for p in self.pids],
                    "tmpdir": self.tmpdir,
                    "label": self.label,
                }
            )
        )
        tmp.replace(self.path)

    @classmethod
    def load(cls, path: Path) -> WorldState:
        data = json.loads(path.read_text())
        return cls(
            prefix=data["prefix"],
            owner_pid=int(data["owner_pid"]),
            owner_start=data.get("owner_start"),
            namespaces=list(data.get("namespaces", [])),
            pids=[(int(p), s) for p, s in data.get("pids", [])],
            tmpdir=data.get("tmpdir"),
            label=data.get("label", ""),
        )

    def owner_alive(self) -> bool:
        return pid_alive(self.owner_pid, self.owner_start)


def recorded_worlds() -> Iterator[WorldState]:
    if not STATE_DIR.is_dir():
        return
    for path in sorted(STATE_DIR.glob("*.json")):
        try:
            yield WorldState.load(path)
        except (OSError, ValueError, KeyError):
            continue


def destroy(state: WorldState, *, stop_owner: bool = False) -> None:
    """Undo a recorded world: end its processes (by pid), delete its namespaces."""
    if stop_owner and state.owner_pid != os.getpid():
        # the owner (e.g. `ec2sim up`) tears down itself on SIGTERM; give it a moment
        kill_recorded(state.owner_pid, state.owner_start, timeout=3.0)
    for pid, start in state.pids:
        kill_recorded(pid, start)
    for ns in state.namespaces:
        del_netns(ns)
    if state.tmpdir:
        shutil.rmtree(state.tmpdir, ignore_errors=True)
    with contextlib.suppress(FileNotFoundError):
        state.path.unlink()


def cleanup_orphans(label: Optional[str] = None) -> list[str]:
    """Remove worlds whose owning process is gone (an earlier crashed run).

    Worlds whose owner is alive are left alone, so parallel runs are safe. With `label`,
    only worlds recorded with that label are considered.
    """
    removed = []
    for state in recorded_worlds():
        if label is not None and state.label != label:
            continue
        if not state.owner_alive():
            destroy(state)
            removed.append(state.prefix)
    return removed


def down_all(prefix: Optional[str] = None) -> list[str]:
    """`ec2sim down`: remove every recorded world (or one), stopping live owners too."""
    removed = []
    for state in recorded_worlds():
        if prefix is not None and state.prefix != prefix:
            continue
        destroy(state, stop_owner=True)
        removed.append(state.prefix)
    return removed
