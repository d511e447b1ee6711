"""node.store.outbox_repo on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import insert

from node.store import outbox_repo as repo
from node.store.tables import transactions

T0 = datetime(2026, 5, 4, 10, 0, tzinfo=UTC)


async def make_transaction(conn, n: int) -> int:
    result = await conn.execute(
        insert(transactions)
        .values(
            role="borrowing",
            public_id=f"P{n}",
            requesting_agency_id="ISIL:XX-1",
            requesting_request_id=f"R{n}",
            status="new",
            created_at=T0,
            updated_at=T0,
            state={},
        )
        .returning(transactions.c.id)
    )
    return result.scalar_one()


async def enqueue(conn, tid, n, now=T0):
    return await repo.enqueue(
        conn,
        transaction_id=tid,
        peer="ISIL:YY-1",
        url="http://127.0.0.1:9/iso18626",
        kind="request",
        body=f"<msg n='{n}'/>".encode(),
        now=now,
    )


async def claim(engine, worker="w1", now=T0, lease=60, limit=10):
    async with engine.begin() as conn:
        return await repo.claim_due(
            conn, worker_id=worker, now=now, lease_seconds=lease, limit=limit
        )


async def test_enqueue_claim_mark_sent(migrated_engine):
    async with migrated_engine.begin() as conn:
        tid = await make_transaction(conn, 1)
        oid = await enqueue(conn, tid, 1)
        assert await repo.pending_count(conn) == 1

    rows = await claim(migrated_engine)
    assert [r.id for r in rows] == [oid]
    row = rows[0]
    assert isinstance(row, repo.OutboxRow)
    assert row.body == b"<msg n='1'/>" and row.state == "pending" and row.attempts == 0
    assert row.locked_by == "w1" and row.locked_until == T0 + timedelta(seconds=60)
    assert row.transaction_id == tid and row.created_at == T0

    # Leased: nobody else gets it.
    assert await claim(migrated_engine, worker="w2", now=T0 + timedelta(seconds=1)) == []

    async with migrated_engine.begin() as conn:
        assert await repo.mark_sent(
            conn, oid, now=T0, confirmation=b"<ok/>", http_status=200, worker_id="w1"
        )
        assert await repo.pending_count(conn) == 0
        got = await repo.get(conn, oid)
    assert got.state == "sent" and got.sent_at == T0 and got.confirmation == b"<ok/>"
    assert got.attempts == 1 and got.locked_by is None and got.last_http_status == 200
    assert await claim(migrated_engine, now=T0 + timedelta(hours=1)) == []


async def test_order_per_transaction(migrated_engine):
    async with migrated_engine.begin() as conn:
        t1 = await make_transaction(conn, 1)
        t2 = await make_transaction(conn, 2)
        a1 = await enqueue(conn, t1, 1)
        a2 = await enqueue(conn, t1, 2)
        a3 = await enqueue(conn, t1, 3)
        b1 = await enqueue(conn, t2, 1)
        n1 = await enqueue(conn, None, 1)  # no transaction: not ordered
        n2 = await enqueue(conn, None, 2)

    rows = await claim(migrated_engine)
    assert sorted(r.id for r in rows) == sorted([a1, b1, n1, n2])

    # a1 fails for now and is put back for later: a2 must still wait behind it.
    later = T0 + timedelta(seconds=30)
    async with migrated_engine.begin() as conn:
        assert await repo.mark_retry(
            conn, a1, now=T0, error="refused", next_attempt_at=later, worker_id="w1"
        )
        await repo.mark_sent(conn, b1, now=T0, confirmation=b"x")
    assert await claim(migrated_engine, now=T0 + timedelta(seconds=1)) == []

    rows = await claim(migrated_engine, now=later)
    assert [r.id for r in rows] == [a1]
    assert rows[0].attempts == 1 and rows[0].last_error == "refused"

    # Given up: the next one of that transaction goes out.
    async with migrated_engine.begin() as conn:
        assert await repo.mark_failed(conn, a1, now=later, error="gave up", worker_id="w1")
    rows = await claim(migrated_engine, now=later)
    assert [r.id for r in rows] == [a2]
    async with migrated_engine.begin() as conn:
        await repo.mark_sent(conn, a2, now=later, confirmation=None)
    assert [r.id for r in await claim(migrated_engine, now=later)] == [a3]


async def test_claim_limit_and_oldest_first(migrated_engine):
    async with migrated_engine.begin() as conn:
        ids = []
        for n in range(5):
            tid = await make_transaction(conn, n)
            ids.append(await enqueue(conn, tid, n, now=T0 + timedelta(seconds=5 - n)))
    rows = await claim(migrated_engine, now=T0 + timedelta(seconds=10), limit=2)
    assert [r.id for r in rows] == [ids[4], ids[3]]
    rows = await claim(migrated_engine, now=T0 + timedelta(seconds=10), limit=10)
    assert [r.id for r in rows] == [ids[2], ids[1], ids[0]]


async def test_not_due_is_not_claimed(migrated_engine):
    async with migrated_engine.begin() as conn:
        await enqueue(conn, None, 1, now=T0 + timedelta(seconds=5))
    assert await claim(migrated_engine, now=T0) == []
    assert len(await claim(migrated_engine, now=T0 + timedelta(seconds=5))) == 1


async def test_lease_expiry(migrated_engine):
    async with migrated_engine.begin() as conn:
        oid = await enqueue(conn, None, 1)
    [first] = await claim(migrated_engine, worker="w1", lease=10)
    assert first.id == oid and not first.maybe_delivered
    assert await claim(migrated_engine, worker="w2", now=T0 + timedelta(seconds=9)) == []
    rows = await claim(migrated_engine, worker="w2", now=T0 + timedelta(seconds=10))
    assert [r.locked_by for r in rows] == ["w2"]
    assert rows[0].maybe_delivered  # w1 may have sent it, and never said

    async with migrated_engine.begin() as conn:
        # w1 lost its lease: its late result is not written.
        assert not await repo.mark_sent(conn, oid, now=T0, confirmation=b"", worker_id="w1")
        assert not await repo.mark_retry(
            conn, oid, now=T0, error="x", next_attempt_at=T0, worker_id="w1"
        )
        assert await repo.mark_sent(conn, oid, now=T0, confirmation=b"ok", worker_id="w2")
        # Once sent, nothing changes it back.
        assert not await repo.mark_retry(conn, oid, now=T0, error="x", next_attempt_at=T0)
        assert not await repo.mark_failed(conn, oid, now=T0, error="x")
        assert (await repo.get(conn, oid)).state == "sent"


async def test_released_leases_may_have_been_sent_unless_never_begun(migrated_engine):
    """A worker gone, or a process killed, may have sent the rows it held; a node that
    stops hands over only rows it never began to send."""
    async with migrated_engine.begin() as conn:
        gone, handed_over = await enqueue(conn, None, 1), await enqueue(conn, None, 2)
    await claim(migrated_engine, worker="gone", limit=1)
    await claim(migrated_engine, worker="stopping", limit=1)
    async with migrated_engine.begin() as conn:
        assert await repo.release_leases(conn, of="gone") == 1
        assert await repo.release_leases(conn, of="stopping", unsent=True) == 1
        assert await repo.release_leases(conn) == 0
    rows = {r.id: r for r in await claim(migrated_engine, worker="w3")}
    assert rows[gone].maybe_delivered and not rows[handed_over].maybe_delivered


async def test_retry_now(migrated_engine):
    far = T0 + timedelta(hours=1)
    async with migrated_engine.begin() as conn:
        tid = await make_transaction(conn, 1)
        oid = await enqueue(conn, tid, 1)
    await claim(migrated_engine)
    async with migrated_engine.begin() as conn:
        await repo.mark_retry(conn, oid, now=T0, error="down", next_attempt_at=far)
    now = T0 + timedelta(seconds=1)
    assert await claim(migrated_engine, now=now) == []

    async with migrated_engine.begin() as conn:
        assert await repo.retry_now(conn, oid, now)
    rows = await claim(migrated_engine, now=now)
    assert [r.id for r in rows] == [oid]
    assert rows[0].attempts == 1

    # A failed row comes back as pending with a fresh series of attempts.
    async with migrated_engine.begin() as conn:
        await repo.mark_failed(conn, oid, now=now, error="gave up")
        assert await repo.pending_count(conn) == 0
        assert await repo.retry_now(conn, oid, now)
        got = await repo.get(conn, oid)
        assert got.state == "pending" and got.attempts == 0 and got.next_attempt_at == now
        assert got.last_error == "gave up"  # kept for the staff view
        assert await repo.next_due_at(conn) == now
    assert [r.id for r in await claim(migrated_engine, now=now)] == [oid]

    async with migrated_engine.begin() as conn:
        await repo.mark_sent(conn, oid, now=now, confirmation=b"ok")
        assert not await repo.retry_now(conn, oid, now)
        assert not await repo.retry_now(conn, 12345, now)
        assert [r.id for r in await repo.for_transaction(conn, tid)] == [oid]
        assert await repo.next_due_at(conn) is None


async def test_list_rows_for_the_staff_api(migrated_engine):
    import json

    async with migrated_engine.begin() as conn:
        a = await enqueue(conn, None, 1)
        b = await enqueue(conn, None, 2)
        await repo.mark_failed(conn, a, now=T0, error="gave up")
        rows = await repo.list_rows(conn)
        assert [r["id"] for r in rows] == [b, a]
        assert rows[1]["state"] == "failed" and rows[1]["body"] == "<msg n='1'/>"
        assert rows[1]["created_at"] == T0.isoformat()
        json.dumps(rows)  # JSON-ready as is
        assert [r["id"] for r in await repo.list_rows(conn, state="pending")] == [b]
        assert [r["id"] for r in await repo.list_rows(conn, limit=1)] == [b]


async def test_prune_sent_deletes_old_deliveries_but_each_partners_newest(migrated_engine):
    day = timedelta(days=1)

    async def row(conn, tid, peer, state, at):
        oid = await repo.enqueue(conn, transaction_id=tid, peer=peer, url="http://x/iso18626",
                                 kind="request", body=b"<m/>", now=at)
        if state == "sent":
            assert await repo.mark_sent(conn, oid, now=at, confirmation=b"<ok/>",
                                        http_status=200)
        elif state == "failed":
            assert await repo.mark_failed(conn, oid, now=at, error="given up")
        return oid

    async with migrated_engine.begin() as conn:
        tid = await make_transaction(conn, 1)
        old_a = [await row(conn, tid, "ISIL:AA", "sent", T0 - n * day) for n in (30, 20, 10)]
        recent_a = await row(conn, tid, "ISIL:AA", "sent", T0 - day)
        only_b = await row(conn, tid, "ISIL:BB", "sent", T0 - 100 * day)  # its newest
        pending = await row(conn, tid, "ISIL:AA", "pending", T0 - 50 * day)
        failed = await row(conn, tid, "ISIL:AA", "failed", T0 - 50 * day)

    async with migrated_engine.begin() as conn:
        assert await repo.prune_sent(conn, before=T0 - 5 * day, limit=2) == 2
    async with migrated_engine.begin() as conn:  # oldest first: the 10-day-old one is left
        assert [r.id for r in await repo.for_transaction(conn, tid)] == [
            old_a[2], recent_a, only_b, pending, failed]
        assert await repo.prune_sent(conn, before=T0 - 5 * day, limit=10) == 1
        assert await repo.prune_sent(conn, before=T0 - 5 * day, limit=10) == 0
        assert [r.id for r in await repo.for_transaction(conn, tid)] == [
            recent_a, only_b, pending, failed]
        # The newest delivery to a partner stays, however old.
        assert await repo.prune_sent(conn, before=T0 + day, limit=10) == 0


async def test_one_prune_at_a_time_on_postgresql(migrated_engine):
    """Several processes each run the hourly prune: on PostgreSQL one prunes while the
    others' calls return 0 (deleting the same rows at once could deadlock).  SQLite
    has one writer."""
    if migrated_engine.dialect.name != "postgresql":
        pytest.skip("SQLite: one writing connection, one transaction at a time")
    async with migrated_engine.begin() as conn:
        tid = await make_transaction(conn, 1)
        for n in range(3):  # two to prune; the newest stays
            oid = await enqueue(conn, tid, n, now=T0 + timedelta(minutes=n))
            assert await repo.mark_sent(conn, oid, now=T0 + timedelta(minutes=n),
                                        confirmation=b"<ok/>", http_status=200)
    later = T0 + timedelta(days=1)
    async with migrated_engine.begin() as first:
        assert await repo.prune_sent(first, before=later, limit=1) == 1
        async with migrated_engine.begin() as second:
            assert await repo.prune_sent(second, before=later, limit=1) == 0
    async with migrated_engine.begin() as conn:  # the first one's lock went with its COMMIT
        assert await repo.prune_sent(conn, before=later, limit=10) == 1
