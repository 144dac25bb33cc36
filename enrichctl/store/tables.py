"""The schema as SQLAlchemy Core tables. Alembic migrations create it; this module describes it.

All instants are UTC epoch milliseconds (BIGINT). Primary keys carry the rules: a bar or an
indicator row exists once per (symbol, timeframe, ts); a series once per (symbol, timeframe).
"""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData()

runs = sa.Table(
    "runs",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("trigger", sa.String(16), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("provider", sa.String(32), nullable=False),
    sa.Column("synthetic", sa.Boolean, nullable=False, default=False),
    sa.Column("host", sa.String(255), nullable=False),
    sa.Column("pid", sa.Integer, nullable=False),
    sa.Column("started_at", sa.BigInteger, nullable=False),
    sa.Column("finished_at", sa.BigInteger),
    sa.Column("options", sa.Text, nullable=False, default="{}"),
    sa.Column("jobs_total", sa.Integer, nullable=False, default=0),
    sa.Column("jobs_succeeded", sa.Integer, nullable=False, default=0),
    sa.Column("jobs_failed", sa.Integer, nullable=False, default=0),
    sa.Column("bars_fetched", sa.Integer, nullable=False, default=0),
    sa.Column("bars_written", sa.Integer, nullable=False, default=0),
    sa.Column("requests", sa.Integer, nullable=False, default=0),
    sa.Column("error", sa.Text),
    sa.Column("resilience", sa.Text),
    sa.Index("ix_runs_started_at", "started_at"),
)

jobs = sa.Table(
    "jobs",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("run_id", sa.Integer, sa.ForeignKey("runs.id", ondelete="CASCADE"), nullable=False),
    sa.Column("symbol", sa.String(32), nullable=False),
    sa.Column("asset_class", sa.String(16), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False, default=0),
    sa.Column("started_at", sa.BigInteger),
    sa.Column("finished_at", sa.BigInteger),
    sa.Column("duration_ms", sa.Float),
    sa.Column("bars_fetched", sa.Integer, nullable=False, default=0),
    sa.Column("bars_written", sa.Integer, nullable=False, default=0),
    sa.Column("error", sa.Text),
    sa.Column("updated_at", sa.BigInteger, nullable=False),
    sa.Column("claimed_by", sa.String(128)),  # the worker holding the job (scale-out)
    sa.Column("lease_expires_at", sa.BigInteger),  # its claim lapses then unless renewed
    sa.UniqueConstraint("run_id", "symbol", name="uq_jobs_run_symbol"),
    sa.Index("ix_jobs_symbol_id", "symbol", "id"),
    sa.Index("ix_jobs_run_status", "run_id", "status"),
)

tasks = sa.Table(
    "tasks",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("job_id", sa.Integer, sa.ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False),
    sa.Column("run_id", sa.Integer, nullable=False),
    sa.Column("symbol", sa.String(32), nullable=False),
    sa.Column("timeframe", sa.String(8), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("attempt", sa.Integer, nullable=False),
    sa.Column("range_start", sa.BigInteger),
    sa.Column("range_end", sa.BigInteger),
    sa.Column("full_refresh", sa.Boolean, nullable=False, default=False),
    sa.Column("bars_fetched", sa.Integer, nullable=False, default=0),
    sa.Column("bars_written", sa.Integer, nullable=False, default=0),
    sa.Column("indicator_values", sa.Integer, nullable=False, default=0),
    sa.Column("fetch_ms", sa.Float),
    sa.Column("compute_ms", sa.Float),
    sa.Column("compute_ok", sa.Boolean),
    sa.Column("started_at", sa.BigInteger, nullable=False),
    sa.Column("finished_at", sa.BigInteger),
    sa.Column("error", sa.Text),
    sa.Index("ix_tasks_run_id", "run_id"),
    sa.Index("ix_tasks_finished_at", "finished_at"),
)

bars = sa.Table(
    "bars",
    metadata,
    sa.Column("symbol", sa.String(32), primary_key=True),
    sa.Column("timeframe", sa.String(8), primary_key=True),
    sa.Column("ts", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("open", sa.Float(53), nullable=False),
    sa.Column("high", sa.Float(53), nullable=False),
    sa.Column("low", sa.Float(53), nullable=False),
    sa.Column("close", sa.Float(53), nullable=False),
    sa.Column("volume", sa.Float(53)),
    sa.Column("vwap", sa.Float(53)),
    sa.Column("trades", sa.BigInteger),
    sqlite_with_rowid=False,
)

INDICATOR_KEY = ("symbol", "timeframe", "ts")


def indicators_table(columns: tuple[str, ...] | list[str]) -> sa.Table:
    """The ``indicators`` table with the given value columns (one per configured indicator
    output; the store adds missing ones with ALTER TABLE, see ``repo.Store.open``)."""
    return sa.Table(
        "indicators",
        sa.MetaData(),
        sa.Column("symbol", sa.String(32), primary_key=True),
        sa.Column("timeframe", sa.String(8), primary_key=True),
        sa.Column("ts", sa.BigInteger, primary_key=True, autoincrement=False),
        *(sa.Column(name, sa.Float(53)) for name in columns),
        sqlite_with_rowid=False,
    )


series = sa.Table(
    "series",
    metadata,
    sa.Column("symbol", sa.String(32), primary_key=True),
    sa.Column("timeframe", sa.String(8), primary_key=True),
    sa.Column("asset_class", sa.String(16), nullable=False),
    sa.Column("provider", sa.String(32), nullable=False),
    sa.Column("synthetic", sa.Boolean, nullable=False, default=False),
    sa.Column("watermark", sa.BigInteger),
    sa.Column("first_ts", sa.BigInteger),
    sa.Column("requested_from", sa.BigInteger),  # the earliest start ever asked of the provider
    sa.Column("bar_count", sa.Integer, nullable=False, default=0),
    sa.Column("indicator_set", sa.String(64)),
    sa.Column("quality_score", sa.Float),
    sa.Column("issue_count", sa.Integer, nullable=False, default=0),
    sa.Column("last_attempt_at", sa.BigInteger),
    sa.Column("last_success_at", sa.BigInteger),
    sa.Column("last_error", sa.Text),
    sa.Column("last_checked_at", sa.BigInteger),
    sa.Column("updated_at", sa.BigInteger, nullable=False),
    sa.Column("full_fetched_at", sa.BigInteger),  # the last time every bar was fetched anew
    sa.Column("delisted_at", sa.BigInteger),  # the reference data marks the ticker inactive
    sa.Column("completeness", sa.Float(53)),  # stored bars / the calendar's expected bars
    # Stored bars inside the calendar's sessions (intraday exchange series; NULL: not counted)
    sa.Column("session_bars", sa.BigInteger),
)

corporate_actions = sa.Table(
    "corporate_actions",
    metadata,
    sa.Column("symbol", sa.String(32), primary_key=True),
    sa.Column("kind", sa.String(16), primary_key=True),  # "split" | "dividend"
    sa.Column("ex_date", sa.String(10), primary_key=True),  # YYYY-MM-DD, New York
    sa.Column("ratio", sa.Float(53)),  # split_to / split_from
    sa.Column("amount", sa.Float(53)),  # cash per share
    sa.Column("provider", sa.String(32), primary_key=True),
    sa.Column("fetched_at", sa.BigInteger, nullable=False),
)

quality_issues = sa.Table(
    "quality_issues",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("run_id", sa.Integer),
    sa.Column("symbol", sa.String(32), nullable=False),
    sa.Column("timeframe", sa.String(8), nullable=False),
    sa.Column("kind", sa.String(32), nullable=False),
    sa.Column("severity", sa.String(16), nullable=False),
    sa.Column("ts", sa.BigInteger),
    sa.Column("detail", sa.Text, nullable=False),
    sa.Column("created_at", sa.BigInteger, nullable=False),
    sa.Index("ix_quality_issues_series", "symbol", "timeframe"),
    sa.Index("ix_quality_issues_created_at", "created_at"),
)

requests = sa.Table(
    "requests",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("run_id", sa.Integer),
    sa.Column("provider", sa.String(32), nullable=False),
    sa.Column("symbol", sa.String(32)),
    sa.Column("timeframe", sa.String(8)),
    sa.Column("endpoint", sa.String(32), nullable=False),
    sa.Column("status", sa.Integer),
    sa.Column("ok", sa.Boolean, nullable=False),
    sa.Column("latency_ms", sa.Float, nullable=False),
    sa.Column("attempt", sa.Integer, nullable=False),
    sa.Column("bars", sa.Integer, nullable=False, default=0),
    sa.Column("at", sa.BigInteger, nullable=False),
    sa.Column("error", sa.Text),
    sa.Index("ix_requests_at", "at"),
)

control = sa.Table(
    "control",
    metadata,
    sa.Column("key", sa.String(64), primary_key=True),
    sa.Column("value", sa.Text, nullable=False),
    sa.Column("updated_at", sa.BigInteger, nullable=False),
)

leases = sa.Table(
    "leases",
    metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("run_id", sa.Integer, nullable=False),
    sa.Column("host", sa.String(255), nullable=False),
    sa.Column("pid", sa.Integer, nullable=False),
    sa.Column("acquired_at", sa.BigInteger, nullable=False),
    sa.Column("heartbeat_at", sa.BigInteger, nullable=False),
    sa.Column("expires_at", sa.BigInteger, nullable=False),
)

workers = sa.Table(
    "workers",
    metadata,
    sa.Column("id", sa.String(128), primary_key=True),
    sa.Column("run_id", sa.Integer, nullable=False),
    sa.Column("host", sa.String(255), nullable=False),
    sa.Column("pid", sa.Integer, nullable=False),
    sa.Column("started_at", sa.BigInteger, nullable=False),
    sa.Column("heartbeat_at", sa.BigInteger, nullable=False),
    sa.Column("finished_at", sa.BigInteger),
    sa.Column("jobs_done", sa.Integer, nullable=False, default=0),
    sa.Index("ix_workers_run_id", "run_id"),
)

rate_events = sa.Table(
    "rate_events",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("limiter", sa.String(64), nullable=False),
    sa.Column("at", sa.BigInteger, nullable=False),
    sa.Index("ix_rate_events_limiter_at", "limiter", "at"),
)

sa.Index(
    "uq_runs_one_running",
    runs.c.status,
    unique=True,
    sqlite_where=runs.c.status == "running",
    postgresql_where=runs.c.status == "running",
)
