"""PostgreSQL: each writing transaction counts statuses in a shard of its own (issue 8)

``status_counts`` (migration 0003) is kept by triggers, each writer adding to a shard
chosen by its backend. Two transactions whose backends shared a shard could each hold
a counter row the other wanted next (a batch moves several requests, each a statement
touching two statuses' rows, in message order): a deadlock, one of them undone. Rare
with one node process, less so with several (``[node] processes``), whose pools are
many backends writing at once.

Now a transaction takes a shard no other running transaction holds, with a
transaction-level advisory lock tried from its backend's shard onwards, and keeps it
to its end (``ill.count_shard``, a setting local to the transaction). No two writers
then touch one counter row at the same time: none waits, none deadlocks. A savepoint
rolled back gives back the lock and the setting together. Only when all 64 shards are
held does a writer share one, and wait, as before. The facets sum the shards.

SQLite has one writer at a time: nothing here.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-07

"""
from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = '0007'
down_revision: str | None = '0006'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SHARDS = 64
LOCK_SPACE = 18626  # the advisory locks' first key: ours, apart from other applications'

# The counting itself is 0003's; only how the shard is chosen changes.
_COUNT = """
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
"""

_UPGRADE = f"""CREATE OR REPLACE FUNCTION transactions_count_rows() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    my_shard integer := nullif(current_setting('ill.count_shard', true), '')::integer;
    first integer;
BEGIN
    IF my_shard IS NULL THEN
        first := pg_backend_pid() % {SHARDS};
        FOR step IN 0..{SHARDS - 1} LOOP
            IF pg_try_advisory_xact_lock({LOCK_SPACE}, (first + step) % {SHARDS}) THEN
                my_shard := (first + step) % {SHARDS};
                EXIT;
            END IF;
        END LOOP;
        my_shard := coalesce(my_shard, first);  -- all held: share one, and wait
        PERFORM set_config('ill.count_shard', my_shard::text, true);
    END IF;
    {_COUNT}
END $$"""

_DOWNGRADE = f"""CREATE OR REPLACE FUNCTION transactions_count_rows() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    my_shard integer := pg_backend_pid() % 16;
BEGIN
    {_COUNT}
END $$"""


def upgrade() -> None:
    if op.get_bind().dialect.name == 'postgresql':
        op.execute(_UPGRADE)


def downgrade() -> None:
    if op.get_bind().dialect.name == 'postgresql':
        op.execute(_DOWNGRADE)
