"""Staff reads (db.create_read_engine) each see one snapshot of the database, and
cannot write.  A request's view reads its row, then its history: a commit between
the two must not give a view whose history says more than its status and flags."""

from __future__ import annotations

import pytest
from sqlalchemy import insert, select, update
from sqlalchemy.exc import DBAPIError

from node.store import db
from node.store.tables import status_counts

_ROW = (status_counts.c.role == "borrowing") & (status_counts.c.status == "sent")


async def _count(conn) -> int:
    return (await conn.execute(select(status_counts.c.n).where(_ROW))).scalar_one()


@pytest.fixture
async def reader(migrated_engine):
    engine = db.create_read_engine(migrated_engine)
    yield engine
    await db.dispose_read_engine(engine, migrated_engine)


async def test_a_read_sees_one_snapshot_across_a_commit(migrated_engine, reader):
    writer = migrated_engine
    async with writer.begin() as conn:
        await conn.execute(insert(status_counts).values(
            role="borrowing", status="sent", shard=0, n=1))
    async with reader.connect() as conn:
        before = await _count(conn)
        async with writer.begin() as other:
            await other.execute(update(status_counts).where(_ROW).values(n=2))
        assert await _count(conn) == before == 1
    async with reader.connect() as conn:
        assert await _count(conn) == 2  # the next read sees the commit


async def test_a_read_cannot_write(reader):
    async with reader.connect() as conn:
        with pytest.raises(DBAPIError, match="(?i)read.only|readonly"):
            await conn.execute(insert(status_counts).values(
                role="borrowing", status="sent", shard=0, n=1))
