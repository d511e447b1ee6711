"""indexes and full-text search for staff lists and search at scale (issue 8)

- the lists' order (role, [status,] updated_at, id) as indexes, replacing
  (role, status), (updated_at) and (title), which no query used; the same order
  for the requests needing attention only (a partial index); the requesting and
  supplying request ids indexed on their own;
- ``status_counts``: requests per (role, status), kept by triggers, for the facets;
- ``request_barcodes``: the item barcodes each request names, kept by triggers;
- title words: an FTS5 table ``transactions_fts`` (external content, kept by
  triggers) on SQLite, a GIN index on ``to_tsvector('simple', title)`` on PostgreSQL.

The triggers keep all three in step whoever writes ``transactions``; the queries
that read them are in node/store/search.py.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-25

"""
from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0003'
down_revision: str | None = '0002'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_ID = sa.BigInteger().with_variant(sa.Integer(), 'sqlite')

# The JSON paths of the barcodes a request names, per role (see tables.request_barcodes).
_SQLITE_BARCODES = """
    SELECT json_extract({row}.state, '$.located.barcode') AS b WHERE {row}.role = 'lending'
    UNION SELECT value FROM json_each({row}.state, '$.shipped_barcodes')
        WHERE {row}.role = 'lending'
    UNION SELECT value FROM json_each({row}.state, '$.barcodes') WHERE {row}.role = 'borrowing'
"""
_SQLITE_BARCODES_CHANGED = " OR ".join(
    f"json_extract(old.state, '{path}') IS NOT json_extract(new.state, '{path}')"
    for path in ('$.located.barcode', '$.shipped_barcodes', '$.barcodes'))

_SQLITE = [
    # -- facets
    """CREATE TRIGGER transactions_count_insert AFTER INSERT ON transactions BEGIN
        INSERT INTO status_counts (role, status, shard, n) VALUES (new.role, new.status, 0, 1)
        ON CONFLICT (role, status, shard) DO UPDATE SET n = n + 1;
    END""",
    """CREATE TRIGGER transactions_count_delete AFTER DELETE ON transactions BEGIN
        UPDATE status_counts SET n = n - 1
        WHERE role = old.role AND status = old.status AND shard = 0;
    END""",
    """CREATE TRIGGER transactions_count_update AFTER UPDATE OF role, status ON transactions
    WHEN old.status IS NOT new.status OR old.role IS NOT new.role BEGIN
        UPDATE status_counts SET n = n - 1
        WHERE role = old.role AND status = old.status AND shard = 0;
        INSERT INTO status_counts (role, status, shard, n) VALUES (new.role, new.status, 0, 1)
        ON CONFLICT (role, status, shard) DO UPDATE SET n = n + 1;
    END""",
    # -- barcodes (deleted with their request by the foreign key's cascade)
    f"""CREATE TRIGGER transactions_barcodes_insert AFTER INSERT ON transactions BEGIN
        INSERT OR IGNORE INTO request_barcodes (barcode, transaction_id)
        SELECT b, new.id FROM ({_SQLITE_BARCODES.format(row='new')}) AS found
        WHERE b IS NOT NULL;
    END""",
    f"""CREATE TRIGGER transactions_barcodes_update AFTER UPDATE OF state ON transactions
    WHEN {_SQLITE_BARCODES_CHANGED} BEGIN
        DELETE FROM request_barcodes WHERE transaction_id = new.id;
        INSERT OR IGNORE INTO request_barcodes (barcode, transaction_id)
        SELECT b, new.id FROM ({_SQLITE_BARCODES.format(row='new')}) AS found
        WHERE b IS NOT NULL;
    END""",
    # -- title words
    """CREATE VIRTUAL TABLE transactions_fts USING fts5(
        title, content='transactions', content_rowid='id',
        tokenize='unicode61 remove_diacritics 2')""",
    """CREATE TRIGGER transactions_fts_insert AFTER INSERT ON transactions
    WHEN new.title IS NOT NULL BEGIN
        INSERT INTO transactions_fts (rowid, title) VALUES (new.id, new.title);
    END""",
    """CREATE TRIGGER transactions_fts_delete AFTER DELETE ON transactions
    WHEN old.title IS NOT NULL BEGIN
        INSERT INTO transactions_fts (transactions_fts, rowid, title)
        VALUES ('delete', old.id, old.title);
    END""",
    """CREATE TRIGGER transactions_fts_update AFTER UPDATE OF title ON transactions
    WHEN old.title IS NOT new.title BEGIN
        INSERT INTO transactions_fts (transactions_fts, rowid, title)
        SELECT 'delete', old.id, old.title WHERE old.title IS NOT NULL;
        INSERT INTO transactions_fts (rowid, title)
        SELECT new.id, new.title WHERE new.title IS NOT NULL;
    END""",
    # -- what was there before this migration
    "INSERT INTO transactions_fts (transactions_fts) VALUES ('rebuild')",
]

_PG_BARCODES = """
    SELECT {row}.state #>> '{{located,barcode}}' AS b WHERE {row}.role = 'lending'
    UNION SELECT jsonb_array_elements_text(
        CASE WHEN jsonb_typeof({row}.state -> 'shipped_barcodes') = 'array'
             THEN {row}.state -> 'shipped_barcodes' ELSE '[]' END)
        WHERE {row}.role = 'lending'
    UNION SELECT jsonb_array_elements_text(
        CASE WHEN jsonb_typeof({row}.state -> 'barcodes') = 'array'
             THEN {row}.state -> 'barcodes' ELSE '[]' END)
        WHERE {row}.role = 'borrowing'
"""

_PG = [
    # -- facets. A writer adds to its own shard (by backend), so concurrent transactions
    # seldom wait on, or deadlock over, the same counter row.
    """CREATE FUNCTION transactions_count_rows() RETURNS trigger LANGUAGE plpgsql AS $$
    DECLARE
        my_shard integer := pg_backend_pid() % 16;
    BEGIN
        IF TG_OP = 'INSERT' THEN
            INSERT INTO status_counts (role, status, shard, n)
            SELECT role, status, my_shard, count(*) FROM new_rows GROUP BY role, status
            ORDER BY role, status
            ON CONFLICT (role, status, shard) DO UPDATE SET n = status_counts.n + excluded.n;
        ELSIF TG_OP = 'DELETE' THEN
            INSERT INTO status_counts (role, status, shard, n)
            SELECT role, status, my_shard, -count(*) FROM old_rows GROUP BY role, status
            ORDER BY role, status
            ON CONFLICT (role, status, shard) DO UPDATE SET n = status_counts.n + excluded.n;
        ELSE
            INSERT INTO status_counts (role, status, shard, n)
            SELECT role, status, my_shard, sum(d) FROM (
                SELECT OLD.role, OLD.status, -1 UNION ALL SELECT NEW.role, NEW.status, 1
            ) AS change(role, status, d) GROUP BY role, status ORDER BY role, status
            ON CONFLICT (role, status, shard) DO UPDATE SET n = status_counts.n + excluded.n;
        END IF;
        RETURN NULL;
    END $$""",
    """CREATE TRIGGER transactions_count_insert AFTER INSERT ON transactions
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT
    EXECUTE FUNCTION transactions_count_rows()""",
    """CREATE TRIGGER transactions_count_delete AFTER DELETE ON transactions
    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT
    EXECUTE FUNCTION transactions_count_rows()""",
    """CREATE TRIGGER transactions_count_update AFTER UPDATE OF role, status ON transactions
    FOR EACH ROW WHEN (OLD.status IS DISTINCT FROM NEW.status OR OLD.role IS DISTINCT FROM NEW.role)
    EXECUTE FUNCTION transactions_count_rows()""",
    # -- barcodes (deleted with their request by the foreign key's cascade)
    f"""CREATE FUNCTION transactions_barcode_rows() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        IF TG_OP = 'UPDATE' THEN
            DELETE FROM request_barcodes WHERE transaction_id = NEW.id;
        END IF;
        INSERT INTO request_barcodes (barcode, transaction_id)
        SELECT b, NEW.id FROM ({_PG_BARCODES.format(row='NEW')}) AS found
        WHERE b IS NOT NULL
        ON CONFLICT DO NOTHING;
        RETURN NULL;
    END $$""",
    """CREATE TRIGGER transactions_barcodes_insert AFTER INSERT ON transactions
    FOR EACH ROW EXECUTE FUNCTION transactions_barcode_rows()""",
    """CREATE TRIGGER transactions_barcodes_update AFTER UPDATE OF state ON transactions
    FOR EACH ROW WHEN (
        OLD.state #> '{located,barcode}' IS DISTINCT FROM NEW.state #> '{located,barcode}'
        OR OLD.state -> 'shipped_barcodes' IS DISTINCT FROM NEW.state -> 'shipped_barcodes'
        OR OLD.state -> 'barcodes' IS DISTINCT FROM NEW.state -> 'barcodes')
    EXECUTE FUNCTION transactions_barcode_rows()""",
    # -- title words. No pending list (fastupdate): each search would read all of it,
    # up to 4 MB, while writers leave it full.
    """CREATE INDEX ix_transactions_title_words ON transactions
    USING gin (to_tsvector('simple'::regconfig, coalesce(title, ''::text)))
    WITH (fastupdate = off)""",
]


def upgrade() -> None:
    op.drop_index(op.f('ix_transactions_role_status'), table_name='transactions')
    op.drop_index(op.f('ix_transactions_title'), table_name='transactions')
    op.drop_index(op.f('ix_transactions_updated_at'), table_name='transactions')
    op.create_index(op.f('ix_transactions_role_status_updated_at_id'), 'transactions',
                    ['role', 'status', 'updated_at', 'id'], unique=False)
    op.create_index(op.f('ix_transactions_role_updated_at_id'), 'transactions',
                    ['role', 'updated_at', 'id'], unique=False)
    op.create_index('ix_transactions_needs_attention', 'transactions',
                    ['role', 'updated_at', 'id'], unique=False,
                    sqlite_where=sa.text('needs_attention = 1'),
                    postgresql_where=sa.text('needs_attention'))
    op.create_index(op.f('ix_transactions_requesting_request_id'), 'transactions',
                    ['requesting_request_id'], unique=False)
    op.create_index(op.f('ix_transactions_supplying_request_id'), 'transactions',
                    ['supplying_request_id'], unique=False)
    op.create_table('status_counts',
    sa.Column('role', sa.String(length=16), nullable=False),
    sa.Column('status', sa.String(length=64), nullable=False),
    sa.Column('shard', sa.Integer(), nullable=False),
    sa.Column('n', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('role', 'status', 'shard', name=op.f('pk_status_counts'))
    )
    op.create_table('request_barcodes',
    sa.Column('barcode', sa.String(length=255), nullable=False),
    sa.Column('transaction_id', _ID, nullable=False),
    sa.ForeignKeyConstraint(['transaction_id'], ['transactions.id'],
                            name=op.f('fk_request_barcodes_transaction_id_transactions'),
                            ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('barcode', 'transaction_id', name=op.f('pk_request_barcodes'))
    )
    op.create_index(op.f('ix_request_barcodes_transaction_id'), 'request_barcodes',
                    ['transaction_id'], unique=False)
    sqlite = op.get_bind().dialect.name == 'sqlite'
    for statement in _SQLITE if sqlite else _PG:
        op.execute(statement)
    # What was there before this migration.
    op.execute("INSERT INTO status_counts (role, status, shard, n) "
               "SELECT role, status, 0, count(*) FROM transactions GROUP BY role, status")
    _backfill_barcodes(op.get_bind())


def _backfill_barcodes(conn) -> None:
    tx = sa.table('transactions', sa.column('id'), sa.column('role'), sa.column('state', sa.JSON))
    rb = sa.table('request_barcodes', sa.column('barcode'), sa.column('transaction_id'))
    for row in conn.execute(sa.select(tx.c.id, tx.c.role, tx.c.state)).all():
        state = row.state or {}
        if row.role == 'lending':
            found = {(state.get('located') or {}).get('barcode'),
                     *(state.get('shipped_barcodes') or ())}
        else:
            found = set(state.get('barcodes') or ())
        found.discard(None)
        if found:
            conn.execute(sa.insert(rb), [{'barcode': b, 'transaction_id': row.id}
                                         for b in sorted(found)])


def downgrade() -> None:
    if op.get_bind().dialect.name == 'sqlite':
        for trigger in ('count_insert', 'count_delete', 'count_update', 'barcodes_insert',
                        'barcodes_update', 'fts_insert', 'fts_delete', 'fts_update'):
            op.execute(f"DROP TRIGGER transactions_{trigger}")
        op.execute("DROP TABLE transactions_fts")
    else:
        for trigger in ('count_insert', 'count_delete', 'count_update', 'barcodes_insert',
                        'barcodes_update'):
            op.execute(f"DROP TRIGGER transactions_{trigger} ON transactions")
        op.execute("DROP FUNCTION transactions_count_rows()")
        op.execute("DROP FUNCTION transactions_barcode_rows()")
        op.execute("DROP INDEX ix_transactions_title_words")
    op.drop_index(op.f('ix_request_barcodes_transaction_id'), table_name='request_barcodes')
    op.drop_table('request_barcodes')
    op.drop_table('status_counts')
    op.drop_index(op.f('ix_transactions_supplying_request_id'), table_name='transactions')
    op.drop_index(op.f('ix_transactions_requesting_request_id'), table_name='transactions')
    op.drop_index('ix_transactions_needs_attention', table_name='transactions')
    op.drop_index(op.f('ix_transactions_role_updated_at_id'), table_name='transactions')
    op.drop_index(op.f('ix_transactions_role_status_updated_at_id'), table_name='transactions')
    op.create_index(op.f('ix_transactions_updated_at'), 'transactions', ['updated_at'],
                    unique=False)
    op.create_index(op.f('ix_transactions_title'), 'transactions', ['title'], unique=False)
    op.create_index(op.f('ix_transactions_role_status'), 'transactions', ['role', 'status'],
                    unique=False)
