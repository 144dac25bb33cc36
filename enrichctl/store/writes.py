"""What one task stores for one series, committed in one transaction with its records."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import repeat
from typing import Any

import numpy as np
from sqlalchemy.ext.asyncio import AsyncConnection

from enrichctl.domain import Bars, QualityIssue, RequestRecord, Series, nan_to_none, now_ms
from enrichctl.store import tables
from enrichctl.store.core import StoreCore
from enrichctl.store.queries import bars as bars_sql
from enrichctl.store.queries import driver as raw_sql
from enrichctl.store.queries import issues as issues_sql
from enrichctl.store.queries import series as series_sql
from enrichctl.store.rows import SeriesRow, row_to
from enrichctl.store.tables import INDICATOR_KEY

BAR_ROW = ("symbol", "timeframe", "ts", "open", "high", "low", "close", "volume", "vwap", "trades")


@dataclass(frozen=True, slots=True)
class SeriesWrite:
    """Everything one task stores for one series, in one transaction."""

    series: Series
    provider: str
    synthetic: bool
    run_id: int | None
    bars: Bars
    indicator_ts: np.ndarray
    indicators: dict[str, np.ndarray]
    indicator_set: str
    issues: list[QualityIssue] = field(default_factory=list)
    replace: bool = False  # delete the stored series first (full refresh, re-adjusted history)
    batch_score: float = 1.0
    requested_from: int | None = None  # the start asked of the provider for a new/full fetch
    # Bars the asset class's calendar expects from the series' first bar to its last (None: no
    # grid to count on); with the stored count it gives the completeness the score multiplies.
    expected: Callable[[int, int], int] | None = None
    # Which bar starts lie inside the calendar's sessions (None: every bar counts): completeness
    # counts only those, so extended-hours bars cannot stand in for missing session bars.
    in_session: Callable[[np.ndarray], np.ndarray] | None = None
    delisted_at: int | None = None  # the reference data marks the ticker inactive
    full_fetched_at: int | None = None  # market time of a fetch of every bar (a split after it matters)


@dataclass(frozen=True, slots=True)
class Commit:
    """One task's commit: its series data (if any), its record, its provider calls, its job's end."""

    write: SeriesWrite | None
    task: dict[str, Any] | None
    requests: list[RequestRecord]
    job: JobEnd | None
    bar_rows: list[tuple] = field(default_factory=list)  # the write's rows, built before its turn
    indicator_rows: list[tuple] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class JobEnd:
    """A job's last update (its end state and counts), committed in the transaction of its last
    task, and only while ``worker`` still holds the job."""

    job_id: int
    worker: str
    values: dict[str, Any]


class SeriesWrites(StoreCore):
    """Commits of one task: its series' bars, indicators, issues and watermark with its records."""

    async def series_commit(
        self, write: SeriesWrite, *, task: dict[str, Any] | None = None,
        requests: list[RequestRecord] | None = None, job: JobEnd | None = None,
    ) -> int:
        """Store bars, indicators and issues of one series and move its watermark, atomically,
        with the task's record, the provider calls it made and, for a job's last task, the
        job's end. Returns the bars written. On SQLite, series that finish together commit in
        one transaction (``GroupCommit``); each is whole in it."""
        s = write.series
        key = (s.symbol, s.timeframe.value)
        # The driver's rows are built here, while the batch before this one is being written,
        # not inside the transaction, where the writer would wait for them.
        commit = Commit(write, task, requests or [], job, write.bars.rows(key),
                         _indicator_rows(key, write.indicator_ts, write.indicators))
        return await self._commit_one(commit, key)

    async def _commit_one(self, commit: Commit, key: tuple[str, str] | None) -> int:
        """SQLite has one writer: commits queue for it and go in batches. PostgreSQL commits
        each series in a transaction of its own, several at once on the pool's connections
        (one committer there made the backfill wait on it)."""
        if self._write_lock is None:
            return (await self._commit_many([commit]))[0]
        return await self._commits.submit(commit, key)

    async def _session_count(
        self, conn: AsyncConnection, write: SeriesWrite, prev: SeriesRow | None,
        key: tuple[str, str], near: np.ndarray | None,
    ) -> int | None:
        """The series' stored bars inside sessions after ``write``: counted from the bars of a
        replaced series, moved by the batch otherwise (``near``: the stored bars in the batch's
        span before it), and counted once from the table when no count is stored yet."""
        mask = write.in_session
        if mask is None:
            return None
        if write.replace:
            return int(np.count_nonzero(mask(write.bars.ts)))
        if prev is not None and prev.session_bars is not None:
            if near is None:
                return prev.session_bars
            merged = np.union1d(near, write.bars.ts)
            return prev.session_bars - int(np.count_nonzero(mask(near))) + int(np.count_nonzero(mask(merged)))
        stored = _ts_of(await self._driver(conn, raw_sql.bars_ts_sql(False), key))
        return int(np.count_nonzero(mask(stored)))

    async def task_record(
        self, task: dict[str, Any], requests: list[RequestRecord], job: JobEnd | None = None
    ) -> None:
        """A finished task's row and its provider calls (and the job's end, for its last task),
        when no series data goes with them."""
        await self._commit_one(Commit(None, task, requests, job), None)

    async def _commit_many(self, commits: list[Commit]) -> list[int]:
        """One transaction for every commit given (no two of the same series): a statement per
        kind of row for all of them, not per series. Returns the bars each wrote."""
        now = now_ms()
        with_data = [c for c in commits if c.write is not None]
        keyed = [((c.write.series.symbol, c.write.series.timeframe.value), c.write) for c in with_data]
        async with self._write() as conn:
            previous: dict[tuple[str, str], SeriesRow] = {}
            extending = [key for key, w in keyed if not w.replace]
            if extending:
                # Write first (it takes SQLite's write lock), then read the rows this
                # transaction will update: read-then-write could meet another process's writer.
                touched = await conn.execute(series_sql.series_touch_many_returning(extending, now))
                previous = {(r.symbol, r.timeframe): row_to(SeriesRow, r) for r in touched.all()}
            for (symbol, timeframe), w in keyed:
                if w.replace:
                    # Replaced whole (a refetch, another provider): its old issues go with its bars.
                    await conn.execute(issues_sql.issues_delete_series(symbol, timeframe))
                    await conn.execute(bars_sql.bars_delete(symbol, timeframe))
                    await conn.execute(bars_sql.indicators_delete(self.indicators, symbol, timeframe))
            # The stored bars the new ones may overwrite: the session count moves by the difference.
            near: dict[tuple[str, str], np.ndarray] = {}
            for key, w in keyed:
                if w.in_session is not None and not w.replace and len(w.bars):
                    bounds = (int(w.bars.ts.min()), int(w.bars.ts.max()))
                    near[key] = _ts_of(await self._driver(conn, raw_sql.bars_ts_sql(True), (*key, *bounds)))
            await self._bulk_upsert(conn, "bars", BAR_ROW, [r for c in with_data for r in c.bar_rows])
            by_names: dict[tuple[str, ...], list[tuple]] = {}
            for c in with_data:
                by_names.setdefault(tuple(c.write.indicators), []).extend(c.indicator_rows)
            for names, rows in by_names.items():
                await self._bulk_upsert(conn, "indicators", INDICATOR_KEY + names, rows)
            issues = [
                {"run_id": w.run_id, "symbol": key[0], "timeframe": key[1], "kind": i.kind.value,
                 "severity": i.severity.value, "ts": i.ts, "detail": i.detail, "created_at": now}
                for key, w in keyed for i in w.issues
            ]
            if issues:
                await conn.execute(issues_sql.issues_insert(), issues)
            series_rows = []
            for key, w in keyed:
                if w.replace:  # the series is exactly the bars just written
                    ts = w.bars.ts
                    count, first, last = len(ts), (int(ts[0]) if len(ts) else None), (int(ts[-1]) if len(ts) else None)
                else:
                    ((count, first, last),) = await self._driver(conn, raw_sql.bars_stats_sql(), key)
                prev = None if w.replace else previous.get(key)
                session = await self._session_count(conn, w, prev, key, near.get(key))
                series_rows.append(raw_sql.row_values(
                    tables.series, _series_values(w, prev, int(count), first, last, now, session),
                    every=True))
            await self._driver_grouped(conn, tables.series, series_rows, ("symbol", "timeframe"))
            await self._driver_grouped(conn, tables.tasks, [
                raw_sql.row_values(tables.tasks, c.task) for c in commits if c.task is not None])
            await self._driver_grouped(conn, tables.requests, [
                raw_sql.row_values(tables.requests, r) for c in commits
                for r in request_rows(c.task["run_id"] if c.task is not None else None, c.requests)])
            ends = []
            for c in commits:
                if c.job is not None:
                    values = {**c.job.values, "updated_at": now_ms()}
                    ends.append((tuple(values), [*values.values(), c.job.job_id, c.job.worker]))
            for columns in dict.fromkeys(cols for cols, _ in ends):
                await self._driver(conn, raw_sql.job_update_claimed_sql(columns),
                                   [p for cols, p in ends if cols == columns], many=True)
        return [len(c.bar_rows) for c in commits]


def request_rows(run_id: int | None, records: list[RequestRecord]) -> list[dict[str, Any]]:
    return [
        {"run_id": run_id, "provider": r.provider, "symbol": r.symbol, "timeframe": r.timeframe,
         "endpoint": r.endpoint, "status": r.status, "ok": r.ok, "latency_ms": r.latency_ms,
         "attempt": r.attempt, "bars": r.bars, "at": r.at_ms, "error": r.error}
        for r in records
    ]


def _indicator_rows(key: tuple[str, str], ts: np.ndarray, values: dict[str, np.ndarray]) -> list[tuple]:
    """(symbol, timeframe, ts, value...) tuples, NaN as None, built column by column."""
    if not len(ts) or not values:
        return []
    return list(zip(repeat(key[0]), repeat(key[1]), ts.tolist(), *map(nan_to_none, values.values())))


def _ts_of(rows: list[tuple]) -> np.ndarray:
    return np.fromiter((r[0] for r in rows), np.int64, len(rows))


def _series_values(
    write: SeriesWrite, prev: SeriesRow | None, count: int, first, last, now: int,
    session: int | None = None,
) -> dict[str, Any]:
    """The new series row: counts from the table; the quality score is completeness (stored
    bars, or only those inside sessions when ``session`` counts them, over the calendar's
    expected bars) times consistency, the bar-weighted average of every batch's score."""
    s = write.series
    new_bars = len(write.bars)
    before = series_consistency(prev)
    if prev is None or before is None or prev.bar_count == 0:
        consistency = write.batch_score if new_bars else before
    else:
        penalty = (1 - before) * prev.bar_count + (1 - write.batch_score) * new_bars
        consistency = max(0.0, 1.0 - penalty / max(count, 1))
    completeness = prev.completeness if prev is not None else None
    if write.expected is not None and first is not None and last is not None:
        counted = count if session is None else session
        completeness = min(1.0, counted / max(write.expected(int(first), int(last)), 1))
    score = None if consistency is None else consistency * (1.0 if completeness is None else completeness)
    return {
        "symbol": s.symbol,
        "timeframe": s.timeframe.value,
        "asset_class": s.asset_class.value,
        "provider": write.provider,
        "synthetic": write.synthetic,
        "watermark": last,
        "first_ts": first,
        "requested_from": _earliest(write.requested_from, prev.requested_from if prev else None, first),
        "bar_count": count,
        "indicator_set": write.indicator_set,
        "quality_score": score,
        "issue_count": (prev.issue_count if prev else 0) + len(write.issues),
        "last_attempt_at": now,
        "last_success_at": now,
        "last_error": None,
        "last_checked_at": now,
        "updated_at": now,
        "full_fetched_at": write.full_fetched_at if write.full_fetched_at is not None
        else (prev.full_fetched_at if prev else None),
        "delisted_at": write.delisted_at if write.delisted_at is not None
        else (prev.delisted_at if prev else None),
        "completeness": completeness,
        "session_bars": session,
    }


def series_consistency(row: SeriesRow | None) -> float | None:
    """The consistency part of a stored score (the score over its completeness)."""
    if row is None or row.quality_score is None:
        return None
    if row.completeness is None:
        return row.quality_score
    return min(1.0, row.quality_score / row.completeness) if row.completeness > 0 else 1.0


def _earliest(*values: int | None) -> int | None:
    present = [v for v in values if v is not None]
    return min(present) if present else None
