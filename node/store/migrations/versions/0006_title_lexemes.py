"""PostgreSQL: the title words of every request, for searches ending in a common word
(issue 8)

A search's last word is a prefix (the desk types ``winter`` for "winters" too). GIN
reads a prefix by gathering every title holding a word it starts into a bitmap before
its first match: three common words took ~35 ms at 1M requests, where the same words
whole, which GIN reads together skipping along their lists, took ~8 ms. With the words
that occur in titles at hand, ``winter:*`` becomes ``winter | winters | wintering``, all
whole (node/store/search.py).

``title_lexemes`` holds every lexeme of ``to_tsvector('simple', title)`` of any request,
in byte order (``COLLATE "C"``), so that the words a prefix starts are an index range.
Triggers keep it, whoever writes ``transactions``: once per INSERT statement (a batch
of requests), and when a title changes. A word stays when its last request goes: the
table is a superset, and a word no title holds matches nothing.

SQLite's FTS5 reads a prefix from its own index of terms: nothing here.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-07

"""
from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = '0006'
down_revision: str | None = '0005'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# The words of the titles of ``{rows}`` (a table, or a row as one), in byte order, so
# that concurrent writers adding the same new words take their locks in one order, and
# neither waits for the other in turn (a deadlock).
_LEXEMES_OF = """
    SELECT DISTINCT lexeme COLLATE "C" FROM {rows} AS titled,
        unnest(tsvector_to_array(to_tsvector('simple', coalesce(titled.title, ''))))
        AS lexeme
    ORDER BY 1
"""

_PG = [
    'CREATE TABLE title_lexemes (lexeme text COLLATE "C" PRIMARY KEY)',
    f"""CREATE FUNCTION transactions_title_lexemes() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        IF TG_LEVEL = 'STATEMENT' THEN
            INSERT INTO title_lexemes (lexeme) {_LEXEMES_OF.format(rows='new_rows')}
            ON CONFLICT DO NOTHING;
        ELSE
            INSERT INTO title_lexemes (lexeme)
            {_LEXEMES_OF.format(rows='(SELECT NEW.title AS title)')}
            ON CONFLICT DO NOTHING;
        END IF;
        RETURN NULL;
    END $$""",
    """CREATE TRIGGER transactions_lexemes_insert AFTER INSERT ON transactions
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT
    EXECUTE FUNCTION transactions_title_lexemes()""",
    # Row by row: a trigger with a column list can have no transition table, and one
    # without would run on every change of a request's state.
    """CREATE TRIGGER transactions_lexemes_update AFTER UPDATE OF title ON transactions
    FOR EACH ROW WHEN (OLD.title IS DISTINCT FROM NEW.title)
    EXECUTE FUNCTION transactions_title_lexemes()""",
    # What was there before this migration.
    f"INSERT INTO title_lexemes (lexeme) {_LEXEMES_OF.format(rows='transactions')}",
]


def upgrade() -> None:
    if op.get_bind().dialect.name == 'postgresql':
        for statement in _PG:
            op.execute(statement)


def downgrade() -> None:
    if op.get_bind().dialect.name == 'postgresql':
        for trigger in ('lexemes_insert', 'lexemes_update'):
            op.execute(f"DROP TRIGGER transactions_{trigger} ON transactions")
        op.execute("DROP FUNCTION transactions_title_lexemes()")
        op.execute("DROP TABLE title_lexemes")
