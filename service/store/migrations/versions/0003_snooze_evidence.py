"""What each card rested on, and the same for each snooze (SPEC §6: snoozes bound to evidence).

Both columns are nullable: cards and snoozes from before this revision keep NULL, and a
snooze with a NULL fingerprint keeps holding for its rule and patient until it expires.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-28
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

TABLES = ("cards", "snoozes")


def upgrade() -> None:
    for table in TABLES:
        with op.batch_alter_table(table) as batch:
            batch.add_column(sa.Column("evidence_fingerprint", sa.String(64), nullable=True))
            batch.add_column(sa.Column("weekly_dose", sa.Float, nullable=True))


def downgrade() -> None:
    for table in TABLES:
        with op.batch_alter_table(table) as batch:
            batch.drop_column("weekly_dose")
            batch.drop_column("evidence_fingerprint")
