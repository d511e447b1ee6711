"""Outbox rows leased at insert (issue 8): the transaction that queues a message leases
it to this process's worker, which sends it after the COMMIT without a claim; if that
worker dies, the lease runs out and another worker sends the row (at least once)."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from node.store import outbox_repo as repo
from tests.store.test_outbox_worker import (  # noqa: F401 (fixtures)
    make_worker,
    new_transaction,
    now,
    peers,
    row,
    running,
    wait_for,
)


async def enqueue_leased(conn, tid, url, body: bytes, worker_id: str, until):
    return await repo.enqueue_leased(conn, transaction_id=tid, peer="ISIL:YY-1", url=url,
                                     kind="request", body=body, now=now(),
                                     worker_id=worker_id, until=until)


async def test_a_row_leased_at_insert_is_sent_by_its_worker(migrated_engine, http_session,
                                                            peers, unused_port):  # noqa: F811 (fixture)
    peer = await peers(unused_port())
    worker = make_worker(migrated_engine, http_session, poll_seconds=60)  # no claim rounds
    async with running(worker):
        await asyncio.sleep(0.05)  # the worker's first (empty) claim is done
        worker_id, until = worker.lease(now())
        async with migrated_engine.begin() as conn:
            tid = await new_transaction(conn)
            first = await enqueue_leased(conn, tid, peer.url, b"<m>1</m>", worker_id, until)
            second = await enqueue_leased(conn, tid, peer.url, b"<m>2</m>", worker_id, until)
        assert first.locked_by == "w1" and first.locked_until is not None
        assert second.locked_by is None  # behind a pending row of its request: claimed later
        worker.take([first])
        # The first goes without a claim; recording it claims the second, in order.
        await wait_for(lambda: _state(migrated_engine, second.id, "sent"))
    assert peer.received == [b"<m>1</m>", b"<m>2</m>"]
    assert (await row(migrated_engine, first.id)).attempts == 1


async def test_no_lease_from_a_worker_that_is_not_running(migrated_engine, http_session):
    worker = make_worker(migrated_engine, http_session)
    assert worker.lease(now()) is None


async def test_a_row_leased_to_a_dead_worker_is_sent_by_another(migrated_engine, http_session,
                                                                 peers, unused_port):  # noqa: F811 (fixture)
    peer = await peers(unused_port())
    async with migrated_engine.begin() as conn:
        tid = await new_transaction(conn)
        # Leased at insert by a worker that died before it could send it.
        leased = await enqueue_leased(conn, tid, peer.url, b"<m>orphan</m>", "dead",
                                      now() + timedelta(seconds=0.5))
    assert leased.locked_by == "dead"
    async with running(make_worker(migrated_engine, http_session, worker_id="w2")):
        await asyncio.sleep(0.2)
        assert peer.received == []  # the lease still holds
        await wait_for(lambda: _state(migrated_engine, leased.id, "sent"))
    assert peer.received == [b"<m>orphan</m>"]


async def _state(engine, oid, state: str) -> bool:
    return (await row(engine, oid)).state == state
