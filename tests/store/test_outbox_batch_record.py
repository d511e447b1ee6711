"""OutboxWorker records a round's delivered sends with ONE UPDATE, exact about leases.

Real aiohttp peer on 127.0.0.1, real databases (SQLite and PostgreSQL).
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Awaitable, Callable
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta

from aiohttp import web
from sqlalchemy import event, insert, select, update

from node.outbox import DeliveryVerdict, OutboxWorker
from node.store import outbox_repo as repo
from node.store.tables import history, outbox, transactions
from tests.peer import LoopbackPeer
from tests.store.statements import statements_of

REJECTED = b"<rejected/>"  # on_delivered answers an ERROR verdict for this one
CREATED = b"<created/>"  # the peer answers 201 to this one, 200 to the others


class Peer(LoopbackPeer):
    """Answers ``answer:<body>``; ``on_receive(body)`` runs before it answers."""

    def __init__(self, port: int, on_receive: Callable[[bytes], Awaitable[None]] | None = None):
        super().__init__(port)
        self.on_receive = on_receive

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        if self.on_receive is not None:
            await self.on_receive(body)
        return web.Response(status=201 if body == CREATED else 200, body=b"answer:" + body,
                            content_type="application/xml")

_numbers = itertools.count(1)


async def queue(engine, url: str, bodies: list[bytes]) -> dict[bytes, int]:
    """One request per body (so all are due together); body -> outbox id."""
    ids = {}
    async with engine.begin() as conn:
        for body in bodies:
            t, n = datetime.now(UTC), next(_numbers)
            tid = (await conn.execute(
                insert(transactions)
                .values(role="lending", public_id=f"B{n}", requesting_agency_id="ISIL:XX-1",
                        requesting_request_id=f"B{n}", status="new", created_at=t,
                        updated_at=t, state={})
                .returning(transactions.c.id)
            )).scalar_one()
            ids[body] = await repo.enqueue(conn, transaction_id=tid, peer="ISIL:YY-1", url=url,
                                           kind="supplyingAgencyMessage", body=body, now=t)
    return ids


async def on_delivered(conn, row, status, answer):
    """Leaves a trace in the recording transaction; None or an ok verdict, or an ERROR."""
    await conn.execute(insert(history).values(
        transaction_id=row.transaction_id, at=datetime.now(UTC), actor="peer",
        event="confirmation", detail={"outbox_id": row.id}))
    if row.body == REJECTED:
        return DeliveryVerdict.rejected("peer answered ERROR")
    return None if row.id % 2 else DeliveryVerdict.delivered()


@contextmanager
def sent_updates(engine):
    """The UPDATE statements that mark outbox rows sent, as they reach the driver."""
    seen: list[str] = []

    def record(conn, cursor, statement, parameters, context, executemany):
        if statement.startswith("UPDATE outbox SET") and "sent_at=" in statement:
            seen.append(statement)

    event.listen(engine.sync_engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", record)


async def rows(engine, ids: dict[bytes, int]) -> dict[bytes, repo.OutboxRow]:
    async with engine.connect() as conn:
        return {body: await repo.get(conn, oid) for body, oid in ids.items()}


async def confirmed(engine) -> set[int]:
    """Outbox ids whose on_delivered trace was committed."""
    async with engine.connect() as conn:
        details = (await conn.execute(select(history.c.detail))).scalars()
        return {d["outbox_id"] for d in details}


def results(caplog) -> dict[int, str]:
    return {r.outbox_id: r.result for r in caplog.records if r.name == "node.outbox"
            and hasattr(r, "result")}


def make_worker(engine, session, clock) -> OutboxWorker:
    return OutboxWorker(engine, session, worker_id="w1", timeout_seconds=5.0, batch_size=16,
                        on_delivered=on_delivered, clock=clock)


async def test_delivered_sends_of_a_round_are_marked_sent_in_one_update(
        migrated_engine, http_session, unused_port, caplog):
    caplog.set_level(logging.INFO, logger="node.outbox")
    delivered = [b"<m1/>", b"<m2/>", CREATED, b"<m4/>", b"<m5/>"]
    async with Peer(unused_port()) as peer:
        ids = await queue(migrated_engine, peer.url, [*delivered, REJECTED])
        at = datetime.now(UTC)
        with sent_updates(migrated_engine) as updates:
            assert await make_worker(migrated_engine, http_session, lambda: at).run_once() == 6

    assert len(updates) == 1  # not one per delivered row
    got = await rows(migrated_engine, ids)
    for body in delivered:
        r = got[body]
        assert (r.state, r.attempts, r.confirmation) == ("sent", 1, b"answer:" + body)
        assert (r.sent_at, r.last_attempt_at) == (at, at)
        assert r.last_http_status == (201 if body == CREATED else 200)
        assert (r.locked_by, r.locked_until) == (None, None)
    rejected = got[REJECTED]  # an ERROR confirmation keeps its own path
    assert (rejected.state, rejected.attempts, rejected.sent_at) == ("failed", 1, None)
    assert await confirmed(migrated_engine) == set(ids.values())
    assert results(caplog) == {**{ids[b]: "sent" for b in delivered},
                               ids[REJECTED]: "error-confirmation"}


async def test_a_row_whose_lease_was_lost_stays_the_other_workers(
        migrated_engine, http_session, unused_port, caplog):
    caplog.set_level(logging.INFO, logger="node.outbox")
    bodies = [b"<m1/>", b"<m2/>", b"<m3/>", b"<m4/>"]
    stolen = b"<m3/>"
    ids: dict[bytes, int] = {}
    other_until = datetime.now(UTC) + timedelta(hours=1)

    async def another_worker_takes(body: bytes) -> None:
        # As if our lease had run out and w2 had claimed the row while we sent it.
        if body == stolen:
            async with migrated_engine.begin() as conn:
                await conn.execute(update(outbox).where(outbox.c.id == ids[body])
                                   .values(locked_by="w2", locked_until=other_until))

    async with Peer(unused_port(), on_receive=another_worker_takes) as peer:
        ids.update(await queue(migrated_engine, peer.url, bodies))
        at = datetime.now(UTC)
        with sent_updates(migrated_engine) as updates:
            assert await make_worker(migrated_engine, http_session, lambda: at).run_once() == 4

    # The UPDATE finds the lost row; the transaction is redone without it, once.
    assert len(updates) == 2
    got = await rows(migrated_engine, ids)
    theirs = got[stolen]
    assert (theirs.state, theirs.attempts, theirs.confirmation) == ("pending", 0, None)
    assert (theirs.locked_by, theirs.locked_until) == ("w2", other_until)
    assert theirs.last_attempt_at is None and theirs.sent_at is None
    for body in bodies:
        if body != stolen:
            r = got[body]
            assert (r.state, r.attempts, r.confirmation) == ("sent", 1, b"answer:" + body)
            assert (r.locked_by, r.locked_until, r.sent_at) == (None, None, at)
    # Nothing of ours is written for the stolen row, on_delivered's trace included.
    assert await confirmed(migrated_engine) == {ids[b] for b in bodies if b != stolen}
    assert results(caplog) == {ids[b]: "stale" if b == stolen else "sent" for b in bodies}


async def test_mark_all_sent_marks_only_rows_leased_to_the_worker(migrated_engine):
    at = datetime.now(UTC)
    async with migrated_engine.begin() as conn:
        ids = [await repo.enqueue(conn, transaction_id=None, peer="ISIL:YY-1", url="http://x/",
                                  kind="k", body=b"<m/>", now=at) for _ in range(5)]
        await repo.claim_due(conn, worker_id="w1", now=at, lease_seconds=60, limit=4)
        async with statements_of(migrated_engine) as seen:
            marked = await repo.mark_all_sent(
                conn, [repo.Delivery(oid, 200 + n, b"c%d" % n) for n, oid in enumerate(ids[1:])],
                now=at, worker_id="w1")
            assert marked == set(ids[1:4])  # the last was never claimed by w1
            assert await repo.mark_all_sent(
                conn, [repo.Delivery(ids[0], 299, b"first")], now=at, worker_id="w1") == {ids[0]}
        assert await repo.mark_all_sent(conn, [], now=at, worker_id="w1") == set()
        got = [await repo.get(conn, oid) for oid in ids]
    assert [(r.state, r.last_http_status, r.confirmation) for r in got] == [
        ("sent", 299, b"first"), ("sent", 200, b"c0"), ("sent", 201, b"c1"),
        ("sent", 202, b"c2"), ("pending", None, None)]
    # PostgreSQL: one statement text for any number of rows, prepared once.
    texts = {text for text, _ in seen}
    assert len(texts) == (1 if migrated_engine.dialect.name == "postgresql" else 2)
