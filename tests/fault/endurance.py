"""Tools of the endurance and hostile-condition cases: a private mount namespace with a
tiny tmpfs (a full or read-only runtime directory without touching the host's mounts),
a process's resources from /proc, peak RSS of a finished run, an sd_notify listener.

Every process here is one we started, ended by its pid.
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from tests.fault.harness import FaultWorld, Run

FILLER = "filler"
HELPER_BOUND = 900  # seconds the mount namespace's holder lives at most


class PrivateMount:
    """A tmpfs of `size` on `path`, in a mount namespace of its own held by a helper
    (`unshare -m --propagation private`). ec2net runs enter it with nsenter; the test
    reaches its files through /proc/PID/root. The host's mount table never changes."""

    def __init__(self, path: Path, size: str = "1m") -> None:
        path.mkdir(parents=True, exist_ok=True)
        self.path = path
        script = (
            'mount -t tmpfs -o "size=$2,mode=0700" ec2net-fault "$1" && echo ready && '
            f"exec sleep {HELPER_BOUND}"
        )
        self.proc = subprocess.Popen(
            ["unshare", "-m", "--propagation", "private", "sh", "-c", script, "sh",
             str(path), size],
            stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().strip()
        if line != "ready":
            self.close()
            raise AssertionError(f"no private tmpfs on {path}: {line!r}")

    @property
    def wrap(self) -> list[str]:
        return ["nsenter", "-t", str(self.proc.pid), "-m", "--"]

    def inside(self, path: Path) -> Path:
        """`path` as the mount namespace sees it."""
        return Path(f"/proc/{self.proc.pid}/root") / path.relative_to("/")

    def fill(self) -> int:
        """Fill the tmpfs to the last byte; returns the bytes written."""
        written = 0
        chunk = b"\0" * 4096
        with open(self.inside(self.path / FILLER), "wb", buffering=0) as f:
            while True:
                try:
                    written += f.write(chunk) or 0
                except OSError as err:
                    if err.errno != errno.ENOSPC:
                        raise
                    return written

    def free(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.inside(self.path / FILLER).unlink()

    def remount(self, *, read_only: bool) -> None:
        opt = "remount,ro" if read_only else "remount,rw"
        subprocess.run([*self.wrap, "mount", "-o", opt, str(self.path)], check=True)

    def files(self) -> list[Path]:
        root = self.inside(self.path)
        return sorted(p.relative_to(root) for p in root.rglob("*") if p.is_file())

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()  # our own helper, by its pid
        self.proc.wait(timeout=10)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


# --- /proc ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Usage:
    rss_kib: int
    hwm_kib: int  # peak RSS so far
    threads: int
    fds: int
    cpu: float  # user + system seconds


def usage(pid: int) -> Usage:
    fields: dict[str, str] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        fields[key] = value.strip()
    stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return Usage(
        rss_kib=int(fields["VmRSS"].split()[0]),
        hwm_kib=int(fields["VmHWM"].split()[0]),
        threads=int(fields["Threads"]),
        fds=len(os.listdir(f"/proc/{pid}/fd")),
        cpu=(int(stat[11]) + int(stat[12])) / ticks,
    )


def run_peak(fw: FaultWorld, *args: str, bound: float = 60.0) -> tuple[Run, int]:
    """Run ec2net and return its result and peak RSS (KiB, from wait4: `ip netns exec`
    execs ec2net in place, so the child is ec2net itself)."""
    started = time.monotonic()
    out_path = fw.tmp / f".out.{os.getpid()}.{threading.get_ident()}"
    err_path = out_path.with_suffix(".err")
    with open(out_path, "w") as out, open(err_path, "w") as err:
        proc = subprocess.Popen(fw.argv(*args), env=fw.env(), stdout=out, stderr=err)
    timer = threading.Timer(bound, proc.kill)  # by its pid
    timer.start()
    try:
        _, status, rusage = os.wait4(proc.pid, 0)
    finally:
        timer.cancel()
    proc.returncode = os.waitstatus_to_exitcode(status)
    run = Run(proc.returncode, out_path.read_text(), err_path.read_text(),
              time.monotonic() - started)  # fmt: skip
    out_path.unlink()
    err_path.unlink()
    return run, int(rusage.ru_maxrss)


# --- sd_notify ------------------------------------------------------------------------


@dataclass
class NotifyListener:
    """A NOTIFY_SOCKET the test controls: every datagram with its arrival time."""

    path: Path
    messages: list[tuple[float, str]] = field(default_factory=list)
    _sock: Optional[socket.socket] = None
    _thread: Optional[threading.Thread] = None
    _stop: threading.Event = field(default_factory=threading.Event)

    def start(self) -> NotifyListener:
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.bind(str(self.path))
        self._sock.settimeout(0.2)
        self._thread = threading.Thread(target=self._run, name="notify", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        assert self._sock is not None
        while not self._stop.is_set():
            try:
                data = self._sock.recv(4096)
            except socket.timeout:
                continue
            except OSError:
                return
            self.messages.append((time.monotonic(), data.decode(errors="replace")))

    def pings(self) -> list[float]:
        return [t for t, m in self.messages if "WATCHDOG=1" in m.split("\n")]

    def ready(self) -> Optional[float]:
        return next((t for t, m in self.messages if "READY=1" in m.split("\n")), None)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(2)
        if self._sock is not None:
            self._sock.close()


def gaps(times: list[float], start: float, end: float) -> list[float]:
    """Seconds between consecutive instants, counting from `start` to `end`."""
    points = [start, *(t for t in times if start <= t <= end), end]
    return [b - a for a, b in zip(points, points[1:])]


def percentile(values: list[float], p: float) -> float:
    """The p-th percentile (nearest rank) of `values`."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    rank = max(1, min(len(ordered), round(p / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


# --- a daemon that logs to a file -------------------------------------------------------


@dataclass
class LoggedDaemon:
    """`ec2net -v watch` with its log in a file (a pipe nobody reads would fill and
    block a daemon that runs for minutes)."""

    proc: subprocess.Popen[str]
    log_path: Path

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def start_logged_daemon(
    fw: FaultWorld, env: Optional[dict[str, str]] = None, name: str = "daemon"
) -> LoggedDaemon:
    log_path = fw.tmp / f"{name}.{len(fw.daemons)}.log"
    verbose = "-vv" if os.environ.get("EC2NET_FAULT_DEBUG") else "-v"
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            fw.argv(verbose, "watch"), env={**fw.env(), **(env or {})},
            stdout=subprocess.DEVNULL, stderr=log, text=True,
        )  # fmt: skip
    fw.daemons.append(proc)
    return LoggedDaemon(proc, log_path)


def stop_logged_daemon(fw: FaultWorld, daemon: LoggedDaemon) -> float:
    took = fw.stop_daemon(daemon.proc)
    fw.daemons.remove(daemon.proc)
    return took
