"""Prometheus metrics in the simulated VPC: `ec2net status --format prometheus` and the
daemon's textfile, read by prometheus_client's parser and held against the world."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from ec2sim.world import Eni
from tests.world.conftest import Instance
from tests.world.test_watch import Daemon, daemon, wait_for

pytestmark = pytest.mark.world

SECOND = "02:00:0a:00:02:14"  # default world: subnet-b, 10.0.2.20-22, 2600:1f16:292:2::20
STATES = ("ok", "drifted", "gone", "unfinished")

__all__ = ["daemon"]  # the fixture, imported for the textfile test

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str) -> Samples:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def of(samples: Samples, name: str, **labels: str) -> dict[frozenset[tuple[str, str]], float]:
    """The samples of `name` whose labels include `labels`."""
    want = set(labels.items())
    return {k: v for (n, k), v in samples.items() if n == name and want <= k}


def one(samples: Samples, name: str, **labels: str) -> float:
    found = of(samples, name, **labels)
    assert len(found) == 1, (name, labels, found)
    return next(iter(found.values()))


def state_of(samples: Samples, mac: str) -> str:
    hot = [s for s in STATES if one(samples, "ec2net_eni_state", mac=mac, state=s) == 1]
    assert len(hot) == 1, hot  # one-hot
    return hot[0]


def ours(text: str) -> int:
    """Lines of `ip rule/route show` output that carry ec2net's protocol."""
    return len([line for line in text.splitlines() if "proto 236" in line])


def prometheus(instance: Instance) -> Samples:
    return parse(instance.ec2net("status", "--format", "prometheus").stdout)


def test_status_prometheus_matches_the_world(instance: Instance) -> None:
    f = instance.fabric
    eni: Eni = f.attach(SECOND, "eth1")
    instance.ec2net("up", "eth1")
    got = prometheus(instance)
    assert one(got, "ec2net_managed_enis") == 1
    labels = {"ifname": "eth1", "mac": SECOND, "eni_id": eni.eni_id, "table": "10001"}
    assert state_of(got, SECOND) == "ok"
    assert one(got, "ec2net_eni_state", state="ok", backend="netlink", **labels) == 1
    assert one(got, "ec2net_eni_addresses", mac=SECOND, family="ipv4") == len(eni.ipv4s) == 3
    assert one(got, "ec2net_eni_addresses", mac=SECOND, family="ipv6") == len(eni.ipv6s)
    assert len(eni.ipv6s) >= 1
    # our rules and routes are the only protocol-236 ones here (the primary is not managed)
    rules = sum(ours(instance.ip(f"-{fam}", "rule", "show")) for fam in "46")
    assert one(got, "ec2net_eni_rules", mac=SECOND) == rules > 0
    routes = sum(ours(instance.ip(f"-{fam}", "route", "show", "table", "10001")) for fam in "46")
    assert one(got, "ec2net_eni_routes", mac=SECOND) == routes > 0
    assert one(got, "ec2net_eni_pending_changes", mac=SECOND) == 0
    # the same rows as --json, which stays
    assert '"state": "ok"' in instance.ec2net("status", "--json").stdout

    # detached and nothing else run: the record is left, the link is gone
    f.detach(SECOND)
    got = prometheus(instance)
    assert state_of(got, SECOND) == "gone"
    assert one(got, "ec2net_eni_addresses", mac=SECOND, family="ipv4") == 3  # recorded
    assert of(got, "ec2net_eni_pending_changes", mac=SECOND) == {}  # unknown when gone
    # `scan` cleans up, and then nothing is managed
    instance.ec2net("scan")
    assert one(prometheus(instance), "ec2net_managed_enis") == 0


def test_status_prometheus_sees_drift(instance: Instance) -> None:
    instance.fabric.attach(SECOND, "eth1")
    instance.ec2net("up", "eth1")
    instance.ip("rule", "del", "pref", "25001", "from", "10.0.2.22/32")
    got = prometheus(instance)
    assert state_of(got, SECOND) == "drifted"
    assert one(got, "ec2net_eni_pending_changes", mac=SECOND) >= 1


@pytest.fixture
def textfile(instance: Instance, tmp_path: Path) -> Path:
    path = tmp_path / "textfile" / "ec2net.prom"
    with instance.config.open("a") as f:
        f.write(f'[metrics]\ntextfile = "{path}"\n')
    return path


@pytest.fixture
def metrics_daemon(textfile: Path, request: pytest.FixtureRequest) -> Iterator[Daemon]:
    yield request.getfixturevalue("daemon")  # started after the config names the file


def test_daemon_keeps_the_textfile(
    instance: Instance, textfile: Path, metrics_daemon: Daemon
) -> None:
    f = instance.fabric
    d = metrics_daemon

    def read() -> Samples:
        return parse(textfile.read_text()) if textfile.exists() else {}

    def configured() -> bool:
        got = read()
        return (
            bool(of(got, "ec2net_eni_state", mac=SECOND, state="ok"))
            and state_of(got, SECOND) == "ok"
        )

    eni = f.attach(SECOND, "eth1")
    assert wait_for(configured, 20), d.output()
    # refresh.interval is 1 s in the daemon fixture: a refresh succeeds soon
    assert wait_for(
        lambda: bool(of(read(), "ec2net_last_refresh_success_timestamp_seconds")), 10
    ), d.output()
    got = read()
    assert one(got, "ec2net_eni_addresses", mac=SECOND, family="ipv4") == len(eni.ipv4s)
    assert one(got, "ec2net_jobs_total", kind="scan") >= 1
    assert one(got, "ec2net_jobs_total", kind="up") >= 1
    assert one(got, "ec2net_jobs_total", kind="refresh") >= 1
    assert sum(of(got, "ec2net_job_failures_total").values()) == 0
    assert one(got, "ec2net_imds_requests_total", outcome="ok") > 0
    assert one(got, "ec2net_converge_duration_seconds_count", kind="up") == one(
        got, "ec2net_jobs_total", kind="up"
    )
    start = one(got, "ec2net_daemon_start_time_seconds")
    assert one(got, "ec2net_last_refresh_success_timestamp_seconds") >= start
    # `ec2net check` in the file: every kind there, 0 while every path is right...
    assert of(got, "ec2net_check_problems", ifname="eth1")
    assert sum(of(got, "ec2net_check_problems").values()) == 0
    # ...and counted once another program's rule sends a reply out by the primary
    instance.ip("route", "add", "default", "via", "10.0.1.1", "dev", "eth0", "table", "77")
    instance.ip("rule", "add", "pref", "100", "from", str(eni.ipv4s[0]), "lookup", "77")

    def wrong_paths() -> float:
        found = of(read(), "ec2net_check_problems", ifname="eth1", kind="wrong_path")
        return sum(found.values())

    assert wait_for(lambda: wrong_paths() >= 2, 10), d.output()  # gateway, outside, vpc
    instance.ip("rule", "del", "pref", "100")
    # detached: the daemon cleans up and the file says nothing is managed any more
    f.detach(SECOND)
    assert wait_for(lambda: of(read(), "ec2net_managed_enis") == {frozenset(): 0}, 10), d.output()
    assert one(read(), "ec2net_jobs_total", kind="down") >= 1
