"""The series rows: their attempts, the inventory, removing a series."""

from __future__ import annotations

from collections.abc import Iterable

from enrichctl.domain import Series, now_ms
from enrichctl.store.core import StoreCore
from enrichctl.store.queries import runs as runs_sql
from enrichctl.store.queries import series as series_sql
from enrichctl.store.rows import SeriesRow, row_to


class SeriesRecords(StoreCore):
    """The series rows: attempts without bars, the inventory, removing a series."""

    async def series_touch(self, series: Series, provider: str, synthetic: bool, **values) -> None:
        """Record an attempt/outcome on a series without storing bars (creates it if new)."""
        now = now_ms()
        async with self._write() as conn:
            updated = await conn.execute(
                series_sql.series_update(series.symbol, series.timeframe.value, updated_at=now, **values)
            )
            if updated.rowcount == 0:
                await conn.execute(
                    series_sql.series_upsert(self.dialect),
                    {"symbol": series.symbol, "timeframe": series.timeframe.value,
                     "asset_class": series.asset_class.value, "provider": provider,
                     "synthetic": synthetic, "bar_count": 0, "issue_count": 0,
                     "updated_at": now, **values},
                )

    async def series_list(self, symbol: str | None = None) -> list[SeriesRow]:
        async with self._read() as conn:
            rows = await conn.execute(series_sql.series_select(symbol))
            return [row_to(SeriesRow, r) for r in rows.all()]

    async def series_rows(self, symbols: Iterable[str] | None = None) -> dict[tuple[str, str], SeriesRow]:
        """(symbol, timeframe) -> row of every stored series (of ``symbols``), in one read."""
        wanted = None if symbols is None else set(symbols)
        only = next(iter(wanted)) if wanted is not None and len(wanted) == 1 else None
        rows = await self.series_list(only)
        return {(r.symbol, r.timeframe): r for r in rows if wanted is None or r.symbol in wanted}

    async def series_overlap_starts(self, series: Iterable[Series], n: int) -> dict[Series, int | None]:
        """Per series, the ts of the first of its last ``n`` stored bars (None without bars):
        what ``bars_tail(series, n).ts[0]`` gives, for many series in a few statements."""
        wanted = {(s.symbol, s.timeframe.value): s for s in series}
        found: dict[Series, int | None] = dict.fromkeys(wanted.values())
        if n <= 0 or not wanted:
            return found
        pairs = list(wanted)
        async with self._read() as conn:
            # Chunks: two bound parameters per series stay under every driver's limit.
            for at in range(0, len(pairs), 450):
                stmt = series_sql.series_overlap_starts(pairs[at:at + 450], n)
                for symbol, timeframe, ts in (await conn.execute(stmt)).all():
                    found[wanted[(symbol, timeframe)]] = None if ts is None else int(ts)
        return found

    async def series_get(self, series: Series) -> SeriesRow | None:
        async with self._read() as conn:
            row = (await conn.execute(series_sql.series_one(series.symbol, series.timeframe.value))).first()
            return row_to(SeriesRow, row) if row else None

    async def series_remove(self, symbol: str, timeframe: str | None) -> dict[str, int]:
        """Delete a series (or every series of ``symbol``) and every row about it, in one
        transaction; the symbol's job records go too once none of its series is left.
        Returns the rows deleted per kind."""
        async with self._write() as conn:
            counts = {
                kind: int((await conn.execute(stmt)).rowcount or 0)
                for kind, stmt in series_sql.series_remove_statements(self.indicators, symbol, timeframe).items()
            }
            left = int((await conn.execute(series_sql.series_count_of_symbol(symbol))).scalar_one())
            jobs = await conn.execute(runs_sql.jobs_of_symbol_delete(symbol)) if left == 0 else None
            counts["jobs"] = int(jobs.rowcount or 0) if jobs is not None else 0
        return counts
