"""OutboxWorker against real aiohttp peers on 127.0.0.1."""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime

import pytest
from aiohttp import web
from sqlalchemy import insert, select

from node.outbox import CONTENT_TYPE, DeliveryVerdict, OutboxWorker
from node.store import outbox_repo as repo
from node.store.tables import history, transactions
from tests.peer import LoopbackPeer
from tests.store.loopback import running

CONFIRMATION = b"<confirmation>OK</confirmation>"


class Peer(LoopbackPeer):
    """A tiny ISO 18626 peer: records what it receives, answers per ``respond``."""

    def __init__(self, port: int, respond: Callable[[int, bytes], tuple[int, bytes]] | None = None,
                 delay: float = 0.0):
        super().__init__(port)
        self.respond = respond or (lambda n, body: (200, CONFIRMATION))
        self.delay = delay
        self.headers: dict[str, str] = {}  # on every answer
        self.received: list[bytes] = []
        self.content_types: list[str] = []
        self.started = asyncio.Event()

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.content_types.append(request.headers.get("Content-Type", ""))
        self.started.set()
        if self.delay:
            await asyncio.sleep(self.delay)
        self.received.append(body)
        status, answer = self.respond(len(self.received), body)
        return web.Response(status=status, body=answer, content_type="application/xml",
                            headers=self.headers)


@pytest.fixture
async def peers():
    started: list[Peer] = []

    async def make(port, **kwargs) -> Peer:
        peer = Peer(port, **kwargs)
        await peer.start()
        started.append(peer)
        return peer

    yield make
    for peer in started:
        await peer.stop()


def now() -> datetime:
    return datetime.now(UTC)


def make_worker(engine, session, **overrides) -> OutboxWorker:
    options = {
        "worker_id": "w1",
        "timeout_seconds": 2.0,
        "max_attempts": 50,
        "initial_backoff_seconds": 0.05,
        "max_backoff_seconds": 0.2,
        "poll_seconds": 0.02,
    }
    options.update(overrides)
    return OutboxWorker(engine, session, **options)


_numbers = itertools.count(1)


async def new_transaction(conn) -> int:
    t = now()
    n = next(_numbers)
    result = await conn.execute(
        insert(transactions)
        .values(role="borrowing", public_id=f"P{n}", requesting_agency_id="ISIL:XX-1",
                requesting_request_id=f"R{n}", status="new", created_at=t, updated_at=t,
                state={})
        .returning(transactions.c.id)
    )
    return result.scalar_one()


async def queue(engine, url, bodies, *, tid=None) -> list[int]:
    async with engine.begin() as conn:
        if tid is None:
            tid = await new_transaction(conn)
        return [
            await repo.enqueue(conn, transaction_id=tid, peer="ISIL:YY-1", url=url,
                               kind="request", body=body, now=now())
            for body in bodies
        ]


async def row(engine, oid) -> repo.OutboxRow:
    async with engine.connect() as conn:
        return await repo.get(conn, oid)


async def events(engine, tid=None) -> list[tuple[str, dict]]:
    async with engine.connect() as conn:
        q = select(history.c.event, history.c.detail).order_by(history.c.id)
        return [(e, d) for e, d in (await conn.execute(q)).all()]


async def wait_for(predicate, timeout=10.0, interval=0.02):
    deadline = time.monotonic() + timeout
    while True:
        value = await predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(interval)


async def test_peer_down_then_up_delivered_exactly_once(migrated_engine, http_session, peers,
                                                         unused_port, caplog):
    caplog.set_level(logging.INFO, logger="node.outbox")
    port = unused_port()
    url = f"http://127.0.0.1:{port}/iso18626"
    [oid] = await queue(migrated_engine, url, [b"<request>1</request>"])
    worker = make_worker(migrated_engine, http_session)
    async with running(worker):
        # Nothing listens: the attempts pile up, spaced by the back-off.
        r = await wait_for(lambda: _attempts_at_least(migrated_engine, oid, 3))
        assert r.state == "pending" and r.last_error and r.last_http_status is None
        assert r.sent_at is None
        assert not r.maybe_delivered  # refused: no request went out
        peer = await peers(port)
        r = await wait_for(lambda: _state_is(migrated_engine, oid, "sent"))
        await asyncio.sleep(0.3)  # several more polls: no second delivery
    assert peer.received == [b"<request>1</request>"]
    assert peer.content_types == [CONTENT_TYPE]
    r = await row(migrated_engine, oid)
    assert r.state == "sent" and r.confirmation == CONFIRMATION and r.last_http_status == 200
    assert r.attempts >= 4
    lines = [rec.getMessage() for rec in caplog.records if rec.name == "node.outbox"]
    assert any(f"id={oid} status=200" in line and "peer=ISIL:YY-1 kind=request" in line
               for line in lines)
    assert any(f"id={oid} status=-" in line and "result=retry" in line for line in lines)


async def _attempts_at_least(engine, oid, n):
    r = await row(engine, oid)
    return r if r.attempts >= n else None


async def _state_is(engine, oid, state):
    r = await row(engine, oid)
    return r if r.state == state else None


async def test_backoff_grows_and_is_capped(migrated_engine, http_session):
    worker = make_worker(migrated_engine, http_session, initial_backoff_seconds=1.0,
                         max_backoff_seconds=10.0)
    for attempts, base in [(1, 1), (2, 2), (3, 4), (4, 8), (5, 10), (20, 10)]:
        for _ in range(20):
            assert base <= worker.backoff(attempts) <= base * 1.1


@pytest.mark.parametrize("refusal, maybe_delivered", [(503, True), (429, False)])
async def test_non_2xx_is_retried(migrated_engine, http_session, peers, unused_port,
                                  refusal, maybe_delivered):
    peer = await peers(unused_port(), respond=lambda n, body: (refusal, b"busy") if n <= 2
                       else (200, CONFIRMATION))
    [oid] = await queue(migrated_engine, peer.url, [b"<m/>"])
    async with running(make_worker(migrated_engine, http_session)):
        await wait_for(lambda: _state_is(migrated_engine, oid, "sent"))
    assert len(peer.received) == 3
    r = await row(migrated_engine, oid)
    assert r.attempts == 3 and r.last_http_status == 200
    assert r.last_error.startswith(f"HTTP {refusal}")  # kept from the last failure
    # A 5xx may come from a peer that stored the message first; a 4xx is a refusal.
    assert r.maybe_delivered is maybe_delivered


async def test_2xx_without_body_is_not_delivered(migrated_engine, http_session, peers,
                                                 unused_port):
    peer = await peers(unused_port(), respond=lambda n, body: (200, b"") if n == 1
                       else (200, CONFIRMATION))
    [oid] = await queue(migrated_engine, peer.url, [b"<m/>"])
    async with running(make_worker(migrated_engine, http_session)):
        await wait_for(lambda: _state_is(migrated_engine, oid, "sent"))
    assert len(peer.received) == 2


async def test_error_confirmation_is_recorded_and_not_retried(migrated_engine, http_session,
                                                              peers, unused_port):
    peer = await peers(unused_port(), respond=lambda n, body: (200, b"<ERROR/>"))
    seen = []

    async def on_delivered(conn, r, status, body):
        seen.append((r.id, status, body))
        return DeliveryVerdict.rejected("peer: UnrecognisedDataValue: bad status",
                                        {"error_type": "UnrecognisedDataValue"})

    ids = await queue(migrated_engine, peer.url, [b"<m1/>", b"<m2/>"])
    async with running(make_worker(migrated_engine, http_session, on_delivered=on_delivered)):
        await wait_for(lambda: _state_is(migrated_engine, ids[1], "failed"))
        await asyncio.sleep(0.2)
    assert peer.received == [b"<m1/>", b"<m2/>"]  # each once; the 2nd after the 1st gave up
    assert [s[:2] for s in seen] == [(ids[0], 200), (ids[1], 200)]
    r = await row(migrated_engine, ids[0])
    assert r.state == "failed" and r.attempts == 1 and r.confirmation == b"<ERROR/>"
    assert r.last_error == "peer: UnrecognisedDataValue: bad status"
    evs = await events(migrated_engine)
    assert [e for e, _ in evs] == ["send_error", "send_error"]
    assert evs[0][1]["outbox_id"] == ids[0]
    assert evs[0][1]["error_type"] == "UnrecognisedDataValue"
    async with migrated_engine.connect() as conn:
        flagged = (await conn.execute(select(transactions.c.needs_attention))).scalar_one()
    assert flagged is True


async def test_max_attempts_then_failed_with_history(migrated_engine, http_session, peers,
                                                     unused_port):
    peer = await peers(unused_port(), respond=lambda n, body: (500, b"oops"))
    [oid] = await queue(migrated_engine, peer.url, [b"<m/>"])
    async with running(make_worker(migrated_engine, http_session, max_attempts=3)):
        await wait_for(lambda: _state_is(migrated_engine, oid, "failed"))
        await asyncio.sleep(0.2)
    assert len(peer.received) == 3
    r = await row(migrated_engine, oid)
    assert r.attempts == 3 and r.last_error.startswith("HTTP 500") and r.sent_at is None
    evs = await events(migrated_engine)
    assert [e for e, _ in evs] == ["send_failed"]
    assert evs[0][1]["http_status"] == 500 and evs[0][1]["attempts"] == 3


async def test_on_delivered_runs_in_the_recording_transaction(migrated_engine, http_session,
                                                              peers, unused_port):
    peer = await peers(unused_port())

    async def on_delivered(conn, r, status, body):
        await conn.execute(insert(history).values(
            transaction_id=r.transaction_id, at=now(), actor="peer:ISIL:YY-1",
            event="confirmation", detail={"body": body.decode()}))
        # Inside the same transaction the row is still pending (written after us).
        got = await conn.execute(select(history.c.event))
        assert [e for (e,) in got] == ["confirmation"]

    [oid] = await queue(migrated_engine, peer.url, [b"<m/>"])
    async with running(make_worker(migrated_engine, http_session, on_delivered=on_delivered)):
        await wait_for(lambda: _state_is(migrated_engine, oid, "sent"))
    assert [e for e, _ in await events(migrated_engine)] == ["confirmation"]


async def test_on_delivered_crash_is_visible_not_resent(migrated_engine, http_session, peers,
                                                       unused_port, caplog):
    peer = await peers(unused_port())

    async def on_delivered(conn, r, status, body):
        await conn.execute(insert(history).values(
            transaction_id=r.transaction_id, at=now(), actor="x", event="half-done"))
        raise ValueError("bug")

    [oid] = await queue(migrated_engine, peer.url, [b"<m/>"])
    async with running(make_worker(migrated_engine, http_session, on_delivered=on_delivered)):
        await wait_for(lambda: _state_is(migrated_engine, oid, "sent"))
        await asyncio.sleep(0.1)
    assert len(peer.received) == 1
    evs = await events(migrated_engine)
    assert [e for e, _ in evs] == ["confirmation_error"]  # the callback's write rolled back
    assert "ValueError: bug" in evs[0][1]["error"]


async def test_order_within_a_transaction(migrated_engine, http_session, peers, unused_port):
    def respond(n, body):
        # The first message is refused twice; the second must not overtake it.
        if body == b"<first/>" and n <= 2:
            return 503, b"later"
        return 200, CONFIRMATION

    peer = await peers(unused_port(), respond=respond)
    ids = await queue(migrated_engine, peer.url, [b"<first/>", b"<second/>", b"<third/>"])
    async with running(make_worker(migrated_engine, http_session)):
        await wait_for(lambda: _state_is(migrated_engine, ids[2], "sent"))
    assert peer.received == [b"<first/>", b"<first/>", b"<first/>", b"<second/>", b"<third/>"]


async def test_stop_finishes_the_in_flight_send(migrated_engine, http_session, peers,
                                                unused_port):
    peer = await peers(unused_port(), delay=0.3)
    [oid] = await queue(migrated_engine, peer.url, [b"<m/>"])
    worker = make_worker(migrated_engine, http_session, poll_seconds=5)
    task = asyncio.create_task(worker.run())
    await asyncio.wait_for(peer.started.wait(), 5)
    await asyncio.wait_for(worker.stop(), 5)
    assert task.done() or (await asyncio.wait_for(task, 1)) is None
    assert (await row(migrated_engine, oid)).state == "sent"


async def test_wake_sends_without_waiting_for_the_poll(migrated_engine, http_session, peers,
                                                       unused_port):
    peer = await peers(unused_port())
    worker = make_worker(migrated_engine, http_session, poll_seconds=30)
    async with running(worker):
        await asyncio.sleep(0.05)  # the worker is now idle, waiting
        [oid] = await queue(migrated_engine, peer.url, [b"<m/>"])
        worker.wake()
        await wait_for(lambda: _state_is(migrated_engine, oid, "sent"), timeout=3)


async def test_run_once_returns_number_processed(migrated_engine, http_session, peers,
                                                 unused_port):
    peer = await peers(unused_port())
    worker = make_worker(migrated_engine, http_session, batch_size=2)
    for n in range(3):
        await queue(migrated_engine, peer.url, [f"<m{n}/>".encode()], tid=None)
    assert await worker.run_once() == 2
    assert await worker.run_once() == 1
    assert await worker.run_once() == 0
    assert sorted(peer.received) == [b"<m0/>", b"<m1/>", b"<m2/>"]


async def test_timeout_is_retried(migrated_engine, http_session, peers, unused_port):
    peer = await peers(unused_port(), delay=0.5)
    [oid] = await queue(migrated_engine, peer.url, [b"<m/>"])
    given_up = []

    async def on_failed(conn, r, error):
        given_up.append(r)

    worker = make_worker(migrated_engine, http_session, timeout_seconds=0.1, max_attempts=2,
                         on_failed=on_failed)
    async with running(worker):
        await wait_for(lambda: _state_is(migrated_engine, oid, "failed"))
    r = await row(migrated_engine, oid)
    assert "timeout" in r.last_error and r.attempts == 2
    assert r.maybe_delivered  # the peer got it, and answered too late
    # The borrowing side is told so when the outbox gives up (it does not ask another lender).
    assert [(g.id, g.maybe_delivered) for g in given_up] == [(oid, True)]


async def test_lost_lease_writes_nothing(migrated_engine, http_session, peers, unused_port):
    """A send that outlives its lease: the row was taken over, so our result is dropped."""
    peer = await peers(unused_port(), delay=0.4)
    [oid] = await queue(migrated_engine, peer.url, [b"<m/>"])

    async def on_delivered(conn, r, status, body):
        await conn.execute(insert(history).values(
            transaction_id=r.transaction_id, at=now(), actor="x", event="confirmation"))

    worker = make_worker(migrated_engine, http_session, lease_seconds=0.1,
                         on_delivered=on_delivered)
    sending = asyncio.create_task(worker.run_once())
    await asyncio.wait_for(peer.started.wait(), 5)
    await asyncio.sleep(0.15)  # the lease has run out
    async with migrated_engine.begin() as conn:
        stolen = await repo.claim_due(conn, worker_id="thief", now=now(), lease_seconds=60,
                                      limit=5)
    assert [r.id for r in stolen] == [oid]
    assert stolen[0].maybe_delivered  # whoever held the lease may have sent it
    assert await sending == 1
    r = await row(migrated_engine, oid)
    assert r.state == "pending" and r.locked_by == "thief" and r.attempts == 0
    assert await events(migrated_engine) == []


async def test_a_busy_peers_retry_after_is_honoured(migrated_engine, http_session, peers,
                                                    unused_port):
    """A peer that answers 429 (or 503) with Retry-After is asked again no sooner (our
    own node says Retry-After when it rate-limits a partner): the back-off alone would
    spend the attempts in a fraction of a second here."""
    arrivals: list[float] = []

    def respond(n, body):
        arrivals.append(time.monotonic())
        return (200, CONFIRMATION) if n > 1 else (429, b"slow down")

    peer = await peers(unused_port(), respond=respond)
    peer.headers = {"Retry-After": "1"}
    [oid] = await queue(migrated_engine, peer.url, [b"<m/>"])
    # (Honoured up to max_backoff_seconds, which the back-off never passes either.)
    async with running(make_worker(migrated_engine, http_session, max_backoff_seconds=5.0)):
        await wait_for(lambda: _state_is(migrated_engine, oid, "sent"))
    assert len(arrivals) == 2 and arrivals[1] - arrivals[0] >= 0.95


def test_retry_after_reads_seconds_and_http_dates():
    from node.outbox import retry_after

    at = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)
    assert retry_after("120", at) == 120
    assert retry_after("Mon, 07 Dec 2026 12:01:30 GMT", at) == 90
    assert retry_after("Mon, 07 Dec 2026 11:00:00 GMT", at) == 0  # past
    assert retry_after(None, at) == retry_after("soon", at) == retry_after("-5", at) == 0


@pytest.mark.parametrize("answer, refused", [(b"<ERROR/>", True), (b"<html>Bad</html>", False)])
async def test_an_error_confirmation_with_a_4xx_is_a_refusal(migrated_engine, http_session,
                                                             peers, unused_port, answer, refused):
    """Koha answers an ERROR confirmation with HTTP 400 (NOTES §6.6): that is the peer's
    refusal, recorded at once, not a transport failure retried until max_attempts. A
    4xx whose body is no confirmation is retried as before."""
    peer = await peers(unused_port(), respond=lambda n, body: (400, answer) if n == 1
                       else (200, CONFIRMATION))

    async def on_delivered(conn, r, status, body):
        if body == b"<ERROR/>":
            return DeliveryVerdict.rejected("peer: UnrecognisedDataValue: unknown agency")
        return None  # not an ERROR confirmation

    [oid] = await queue(migrated_engine, peer.url, [b"<m/>"])
    async with running(make_worker(migrated_engine, http_session, on_delivered=on_delivered)):
        r = await wait_for(lambda: _state_is(migrated_engine, oid, "failed" if refused
                                             else "sent"))
        await asyncio.sleep(0.2)
    assert len(peer.received) == (1 if refused else 2)
    if refused:
        assert r.last_http_status == 400 and r.confirmation == b"<ERROR/>"
        assert r.last_error == "peer: UnrecognisedDataValue: unknown agency"
        assert [e for e, _ in await events(migrated_engine)] == ["send_error"]
