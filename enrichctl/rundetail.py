"""One run in detail (``history RUN_ID``), runs by status (``history --status``) and what
``run --rerun-failed`` re-runs.

The detail document is the run's row, the options it ran with, and per job: its attempts, error,
duration and every task (one series, one attempt) with its range, bars, timings and the provider
calls it made.
"""

from __future__ import annotations

import json
from typing import Any

from enrichctl.dashboard import run_doc
from enrichctl.domain import RunStatus, ms_to_iso
from enrichctl.errors import NotFound
from enrichctl.store.repo import Store
from enrichctl.store.rows import RunRow, TaskRow

# A run in one of these did not try its jobs: re-running "its failures" would mean nothing.
NOT_WORKED = (RunStatus.RUNNING.value, RunStatus.SKIPPED.value)


def _task_doc(t: TaskRow) -> dict[str, Any]:
    return {
        "timeframe": t.timeframe,
        "attempt": t.attempt,
        "status": t.status,
        "from": ms_to_iso(t.range_start),
        "to": ms_to_iso(t.range_end),
        "full_refresh": bool(t.full_refresh),
        "bars_fetched": t.bars_fetched,
        "bars_written": t.bars_written,
        "fetch_ms": None if t.fetch_ms is None else round(t.fetch_ms, 1),
        "compute_ms": None if t.compute_ms is None else round(t.compute_ms, 1),
        "started_at": ms_to_iso(t.started_at),
        "finished_at": ms_to_iso(t.finished_at),
        "error": t.error,
    }


async def run_detail(store: Store, run_id: int) -> dict[str, Any]:
    run = await store.run_get(run_id)
    if run is None:
        raise NotFound(f"no run {run_id}; 'enrichctl history' lists the runs")
    jobs = await store.jobs_of_run(run_id)
    tasks = await store.tasks_of_run(run_id)
    calls = {(s or "", t or ""): (n, bad, ms) for s, t, n, bad, ms in await store.requests_of_run_by_series(run_id)}
    by_job: dict[int, list[TaskRow]] = {}
    for t in tasks:
        by_job.setdefault(t.job_id, []).append(t)
    doc = run_doc(run)
    doc["options"] = _options(run)
    doc["jobs"] = []
    for j in jobs:
        job_tasks = by_job.get(j.id, [])
        timeframes = sorted({t.timeframe for t in job_tasks})
        requests = [calls.get((j.symbol, tf), (0, 0, None)) for tf in timeframes]
        doc["jobs"].append({
            "symbol": j.symbol,
            "asset_class": j.asset_class,
            "status": j.status,
            "attempts": j.attempts,
            "started_at": ms_to_iso(j.started_at),
            "finished_at": ms_to_iso(j.finished_at),
            "duration_ms": None if j.duration_ms is None else round(j.duration_ms, 1),
            "bars_fetched": j.bars_fetched,
            "bars_written": j.bars_written,
            "requests": sum(n for n, _bad, _ms in requests),
            "requests_failed": sum(bad for _n, bad, _ms in requests),
            "error": j.error,
            "tasks": [_task_doc(t) for t in job_tasks],
        })
    # Calls made outside any series (grouped-daily prefetch, key checks).
    doc["requests_outside_series"] = sum(n for (s, _t), (n, _b, _m) in calls.items() if not s)
    return doc


def _options(run: RunRow) -> dict[str, Any]:
    try:
        return json.loads(run.options or "{}")
    except ValueError:  # an old or damaged row: show the run anyway
        return {}


async def runs_with_status(store: Store, status: str, limit: int) -> dict[str, Any]:
    runs = await store.runs_with_status(status, limit)
    return {"limit": limit, "status": status, "count": len(runs), "runs": [run_doc(r) for r in runs]}


async def failed_of_last_run(store: Store) -> dict[str, Any]:
    """The last run that worked its jobs, and the symbols (with the run's timeframes) that failed."""
    run = next((r for r in await store.runs_recent(50) if r.status not in NOT_WORKED), None)
    if run is None:
        raise NotFound("no finished run yet: nothing to re-run")
    failed = [j.symbol for j in await store.jobs_of_run(run.id) if j.status == "failed"]
    return {"run_id": run.id, "symbols": failed, "timeframes": _options(run).get("timeframes")}
