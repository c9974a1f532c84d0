"""Guest side of the system-test agent: JSON lines over a virtio-serial port.

Copied into the image and started by systemd at boot (the cloud kernel has no 9p, so
this port is the only channel between host and guest besides the console). Stdlib only,
one thread per request so a slow command does not block a ``wait_link`` poll.

Requests (one JSON object per line, ``id`` echoed back in the reply):
  {"op": "ping"}                                   -> {"pong": true, "boot_id": ...}
  {"op": "run", "argv": [...], "timeout": s, "input": str, "env": {...}}
                                                   -> {"rc", "stdout", "stderr", "timed_out"}
  {"op": "write", "path", "data_b64", "mode"}      -> {"ok": true}   (atomic, makes parents)
  {"op": "read", "path"}                           -> {"data_b64": ...}
  {"op": "wait_link", "mac", "present", "ifname", "timeout"}
                                                   -> {"ifname": ..., "found": bool}
Failures answer {"id", "error": "..."}. Commands are argv lists, never shell strings.
"""

from __future__ import annotations

import base64
import json
import os
import select
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any, Optional

SYS_NET = "/sys/class/net"


class Port:
    """The virtio-serial character device.

    While no host client is connected, read() returns EOF at once and write() blocks;
    so the reader just waits and retries instead of treating EOF as the end.
    """

    def __init__(self, path: str) -> None:
        self.fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
        self.write_lock = threading.Lock()

    def read_chunk(self) -> bytes:
        while True:
            ready, _, _ = select.select([self.fd], [], [], 1.0)
            if not ready:
                continue
            data = os.read(self.fd, 65536)
            if data:
                return data
            time.sleep(0.1)  # host not connected

    def send(self, message: dict[str, Any]) -> None:
        data = (json.dumps(message) + "\n").encode()
        with self.write_lock:
            view = memoryview(data)
            while view:
                n = os.write(self.fd, view)
                view = view[n:]


def _find_link(mac: str) -> Optional[str]:
    try:
        names = os.listdir(SYS_NET)
    except OSError:
        return None
    for name in names:
        try:
            with open(os.path.join(SYS_NET, name, "address")) as fh:
                if fh.read().strip().lower() == mac:
                    return name
        except OSError:
            continue  # renamed or removed while we looked
    return None


def op_run(req: dict[str, Any]) -> dict[str, Any]:
    argv = req["argv"]
    if not isinstance(argv, list) or not argv or not all(isinstance(a, str) for a in argv):
        raise ValueError("argv must be a non-empty list of strings")
    env = dict(os.environ)
    env.update(req.get("env") or {})
    data = req.get("input")
    started = time.monotonic()
    try:
        proc = subprocess.run(
            argv,
            check=False,
            input=data.encode() if isinstance(data, str) else None,
            stdin=None if isinstance(data, str) else subprocess.DEVNULL,
            capture_output=True,
            timeout=float(req.get("timeout", 60)),
            env=env,
            cwd=req.get("cwd") or "/",
        )
    except subprocess.TimeoutExpired as exc:
        return {
            "rc": -9,
            "stdout": (exc.stdout or b"").decode(errors="replace"),
            "stderr": (exc.stderr or b"").decode(errors="replace"),
            "timed_out": True,
            "duration": time.monotonic() - started,
        }
    except OSError as exc:
        return {"rc": 127, "stdout": "", "stderr": str(exc), "timed_out": False, "duration": 0.0}
    return {
        "rc": proc.returncode,
        "stdout": proc.stdout.decode(errors="replace"),
        "stderr": proc.stderr.decode(errors="replace"),
        "timed_out": False,
        "duration": time.monotonic() - started,
    }


def op_write(req: dict[str, Any]) -> dict[str, Any]:
    path = str(req["path"])
    data = base64.b64decode(req["data_b64"])
    directory = os.path.dirname(path) or "/"
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".systest-", dir=directory)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.chmod(tmp, int(req.get("mode", 0o644)))
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return {"ok": True}


def op_read(req: dict[str, Any]) -> dict[str, Any]:
    with open(str(req["path"]), "rb") as fh:
        return {"data_b64": base64.b64encode(fh.read()).decode()}


def op_wait_link(req: dict[str, Any]) -> dict[str, Any]:
    # Polling sysfs in-process costs no fork; under TCG a process per poll would be
    # slower than the event being measured.
    mac = str(req["mac"]).lower()
    want = bool(req.get("present", True))
    ifname = req.get("ifname")  # optionally wait for the final (udev-renamed) name
    deadline = time.monotonic() + float(req.get("timeout", 30))
    interval = float(req.get("interval", 0.005))
    while True:
        name = _find_link(mac)
        present = name is not None and (ifname is None or name == ifname)
        if present == want:
            return {"found": True, "ifname": name}
        if time.monotonic() >= deadline:
            return {"found": False, "ifname": name}
        time.sleep(interval)


def op_ping(req: dict[str, Any]) -> dict[str, Any]:
    with open("/proc/sys/kernel/random/boot_id") as fh:
        boot_id = fh.read().strip()
    return {"pong": True, "boot_id": boot_id, "pid": os.getpid()}


OPS = {
    "ping": op_ping,
    "run": op_run,
    "write": op_write,
    "read": op_read,
    "wait_link": op_wait_link,
}


def handle(port: Port, req: dict[str, Any]) -> None:
    reply: dict[str, Any] = {"id": req.get("id")}
    try:
        op = OPS.get(str(req.get("op", "run")))
        if op is None:
            raise ValueError(f"unknown op {req.get('op')!r}")
        reply.update(op(req))
    except Exception as exc:
        reply["error"] = f"{type(exc).__name__}: {exc}"
    port.send(reply)


def serve(path: str) -> None:
    port = Port(path)
    # send() blocks until a host client connects: announce from a thread.
    hello = {"id": None, "event": "hello", "pid": os.getpid()}
    threading.Thread(target=port.send, args=(hello,), daemon=True).start()
    buf = b""
    while True:
        buf += port.read_chunk()
        while b"\n" in buf:
            line, buf = buf.split(b"\n", 1)
            if not line.strip():
                continue
            try:
                req = json.loads(line)
            except ValueError:
                port.send({"id": None, "error": "bad json"})
                continue
            if not isinstance(req, dict):
                port.send({"id": None, "error": "request must be an object"})
                continue
            threading.Thread(target=handle, args=(port, req), daemon=True).start()


if __name__ == "__main__":
    serve(sys.argv[1] if len(sys.argv) > 1 else "/dev/virtio-ports/systest.agent")
