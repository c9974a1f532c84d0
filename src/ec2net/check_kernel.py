"""`ec2net check`, the reading side: the ENIs ec2net manages, the kernel's answers to
check.py's questions, the neighbour and rp_filter state, and IMDS. Reads only."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from ec2net import check
from ec2net.backends.netlink import NetlinkBackend
from ec2net.engine import Engine
from ec2net.imds import token_problem
from ec2net.model import PRIO_VPC
from ec2net.state import Phase
from ec2net.targets import resolve

PROC_CONF = Path("/proc/sys/net/ipv4/conf")


def _kernel(engine: Engine) -> NetlinkBackend:
    kernel = getattr(engine.backend, "kernel", engine.backend)  # file backends read by it
    if not isinstance(kernel, NetlinkBackend):
        raise TypeError(f"check reads the kernel over netlink, not {kernel!r}")
    return kernel


def rp_filter(ifname: str, conf: Path = PROC_CONF) -> int:
    """The effective setting: the larger of `all` and the interface's own."""
    values = []
    for name in ("all", ifname):
        try:
            values.append(int((conf / name / "rp_filter").read_text()))
        except (OSError, ValueError):
            continue
    return max(values, default=0)


def _via(q: check.Question, a: check.Answer) -> str:
    return q.ifname if q.inbound else a.oif


def run(engine: Engine, ifname: Optional[str] = None, *, ask_imds: bool = True) -> check.Report:
    kernel = _kernel(engine)
    snap = kernel.snapshot()
    enis = []
    first_rule: dict[str, int] = {}
    for rec in engine.store.records():
        link = snap.by_mac().get(rec.mac)
        meta = rec.eni()
        if link is None or meta is None or rec.phase == Phase.FOREIGN.value:
            continue
        if ifname is not None and link.name != ifname:
            continue
        plan = resolve(engine.want(meta, rec), snap).plan
        planned = plan.mtu if plan is not None else None
        enis.append(check.Eni(link.name, link.index, rec.mac, meta, link.mtu, planned))
        first_rule[link.name] = PRIO_VPC + meta.index
    primary = engine.primary_mac()
    not_others = {e.ifname for e in enis} | {ln.name for ln in snap.links if ln.mac == primary}
    others = [r for r in kernel.main_routes() if r.ifname not in not_others]
    questions = check.questions(enis, others)
    failed = kernel.failed_neighbours()
    gateways = {
        e.ifname: e.eni.subnet4.network_address + 1
        for e in enis
        if e.eni.subnet4 is not None and (e.ifname, e.eni.subnet4.network_address + 1) in failed
    }
    paths = [
        # IPv4 through an ENI whose gateway does not answer ARP gets nowhere
        check.Path(q, a, blocked=q.source.version == 4 and _via(q, a) in gateways)
        for q, a in zip(questions, kernel.lookup(questions))
    ]
    rp = {e.ifname: rp_filter(e.ifname) for e in enis}
    problems = check.judge(paths, first_rule, kernel.other_rules(), rp)
    problems += check.link_problems(enis, gateways)
    if ask_imds:
        why = token_problem(engine.imds)
        if why is not None:
            problems.append(check.Problem("", check.Kind.IMDS, f"imds: {why}"))
    return check.Report(paths, problems)
