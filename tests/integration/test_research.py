"""``enrichctl.open()``: every value of its frames equals the store, read back through an
independent driver, on SQLite and PostgreSQL. The ``async`` tests call it from inside the
running event loop, as a Jupyter cell does."""

from __future__ import annotations

import asyncio
from datetime import date, datetime
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import pytest
from research_data import AAPL_HOLE, BAR_VALUES, SYMBOLS, expected_frame, fill

import enrichctl
from enrichctl import service
from enrichctl.calendar import utc_date_ms
from enrichctl.domain import MS_PER_DAY, Timeframe
from enrichctl.errors import ConfigError, NotFound, TemporaryError
from enrichctl.settings import settings_load

if TYPE_CHECKING:
    from conftest import Database  # the ``db`` fixture: one empty database per backend


def assert_frame_is_store(frame: pd.DataFrame, expected: pd.DataFrame) -> None:
    assert isinstance(frame.index, pd.DatetimeIndex) and frame.index.name == "time"
    assert str(frame.index.tz) == "UTC"
    ms = (frame.index - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(1, "ms")
    assert np.array_equal(np.asarray(ms, dtype=np.int64), expected.index.to_numpy())
    assert list(frame.columns) == list(expected.columns)
    for name in BAR_VALUES:
        assert frame[name].dtype == np.float64, name
    assert frame["trades"].dtype == pd.Int64Dtype()
    for name in expected.columns:
        have = frame[name].to_numpy(dtype=np.float64, na_value=np.nan)
        assert np.array_equal(have, expected[name].to_numpy(dtype=np.float64), equal_nan=True), name


async def test_bars_equal_the_store_inside_a_running_loop(db: Database) -> None:
    await fill(db)
    assert asyncio.get_running_loop().is_running()  # as in a Jupyter cell
    with enrichctl.open(db.url) as reader:
        for symbol in SYMBOLS:
            for timeframe in (Timeframe.D1, Timeframe.H1):
                plain = reader.bars(symbol, timeframe.value)
                assert_frame_is_store(plain, expected_frame(db, symbol, timeframe, indicators=False))
                full = reader.bars(symbol, timeframe, indicators=True)
                assert_frame_is_store(full, expected_frame(db, symbol, timeframe, indicators=True))
                assert full.attrs == {"symbol": symbol, "timeframe": timeframe.value, "provider": "demo",
                                      "synthetic": True}
        assert reader.indicator_names == tuple(c for c in full.columns if c not in (*BAR_VALUES, "trades"))
    reader.close()  # again, after the with block: a no-op
    btc = expected_frame(db, "X:BTCUSD", Timeframe.H1, False)
    assert btc["vwap"].isna().sum() > 1024 and btc["vwap"].notna().any()  # the cases are really there
    aapl = expected_frame(db, "AAPL", Timeframe.D1, True)
    assert aapl.loc[AAPL_HOLE].drop(["open", "high", "low", "close", "volume", "vwap", "trades"]).isna().all()
    assert AAPL_HOLE in aapl.index and aapl["sma_20"].notna().sum() > 200


async def test_bar_ranges_are_inclusive_and_a_date_end_covers_its_day(db: Database) -> None:
    await fill(db)
    expected = expected_frame(db, "AAPL", Timeframe.D1, indicators=True)
    start, end = utc_date_ms("2024-02-01"), utc_date_ms("2024-03-28") + MS_PER_DAY - 1
    window = expected[(expected.index >= start) & (expected.index <= end)]
    assert len(window) > 30
    with enrichctl.open(db.url) as reader:
        for lo, hi in (("2024-02-01", "2024-03-28"), (date(2024, 2, 1), date(2024, 3, 28)),
                       (datetime(2024, 2, 1), pd.Timestamp("2024-03-28T23:59:59.999Z"))):
            assert_frame_is_store(reader.bars("AAPL", start=lo, end=hi, indicators=True), window)
        # The last day bar starts 2024-03-28T04:00Z (midnight New York): an end instant before it excludes it.
        before = reader.bars("AAPL", start="2024-02-01", end="2024-03-28T03:00:00Z")
        assert len(before) == len(window) - 1


async def test_bars_many_is_one_column_per_symbol_on_the_union_of_times(db: Database) -> None:
    await fill(db)
    with enrichctl.open(db.url) as reader:
        for field in ("close", "trades", "rsi_14"):
            wide = reader.bars_many(["X:BTCUSD", "AAPL", "MSFT"], "1d", field=field)
            assert list(wide.columns) == ["X:BTCUSD", "AAPL", "MSFT"]
            frames = {s: expected_frame(db, s, Timeframe.D1, indicators=True) for s in wide.columns}
            times = np.unique(np.concatenate([f.index.to_numpy() for f in frames.values()]))
            ms = (wide.index - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(1, "ms")
            assert np.array_equal(np.asarray(ms, dtype=np.int64), times)
            for symbol, frame in frames.items():
                column = pd.Series(wide[symbol].to_numpy(dtype=np.float64, na_value=np.nan), index=times)
                want = frame[field].astype(np.float64).reindex(times)
                assert np.array_equal(column.to_numpy(), want.to_numpy(), equal_nan=True), (field, symbol)
        # crypto trades at weekends: the stocks have NaN there
        assert wide["AAPL"].isna().any() and not wide["X:BTCUSD"].isna().all()
        day = reader.bars_many("AAPL,MSFT", "1h", start="2024-06-03", end="2024-06-03")
    lo = utc_date_ms("2024-06-03")
    hours = db.scalar("SELECT count(DISTINCT ts) FROM bars WHERE symbol IN ('AAPL', 'MSFT') AND timeframe = '1h' "
                      f"AND ts BETWEEN {lo} AND {lo + MS_PER_DAY - 1}")
    assert day.shape == (hours, 2) and hours >= 6 and not day.isna().any().any()


async def test_series_is_the_inventory_and_issues_are_the_recorded_ones(db: Database, tmp_path) -> None:
    await fill(db)
    config = tmp_path / "research.toml"  # AAPL and MSFT configured, X:BTCUSD no longer
    config.write_text(f'database_url = "{db.url}"\nuniverse = [{{ symbol = "AAPL" }}, {{ symbol = "MSFT" }}]\n')
    async with service.session_open(settings_load(config)) as session:
        inventory = await session.series_inventory()
    stored = db.dicts("SELECT * FROM series ORDER BY symbol, timeframe")
    issues = db.dicts("SELECT * FROM quality_issues ORDER BY symbol, timeframe, ts, id")
    with enrichctl.open(config=config) as reader:
        series = reader.series()
        found = reader.issues()
        aapl = reader.issues("AAPL")
    assert len(series) == len(stored) == 6
    for got, row, doc in zip(series.to_dict("records"), stored, inventory["series"], strict=True):
        assert (got["symbol"], got["timeframe"], got["asset_class"], got["provider"]) == (
            row["symbol"], row["timeframe"], row["asset_class"], row["provider"])
        assert got["synthetic"] is True and got["bars"] == row["bar_count"] and got["issues"] == row["issue_count"]
        assert got["first_bar"] == pd.Timestamp(row["first_ts"], unit="ms", tz="UTC")
        assert got["last_bar"] == pd.Timestamp(row["watermark"], unit="ms", tz="UTC")
        assert got["last_success"] == pd.Timestamp(row["last_success_at"], unit="ms", tz="UTC")
        assert got["quality_score"] == row["quality_score"]
        assert (got["stale"], got["configured"]) == (doc["stale"], doc["configured"])  # as `series list` says
        assert got["configured"] == (row["symbol"] != "X:BTCUSD")
    assert len(issues) >= 2
    assert len(found) == len(issues)
    for got, row in zip(found.to_dict("records"), issues, strict=True):
        assert (got["symbol"], got["timeframe"], got["kind"], got["severity"], got["detail"], got["run_id"]) == (
            row["symbol"], row["timeframe"], row["kind"], row["severity"], row["detail"], row["run_id"])
        assert got["recorded_at"] == pd.Timestamp(row["created_at"], unit="ms", tz="UTC")
        assert (pd.isna(got["time"]) if row["ts"] is None else got["time"] == pd.Timestamp(row["ts"], unit="ms", tz="UTC"))
    assert list(aapl["symbol"].unique()) in ([], ["AAPL"]) and len(aapl) == sum(r["symbol"] == "AAPL" for r in issues)


async def test_open_never_migrates_nor_creates(db: Database, tmp_path) -> None:
    # An empty database (for SQLite, an empty file): refused politely, and left empty.
    db.scalar("SELECT 1")
    with pytest.raises(ConfigError, match="holds no enrichctl data"):
        enrichctl.open(db.url)
    assert db.scalar("SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'"
                     if db.backend == "postgresql" else "SELECT count(*) FROM sqlite_master") == 0
    missing = tmp_path / "nowhere" / "enrichctl.db"
    with pytest.raises(ConfigError, match="no enrichctl database at"):
        enrichctl.open(f"sqlite:///{missing}")
    assert not missing.parent.exists()
    # A schema at an older revision is read as it is, not upgraded.
    await fill(db)
    with db.engine.begin() as conn:
        conn.exec_driver_sql("UPDATE alembic_version SET version_num = '0001'")
    before = db.table("bars", "symbol, timeframe, ts")
    with enrichctl.open(db.url) as reader:
        assert len(reader.bars("AAPL")) == sum(r[0] == "AAPL" and r[1] == "1d" for r in before)
    assert db.scalar("SELECT version_num FROM alembic_version") == "0001"
    assert db.table("bars", "symbol, timeframe, ts") == before


async def test_unknown_series_and_bad_arguments_say_what_is_wrong(db: Database) -> None:
    await fill(db)
    with enrichctl.open(db.url) as reader:
        with pytest.raises(NotFound, match=r"no stored series AAPL/1w \(stored: AAPL/1d, AAPL/1h\)"):
            reader.bars("AAPL", "1w")
        with pytest.raises(NotFound, match="no stored 1d series for NOPE"):
            reader.bars_many(["AAPL", "NOPE"])
        with pytest.raises(NotFound, match="no stored field 'rsi_99'"):
            reader.bars_many(["AAPL"], field="rsi_99")
        with pytest.raises(ValueError, match="ambiguous timeframe"):
            reader.bars("AAPL", "1M")
        with pytest.raises(ValueError, match="invalid symbol"):
            reader.bars("not a symbol")
        with pytest.raises(ValueError, match="invalid date or time"):
            reader.bars("AAPL", start="yesterday-ish")


def test_open_resolves_settings_as_the_cli_does(db: Database, tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Outside any event loop, as a script: a config file, then the environment, then the argument."""
    asyncio.run(fill(db))
    (tmp_path / "enrichctl.toml").write_text(f'database_url = "{db.url}"\n')  # ./enrichctl.toml (cwd is tmp_path)
    with enrichctl.open() as reader:
        assert len(reader.bars("MSFT")) == db.scalar("SELECT count(*) FROM bars WHERE symbol = 'MSFT' AND timeframe = '1d'")
    monkeypatch.setenv("ENRICHCTL_DATABASE_URL", f"sqlite:///{tmp_path / 'elsewhere.db'}")
    with pytest.raises(ConfigError, match="elsewhere.db"):
        enrichctl.open()
    with enrichctl.open(database_url=db.url) as reader:  # the argument wins, as a flag does
        assert len(reader.series()) == 6
    other = tmp_path / "other.toml"
    other.write_text('database_url = "sqlite:///nope.db"\nbogus = 1\n')
    with pytest.raises(ConfigError, match="unknown key 'bogus'"):
        enrichctl.open(config=other)


def test_databases_that_cannot_be_read_are_refused_in_one_line(tmp_path) -> None:
    garbage = tmp_path / "notes.db"
    garbage.write_text("not a database\n")
    with pytest.raises(ConfigError, match=r"cannot open .*notes.db: .*not a database"):
        enrichctl.open(f"sqlite:///{garbage}")
    assert garbage.read_text() == "not a database\n"
    with pytest.raises(TemporaryError, match=r"postgresql://postgres:\*\*\*@127.0.0.1:1/x: .*Connect call failed") as caught:
        enrichctl.open("postgresql://postgres:secret@127.0.0.1:1/x")  # nothing listens on port 1
    assert "secret" not in str(caught.value)
    with pytest.raises(ConfigError, match="unsupported database 'mysql'"):
        enrichctl.open("mysql://u@h/db")
