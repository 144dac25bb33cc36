"""Weekly series: up to date means no provider request; gaps are checked on the exchange
calendar's weeks. On SQLite and on PostgreSQL."""

from __future__ import annotations

import json

from .workspace import AS_OF, Workspace

WEEKLY = ("run", "--provider", "demo", "--symbols", "AAPL", "--timeframes", "1w", "--as-of", AS_OF,
          "--since", "2024-01-01", "--json")


def test_an_up_to_date_weekly_series_costs_no_request_and_a_missing_week_is_a_gap(machine: Workspace) -> None:
    first = machine(*WEEKLY)
    assert first.code == 0, first
    weeks = machine.bars("AAPL", "1w")
    assert json.loads(first.out)["bars_written"] == len(weeks) == 22
    # The last complete week as of Wednesday 5 June 2024 is the one of Monday 27 May.
    assert json.loads(machine("series", "list", "--json").out)["series"][0]["last_bar"] == "2024-05-27T04:00:00Z"

    again = machine(*WEEKLY)
    doc = json.loads(again.out)
    assert again.code == 0 and doc["requests"] == 0 and doc["bars_fetched"] == 0, again
    assert doc["plan"]["up_to_date"] == 1

    # A whole week is lost behind enrichctl's back: verify names it as a missing week.
    lost = weeks[10][2]
    machine.execute("DELETE FROM bars WHERE symbol = 'AAPL' AND timeframe = '1w' AND ts = ?", (lost,))
    verify = machine("verify", "AAPL", "--json")
    assert verify.code == 1, verify
    issues = [i for s in json.loads(verify.out)["series"] for i in s["issues"]]
    assert [i["kind"] for i in issues] == ["gap"], issues
    assert "1 week missing: 2024-03-11" in issues[0]["detail"], issues
