"""The alert rules in ``monitoring/`` pass ``promtool check rules`` and their ``promtool test
rules`` unit tests, and every alert has a test in which it fires.

promtool comes with Debian's ``prometheus`` package (``.ci/run`` installs it). Without it the
test is skipped with the reason, except under ``CI=true``, where that is a failure.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import yaml
from needs import program

MONITORING = Path(__file__).resolve().parents[2] / "monitoring"


@pytest.fixture
def promtool() -> str:
    return program("promtool", install="apt-get install prometheus")


def _promtool(promtool: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([promtool, *args], cwd=MONITORING, capture_output=True, text=True,
                          timeout=120, check=False)


def test_the_alert_rules_are_valid_and_pass_their_unit_tests(promtool: str) -> None:
    checked = _promtool(promtool, "check", "rules", "alerts.yml")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    tested = _promtool(promtool, "test", "rules", "alerts.test.yml")
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "SUCCESS" in tested.stdout + tested.stderr


def test_every_alert_has_a_unit_test_where_it_fires_and_one_where_it_does_not() -> None:
    rules = yaml.safe_load((MONITORING / "alerts.yml").read_text())
    alerts = {r["alert"] for group in rules["groups"] for r in group["rules"] if "alert" in r}
    tests = yaml.safe_load((MONITORING / "alerts.test.yml").read_text())["tests"]
    checks = [c for t in tests for c in t.get("alert_rule_test", [])]
    fires = {c["alertname"] for c in checks if c.get("exp_alerts")}
    quiet = {c["alertname"] for c in checks if not c.get("exp_alerts")}
    assert alerts >= {"EnrichctlRunFailed", "EnrichctlNoSuccessfulRun", "EnrichctlSeriesStale",
                      "EnrichctlSeriesLowQuality", "EnrichctlCircuitBreakerOpen",
                      "EnrichctlQuotaRefused", "EnrichctlPausedTooLong"}
    assert alerts - fires == set(), "alerts no test shows firing"
    assert alerts - quiet == set(), "alerts no test shows quiet"


def test_the_grafana_dashboard_is_json_with_a_query_in_every_panel() -> None:
    dashboard = json.loads((MONITORING / "grafana-dashboard.json").read_text())
    assert dashboard["uid"] == "enrichctl" and dashboard["panels"]
    for panel in dashboard["panels"]:
        exprs = [t["expr"] for t in panel["targets"]]
        assert exprs and all("enrichctl_" in e for e in exprs), panel["title"]
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]

