"""Outbox: whether a message may have reached its peer already

A send whose outcome is unknown (it timed out, the connection broke once the request
was on its way, the peer answered 5xx, the worker sending it died or lost its lease)
may have been stored by the peer. Sent again, it may get an ERROR because the peer has
it: CrossLink refuses a requestingAgencyRequestId it already holds. The borrowing side
must not then take that ERROR for a refusal and ask the next lender (two lenders could
ship). ``maybe_delivered`` remembers it for the row's later attempts.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-07

"""
from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0008'
down_revision: str | None = '0007'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column('outbox', sa.Column('maybe_delivered', sa.Boolean(), nullable=False,
                                      server_default=sa.false()))


def downgrade() -> None:
    op.drop_column('outbox', 'maybe_delivered')  # SQLite 3.35+ drops a column itself
