"""The dashboard documents, built once: overview, health, job-status, history, metrics.

``enrichctl status|history|metrics --json`` print these, and ``serve`` returns them unchanged.
The seed's field names stay (``processing_symbols[].status``,
``fetch_pipeline.api_quota_remaining``, ...). Every instant is a UTC ISO-8601 string.
"""

from __future__ import annotations

import json
from typing import Any

from enrichctl.calendar import SessionCalendar
from enrichctl.domain import AssetClass, IssueKind, Series, Timeframe, ms_to_iso
from enrichctl.errors import NotFound
from enrichctl.pipeline.quality import check_stale
from enrichctl.providers.registry import Quota, provider_quota
from enrichctl.settings import Settings
from enrichctl.staleness import schedule_reference
from enrichctl.store.coordination import PAUSE_KEY
from enrichctl.store.repo import Store
from enrichctl.store.rows import IssueRow, JobRow, QuotaRow, RunRow, SeriesRow

METRICS_WINDOW_HOURS = 24
GAP_KINDS = {IssueKind.GAP.value}
ANOMALY_KINDS = {IssueKind.PRICE_SPIKE.value, IssueKind.VOLUME_ANOMALY.value,
                 IssueKind.OHLC.value, IssueKind.DUPLICATE.value, IssueKind.OUT_OF_RANGE.value,
                 IssueKind.NON_SESSION.value, IssueKind.READJUSTED.value,
                 IssueKind.PROVIDER_MISMATCH.value, IssueKind.INDICATOR_MISMATCH.value}


def run_doc(run: RunRow) -> dict[str, Any]:
    duration = (run.finished_at - run.started_at) / 1000 if run.finished_at else None
    return {
        "run_id": run.id,
        "trigger": run.trigger,
        "status": run.status,
        "provider": run.provider,
        "synthetic": run.synthetic,
        "started_at": ms_to_iso(run.started_at),
        "finished_at": ms_to_iso(run.finished_at),
        "duration_s": round(duration, 3) if duration is not None else None,
        "jobs_total": run.jobs_total,
        "jobs_succeeded": run.jobs_succeeded,
        "jobs_failed": run.jobs_failed,
        "bars_fetched": run.bars_fetched,
        "bars_written": run.bars_written,
        "requests": run.requests,
        "host": run.host,
        "pid": run.pid,
        "error": run.error,
    }


def _series_doc(row: SeriesRow, stale: bool) -> dict[str, Any]:
    return {
        "timeframe": row.timeframe,
        "first_bar": ms_to_iso(row.first_ts),
        "last_bar": ms_to_iso(row.watermark),
        "bars": row.bar_count,
        "last_success": ms_to_iso(row.last_success_at),
        "last_attempt": ms_to_iso(row.last_attempt_at),
        "last_error": row.last_error,
        "quality_score": _round(row.quality_score),
        "issues": row.issue_count,
        "stale": stale,
        "provider": row.provider,
        "synthetic": row.synthetic,
        # The provider's reference data marks the ticker inactive: no new bar will come.
        "delisted": row.delisted_at is not None,
        "delisted_at": ms_to_iso(row.delisted_at),
    }


def _symbol_doc(
    symbol: str, asset_class: str, rows: list[SeriesRow], job: JobRow | None,
    calendar: SessionCalendar, settings: Settings, now: int,
) -> dict[str, Any]:
    series_docs = [_series_doc(r, _is_stale(r, calendar, settings, now)) for r in rows]
    scores = [r.quality_score for r in rows if r.quality_score is not None]
    last_bars = [r.watermark for r in rows if r.watermark is not None]
    successes = [r.last_success_at for r in rows if r.last_success_at is not None]
    return {
        "symbol": symbol,
        "asset_class": asset_class,
        # Where its stored bars came from; synthetic (demo) data says so wherever it is read.
        "provider": ", ".join(sorted({r.provider for r in rows})) or None,
        "synthetic": any(r.synthetic for r in rows),
        "status": job.status if job else "never_run",
        "last_bar": ms_to_iso(max(last_bars)) if last_bars else None,
        "last_success": ms_to_iso(max(successes)) if successes else None,
        "attempts": job.attempts if job else 0,
        "last_error": (job.error if job else None) or next((r.last_error for r in rows if r.last_error), None),
        "quality_score": _round(min(scores)) if scores else None,
        "stale": any(d["stale"] for d in series_docs),
        "delisted": any(d["delisted"] for d in series_docs),
        "last_run_id": job.run_id if job else None,
        "series": series_docs,
    }


def _is_stale(row: SeriesRow, calendar: SessionCalendar, settings: Settings, now: int) -> bool:
    return series_stale(row, calendar, settings, now)


def series_stale(row: SeriesRow, calendar: SessionCalendar, settings: Settings, now: int) -> bool:
    """Stale: the series lacks bars the last scheduled run should have fetched (see
    ``staleness``), so series fetched between runs stay fresh until the next one is due. A
    delisted ticker is finished, not late: it is never stale; nor is a known ticker whose
    fetches succeed without a bar (nothing the provider has is missing)."""
    if row.delisted_at is not None:
        return False
    if row.watermark is None and row.last_success_at is not None:
        return False  # the provider knows the ticker but has no bar of it: a warning says so
    series = Series(row.symbol, AssetClass(row.asset_class), Timeframe(row.timeframe))
    reference = schedule_reference(settings.schedule, now)
    return check_stale(series, row.watermark, reference, calendar, settings.quality) is not None


async def _symbols(store: Store, settings: Settings, calendar: SessionCalendar, now: int) -> list[dict[str, Any]]:
    rows = await store.series_list()
    jobs = await store.jobs_latest()
    by_symbol: dict[str, list[SeriesRow]] = {}
    for r in rows:
        by_symbol.setdefault(r.symbol, []).append(r)
    classes = {e.symbol: e.asset_class.value for e in settings.universe if e.asset_class}
    classes.update({r.symbol: r.asset_class for r in rows})
    classes.update({j.symbol: j.asset_class for j in jobs.values()})
    return [
        _symbol_doc(symbol, classes[symbol], by_symbol.get(symbol, []), jobs.get(symbol),
                    calendar, settings, now)
        for symbol in sorted(classes)
    ]


async def _scheduler(store: Store, settings: Settings, now: int, next_run: int | None) -> dict[str, Any]:
    pause = await store.control_get(PAUSE_KEY)
    return {
        "paused": pause is not None,
        "paused_reason": pause.get("reason") if pause else None,
        "paused_by": pause.get("by") if pause else None,
        "paused_since": pause.get("since") if pause else None,
        "paused_since_ms": pause.get("since_ms") if pause else None,
        "schedule": settings.schedule.on_calendar,
        "next_run": ms_to_iso(next_run),
        "paused_too_long": bool(
            pause and pause.get("since_ms")
            and now - pause["since_ms"] > settings.schedule.pause_alert_hours * 3_600_000
        ),
        "pause_alert_hours": settings.schedule.pause_alert_hours,
        # Staleness is judged against this: the bars the last scheduled run should have fetched.
        "staleness_reference": ms_to_iso(schedule_reference(settings.schedule, now)),
    }


async def overview(
    store: Store, settings: Settings, calendar: SessionCalendar, now: int, *, next_run: int | None
) -> dict[str, Any]:
    """The overview at ``now``; ``next_run`` is when the timer fires next (the caller asks
    systemd, off the event loop), None when unknown."""
    symbols = await _symbols(store, settings, calendar, now)
    runs = await store.runs_recent(20)
    active = next((r for r in runs if r.status == "running"), None)
    finished = next((r for r in runs if r.status != "running"), None)
    resilience = _last_resilience(runs)
    return {
        "generated_at": ms_to_iso(now),
        "scheduler": await _scheduler(store, settings, now, next_run),
        "last_run": run_doc(finished) if finished else None,
        "active_run": run_doc(active) if active else None,
        "abandoned_runs": [run_doc(r) for r in runs if r.status == "abandoned"],
        "totals": {
            "symbols": len(symbols),
            "series": sum(len(s["series"]) for s in symbols),
            # From the series rows: a count(*) over millions of bars is too slow per request.
            "bars": sum(sum(series["bars"] for series in s["series"]) for s in symbols),
            "succeeded": sum(s["status"] == "succeeded" for s in symbols),
            "failed": sum(s["status"] == "failed" for s in symbols),
            "never_run": sum(s["status"] == "never_run" for s in symbols),
            "stale": sum(s["stale"] for s in symbols),
            "synthetic_series": sum(bool(x["synthetic"]) for s in symbols for x in s["series"]),
        },
        "processing_symbols": symbols,
        "workers": await _workers(store, active or finished, now, settings.worker_lease_seconds * 1000),
        "resilience": resilience,
    }


async def _workers(store: Store, run: RunRow | None, now: int, lease_ms: float) -> list[dict[str, Any]]:
    """The workers of the active (or last) run: host, pid, jobs done, last heartbeat."""
    if run is None:
        return []
    return [
        {
            "worker": w.id,
            "run_id": w.run_id,
            "host": w.host,
            "pid": w.pid,
            "jobs_done": w.jobs_done,
            "started_at": ms_to_iso(w.started_at),
            "last_heartbeat": ms_to_iso(w.heartbeat_at),
            "heartbeat_age_s": round((now - w.heartbeat_at) / 1000, 1),
            "finished_at": ms_to_iso(w.finished_at),
            # A killed worker never writes finished_at: its silence says it is gone.
            "active": w.finished_at is None and now - w.heartbeat_at < lease_ms,
        }
        for w in await store.workers_of_run(run.id)
    ]


def health(overview_doc: dict[str, Any]) -> dict[str, Any]:
    """healthy / degraded / unhealthy with one line per reason, from the overview document: the
    one verdict of ``status --check``, ``/dashboard/health`` and ``enrichctl_health``."""
    return _health(overview_doc["processing_symbols"], overview_doc["scheduler"], overview_doc["generated_at"])


def health_of_symbol(job_status_doc: dict[str, Any]) -> dict[str, Any]:
    """The same verdict for the job-status document of one symbol (``status SYMBOL --check``)."""
    return _health([job_status_doc], None, job_status_doc.get("generated_at"))


def _health(symbols: list[dict[str, Any]], scheduler: dict[str, Any] | None, generated_at: str | None) -> dict[str, Any]:
    """The verdict and every reason for it: ``issues`` as lines, ``reasons`` as records (what a
    monitor can act on: severity, kind, symbol, timeframe)."""
    reasons: list[dict[str, Any]] = []

    def reason(severity: str, kind: str, message: str, symbol: str | None = None,
               timeframe: str | None = None) -> None:
        reasons.append({"severity": severity, "kind": kind, "symbol": symbol,
                        "timeframe": timeframe, "message": message})

    due = f"; the scheduled run of {scheduler['staleness_reference']} should have fetched newer bars" if scheduler else ""
    for s in symbols:
        if s["status"] == "failed":
            reason("unhealthy", "job_failed",
                   f"{s['symbol']}: last job failed: {s['last_error'] or 'unknown error'}", s["symbol"])
        for series in s["series"]:
            if series["stale"]:
                reason("unhealthy", "stale",
                       f"{s['symbol']}/{series['timeframe']}: stale (last bar {series['last_bar'] or 'none'}{due})",
                       s["symbol"], series["timeframe"])
        if s["status"] == "never_run":
            reason("degraded", "never_run", f"{s['symbol']}: never run", s["symbol"])
    if scheduler is not None and scheduler["paused_too_long"]:
        reason("unhealthy", "paused_too_long",
               f"scheduler paused for more than {scheduler['pause_alert_hours']:g} h "
               f"(since {scheduler['paused_since']}): {scheduler['paused_reason'] or 'no reason given'}")
    elif scheduler is not None and scheduler["paused"]:
        reason("degraded", "paused", f"scheduler paused since {scheduler['paused_since']}: "
                                     f"{scheduler['paused_reason'] or 'no reason given'}")
    # Unhealthy reasons first, as before; each group in the order found.
    reasons.sort(key=lambda r: r["severity"] != "unhealthy")
    severities = {r["severity"] for r in reasons}
    status = "unhealthy" if "unhealthy" in severities else ("degraded" if severities else "healthy")
    return {"status": status, "generated_at": generated_at,
            "issues": [r["message"] for r in reasons], "reasons": reasons}


async def job_status(
    store: Store, settings: Settings, calendar: SessionCalendar, symbol: str, now: int
) -> dict[str, Any]:
    rows = await store.series_list(symbol)
    jobs = await store.jobs_of_symbol(symbol, 10)
    known = {e.symbol: e.asset_class.value for e in settings.universe if e.asset_class}
    if not rows and not jobs and symbol not in known:
        raise NotFound(f"unknown symbol {symbol!r}: it is not configured and was never run")
    asset_class = rows[0].asset_class if rows else (jobs[0].asset_class if jobs else known[symbol])
    doc = _symbol_doc(symbol, asset_class, rows, jobs[0] if jobs else None, calendar, settings, now)
    doc["generated_at"] = ms_to_iso(now)
    doc["recent_jobs"] = [_job_doc(j) for j in jobs]
    doc["recent_issues"] = [_issue_doc(i) for i in await store.issues_recent(symbol, limit=20)]
    doc["corporate_actions"] = await _actions_of(store, symbol, {r.provider for r in rows})
    doc["adjustment"] = ADJUSTMENT_NOTE
    return doc


# What the stored prices are, said next to the actions that changed them.
ADJUSTMENT_NOTE = ("prices and volumes are split-adjusted; dividends are listed but not "
                   "included in the adjusted series (no total-return adjustment)")


async def _actions_of(store: Store, symbol: str, providers: set[str]) -> list[dict[str, Any]]:
    """The symbol's splits and dividends as the providers of its stored series listed them,
    newest first (every provider's when nothing is stored)."""
    chosen = sorted(providers) or [None]
    actions = [(p, a) for p in chosen for a in await store.actions_list(symbol, provider=p)]
    return [
        {"kind": a.kind, "ex_date": a.ex_date, "ratio": a.ratio, "amount": a.amount,
         "description": a.describe()}
        for _, a in sorted(actions, key=lambda pa: pa[1].ex_date, reverse=True)
    ]


def _job_doc(job: JobRow) -> dict[str, Any]:
    return {
        "run_id": job.run_id,
        "status": job.status,
        "attempts": job.attempts,
        "started_at": ms_to_iso(job.started_at),
        "finished_at": ms_to_iso(job.finished_at),
        "duration_ms": _round(job.duration_ms, 1),
        "bars_fetched": job.bars_fetched,
        "bars_written": job.bars_written,
        "error": job.error,
    }


def _issue_doc(issue: IssueRow) -> dict[str, Any]:
    return {
        "timeframe": issue.timeframe,
        "kind": issue.kind,
        "severity": issue.severity,
        "at": ms_to_iso(issue.ts),
        "detail": issue.detail,
        "run_id": issue.run_id,
        "recorded_at": ms_to_iso(issue.created_at),
    }


async def history(store: Store, limit: int) -> dict[str, Any]:
    runs = await store.runs_recent(limit)
    return {"limit": limit, "count": len(runs), "runs": [run_doc(r) for r in runs]}


async def metrics(store: Store, settings: Settings, now: int) -> dict[str, Any]:
    since = now - METRICS_WINDOW_HOURS * 3_600_000
    raw = await store.metrics_raw(since)
    total, ok = raw["requests_total"], raw["requests_ok"]
    gaps = sum(n for kind, _sev, n in raw["issues"] if kind in GAP_KINDS)
    anomalies = sum(n for kind, _sev, n in raw["issues"] if kind in ANOMALY_KINDS)
    errors = sum(n for _kind, sev, n in raw["issues"] if sev == "error")
    by_kind: dict[str, int] = {}
    for kind, _sev, n in raw["issues"]:
        by_kind[kind] = by_kind.get(kind, 0) + n
    provenance = _provenance(await store.series_list())
    checked = raw["bars_fetched"]
    return {
        "generated_at": ms_to_iso(now),
        "window_hours": METRICS_WINDOW_HOURS,
        "fetch_pipeline": {
            "total_requests": total,
            "successful_requests": ok,
            "failed_requests": total - ok,
            "success_rate": _ratio(ok, total),
            "avg_response_time_ms": _round(raw["avg_latency_ms"], 2),
            "records_fetched": raw["bars_fetched"],
            "records_inserted": raw["bars_written"],
            **await _quota(store, settings, since, now),
        },
        "compute_pipeline": {
            "total_computations": raw["computations"],
            "successful_computations": raw["computations_ok"],
            "success_rate": _ratio(raw["computations_ok"], raw["computations"]),
            "avg_computation_time_ms": _round(raw["avg_compute_ms"], 3),
            "features_computed": raw["indicator_values"],
        },
        "data_quality": {
            "records_validated": checked,
            "validation_rate": _ratio(max(checked - errors, 0), checked),
            "gaps_detected": gaps,
            "anomalies_detected": anomalies,
            "issues_by_kind": dict(sorted(by_kind.items())),
            "quality_score": _round(raw["quality_score"]),
            **provenance,
        },
    }


def _provenance(rows: list[SeriesRow]) -> dict[str, Any]:
    """Where the stored series came from: synthetic (demo) data is counted apart."""
    by_provider: dict[str, int] = {}
    for r in rows:
        by_provider[r.provider] = by_provider.get(r.provider, 0) + 1
    return {"series_by_provider": dict(sorted(by_provider.items())),
            "synthetic_series": sum(bool(r.synthetic) for r in rows)}


async def _quota(store: Store, settings: Settings, since: int, now: int) -> dict[str, Any]:
    """The provider's quota as far as we can know it, and when the provider refused it."""
    plan = provider_quota(settings)
    if plan is None:
        return {"api_quota_remaining": None, "api_quota_basis": f"provider {settings.provider} has no quota",
                "api_quota_limit": None, "api_quota_effective_rate": None, "api_quota_refused": 0,
                "api_quota_last_refused_at": None}
    quota = await store.requests_quota(since, now - int(plan.window_s * 1000), settings.provider)
    snapshot = _last_resilience(await store.runs_recent(20)) or {}
    limiter = (snapshot.get("rate_limiters") or {}).get(plan.limiter) or {}
    effective = limiter.get("effective_rate")
    remaining, basis = _quota_left(plan, effective, quota)
    return {
        "api_quota_remaining": remaining,
        "api_quota_basis": basis,
        "api_quota_limit": plan.rate or None,
        # What the last run's limiter settled on: below the limit, the provider allows less.
        "api_quota_effective_rate": effective,
        "api_quota_refused": quota.refused,
        "api_quota_last_refused_at": ms_to_iso(quota.last_refused_at),
    }


def _quota_left(plan: Quota, effective: int | None, quota: QuotaRow) -> tuple[int | None, str]:
    """Polygon publishes no quota header: what is left is the plan's limit (or the lower rate the
    last run settled on after 429s) minus our own requests in the last rolling window, and
    nothing while the provider refuses, whatever our own count says."""
    limit, window_s = plan.rate, plan.window_s
    window = "minute" if window_s == 60 else f"{window_s:g} s"
    if quota.window_refused:
        return 0, f"the provider refused {quota.window_refused} requests (HTTP 429) in the last rolling {window}"
    if limit == 0:
        return None, f"unlimited plan ({plan.rate_setting} = 0)"
    minus = f"minus our requests in the last rolling {window}"
    if effective is not None and effective < limit:
        return (max(effective - quota.window_requests, 0),
                f"{effective} per rolling {window}, the rate the last run settled on after the provider "
                f"refused ({limit} configured), {minus}")
    return max(limit - quota.window_requests, 0), f"{limit} per rolling {window} {minus}"


def _last_resilience(runs: list[RunRow]) -> dict[str, Any] | None:
    """The newest stored resilience snapshot: the live components died with their run."""
    return next((json.loads(r.resilience) for r in runs if r.resilience), None)


def _ratio(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole else None


def _round(value: float | None, digits: int = 4) -> float | None:
    return round(value, digits) if value is not None else None
