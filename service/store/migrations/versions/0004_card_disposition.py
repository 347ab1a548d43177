"""Per-client settings and repeated alerts (SPEC §8): who each card was for and what became of it.

``cards`` gains the caller's ``client_iss``, a keyed hash of the encounter (``encounter_key``),
a hash of the acted-on draft's medication codes, dose and timing (``draft_key``), and the
``disposition``: ``shown``, ``silent`` (the client's silent setting) or ``suppressed`` (a repeat
of a card order-select showed). Cards from before this revision were all shown. An index on
(patient_key, rule_id, issued_at) serves the repeat check.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("cards") as batch:
        batch.add_column(sa.Column("client_iss", sa.String(500), nullable=True))
        batch.add_column(sa.Column("encounter_key", sa.String(64), nullable=True))
        batch.add_column(sa.Column("draft_key", sa.String(64), nullable=True))
        batch.add_column(sa.Column("disposition", sa.String(20), nullable=False, server_default="shown"))
    op.create_index("ix_cards_repeat", "cards", ["patient_key", "rule_id", "issued_at"])


def downgrade() -> None:
    op.drop_index("ix_cards_repeat", table_name="cards")
    with op.batch_alter_table("cards") as batch:
        batch.drop_column("disposition")
        batch.drop_column("draft_key")
        batch.drop_column("encounter_key")
        batch.drop_column("client_iss")
