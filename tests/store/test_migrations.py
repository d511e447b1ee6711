"""Migrations on SQLite and PostgreSQL; the refusal of an unmigrated database."""

from __future__ import annotations

import asyncio
import sys
import warnings
from datetime import UTC, datetime, timedelta, timezone

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import insert, inspect, select
from sqlalchemy.exc import IntegrityError

from node.store import tables
from node.store.db import (
    NotMigrated,
    alembic_config,
    check_migrated,
    create_engine,
    current_revision,
    head_revision,
    migrate_async,
)

EXPECTED_TABLES = {
    "transactions",
    "attempts",
    "messages",
    "outbox",
    "history",
    "holdings_records",
    "holdings_identifiers",
    "holdings_items",
    "closures",
    "partner_closures",
    "status_counts",
    "request_barcodes",
}


def _ours(name: str | None) -> bool:
    """Not the full-text search of migrations 0003 and 0006 (SQLite's FTS5 table and its
    shadow tables, PostgreSQL's GIN index and title words), which the tables module
    does not describe."""
    return not (name or "").startswith(
        ("transactions_fts", "ix_transactions_title_words", "title_lexemes"))


async def test_check_migrated_refuses_empty_database(db_url):
    engine = create_engine(db_url)
    try:
        assert await current_revision(engine) is None
        with pytest.raises(NotMigrated) as info:
            await check_migrated(engine)
        message = str(info.value)
        assert "is not migrated (at revision none, need " in message
        assert head_revision() in message
        assert "run `ill-node migrate --config FILE`" in message
        assert info.value.current is None and info.value.head == head_revision()
    finally:
        await engine.dispose()


async def test_migrate_creates_all_tables(db_url):
    engine = create_engine(db_url)
    try:
        assert await migrate_async(engine) == head_revision()
        await check_migrated(engine)
        # Running it again is a no-op.
        assert await migrate_async(engine) == head_revision()
        async with engine.connect() as conn:
            names = set(await conn.run_sync(lambda c: inspect(c).get_table_names()))
        assert EXPECTED_TABLES | {"alembic_version"} == set(filter(_ours, names))
        assert EXPECTED_TABLES == set(tables.metadata.tables)
    finally:
        await engine.dispose()


def _diff(sync_conn):
    ctx = MigrationContext.configure(sync_conn, opts={
        "compare_type": True,
        "include_name": lambda name, kind, _parent: _ours(name),
    })
    with warnings.catch_warnings():
        # SQLite cannot reflect indexes on expressions (migration 0004's lower(...)):
        # only PostgreSQL compares those.
        warnings.filterwarnings("ignore", "Skipped unsupported reflection of expression-based")
        warnings.filterwarnings("ignore", "autogenerate skipping metadata-specified expression")
        return compare_metadata(ctx, tables.metadata)


async def test_migrations_match_tables_module(migrated_engine):
    """tables.py and the migrations describe the same schema (else: write a migration)."""
    async with migrated_engine.connect() as conn:
        diff = await conn.run_sync(_diff)
    assert diff == []


async def test_downgrade_to_base_and_up_again(migrated_engine):
    def down(sync_conn):
        cfg = alembic_config()
        cfg.attributes["connection"] = sync_conn
        command.downgrade(cfg, "base")

    async with migrated_engine.begin() as conn:
        await conn.run_sync(down)
    assert await current_revision(migrated_engine) is None
    async with migrated_engine.connect() as conn:
        names = set(await conn.run_sync(lambda c: inspect(c).get_table_names()))
    assert names <= {"alembic_version"}
    await migrate_async(migrated_engine)
    await check_migrated(migrated_engine)


async def test_datetimes_round_trip_as_aware_utc(migrated_engine):
    cet = timezone(timedelta(hours=1))
    local = datetime(2026, 3, 1, 12, 30, 15, 123456, tzinfo=cet)
    async with migrated_engine.begin() as conn:
        await conn.execute(
            insert(tables.partner_closures).values(symbol="ISIL:XX-1", learned_at=local)
        )
        got = (await conn.execute(select(tables.partner_closures.c.learned_at))).scalar_one()
    assert got == local
    assert got.tzinfo is not None and got.utcoffset() == timedelta(0)
    assert got.hour == 11

    with pytest.raises(Exception, match="naive datetime"):
        async with migrated_engine.begin() as conn:
            await conn.execute(
                insert(tables.partner_closures).values(
                    symbol="ISIL:XX-2", learned_at=datetime(2026, 3, 1)
                )
            )


async def test_sqlite_pragmas_and_single_connection(tmp_path):
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'p.db'}")
    try:
        async with engine.connect() as conn:
            mode = (await conn.exec_driver_sql("PRAGMA journal_mode")).scalar_one()
            sync = (await conn.exec_driver_sql("PRAGMA synchronous")).scalar_one()
            fks = (await conn.exec_driver_sql("PRAGMA foreign_keys")).scalar_one()
            busy = (await conn.exec_driver_sql("PRAGMA busy_timeout")).scalar_one()
        # No waiting for locks on the event loop's thread (see test_sqlite_inline.py);
        # each COMMIT synced (FULL = 2): what is confirmed survives a power cut.
        assert (mode, sync, fks, busy) == ("wal", 2, 1, 0)
        assert engine.pool.size() == 1
        # Concurrent users queue for the one connection rather than opening more.
        async def use():
            async with engine.begin() as conn:
                await conn.exec_driver_sql("SELECT 1")
                await asyncio.sleep(0.01)
        await asyncio.gather(*(use() for _ in range(5)))
        assert engine.pool.checkedout() == 0
    finally:
        await engine.dispose()


async def test_foreign_keys_enforced(migrated_engine):
    now = datetime.now(UTC)
    with pytest.raises(IntegrityError):
        async with migrated_engine.begin() as conn:
            await conn.execute(
                insert(tables.history).values(
                    transaction_id=999, at=now, actor="system", event="x"
                )
            )


async def test_cli_migrate_from_any_directory(db_url, tmp_path):
    """`ill-node migrate --database URL`, run as a process from an unrelated CWD."""
    cwd = tmp_path / "elsewhere"
    cwd.mkdir()
    for _ in range(2):
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "node.cli", "migrate", "--database", db_url,
            cwd=cwd, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )
        out, err = await proc.communicate()
        assert proc.returncode == 0, err.decode()
        assert f"is at revision {head_revision()}" in out.decode()
    engine = create_engine(db_url)
    try:
        await check_migrated(engine)
    finally:
        await engine.dispose()


async def test_cli_migrate_reports_bad_database(tmp_path):
    url = f"sqlite+aiosqlite:///{tmp_path / 'no-such-dir' / 'x.db'}"
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "node.cli", "migrate", "--database", url,
        cwd=tmp_path, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    _, err = await proc.communicate()
    assert proc.returncode == 1
    assert "ill-node migrate:" in err.decode()
