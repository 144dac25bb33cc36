"""Statements on bars and indicator rows."""

from __future__ import annotations

import sqlalchemy as sa

from enrichctl.store.tables import bars

BAR_COLUMNS = (bars.c.ts, bars.c.open, bars.c.high, bars.c.low, bars.c.close, bars.c.volume,
               bars.c.vwap, bars.c.trades)


def bars_delete(symbol: str, timeframe: str):
    return sa.delete(bars).where(bars.c.symbol == symbol, bars.c.timeframe == timeframe)


def bars_stats(symbol: str, timeframe: str):
    return sa.select(sa.func.count(), sa.func.min(bars.c.ts), sa.func.max(bars.c.ts)).where(
        bars.c.symbol == symbol, bars.c.timeframe == timeframe
    )


def bars_duplicates(symbol: str, timeframe: str):
    """(ts, n) of timestamps stored more than once; the primary key makes this empty."""
    return (
        sa.select(bars.c.ts, sa.func.count())
        .where(bars.c.symbol == symbol, bars.c.timeframe == timeframe)
        .group_by(bars.c.ts)
        .having(sa.func.count() > 1)
    )


def _bars_in(symbol: str, timeframe: str, start: int | None, end: int | None) -> list:
    where = [bars.c.symbol == symbol, bars.c.timeframe == timeframe]
    if start is not None:
        where.append(bars.c.ts >= start)
    if end is not None:
        where.append(bars.c.ts <= end)
    return where


def bars_select(symbol: str, timeframe: str, start: int | None = None, end: int | None = None):
    """The bars of one series in [start, end], oldest first (what research reads)."""
    return sa.select(*BAR_COLUMNS).where(*_bars_in(symbol, timeframe, start, end)).order_by(bars.c.ts)


def bars_range_count(symbol: str, timeframe: str, start: int | None, end: int | None):
    return sa.select(sa.func.count()).where(*_bars_in(symbol, timeframe, start, end))


def bars_range_ends(symbol: str, timeframe: str, start: int | None, end: int | None):
    """(first ts, last ts) in [start, end]: two scalar subqueries, because SQLite answers a lone
    min() or max() from the index but scans for both in one SELECT."""
    where = _bars_in(symbol, timeframe, start, end)
    return sa.select(sa.select(sa.func.min(bars.c.ts)).where(*where).scalar_subquery(),
                     sa.select(sa.func.max(bars.c.ts)).where(*where).scalar_subquery())


def bars_nth_ts(symbol: str, timeframe: str, start: int | None, end: int | None, n: int):
    """The ts of the n-th bar (from 0) in [start, end]: whether more than n bars lie there,
    without counting them all."""
    return (sa.select(bars.c.ts).where(*_bars_in(symbol, timeframe, start, end))
            .order_by(bars.c.ts).limit(1).offset(n))


def bars_page(symbol: str, timeframe: str, start: int | None, end: int | None, limit: int):
    """The first ``limit`` bars in [start, end], oldest first."""
    return sa.select(*BAR_COLUMNS).where(*_bars_in(symbol, timeframe, start, end)).order_by(
        bars.c.ts).limit(limit)


def bars_bucketed(symbol: str, timeframe: str, start: int | None, end: int | None,
                  origin: int, bucket_ms: int):
    """Bars merged into time buckets of ``bucket_ms`` from ``origin``: (first ts, open of the
    first bar, max high, min low, close of the last bar, summed volume, volume-weighted vwap,
    summed trades, last ts, bars merged). Runs in the database, so a long series never reaches Python."""
    key = (bars.c.ts - origin) // bucket_ms  # ts >= origin: integer division is the floor
    g = (
        sa.select(
            sa.func.min(bars.c.ts).label("t0"), sa.func.max(bars.c.ts).label("t1"),
            sa.func.max(bars.c.high).label("high"), sa.func.min(bars.c.low).label("low"),
            sa.func.sum(bars.c.volume).label("volume"),
            sa.func.sum(bars.c.vwap * bars.c.volume).label("vwap_volume"),
            sa.func.sum(bars.c.trades).label("trades"), sa.func.count().label("n"),
        )
        .where(*_bars_in(symbol, timeframe, start, end))
        .group_by(key)
        .subquery("g")
    )
    first, last = bars.alias("first_bar"), bars.alias("last_bar")

    def at(alias: sa.Alias, ts: sa.ColumnElement) -> sa.ColumnElement[bool]:
        return sa.and_(alias.c.symbol == symbol, alias.c.timeframe == timeframe, alias.c.ts == ts)

    vwap = g.c.vwap_volume / sa.func.nullif(g.c.volume, 0)
    return (
        sa.select(g.c.t0, first.c.open, g.c.high, g.c.low, last.c.close, g.c.volume, vwap,
                  g.c.trades, g.c.t1, g.c.n)
        .select_from(g.join(first, at(first, g.c.t0)).join(last, at(last, g.c.t1)))
        .order_by(g.c.t0)
    )


def indicators_select(table: sa.Table, symbol: str, timeframe: str, start=None, end=None):
    cols = [c for c in table.columns if c.name not in ("symbol", "timeframe")]
    stmt = sa.select(*cols).where(table.c.symbol == symbol, table.c.timeframe == timeframe)
    if start is not None:
        stmt = stmt.where(table.c.ts >= start)
    if end is not None:
        stmt = stmt.where(table.c.ts <= end)
    return stmt.order_by(table.c.ts)


def indicators_at(table: sa.Table, symbol: str, timeframe: str, ts: list[int]):
    """The indicator rows at exactly these timestamps."""
    cols = [c for c in table.columns if c.name not in ("symbol", "timeframe")]
    return (sa.select(*cols)
            .where(table.c.symbol == symbol, table.c.timeframe == timeframe, table.c.ts.in_(ts))
            .order_by(table.c.ts))


def indicators_delete(table: sa.Table, symbol: str, timeframe: str):
    return sa.delete(table).where(table.c.symbol == symbol, table.c.timeframe == timeframe)
