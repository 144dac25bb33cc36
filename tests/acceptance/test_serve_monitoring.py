"""The monitoring bundle against the installed CLI: every metric name ``monitoring/alerts.yml``
and ``monitoring/grafana-dashboard.json`` use is in what ``enrichctl serve`` answers on
``/metrics`` over HTTP and in the textfile ``enrichctl run`` writes for node_exporter, so a
renamed metric cannot silently disable an alert or blank a panel; the textfile is written after
a failed run too; and ``/health`` under ``serve`` judges intraday staleness against the schedule.
"""

from __future__ import annotations

import json
import socket
from pathlib import Path

from integration.monitoring_names import exposed_names, used_names
from prometheus_client.parser import text_string_to_metric_families

from .served import API, http, serve
from .workspace import AS_OF, SINCE, Workspace


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def _textfile_config(ws: Workspace, textfile: Path, before: str = "") -> str:
    """A config file writing the textfile; ``before``: top-level keys and tables to put first."""
    return str(ws.write("monitored.toml", f'{before}[metrics]\ntextfile_path = "{textfile}"\n'))


def test_every_metric_the_rules_and_the_dashboard_use_is_served_and_in_the_textfile(
    machine: Workspace,
) -> None:
    textfile = machine.root / "enrichctl.prom"
    config = _textfile_config(machine, textfile)
    demo = ("--config", config, "run", "--provider", "demo", "--as-of", AS_OF)
    assert machine(*demo, "--symbols", "AAPL,MSFT", "--since", SINCE).code == 0
    # The pause metrics exist only while paused; a timer run while paused rewrites the textfile.
    assert machine("--config", config, "pause", "--reason", "maintenance").code == 0
    skipped = machine(*demo, "--trigger", "timer")
    assert skipped.code == 0, skipped

    with serve(machine, before=("--config", config)) as served:
        status, body = http(served.port, "GET", "/metrics")
    assert status == 200 and "Traceback" not in served.output[0], served.output
    live = body.decode()
    written = textfile.read_text()

    used = used_names()
    assert len(used["alerts.yml"]) >= 10 and len(used["grafana-dashboard.json"]) >= 15, used
    for where, text in (("/metrics", live), ("the textfile", written)):
        exposed = exposed_names(text)
        for file, names in used.items():
            assert names - exposed == set(), f"{file} uses metrics {where} does not have"
    assert samples(live)[("enrichctl_scheduler_paused", ())] == 1
    assert samples(written)[("enrichctl_scheduler_paused", ())] == 1


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_the_textfile_is_written_after_a_failed_run(machine: Workspace) -> None:
    """A run that fails (the provider unreachable, exit 75) still leaves the textfile that makes
    EnrichctlRunFailed fire; the earlier success stays visible beside it."""
    textfile = machine.root / "enrichctl.prom"
    config = _textfile_config(machine, textfile, (
        'universe = [{ symbol = "AAPL" }]\n'
        f'[polygon]\nbase_url = "http://127.0.0.1:{_closed_port()}"\napi_key = "k-textfile"\n'
        "requests_per_minute = 0\n"
    ))
    ok = machine("--config", config, "run", "--provider", "demo", "--as-of", AS_OF, "--since", SINCE)
    assert ok.code == 0, ok
    before = samples(textfile.read_text())
    assert before[("enrichctl_runs", (("status", "succeeded"),))] == 1

    failed = machine("--config", config, "run", "--provider", "polygon", "--as-of", AS_OF)
    assert failed.code == 75, failed
    after = samples(textfile.read_text())
    assert after[("enrichctl_runs", (("status", "failed"),))] == 1
    assert after[("enrichctl_runs", (("status", "succeeded"),))] == 1
    assert after[("enrichctl_last_run_finished_timestamp_seconds", (("status", "failed"),))] > 0
    assert after[("enrichctl_last_successful_run_timestamp_seconds", ())] == (
        before[("enrichctl_last_successful_run_timestamp_seconds", ())])
    assert sorted(p.name for p in textfile.parent.iterdir() if p.name.endswith(".tmp")) == []


INTRADAY = """\
provider = "demo"
universe = [{ symbol = "AAPL" }]
timeframes = ["1d", "1h"]
[schedule]
on_calendar = "*-*-* 01:30:00 UTC"
"""


def test_health_under_serve_stays_200_for_an_afternoon_fetch_until_the_next_scheduled_run(
    machine: Workspace,
) -> None:
    """The README's promise that ``/health`` and ``status --check`` use one rule, checked on the
    served endpoint. ``serve --as-of`` fixes the instant, as ``run --as-of`` and ``status --as-of``
    do, so the verdict does not depend on when the test runs."""
    config = str(machine.write("daily.toml", INTRADAY))
    # Tuesday 4 June 2024, 12:00 in New York: the afternoon's hourly bars are still to come.
    run = machine("--config", config, "run", "--as-of", "2024-06-04T16:00", "--since", "2024-05-20")
    assert run.code == 0, run

    verdicts = {}
    for at in ("2024-06-04T21:00", "2024-06-05T03:00"):
        with serve(machine, "--as-of", at, before=("--config", config)) as served:
            status, body = http(served.port, "GET", f"{API}/dashboard/health")
            overview = json.loads(http(served.port, "GET", f"{API}/dashboard/overview")[1])
        assert "Traceback" not in served.output[0], served.output
        check = machine("--config", config, "status", "--check", "--json", "--as-of", at)
        verdicts[at] = (status, json.loads(body), overview["scheduler"]["staleness_reference"],
                        check.code, json.loads(check.out)["health"])

    # Evening: newer hourly bars exist, but no scheduled run was due since the fetch.
    status, health, reference, code, checked = verdicts["2024-06-04T21:00"]
    assert status == 200 and code == 0, verdicts
    assert health["status"] == "healthy" and health["reasons"] == [], health
    assert reference == "2024-06-04T01:30:00Z"
    assert health == checked, "/health and status --check judge alike"

    # After the 01:30 run (and its grace) the afternoon's bars should be there: 503, saying why.
    status, health, reference, code, checked = verdicts["2024-06-05T03:00"]
    assert status == 503 and code == 3, verdicts
    assert [(r["kind"], r["symbol"], r["timeframe"]) for r in health["reasons"]] == [
        ("stale", "AAPL", "1h")], health
    assert reference == "2024-06-05T01:30:00Z"
    assert health == checked
