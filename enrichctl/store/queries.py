"""Every SQL statement the store runs, named. Only ``repo.py`` executes them.

Statements are SQLAlchemy Core, portable between SQLite and PostgreSQL; the two upserts that
need ``ON CONFLICT`` pick the dialect's insert construct.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from enrichctl.domain import JOB_UNFINISHED
from enrichctl.store.tables import (
    bars,
    control,
    jobs,
    leases,
    quality_issues,
    rate_events,
    requests,
    runs,
    series,
    tasks,
    workers,
)


def _insert(dialect: str, table: sa.Table):
    return postgresql.insert(table) if dialect == "postgresql" else sqlite.insert(table)


def upsert(
    dialect: str, table: sa.Table, key: tuple[str, ...], columns: tuple[str, ...] | None = None
) -> sa.Insert:
    """INSERT ... ON CONFLICT (key) DO UPDATE SET every other column (or ``columns``) = excluded."""
    stmt = _insert(dialect, table)
    names = columns if columns is not None else tuple(c.name for c in table.columns)
    return stmt.on_conflict_do_update(
        index_elements=list(key),
        set_={name: stmt.excluded[name] for name in names if name not in key},
    )


# --- bars ------------------------------------------------------------------------------------

BAR_COLUMNS = (bars.c.ts, bars.c.open, bars.c.high, bars.c.low, bars.c.close, bars.c.volume,
               bars.c.vwap, bars.c.trades)


def bars_upsert(dialect: str) -> sa.Insert:
    return upsert(dialect, bars, ("symbol", "timeframe", "ts"))


def bars_select(symbol: str, timeframe: str, start: int | None = None, end: int | None = None):
    stmt = sa.select(*BAR_COLUMNS).where(bars.c.symbol == symbol, bars.c.timeframe == timeframe)
    if start is not None:
        stmt = stmt.where(bars.c.ts >= start)
    if end is not None:
        stmt = stmt.where(bars.c.ts <= end)
    return stmt.order_by(bars.c.ts)


def bars_tail(symbol: str, timeframe: str, n: int, before: int | None = None):
    """The last ``n`` bars (before ``before`` when given), newest first."""
    stmt = sa.select(*BAR_COLUMNS).where(bars.c.symbol == symbol, bars.c.timeframe == timeframe)
    if before is not None:
        stmt = stmt.where(bars.c.ts < before)
    return stmt.order_by(bars.c.ts.desc()).limit(n)


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


# --- indicators ------------------------------------------------------------------------------


def indicators_upsert(dialect: str, table: sa.Table, columns: tuple[str, ...]) -> sa.Insert:
    """Upsert of the key and ``columns``; other indicator columns keep their values."""
    return upsert(dialect, table, ("symbol", "timeframe", "ts"), ("symbol", "timeframe", "ts", *columns))


def indicators_select(table: sa.Table, symbol: str, timeframe: str, start=None, end=None):
    cols = [c for c in table.columns if c.name not in ("symbol", "timeframe")]
    stmt = sa.select(*cols).where(table.c.symbol == symbol, table.c.timeframe == timeframe)
    if start is not None:
        stmt = stmt.where(table.c.ts >= start)
    if end is not None:
        stmt = stmt.where(table.c.ts <= end)
    return stmt.order_by(table.c.ts)


def indicators_delete(table: sa.Table, symbol: str, timeframe: str):
    return sa.delete(table).where(table.c.symbol == symbol, table.c.timeframe == timeframe)


# --- series ----------------------------------------------------------------------------------


def series_upsert(dialect: str) -> sa.Insert:
    return upsert(dialect, series, ("symbol", "timeframe"))


def series_select(symbol: str | None = None):
    stmt = sa.select(series)
    if symbol is not None:
        stmt = stmt.where(series.c.symbol == symbol)
    return stmt.order_by(series.c.symbol, series.c.timeframe)


def series_one(symbol: str, timeframe: str):
    return sa.select(series).where(series.c.symbol == symbol, series.c.timeframe == timeframe)


def series_update(symbol: str, timeframe: str, **values):
    return (
        sa.update(series)
        .where(series.c.symbol == symbol, series.c.timeframe == timeframe)
        .values(**values)
    )


# --- runs, jobs, tasks -----------------------------------------------------------------------


def run_insert(**values):
    return sa.insert(runs).values(**values).returning(runs.c.id)


def run_update(run_id: int, **values):
    return sa.update(runs).where(runs.c.id == run_id).values(**values)


def run_one(run_id: int):
    return sa.select(runs).where(runs.c.id == run_id)


def runs_recent(limit: int):
    return sa.select(runs).order_by(runs.c.id.desc()).limit(limit)


def runs_running():
    return sa.select(runs).where(runs.c.status == "running")


def runs_abandon(run_ids: list[int], now: int, reason: str):
    return (
        sa.update(runs)
        .where(runs.c.id.in_(run_ids), runs.c.status == "running")
        .values(status="abandoned", finished_at=now, error=reason)
    )


def jobs_unfinished_cancel(run_ids: list[int], now: int, reason: str):
    return (
        sa.update(jobs)
        .where(jobs.c.run_id.in_(run_ids), jobs.c.status.in_(JOB_UNFINISHED))
        .values(status="cancelled", finished_at=now, updated_at=now, error=reason,
                claimed_by=None, lease_expires_at=None)
    )


def job_insert():
    return sa.insert(jobs)




def job_claimable(run_id: int, now: int):
    """The next job nobody holds: pending, or claimed by a worker whose lease lapsed. On
    PostgreSQL, SKIP LOCKED lets many workers claim at once without waiting on each other."""
    lapsed = jobs.c.status.in_(("running", "retrying")) & (jobs.c.lease_expires_at < now)
    return (
        sa.select(jobs.c.id)
        .where(jobs.c.run_id == run_id, (jobs.c.status == "pending") | lapsed)
        .order_by(jobs.c.id)
        .limit(1)
        .with_for_update(skip_locked=True)
    )


def job_claim(job_id: int, worker: str, now: int, expires: int):
    return (
        sa.update(jobs)
        .where(jobs.c.id == job_id)
        .values(status="running", claimed_by=worker, lease_expires_at=expires, updated_at=now,
                started_at=sa.func.coalesce(jobs.c.started_at, now))
        .returning(*jobs.c)
    )


def job_update_claimed(job_id: int, worker: str, **values):
    """Update a job only while this worker still holds it (a lapsed claim may be re-taken)."""
    return sa.update(jobs).where(jobs.c.id == job_id, jobs.c.claimed_by == worker).values(**values)


def jobs_renew(worker: str, expires: int):
    return (
        sa.update(jobs)
        .where(jobs.c.claimed_by == worker, jobs.c.status.in_(("running", "retrying")))
        .values(lease_expires_at=expires)
    )


def jobs_release(worker: str, now: int, job_ids: list[int] | None = None):
    """Give this worker's unfinished jobs back (all of them: a graceful stop with other workers
    alive; or ``job_ids``: orphans no slot works on)."""
    stmt = sa.update(jobs).where(
        jobs.c.claimed_by == worker, jobs.c.status.in_(("running", "retrying"))
    )
    if job_ids is not None:
        stmt = stmt.where(jobs.c.id.in_(job_ids))
    return stmt.values(status="pending", claimed_by=None, lease_expires_at=None, updated_at=now)


def jobs_claimed_unheld(run_id: int, worker: str, held: frozenset[int]):
    """(id, updated_at) of the jobs this worker claimed that none of its slots works on."""
    stmt = sa.select(jobs.c.id, jobs.c.updated_at).where(
        jobs.c.run_id == run_id, jobs.c.claimed_by == worker,
        jobs.c.status.in_(("running", "retrying")),
    )
    return stmt.where(jobs.c.id.not_in(sorted(held))) if held else stmt


def jobs_fail_pending(run_id: int, now: int, error: str):
    return (
        sa.update(jobs)
        .where(jobs.c.run_id == run_id, jobs.c.status == "pending")
        .values(status="failed", finished_at=now, updated_at=now, error=error)
    )


def jobs_status_counts(run_id: int):
    return (
        sa.select(jobs.c.status, sa.func.count(), sa.func.coalesce(sa.func.sum(jobs.c.bars_fetched), 0),
                  sa.func.coalesce(sa.func.sum(jobs.c.bars_written), 0))
        .where(jobs.c.run_id == run_id)
        .group_by(jobs.c.status)
    )


def jobs_unfinished_elsewhere(run_id: int, worker: str):
    """Unfinished jobs of the run that this worker does not hold."""
    mine = jobs.c.claimed_by == worker
    return sa.select(sa.func.count()).where(
        jobs.c.run_id == run_id, jobs.c.status.in_(JOB_UNFINISHED), sa.or_(jobs.c.claimed_by.is_(None), ~mine)
    )


def jobs_of_run_all(run_id: int):
    return sa.select(jobs).where(jobs.c.run_id == run_id).order_by(jobs.c.id)


def run_finalize(run_id: int, **values):
    """Close a run once; the worker whose statement matches is the one that finished it."""
    return sa.update(runs).where(runs.c.id == run_id, runs.c.status == "running").values(**values)


def worker_insert(**values):
    return sa.insert(workers).values(**values)


def worker_update(worker_id: str, **values):
    return sa.update(workers).where(workers.c.id == worker_id).values(**values)


def workers_of_run(run_id: int):
    return sa.select(workers).where(workers.c.run_id == run_id).order_by(workers.c.started_at)


def rate_window(limiter: str, since: int):
    return (
        sa.select(sa.func.count(), sa.func.min(rate_events.c.at))
        .where(rate_events.c.limiter == limiter, rate_events.c.at > since)
    )


def rate_prune(limiter: str, before: int):
    return sa.delete(rate_events).where(rate_events.c.limiter == limiter, rate_events.c.at <= before)


def rate_admit(limiter: str, at: int):
    return sa.insert(rate_events).values(limiter=limiter, at=at)


def jobs_latest_per_symbol():
    """The newest job of every symbol: one index seek per symbol on ix_jobs_symbol_id (a loose
    index scan through a recursive CTE), not a GROUP BY over every job row (14 ms at 100k jobs
    on SQLite, 0.3 ms this way)."""
    scan = jobs.alias("scan")
    symbols = sa.select(sa.func.min(scan.c.symbol).label("symbol")).cte("symbols", recursive=True)
    following = sa.select(
        sa.select(sa.func.min(scan.c.symbol)).where(scan.c.symbol > symbols.c.symbol).scalar_subquery()
    ).where(symbols.c.symbol.is_not(None))
    symbols = symbols.union_all(following)
    newest = (
        sa.select(sa.func.max(scan.c.id)).where(scan.c.symbol == symbols.c.symbol)
        .correlate(symbols).scalar_subquery()
    )
    return sa.select(jobs).select_from(symbols).join(jobs, jobs.c.id == newest)


def jobs_of_symbol(symbol: str, limit: int):
    return sa.select(jobs).where(jobs.c.symbol == symbol).order_by(jobs.c.id.desc()).limit(limit)


def task_insert(**values):
    return sa.insert(tasks).values(**values)


# --- quality, requests -----------------------------------------------------------------------


def issues_insert():
    return sa.insert(quality_issues)


def issues_of_series(symbol: str, timeframe: str | None, limit: int):
    stmt = sa.select(quality_issues).where(quality_issues.c.symbol == symbol)
    if timeframe is not None:
        stmt = stmt.where(quality_issues.c.timeframe == timeframe)
    return stmt.order_by(quality_issues.c.id.desc()).limit(limit)


def requests_insert():
    return sa.insert(requests)


def requests_prune(before: int):
    return sa.delete(requests).where(requests.c.at < before)


def requests_of_run(run_id: int):
    return sa.select(sa.func.count()).where(requests.c.run_id == run_id)


def requests_since_count(since: int, provider: str):
    return sa.select(sa.func.count()).where(requests.c.at >= since, requests.c.provider == provider)


# --- metrics (aggregates over a window) ------------------------------------------------------


def metrics_requests(since: int):
    return sa.select(
        sa.func.count(),
        sa.func.coalesce(sa.func.sum(sa.case((requests.c.ok, 1), else_=0)), 0),
        sa.func.avg(requests.c.latency_ms),
    ).where(requests.c.at >= since)


def metrics_tasks(since: int):
    computed = tasks.c.compute_ok.is_not(None)
    return sa.select(
        sa.func.coalesce(sa.func.sum(tasks.c.bars_fetched), 0),
        sa.func.coalesce(sa.func.sum(tasks.c.bars_written), 0),
        sa.func.coalesce(sa.func.sum(sa.case((computed, 1), else_=0)), 0),
        sa.func.coalesce(sa.func.sum(sa.case((tasks.c.compute_ok.is_(True), 1), else_=0)), 0),
        sa.func.avg(sa.case((computed, tasks.c.compute_ms), else_=None)),
        sa.func.coalesce(sa.func.sum(tasks.c.indicator_values), 0),
    ).where(tasks.c.finished_at >= since)


def metrics_issues(since: int):
    return (
        sa.select(quality_issues.c.kind, quality_issues.c.severity, sa.func.count())
        .where(quality_issues.c.created_at >= since)
        .group_by(quality_issues.c.kind, quality_issues.c.severity)
    )


def metrics_quality_score():
    return sa.select(sa.func.avg(series.c.quality_score))


def prometheus_aggregates(since: int, bounds_ms: tuple[float, ...]) -> dict[str, sa.Select]:
    """Runs and jobs by status; provider requests by code and outcome, and latency buckets
    (cumulative counts at each bound, count, sum), over [since, now]."""
    in_window = requests.c.at >= since
    return {
        "runs": sa.select(runs.c.status, sa.func.count()).group_by(runs.c.status),
        "jobs": sa.select(jobs.c.status, sa.func.count()).group_by(jobs.c.status),
        "requests": sa.select(requests.c.provider, requests.c.status, requests.c.ok, sa.func.count())
        .where(in_window).group_by(requests.c.provider, requests.c.status, requests.c.ok),
        "latency": sa.select(
            requests.c.provider,
            *(sa.func.sum(sa.case((requests.c.latency_ms <= b, 1), else_=0)) for b in bounds_ms),
            sa.func.count(),
            sa.func.coalesce(sa.func.sum(requests.c.latency_ms), 0.0),
        ).where(in_window).group_by(requests.c.provider),
    }


# --- control and leases ----------------------------------------------------------------------


def control_get(key: str):
    return sa.select(control.c.value, control.c.updated_at).where(control.c.key == key)


def control_put(dialect: str):
    return upsert(dialect, control, ("key",))


def control_delete(key: str):
    return sa.delete(control).where(control.c.key == key)


def lease_claim(dialect: str, now: int, dead_run_id: int | None = None):
    """Take the lease when it is free, expired, or held by a run known to be dead: one atomic
    statement, no read-then-write."""
    stmt = _insert(dialect, leases)
    takeable = leases.c.expires_at < now
    if dead_run_id is not None:
        takeable = takeable | (leases.c.run_id == dead_run_id)
    return stmt.on_conflict_do_update(
        index_elements=["name"],
        set_={c.name: stmt.excluded[c.name] for c in leases.columns if c.name != "name"},
        where=takeable,
    )


def lease_get(name: str):
    return sa.select(leases).where(leases.c.name == name)


def lease_heartbeat(name: str, run_id: int, now: int, expires: int, host: str, pid: int):
    """Renew the lease; it names the worker that renewed it last (any worker of the run)."""
    return (
        sa.update(leases)
        .where(leases.c.name == name, leases.c.run_id == run_id)
        .values(heartbeat_at=now, expires_at=expires, host=host, pid=pid)
    )


def lease_release(name: str, run_id: int):
    return sa.delete(leases).where(leases.c.name == name, leases.c.run_id == run_id)
