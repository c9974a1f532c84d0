"""The alert rules shipped in docs/ec2net.rules.yml, tested with promtool against series
made from what the daemon really writes: its textfile is read while an ENI is fine and
again once it is broken, and each sample becomes a series of promtool's unit tests (the
same names and labels; values held, or run as the scenario needs: a refresh every
minute or stuck, counters rising). A rule that names a metric or label ec2net does not
write fires for no scenario and fails its test.

promtool comes from Debian's prometheus package, unpacked by tools/setup.sh."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.world.conftest import Instance
from tests.world.test_metrics import Samples, of, parse
from tests.world.test_watch import running_daemon, wait_for

pytestmark = pytest.mark.world

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "docs" / "ec2net.rules.yml"
PROMTOOL = ROOT / ".cache" / "prometheus" / "usr" / "bin" / "promtool"
SECOND = "02:00:0a:00:02:14"
MINUTES = 40  # series length; alerts are evaluated at 30 minutes
ALERTS = (
    "Ec2netRefreshStale",
    "Ec2netEniNotOk",
    "Ec2netCheckProblems",
    "Ec2netImdsFailuresRising",
    "Ec2netTextfileStale",
)
TEXTFILE = "/var/lib/node_exporter/textfile/ec2net.prom"


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    assert PROMTOOL.exists(), f"{PROMTOOL} missing: run tools/setup.sh"
    return subprocess.run([str(PROMTOOL), *args], capture_output=True, text=True, check=False)


def selector(name: str, labels: frozenset[tuple[str, str]]) -> str:
    inner = ",".join(f'{k}="{v}"' for k, v in sorted(labels))
    return f"{name}{{{inner}}}"


def series(samples: Samples, *, refreshing: bool, imds_failing: bool) -> list[dict[str, str]]:
    """Every sample held for MINUTES; time-like ones as the scenario has them."""
    out = []
    for (name, labels), value in sorted(samples.items(), key=str):
        if name == "ec2net_last_refresh_success_timestamp_seconds":
            values = f"0+60x{MINUTES}" if refreshing else f"0x{MINUTES}"
        elif (
            name == "ec2net_imds_requests_total"
            and imds_failing
            and (dict(labels)["outcome"] == "no_answer")
        ):
            values = f"0+30x{MINUTES}"  # 0.5 a second
        else:
            values = f"{value:g}x{MINUTES}"
        out.append({"series": selector(name, labels), "values": values})
    # node_exporter's own gauge for the file: rewritten every minute, or no more
    mtime = f"0+60x{MINUTES}" if refreshing else f"0x{MINUTES}"
    out.append({"series": f'node_textfile_mtime_seconds{{file="{TEXTFILE}"}}', "values": mtime})
    return out


def expected(samples: Samples) -> dict[str, list[dict[str, Any]]]:
    """The alerts a broken file must raise, with their labels and annotations."""
    out: dict[str, list[dict[str, Any]]] = {
        "Ec2netRefreshStale": [],
        "Ec2netEniNotOk": [],
        "Ec2netCheckProblems": [],
        "Ec2netImdsFailuresRising": [
            {
                "exp_labels": {"severity": "warning"},
                "exp_annotations": {
                    "summary": "ec2net's IMDS requests fail, more than one every 20 s",
                    "description": "IMDS throttled, disabled or unreachable from the instance.",
                },
            }
        ],
        "Ec2netTextfileStale": [
            {
                "exp_labels": {"severity": "warning", "file": TEXTFILE},
                "exp_annotations": {
                    "summary": "ec2net's metrics textfile is over 15 minutes old",
                    "description": "`systemctl status ec2net-watch` on the instance.",
                },
            }
        ],
    }
    for labels in of(samples, "ec2net_last_refresh_success_timestamp_seconds"):
        out["Ec2netRefreshStale"].append(
            {
                "exp_labels": {**dict(labels), "severity": "warning"},
                "exp_annotations": {
                    "summary": "ec2net has not refreshed from IMDS for over ten minutes",
                    "description": "`journalctl -u ec2net-watch` says why (IMDS unreachable, "
                    "a lock).",
                },
            }
        )
    for labels, value in of(samples, "ec2net_eni_state").items():
        got = dict(labels)
        if value == 1 and got["state"] != "ok":
            out["Ec2netEniNotOk"].append(
                {
                    "exp_labels": {**got, "severity": "warning"},
                    "exp_annotations": {
                        "summary": f"ENI {got['ifname']} ({got['eni_id']}) is {got['state']}",
                        "description": "`ec2net status` and `ec2net check "
                        f"{got['ifname']}` on the instance.",
                    },
                }
            )
    for labels, value in of(samples, "ec2net_check_problems").items():
        got = dict(labels)
        if value > 0:
            out["Ec2netCheckProblems"].append(
                {
                    "exp_labels": {**got, "severity": "critical"},
                    "exp_annotations": {
                        "summary": f"ec2net check finds {got['kind']} on {got['ifname']}",
                        "description": f"`ec2net check {got['ifname']}` names each one and why.",
                    },
                }
            )
    return out


def test_the_rules_load() -> None:
    proc = promtool("check", "rules", str(RULES))
    assert proc.returncode == 0 and "SUCCESS: 5 rules found" in proc.stdout, proc.stdout


@pytest.fixture
def textfile(instance: Instance, tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "textfile" / "ec2net.prom"
    with instance.config.open("a") as f:
        f.write(f'[metrics]\ntextfile = "{path}"\n')
    yield path


def test_alerts_from_what_the_daemon_writes(
    instance: Instance, textfile: Path, tmp_path: Path
) -> None:
    f = instance.fabric

    def read() -> Samples:
        return parse(textfile.read_text()) if textfile.exists() else {}

    with running_daemon(instance, interval=1) as d:
        eni = f.attach(SECOND, "eth1")
        assert wait_for(
            lambda: (
                bool(of(read(), "ec2net_eni_state", mac=SECOND, state="ok"))
                and bool(of(read(), "ec2net_check_problems", ifname="eth1"))
                and bool(of(read(), "ec2net_last_refresh_success_timestamp_seconds"))
            ),
            20,
        ), d.output()
        healthy = read()
        # broken two ways: another program's rule sends a reply of eth1's out by the
        # primary (check: wrong paths), and another ENI arrives with another tool's rule
        # in its table already (state foreign; the daemon repairs drift, not that)
        instance.ip("route", "add", "default", "via", "10.0.1.1", "dev", "eth0", "table", "77")
        instance.ip("rule", "add", "pref", "100", "from", str(eni.ipv4s[0]), "lookup", "77")
        other = f.new_eni("subnet-b", n_ipv4=1, n_ipv6=0)
        table = str(10000 + other.device_number)
        instance.ip("rule", "add", "pref", table, "from", str(other.ipv4s[0]), "lookup", table,
                    "proto", "static")  # fmt: skip
        f.attach(other, "eth2")

        def broke() -> bool:
            got = read()
            problems = of(got, "ec2net_check_problems", ifname="eth1", kind="wrong_path")
            foreign = of(got, "ec2net_eni_state", mac=other.mac, state="foreign")
            return sum(problems.values()) > 0 and list(foreign.values()) == [1.0]

        assert wait_for(broke, 20), d.output()
        broken = read()
    tests = [
        {  # all fine: refreshing, the file fresh, no failures: nothing fires
            "interval": "1m",
            "input_series": series(healthy, refreshing=True, imds_failing=False),
            "alert_rule_test": [
                {"eval_time": "30m", "alertname": a, "exp_alerts": []} for a in ALERTS
            ],
        },
        {  # broken, stuck and failing: each alert, with the labels the daemon wrote
            "interval": "1m",
            "input_series": series(broken, refreshing=False, imds_failing=True),
            "alert_rule_test": [
                {"eval_time": "30m", "alertname": a, "exp_alerts": e}
                for a, e in expected(broken).items()
            ],
        },
    ]
    assert expected(broken)["Ec2netCheckProblems"] and expected(broken)["Ec2netEniNotOk"]
    spec = tmp_path / "alerts.test.yml"  # JSON is YAML
    spec.write_text(json.dumps({"rule_files": [str(RULES)], "tests": tests}, indent=1))
    proc = promtool("test", "rules", str(spec))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS" in proc.stdout
