"""Prometheus metrics: the text exposition format of `ec2net status --format prometheus`
and of the daemon's textfile (`metrics.textfile`, for node_exporter's textfile collector).

Pure: status rows, the daemon's counters and IMDS outcome counts in, text out. The
format is written here rather than with prometheus_client: it is a few lines of text
(HELP, TYPE, one sample a line, three escapes), a one-shot command or a textfile needs
none of the library's registry, collectors or HTTP server, and the product stays
stdlib + pyroute2. The tests parse the output with prometheus_client's own parser.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Optional

from ec2net.check import Kind as CheckKind
from ec2net.check import Report
from ec2net.imds import RequestOutcome
from ec2net.status import State, StatusRow

PREFIX = "ec2net_"
# Upper bounds (seconds) of the converge duration histogram: a no-change refresh takes
# milliseconds, a fresh attachment waits for IMDS propagation (up to 30 s by default).
BUCKETS: tuple[float, ...] = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)

Labels = tuple[tuple[str, str], ...]


class Kind(str, enum.Enum):
    GAUGE = "gauge"
    COUNTER = "counter"
    HISTOGRAM = "histogram"


class JobKind(str, enum.Enum):
    """What a daemon job converges."""

    SCAN = "scan"  # every ENI, at start, after lost events and reloads
    UP = "up"  # a link that appeared or changed
    DOWN = "down"  # a link that went away
    REFRESH = "refresh"  # the periodic IMDS poll


@dataclass(frozen=True)
class JobStats:
    runs: int = 0
    failures: int = 0
    seconds: float = 0.0  # summed duration
    buckets: tuple[int, ...] = (0,) * len(BUCKETS)  # cumulative, as exposed

    def add(self, seconds: float, failed: bool) -> JobStats:
        return JobStats(
            runs=self.runs + 1,
            failures=self.failures + int(failed),
            seconds=self.seconds + seconds,
            buckets=tuple(n + int(seconds <= le) for n, le in zip(self.buckets, BUCKETS)),
        )


@dataclass(frozen=True)
class DaemonCounters:
    """What the daemon counts between starts; replaced (never changed) per job."""

    started: float  # wall clock
    jobs: Mapping[JobKind, JobStats] = field(default_factory=dict)
    last_refresh: Optional[float] = None  # wall clock of the last refresh that succeeded
    resyncs: int = 0  # link events lost (ENOBUFS), every link read again

    def record(self, kind: JobKind, seconds: float, failed: bool, now: float) -> DaemonCounters:
        jobs = dict(self.jobs)
        jobs[kind] = jobs.get(kind, JobStats()).add(seconds, failed)
        done = kind is JobKind.REFRESH and not failed
        return replace(self, jobs=jobs, last_refresh=now if done else self.last_refresh)

    def lost_events(self) -> DaemonCounters:
        return replace(self, resyncs=self.resyncs + 1)


@dataclass(frozen=True)
class Sample:
    labels: Labels
    value: float
    suffix: str = ""  # _bucket, _sum, _count of a histogram


@dataclass(frozen=True)
class Family:
    name: str  # without the prefix, and a counter's without _total
    kind: Kind
    help: str
    samples: tuple[Sample, ...]

    def render(self) -> str:
        name = PREFIX + self.name + ("_total" if self.kind is Kind.COUNTER else "")
        lines = [f"# HELP {name} {_escape_help(self.help)}", f"# TYPE {name} {self.kind.value}"]
        for s in self.samples:
            labels = ",".join(f'{k}="{_escape_label(v)}"' for k, v in s.labels)
            lines.append(
                f"{name}{s.suffix}{{{labels}}} {_number(s.value)}"
                if labels
                else f"{name}{s.suffix} {_number(s.value)}"
            )
        return "\n".join(lines)


def eni_families(rows: Sequence[StatusRow]) -> list[Family]:
    """Per managed ENI: its state as a one-hot gauge, addresses per family, rules,
    routes and the changes an `up` would still make (when it can be known)."""

    def per_row(extra: Labels, value: float, row: StatusRow) -> Sample:
        return Sample(_eni_labels(row) + extra, value)

    state = tuple(
        per_row((("state", s.value),), float(row.state is s), row) for row in rows for s in State
    )
    addresses = tuple(
        s
        for row in rows
        for s in (
            per_row((("family", "ipv4"),), len(row.ipv4s), row),
            per_row((("family", "ipv6"),), len(row.ipv6s), row),
        )
    )
    return [
        Family(
            "managed_enis", Kind.GAUGE, "ENIs ec2net has a record of.", (Sample((), len(rows)),)
        ),
        Family(
            "eni_state",
            Kind.GAUGE,
            "1 for the state the ENI is in (ok, drifted, gone, unfinished, foreign), else 0.",
            state,
        ),
        Family(
            "eni_addresses",
            Kind.GAUGE,
            "Addresses IMDS assigns to the ENI, by address family.",
            addresses,
        ),
        Family(
            "eni_rules",
            Kind.GAUGE,
            "Policy rules of the ENI's route table.",
            tuple(per_row((), row.rules, row) for row in rows),
        ),
        Family(
            "eni_routes",
            Kind.GAUGE,
            "Routes in the ENI's route table.",
            tuple(per_row((), row.routes, row) for row in rows),
        ),
        Family(
            "eni_pending_changes",
            Kind.GAUGE,
            "Changes an `ec2net up` would make (absent for an ENI that is gone).",
            tuple(per_row((), row.drift, row) for row in rows if row.drift >= 0),
        ),
    ]


def daemon_families(counters: DaemonCounters, imds: Mapping[RequestOutcome, int]) -> list[Family]:
    """The daemon's own: IMDS requests by outcome, jobs, failures and durations, the
    last successful refresh. Every outcome and job kind is present from the start, so
    rate() and increase() see the first one."""
    kinds = list(JobKind)
    jobs = {k: counters.jobs.get(k, JobStats()) for k in kinds}
    histogram: list[Sample] = []
    for k in kinds:
        label = (("kind", k.value),)
        histogram += [
            Sample((*label, ("le", _number(le))), n, "_bucket")
            for n, le in zip(jobs[k].buckets, BUCKETS)
        ]
        histogram += [
            Sample((*label, ("le", "+Inf")), jobs[k].runs, "_bucket"),
            Sample(label, jobs[k].seconds, "_sum"),
            Sample(label, jobs[k].runs, "_count"),
        ]
    last = () if counters.last_refresh is None else (Sample((), counters.last_refresh),)
    return [
        Family(
            "imds_requests",
            Kind.COUNTER,
            "HTTP exchanges with IMDS, by how they ended (ok and absent are answers; "
            "the others are failures).",
            tuple(Sample((("outcome", o.value),), imds.get(o, 0)) for o in RequestOutcome),
        ),
        Family(
            "jobs",
            Kind.COUNTER,
            "Converges the daemon ran, by kind.",
            tuple(Sample((("kind", k.value),), jobs[k].runs) for k in kinds),
        ),
        Family(
            "job_failures",
            Kind.COUNTER,
            "Daemon converges that ended in an error (the next event or refresh retries).",
            tuple(Sample((("kind", k.value),), jobs[k].failures) for k in kinds),
        ),
        Family(
            "converge_duration_seconds",
            Kind.HISTOGRAM,
            "How long daemon converges took, IMDS reads included.",
            tuple(histogram),
        ),
        Family(
            "link_event_resyncs",
            Kind.COUNTER,
            "Times link events were lost (the kernel dropped them while the daemon was "
            "busy: ENOBUFS) and every link was read again.",
            (Sample((), counters.resyncs),),
        ),
        Family(
            "last_refresh_success_timestamp_seconds",
            Kind.GAUGE,
            "When the last periodic refresh succeeded (Unix time).",
            last,
        ),
        Family(
            "daemon_start_time_seconds",
            Kind.GAUGE,
            "When the daemon started (Unix time).",
            (Sample((), counters.started),),
        ),
    ]


def check_family(report: Report) -> Family:
    """`ec2net check`'s problems, counted by interface and kind. Every kind is present
    for every checked interface (0 when fine), so an alert sees it go from 0 to more."""
    problems = report.problems
    checked = {p.question.ifname for p in report.paths} | {p.ifname for p in problems} | {""}
    counts = {(ifname, k.value): 0 for ifname in checked for k in CheckKind}
    for p in problems:
        counts[(p.ifname, p.kind.value)] += 1
    samples = tuple(
        Sample((("ifname", i), ("kind", k)), n) for (i, k), n in sorted(counts.items())
    )
    return Family(
        "check_problems",
        Kind.GAUGE,
        "What `ec2net check` finds wrong, by interface and kind (wrong_path, no_route, "
        'rp_filter, neighbour, mtu; imds with ifname "").',
        samples,
    )


def render(families: Iterable[Family]) -> str:
    return "".join(f.render() + "\n" for f in families)


def exposition(
    rows: Sequence[StatusRow],
    counters: Optional[DaemonCounters] = None,
    imds: Optional[Mapping[RequestOutcome, int]] = None,
    checked: Optional[Report] = None,
) -> str:
    """The whole text: the ENIs, the daemon's counters when there are any, and the
    check's problems when it ran."""
    families = eni_families(rows)
    if counters is not None:
        families += daemon_families(counters, imds or {})
    if checked is not None:
        families.append(check_family(checked))
    return render(families)


def _eni_labels(row: StatusRow) -> Labels:
    return (
        ("ifname", row.interface),
        ("mac", row.mac),
        ("eni_id", row.eni_id),
        ("table", str(row.table)),
        ("backend", row.backend),
    )


def _number(value: float) -> str:
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if math.isnan(value):
        return "NaN"
    if float(value).is_integer() and abs(value) < 2**53:
        return str(int(value))
    return repr(float(value))


def _escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")
