"""A --since (or history_days) before any data means "from the start of what the provider has"
(1970-01-01): never an overflow, never a request for a negative instant."""

from __future__ import annotations

import asyncio
import json
import time

import pytest

from enrichctl.calendar import SessionCalendar
from enrichctl.domain import AssetClass, Series, Timeframe
from enrichctl.providers.demo import DemoProvider

from .fake_polygon_thread import fake_polygon, polygon_config
from .workspace import AS_OF, Workspace, one_error

DEMO = 'provider = "demo"\n'


# --- dates: a --since before any data is the start of the provider's history -------------------

def _hold_hourly(fake) -> None:
    demo = DemoProvider(SessionCalendar())
    series = Series("AAPL", AssetClass.STOCK, Timeframe.H1)
    asyncio.run(fake.hold_from(demo, series, 1_717_027_200_000, 1_717_545_600_000))  # 30 May - 5 June 2024
    day = Series("AAPL", AssetClass.STOCK, Timeframe.D1)
    asyncio.run(fake.hold_from(demo, day, 1_714_521_600_000, 1_717_545_600_000))


def _instants(path: str) -> tuple[int, ...]:
    """The from/to of an aggregates path, as epoch ms (dates are New York days)."""
    parts = path.split("/")
    out = []
    for text in parts[-2:]:
        out.append(int(text) if text.lstrip("-").isdigit() else
                   int(time.mktime(time.strptime(text, "%Y-%m-%d")) * 1000))
    return tuple(out)


@pytest.mark.parametrize("since", ["0001-01-01", "1900-01-01", "1969-12-31"])
def test_a_since_before_1970_fetches_from_the_providers_start_without_a_negative_instant(
    workspace: Workspace, since: str
) -> None:
    with fake_polygon() as fake:
        _hold_hourly(fake)
        config = str(workspace.write("p.toml", polygon_config(fake, symbols=("AAPL",))))
        result = workspace("--config", config, "run", "--since", since, "-t", "1h,1d", "--as-of", AS_OF,
                           "--json", timeout=300)
        paths = fake.paths()
    assert result.code == 0, result
    tasks = json.loads(result.out)["plan"]["tasks"]
    assert {t["from"] for t in tasks} == {"1970-01-01T00:00:00Z"}, tasks
    assert paths and all(min(_instants(p)) >= 0 for p in paths), [p for p in paths if min(_instants(p)) < 0][:3]
    assert len(workspace.bars("AAPL", "1h")) > 0 and len(workspace.bars("AAPL", "1d")) > 0
    assert result.err_lines[0] == (f"--since {since} is before 1970-01-01: fetching from the start "
                                   "of the provider's history"), result
    assert "error" not in result.err, result


def test_an_until_before_1970_is_a_usage_error(workspace: Workspace) -> None:
    result = workspace("run", "--provider", "demo", "--symbols", "AAPL", "--since", "1900-01-01",
                       "--until", "1960-01-01")
    one_error(result, 2, "--until", "1970-01-01")


def test_a_history_longer_than_the_epoch_plans_from_1970(workspace: Workspace) -> None:
    config = str(workspace.write("long.toml", DEMO + 'history_days = { "1d" = 99999999, "1h" = 99999999 }\n'))
    result = workspace("--config", config, "run", "--symbols", "AAPL", "-t", "1d,1h", "--dry-run",
                       "--json", "--as-of", AS_OF)
    assert result.code == 0, result
    tasks = json.loads(result.out)["plan"]["tasks"]
    assert {t["from"] for t in tasks} == {"1970-01-01T00:00:00Z"}, tasks


