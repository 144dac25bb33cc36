"""Reading the stored data back out (``export``) and re-checking it (``verify``)."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from .workspace import Result, Workspace, side_by_side

BAR_COLUMNS = ["ts", "time", "open", "high", "low", "close", "volume", "vwap", "trades"]
SOME_INDICATORS = ("sma_20", "sma_200", "ema_12", "rsi_14", "macd_12_26_9", "bb_upper_20_2", "atr_14",
                   "log_return", "volatility_20")
JSONL_FILE = "aapl.jsonl"


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@pytest.fixture(scope="module")
def exported(filled: Workspace, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Result]:
    """Three exports of AAPL, side by side."""
    out_dir = tmp_path_factory.mktemp("export")
    commands = {
        "csv": ("export", "AAPL", "--timeframe", "1d", "--format", "csv"),
        "jsonl": ("export", "AAPL", "--format", "jsonl", "--indicators", "-o", str(out_dir / JSONL_FILE)),
        "window": ("export", "AAPL", "--since", "2024-05-01", "--until", "2024-05-03"),
    }
    return dict(zip(commands, filled.many(commands.values()), strict=True))


def test_export_csv_has_every_stored_bar_in_time_order_with_utc_times(exported: dict[str, Result], filled: Workspace) -> None:
    result = exported["csv"]
    assert result.code == 0, result
    rows = list(csv.reader(io.StringIO(result.out)))
    assert rows[0] == BAR_COLUMNS + ["provider", "synthetic"]  # provenance last, as in Parquet
    stored = filled.bars("AAPL")
    assert len(rows) - 1 == len(stored)
    ts = [int(r[0]) for r in rows[1:]]
    assert ts == sorted(set(ts)) == [b[2] for b in stored]
    assert all(r[1] == _iso(int(r[0])) for r in rows[1:])
    assert [float(x) for x in rows[-1][2:6]] == list(stored[-1][3:7])  # open high low close


def test_export_jsonl_with_indicators_writes_the_file(exported: dict[str, Result], filled: Workspace) -> None:
    result = exported["jsonl"]
    assert result.code == 0, result
    lines = [json.loads(line) for line in Path(result.args[-1]).read_text().splitlines()]
    assert len(lines) == len(filled.bars("AAPL"))
    assert f"wrote {len(lines)} bars" in result.err
    assert [r["ts"] for r in lines] == sorted(r["ts"] for r in lines)
    last = lines[-1]
    assert set(BAR_COLUMNS + list(SOME_INDICATORS)) <= last.keys()
    stored_rsi = filled.query("SELECT rsi_14 FROM indicators WHERE symbol = 'AAPL' ORDER BY ts DESC LIMIT 1")
    assert last["rsi_14"] == stored_rsi[0][0]
    assert lines[0]["sma_20"] is None  # no value before the warm-up, not NaN or 0
    assert last["time"] == _iso(last["ts"])


def test_export_since_and_until_are_inclusive_days(exported: dict[str, Result]) -> None:
    result = exported["window"]
    assert result.code == 0, result
    times = [r[1] for r in list(csv.reader(io.StringIO(result.out)))[1:]]
    assert times == ["2024-05-01T04:00:00Z", "2024-05-02T04:00:00Z", "2024-05-03T04:00:00Z"]


def test_verify_passes_on_a_clean_database(filled: Workspace) -> None:
    plain, recompute = filled.many([("verify",), ("verify", "--recompute", "--json")])
    assert plain.code == 0 and "all series verified" in plain.out, plain
    assert recompute.code == 0, recompute
    doc = json.loads(recompute.out)
    assert doc["ok"] is True and [s["series"] for s in doc["series"]] == ["AAPL/1d", "MSFT/1d"]
    assert all(s["max_indicator_diff"] is not None and s["max_indicator_diff"] <= 1e-9 for s in doc["series"])


def test_verify_finds_a_changed_indicator_and_a_missing_bar(filled: Workspace, tmp_path: Path) -> None:
    tampered = filled.clone(tmp_path / "indicator")
    tampered.execute("UPDATE indicators SET rsi_14 = rsi_14 * 1.01 WHERE symbol = 'AAPL' AND ts = ?",
                     (_ts("2024-03-14"),))
    holed = filled.clone(tmp_path / "bar")
    holed.execute("DELETE FROM bars WHERE symbol = 'MSFT' AND ts = ?", (_ts("2023-10-19"),))

    indicator, gap = side_by_side([(tampered, ("verify", "--recompute")), (holed, ("verify",))])
    assert indicator.code == 1, indicator
    line = next(line for line in indicator.out.splitlines() if "AAPL/1d" in line)
    assert "no" in line and "rsi_14 at 2024-03-14" in line, indicator

    assert gap.code == 1, gap
    line = next(line for line in gap.out.splitlines() if "MSFT/1d" in line)
    assert "missing" in line and "2023-10-19" in line, gap
    assert "problems found" in gap.out


def _ts(day: str) -> int:
    """The start of a day bar in New York summer time (the days used here): 04:00 UTC."""
    return int(datetime.fromisoformat(f"{day}T04:00:00+00:00").timestamp() * 1000)
