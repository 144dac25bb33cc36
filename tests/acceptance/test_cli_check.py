"""``status --check --json`` carries the verdict and every reason; staleness is judged against
the schedule, so an intraday series fetched in the afternoon stays green under the default daily
timer until the next scheduled run should have brought newer bars. On SQLite and PostgreSQL."""

from __future__ import annotations

import json

from .workspace import Workspace

CONFIG = """\
provider = "demo"
universe = [{ symbol = "AAPL" }]
timeframes = ["1d", "1h"]
[schedule]
on_calendar = "*-*-* 01:30:00 UTC"
"""


def _check(ws: Workspace, config, at: str):
    result = ws("--config", str(config), "status", "--check", "--json", "--as-of", at)
    return result, json.loads(result.out)


def test_an_afternoon_fetch_stays_green_until_the_next_scheduled_run_is_due(machine: Workspace) -> None:
    config = machine.write("daily.toml", CONFIG)
    # Tuesday 4 June 2024, 12:00 in New York: the session is half done.
    run = machine("--config", str(config), "run", "--as-of", "2024-06-04T16:00", "--since", "2024-05-20")
    assert run.code == 0, run

    # Five hours later the afternoon's bars exist, but no scheduled run was due since: healthy.
    evening, doc = _check(machine, config, "2024-06-04T21:00")
    assert evening.code == 0, evening
    assert doc["health"] == {"status": "healthy", "generated_at": "2024-06-04T21:00:00Z",
                             "issues": [], "reasons": []}

    # After the 01:30 run (and its grace) the afternoon's bars should be there: unhealthy, and
    # the JSON says exactly why.
    night, doc = _check(machine, config, "2024-06-05T03:00")
    assert night.code == 3, night
    health = doc["health"]
    assert health["status"] == "unhealthy"
    assert [(r["kind"], r["symbol"], r["timeframe"], r["severity"]) for r in health["reasons"]] == [
        ("stale", "AAPL", "1h", "unhealthy")]
    assert "2024-06-05T01:30:00Z" in health["issues"][0], health
    assert doc["scheduler"]["staleness_reference"] == "2024-06-05T01:30:00Z"

    # Without --check the document stays the plain overview.
    plain = machine("--config", str(config), "status", "--json", "--as-of", "2024-06-05T03:00")
    assert "health" not in json.loads(plain.out)


def test_check_json_lists_every_reason_with_its_severity(machine: Workspace) -> None:
    config = machine.write("two.toml", CONFIG.replace('[{ symbol = "AAPL" }]', '[{ symbol = "AAPL" }, { symbol = "MSFT" }]'))
    assert machine("--config", str(config), "run", "--symbols", "AAPL", "--as-of", "2024-06-04T16:00",
                   "--since", "2024-05-20").code == 0
    assert machine("--config", str(config), "pause", "--reason", "maintenance").code == 0
    result, doc = _check(machine, config, "2024-06-05T03:00")
    assert result.code == 3, result
    kinds = [(r["kind"], r["severity"]) for r in doc["health"]["reasons"]]
    assert kinds == [("stale", "unhealthy"), ("never_run", "degraded"), ("paused", "degraded")], kinds
    assert len(doc["health"]["issues"]) == 3
