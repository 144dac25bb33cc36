"""Statements on series rows, removing a series, and corporate actions."""

from __future__ import annotations

import sqlalchemy as sa

from enrichctl.store.queries.upserts import upsert
from enrichctl.store.tables import bars, corporate_actions, quality_issues, requests, series, tasks


def series_upsert(dialect: str) -> sa.Insert:
    return upsert(dialect, series, ("symbol", "timeframe"))


def series_select(symbol: str | None = None):
    stmt = sa.select(series)
    if symbol is not None:
        stmt = stmt.where(series.c.symbol == symbol)
    return stmt.order_by(series.c.symbol, series.c.timeframe)


def series_overlap_starts(pairs: list[tuple[str, str]], n: int):
    """(symbol, timeframe, ts) of each series in ``pairs``: the ts of its ``n``-th newest bar,
    or of its first bar when it has fewer (NULL without bars): where an incremental fetch
    re-reads the last ``n`` stored bars from, for many series in one statement."""
    b = bars.alias("b")
    own = (b.c.symbol == series.c.symbol, b.c.timeframe == series.c.timeframe)
    nth = (sa.select(b.c.ts).where(*own).order_by(b.c.ts.desc()).limit(1).offset(n - 1)
           .scalar_subquery())
    first = sa.select(sa.func.min(b.c.ts)).where(*own).scalar_subquery()
    return sa.select(series.c.symbol, series.c.timeframe, sa.func.coalesce(nth, first)).where(
        sa.tuple_(series.c.symbol, series.c.timeframe).in_(pairs))


def series_one(symbol: str, timeframe: str):
    return sa.select(series).where(series.c.symbol == symbol, series.c.timeframe == timeframe)


def series_update(symbol: str, timeframe: str, **values):
    return (
        sa.update(series)
        .where(series.c.symbol == symbol, series.c.timeframe == timeframe)
        .values(**values)
    )


def series_touch_many_returning(keys: list[tuple[str, str]], now: int):
    """Touch the series rows of ``keys`` (symbol, timeframe) and return them: the write takes
    SQLite's write lock (and the rows' locks) before the read, in one statement."""
    return (
        sa.update(series)
        .where(sa.tuple_(series.c.symbol, series.c.timeframe).in_(keys))
        .values(updated_at=now)
        .returning(*series.c)
    )


def series_lock(symbol: str, timeframe: str):
    """A no-op update: it takes SQLite's write lock (and the row's lock) before a read-modify-write."""
    return series_update(symbol, timeframe, issue_count=series.c.issue_count)


def _of(table: sa.Table, symbol: str, timeframe: str | None):
    where = [table.c.symbol == symbol]
    if timeframe is not None:
        where.append(table.c.timeframe == timeframe)
    return where


def series_remove_statements(indicators: sa.Table, symbol: str, timeframe: str | None) -> dict[str, sa.Delete]:
    """Every row one series (or, without ``timeframe``, every series of the symbol) left behind:
    bars, indicator rows, quality issues, task records, provider calls and the series row."""
    return {
        "bars": sa.delete(bars).where(*_of(bars, symbol, timeframe)),
        "indicators": sa.delete(indicators).where(*_of(indicators, symbol, timeframe)),
        "issues": sa.delete(quality_issues).where(*_of(quality_issues, symbol, timeframe)),
        "tasks": sa.delete(tasks).where(*_of(tasks, symbol, timeframe)),
        "requests": sa.delete(requests).where(*_of(requests, symbol, timeframe)),
        "series": sa.delete(series).where(*_of(series, symbol, timeframe)),
    }


def series_count_of_symbol(symbol: str):
    return sa.select(sa.func.count()).select_from(series).where(series.c.symbol == symbol)


def actions_upsert(dialect: str) -> sa.Insert:
    return upsert(dialect, corporate_actions, ("symbol", "kind", "ex_date", "provider"))


def actions_select(symbol: str | None = None, provider: str | None = None):
    stmt = sa.select(corporate_actions)
    if symbol is not None:
        stmt = stmt.where(corporate_actions.c.symbol == symbol)
    if provider is not None:
        stmt = stmt.where(corporate_actions.c.provider == provider)
    return stmt.order_by(corporate_actions.c.symbol, corporate_actions.c.ex_date)
