"""The store: the only place that executes SQL. Async SQLAlchemy Core on SQLite or PostgreSQL.

Writes of one series (bars, indicators, quality issues, the watermark) happen in ONE
transaction, so a crash leaves either all of them or none.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import re
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from itertools import repeat
from pathlib import Path
from typing import Any

import numpy as np
import sqlalchemy as sa
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from enrichctl.domain import Bars, QualityIssue, Series, nan_to_none, now_ms
from enrichctl.errors import ConfigError, StoreError, TemporaryError
from enrichctl.providers.base import RequestRecord
from enrichctl.store import migrate, queries
from enrichctl.store.coordination import Coordination
from enrichctl.store.rows import (
    IssueRow,
    JobRow,
    RunRow,
    SeriesRow,
    row_to,
)
from enrichctl.store.tables import INDICATOR_KEY, indicators_table

COLUMN_RE = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
BATCH_ROWS = 5_000  # rows per executemany: bounded memory, few round trips
BAR_ROW = ("symbol", "timeframe", "ts", "open", "high", "low", "close", "volume", "vwap", "trades")


def normalise_url(url: str) -> str:
    """Accept the seed's plain ``postgresql://`` and ``sqlite:///`` URLs; use the async drivers."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise ConfigError(f"invalid database URL {url!r}") from None
    backend = parsed.get_backend_name()
    if backend in ("postgres", "postgresql"):
        parsed = parsed.set(drivername="postgresql+asyncpg")
    elif backend == "sqlite":
        parsed = parsed.set(drivername="sqlite+aiosqlite")
    else:
        raise ConfigError(f"unsupported database {backend!r}: use sqlite:/// or postgresql://")
    return parsed.render_as_string(hide_password=False)


def _sqlite_path(url: str) -> Path | None:
    database = make_url(url).database
    if not database or database == ":memory:":
        return None
    return Path(database)


def _sqlite_pragmas(dbapi_connection, _record) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA wal_autocheckpoint=10000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


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


def _to_completion(method):
    """Run a store operation to its end even when the caller is cancelled, then re-raise.

    Cancelling an aiosqlite call halfway leaves the write lock held or a SQLite transaction
    open, and the stop that cancelled it (SIGTERM) then hangs on its own bookkeeping. Each
    operation takes milliseconds, so finishing it keeps stops prompt."""

    @functools.wraps(method)
    async def wrapper(*args, **kwargs):
        task = asyncio.ensure_future(method(*args, **kwargs))
        cancelled = False
        while True:
            try:
                result = await asyncio.shield(task)
                break
            except asyncio.CancelledError:
                if task.done():
                    raise
                cancelled = True
        if cancelled:
            raise asyncio.CancelledError
        return result

    return wrapper


class Store(Coordination):
    """Open with ``await Store.open(url, indicator_columns)``; close with ``await store.close()``.

    Every public operation runs to completion once started (see ``_to_completion``)."""

    def __init__(self, engine: AsyncEngine, indicator_columns: tuple[str, ...]) -> None:
        self.engine = engine
        self.dialect = engine.dialect.name
        self.indicators = indicators_table(indicator_columns)
        self.schema_current = True
        # SQLite has one writer at a time; queue our own writers here instead of in busy-wait.
        self._write_lock = asyncio.Lock() if self.dialect == "sqlite" else None

    @classmethod
    async def open(
        cls, url: str, indicator_columns: Iterable[str] = (), *, pool_size: int = 5,
        migrate: bool = True,
    ) -> Store:
        """Connect, create the SQLite directory, apply migrations, add indicator columns."""
        async_url = normalise_url(url)
        kwargs: dict[str, Any] = {}
        if async_url.startswith("sqlite"):
            path = _sqlite_path(async_url)
            if path is not None:
                try:
                    path.parent.mkdir(parents=True, exist_ok=True)
                except OSError as exc:
                    raise ConfigError(
                        f"cannot create the database directory {path.parent}: {exc.strerror}"
                    ) from None
            kwargs["connect_args"] = {"timeout": 30}
        else:
            kwargs.update(pool_size=pool_size, max_overflow=pool_size, pool_pre_ping=True)
        engine = create_async_engine(async_url, **kwargs)
        if engine.dialect.name == "sqlite":
            sa.event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        columns = tuple(indicator_columns)
        for name in columns:
            if not COLUMN_RE.match(name):
                raise ConfigError(f"invalid indicator column name {name!r}")
        store = cls(engine, columns)
        try:
            await store._prepare(columns, migrate)
        except (DBAPIError, OSError) as exc:
            await engine.dispose()
            message = f"cannot open the database {_public(async_url)}: {_short(exc)}"
            # A server that does not answer may come back (75); a SQLite file we cannot open, or
            # a server that refuses our credentials or database name, needs a person (78).
            if engine.dialect.name == "postgresql" and _unreachable(exc):
                raise TemporaryError(message) from None
            raise ConfigError(message) from None
        except BaseException:
            await engine.dispose()
            raise
        return store

    async def _prepare(self, columns: tuple[str, ...], upgrade: bool) -> None:
        """Migrate and add indicator columns; with ``upgrade`` False (a dry run) change nothing
        and only note whether the schema is current (``schema_current``)."""
        if not upgrade:
            async with self.engine.connect() as conn:
                self.schema_current = await conn.run_sync(migrate.current_revision) == migrate.HEAD
            return
        async with self.engine.begin() as conn:
            await conn.run_sync(migrate.upgrade)
            existing = await conn.run_sync(
                lambda sync: {c["name"] for c in sa.inspect(sync).get_columns("indicators")}
            )
            for name in columns:
                if name not in existing:
                    # Validated against COLUMN_RE above: safe to interpolate.
                    await conn.exec_driver_sql(
                        f"ALTER TABLE indicators ADD COLUMN {name} DOUBLE PRECISION"
                    )

    async def close(self) -> None:
        await self.engine.dispose()

    @asynccontextmanager
    async def _read(self) -> AsyncIterator[AsyncConnection]:
        try:
            async with self.engine.connect() as conn:
                yield conn
        except SQLAlchemyError as exc:
            raise StoreError(f"database error: {_short(exc)}") from exc

    @asynccontextmanager
    async def _write(self) -> AsyncIterator[AsyncConnection]:
        """One transaction; the first statement should write (no read-then-upgrade on SQLite)."""
        try:
            if self._write_lock is None:
                async with self.engine.begin() as conn:
                    yield conn
            else:
                async with self._write_lock, self.engine.begin() as conn:
                    yield conn
        except SQLAlchemyError as exc:
            raise StoreError(f"database error: {_short(exc)}") from exc

    async def _executemany(
        self, conn: AsyncConnection, stmt, columns: tuple[str, ...], rows: list[tuple]
    ) -> None:
        """Bulk write of positional rows straight to the driver: per-row parameter processing
        by SQLAlchemy would cost more than SQLite's own work. ``columns`` names the tuple
        fields; the statement's parameter order is taken from its compiled form."""
        compiled = stmt.compile(dialect=self.engine.dialect, column_keys=list(columns))
        order = list(compiled.positiontup or ())
        if order != list(columns):
            index = [columns.index(name) for name in order]
            rows = [tuple(row[i] for i in index) for row in rows]
        sql = str(compiled)
        for start in range(0, len(rows), BATCH_ROWS):
            await conn.exec_driver_sql(sql, rows[start : start + BATCH_ROWS])

    # --- bars and indicators -----------------------------------------------------------------

    async def bars_range(self, series: Series, start: int | None = None, end: int | None = None) -> Bars:
        async with self._read() as conn:
            result = await conn.execute(
                queries.bars_select(series.symbol, series.timeframe, start, end)
            )
            return Bars.from_rows(result.all())

    async def bars_tail(self, series: Series, n: int, before: int | None = None) -> Bars:
        """The last ``n`` stored bars (before ``before``), oldest first."""
        if n <= 0:
            return Bars.empty()
        async with self._read() as conn:
            result = await conn.execute(queries.bars_tail(series.symbol, series.timeframe, n, before))
            return Bars.from_rows(reversed(result.all()))

    async def bars_duplicates(self, series: Series) -> list[tuple[int, int]]:
        async with self._read() as conn:
            rows = await conn.execute(queries.bars_duplicates(series.symbol, series.timeframe))
            return [(int(ts), int(n)) for ts, n in rows.all()]

    async def indicators_range(
        self, series: Series, start: int | None = None, end: int | None = None
    ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """(ts, {column: values}) of stored indicator rows, NULL as NaN."""
        stmt = queries.indicators_select(self.indicators, series.symbol, series.timeframe, start, end)
        async with self._read() as conn:
            rows = (await conn.execute(stmt)).all()
        names = [c.name for c in self.indicators.columns if c.name not in INDICATOR_KEY]
        if not rows:
            return np.empty(0, np.int64), {n: np.empty(0) for n in names}
        ts = np.array([r[0] for r in rows], dtype=np.int64)
        values = np.array([r[1:] for r in rows], dtype=np.float64)
        return ts, {name: values[:, i] for i, name in enumerate(names)}

    async def series_commit(
        self, write: SeriesWrite, *, task: dict[str, Any] | None = None,
        requests: list[RequestRecord] | None = None,
    ) -> int:
        """Store bars, indicators and issues of one series and move its watermark, atomically,
        with the task's record and the provider calls it made. Returns the bars written."""
        s = write.series
        now = now_ms()
        key = (s.symbol, s.timeframe.value)
        bar_rows = write.bars.rows(key)
        ind_names = tuple(write.indicators)
        ind_rows = _indicator_rows(key, write.indicator_ts, write.indicators)
        async with self._write() as conn:
            previous = None
            if not write.replace:
                # Write first (it takes SQLite's write lock), then read the row this transaction
                # will update: read-then-write could meet another process's writer in between.
                await conn.execute(queries.series_update(s.symbol, s.timeframe.value, updated_at=now))
                previous = (await conn.execute(queries.series_one(s.symbol, s.timeframe.value))).first()
            if write.replace:
                await conn.execute(queries.bars_delete(s.symbol, s.timeframe.value))
                await conn.execute(
                    queries.indicators_delete(self.indicators, s.symbol, s.timeframe.value)
                )
            await self._executemany(conn, queries.bars_upsert(self.dialect), BAR_ROW, bar_rows)
            if ind_rows:
                stmt = queries.indicators_upsert(self.dialect, self.indicators, ind_names)
                await self._executemany(conn, stmt, INDICATOR_KEY + ind_names, ind_rows)
            if write.issues:
                await conn.execute(
                    queries.issues_insert(),
                    [
                        {"run_id": write.run_id, "symbol": s.symbol, "timeframe": s.timeframe.value,
                         "kind": i.kind.value, "severity": i.severity.value, "ts": i.ts,
                         "detail": i.detail, "created_at": now}
                        for i in write.issues
                    ],
                )
            if write.replace:  # the series is exactly the bars just written
                ts = write.bars.ts
                count, first, last = len(ts), (int(ts[0]) if len(ts) else None), (int(ts[-1]) if len(ts) else None)
            else:
                count, first, last = (
                    await conn.execute(queries.bars_stats(s.symbol, s.timeframe.value))
                ).one()
            prev = None if previous is None or write.replace else row_to(SeriesRow, previous)
            await conn.execute(
                queries.series_upsert(self.dialect),
                _series_values(write, prev, int(count), first, last, now),
            )
            await self._task_and_requests(conn, task, requests or [])
        return len(bar_rows)

    async def task_record(self, task: dict[str, Any], requests: list[RequestRecord]) -> None:
        """A finished task's row and its provider calls, when no series data goes with them."""
        async with self._write() as conn:
            await self._task_and_requests(conn, task, requests)

    async def _task_and_requests(
        self, conn: AsyncConnection, task: dict[str, Any] | None, requests: list[RequestRecord]
    ) -> None:
        if task is not None:
            await conn.execute(queries.task_insert(**task))
        if requests:
            run_id = task["run_id"] if task is not None else None
            await conn.execute(queries.requests_insert(), _request_rows(run_id, requests))

    async def series_touch(self, series: Series, provider: str, synthetic: bool, **values) -> None:
        """Record an attempt/outcome on a series without storing bars (creates it if new)."""
        now = now_ms()
        async with self._write() as conn:
            updated = await conn.execute(
                queries.series_update(series.symbol, series.timeframe.value, updated_at=now, **values)
            )
            if updated.rowcount == 0:
                await conn.execute(
                    queries.series_upsert(self.dialect),
                    {"symbol": series.symbol, "timeframe": series.timeframe.value,
                     "asset_class": series.asset_class.value, "provider": provider,
                     "synthetic": synthetic, "bar_count": 0, "issue_count": 0,
                     "updated_at": now, **values},
                )

    async def series_list(self, symbol: str | None = None) -> list[SeriesRow]:
        async with self._read() as conn:
            rows = await conn.execute(queries.series_select(symbol))
            return [row_to(SeriesRow, r) for r in rows.all()]

    async def series_get(self, series: Series) -> SeriesRow | None:
        async with self._read() as conn:
            row = (await conn.execute(queries.series_one(series.symbol, series.timeframe.value))).first()
            return row_to(SeriesRow, row) if row else None

    async def issues_recent(self, symbol: str, timeframe: str | None = None, limit: int = 20) -> list[IssueRow]:
        async with self._read() as conn:
            rows = await conn.execute(queries.issues_of_series(symbol, timeframe, limit))
            return [row_to(IssueRow, r) for r in rows.all()]

    # --- runs, jobs, tasks -------------------------------------------------------------------

    async def run_create(self, **values) -> int:
        async with self._write() as conn:
            return int((await conn.execute(queries.run_insert(**values))).scalar_one())

    async def run_update(self, run_id: int, **values) -> None:
        async with self._write() as conn:
            await conn.execute(queries.run_update(run_id, **values))

    async def run_get(self, run_id: int) -> RunRow | None:
        async with self._read() as conn:
            row = (await conn.execute(queries.run_one(run_id))).first()
            return row_to(RunRow, row) if row else None

    async def runs_recent(self, limit: int) -> list[RunRow]:
        async with self._read() as conn:
            rows = await conn.execute(queries.runs_recent(limit))
            return [row_to(RunRow, r) for r in rows.all()]

    async def runs_running(self) -> list[RunRow]:
        async with self._read() as conn:
            return [row_to(RunRow, r) for r in (await conn.execute(queries.runs_running())).all()]

    async def jobs_create(self, run_id: int, instruments, up_to_date: frozenset[str] = frozenset()) -> None:
        """One pending job per instrument; those in ``up_to_date`` (nothing to fetch or compute)
        are recorded as done at once instead of going through claims."""
        now = now_ms()

        def row(i) -> dict[str, Any]:
            done = i.symbol in up_to_date
            return {"run_id": run_id, "symbol": i.symbol, "asset_class": i.asset_class.value,
                    "status": "succeeded" if done else "pending", "attempts": int(done),
                    "started_at": now if done else None, "finished_at": now if done else None,
                    "duration_ms": 0.0 if done else None, "bars_fetched": 0, "bars_written": 0,
                    "updated_at": now}

        async with self._write() as conn:
            await conn.execute(queries.job_insert(), [row(i) for i in instruments])

    async def jobs_latest(self) -> dict[str, JobRow]:
        async with self._read() as conn:
            rows = await conn.execute(queries.jobs_latest_per_symbol())
            return {r.symbol: row_to(JobRow, r) for r in rows.all()}

    async def jobs_of_symbol(self, symbol: str, limit: int = 10) -> list[JobRow]:
        async with self._read() as conn:
            rows = await conn.execute(queries.jobs_of_symbol(symbol, limit))
            return [row_to(JobRow, r) for r in rows.all()]

    async def requests_prune(self, before: int) -> None:
        async with self._write() as conn:
            await conn.execute(queries.requests_prune(before))

    async def requests_count_for_run(self, run_id: int) -> int:
        async with self._read() as conn:
            return int((await conn.execute(queries.requests_of_run(run_id))).scalar_one())

    async def requests_count_since(self, since: int, provider: str) -> int:
        async with self._read() as conn:
            return int((await conn.execute(queries.requests_since_count(since, provider))).scalar_one())

    async def metrics_raw(self, since: int) -> dict[str, Any]:
        """The aggregates behind the metrics document, over [since, now]."""
        async with self._read() as conn:
            total, ok, avg_latency = (await conn.execute(queries.metrics_requests(since))).one()
            task_row = (await conn.execute(queries.metrics_tasks(since))).one()
            issues = (await conn.execute(queries.metrics_issues(since))).all()
            score = (await conn.execute(queries.metrics_quality_score())).scalar()
        fetched, written, computations, computed_ok, avg_compute, values = task_row
        return {
            "requests_total": int(total),
            "requests_ok": int(ok),
            "avg_latency_ms": float(avg_latency) if avg_latency is not None else None,
            "bars_fetched": int(fetched),
            "bars_written": int(written),
            "computations": int(computations),
            "computations_ok": int(computed_ok),
            "avg_compute_ms": float(avg_compute) if avg_compute is not None else None,
            "indicator_values": int(values),
            "issues": [(kind, severity, int(n)) for kind, severity, n in issues],
            "quality_score": float(score) if score is not None else None,
        }

    async def prometheus_raw(self, since: int, bounds_ms: tuple[float, ...]) -> dict[str, list]:
        """The rows behind ``GET /metrics`` (see ``queries.prometheus_aggregates``)."""
        async with self._read() as conn:
            return {
                name: list((await conn.execute(stmt)).all())
                for name, stmt in queries.prometheus_aggregates(since, bounds_ms).items()
            }

for _name in dir(Store):
    _member = getattr(Store, _name)
    if inspect.iscoroutinefunction(_member) and not _name.startswith("_") and _name != "open":
        setattr(Store, _name, _to_completion(_member))


def _request_rows(run_id: int | None, records: list[RequestRecord]) -> list[dict[str, Any]]:
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


def _series_values(
    write: SeriesWrite, prev: SeriesRow | None, count: int, first, last, now: int
) -> dict[str, Any]:
    """The new series row: counts from the table, the quality score as the bar-weighted average
    of the scores of every batch stored."""
    s = write.series
    new_bars = len(write.bars)
    if prev is None or prev.quality_score is None or prev.bar_count == 0:
        score = write.batch_score if new_bars else (prev.quality_score if prev else None)
    else:
        penalty = (1 - prev.quality_score) * prev.bar_count + (1 - write.batch_score) * new_bars
        score = max(0.0, 1.0 - penalty / max(count, 1))
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
    }


def _unreachable(exc: BaseException) -> bool:
    """The server could not be reached (refused, timed out, name unknown), as opposed to a
    server that answered with an error."""
    if isinstance(exc, OSError):
        return True
    orig = getattr(exc, "orig", None)
    text = str(orig if orig is not None else exc).lower()
    return isinstance(orig, OSError) or any(
        word in text for word in ("connect call failed", "connection refused", "timeout",
                                  "could not connect", "name or service not known")
    )


def _public(url: str) -> str:
    """The URL as it may be shown: no password, plain scheme."""
    parsed = make_url(url)
    return parsed.set(drivername=parsed.get_backend_name()).render_as_string(hide_password=True)


def _earliest(*values: int | None) -> int | None:
    present = [v for v in values if v is not None]
    return min(present) if present else None


def _short(exc: BaseException) -> str:
    """The driver's message without SQLAlchemy's statement dump and background link."""
    orig = getattr(exc, "orig", None)
    text = str(orig if orig is not None else exc)
    return text.splitlines()[0] if text else type(exc).__name__
