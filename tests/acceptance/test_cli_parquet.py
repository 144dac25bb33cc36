"""``export --format parquet`` through the installed CLI: the dataset and the file hold every
stored bar, a second export rewrites nothing, and bad input gets one line and its exit code."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pyarrow.dataset as pads
import pyarrow.parquet as pq

from .workspace import Workspace

BAR_COLUMNS = ("open", "high", "low", "close", "volume", "vwap", "trades")


def _store_rows(ws: Workspace, where: str = "") -> list[tuple]:
    return ws.query(f"SELECT b.symbol, b.timeframe, b.ts, b.open, b.high, b.low, b.close, b.volume, b.vwap, b.trades, "
                    f"i.rsi_14, i.sma_200 FROM bars b JOIN indicators i ON i.symbol = b.symbol AND "
                    f"i.timeframe = b.timeframe AND i.ts = b.ts {where} ORDER BY b.symbol, b.timeframe, b.ts")


def test_export_all_writes_a_dataset_duckdb_and_pyarrow_read_whole(filled: Workspace, tmp_path: Path) -> None:
    out = tmp_path / "lake"
    first = filled("export", "--all", "--format", "parquet", "--indicators", "-o", str(out))
    assert first.code == 0, first
    stored = _store_rows(filled)
    assert first.err_lines == [f"wrote 2 series ({len(stored)} bars) to {out}; 0 unchanged, 0 removed"]
    duck = duckdb.sql(
        "SELECT symbol, timeframe, epoch_ms(time), open, high, low, close, volume, vwap, trades, rsi_14, sma_200 "
        f"FROM read_parquet('{out}/**/*.parquet', hive_partitioning=1) ORDER BY symbol, timeframe, time").fetchall()
    assert duck == [tuple(r) for r in stored]
    table = pads.dataset(out, format="parquet", partitioning="hive").to_table()
    assert table.num_rows == len(stored) and set(table.column("provider").to_pylist()) == {"demo"}
    assert str(table.schema.field("time").type) == "timestamp[us, tz=UTC]"

    second = filled("export", "--all", "--format", "parquet", "--indicators", "-o", str(out))
    assert second.code == 0 and second.err_lines == [f"wrote 0 series (0 bars) to {out}; 2 unchanged, 0 removed"], second


def test_export_one_series_to_a_parquet_file(filled: Workspace, tmp_path: Path) -> None:
    out = tmp_path / "aapl.parquet"
    result = filled("export", "AAPL", "-f", "parquet", "--since", "2024-05-01", "--until", "2024-05-31",
                    "--indicators", "-o", str(out))
    assert result.code == 0, result
    table = pq.read_table(out)
    rows = list(zip(*(table.column(n).to_pylist() for n in ("symbol", "timeframe")),
                    (t.timestamp() * 1000 for t in table.column("time").to_pylist()),
                    *(table.column(n).to_pylist() for n in (*BAR_COLUMNS, "rsi_14", "sma_200")), strict=True))
    stored = _store_rows(filled, "WHERE b.symbol = 'AAPL' AND b.ts >= 1714521600000 AND b.ts < 1717200000000")
    assert len(rows) == len(stored) == 22 and result.err_lines == [f"wrote 22 bars to {out}"]
    assert [(*r[:2], int(r[2]), *r[3:]) for r in rows] == [tuple(r) for r in stored]


def test_bad_parquet_exports_say_what_is_wrong_in_one_line(filled: Workspace, tmp_path: Path) -> None:
    cases = {
        ("export", "--all", "-o", str(tmp_path / "d")): (2, "--all writes a Parquet dataset: add --format parquet"),
        ("export", "AAPL", "--format", "parquet"): (2, "Parquet is written to a file: add -o FILE"),
        ("export", "AAPL", "--all", "-f", "parquet", "-o", str(tmp_path / "d")): (2, "give a SYMBOL or --all"),
        ("export", "-f", "parquet", "-o", str(tmp_path / "d")): (2, "give a SYMBOL or --all"),
        ("export", "NOPE", "-f", "parquet", "-o", str(tmp_path / "n.parquet")): (1, "no stored series NOPE/1d"),
        ("export", "AAPL", "-f", "parquet", "-o", str(tmp_path / "missing" / "a.parquet")): (78, "cannot write"),
    }
    for args, result in zip(cases, filled.many(cases), strict=True):
        code, message = cases[args]
        assert result.code == code and len(result.err_lines) == 1 and message in result.err, result
        assert "Traceback" not in result.err


def test_export_of_an_empty_database_refuses_and_creates_nothing(machine: Workspace, tmp_path: Path) -> None:
    result = machine("export", "--all", "-f", "parquet", "-o", str(tmp_path / "lake"))
    assert result.code == 78 and len(result.err_lines) == 1, result
    assert "'enrichctl run' creates and fills it" in result.err
    assert not machine.db_path.exists() if machine.backend == "sqlite" else machine.tables() == set()
