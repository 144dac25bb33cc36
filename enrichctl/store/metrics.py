"""Aggregates for the dashboard: the quota figures, the metrics document, ``GET /metrics``."""

from __future__ import annotations

from typing import Any

from enrichctl.store.core import StoreCore
from enrichctl.store.queries import metrics as metrics_sql
from enrichctl.store.rows import QuotaRow


class MetricsReads(StoreCore):
    """The aggregates behind the dashboard's quota figures, metrics document and ``/metrics``."""

    async def requests_quota(self, since: int, window_since: int, provider: str) -> QuotaRow:
        """``provider``'s requests since ``window_since`` (its quota window) and its 429s then
        and since ``since``."""
        async with self._read() as conn:
            row = (await conn.execute(metrics_sql.requests_quota(since, window_since, provider))).one()
        return QuotaRow(int(row.window_requests), int(row.window_refused), int(row.refused),
                        int(row.last_refused_at) if row.last_refused_at is not None else None)

    async def metrics_raw(self, since: int) -> dict[str, Any]:
        """The aggregates behind the metrics document, over [since, now]."""
        async with self._read() as conn:
            total, ok, avg_latency = (await conn.execute(metrics_sql.metrics_requests(since))).one()
            task_row = (await conn.execute(metrics_sql.metrics_tasks(since))).one()
            issues = (await conn.execute(metrics_sql.metrics_issues(since))).all()
            score = (await conn.execute(metrics_sql.metrics_quality_score())).scalar()
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
        """The rows behind ``GET /metrics`` (see ``metrics_sql.prometheus_aggregates``)."""
        async with self._read() as conn:
            return {
                name: list((await conn.execute(stmt)).all())
                for name, stmt in metrics_sql.prometheus_aggregates(since, bounds_ms).items()
            }
