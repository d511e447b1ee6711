"""staff search by the requester's request id and the patron id in any case (issue 8)

``q=`` matched these two, and the request id we give each lender of a rota, exactly,
while the barcodes and the lender's request id matched in any case (0004). Staff type
what a patron or a partner reads out to them, so now all of them match in any case,
through indexes on ``lower(...)``. The transactions' plain indexes on the two columns
served only that search: they are replaced, so storing a request costs no more.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-06

"""
from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0005'
down_revision: str | None = '0004'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.drop_index('ix_transactions_requesting_request_id', table_name='transactions')
    op.drop_index('ix_transactions_patron_id', table_name='transactions')
    op.create_index('ix_transactions_lower_requesting_request_id', 'transactions',
                    [sa.text('lower(requesting_request_id)')], unique=False)
    op.create_index('ix_transactions_lower_patron_id', 'transactions',
                    [sa.text('lower(patron_id)')], unique=False)
    op.create_index('ix_attempts_lower_requesting_request_id', 'attempts',
                    [sa.text('lower(requesting_request_id)')], unique=False)


def downgrade() -> None:
    op.drop_index('ix_attempts_lower_requesting_request_id', table_name='attempts')
    op.drop_index('ix_transactions_lower_patron_id', table_name='transactions')
    op.drop_index('ix_transactions_lower_requesting_request_id', table_name='transactions')
    op.create_index('ix_transactions_patron_id', 'transactions', ['patron_id'], unique=False)
    op.create_index('ix_transactions_requesting_request_id', 'transactions',
                    ['requesting_request_id'], unique=False)
