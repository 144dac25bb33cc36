"""How many of a series' stored bars lie inside the calendar's sessions (intraday stock, etf
and index series): completeness counts those, so extended-hours bars cannot hide holes.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-03
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # NULL until the series' next write counts its stored bars once.
    with op.batch_alter_table("series") as batch:
        batch.add_column(sa.Column("session_bars", sa.BigInteger(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("series") as batch:
        batch.drop_column("session_bars")
