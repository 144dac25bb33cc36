"""``series list`` shows what is stored; ``series remove`` deletes a series and every row about
it. On SQLite and on PostgreSQL."""

from __future__ import annotations

import asyncio
import json

import pytest

from enrichctl.calendar import SessionCalendar
from enrichctl.domain import AssetClass, Series, Timeframe
from enrichctl.providers.demo import DemoProvider

from .fake_polygon_thread import fake_polygon, polygon_config
from .workspace import AS_OF, LAST_BAR, Workspace

TABLES_BY_SYMBOL = ("bars", "indicators", "quality_issues", "tasks", "jobs", "requests", "series")


@pytest.fixture
def stored(machine: Workspace) -> Workspace:
    """AAPL and MSFT (configured) and a mistyped ZZZZ, day and hour bars, as of 5 June 2024."""
    result = machine("run", "--provider", "demo", "--symbols", "AAPL,MSFT,ZZZZ", "-t", "1d,1h",
                     "--as-of", AS_OF, "--since", "2024-05-01")
    assert result.code == 0, result
    return machine


def _rows_of(ws: Workspace, symbol: str) -> dict[str, int]:
    return {t: ws.query(f"SELECT count(*) FROM {t} WHERE symbol = ?", (symbol,))[0][0] for t in TABLES_BY_SYMBOL}


def test_series_list_shows_every_stored_series(stored: Workspace) -> None:
    result = stored("series", "list", "--json")
    assert result.code == 0, result
    doc = json.loads(result.out)
    got = {(s["symbol"], s["timeframe"]): s for s in doc["series"]}
    assert set(got) == {(s, tf) for s in ("AAPL", "MSFT", "ZZZZ") for tf in ("1d", "1h")}
    aapl = got[("AAPL", "1d")]
    assert aapl["last_bar"] == LAST_BAR and aapl["first_bar"] == "2024-05-01T04:00:00Z"
    assert aapl["bars"] == len(stored.bars("AAPL", "1d"))
    assert aapl["provider"] == "demo" and aapl["synthetic"] is True
    assert aapl["quality_score"] is not None and isinstance(aapl["stale"], bool)
    assert got[("ZZZZ", "1d")]["configured"] is False and aapl["configured"] is True
    assert doc["bars"] == stored.query("SELECT count(*) FROM bars")[0][0]
    table = stored("series", "list", env={"COLUMNS": "80"})
    assert table.code == 0 and all(len(line) <= 80 for line in table.out.splitlines()), table
    assert "AAPL/1d" in table.out and "2024-06-03" in table.out and "…" not in table.out, table


def test_series_remove_needs_yes_then_removes_every_row_of_the_symbol(stored: Workspace) -> None:
    before = stored.dump()
    refused = stored("series", "remove", "ZZZZ")
    assert refused.code == 2 and "--yes" in refused.err and "ZZZZ" in refused.err, refused
    assert stored.dump() == before  # nothing changed without --yes
    assert all(n > 0 for t, n in _rows_of(stored, "ZZZZ").items() if t != "quality_issues")
    msft = stored.bars("MSFT", "1d")
    removed = stored("series", "remove", "ZZZZ", "--yes")
    assert removed.code == 0 and "removed ZZZZ" in removed.out, removed
    assert "configured universe" not in removed.err, removed
    assert _rows_of(stored, "ZZZZ") == dict.fromkeys(TABLES_BY_SYMBOL, 0)
    assert stored.bars("MSFT", "1d") == msft  # nothing else touched
    status = json.loads(stored("status", "--json").out)
    assert "ZZZZ" not in {s["symbol"] for s in status["processing_symbols"]}
    again = stored("series", "remove", "ZZZZ", "--yes")
    assert again.code == 1 and "nothing stored for ZZZZ" in again.err, again


def test_removing_one_timeframe_of_a_configured_symbol_says_it_is_still_configured(stored: Workspace) -> None:
    result = stored("series", "remove", "AAPL", "--timeframe", "1h", "--yes", "--json")
    assert result.code == 0, result
    doc = json.loads(result.out)
    assert doc["removed"] is True and doc["timeframes"] == ["1h"] and doc["still_configured"] is True
    assert "still in the configured universe" in result.err, result
    assert stored.bars("AAPL", "1h") == [] and len(stored.bars("AAPL", "1d")) > 0
    # The symbol keeps its job records while one of its series is stored.
    assert _rows_of(stored, "AAPL")["jobs"] == 1


def test_series_list_at_80_columns_keeps_the_synthetic_mark(machine: Workspace) -> None:
    """The provider column is dropped at 80 columns; which rows are synthetic must still show,
    and only those: AAPL from the demo provider, MSFT from (a fake) Polygon. (Before the mark,
    nothing in the narrow table told them apart.)"""
    demo = DemoProvider(SessionCalendar())
    with fake_polygon() as fake:
        asyncio.run(fake.hold_from(demo, Series("MSFT", AssetClass.STOCK, Timeframe.D1),
                                   1_714_521_600_000, 1_717_545_600_000))
        config = str(machine.write("polygon.toml", polygon_config(fake, symbols=("MSFT",))))
        real = machine("--config", config, "run", "--as-of", AS_OF, "--since", "2024-05-01")
    assert real.code == 0, real
    # Hour bars too: their times ("2024-05-01 14:00 UTC") leave no room for the provider column.
    synthetic = machine("run", "--provider", "demo", "--symbols", "AAPL", "-t", "1d,1h",
                        "--as-of", AS_OF, "--since", "2024-05-01")
    assert synthetic.code == 0, synthetic

    narrow = machine("series", "list", env={"COLUMNS": "80"})
    assert narrow.code == 0 and all(len(line) <= 80 for line in narrow.out.splitlines()), narrow
    header = next(line for line in narrow.out.splitlines() if line.startswith("┃"))
    assert "provider" not in header, "the narrow table drops the provider column"
    rows = {line.split()[1]: line for line in narrow.out.splitlines() if line.startswith("│")}
    assert set(rows) == {"AAPL/1d*", "AAPL/1h*", "MSFT/1d"}, narrow
    assert "* synthetic: the demo provider's data, not market data" in narrow.out, narrow
    wide = machine("series", "list", env={"COLUMNS": "200"})
    assert "demo (synthetic)" in wide.out and "polygon" in wide.out, wide
