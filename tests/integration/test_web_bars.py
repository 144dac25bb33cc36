"""``GET /api/v1/enrichment/series/{symbol}/{timeframe}/bars`` on SQLite and PostgreSQL.

The rows must be the stored bars and indicator values (read back through an independent driver),
pages must join up to the whole series, buckets must be the bars they merge, recorded issues in
the range must come with them, and bad requests must be 400/404 JSON.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from enrichctl import service
from enrichctl.domain import AssetClass, Series, Timeframe, ms_to_iso
from enrichctl.settings import Settings
from enrichctl.web import server as web

if TYPE_CHECKING:
    from conftest import Database  # the ``db`` fixture: one empty database per backend

API = "/api/v1/enrichment"
HOUR = Series("AAPL", AssetClass.STOCK, Timeframe.H1)
DAY = Series("AAPL", AssetClass.STOCK, Timeframe.D1)


@pytest.fixture
async def filled(db: Database) -> Settings:
    settings = db.settings(["AAPL"], timeframes=("1d", "1h"), history_days={"1d": 200, "1h": 20})
    report = await service.run(settings, service.RunOptions(symbols=["AAPL"]))
    assert report.status == "succeeded"
    return settings


@asynccontextmanager
async def serving(settings: Settings) -> AsyncIterator[TestClient]:
    async with TestClient(TestServer(web.app_create(settings))) as client:
        yield client


async def get_json(client: TestClient, path: str, status: int = 200, **params: str) -> Any:
    response = await client.get(path, params=params)
    assert response.status == status, await response.text()
    assert response.content_type == "application/json"
    return await response.json()


def stored_rows(db: Database, series: Series) -> list[dict[str, Any]]:
    """The stored bars and every indicator column, as export --format jsonl writes them."""
    bars = db.dicts("SELECT ts, open, high, low, close, volume, vwap, trades FROM bars "
                    "WHERE symbol = :s AND timeframe = :t ORDER BY ts", s=series.symbol,
                    t=series.timeframe.value)
    indicators = {r["ts"]: r for r in db.dicts(
        "SELECT * FROM indicators WHERE symbol = :s AND timeframe = :t", s=series.symbol,
        t=series.timeframe.value)}
    rows = []
    for bar in bars:
        extra = {k: v for k, v in indicators[bar["ts"]].items() if k not in ("symbol", "timeframe", "ts")}
        row = {"ts": bar["ts"], "time": ms_to_iso(bar["ts"]), **bar, **extra}
        row["volume"] = None if bar["volume"] is None else int(bar["volume"])
        rows.append(row)
    return rows


def bars_path(series: Series) -> str:
    return f"{API}/series/{series.symbol}/{series.timeframe.value}/bars"


async def test_the_rows_are_the_stored_bars_with_the_chosen_indicators(db: Database, filled: Settings) -> None:
    expected = stored_rows(db, DAY)
    async with serving(filled) as client:
        doc = await get_json(client, bars_path(DAY), indicators="sma_20,rsi_14")
    assert doc["total"] == doc["count"] == len(expected) > 100
    assert doc["bucket_ms"] is None and doc["next_start"] is None
    assert doc["indicators"] == ["sma_20", "rsi_14"] and "ema_12" in doc["available_indicators"]
    keep = ("ts", "time", "open", "high", "low", "close", "volume", "vwap", "trades", "sma_20", "rsi_14")
    assert doc["bars"] == [{k: row[k] for k in keep} for row in expected]
    assert doc["bars"][0]["sma_20"] is None and doc["bars"][-1]["sma_20"] is not None  # warm-up


async def test_pages_join_up_to_the_whole_range(db: Database, filled: Settings) -> None:
    expected = [row["ts"] for row in stored_rows(db, HOUR)]
    seen: list[int] = []
    async with serving(filled) as client:
        params = {"limit": "40"}
        while True:
            doc = await get_json(client, bars_path(HOUR), **params)
            assert doc["count"] <= 40
            seen += [bar["ts"] for bar in doc["bars"]]
            if doc["next_start"] is None:
                break
            assert doc["next_start"] == ms_to_iso(expected[len(seen)])
            params = {"limit": "40", "start": doc["next_start"]}
    assert seen == expected


async def test_a_long_range_comes_back_merged_into_buckets_of_its_bars(db: Database, filled: Settings) -> None:
    stored = stored_rows(db, HOUR)
    start = stored[10]["ts"]
    inside = [row for row in stored if row["ts"] >= start]
    async with serving(filled) as client:
        doc = await get_json(client, bars_path(HOUR), start=ms_to_iso(start), max_points="20",
                             indicators="ema_12")
    assert doc["total"] == len(inside) > 20
    bucket = doc["bucket_ms"]
    assert bucket is not None and bucket % Timeframe.H1.ms == 0
    assert 0 < doc["count"] <= 20
    groups: dict[int, list[dict[str, Any]]] = {}
    for row in inside:
        groups.setdefault((row["ts"] - start) // bucket, []).append(row)
    merged = [
        {"ts": g[0]["ts"], "open": g[0]["open"], "high": max(r["high"] for r in g),
         "low": min(r["low"] for r in g), "close": g[-1]["close"],
         "volume": sum(r["volume"] for r in g), "ema_12": g[-1]["ema_12"]}
        for _, g in sorted(groups.items())
    ]
    served = [{k: bar[k] for k in merged[0]} for bar in doc["bars"]]
    assert len(served) == len(merged)
    for got, want in zip(served, merged, strict=True):
        assert got["ts"] == want["ts"] and got["open"] == want["open"] and got["close"] == want["close"]
        assert got["high"] == want["high"] and got["low"] == want["low"]
        assert got["volume"] == want["volume"]
        assert got["ema_12"] == want["ema_12"]  # the indicator as of the bucket's last bar


async def test_start_and_end_dates_take_whole_days_and_issues_in_the_range_come_along(
    db: Database, filled: Settings
) -> None:
    stored = stored_rows(db, DAY)
    first_day = datetime.fromtimestamp(stored[50]["ts"] / 1000, UTC).date().isoformat()
    last_day = datetime.fromtimestamp(stored[60]["ts"] / 1000, UTC).date().isoformat()
    inside_at, outside_at = stored[55]["ts"], stored[5]["ts"]
    with db.engine.begin() as conn:  # issues a run recorded: one inside the range, one before it
        for ts, kind in ((inside_at, "gap"), (outside_at, "spike")):
            conn.exec_driver_sql(
                "INSERT INTO quality_issues (run_id, symbol, timeframe, kind, severity, ts, detail, created_at) "
                f"VALUES (NULL, 'AAPL', '1d', '{kind}', 'warning', {ts}, '1 session missing', 0)")
    async with serving(filled) as client:
        doc = await get_json(client, bars_path(DAY), start=first_day, end=last_day)
    assert [b["ts"] for b in doc["bars"]] == [r["ts"] for r in stored[50:61]]
    assert [(i["kind"], i["at"]) for i in doc["issues"]] == [("gap", ms_to_iso(inside_at))]


@pytest.mark.parametrize(("query", "words"), [
    ({"start": "yesterday"}, "invalid start"),
    ({"end": "2024-02-30"}, "no such date"),
    ({"start": "2024-06-03", "end": "2024-06-01"}, "start is after end"),
    ({"limit": "0"}, "invalid limit"),
    ({"max_points": "5"}, "invalid max_points"),
    ({"indicators": "sma_20,nonsense_1"}, "unknown indicator(s) nonsense_1"),
    ({"since": "2024-01-01"}, "unknown query parameter"),
])
async def test_bad_parameters_are_400_json_errors(db: Database, filled: Settings, query: dict[str, str],
                                                  words: str) -> None:
    async with serving(filled) as client:
        doc = await get_json(client, bars_path(DAY), 400, **query)
    assert doc["error"] == "bad_request" and words in doc["detail"], doc


async def test_unknown_series_are_404_and_bad_timeframes_400(db: Database, filled: Settings) -> None:
    async with serving(filled) as client:
        missing = await get_json(client, f"{API}/series/MSFT/1d/bars", 404)
        not_stored = await get_json(client, f"{API}/series/AAPL/5m/bars", 404)
        bad_tf = await get_json(client, f"{API}/series/AAPL/1M/bars", 400)
    assert "no stored series MSFT/1d" in missing["detail"]
    assert "AAPL/5m" in not_stored["detail"]
    assert "expected one of 1m, 5m" in bad_tf["detail"]
