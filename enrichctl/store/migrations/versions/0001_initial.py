"""Initial schema: runs, jobs, tasks, bars, indicators, series, quality issues, requests,
control and leases.

Revision ID: 0001
Revises:
Create Date: 2026-11-28
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    # One helper per table, in the order the tables were first created: the statements, and
    # their order, are those the migration-kill tests kill at.
    _bars()
    _control()
    _indicators()
    _leases()
    _quality_issues()
    _requests()
    _runs()
    _series()
    _jobs()
    _tasks()
    _runs_one_running()


def _bars() -> None:
    op.create_table('bars',
    sa.Column('symbol', sa.String(length=32), nullable=False),
    sa.Column('timeframe', sa.String(length=8), nullable=False),
    sa.Column('ts', sa.BigInteger(), autoincrement=False, nullable=False),
    sa.Column('open', sa.Float(precision=53), nullable=False),
    sa.Column('high', sa.Float(precision=53), nullable=False),
    sa.Column('low', sa.Float(precision=53), nullable=False),
    sa.Column('close', sa.Float(precision=53), nullable=False),
    sa.Column('volume', sa.Float(precision=53), nullable=True),
    sa.Column('vwap', sa.Float(precision=53), nullable=True),
    sa.Column('trades', sa.BigInteger(), nullable=True),
    sa.PrimaryKeyConstraint('symbol', 'timeframe', 'ts'),
    sqlite_with_rowid=False
    )


def _control() -> None:
    op.create_table('control',
    sa.Column('key', sa.String(length=64), nullable=False),
    sa.Column('value', sa.Text(), nullable=False),
    sa.Column('updated_at', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('key')
    )


def _indicators() -> None:
    op.create_table('indicators',
    sa.Column('symbol', sa.String(length=32), nullable=False),
    sa.Column('timeframe', sa.String(length=8), nullable=False),
    sa.Column('ts', sa.BigInteger(), autoincrement=False, nullable=False),
    sa.Column('sma_20', sa.Float(precision=53), nullable=True),
    sa.Column('sma_50', sa.Float(precision=53), nullable=True),
    sa.Column('sma_200', sa.Float(precision=53), nullable=True),
    sa.Column('ema_12', sa.Float(precision=53), nullable=True),
    sa.Column('ema_26', sa.Float(precision=53), nullable=True),
    sa.Column('rsi_14', sa.Float(precision=53), nullable=True),
    sa.Column('macd_12_26_9', sa.Float(precision=53), nullable=True),
    sa.Column('macd_signal_12_26_9', sa.Float(precision=53), nullable=True),
    sa.Column('macd_hist_12_26_9', sa.Float(precision=53), nullable=True),
    sa.Column('bb_upper_20_2', sa.Float(precision=53), nullable=True),
    sa.Column('bb_middle_20_2', sa.Float(precision=53), nullable=True),
    sa.Column('bb_lower_20_2', sa.Float(precision=53), nullable=True),
    sa.Column('atr_14', sa.Float(precision=53), nullable=True),
    sa.Column('log_return', sa.Float(precision=53), nullable=True),
    sa.Column('volatility_20', sa.Float(precision=53), nullable=True),
    sa.PrimaryKeyConstraint('symbol', 'timeframe', 'ts'),
    sqlite_with_rowid=False
    )


def _leases() -> None:
    op.create_table('leases',
    sa.Column('name', sa.String(length=64), nullable=False),
    sa.Column('run_id', sa.Integer(), nullable=False),
    sa.Column('host', sa.String(length=255), nullable=False),
    sa.Column('pid', sa.Integer(), nullable=False),
    sa.Column('acquired_at', sa.BigInteger(), nullable=False),
    sa.Column('heartbeat_at', sa.BigInteger(), nullable=False),
    sa.Column('expires_at', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('name')
    )


def _quality_issues() -> None:
    op.create_table('quality_issues',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('run_id', sa.Integer(), nullable=True),
    sa.Column('symbol', sa.String(length=32), nullable=False),
    sa.Column('timeframe', sa.String(length=8), nullable=False),
    sa.Column('kind', sa.String(length=32), nullable=False),
    sa.Column('severity', sa.String(length=16), nullable=False),
    sa.Column('ts', sa.BigInteger(), nullable=True),
    sa.Column('detail', sa.Text(), nullable=False),
    sa.Column('created_at', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index('ix_quality_issues_created_at', 'quality_issues', ['created_at'], unique=False)
    op.create_index('ix_quality_issues_series', 'quality_issues', ['symbol', 'timeframe'], unique=False)


def _requests() -> None:
    op.create_table('requests',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('run_id', sa.Integer(), nullable=True),
    sa.Column('provider', sa.String(length=32), nullable=False),
    sa.Column('symbol', sa.String(length=32), nullable=True),
    sa.Column('timeframe', sa.String(length=8), nullable=True),
    sa.Column('endpoint', sa.String(length=32), nullable=False),
    sa.Column('status', sa.Integer(), nullable=True),
    sa.Column('ok', sa.Boolean(), nullable=False),
    sa.Column('latency_ms', sa.Float(), nullable=False),
    sa.Column('attempt', sa.Integer(), nullable=False),
    sa.Column('bars', sa.Integer(), nullable=False),
    sa.Column('at', sa.BigInteger(), nullable=False),
    sa.Column('error', sa.Text(), nullable=True),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index('ix_requests_at', 'requests', ['at'], unique=False)


def _runs() -> None:
    op.create_table('runs',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('trigger', sa.String(length=16), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('provider', sa.String(length=32), nullable=False),
    sa.Column('synthetic', sa.Boolean(), nullable=False),
    sa.Column('host', sa.String(length=255), nullable=False),
    sa.Column('pid', sa.Integer(), nullable=False),
    sa.Column('started_at', sa.BigInteger(), nullable=False),
    sa.Column('finished_at', sa.BigInteger(), nullable=True),
    sa.Column('options', sa.Text(), nullable=False),
    sa.Column('jobs_total', sa.Integer(), nullable=False),
    sa.Column('jobs_succeeded', sa.Integer(), nullable=False),
    sa.Column('jobs_failed', sa.Integer(), nullable=False),
    sa.Column('bars_fetched', sa.Integer(), nullable=False),
    sa.Column('bars_written', sa.Integer(), nullable=False),
    sa.Column('requests', sa.Integer(), nullable=False),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('resilience', sa.Text(), nullable=True),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index('ix_runs_started_at', 'runs', ['started_at'], unique=False)


def _series() -> None:
    op.create_table('series',
    sa.Column('symbol', sa.String(length=32), nullable=False),
    sa.Column('timeframe', sa.String(length=8), nullable=False),
    sa.Column('asset_class', sa.String(length=16), nullable=False),
    sa.Column('provider', sa.String(length=32), nullable=False),
    sa.Column('synthetic', sa.Boolean(), nullable=False),
    sa.Column('watermark', sa.BigInteger(), nullable=True),
    sa.Column('first_ts', sa.BigInteger(), nullable=True),
    sa.Column('bar_count', sa.Integer(), nullable=False),
    sa.Column('indicator_set', sa.String(length=64), nullable=True),
    sa.Column('quality_score', sa.Float(), nullable=True),
    sa.Column('issue_count', sa.Integer(), nullable=False),
    sa.Column('last_attempt_at', sa.BigInteger(), nullable=True),
    sa.Column('last_success_at', sa.BigInteger(), nullable=True),
    sa.Column('last_error', sa.Text(), nullable=True),
    sa.Column('last_checked_at', sa.BigInteger(), nullable=True),
    sa.Column('updated_at', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('symbol', 'timeframe')
    )


def _jobs() -> None:
    op.create_table('jobs',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('run_id', sa.Integer(), nullable=False),
    sa.Column('symbol', sa.String(length=32), nullable=False),
    sa.Column('asset_class', sa.String(length=16), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('started_at', sa.BigInteger(), nullable=True),
    sa.Column('finished_at', sa.BigInteger(), nullable=True),
    sa.Column('duration_ms', sa.Float(), nullable=True),
    sa.Column('bars_fetched', sa.Integer(), nullable=False),
    sa.Column('bars_written', sa.Integer(), nullable=False),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('updated_at', sa.BigInteger(), nullable=False),
    sa.ForeignKeyConstraint(['run_id'], ['runs.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('run_id', 'symbol', name='uq_jobs_run_symbol')
    )
    op.create_index('ix_jobs_symbol_id', 'jobs', ['symbol', 'id'], unique=False)


def _tasks() -> None:
    op.create_table('tasks',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('job_id', sa.Integer(), nullable=False),
    sa.Column('run_id', sa.Integer(), nullable=False),
    sa.Column('symbol', sa.String(length=32), nullable=False),
    sa.Column('timeframe', sa.String(length=8), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('attempt', sa.Integer(), nullable=False),
    sa.Column('range_start', sa.BigInteger(), nullable=True),
    sa.Column('range_end', sa.BigInteger(), nullable=True),
    sa.Column('full_refresh', sa.Boolean(), nullable=False),
    sa.Column('bars_fetched', sa.Integer(), nullable=False),
    sa.Column('bars_written', sa.Integer(), nullable=False),
    sa.Column('indicator_values', sa.Integer(), nullable=False),
    sa.Column('fetch_ms', sa.Float(), nullable=True),
    sa.Column('compute_ms', sa.Float(), nullable=True),
    sa.Column('compute_ok', sa.Boolean(), nullable=True),
    sa.Column('started_at', sa.BigInteger(), nullable=False),
    sa.Column('finished_at', sa.BigInteger(), nullable=True),
    sa.Column('error', sa.Text(), nullable=True),
    sa.ForeignKeyConstraint(['job_id'], ['jobs.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index('ix_tasks_finished_at', 'tasks', ['finished_at'], unique=False)
    op.create_index('ix_tasks_run_id', 'tasks', ['run_id'], unique=False)


def _runs_one_running() -> None:
    # At most one run may be running per database (the lease guards it; this makes it a rule).
    op.create_index(
        "uq_runs_one_running",
        "runs",
        ["status"],
        unique=True,
        sqlite_where=sa.text("status = 'running'"),
        postgresql_where=sa.text("status = 'running'"),
    )


def downgrade() -> None:
    for table in (
        "tasks", "jobs", "series", "runs", "requests", "quality_issues", "leases", "indicators",
        "control", "bars",
    ):
        op.drop_table(table)
