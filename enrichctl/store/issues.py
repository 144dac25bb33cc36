"""Quality issues: listing them, recording what ``verify`` found."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from enrichctl.domain import QualityIssue, Series, now_ms
from enrichctl.store.core import StoreCore
from enrichctl.store.queries import issues as issues_sql
from enrichctl.store.queries import series as series_sql
from enrichctl.store.rows import IssueRow, SeriesRow, row_to
from enrichctl.store.writes import series_consistency


class IssueRecords(StoreCore):
    """Quality issues: the recent ones of a series, what ``verify`` records."""

    async def issues_recent(self, symbol: str, timeframe: str | None = None, limit: int = 20) -> list[IssueRow]:
        async with self._read() as conn:
            rows = await conn.execute(issues_sql.issues_of_series(symbol, timeframe, limit))
            return [row_to(IssueRow, r) for r in rows.all()]

    async def issues_record(
        self, series: Series, issues: list[QualityIssue], weight: Callable[[QualityIssue], float]
    ) -> int:
        """Record what ``verify`` found on a stored series until a run replaces it: issues not
        recorded yet are added, counted in the series' issues, and each lowers its consistency
        by ``weight(issue)`` bars over the stored count. Returns how many were new."""
        key = (series.symbol, series.timeframe.value)
        now = now_ms()
        async with self._write() as conn:
            await conn.execute(series_sql.series_lock(*key))
            row = (await conn.execute(series_sql.series_one(*key))).first()
            if row is None or not issues:
                return 0
            known: set[tuple] = set()
            for kind in {i.kind.value for i in issues}:
                found = await conn.execute(issues_sql.issues_of_kind(*key, kind))
                known.update((kind, ts, detail) for ts, detail in found.all())
            new = [i for i in issues if (i.kind.value, i.ts, i.detail) not in known]
            if not new:
                return 0
            await conn.execute(issues_sql.issues_insert(), [
                {"run_id": None, "symbol": key[0], "timeframe": key[1], "kind": i.kind.value,
                 "severity": i.severity.value, "ts": i.ts, "detail": i.detail, "created_at": now}
                for i in new
            ])
            stored = row_to(SeriesRow, row)
            values: dict[str, Any] = {"issue_count": stored.issue_count + len(new), "last_checked_at": now}
            consistency = series_consistency(stored)
            if consistency is not None:
                share = sum(map(weight, new)) / max(stored.bar_count, 1)
                values["quality_score"] = max(0.0, consistency - share) * (
                    1.0 if stored.completeness is None else stored.completeness)
            await conn.execute(series_sql.series_update(*key, **values))
            return len(new)

    async def series_with_issues(self, kinds: tuple[str, ...]) -> set[tuple[str, str]]:
        """(symbol, timeframe) of every series with an open issue of one of ``kinds``."""
        async with self._read() as conn:
            return {(s, t) for s, t in (await conn.execute(issues_sql.issues_series_with(kinds))).all()}
