"""Corporate actions from the provider's reference data, and what a series knows about itself:
when it was last fetched whole, when its ticker was delisted, how complete it is.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "corporate_actions",
        sa.Column("symbol", sa.String(length=32), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("ex_date", sa.String(length=10), nullable=False),
        sa.Column("ratio", sa.Float(precision=53), nullable=True),
        sa.Column("amount", sa.Float(precision=53), nullable=True),
        sa.Column("provider", sa.String(length=32), nullable=False),
        sa.Column("fetched_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("symbol", "kind", "ex_date", "provider"),
    )
    with op.batch_alter_table("series") as batch:
        batch.add_column(sa.Column("full_fetched_at", sa.BigInteger(), nullable=True))
        batch.add_column(sa.Column("delisted_at", sa.BigInteger(), nullable=True))
        batch.add_column(sa.Column("completeness", sa.Float(precision=53), nullable=True))
    # Series stored before this revision were whole as of their last successful run.
    op.execute("UPDATE series SET full_fetched_at = last_success_at")


def downgrade() -> None:
    with op.batch_alter_table("series") as batch:
        batch.drop_column("completeness")
        batch.drop_column("delisted_at")
        batch.drop_column("full_fetched_at")
    op.drop_table("corporate_actions")
