"""indexes for the staff desk's lookups at scale (issue 8)

Each matches any case, through an index on ``lower(...)`` (the same expression the
queries compare, on both sides, so that SQLite's ASCII-only ``lower`` agrees with itself):

- scanned barcodes: ``request_barcodes`` (check-in by barcode, a return scan, the
  lending list's ``?barcode=`` filter) and ``holdings_items`` (what a scan names);
- receive by the lender's request id: ``lower(supplying_request_id)``;
- the partner filter of the staff lists, in list order: ``(lower(partner), role,
  updated_at, id)``;
- and ``outbox (peer, state, sent_at)`` for the admin's partners screen, read peer by peer.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-25

"""
from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0004'
down_revision: str | None = '0003'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index('ix_transactions_lower_partner_role_updated_at_id', 'transactions',
                    [sa.text('lower(partner)'), 'role', 'updated_at', 'id'], unique=False)
    op.create_index('ix_transactions_lower_supplying_request_id', 'transactions',
                    [sa.text('lower(supplying_request_id)')], unique=False)
    op.create_index('ix_request_barcodes_lower_barcode', 'request_barcodes',
                    [sa.text('lower(barcode)')], unique=False)
    op.create_index('ix_holdings_items_lower_barcode', 'holdings_items',
                    [sa.text('lower(barcode)')], unique=False)
    op.create_index(op.f('ix_outbox_peer_state_sent_at'), 'outbox',
                    ['peer', 'state', 'sent_at'], unique=False)


def downgrade() -> None:
    op.drop_index(op.f('ix_outbox_peer_state_sent_at'), table_name='outbox')
    op.drop_index('ix_holdings_items_lower_barcode', table_name='holdings_items')
    op.drop_index('ix_request_barcodes_lower_barcode', table_name='request_barcodes')
    op.drop_index('ix_transactions_lower_supplying_request_id', table_name='transactions')
    op.drop_index('ix_transactions_lower_partner_role_updated_at_id', table_name='transactions')
