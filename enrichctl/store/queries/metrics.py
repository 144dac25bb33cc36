"""Aggregates for the dashboard: the quota figures, the metrics document, ``GET /metrics``."""

from __future__ import annotations

import sqlalchemy as sa

from enrichctl.store.tables import jobs, quality_issues, requests, runs, series, tasks


def requests_quota(since: int, window_since: int, provider: str):
    """``provider``'s requests in its quota window (since ``window_since``), and its 429s in
    that window and since ``since``, with the newest one's instant."""
    refused = requests.c.status == 429
    in_window = requests.c.at >= window_since
    return sa.select(
        sa.func.coalesce(sa.func.sum(sa.case((in_window, 1), else_=0)), 0).label("window_requests"),
        sa.func.coalesce(sa.func.sum(sa.case((sa.and_(refused, in_window), 1), else_=0)), 0)
        .label("window_refused"),
        sa.func.coalesce(sa.func.sum(sa.case((refused, 1), else_=0)), 0).label("refused"),
        sa.func.max(sa.case((refused, requests.c.at), else_=None)).label("last_refused_at"),
    ).where(requests.c.at >= min(since, window_since), requests.c.provider == provider)


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
