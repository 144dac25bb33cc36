"""Statements on quality issues."""

from __future__ import annotations

import sqlalchemy as sa

from enrichctl.store.tables import quality_issues


def issues_insert():
    return sa.insert(quality_issues)


def issues_delete_series(symbol: str, timeframe: str):
    return sa.delete(quality_issues).where(
        quality_issues.c.symbol == symbol, quality_issues.c.timeframe == timeframe
    )


def issues_delete_kind(symbol: str, timeframe: str, kind: str):
    return sa.delete(quality_issues).where(
        quality_issues.c.symbol == symbol, quality_issues.c.timeframe == timeframe,
        quality_issues.c.kind == kind,
    )


def issues_of_kind(symbol: str, timeframe: str, kind: str):
    return sa.select(quality_issues.c.ts, quality_issues.c.detail).where(
        quality_issues.c.symbol == symbol, quality_issues.c.timeframe == timeframe,
        quality_issues.c.kind == kind,
    )


def issues_series_with(kinds: tuple[str, ...]):
    """The (symbol, timeframe) pairs with an open issue of one of ``kinds``."""
    return sa.select(quality_issues.c.symbol, quality_issues.c.timeframe).where(
        quality_issues.c.kind.in_(kinds)).distinct()


def issues_of_series(symbol: str, timeframe: str | None, limit: int):
    stmt = sa.select(quality_issues).where(quality_issues.c.symbol == symbol)
    if timeframe is not None:
        stmt = stmt.where(quality_issues.c.timeframe == timeframe)
    return stmt.order_by(quality_issues.c.id.desc()).limit(limit)
