"""``export --format parquet``: the dataset and the single file, read back by pyarrow, DuckDB and
polars, equal the store value for value, on SQLite and PostgreSQL; a re-run rewrites only the
series that changed.

polars is in the test extra. It once broke the systemd test's ``MemoryDenyWriteExecute=`` check:
TA-Lib imports it when present, and polars cannot be imported under MDWE. The run now keeps
TA-Lib from importing it (``indicators._ta``), which that test proves with polars installed.
"""

from __future__ import annotations

import json
import urllib.parse
from pathlib import Path
from typing import TYPE_CHECKING

import duckdb
import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq
from research_data import AS_OF, BAR_VALUES, SYMBOLS, expected_frame, fill

from enrichctl import exports_parquet, service
from enrichctl.calendar import utc_date_ms
from enrichctl.domain import MS_PER_DAY, Timeframe
from enrichctl.exports_parquet import ParquetRequest

if TYPE_CHECKING:
    from conftest import Database  # the ``db`` fixture: one empty database per backend

SERIES = [(s, tf) for s in SYMBOLS for tf in (Timeframe.D1, Timeframe.H1)]
UTC_US = pa.timestamp("us", tz="UTC")


def part(directory: Path, symbol: str, timeframe: Timeframe) -> Path:
    return directory / f"timeframe={timeframe.value}" / f"symbol={urllib.parse.quote(symbol, safe='')}" / "part.parquet"


def assert_table_is_store(table: pa.Table, db: Database, symbol: str, timeframe: Timeframe,
                          indicators: bool, window: tuple[int, int] | None = None) -> None:
    """Every column of ``table`` (one series, any order) against the store."""
    expected = expected_frame(db, symbol, timeframe, indicators)
    if window is not None:
        expected = expected[(expected.index >= window[0]) & (expected.index <= window[1])]
    assert table.schema.field("time").type == UTC_US
    table = table.sort_by("time")
    ms = table.column("time").cast(pa.int64()).to_numpy() // 1000
    assert np.array_equal(ms, expected.index.to_numpy()), f"{symbol}/{timeframe}: times differ"
    for name in expected.columns:
        have = table.column(name).to_numpy(zero_copy_only=False).astype(np.float64)
        assert np.array_equal(have, expected[name].to_numpy(np.float64), equal_nan=True), f"{symbol}/{timeframe} {name}"
    assert table.schema.field("trades").type == pa.int64()
    assert set(table.column("provider").to_pylist()) == {"demo"}
    assert set(table.column("synthetic").to_pylist()) == {True}
    names = set(table.column_names) - {"symbol", "timeframe", "time", "provider", "synthetic"}
    assert names == set(expected.columns), "no column more or less than the store's"


async def test_dataset_read_back_by_pyarrow_and_duckdb_equals_the_store(db: Database, tmp_path: Path) -> None:
    await fill(db)
    out = tmp_path / "dataset"
    report = exports_parquet.export_dataset(db.settings(SYMBOLS), out, ParquetRequest(None, None, indicators=True))
    assert sorted(report.written) == sorted(f"{s}/{tf.value}" for s, tf in SERIES)
    files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.parquet"))
    assert files == sorted(part(out, s, tf).relative_to(out).as_posix() for s, tf in SERIES)
    assert "timeframe=1h/symbol=X%3ABTCUSD/part.parquet" in files

    dataset = pads.dataset(out, format="parquet", partitioning="hive").to_table()
    for symbol, tf in SERIES:
        mask = np.logical_and(np.asarray(dataset.column("symbol").to_pylist()) == symbol,
                              np.asarray(dataset.column("timeframe").to_pylist()) == tf.value)
        assert_table_is_store(dataset.filter(pa.array(mask)), db, symbol, tf, indicators=True)
        meta = pq.ParquetFile(part(out, symbol, tf))
        assert {meta.metadata.row_group(0).column(i).compression for i in range(meta.metadata.num_columns)} == {"ZSTD"}
        doc = json.loads(meta.schema_arrow.metadata[b"enrichctl"])
        assert (doc["symbol"], doc["timeframe"], doc["provider"], doc["synthetic"]) == (symbol, tf.value, "demo", True)
        assert doc["bars"] == db.scalar("SELECT bar_count FROM series WHERE symbol = :s AND timeframe = :t",
                                        s=symbol, t=tf.value)

    # DuckDB, as the README says to read it: every stored value, row for row.
    names = ", ".join(f"i.{n}" for n in expected_frame(db, "AAPL", Timeframe.D1, True).columns if n not in (*BAR_VALUES, "trades"))
    store = db.rows(f"SELECT b.symbol, b.timeframe, b.ts, b.open, b.high, b.low, b.close, b.volume, b.vwap, b.trades, {names} "
                    "FROM bars b LEFT JOIN indicators i ON i.symbol = b.symbol AND i.timeframe = b.timeframe AND i.ts = b.ts "
                    "ORDER BY b.symbol, b.timeframe, b.ts")
    duck = duckdb.sql(
        f"SELECT symbol, timeframe, epoch_ms(time), open, high, low, close, volume, vwap, trades, "
        f"{names.replace('i.', '')} FROM read_parquet('{out}/**/*.parquet', hive_partitioning=1) "
        "ORDER BY symbol, timeframe, time").fetchall()
    assert len(duck) == len(store) > 3_000
    assert duck == [tuple(r) for r in store]
    kinds = {r[0]: r[1] for r in duckdb.sql(
        f"DESCRIBE SELECT time, synthetic FROM read_parquet('{out}/**/*.parquet', hive_partitioning=1)").fetchall()}
    assert kinds == {"time": "TIMESTAMP WITH TIME ZONE", "synthetic": "BOOLEAN"}


async def test_dataset_read_back_by_polars(db: Database, tmp_path: Path) -> None:
    await fill(db)
    out = tmp_path / "dataset"
    exports_parquet.export_dataset(db.settings(SYMBOLS), out, ParquetRequest(None, None, indicators=False))
    frame = pl.read_parquet(f"{out}/**/*.parquet", hive_partitioning=True)
    for symbol, tf in SERIES:
        one = frame.filter((pl.col("symbol") == symbol) & (pl.col("timeframe") == tf.value)).to_arrow()
        assert_table_is_store(one, db, symbol, tf, indicators=False)


async def test_single_file_holds_one_series_and_its_range(db: Database, tmp_path: Path) -> None:
    await fill(db)
    settings = db.settings(SYMBOLS)
    whole = tmp_path / "btc.parquet"
    count = exports_parquet.export_file(settings, "X:BTCUSD", Timeframe.H1, ParquetRequest(None, None, True), whole)
    table = pq.read_table(whole)
    assert count == table.num_rows and table.column_names[:3] == ["symbol", "timeframe", "time"]
    assert set(table.column("symbol").to_pylist()) == {"X:BTCUSD"} and set(table.column("timeframe").to_pylist()) == {"1h"}
    assert_table_is_store(table, db, "X:BTCUSD", Timeframe.H1, indicators=True)
    window = (utc_date_ms("2024-03-01"), utc_date_ms("2024-03-31") + MS_PER_DAY - 1)
    part_of = tmp_path / "aapl-march.parquet"
    exports_parquet.export_file(settings, "AAPL", Timeframe.D1, ParquetRequest(*window, indicators=False), part_of)
    march = pq.read_table(part_of)
    assert 19 <= march.num_rows <= 22
    assert_table_is_store(march, db, "AAPL", Timeframe.D1, indicators=False, window=window)
    assert not list(tmp_path.glob(".*.tmp")), "no temporary file is left behind"


def stamps(out: Path) -> dict[str, tuple[int, int]]:
    """(inode, mtime_ns) of every part: a rewrite renames a new file into place."""
    return {p.relative_to(out).as_posix(): (p.stat().st_ino, p.stat().st_mtime_ns) for p in out.rglob("*.parquet")}


async def test_a_rerun_rewrites_only_the_series_that_changed(db: Database, tmp_path: Path) -> None:
    await fill(db)
    settings, out = db.settings(SYMBOLS), tmp_path / "dataset"
    request = ParquetRequest(None, None, indicators=True)
    exports_parquet.export_dataset(settings, out, request)
    first = stamps(out)

    again = exports_parquet.export_dataset(settings, out, request)
    assert (again.written, len(again.unchanged), again.removed) == ([], 6, [])
    assert stamps(out) == first

    # A later daily run of AAPL only: its 1d series changes, nothing else does.
    later = db.settings(["AAPL"], timeframes=("1d",))
    await service.run(later, service.RunOptions(as_of=AS_OF + 4 * MS_PER_DAY))
    report = exports_parquet.export_dataset(settings, out, request)
    assert report.written == ["AAPL/1d"] and report.bars_written == db.scalar(
        "SELECT count(*) FROM bars WHERE symbol = 'AAPL' AND timeframe = '1d'")
    now = stamps(out)
    aapl = part(out, "AAPL", Timeframe.D1).relative_to(out).as_posix()
    assert now[aapl] != first[aapl]
    assert {k: v for k, v in now.items() if k != aapl} == {k: v for k, v in first.items() if k != aapl}
    assert_table_is_store(pq.read_table(out / aapl), db, "AAPL", Timeframe.D1, indicators=True)
    manifest = json.loads((out / "_enrichctl_manifest.json").read_text())
    assert manifest["series"]["AAPL/1d"]["bars"] == report.bars_written

    # A file gone (or not the one written) is written again; a removed series' file goes.
    part(out, "X:BTCUSD", Timeframe.D1).unlink()
    part(out, "AAPL", Timeframe.H1).write_bytes(b"not parquet")
    async with service.session_open(settings) as session:
        await session.series_remove("MSFT", None, confirmed=True)
    report = exports_parquet.export_dataset(settings, out, request)
    assert sorted(report.written) == ["AAPL/1h", "X:BTCUSD/1d"] and sorted(report.removed) == ["MSFT/1d", "MSFT/1h"]
    assert not (out / "timeframe=1d" / "symbol=MSFT").exists() and not (out / "timeframe=1h" / "symbol=MSFT").exists()
    assert_table_is_store(pq.read_table(part(out, "X:BTCUSD", Timeframe.D1)), db, "X:BTCUSD", Timeframe.D1, True)
    assert_table_is_store(pq.read_table(part(out, "AAPL", Timeframe.H1)), db, "AAPL", Timeframe.H1, True)

    # Other options (no indicators) rewrite every series.
    plain = exports_parquet.export_dataset(settings, out, ParquetRequest(None, None, indicators=False))
    assert len(plain.written) == 4 and not plain.unchanged
    assert_table_is_store(pq.read_table(part(out, "AAPL", Timeframe.H1)), db, "AAPL", Timeframe.H1, False)
