"""The data set checked at submit (digest, shape, likelihood) as JSON on each sweep.

Revision ID: 0004_sweep_dataset
Revises: 0003_sweep_queue_indexes
Create Date: 2026-11-27
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004_sweep_dataset"
down_revision = "0003_sweep_queue_indexes"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("sweeps", sa.Column("dataset_json", sa.Text))


def downgrade() -> None:
    op.drop_column("sweeps", "dataset_json")
