"""The Prometheus text of `ec2net status --format prometheus` and the daemon's
textfile, read back by prometheus_client's own parser; and the IMDS outcome counts
the daemon exposes."""

from __future__ import annotations

import socket

import pytest
from prometheus_client.parser import text_string_to_metric_families

from ec2net.cli import build_parser
from ec2net.errors import ImdsAbsent
from ec2net.imds import ImdsClient, RequestOutcome
from ec2net.metrics import BUCKETS, DaemonCounters, JobKind, JobStats, exposition
from ec2net.status import State, StatusRow
from ec2sim.imds import ImdsServer
from ec2sim.world import World

Key = tuple[str, tuple[tuple[str, str], ...]]


def row(ifname: str, mac: str, state: State, n4: int, n6: int, *, drift: int = 0) -> StatusRow:
    return StatusRow(
        interface=ifname,
        mac=mac,
        eni_id=f"eni-{mac.replace(':', '')}",
        table=10001,
        present=state is not State.GONE,
        ipv4s=tuple(f"10.0.2.{20 + i}" for i in range(n4)),
        ipv6s=tuple(f"2600:1f16:292:2::{20 + i}" for i in range(n6)),
        rules=6,
        routes=4,
        owned_addresses=n4 + n6,
        backend="netlink",
        drift=drift,
        state=state,
    )


def samples(text: str) -> dict[Key, float]:
    """Every sample by name and sorted labels; fails on text the parser rejects."""
    out: dict[Key, float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            key = (s.name, tuple(sorted(s.labels.items())))
            assert key not in out, f"duplicate sample {key}"
            out[key] = s.value
    return out


def eni(r: StatusRow, **extra: str) -> tuple[tuple[str, str], ...]:
    labels = {
        "ifname": r.interface,
        "mac": r.mac,
        "eni_id": r.eni_id,
        "table": str(r.table),
        "backend": r.backend,
        **extra,
    }
    return tuple(sorted(labels.items()))


ROWS = [
    row("eth1", "02:00:0a:00:02:14", State.OK, 3, 1),
    row("eth2", "02:00:0a:00:02:15", State.DRIFTED, 1, 0, drift=2),
    row("eth3", "02:00:0a:00:02:16", State.GONE, 2, 2, drift=-1),
]


def test_eni_state_is_one_hot_and_counts_match_the_rows() -> None:
    got = samples(exposition(ROWS))
    assert got[("ec2net_managed_enis", ())] == 3
    for r in ROWS:
        for s in State:
            assert got[("ec2net_eni_state", eni(r, state=s.value))] == (s is r.state)
        assert got[("ec2net_eni_addresses", eni(r, family="ipv4"))] == len(r.ipv4s)
        assert got[("ec2net_eni_addresses", eni(r, family="ipv6"))] == len(r.ipv6s)
        assert got[("ec2net_eni_rules", eni(r))] == 6
        assert got[("ec2net_eni_routes", eni(r))] == 4
    assert got[("ec2net_eni_pending_changes", eni(ROWS[1]))] == 2
    # a gone ENI's pending changes are unknown: no sample rather than a made-up -1
    assert ("ec2net_eni_pending_changes", eni(ROWS[2])) not in got
    # without daemon counters the text has no daemon metrics
    assert not any(name.startswith("ec2net_imds") for name, _ in got)


def test_no_enis_is_still_valid_text() -> None:
    got = samples(exposition([]))
    assert got == {("ec2net_managed_enis", ()): 0}


def test_daemon_counters_imds_outcomes_and_histogram() -> None:
    counters = DaemonCounters(started=1_700_000_000.0)
    counters = counters.record(JobKind.SCAN, 0.07, failed=False, now=1_700_000_001.0)
    counters = counters.record(JobKind.REFRESH, 0.02, failed=False, now=1_700_000_060.5)
    counters = counters.record(JobKind.REFRESH, 3.0, failed=True, now=1_700_000_120.0)
    counters = counters.record(JobKind.UP, 100.0, failed=False, now=1_700_000_130.0)
    imds = {RequestOutcome.OK: 11, RequestOutcome.ERROR: 2, RequestOutcome.NO_ANSWER: 1}
    got = samples(exposition(ROWS[:1], counters, imds))
    for outcome in RequestOutcome:
        assert got[("ec2net_imds_requests_total", (("outcome", outcome.value),))] == imds.get(
            outcome, 0
        )
    runs = {JobKind.SCAN: 1, JobKind.REFRESH: 2, JobKind.UP: 1, JobKind.DOWN: 0}
    for kind, n in runs.items():
        k = (("kind", kind.value),)
        assert got[("ec2net_jobs_total", k)] == n
        assert got[("ec2net_converge_duration_seconds_count", k)] == n
        assert got[("ec2net_job_failures_total", k)] == (kind is JobKind.REFRESH)
    refresh = (("kind", "refresh"),)
    assert got[("ec2net_converge_duration_seconds_sum", refresh)] == pytest.approx(3.02)

    def bucket(kind: str, le: str) -> float:
        return got[("ec2net_converge_duration_seconds_bucket", (("kind", kind), ("le", le)))]

    assert bucket("refresh", "0.05") == 1  # 0.02 s
    assert bucket("refresh", "2.5") == 1
    assert bucket("refresh", "5") == 2  # 3 s
    assert bucket("up", "60") == 0  # 100 s: only in +Inf
    assert bucket("up", "+Inf") == 1
    assert bucket("down", "+Inf") == 0
    # the failed refresh does not move the last success
    assert got[("ec2net_last_refresh_success_timestamp_seconds", ())] == 1_700_000_060.5
    assert got[("ec2net_daemon_start_time_seconds", ())] == 1_700_000_000.0


def test_no_successful_refresh_yet_has_no_timestamp() -> None:
    counters = DaemonCounters(started=5.0).record(JobKind.REFRESH, 1.0, failed=True, now=6.0)
    got = samples(exposition([], counters, {}))
    assert not [k for k in got if k[0] == "ec2net_last_refresh_success_timestamp_seconds"]
    assert got[("ec2net_job_failures_total", (("kind", "refresh"),))] == 1


def test_histogram_buckets_are_cumulative() -> None:
    stats = JobStats()
    for seconds in (0.01, 0.3, 0.3, 7.0):
        stats = stats.add(seconds, failed=False)
    assert list(stats.buckets) == sorted(stats.buckets)
    assert stats.buckets[BUCKETS.index(0.05)] == 1
    assert stats.buckets[BUCKETS.index(0.5)] == 3
    assert stats.buckets[-1] == 4


def test_label_values_are_escaped() -> None:
    odd = row('e"th\\1\n', "02:00:0a:00:02:14", State.OK, 1, 0)
    got = samples(exposition([odd]))
    assert got[("ec2net_eni_rules", eni(odd))] == 6


@pytest.mark.parametrize(
    ("status", "outcome"),
    [
        (200, RequestOutcome.OK),
        (404, RequestOutcome.ABSENT),
        (401, RequestOutcome.UNAUTHORIZED),
        (403, RequestOutcome.REFUSED),
        (400, RequestOutcome.REFUSED),
        (503, RequestOutcome.ERROR),
        (429, RequestOutcome.ERROR),
    ],
)
def test_outcome_of_status(status: int, outcome: RequestOutcome) -> None:
    assert RequestOutcome.of_status(status) is outcome


def test_client_counts_every_exchange_by_outcome(server: ImdsServer, world: World) -> None:
    with socket.socket() as s:  # a port nobody listens on: refused at once
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}"
    c = ImdsClient((dead, server.url), timeout=0.5, retries=3, sleep=lambda _: None)
    c.get("mac")  # dead: no answer; then the token and the value from the live one
    world.faults.error_503_remaining = 2
    c.get("instance-id")  # two 503s, then ok
    with pytest.raises(ImdsAbsent):
        c.get("no-such-key")
    server.revoke_tokens()
    c.get("mac")  # 401, a new token, ok
    assert c.stats.by_outcome == {
        RequestOutcome.NO_ANSWER: 1,
        RequestOutcome.OK: 5,  # token, mac, instance-id, token again, mac
        RequestOutcome.ERROR: 2,
        RequestOutcome.ABSENT: 1,
        RequestOutcome.UNAUTHORIZED: 1,
    }
    assert sum(c.stats.by_outcome.values()) == c.stats.total


@pytest.mark.parametrize(
    ("argv", "fmt"),
    [
        ([], "table"),
        (["--json"], "json"),
        (["--format", "json"], "json"),
        (["--format", "prometheus"], "prometheus"),
    ],
)
def test_status_formats(argv: list[str], fmt: str) -> None:
    assert build_parser().parse_args(["status", *argv]).format == fmt
