"""The records of runs, jobs, tasks and provider calls."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from enrichctl.domain import JobStatus, RequestRecord, now_ms
from enrichctl.store.core import StoreCore
from enrichctl.store.queries import runs as runs_sql
from enrichctl.store.rows import JobRow, RunRow, TaskRow, row_to
from enrichctl.store.writes import request_rows


class RunRecords(StoreCore):
    """Rows of runs, jobs, tasks and provider calls."""

    async def requests_record(self, requests: list[RequestRecord]) -> None:
        """Provider calls made outside a run (``verify --against-provider``)."""
        if requests:
            async with self._write() as conn:
                await conn.execute(runs_sql.requests_insert(), request_rows(None, requests))

    async def run_create(self, **values) -> int:
        async with self._write() as conn:
            return int((await conn.execute(runs_sql.run_insert(**values))).scalar_one())

    async def run_update(self, run_id: int, **values) -> None:
        async with self._write() as conn:
            await conn.execute(runs_sql.run_update(run_id, **values))

    async def run_get(self, run_id: int) -> RunRow | None:
        async with self._read() as conn:
            row = (await conn.execute(runs_sql.run_one(run_id))).first()
            return row_to(RunRow, row) if row else None

    async def runs_recent(self, limit: int) -> list[RunRow]:
        async with self._read() as conn:
            rows = await conn.execute(runs_sql.runs_recent(limit))
            return [row_to(RunRow, r) for r in rows.all()]

    async def runs_last_succeeded_at(self) -> int | None:
        async with self._read() as conn:
            return (await conn.execute(runs_sql.runs_last_succeeded_at())).scalar()

    async def runs_running(self) -> list[RunRow]:
        async with self._read() as conn:
            return [row_to(RunRow, r) for r in (await conn.execute(runs_sql.runs_running())).all()]

    async def jobs_create(self, run_id: int, instruments, up_to_date: frozenset[str] = frozenset()) -> None:
        """One pending job per instrument; those in ``up_to_date`` (nothing to fetch or compute)
        are recorded as done at once instead of going through claims. Under the run's jobs lock:
        a `run` joining meanwhile adds its own only once these are there (``jobs_add``)."""
        now = now_ms()
        async with self._write() as conn:
            await self._run_jobs_lock(conn, run_id)
            await conn.execute(runs_sql.job_insert_missing(self.dialect),
                               [_job_row(run_id, i, i.symbol in up_to_date, now) for i in instruments])

    async def jobs_add(self, run_id: int, instruments) -> bool | None:
        """Add pending jobs (those the run lacks) to a run that is still running, counting only
        those really added; False when it has closed meanwhile, None when its starter has not
        created its own jobs yet (ask again in a moment). Serialised with ``run_finalize`` and
        ``jobs_create``: a run never closes over them, and no job is there or counted twice."""
        now = now_ms()
        async with self._write() as conn:
            await self._run_jobs_lock(conn, run_id)
            planned = (await conn.execute(runs_sql.run_jobs_planned(run_id))).scalar_one_or_none()
            if planned is None:
                return False
            have = (await conn.execute(runs_sql.run_jobs_count(run_id))).scalar_one()
            if have == 0 and planned > 0:
                return None
            await conn.execute(runs_sql.job_insert_missing(self.dialect),
                               [_job_row(run_id, i, False, now) for i in instruments])
            added = (await conn.execute(runs_sql.run_jobs_count(run_id))).scalar_one() - have
            await conn.execute(runs_sql.run_jobs_grow(run_id, added))
            return True

    async def _run_jobs_lock(self, conn, run_id: int) -> None:
        if self.dialect == "postgresql":  # SQLite's write transactions are one at a time already
            await conn.execute(sa.text(runs_sql.RUN_JOBS_LOCK), {"run_id": run_id})

    async def jobs_latest(self) -> dict[str, JobRow]:
        async with self._read() as conn:
            rows = await conn.execute(runs_sql.jobs_latest_per_symbol())
            return {r.symbol: row_to(JobRow, r) for r in rows.all()}

    async def jobs_of_symbol(self, symbol: str, limit: int = 10) -> list[JobRow]:
        async with self._read() as conn:
            rows = await conn.execute(runs_sql.jobs_of_symbol(symbol, limit))
            return [row_to(JobRow, r) for r in rows.all()]

    async def requests_prune(self, before: int) -> None:
        async with self._write() as conn:
            await conn.execute(runs_sql.requests_prune(before))

    async def requests_count_for_run(self, run_id: int) -> int:
        async with self._read() as conn:
            return int((await conn.execute(runs_sql.requests_of_run(run_id))).scalar_one())

    async def tasks_of_run(self, run_id: int) -> list[TaskRow]:
        async with self._read() as conn:
            return [row_to(TaskRow, r) for r in (await conn.execute(runs_sql.tasks_of_run(run_id))).all()]

    async def requests_of_run_by_series(self, run_id: int) -> list[tuple[str | None, str | None, int, int, float | None]]:
        async with self._read() as conn:
            rows = (await conn.execute(runs_sql.requests_of_run_by_series(run_id))).all()
            return [(s, t, int(n), int(bad or 0), float(ms) if ms is not None else None) for s, t, n, bad, ms in rows]

    async def runs_with_status(self, status: str, limit: int) -> list[RunRow]:
        async with self._read() as conn:
            return [row_to(RunRow, r) for r in (await conn.execute(runs_sql.runs_with_status(status, limit))).all()]


def _job_row(run_id: int, instrument, done: bool, now: int) -> dict[str, Any]:
    return {"run_id": run_id, "symbol": instrument.symbol, "asset_class": instrument.asset_class.value,
            "status": (JobStatus.SUCCEEDED if done else JobStatus.PENDING).value, "attempts": int(done),
            "started_at": now if done else None, "finished_at": now if done else None,
            "duration_ms": 0.0 if done else None, "bars_fetched": 0, "bars_written": 0,
            "updated_at": now}
