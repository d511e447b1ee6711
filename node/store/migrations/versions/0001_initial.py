"""initial schema: transactions, attempts, messages, outbox, history, holdings, closures

Revision ID: 0001
Revises:
Create Date: 2026-11-23 18:17:17.218200

"""
from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

# revision identifiers, used by Alembic.
revision: str = '0001'
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('closures',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('active', sa.Boolean(), server_default=sa.false(), nullable=False),
    sa.Column('start', sa.Date(), nullable=True),
    sa.Column('end', sa.Date(), nullable=True),
    sa.Column('note', sa.Text(), nullable=True),
    sa.Column('set_by', sa.String(length=255), nullable=True),
    sa.Column('set_at', sa.DateTime(timezone=True), nullable=True),
    sa.CheckConstraint("kind IN ('lending', 'borrowing')", name=op.f('ck_closures_kind')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_closures')),
    sa.UniqueConstraint('kind', name=op.f('uq_closures_kind'))
    )
    op.create_table('holdings_records',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('record_id', sa.String(length=255), nullable=False),
    sa.Column('title', sa.Text(), nullable=True),
    sa.Column('author', sa.Text(), nullable=True),
    sa.Column('publisher', sa.Text(), nullable=True),
    sa.Column('publication_date', sa.String(length=64), nullable=True),
    sa.Column('edition', sa.Text(), nullable=True),
    sa.Column('title_key', sa.String(length=255), nullable=True),
    sa.Column('author_key', sa.String(length=255), nullable=True),
    sa.Column('extra', sa.JSON().with_variant(postgresql.JSONB(), 'postgresql'), nullable=True),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_holdings_records')),
    sa.UniqueConstraint('record_id', name=op.f('uq_holdings_records_record_id'))
    )
    op.create_index(op.f('ix_holdings_records_author_key'), 'holdings_records', ['author_key'], unique=False)
    op.create_index(op.f('ix_holdings_records_title_key'), 'holdings_records', ['title_key'], unique=False)

    op.create_table('partner_closures',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('symbol', sa.String(length=128), nullable=False),
    sa.Column('start', sa.Date(), nullable=True),
    sa.Column('end', sa.Date(), nullable=True),
    sa.Column('note', sa.Text(), nullable=True),
    sa.Column('learned_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_partner_closures')),
    sa.UniqueConstraint('symbol', name=op.f('uq_partner_closures_symbol'))
    )
    op.create_table('transactions',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('role', sa.String(length=16), nullable=False),
    sa.Column('public_id', sa.String(length=64), nullable=False),
    sa.Column('partner', sa.String(length=128), nullable=True),
    sa.Column('requesting_agency_id', sa.String(length=128), nullable=False),
    sa.Column('requesting_request_id', sa.String(length=255), nullable=False),
    sa.Column('supplying_request_id', sa.String(length=255), nullable=True),
    sa.Column('status', sa.String(length=64), nullable=False),
    sa.Column('title', sa.Text(), nullable=True),
    sa.Column('patron_id', sa.String(length=255), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('needs_attention', sa.Boolean(), server_default=sa.false(), nullable=False),
    sa.Column('state', sa.JSON().with_variant(postgresql.JSONB(), 'postgresql'), nullable=False),
    sa.Column('version', sa.Integer(), server_default=sa.text('1'), nullable=False),
    sa.Column('next_timer_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('duplicate_key', sa.String(length=512), nullable=True),
    sa.CheckConstraint("role IN ('lending', 'borrowing')", name=op.f('ck_transactions_role')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_transactions')),
    sa.UniqueConstraint('public_id', name=op.f('uq_transactions_public_id')),
    sa.UniqueConstraint('role', 'requesting_agency_id', 'requesting_request_id', name=op.f('uq_transactions_role_requesting_agency_id_requesting_request_id'))
    )
    op.create_index(op.f('ix_transactions_patron_id'), 'transactions', ['patron_id'], unique=False)
    op.create_index(op.f('ix_transactions_role_status'), 'transactions', ['role', 'status'], unique=False)
    op.create_index(op.f('ix_transactions_title'), 'transactions', ['title'], unique=False)
    op.create_index(op.f('ix_transactions_updated_at'), 'transactions', ['updated_at'], unique=False)
    op.create_index(op.f('ix_transactions_next_timer_at'), 'transactions', ['next_timer_at'], unique=False)
    op.create_index(op.f('ix_transactions_duplicate_key'), 'transactions', ['duplicate_key'], unique=False)

    op.create_table('attempts',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('transaction_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('seq', sa.Integer(), nullable=False),
    sa.Column('partner', sa.String(length=128), nullable=False),
    sa.Column('requesting_request_id', sa.String(length=255), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['transaction_id'], ['transactions.id'], name=op.f('fk_attempts_transaction_id_transactions'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_attempts')),
    sa.UniqueConstraint('requesting_request_id', name=op.f('uq_attempts_requesting_request_id')),
    sa.UniqueConstraint('transaction_id', 'seq', name=op.f('uq_attempts_transaction_id_seq'))
    )
    op.create_table('history',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('transaction_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('actor', sa.String(length=255), nullable=False),
    sa.Column('event', sa.String(length=64), nullable=False),
    sa.Column('detail', sa.JSON().with_variant(postgresql.JSONB(), 'postgresql'), nullable=True),
    sa.ForeignKeyConstraint(['transaction_id'], ['transactions.id'], name=op.f('fk_history_transaction_id_transactions'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_history'))
    )
    op.create_index(op.f('ix_history_transaction_id_at'), 'history', ['transaction_id', 'at'], unique=False)

    op.create_table('holdings_identifiers',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('record_id', sa.String(length=255), nullable=False),
    sa.Column('kind', sa.String(length=8), nullable=False),
    sa.Column('value', sa.String(length=255), nullable=False),
    sa.CheckConstraint("kind IN ('isbn', 'issn', 'oclc', 'lccn', 'local')", name=op.f('ck_holdings_identifiers_kind')),
    sa.ForeignKeyConstraint(['record_id'], ['holdings_records.record_id'], name=op.f('fk_holdings_identifiers_record_id_holdings_records'), onupdate='CASCADE', ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_holdings_identifiers')),
    sa.UniqueConstraint('record_id', 'kind', 'value', name=op.f('uq_holdings_identifiers_record_id_kind_value'))
    )
    op.create_index(op.f('ix_holdings_identifiers_kind_value'), 'holdings_identifiers', ['kind', 'value'], unique=False)

    op.create_table('holdings_items',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('record_id', sa.String(length=255), nullable=False),
    sa.Column('barcode', sa.String(length=255), nullable=False),
    sa.Column('call_number', sa.String(length=255), nullable=True),
    sa.Column('location', sa.String(length=255), nullable=True),
    sa.Column('status', sa.String(length=32), server_default=sa.text("'available'"), nullable=False),
    sa.Column('due_date', sa.Date(), nullable=True),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.CheckConstraint("status IN ('available', 'on_loan', 'missing', 'non_circulating')", name=op.f('ck_holdings_items_status')),
    sa.ForeignKeyConstraint(['record_id'], ['holdings_records.record_id'], name=op.f('fk_holdings_items_record_id_holdings_records'), onupdate='CASCADE', ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_holdings_items')),
    sa.UniqueConstraint('barcode', name=op.f('uq_holdings_items_barcode'))
    )
    op.create_index(op.f('ix_holdings_items_record_id'), 'holdings_items', ['record_id'], unique=False)

    op.create_table('messages',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('transaction_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True),
    sa.Column('direction', sa.String(length=3), nullable=False),
    sa.Column('kind', sa.String(length=64), nullable=False),
    sa.Column('peer', sa.String(length=128), nullable=True),
    sa.Column('requesting_request_id', sa.String(length=255), nullable=True),
    sa.Column('status', sa.String(length=64), nullable=True),
    sa.Column('action', sa.String(length=64), nullable=True),
    sa.Column('reason', sa.String(length=64), nullable=True),
    sa.Column('message_status', sa.String(length=16), nullable=True),
    sa.Column('raw', sa.Text(), nullable=False),
    sa.Column('digest', sa.String(length=64), nullable=True),
    sa.Column('confirmation', sa.Text(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.CheckConstraint("direction IN ('in', 'out')", name=op.f('ck_messages_direction')),
    sa.ForeignKeyConstraint(['transaction_id'], ['transactions.id'], name=op.f('fk_messages_transaction_id_transactions'), ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_messages')),
    sa.UniqueConstraint('digest', name=op.f('uq_messages_digest'))
    )
    op.create_index(op.f('ix_messages_requesting_request_id'), 'messages', ['requesting_request_id'], unique=False)
    op.create_index(op.f('ix_messages_transaction_id'), 'messages', ['transaction_id'], unique=False)

    op.create_table('outbox',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('transaction_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True),
    sa.Column('peer', sa.String(length=128), nullable=False),
    sa.Column('url', sa.Text(), nullable=False),
    sa.Column('kind', sa.String(length=64), nullable=False),
    sa.Column('body', sa.LargeBinary(), nullable=False),
    sa.Column('state', sa.String(length=16), server_default=sa.text("'pending'"), nullable=False),
    sa.Column('attempts', sa.Integer(), server_default=sa.text('0'), nullable=False),
    sa.Column('next_attempt_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('last_error', sa.Text(), nullable=True),
    sa.Column('last_http_status', sa.Integer(), nullable=True),
    sa.Column('last_attempt_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('locked_by', sa.String(length=128), nullable=True),
    sa.Column('locked_until', sa.DateTime(timezone=True), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('sent_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('confirmation', sa.LargeBinary(), nullable=True),
    sa.CheckConstraint("state IN ('pending', 'sent', 'failed')", name=op.f('ck_outbox_state')),
    sa.ForeignKeyConstraint(['transaction_id'], ['transactions.id'], name=op.f('fk_outbox_transaction_id_transactions'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_outbox'))
    )
    op.create_index(op.f('ix_outbox_state_next_attempt_at'), 'outbox', ['state', 'next_attempt_at'], unique=False)
    op.create_index(op.f('ix_outbox_transaction_id_id'), 'outbox', ['transaction_id', 'id'], unique=False)



def downgrade() -> None:
    op.drop_index(op.f('ix_outbox_transaction_id_id'), table_name='outbox')
    op.drop_index(op.f('ix_outbox_state_next_attempt_at'), table_name='outbox')

    op.drop_table('outbox')
    op.drop_index(op.f('ix_messages_transaction_id'), table_name='messages')
    op.drop_index(op.f('ix_messages_requesting_request_id'), table_name='messages')

    op.drop_table('messages')
    op.drop_index(op.f('ix_holdings_items_record_id'), table_name='holdings_items')

    op.drop_table('holdings_items')
    op.drop_index(op.f('ix_holdings_identifiers_kind_value'), table_name='holdings_identifiers')

    op.drop_table('holdings_identifiers')
    op.drop_index(op.f('ix_history_transaction_id_at'), table_name='history')

    op.drop_table('history')
    op.drop_table('attempts')
    op.drop_index(op.f('ix_transactions_updated_at'), table_name='transactions')
    op.drop_index(op.f('ix_transactions_title'), table_name='transactions')
    op.drop_index(op.f('ix_transactions_role_status'), table_name='transactions')
    op.drop_index(op.f('ix_transactions_patron_id'), table_name='transactions')

    op.drop_table('transactions')
    op.drop_table('partner_closures')
    op.drop_index(op.f('ix_holdings_records_title_key'), table_name='holdings_records')
    op.drop_index(op.f('ix_holdings_records_author_key'), table_name='holdings_records')

    op.drop_table('holdings_records')
    op.drop_table('closures')
