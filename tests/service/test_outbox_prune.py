"""Node.prune_outbox, which the scheduler runs every hour: delivered messages older
than ``[outbox] keep_sent_days`` leave the outbox, a chunk of rows a transaction; 0
keeps them all (no sockets: the repository's own rules are tested with it)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import func, insert, select

from node.config import loads
from node.service import Node
from node.store.tables import outbox

T0 = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)
CONFIG = '[node]\nsymbol = "ISIL:XX-ME"\nname = "Me"\n'  # the rows' partner need not be one


async def _deliveries(engine, n: int) -> None:
    async with engine.begin() as conn:
        await conn.execute(insert(outbox), [
            {"peer": "ISIL:XX-PEER", "url": "http://127.0.0.1:9/iso18626", "kind": "request",
             "body": b"<m/>", "state": "sent", "next_attempt_at": T0, "created_at": T0,
             "sent_at": T0 + timedelta(minutes=k)} for k in range(n)])


async def _left(engine) -> int:
    async with engine.connect() as conn:
        return (await conn.execute(select(func.count()).select_from(outbox))).scalar_one()


def _node(engine, sections: str = "") -> Node:
    return Node(loads(CONFIG + sections), engine=engine, clock=lambda: T0 + timedelta(days=100))


async def test_old_deliveries_are_deleted_a_chunk_at_a_time(migrated_engine):
    await _deliveries(migrated_engine, 5)
    assert await _node(migrated_engine).prune_outbox(chunk=2) == 4  # three transactions
    assert await _left(migrated_engine) == 1  # the partner's newest


async def test_keep_sent_days_0_keeps_every_delivery(migrated_engine):
    await _deliveries(migrated_engine, 3)
    node = _node(migrated_engine, "[outbox]\nkeep_sent_days = 0\n")
    assert await node.prune_outbox() == 0
    assert await _left(migrated_engine) == 3
