"""Reads of stored bars and indicator values."""

from __future__ import annotations

import numpy as np

from enrichctl.domain import Bars, Series
from enrichctl.store.core import StoreCore
from enrichctl.store.queries import bars as bars_sql
from enrichctl.store.queries import driver as raw_sql
from enrichctl.store.tables import INDICATOR_KEY


class BarReads(StoreCore):
    """Reads of one series' bars and indicator values."""

    async def bars_range(self, series: Series, start: int | None = None, end: int | None = None) -> Bars:
        sql = raw_sql.bars_select_sql(self.dialect, start, end)
        return Bars.from_rows(await self._bars_fetch(sql, series, start, end))

    async def bars_tail(self, series: Series, n: int, before: int | None = None) -> Bars:
        """The last ``n`` stored bars (before ``before``), oldest first."""
        if n <= 0:
            return Bars.empty()
        sql = raw_sql.bars_select_sql(self.dialect, None, None, before, newest=n)
        return Bars.from_rows(reversed(await self._bars_fetch(sql, series, before)))

    async def _bars_fetch(self, sql: str, series: Series, *bounds: int | None) -> list:
        """Rows of a bar query straight from the driver: one call for all of them, no
        per-row work in SQLAlchemy (every run reads a tail of each series it extends)."""
        params = [series.symbol, series.timeframe.value, *(b for b in bounds if b is not None)]
        async with self._read() as conn:
            raw = (await conn.get_raw_connection()).driver_connection
            if self.dialect == "sqlite":
                return list(await raw.execute_fetchall(sql, params))
            return [tuple(r) for r in await raw.fetch(sql, *params)]

    async def bars_duplicates(self, series: Series) -> list[tuple[int, int]]:
        async with self._read() as conn:
            rows = await conn.execute(bars_sql.bars_duplicates(series.symbol, series.timeframe))
            return [(int(ts), int(n)) for ts, n in rows.all()]

    async def indicators_range(
        self, series: Series, start: int | None = None, end: int | None = None
    ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """(ts, {column: values}) of stored indicator rows, NULL as NaN."""
        stmt = bars_sql.indicators_select(self.indicators, series.symbol, series.timeframe, start, end)
        async with self._read() as conn:
            rows = (await conn.execute(stmt)).all()
        names = [c.name for c in self.indicators.columns if c.name not in INDICATOR_KEY]
        if not rows:
            return np.empty(0, np.int64), {n: np.empty(0) for n in names}
        ts = np.array([r[0] for r in rows], dtype=np.int64)
        values = np.array([r[1:] for r in rows], dtype=np.float64)
        return ts, {name: values[:, i] for i, name in enumerate(names)}

    @property
    def indicator_names(self) -> tuple[str, ...]:
        """The stored indicator columns."""
        return tuple(c.name for c in self.indicators.columns if c.name not in INDICATOR_KEY)

    async def bars_range_count(self, series: Series, start: int | None, end: int | None) -> int:
        async with self._read() as conn:
            return int((await conn.execute(
                bars_sql.bars_range_count(series.symbol, series.timeframe, start, end))).scalar_one())

    async def bars_range_ends(self, series: Series, start: int | None, end: int | None
                              ) -> tuple[int | None, int | None]:
        """(first ts, last ts) of the stored bars in [start, end]."""
        async with self._read() as conn:
            first, last = (await conn.execute(
                bars_sql.bars_range_ends(series.symbol, series.timeframe, start, end))).one()
        return first, last

    async def bars_more_than(self, series: Series, start: int | None, end: int | None, n: int) -> bool:
        async with self._read() as conn:
            found = (await conn.execute(
                bars_sql.bars_nth_ts(series.symbol, series.timeframe, start, end, n))).first()
        return found is not None

    async def bars_page(self, series: Series, start: int | None, end: int | None, limit: int) -> Bars:
        async with self._read() as conn:
            result = await conn.execute(bars_sql.bars_page(series.symbol, series.timeframe, start, end, limit))
            return Bars.from_rows(result.all())

    async def bars_bucketed(self, series: Series, start: int | None, end: int | None,
                            origin: int, bucket_ms: int) -> tuple[Bars, np.ndarray, int]:
        """Bars merged into time buckets, the ts of each bucket's last bar, and how many bars
        they merge."""
        stmt = bars_sql.bars_bucketed(series.symbol, series.timeframe, start, end, origin, bucket_ms)
        async with self._read() as conn:
            rows = (await conn.execute(stmt)).all()
        last = np.fromiter((r[8] for r in rows), dtype=np.int64, count=len(rows))
        return Bars.from_rows(r[:8] for r in rows), last, sum(int(r[9]) for r in rows)

    async def indicators_at(self, series: Series, ts: list[int]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """(ts, {column: values}) of the indicator rows at these timestamps, NULL as NaN."""
        names = [c.name for c in self.indicators.columns if c.name not in INDICATOR_KEY]
        rows: list = []
        async with self._read() as conn:
            # Chunks: a bound parameter per timestamp stays under every driver's limit.
            for at in range(0, len(ts), 900):
                stmt = bars_sql.indicators_at(self.indicators, series.symbol, series.timeframe,
                                             ts[at:at + 900])
                rows.extend((await conn.execute(stmt)).all())
        if not rows:
            return np.empty(0, np.int64), {n: np.empty(0) for n in names}
        values = np.array([r[1:] for r in rows], dtype=np.float64)
        return (np.array([r[0] for r in rows], dtype=np.int64),
                {name: values[:, i] for i, name in enumerate(names)})
