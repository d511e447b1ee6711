"""OutboxWorker.run() sends without rounds: per-request order, batched results, leases.

Real aiohttp peers on 127.0.0.1, real databases (SQLite and PostgreSQL).
"""

from __future__ import annotations

import asyncio
import itertools
import random
import time
from collections import defaultdict
from datetime import UTC, datetime, timedelta

from aiohttp import web
from sqlalchemy import event, insert, select

from node.outbox import DeliveryVerdict, OutboxWorker
from node.store import outbox_repo as repo
from node.store.tables import history, transactions
from tests.peer import LoopbackPeer
from tests.store.loopback import running


class Peer(LoopbackPeer):
    """Records when each body arrived and when it was answered; ``delay(body)`` seconds."""

    def __init__(self, port: int, *, delay=lambda body: 0.0, respond=None):
        super().__init__(port)
        self.delay = delay
        self.respond = respond or (lambda body: (200, b"<confirmation/>"))
        self.arrived: dict[bytes, list[float]] = defaultdict(list)
        self.answered: dict[bytes, list[float]] = defaultdict(list)
        self.order: list[bytes] = []  # bodies in order of arrival
        self.log: list[tuple[bytes, int, float, float]] = []  # body, status, arrived, answered
        self.busy = 0
        self.most_busy = 0

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.arrived[body].append(time.monotonic())
        self.order.append(body)
        self.busy += 1
        self.most_busy = max(self.most_busy, self.busy)
        try:
            await asyncio.sleep(self.delay(body))
        finally:
            self.busy -= 1
        status, answer = self.respond(body)
        self.answered[body].append(time.monotonic())
        self.log.append((body, status, self.arrived[body][-1], self.answered[body][-1]))
        return web.Response(status=status, body=answer, content_type="application/xml")

def now() -> datetime:
    return datetime.now(UTC)


_numbers = itertools.count(1)


async def new_transaction(conn) -> int:
    t, n = now(), next(_numbers)
    return (await conn.execute(
        insert(transactions)
        .values(role="lending", public_id=f"Q{n}", requesting_agency_id="ISIL:XX-1",
                requesting_request_id=f"Q{n}", status="new", created_at=t, updated_at=t,
                state={})
        .returning(transactions.c.id)
    )).scalar_one()


async def queue(engine, url: str, bodies: list[bytes], tid: int | None = None) -> list[int]:
    """Queue ``bodies`` for one request (a new one unless ``tid``), in this order."""
    async with engine.begin() as conn:
        tid = tid if tid is not None else await new_transaction(conn)
        return [await repo.enqueue(conn, transaction_id=tid, peer="ISIL:YY-1", url=url,
                                   kind="supplyingAgencyMessage", body=body, now=now())
                for body in bodies]


def make_worker(engine, session, **overrides) -> OutboxWorker:
    options = {"worker_id": "w1", "timeout_seconds": 5.0, "max_attempts": 50,
               "initial_backoff_seconds": 0.02, "max_backoff_seconds": 0.1,
               "poll_seconds": 0.05}
    options.update(overrides)
    return OutboxWorker(engine, session, **options)


async def until(predicate, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.005)


async def states(engine, ids: list[int]) -> list[str]:
    async with engine.connect() as conn:
        return [(await repo.get(conn, oid)).state for oid in ids]


def count_commits(engine) -> list[int]:
    commits = [0]

    @event.listens_for(engine.sync_engine, "commit")
    def _commit(conn):
        commits[0] += 1

    return commits


async def test_a_slow_send_holds_up_only_its_own_request(migrated_engine, http_session,
                                                         unused_port):
    async with Peer(unused_port(), delay=lambda b: 1.5 if b == b"<a1/>" else 0.0) as peer:
        a = await queue(migrated_engine, peer.url, [b"<a1/>", b"<a2/>"])
        async with running(make_worker(migrated_engine, http_session, poll_seconds=30)) as w:
            await until(lambda: b"<a1/>" in peer.arrived)
            # Queued while a1 is in flight: goes out at once, not after a1's batch.
            await queue(migrated_engine, peer.url, [b"<b1/>"])
            w.wake()
            await until(lambda: b"<b1/>" in peer.answered)
            assert b"<a1/>" not in peer.answered
            await until(lambda: b"<a2/>" in peer.answered)
        # a2 (say a Loaned) never overtakes a1 (the WillSupply of the same request).
        assert peer.arrived[b"<a2/>"][0] >= peer.answered[b"<a1/>"][0]
        assert peer.order == [b"<a1/>", b"<b1/>", b"<a2/>"]
        assert await states(migrated_engine, a) == ["sent", "sent"]


async def test_order_per_request_under_concurrent_sends(migrated_engine, http_session,
                                                       unused_port):
    requests, per_request = 12, 4
    rng = random.Random(8)

    def respond(body):  # now and then a refusal: retried, still in order
        return (503, b"busy") if rng.random() < 0.1 else (200, b"<confirmation/>")

    async with Peer(unused_port(), delay=lambda b: rng.uniform(0, 0.02),
                    respond=respond) as peer:
        ids = []
        for r in range(requests):
            ids += await queue(migrated_engine, peer.url,
                               [f"{r}:{s}".encode() for s in range(per_request)])
        async with running(make_worker(migrated_engine, http_session, batch_size=8)):
            deadline = time.monotonic() + 30
            while set(await states(migrated_engine, ids)) != {"sent"}:
                assert time.monotonic() < deadline, "not all sent in time"
                await asyncio.sleep(0.02)
    assert peer.most_busy > 1  # sent concurrently
    by_request = defaultdict(list)
    for body, status, arrived, answered in sorted(peer.log, key=lambda e: e[2]):
        r, s = body.decode().split(":")
        by_request[r].append((int(s), status, arrived, answered))
    assert len(by_request) == requests
    for r, sends in by_request.items():
        seq, previous_answer = 0, 0.0
        for s, status, arrived, answered in sends:
            # Each message goes out only once the one before it got its 2xx.
            assert s == seq and arrived >= previous_answer, (r, sends)
            previous_answer = answered
            if status == 200:
                seq += 1
        assert seq == per_request


async def test_results_of_a_batch_are_recorded_in_one_transaction(migrated_engine, http_session,
                                                                  unused_port):
    def respond(body):
        return {b"<busy/>": (503, b"busy"), b"<refused/>": (200, b"<ERROR/>")}.get(
            body, (200, b"<confirmation/>"))

    async def on_delivered(conn, row, status, answer):
        await conn.execute(insert(history).values(
            transaction_id=row.transaction_id, at=now(), actor="peer", event="confirmed"))
        if row.body == b"<crash/>":
            raise ValueError("bug")  # its 'confirmed' row is rolled back, the others stay
        if answer == b"<ERROR/>":
            return DeliveryVerdict.rejected("peer answered ERROR")
        return None

    async with Peer(unused_port(), respond=respond) as peer:
        bodies = [b"<ok1/>", b"<ok2/>", b"<busy/>", b"<refused/>", b"<crash/>"]
        ids = [(await queue(migrated_engine, peer.url, [body]))[0] for body in bodies]
        worker = make_worker(migrated_engine, http_session, on_delivered=on_delivered)
        commits = count_commits(migrated_engine)
        assert await worker.run_once() == 5
        assert commits[0] == 2  # the claim, then every result together
    async with migrated_engine.connect() as conn:
        rows = [await repo.get(conn, oid) for oid in ids]
        evs = (await conn.execute(
            select(history.c.transaction_id, history.c.event).order_by(history.c.id))).all()
    assert [r.state for r in rows] == ["sent", "sent", "pending", "failed", "sent"]
    assert rows[0].confirmation == b"<confirmation/>" and rows[2].last_error.startswith("HTTP 503")
    assert all(r.locked_by is None for r in rows) and {r.attempts for r in rows} == {1}
    tx = {r.transaction_id: r.body for r in rows}
    assert sorted((tx[t], e) for t, e in evs) == sorted([
        (b"<ok1/>", "confirmed"), (b"<ok2/>", "confirmed"),
        (b"<refused/>", "confirmed"), (b"<refused/>", "send_error"),
        (b"<crash/>", "confirmation_error"),
    ])


async def test_next_message_of_a_request_is_claimed_with_the_last_result(
        migrated_engine, http_session, unused_port):
    async with Peer(unused_port()) as peer:
        ids = await queue(migrated_engine, peer.url, [b"<m1/>", b"<m2/>"])
        commits = count_commits(migrated_engine)
        async with running(make_worker(migrated_engine, http_session, poll_seconds=30)):
            await until(lambda: b"<m2/>" in peer.answered)
            await until(lambda: commits[0] >= 3)
        # claim m1; record m1 + claim m2; record m2 (and find nothing more due).
        assert commits[0] == 3
        assert peer.order == [b"<m1/>", b"<m2/>"]
        assert await states(migrated_engine, ids) == ["sent", "sent"]


async def test_a_dead_workers_claim_is_sent_again_when_its_lease_runs_out(
        migrated_engine, http_session, unused_port):
    async with Peer(unused_port()) as peer:
        [oid] = await queue(migrated_engine, peer.url, [b"<m/>"])
        async with migrated_engine.begin() as conn:
            [claimed] = await repo.claim_due(conn, worker_id="dead", now=now(),
                                             lease_seconds=0.5, limit=5)
        leased_until = claimed.locked_until
        async with running(make_worker(migrated_engine, http_session, poll_seconds=0.05)):
            await until(lambda: b"<m/>" in peer.answered)
            await until(lambda: len(peer.answered[b"<m/>"]) == 1)
        assert datetime.now(UTC) >= leased_until
        assert len(peer.arrived[b"<m/>"]) == 1
        async with migrated_engine.connect() as conn:
            r = await repo.get(conn, oid)
        assert r.state == "sent" and r.locked_by is None and r.attempts == 1
        assert r.sent_at >= leased_until - timedelta(milliseconds=1)


async def test_a_lost_lease_in_a_batch_drops_only_that_result(migrated_engine, http_session,
                                                              unused_port):
    async def on_delivered(conn, row, status, answer):
        await conn.execute(insert(history).values(
            transaction_id=row.transaction_id, at=now(), actor="peer", event="confirmed"))

    async with Peer(unused_port(), delay=lambda b: 1.5 if b == b"<slow/>" else 0.0) as peer:
        [slow] = await queue(migrated_engine, peer.url, [b"<slow/>"])
        [fast] = await queue(migrated_engine, peer.url, [b"<fast/>"])
        worker = make_worker(migrated_engine, http_session, lease_seconds=0.3,
                             on_delivered=on_delivered)
        sending = asyncio.create_task(worker.run_once())
        await until(lambda: b"<slow/>" in peer.arrived)
        await asyncio.sleep(0.35)  # both leases have run out; the oldest row is taken over
        async with migrated_engine.begin() as conn:
            stolen = await repo.claim_due(conn, worker_id="thief", now=now(), lease_seconds=60,
                                          limit=1)
        assert [r.id for r in stolen] == [slow]
        assert await sending == 2
    async with migrated_engine.connect() as conn:
        s, f = await repo.get(conn, slow), await repo.get(conn, fast)
        evs = (await conn.execute(select(history.c.transaction_id, history.c.event))).all()
    assert (s.state, s.locked_by, s.attempts) == ("pending", "thief", 0)
    assert (f.state, f.locked_by, f.attempts) == ("sent", None, 1)
    assert evs == [(f.transaction_id, "confirmed")]  # the stale row's callback rolled back


async def test_a_row_being_sent_is_not_claimed_again_when_its_lease_runs_out(
        migrated_engine, http_session, unused_port):
    # A slow send, or a clock moved forward (tests do it, NTP may), outlasts the
    # lease: the worker sending it must not claim it again and send it twice.
    async with Peer(unused_port(), delay=lambda b: 1.0) as peer:
        [oid] = await queue(migrated_engine, peer.url, [b"<slow/>"])
        worker = make_worker(migrated_engine, http_session, lease_seconds=0.2,
                             poll_seconds=0.02)
        async with running(worker):
            await until(lambda: b"<slow/>" in peer.answered)
            await asyncio.sleep(0.1)
        assert len(peer.arrived[b"<slow/>"]) == 1
        assert await states(migrated_engine, [oid]) == ["sent"]
