"""Inputs no EC2 sends: IMDS answers of 100,000 lines, several MiB, one very long line,
NUL or non-UTF-8 bytes, an ENI listing of thousands of keys and a MAC listing of
thousands of MACs; a configuration file of the same kinds.

Rules: each is refused (exit 2) with a message naming the key or the file, nothing is
changed, and memory stays bounded: the refused run's peak RSS (wait4's ru_maxrss, or
the daemon's VmHWM) is at most MEMORY_BOUND_KIB above a clean run of the same command
measured here. The MAC listing is no input of `up`, `scan` or `refresh` (they follow
the kernel's links): those converge as usual; `ec2net metadata` reads it, within
imds.MAX_BODY. Once IMDS answers right again the same command converges.
"""

from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass
from typing import Callable, Optional

import pytest

from ec2net.imds import MAX_BODY
from tests.fault.cells import CONVERGED, Cell, cli_args, prepare
from tests.fault.conftest import References
from tests.fault.endurance import run_peak, usage
from tests.fault.harness import SECOND, THIRD, FaultWorld, first_error, record, wait_for

pytestmark = [pytest.mark.world, pytest.mark.fault]

FULL = os.environ.get("EC2NET_FAULT_FULL") == "1"
# Peak RSS of a refused run over a clean one: the body is at most imds.MAX_BODY
# (256 KiB) and is never split into a list of lines when it is far too long, so a few
# copies of it are the most it can cost; unbounded reads of several MiB would not fit.
MEMORY_BOUND_KIB = 8 * 1024
MACS_KEY = "network/interfaces/macs/"


@dataclass(frozen=True)
class Hostile:
    name: str
    key: str  # the key (a suffix of its path) whose answer is replaced
    body: bytes
    refused: bool = True  # False: not an input of the verbs (the MAC listing)
    says: str = ""  # what the message says besides the key


def _lines(n: int) -> bytes:
    return b"10.0.2.40\n" + b"1\n" * (n - 1)


BIG = 4 << 20
CASES = [
    Hostile("100,000 lines", "local-ipv4s", _lines(100_000),
            says="100001 lines, more than the 100"),
    Hostile("4 MiB", "local-ipv4s", b"10.0.2.40\n" * (BIG // 10),
            says=f"answer longer than {MAX_BODY} bytes"),
    Hostile("one line of 200 KB", "local-ipv4s", b"10.0.2.40\n" + b"9" * 200_000),
    Hostile("100 KB of NUL bytes", "local-ipv4s", b"10.0.2.40\n" + b"\0" * 100_000,
            says="NUL"),
    Hostile("100 KB not UTF-8", "ipv6s", b"\xff\xfe" * 50_000, says="not UTF-8"),
    Hostile("ENI listing of 5,000 keys", "/", b"\n".join(b"key-%d" % i for i in range(5000)),
            says="entries"),
    Hostile("MAC listing of 5,000 MACs", MACS_KEY,
            b"\n".join(b"02:00:0b:%02x:%02x:%02x/" % (i >> 16, (i >> 8) & 255, i & 255)
                       for i in range(5000)), refused=False),
]  # fmt: skip
OPS = ("up", "refresh", "scan", "watch") if FULL else ("up", "refresh", "watch")
_clean_peak: dict[str, int] = {}


def _bodies(case: Hostile) -> dict[str, bytes]:
    if case.key == MACS_KEY:
        return {"meta-data/network/interfaces/macs/": case.body}
    return {f"macs/{mac}/{case.key.strip('/')}".rstrip("/"): case.body for mac in (SECOND, THIRD)}


def _inject(fw: FaultWorld, case: Hostile) -> Callable[[], None]:
    bodies = _bodies(case)
    if case.key == "/":  # the ENI's own listing: its path ends with the MAC
        bodies = {f"macs/{mac}/": case.body for mac in (SECOND, THIRD)}
    for inj in fw.servers_injected():
        inj.bodies.update(bodies)

    def recover() -> None:
        for inj in fw.servers_injected():
            inj.bodies.clear()

    return recover


def _clean(op: str, worlds: Callable[..., FaultWorld]) -> int:
    """Peak RSS (KiB) of a clean run of `op` here, measured once."""
    if op not in _clean_peak:
        fw = worlds(foreign=False)
        if op == "watch":
            fw.must("up", "eth1")

            def attach() -> None:
                fw.fabric.attach(THIRD, "eth2")

            peak, _ = _daemon_peak(fw, attach, 4.0)
        else:
            prepare(fw, op)
            run, peak = run_peak(fw, *cli_args(op))
            assert run.rc == 0, run.err
        _clean_peak[op] = peak
    return _clean_peak[op]


def _daemon_peak(fw: FaultWorld, after: Callable[[], None], settle: float) -> tuple[int, str]:
    """(the daemon's VmHWM once `after` ran and `settle` seconds passed, its log)."""
    daemon = fw.start_daemon()
    time.sleep(1.5)  # its initial scan
    after()
    time.sleep(settle)
    hwm = usage(daemon.pid).hwm_kib
    fw.stop_daemon(daemon)
    _, log = daemon.communicate(timeout=5)
    return hwm, log


def _cell(op: str, case: Hostile, fw: FaultWorld, refs: References, clean: int) -> Cell:
    cell = Cell("hostile", case.name, op)
    if case.key == "/" and op == "refresh":  # a refresh reads no listing (watch.py)
        case = Hostile(case.name, case.key, case.body, refused=False)
    prepare(fw, op)
    foreign = fw.foreign()
    before = fw.state()
    converged = refs[CONVERGED[op]]
    if op == "watch":
        recover: Optional[Callable[[], None]] = None

        def attach() -> None:
            nonlocal recover
            recover = _inject(fw, case)
            fw.fabric.attach(THIRD, "eth2")

        peak, log = _daemon_peak(fw, attach, 4.0)
        cell.rc = "running"
        warnings = [ln for ln in log.splitlines() if ln.startswith("WARNING")]
        cell.message = (warnings or [""])[0][:160]
        lines = warnings
        state = fw.state()
        assert recover is not None
        recover()
        want_during = converged if not case.refused else before
    else:
        recover = _inject(fw, case)
        run, peak = run_peak(fw, *cli_args(op))
        cell.rc = str(run.rc)
        cell.message = first_error(run.err)
        lines = run.err.splitlines()
        state = fw.state()
        recover()
        want_during = converged if not case.refused else before
        if run.rc != (2 if case.refused else 0):
            cell.fail(f"exit {run.rc}, want {2 if case.refused else 0}\n{run.err[-800:]}")
        if "Traceback" in run.err:
            cell.fail(f"traceback:\n{run.err[-1500:]}")
    grew = peak - clean
    cell.during = f"peak RSS {peak / 1024:.1f} MiB ({grew / 1024:+.1f} MiB over a clean run)"
    if grew > MEMORY_BOUND_KIB:
        cell.fail(f"peak RSS {grew} KiB over a clean run, bound {MEMORY_BOUND_KIB} KiB")
    if max((len(ln) for ln in lines), default=0) > 1000:
        cell.fail("a message quotes the whole value")
    judged = cell.judge("under the input", want_during, state)
    if case.refused:
        key = case.key.strip("/") or "macs/"
        if not any("metadata" in ln and key in ln and case.says in ln for ln in lines):
            cell.fail(f"no message names {key!r} ({case.says!r}): {cell.message!r}")
        cell.during = ("nothing changed, " if judged == "exact" else "changed, ") + cell.during
    if op == "watch":
        wait_for(lambda: fw.state() == converged, 1.0)
        daemon = fw.start_daemon()
        wait_for(lambda: fw.state() == converged, 12.0, every=0.3)
        fw.stop_daemon(daemon)
    else:
        again = fw.ec2net(*cli_args(op))
        if again.rc != 0:
            cell.fail(f"once IMDS is right: exit {again.rc}\n{again.err[-800:]}")
    cell.after = cell.judge("once IMDS is right", converged, fw.state())
    if fw.foreign() != foreign:
        cell.fail("foreign state changed")
    return cell


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_hostile_imds_answer(
    case: Hostile, worlds: Callable[..., FaultWorld], refs: References
) -> None:
    for op in OPS:
        refs[CONVERGED[op]]
    cells = []
    for op in OPS:
        clean = _clean(op, worlds)
        try:
            cells.append(_cell(op, case, worlds(), refs, clean))
        except AssertionError as err:
            c = Cell("hostile", case.name, op)
            c.fail(str(err))
            cells.append(c)
    for c in cells:
        record(c.row())
    problems = [p for c in cells for p in c.problems]
    assert problems == [], "\n".join(problems)


def test_metadata_of_a_mac_listing_past_max_body(worlds: Callable[..., FaultWorld]) -> None:
    fw = worlds(foreign=False)
    cell = Cell("hostile", "MAC listing of 50,000 MACs (900 KB)", "metadata")
    clean_run, clean = run_peak(fw, "metadata", MACS_KEY)
    body = b"\n".join(b"02:00:0b:%02x:%02x:%02x/" % (i >> 16, (i >> 8) & 255, i & 255)
                      for i in range(50_000))  # fmt: skip
    for inj in fw.servers_injected():
        inj.bodies["meta-data/network/interfaces/macs/"] = body
    run, peak = run_peak(fw, "metadata", MACS_KEY)
    cell.rc = str(run.rc)
    cell.message = first_error(run.err)
    cell.during = f"peak RSS {peak / 1024:.1f} MiB ({(peak - clean) / 1024:+.1f} MiB)"
    if clean_run.rc != 0 or run.rc != 2:
        cell.fail(f"exits {clean_run.rc}, {run.rc}; want 0, 2\n{run.err[-600:]}")
    if MACS_KEY not in run.err or f"longer than {MAX_BODY}" not in run.err:
        cell.fail(f"the message does not name the key and the limit: {cell.message!r}")
    if peak - clean > MEMORY_BOUND_KIB:
        cell.fail(f"peak RSS {peak - clean} KiB over a clean run")
    cell.after = "-"
    record(cell.row())
    assert cell.problems == [], "\n".join(cell.problems)


# --- the configuration file -----------------------------------------------------------

CONFIGS = [
    ("100,000 lines", b"# x\n" * 100_000, "larger than"),
    ("4 MiB", b"[refresh]\ninterval = 1\n" + b"#" * BIG + b"\n", "larger than"),
    ("one line of 200 KB", b'[imds]\nendpoints = ["' + b"a" * 200_000 + b'"]\n',
     "imds.endpoints"),
    ("a NUL byte", b"[refresh]\ninterval = 1\x00\n", "not valid TOML"),
    ("not UTF-8", b"[refresh]\ninterval = 1 # \xff\xfe\n", "not valid TOML"),
]  # fmt: skip


@pytest.mark.parametrize(("name", "body", "says"), CONFIGS, ids=[c[0] for c in CONFIGS])
def test_hostile_config_file(
    name: str, body: bytes, says: str, worlds: Callable[..., FaultWorld]
) -> None:
    fw = worlds(foreign=False)
    cell = Cell("hostile-config", name, "up eth1")
    _, clean = run_peak(fw, "status")
    good = fw.config.read_bytes()
    fw.config.write_bytes(body)
    before = fw.state()
    run, peak = run_peak(fw, "up", "eth1")
    cell.rc = str(run.rc)
    cell.message = first_error(run.err)
    grew = peak - clean
    cell.during = f"peak RSS {peak / 1024:.1f} MiB ({grew / 1024:+.1f} MiB over `status`)"
    if run.rc != 2:
        cell.fail(f"exit {run.rc}, want 2\n{run.err[-600:]}")
    if not any(str(fw.config) in ln and says in ln for ln in run.err.splitlines()):
        cell.fail(f"no message names the file and {says!r}: {cell.message!r}")
    if max(len(ln) for ln in run.err.splitlines() or [""]) > 1000:
        cell.fail("a message quotes the whole value")
    if grew > MEMORY_BOUND_KIB:
        cell.fail(f"peak RSS {grew} KiB over a clean run, bound {MEMORY_BOUND_KIB} KiB")
    if fw.state() != before:
        cell.fail("the kernel changed")
    # the daemon keeps its configuration when told to reload this one
    fw.config.write_bytes(good)
    daemon = fw.start_daemon()
    time.sleep(1.5)
    fw.config.write_bytes(body)
    daemon.send_signal(signal.SIGHUP)
    time.sleep(1.0)
    alive = daemon.poll() is None
    fw.stop_daemon(daemon)
    _, log = daemon.communicate(timeout=5)
    if not alive or "keeping the running configuration" not in log:
        cell.fail(f"the daemon did not keep its configuration:\n{log[-600:]}")
    cell.after = "refused; the daemon kept its configuration"
    record(cell.row())
    assert cell.problems == [], "\n".join(cell.problems)
