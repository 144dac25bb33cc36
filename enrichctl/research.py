"""The stored data as pandas DataFrames, for notebooks and scripts: ``enrichctl.open()``.

    import enrichctl

    with enrichctl.open() as db:              # the CLI's settings: --config/env/DATABASE_URL
        aapl = db.bars("AAPL", start="2024-01-01", indicators=True)
        closes = db.bars_many(["AAPL", "MSFT"])

Read-only: opening never migrates and no method writes. Every method is synchronous and runs
no event loop of its own in the calling thread, so it works inside Jupyter's running loop.
Bounds are inclusive; a date (``"2024-03-31"``, ``datetime.date``) as ``end`` means the whole
UTC day, as ``export --until`` does; naive datetimes are UTC.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from dataclasses import fields
from datetime import date, datetime
from pathlib import Path
from types import TracebackType
from typing import Any, TypeAlias

import numpy as np
import pandas as pd
import pyarrow as pa

from enrichctl.domain import MS_PER_DAY, Timeframe, now_ms, parse_symbol, parse_timeframe
from enrichctl.errors import NotFound
from enrichctl.settings import Settings, settings_load
from enrichctl.store.reads import StoreReads, reads_open
from enrichctl.store.rows import SeriesRow

Bound: TypeAlias = "str | date | datetime | pd.Timestamp | None"
_DATE_ONLY = re.compile(r"^\s*\d{4}-\d{2}-\d{2}\s*$")
_NULLABLE_INTEGERS = {pa.int64(): pd.Int64Dtype()}.get


def open(database_url: str | None = None, config: str | os.PathLike[str] | None = None) -> Reader:  # noqa: A001
    """A read-only reader of the enrichctl database.

    Settings resolve as the CLI's do: ``config`` (else ``$ENRICHCTL_CONFIG``, ``./enrichctl.toml``,
    ``~/.config/enrichctl/config.toml``, ``/etc/enrichctl/config.toml``), then ``ENRICHCTL_*`` and
    ``DATABASE_URL``, then ``database_url``. Raises ``enrichctl.errors.ConfigError`` when the
    settings are wrong or the database holds no enrichctl data; it never creates one."""
    settings = settings_load(Path(config) if config is not None else None, database_url=database_url)
    return Reader(reads_open(settings.database_url_resolved()), settings)


class Reader:
    """Stored bars, indicators, the series inventory and quality issues as DataFrames.

    A context manager; ``close()`` releases the connection. Unknown series raise
    ``enrichctl.errors.NotFound`` naming what is stored; bad symbols, timeframes or bounds
    raise ``ValueError``."""

    def __init__(self, reads: StoreReads, settings: Settings) -> None:
        self._reads = reads
        self._settings = settings
        self._calendar: Any = None

    @property
    def database(self) -> str:
        """The database read (password hidden)."""
        return self._reads.source.where

    @property
    def indicator_names(self) -> tuple[str, ...]:
        """The stored indicator columns (what ``indicators=True`` adds)."""
        return self._reads.indicator_names

    def bars(
        self, symbol: str, timeframe: str | Timeframe = "1d", start: Bound = None, end: Bound = None,
        indicators: bool = False,
    ) -> pd.DataFrame:
        """One series' bars on a UTC ``DatetimeIndex`` named ``time`` (each bar's start), oldest
        first: float64 open, high, low, close, volume, vwap; trades as nullable Int64; with
        ``indicators`` every stored indicator column (NaN during its warm-up). ``attrs`` holds
        symbol, timeframe, provider and synthetic."""
        sym, tf = parse_symbol(symbol), _timeframe(timeframe)
        row = self._reads.series_row(sym, tf.value)
        table = self._reads.bars_read(sym, tf.value, _bound_ms(start), _bound_ms(end, end=True), indicators)
        frame = table.drop_columns(["ts"]).to_pandas(types_mapper=_NULLABLE_INTEGERS)
        frame.index = _time_index(table.column("ts").to_numpy())
        frame.attrs.update(symbol=sym, timeframe=tf.value, provider=row["provider"],
                           synthetic=bool(row["synthetic"]))
        return frame

    def bars_many(
        self, symbols: Iterable[str] | str, timeframe: str | Timeframe = "1d", field: str = "close",
        start: Bound = None, end: Bound = None,
    ) -> pd.DataFrame:
        """One column per symbol (in the order given) of ``field`` (a bar value or an indicator
        column), on the union of their bar times: the yfinance-style wide frame. A symbol
        without a bar at some time has NaN there."""
        wanted = _symbols(symbols)
        tf = _timeframe(timeframe)
        stored = {r["symbol"] for r in self._reads.series_read().to_pylist() if r["timeframe"] == tf.value}
        missing = [s for s in wanted if s not in stored]
        if missing:
            raise NotFound(f"no stored {tf.value} series for {', '.join(missing)}")
        table = self._reads.field_read(wanted, tf.value, field, _bound_ms(start), _bound_ms(end, end=True))
        long = table.to_pandas(types_mapper=_NULLABLE_INTEGERS)
        wide = long.pivot(index="ts", columns="symbol", values=field).reindex(columns=wanted)
        wide.index = _time_index(wide.index.to_numpy())
        wide.columns.name = "symbol"
        wide.attrs.update(timeframe=tf.value, field=field)
        return wide

    def series(self) -> pd.DataFrame:
        """The inventory ``enrichctl series list`` shows: one row per stored series with its
        first and last bar (UTC), bar count, provider, synthetic, quality score, issue count,
        stale (judged against the schedule, as ``status`` does), configured, last success."""
        from enrichctl.calendar import SessionCalendar
        from enrichctl.dashboard import series_stale

        rows = self._reads.series_read().to_pylist()
        if rows and self._calendar is None:
            self._calendar = SessionCalendar()
        now, configured = now_ms(), {e.symbol for e in self._settings.universe}
        names = [f.name for f in fields(SeriesRow)]
        frame = pd.DataFrame({
            "symbol": pd.Series([r["symbol"] for r in rows], dtype="string"),
            "timeframe": pd.Series([r["timeframe"] for r in rows], dtype="string"),
            "asset_class": pd.Series([r["asset_class"] for r in rows], dtype="string"),
            "provider": pd.Series([r["provider"] for r in rows], dtype="string"),
            "synthetic": pd.Series([bool(r["synthetic"]) for r in rows], dtype=bool),
            "first_bar": _times([r["first_ts"] for r in rows]),
            "last_bar": _times([r["watermark"] for r in rows]),
            "bars": pd.Series([r["bar_count"] for r in rows], dtype="int64"),
            "quality_score": pd.Series([r["quality_score"] for r in rows], dtype="float64"),
            "issues": pd.Series([r["issue_count"] for r in rows], dtype="int64"),
            "stale": pd.Series([series_stale(SeriesRow(**{n: r[n] for n in names}), self._calendar,
                                             self._settings, now) for r in rows], dtype=bool),
            "configured": pd.Series([r["symbol"] in configured for r in rows], dtype=bool),
            "last_success": _times([r["last_success_at"] for r in rows]),
        })
        return frame

    def issues(self, symbol: str | None = None) -> pd.DataFrame:
        """Recorded quality issues (of one symbol, or all): symbol, timeframe, time (the bar
        concerned, UTC; NaT when none), kind, severity, detail, run_id, recorded_at."""
        table = self._reads.issues_read(parse_symbol(symbol) if symbol is not None else None)
        raw = table.to_pandas(types_mapper=_NULLABLE_INTEGERS)
        return pd.DataFrame({
            "symbol": raw["symbol"].astype("string"),
            "timeframe": raw["timeframe"].astype("string"),
            "time": _times(table.column("ts").to_pylist()),
            "kind": raw["kind"].astype("string"),
            "severity": raw["severity"].astype("string"),
            "detail": raw["detail"].astype("string"),
            "run_id": raw["run_id"].astype("Int64"),
            "recorded_at": _times(table.column("created_at").to_pylist()),
        })

    def close(self) -> None:
        self._reads.close()

    def __enter__(self) -> Reader:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<enrichctl.Reader {self.database}>"


def _timeframe(value: str | Timeframe) -> Timeframe:
    return value if isinstance(value, Timeframe) else parse_timeframe(value)


def _symbols(value: Iterable[str] | str) -> list[str]:
    items = re.split(r"[\s,]+", value) if isinstance(value, str) else list(value)
    chosen = list(dict.fromkeys(parse_symbol(s.strip()) for s in items if s.strip()))
    if not chosen:
        raise ValueError("no symbol given")
    return chosen


def _time_index(ms: np.ndarray) -> pd.DatetimeIndex:
    return pd.DatetimeIndex(pd.to_datetime(ms.astype("int64"), unit="ms", utc=True), name="time")


def _times(ms: list[int | None]) -> pd.Series:
    """Epoch ms (None allowed) as UTC timestamps (NaT for None)."""
    return pd.Series(pd.to_datetime(pd.array(ms, dtype="Int64"), unit="ms", utc=True))


def _bound_ms(value: Bound, *, end: bool = False) -> int | None:
    """An API bound as epoch ms; a whole-day ``end`` reaches the day's last millisecond."""
    if value is None:
        return None
    if isinstance(value, str):
        whole_day = bool(_DATE_ONLY.match(value))
    elif isinstance(value, datetime):
        whole_day = False
    elif isinstance(value, date):
        whole_day = True
    else:
        raise TypeError(f"expected a date, datetime, Timestamp or ISO string, not {type(value).__name__}")
    try:
        stamp = pd.Timestamp(value)
    except ValueError:
        raise ValueError(f"invalid date or time {value!r}: expected e.g. 2024-01-31 or 2024-01-31T14:30") from None
    stamp = stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")
    ms = int((stamp - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(1, "ms"))
    return ms + MS_PER_DAY - 1 if end and whole_day else ms
