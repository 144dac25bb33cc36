"""Rows as frozen dataclasses: what the store hands to the layers above."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, TypeVar

T = TypeVar("T")


def row_to(cls: type[T], row: Any) -> T:
    """Build ``cls`` from a SQLAlchemy row, taking the fields the dataclass names."""
    mapping = row._mapping
    return cls(**{f.name: mapping[f.name] for f in fields(cls)})  # type: ignore[arg-type]


@dataclass(frozen=True, slots=True)
class RunRow:
    id: int
    trigger: str
    status: str
    provider: str
    synthetic: bool
    host: str
    pid: int
    started_at: int
    finished_at: int | None
    options: str
    jobs_total: int
    jobs_succeeded: int
    jobs_failed: int
    bars_fetched: int
    bars_written: int
    requests: int
    error: str | None
    resilience: str | None


@dataclass(frozen=True, slots=True)
class JobRow:
    id: int
    run_id: int
    symbol: str
    asset_class: str
    status: str
    attempts: int
    started_at: int | None
    finished_at: int | None
    duration_ms: float | None
    bars_fetched: int
    bars_written: int
    error: str | None
    updated_at: int
    claimed_by: str | None
    lease_expires_at: int | None


@dataclass(frozen=True, slots=True)
class SeriesRow:
    symbol: str
    timeframe: str
    asset_class: str
    provider: str
    synthetic: bool
    watermark: int | None
    first_ts: int | None
    requested_from: int | None
    bar_count: int
    indicator_set: str | None
    quality_score: float | None
    issue_count: int
    last_attempt_at: int | None
    last_success_at: int | None
    last_error: str | None
    last_checked_at: int | None
    updated_at: int
    full_fetched_at: int | None = None
    delisted_at: int | None = None
    completeness: float | None = None
    session_bars: int | None = None


@dataclass(frozen=True, slots=True)
class IssueRow:
    id: int
    run_id: int | None
    symbol: str
    timeframe: str
    kind: str
    severity: str
    ts: int | None
    detail: str
    created_at: int


@dataclass(frozen=True, slots=True)
class LeaseRow:
    name: str
    run_id: int
    host: str
    pid: int
    acquired_at: int
    heartbeat_at: int
    expires_at: int


@dataclass(frozen=True, slots=True)
class WorkerRow:
    id: str
    run_id: int
    host: str
    pid: int
    started_at: int
    heartbeat_at: int
    finished_at: int | None
    jobs_done: int


@dataclass(frozen=True, slots=True)
class TaskRow:
    """One attempt at one series of a job: what ``history RUN_ID`` lists."""

    id: int
    job_id: int
    run_id: int
    symbol: str
    timeframe: str
    status: str
    attempt: int
    range_start: int | None
    range_end: int | None
    full_refresh: bool
    bars_fetched: int
    bars_written: int
    indicator_values: int
    fetch_ms: float | None
    compute_ms: float | None
    compute_ok: bool | None
    started_at: int
    finished_at: int | None
    error: str | None


@dataclass(frozen=True, slots=True)
class QuotaRow:
    """A provider's requests against its quota: in its rolling window, and its refusals (HTTP
    429) in that window and in a longer one (the metrics window)."""

    window_requests: int
    window_refused: int
    refused: int
    last_refused_at: int | None
