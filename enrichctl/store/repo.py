"""The store: the only place that executes SQL. Async SQLAlchemy Core on SQLite or PostgreSQL.

Writes of one series (bars, indicators, quality issues, the watermark) happen in ONE
transaction, so a crash leaves either all of them or none.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import os
import re
import sqlite3
from collections.abc import AsyncIterator, Callable, Iterable
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

from enrichctl.domain import Bars, QualityIssue, RequestRecord, Series, nan_to_none, now_ms
from enrichctl.errors import (
    ConfigError,
    StoreConflict,
    StoreDamaged,
    StoreError,
    StoreFault,
    StoreLost,
    StoreUnavailable,
    TemporaryError,
)
from enrichctl.store import migrate, queries, tables
from enrichctl.store.coordination import Coordination
from enrichctl.store.groupcommit import GroupCommit
from enrichctl.store.reference import ReferenceStore
from enrichctl.store.rows import (
    IssueRow,
    JobRow,
    QuotaRow,
    RunRow,
    SeriesRow,
    TaskRow,
    row_to,
)
from enrichctl.store.tables import INDICATOR_KEY, indicators_table

COLUMN_RE = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
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


def sqlite_path(url: str | None) -> Path | None:
    """The file of a SQLite URL as written (relative stays relative); None for another backend,
    an in-memory database, no URL or one that does not parse."""
    if not url or not url.startswith("sqlite"):
        return None
    try:
        database = make_url(url).database
    except ArgumentError:
        return None
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
    # Bars the asset class's calendar expects from the series' first bar to its last (None: no
    # grid to count on); with the stored count it gives the completeness the score multiplies.
    expected: Callable[[int, int], int] | None = None
    # Which bar starts lie inside the calendar's sessions (None: every bar counts): completeness
    # counts only those, so extended-hours bars cannot stand in for missing session bars.
    in_session: Callable[[np.ndarray], np.ndarray] | None = None
    delisted_at: int | None = None  # the reference data marks the ticker inactive
    full_fetched_at: int | None = None  # market time of a fetch of every bar (a split after it matters)


@dataclass(frozen=True, slots=True)
class _Commit:
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


class Store(Coordination, ReferenceStore):
    """Open with ``await Store.open(url, indicator_columns)``; close with ``await store.close()``.

    Every public operation runs to completion once started (see ``_to_completion``)."""

    def __init__(self, engine: AsyncEngine, indicator_columns: tuple[str, ...]) -> None:
        self.engine = engine
        self.dialect = engine.dialect.name
        self.indicators = indicators_table(indicator_columns)
        self.schema_current = True
        # SQLite has one writer at a time; queue our own writers here instead of in busy-wait.
        self._write_lock = asyncio.Lock() if self.dialect == "sqlite" else None
        self._errors = (SQLAlchemyError, *_driver_errors(self.dialect))
        # The SQLite file as opened: (path, device, inode), checked before every commit.
        self._file: tuple[Path, int, int] | None = None
        self._commits: GroupCommit[_Commit, int] = GroupCommit(self._commit_many)

    @classmethod
    async def open(
        cls, url: str, indicator_columns: Iterable[str] = (), *, pool_size: int = 5,
        migrate: bool = True,
    ) -> Store:
        """Connect, create the SQLite directory, apply migrations, add indicator columns."""
        async_url = normalise_url(url)
        kwargs: dict[str, Any] = {}
        if async_url.startswith("sqlite"):
            path = sqlite_path(async_url)
            if path is not None:
                try:
                    path.parent.mkdir(parents=True, exist_ok=True)
                except OSError as exc:
                    raise ConfigError(
                        f"cannot create the database directory {path.parent}: {exc.strerror}"
                    ) from None
                _sqlite_probe(path, _public(async_url))
            kwargs["connect_args"] = {"timeout": 30}
            # Connection.close() has rolled back already: a second rollback on return to the
            # pool would be one more round trip to aiosqlite's thread for every use.
            kwargs["pool_reset_on_return"] = None
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
            if (path := sqlite_path(async_url) if engine.dialect.name == "sqlite" else None) is not None:
                message += _directory_cause(path)
            # A server that does not answer may come back (75); a SQLite file we cannot open, or
            # a server that refuses our credentials or database name, needs a person (78).
            if engine.dialect.name == "postgresql" and _unreachable(exc):
                raise TemporaryError(message) from None
            raise ConfigError(message) from None
        except BaseException:
            await engine.dispose()
            raise
        path = sqlite_path(async_url) if store.dialect == "sqlite" else None
        if path is not None and migrate:
            opened = path.stat()
            store._file = (path, opened.st_dev, opened.st_ino)
        return store

    def _file_check(self) -> None:
        """Raise ``StoreLost`` when the path no longer names the file we opened: a commit
        would go to a file nobody will read again (deleted with its directory, replaced)."""
        if self._file is None:
            return
        path, dev, ino = self._file
        try:
            now = path.stat()
        except OSError:
            now = None
        if now is None or (now.st_dev, now.st_ino) != (dev, ino):
            raise StoreLost(f"the database file {path} was removed or replaced while enrichctl "
                            "had it open; what this run wrote since then is not in it")

    async def _prepare(self, columns: tuple[str, ...], upgrade: bool) -> None:
        """Migrate and add indicator columns; with ``upgrade`` False (a dry run) change nothing
        and only note whether the schema is current (``schema_current``)."""
        if not upgrade:
            async with self.engine.connect() as conn:
                self.schema_current = await conn.run_sync(migrate.current_revision) == migrate.HEAD
            return
        async with self.engine.connect() as conn:
            if await conn.run_sync(_schema_ready, columns):
                return
        # One transaction under the schema lock: a kill leaves the old schema, a process that
        # started at the same moment waits and then finds everything done.
        async with self.engine.begin() as conn:
            await conn.run_sync(migrate.lock_schema)
            await conn.run_sync(migrate.upgrade)
            existing = await conn.run_sync(_indicator_columns)
            for name in columns:
                if name not in existing:
                    # Validated against COLUMN_RE above: safe to interpolate.
                    await conn.exec_driver_sql(
                        f"ALTER TABLE indicators ADD COLUMN {name} DOUBLE PRECISION"
                    )

    async def close(self) -> None:
        await self.engine.dispose()

    async def integrity_check(self) -> None:
        """Raise ``StoreDamaged`` when SQLite's ``PRAGMA quick_check`` finds the file damaged
        (it reads every page: a page overwritten with garbage does not pass). PostgreSQL checks
        its own pages as it reads them; nothing to do there."""
        if self.dialect != "sqlite":
            return
        where = sqlite_path(str(self.engine.url)) or "in memory"
        try:
            async with self.engine.connect() as conn:
                found = [r[0] for r in (await conn.exec_driver_sql("PRAGMA quick_check(3)")).all()]
        except self._errors as exc:  # damage that stops the check itself
            found = [_short(exc)]
        if found != ["ok"]:
            problems = "; ".join(str(f).replace("\n", " ") for f in found)
            raise StoreDamaged(f"the database file {where} is damaged (quick_check: {problems})")

    @asynccontextmanager
    async def _read(self) -> AsyncIterator[AsyncConnection]:
        try:
            async with self.engine.connect() as conn:
                yield conn
        except self._errors as exc:
            raise store_error(exc) from exc

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
                    self._file_check()  # before the commit: a lost file takes no more writes
        except self._errors as exc:
            raise store_error(exc) from exc

    async def _bulk_upsert(
        self, conn: AsyncConnection, table: str, columns: tuple[str, ...], rows: list[tuple]
    ) -> None:
        """Upsert positional ``rows`` (of ``columns``) straight through the driver, inside the
        transaction of ``conn``: SQLite gets one ``executemany`` on its own connection (one hop
        to aiosqlite's thread for the whole batch), PostgreSQL one COPY into a staging table and
        one INSERT ... ON CONFLICT from it."""
        if not rows:
            return
        raw = (await conn.get_raw_connection()).driver_connection
        if self.dialect == "sqlite":
            cursor = await raw.executemany(queries.bulk_upsert_sqlite(table, INDICATOR_KEY, columns), rows)
            await cursor.close()
            return
        types = {c: "double precision" for c in columns} | {
            "symbol": "text", "timeframe": "text", "ts": "bigint", "trades": "bigint"}
        await raw.execute(queries.staging_create(table, columns, types))
        await raw.copy_records_to_table(queries.staging_name(table, columns), records=rows,
                                        columns=list(columns))
        await raw.execute(queries.staging_upsert(table, INDICATOR_KEY, columns))

    async def _driver(self, conn: AsyncConnection, sql: str, params: list | tuple = (),
                      many: bool = False) -> list[tuple]:
        """One statement (``?`` placeholders; ``many``: a list of parameter rows) straight
        through the driver, inside the transaction of ``conn``: one hop to aiosqlite's thread
        where SQLAlchemy's adapter takes several. Returns the rows it gives."""
        raw = (await conn.get_raw_connection()).driver_connection
        sql = queries.driver_sql(self.dialect, sql)
        if self.dialect == "sqlite":
            if many:
                await (await raw.executemany(sql, params)).close()
                return []
            return list(await raw.execute_fetchall(sql, params))
        if not raw.is_in_transaction():
            # SQLAlchemy's asyncpg adapter begins its transaction with its first statement.
            await conn.execute(sa.text("SELECT 1"))
        if many:
            await raw.executemany(sql, params)
            return []
        return [tuple(r) for r in await raw.fetch(sql, *params)]

    # --- bars and indicators -----------------------------------------------------------------

    async def bars_range(self, series: Series, start: int | None = None, end: int | None = None) -> Bars:
        sql = queries.bars_select_sql(self.dialect, start, end)
        return Bars.from_rows(await self._bars_fetch(sql, series, start, end))

    async def bars_tail(self, series: Series, n: int, before: int | None = None) -> Bars:
        """The last ``n`` stored bars (before ``before``), oldest first."""
        if n <= 0:
            return Bars.empty()
        sql = queries.bars_select_sql(self.dialect, None, None, before, newest=n)
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

    @property
    def indicator_names(self) -> tuple[str, ...]:
        """The stored indicator columns."""
        return tuple(c.name for c in self.indicators.columns if c.name not in INDICATOR_KEY)

    async def bars_range_count(self, series: Series, start: int | None, end: int | None) -> int:
        async with self._read() as conn:
            return int((await conn.execute(
                queries.bars_range_count(series.symbol, series.timeframe, start, end))).scalar_one())

    async def bars_range_ends(self, series: Series, start: int | None, end: int | None
                              ) -> tuple[int | None, int | None]:
        """(first ts, last ts) of the stored bars in [start, end]."""
        async with self._read() as conn:
            first, last = (await conn.execute(
                queries.bars_range_ends(series.symbol, series.timeframe, start, end))).one()
        return first, last

    async def bars_more_than(self, series: Series, start: int | None, end: int | None, n: int) -> bool:
        async with self._read() as conn:
            found = (await conn.execute(
                queries.bars_nth_ts(series.symbol, series.timeframe, start, end, n))).first()
        return found is not None

    async def bars_page(self, series: Series, start: int | None, end: int | None, limit: int) -> Bars:
        async with self._read() as conn:
            result = await conn.execute(queries.bars_page(series.symbol, series.timeframe, start, end, limit))
            return Bars.from_rows(result.all())

    async def bars_bucketed(self, series: Series, start: int | None, end: int | None,
                            origin: int, bucket_ms: int) -> tuple[Bars, np.ndarray, int]:
        """Bars merged into time buckets, the ts of each bucket's last bar, and how many bars
        they merge."""
        stmt = queries.bars_bucketed(series.symbol, series.timeframe, start, end, origin, bucket_ms)
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
                stmt = queries.indicators_at(self.indicators, series.symbol, series.timeframe,
                                             ts[at:at + 900])
                rows.extend((await conn.execute(stmt)).all())
        if not rows:
            return np.empty(0, np.int64), {n: np.empty(0) for n in names}
        values = np.array([r[1:] for r in rows], dtype=np.float64)
        return (np.array([r[0] for r in rows], dtype=np.int64),
                {name: values[:, i] for i, name in enumerate(names)})

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
        commit = _Commit(write, task, requests or [], job, write.bars.rows(key),
                         _indicator_rows(key, write.indicator_ts, write.indicators))
        return await self._commit_one(commit, key)

    async def _commit_one(self, commit: _Commit, key: tuple[str, str] | None) -> int:
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
        stored = _ts_of(await self._driver(conn, queries.bars_ts_sql(False), key))
        return int(np.count_nonzero(mask(stored)))

    async def task_record(
        self, task: dict[str, Any], requests: list[RequestRecord], job: JobEnd | None = None
    ) -> None:
        """A finished task's row and its provider calls (and the job's end, for its last task),
        when no series data goes with them."""
        await self._commit_one(_Commit(None, task, requests, job), None)

    async def _commit_many(self, commits: list[_Commit]) -> list[int]:
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
                touched = await conn.execute(queries.series_touch_many_returning(extending, now))
                previous = {(r.symbol, r.timeframe): row_to(SeriesRow, r) for r in touched.all()}
            for (symbol, timeframe), w in keyed:
                if w.replace:
                    # Replaced whole (a refetch, another provider): its old issues go with its bars.
                    await conn.execute(queries.issues_delete_series(symbol, timeframe))
                    await conn.execute(queries.bars_delete(symbol, timeframe))
                    await conn.execute(queries.indicators_delete(self.indicators, symbol, timeframe))
            # The stored bars the new ones may overwrite: the session count moves by the difference.
            near: dict[tuple[str, str], np.ndarray] = {}
            for key, w in keyed:
                if w.in_session is not None and not w.replace and len(w.bars):
                    bounds = (int(w.bars.ts.min()), int(w.bars.ts.max()))
                    near[key] = _ts_of(await self._driver(conn, queries.bars_ts_sql(True), (*key, *bounds)))
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
                await conn.execute(queries.issues_insert(), issues)
            series_rows = []
            for key, w in keyed:
                if w.replace:  # the series is exactly the bars just written
                    ts = w.bars.ts
                    count, first, last = len(ts), (int(ts[0]) if len(ts) else None), (int(ts[-1]) if len(ts) else None)
                else:
                    ((count, first, last),) = await self._driver(conn, queries.bars_stats_sql(), key)
                prev = None if w.replace else previous.get(key)
                session = await self._session_count(conn, w, prev, key, near.get(key))
                series_rows.append(queries.row_values(
                    tables.series, _series_values(w, prev, int(count), first, last, now, session),
                    every=True))
            await self._driver_grouped(conn, tables.series, series_rows, ("symbol", "timeframe"))
            await self._driver_grouped(conn, tables.tasks, [
                queries.row_values(tables.tasks, c.task) for c in commits if c.task is not None])
            await self._driver_grouped(conn, tables.requests, [
                queries.row_values(tables.requests, r) for c in commits
                for r in _request_rows(c.task["run_id"] if c.task is not None else None, c.requests)])
            ends = []
            for c in commits:
                if c.job is not None:
                    values = {**c.job.values, "updated_at": now_ms()}
                    ends.append((tuple(values), [*values.values(), c.job.job_id, c.job.worker]))
            for columns in dict.fromkeys(cols for cols, _ in ends):
                await self._driver(conn, queries.job_update_claimed_sql(columns),
                                   [p for cols, p in ends if cols == columns], many=True)
        return [len(c.bar_rows) for c in commits]

    async def _driver_grouped(
        self, conn: AsyncConnection, table: sa.Table, rows: list[tuple[tuple[str, ...], list]],
        key: tuple[str, ...] = (),
    ) -> None:
        """INSERT (or, with ``key``, upsert) (columns, parameters) rows: one executemany per
        column list."""
        for columns in dict.fromkeys(cols for cols, _ in rows):
            await self._driver(conn, queries.row_insert_sql(table, columns, key),
                               [params for cols, params in rows if cols == columns], many=True)

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
                stmt = queries.series_overlap_starts(pairs[at:at + 450], n)
                for symbol, timeframe, ts in (await conn.execute(stmt)).all():
                    found[wanted[(symbol, timeframe)]] = None if ts is None else int(ts)
        return found

    async def series_get(self, series: Series) -> SeriesRow | None:
        async with self._read() as conn:
            row = (await conn.execute(queries.series_one(series.symbol, series.timeframe.value))).first()
            return row_to(SeriesRow, row) if row else None

    async def issues_recent(self, symbol: str, timeframe: str | None = None, limit: int = 20) -> list[IssueRow]:
        async with self._read() as conn:
            rows = await conn.execute(queries.issues_of_series(symbol, timeframe, limit))
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
            await conn.execute(queries.series_lock(*key))
            row = (await conn.execute(queries.series_one(*key))).first()
            if row is None or not issues:
                return 0
            known: set[tuple] = set()
            for kind in {i.kind.value for i in issues}:
                found = await conn.execute(queries.issues_of_kind(*key, kind))
                known.update((kind, ts, detail) for ts, detail in found.all())
            new = [i for i in issues if (i.kind.value, i.ts, i.detail) not in known]
            if not new:
                return 0
            await conn.execute(queries.issues_insert(), [
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
            await conn.execute(queries.series_update(*key, **values))
            return len(new)

    async def series_with_issues(self, kinds: tuple[str, ...]) -> set[tuple[str, str]]:
        """(symbol, timeframe) of every series with an open issue of one of ``kinds``."""
        async with self._read() as conn:
            return {(s, t) for s, t in (await conn.execute(queries.issues_series_with(kinds))).all()}

    async def requests_record(self, requests: list[RequestRecord]) -> None:
        """Provider calls made outside a run (``verify --against-provider``)."""
        if requests:
            async with self._write() as conn:
                await conn.execute(queries.requests_insert(), _request_rows(None, requests))

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

    async def runs_last_succeeded_at(self) -> int | None:
        async with self._read() as conn:
            return (await conn.execute(queries.runs_last_succeeded_at())).scalar()

    async def runs_running(self) -> list[RunRow]:
        async with self._read() as conn:
            return [row_to(RunRow, r) for r in (await conn.execute(queries.runs_running())).all()]

    async def jobs_create(self, run_id: int, instruments, up_to_date: frozenset[str] = frozenset()) -> None:
        """One pending job per instrument; those in ``up_to_date`` (nothing to fetch or compute)
        are recorded as done at once instead of going through claims."""
        now = now_ms()
        async with self._write() as conn:
            await conn.execute(queries.job_insert(), [_job_row(run_id, i, i.symbol in up_to_date, now)
                                                      for i in instruments])

    async def jobs_add(self, run_id: int, instruments) -> bool:
        """Add pending jobs (those the run lacks) to a run that is still running; False when it
        has closed meanwhile. Serialised with ``run_finalize``: a run never closes over them."""
        now = now_ms()
        async with self._write() as conn:
            if self.dialect == "postgresql":
                await conn.execute(sa.text(queries.RUN_JOBS_LOCK), {"run_id": run_id})
            if (await conn.execute(queries.run_jobs_grow(run_id, len(instruments)))).rowcount != 1:
                return False
            await conn.execute(queries.job_insert_missing(self.dialect),
                               [_job_row(run_id, i, False, now) for i in instruments])
            return True

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

    async def requests_quota(self, since: int, window_since: int, provider: str) -> QuotaRow:
        """``provider``'s requests since ``window_since`` (its quota window) and its 429s then
        and since ``since``."""
        async with self._read() as conn:
            row = (await conn.execute(queries.requests_quota(since, window_since, provider))).one()
        return QuotaRow(int(row.window_requests), int(row.window_refused), int(row.refused),
                        int(row.last_refused_at) if row.last_refused_at is not None else None)

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

    # --- the inventory: removing a series, one run in detail ----------------------------------

    async def series_remove(self, symbol: str, timeframe: str | None) -> dict[str, int]:
        """Delete a series (or every series of ``symbol``) and every row about it, in one
        transaction; the symbol's job records go too once none of its series is left.
        Returns the rows deleted per kind."""
        async with self._write() as conn:
            counts = {
                kind: int((await conn.execute(stmt)).rowcount or 0)
                for kind, stmt in queries.series_remove_statements(self.indicators, symbol, timeframe).items()
            }
            left = int((await conn.execute(queries.series_count_of_symbol(symbol))).scalar_one())
            jobs = await conn.execute(queries.jobs_of_symbol_delete(symbol)) if left == 0 else None
            counts["jobs"] = int(jobs.rowcount or 0) if jobs is not None else 0
        return counts

    async def tasks_of_run(self, run_id: int) -> list[TaskRow]:
        async with self._read() as conn:
            return [row_to(TaskRow, r) for r in (await conn.execute(queries.tasks_of_run(run_id))).all()]

    async def requests_of_run_by_series(self, run_id: int) -> list[tuple[str | None, str | None, int, int, float | None]]:
        async with self._read() as conn:
            rows = (await conn.execute(queries.requests_of_run_by_series(run_id))).all()
            return [(s, t, int(n), int(bad or 0), float(ms) if ms is not None else None) for s, t, n, bad, ms in rows]

    async def runs_with_status(self, status: str, limit: int) -> list[RunRow]:
        async with self._read() as conn:
            return [row_to(RunRow, r) for r in (await conn.execute(queries.runs_with_status(status, limit))).all()]


for _name in dir(Store):
    _member = getattr(Store, _name)
    if inspect.iscoroutinefunction(_member) and not _name.startswith("_") and _name != "open":
        setattr(Store, _name, _to_completion(_member))


def _job_row(run_id: int, instrument, done: bool, now: int) -> dict[str, Any]:
    return {"run_id": run_id, "symbol": instrument.symbol, "asset_class": instrument.asset_class.value,
            "status": "succeeded" if done else "pending", "attempts": int(done),
            "started_at": now if done else None, "finished_at": now if done else None,
            "duration_ms": 0.0 if done else None, "bars_fetched": 0, "bars_written": 0,
            "updated_at": now}


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


def _indicator_columns(sync: sa.Connection) -> set[str]:
    return {c["name"] for c in sa.inspect(sync).get_columns("indicators")}


def _schema_ready(sync: sa.Connection, columns: tuple[str, ...]) -> bool:
    """The schema is at head with every configured indicator column (read only)."""
    if migrate.current_revision(sync) != migrate.HEAD:
        return False
    return set(columns) <= _indicator_columns(sync)


def series_consistency(row: SeriesRow | None) -> float | None:
    """The consistency part of a stored score (the score over its completeness)."""
    if row is None or row.quality_score is None:
        return None
    if row.completeness is None:
        return row.quality_score
    return min(1.0, row.quality_score / row.completeness) if row.completeness > 0 else 1.0


def _driver_errors(dialect: str) -> tuple[type[BaseException], ...]:
    """The errors of the driver itself, which the bulk paths meet without SQLAlchemy between
    (SQLAlchemy wraps them everywhere else): a StoreError like any other database error."""
    if dialect == "sqlite":
        return (sqlite3.Error,)
    import asyncpg

    return (asyncpg.PostgresError, asyncpg.InterfaceError, OSError)


def _sqlite_probe(path: Path, public_url: str) -> None:
    """Open the file once with the standard driver first: aiosqlite (0.22) leaves the worker
    thread of a connection that failed to open to report to an event loop that may have closed
    by then, a traceback after the error line. ConfigError naming the cause."""
    try:
        sqlite3.connect(path).close()
    except sqlite3.Error as exc:
        raise ConfigError(f"cannot open the database {public_url}: {exc}{_directory_cause(path)}") from None


def _directory_cause(path: Path) -> str:
    """Why SQLite cannot open ``path`` when its directory is the reason ("unable to open database
    file" says nothing): it creates its journal files beside the database, so a read-only or
    immutable directory stops it even when the file itself is writable. Empty otherwise."""
    directory = path.parent
    if not directory.is_dir() or os.access(directory, os.W_OK):
        return ""
    if os.statvfs(directory).f_flag & os.ST_RDONLY:
        return f" (the directory {directory} is on a read-only file system)"
    return (f" (the directory {directory} is not writable: read-only or immutable; SQLite creates "
            f"its journal files beside {path.name})")


# SQLite's words for faults no retry mends (a read-only or immutable file or directory, a full
# disk, a damaged file); pysqlite gives them all the same exception classes.
_SQLITE_FAULTS = ("readonly database", "disk is full", "disk i/o error", "unable to open database",
                  "malformed", "not a database", "readonly", "read-only")
# SQLSTATEs of PostgreSQL faults that need a person: disk full, out of memory, read-only
# transaction (a standby). Too many connections (53300) is not one: it passes.
_PG_FAULTS = ("53100", "53200", "25006")
# SQLSTATEs of a lost or refused connection besides class 08 (connection exception): admin
# shutdown (pg_terminate_backend, a restart), crash shutdown, cannot connect now.
_PG_UNAVAILABLE = ("57P01", "57P02", "57P03")


def _causes(exc: BaseException) -> list[BaseException]:
    """``exc``, the driver error SQLAlchemy wrapped, and what caused them."""
    seen: list[BaseException] = []
    todo: list[BaseException | None] = [exc]
    while todo:
        e = todo.pop()
        if e is None or any(e is s for s in seen):
            continue
        seen.append(e)
        todo += [getattr(e, "orig", None), e.__cause__, e.__context__]
    return seen


def store_error(exc: BaseException) -> StoreError:
    """Map a driver or SQLAlchemy error onto the store's error tree, by what the caller does:
    a lost connection passes (75), a read-only file or a full disk needs a person (78), a unique
    constraint means somebody else just wrote the same row."""
    message = f"database error: {_short(exc)}"
    lost = f"database connection lost: {_short(exc)}"
    causes = _causes(exc)
    if isinstance(exc, sa.exc.IntegrityError) or any(
        type(e).__name__.endswith("IntegrityError") or _sqlstate(e).startswith("23") for e in causes
    ):
        return StoreConflict(message)
    for e in causes:
        state = _sqlstate(e)
        if state in _PG_FAULTS:
            return StoreFault(message)
        if state[:2] == "08" or state in _PG_UNAVAILABLE:
            return StoreUnavailable(lost)
    if any(isinstance(e, (OSError, sa.exc.DisconnectionError)) or _connection_gone(e) for e in causes):
        return StoreUnavailable(lost)
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return StoreUnavailable(lost)
    text = " ".join(str(e).lower() for e in causes)
    if any(type(e).__module__ == "sqlite3" for e in causes):
        if any(word in text for word in _SQLITE_FAULTS):
            return StoreFault(message)
    return StoreError(message)


def _sqlstate(exc: BaseException) -> str:
    state = getattr(exc, "sqlstate", None) or getattr(exc, "pgcode", None)
    return state if isinstance(state, str) else ""


def _connection_gone(exc: BaseException) -> bool:
    """asyncpg's words for a connection that closed under us (no SQLSTATE: nothing answered)."""
    name = type(exc).__name__
    text = str(exc).lower()
    return name in ("ConnectionDoesNotExistError", "ConnectionFailureError") or (
        name == "InterfaceError" and ("connection is closed" in text or "connection was closed" in text)
    ) or "connection was closed in the middle of operation" in text


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
