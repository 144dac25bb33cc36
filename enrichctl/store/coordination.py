"""The store's coordination half: the pause flag, the run lease, job claims, workers and the
shared rate-limit window. A base of ``Store``, split out to keep each file readable; it runs its
SQL through the same ``_read``/``_write`` transactions."""

from __future__ import annotations

import json
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from enrichctl.domain import now_ms
from enrichctl.store.core import StoreCore
from enrichctl.store.queries import control as control_sql
from enrichctl.store.queries import runs as runs_sql
from enrichctl.store.rows import JobRow, LeaseRow, WorkerRow, row_to

RUN_LEASE = "run"
PAUSE_KEY = "pause"  # the operator's pause (``enrichctl pause``) in ``control``


def _limiter_pause_key(limiter: str) -> str:
    """A 429's pause shared by every worker of one limiter, in ``control``."""
    return f"pause:{limiter}"


class Coordination(StoreCore):
    """The pause flag, the run lease, job claims, workers and the shared rate window."""

    # --- control: pause flag and the run lease -----------------------------------------------

    async def control_get(self, key: str) -> dict[str, Any] | None:
        async with self._read() as conn:
            row = (await conn.execute(control_sql.control_get(key))).first()
            return json.loads(row.value) if row else None

    async def control_put(self, key: str, value: dict[str, Any]) -> None:
        async with self._write() as conn:
            await conn.execute(
                control_sql.control_put(self.dialect),
                {"key": key, "value": json.dumps(value), "updated_at": now_ms()},
            )

    async def control_delete(self, key: str) -> None:
        async with self._write() as conn:
            await conn.execute(control_sql.control_delete(key))

    async def lease_claim(
        self, run_id: int, host: str, pid: int, ttl_ms: int, dead_run_id: int | None = None
    ) -> LeaseRow:
        """Try to take the run lease when it is free, expired, or held by ``dead_run_id`` (a run
        whose process is known to be gone); returns whoever holds it afterwards."""
        now = now_ms()
        async with self._write() as conn:
            await conn.execute(
                control_sql.lease_claim(self.dialect, now, dead_run_id),
                {"name": RUN_LEASE, "run_id": run_id, "host": host, "pid": pid,
                 "acquired_at": now, "heartbeat_at": now, "expires_at": now + ttl_ms},
            )
            return row_to(LeaseRow, (await conn.execute(control_sql.lease_get(RUN_LEASE))).one())

    async def lease_get(self) -> LeaseRow | None:
        async with self._read() as conn:
            row = (await conn.execute(control_sql.lease_get(RUN_LEASE))).first()
            return row_to(LeaseRow, row) if row else None

    async def lease_heartbeat(self, run_id: int, ttl_ms: int, host: str, pid: int) -> bool:
        now = now_ms()
        async with self._write() as conn:
            result = await conn.execute(
                control_sql.lease_heartbeat(RUN_LEASE, run_id, now, now + ttl_ms, host, pid)
            )
            return result.rowcount == 1

    async def lease_release(self, run_id: int) -> None:
        async with self._write() as conn:
            await conn.execute(control_sql.lease_release(RUN_LEASE, run_id))

    async def runs_abandon(self, run_ids: list[int], reason: str) -> None:
        now = now_ms()
        async with self._write() as conn:
            await conn.execute(runs_sql.runs_abandon(run_ids, now, reason))
            await conn.execute(runs_sql.jobs_unfinished_cancel(run_ids, now, "run abandoned"))

    async def jobs_cancel_unfinished(self, run_id: int, reason: str) -> None:
        async with self._write() as conn:
            await conn.execute(runs_sql.jobs_unfinished_cancel([run_id], now_ms(), reason))

    # --- scale-out: job claims, workers, the run's outcome ------------------------------------

    async def jobs_claim(self, run_id: int, worker: str, lease_ms: int, limit: int) -> list[JobRow]:
        """Claim up to ``limit`` jobs nobody holds (pending, or their holder's lease lapsed), in
        one transaction, oldest first."""
        now = now_ms()
        async with self._write() as conn:
            ids = list((await conn.execute(runs_sql.job_claimable(run_id, now, limit))).scalars())
            if not ids:
                return []
            rows = (await conn.execute(runs_sql.job_claim(ids, worker, now, now + lease_ms))).all()
            return sorted((row_to(JobRow, r) for r in rows), key=lambda j: j.id)

    async def job_update_claimed(self, job_id: int, worker: str, **values) -> bool:
        """False when another worker has taken the job over (our claim had lapsed)."""
        async with self._write() as conn:
            result = await conn.execute(
                runs_sql.job_update_claimed(job_id, worker, updated_at=now_ms(), **values)
            )
            return result.rowcount == 1

    async def jobs_renew(self, worker: str, lease_ms: int) -> None:
        async with self._write() as conn:
            await conn.execute(runs_sql.jobs_renew(worker, now_ms() + lease_ms))

    async def jobs_release(self, worker: str) -> None:
        async with self._write() as conn:
            await conn.execute(runs_sql.jobs_release(worker, now_ms()))

    async def jobs_claimed_unheld(
        self, run_id: int, worker: str, held: frozenset[int]
    ) -> list[tuple[int, int]]:
        async with self._read() as conn:
            rows = await conn.execute(runs_sql.jobs_claimed_unheld(run_id, worker, held))
            return [(int(i), int(u)) for i, u in rows.all()]

    async def jobs_give_back(self, worker: str, job_ids: list[int]) -> None:
        async with self._write() as conn:
            await conn.execute(runs_sql.jobs_release(worker, now_ms(), job_ids))

    async def jobs_fail_pending(self, run_id: int, error: str) -> None:
        async with self._write() as conn:
            await conn.execute(runs_sql.jobs_fail_pending(run_id, now_ms(), error))

    async def jobs_counts(self, run_id: int) -> dict[str, tuple[int, int, int]]:
        """status -> (jobs, bars fetched, bars written) of one run."""
        async with self._read() as conn:
            rows = (await conn.execute(runs_sql.jobs_status_counts(run_id))).all()
            return {status: (int(n), int(f), int(w)) for status, n, f, w in rows}

    async def jobs_unfinished_elsewhere(self, run_id: int, worker: str) -> int:
        async with self._read() as conn:
            return int((await conn.execute(runs_sql.jobs_unfinished_elsewhere(run_id, worker))).scalar_one())

    async def jobs_of_run(self, run_id: int) -> list[JobRow]:
        async with self._read() as conn:
            return [row_to(JobRow, r) for r in (await conn.execute(runs_sql.jobs_of_run_all(run_id))).all()]

    async def run_finalize(self, run_id: int, **values) -> bool:
        """Close the run if it is still running and (unless cancelled) no job of it is left;
        True for the caller that closed it."""
        async with self._write() as conn:
            if self.dialect == "postgresql":
                # After jobs_add's commit, never between its check and its insert; the UPDATE's
                # snapshot, taken after the lock, sees the jobs it added.
                await conn.execute(sa.text(runs_sql.RUN_JOBS_LOCK), {"run_id": run_id})
            return (await conn.execute(runs_sql.run_finalize(run_id, **values))).rowcount == 1

    async def worker_register(self, worker: str, run_id: int, host: str, pid: int) -> None:
        now = now_ms()
        async with self._write() as conn:
            await conn.execute(runs_sql.worker_insert(
                id=worker, run_id=run_id, host=host, pid=pid, started_at=now, heartbeat_at=now,
                jobs_done=0,
            ))

    async def worker_update(self, worker: str, **values) -> None:
        async with self._write() as conn:
            await conn.execute(runs_sql.worker_update(worker, **values))

    async def workers_of_run(self, run_id: int) -> list[WorkerRow]:
        async with self._read() as conn:
            return [row_to(WorkerRow, r) for r in (await conn.execute(runs_sql.workers_of_run(run_id))).all()]

    async def rate_try_admit(self, limiter: str, rate: int, interval_ms: int) -> int:
        """Admit one request under a limit shared by every process on this database: 0 when
        admitted, else the milliseconds until the oldest admission leaves the window.

        The clock is the database's own (one clock for every host) and the check-then-insert is
        serialised: PostgreSQL by a transaction-scoped advisory lock, SQLite by its single writer."""
        async with self._write() as conn:
            if self.dialect == "postgresql":
                await conn.execute(sa.text("SELECT pg_advisory_xact_lock(hashtext(:k))"), {"k": limiter})
            now = await self._clock_ms(conn)
            await conn.execute(control_sql.rate_prune(limiter, now - interval_ms))
            paused = (await conn.execute(control_sql.control_get(_limiter_pause_key(limiter)))).first()
            if paused is not None and (until := json.loads(paused.value)["until"]) > now:
                return until - now
            count, oldest = (await conn.execute(control_sql.rate_window(limiter, now - interval_ms))).one()
            if int(count) < rate:
                await conn.execute(control_sql.rate_admit(limiter, now))
                return 0
            return max(int(oldest) + interval_ms - now, 1)

    async def _clock_ms(self, conn: AsyncConnection) -> int:
        """The database's clock on PostgreSQL (one clock for every host), ours on SQLite."""
        if self.dialect != "postgresql":
            return now_ms()
        return int((await conn.execute(sa.text(
            "SELECT (extract(epoch from clock_timestamp()) * 1000)::bigint"))).scalar_one())

    async def rate_pause(self, limiter: str, pause_ms: int) -> None:
        """Hold every worker's admissions for ``pause_ms`` (a 429's Retry-After); never shortens
        a pause already in force."""
        async with self._write() as conn:
            now = await self._clock_ms(conn)
            current = (await conn.execute(control_sql.control_get(_limiter_pause_key(limiter)))).first()
            until = max(now + pause_ms, json.loads(current.value)["until"] if current else 0)
            await conn.execute(
                control_sql.control_put(self.dialect),
                {"key": _limiter_pause_key(limiter), "value": json.dumps({"until": until}), "updated_at": now},
            )
