"""Scale-out and backfill bookkeeping: job claims with leases, workers, a shared rate-limit log,
and the earliest start ever requested for a series.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("claimed_by", sa.String(length=128), nullable=True))
        batch.add_column(sa.Column("lease_expires_at", sa.BigInteger(), nullable=True))
    op.create_index("ix_jobs_run_status", "jobs", ["run_id", "status"], unique=False)
    with op.batch_alter_table("series") as batch:
        batch.add_column(sa.Column("requested_from", sa.BigInteger(), nullable=True))
    # Series stored before this revision were fetched from their first bar at the latest.
    op.execute("UPDATE series SET requested_from = first_ts")
    op.create_table(
        "workers",
        sa.Column("id", sa.String(length=128), nullable=False),
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("host", sa.String(length=255), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("started_at", sa.BigInteger(), nullable=False),
        sa.Column("heartbeat_at", sa.BigInteger(), nullable=False),
        sa.Column("finished_at", sa.BigInteger(), nullable=True),
        sa.Column("jobs_done", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_workers_run_id", "workers", ["run_id"], unique=False)
    op.create_table(
        "rate_events",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("limiter", sa.String(length=64), nullable=False),
        sa.Column("at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_rate_events_limiter_at", "rate_events", ["limiter", "at"], unique=False)


def downgrade() -> None:
    op.drop_table("rate_events")
    op.drop_table("workers")
    with op.batch_alter_table("series") as batch:
        batch.drop_column("requested_from")
    op.drop_index("ix_jobs_run_status", table_name="jobs")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("lease_expires_at")
        batch.drop_column("claimed_by")
