"""Two workers (two engines, and two OS processes) draining one database."""

from __future__ import annotations

import asyncio
import random
import sys
from collections import Counter, defaultdict
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
from aiohttp import web
from sqlalchemy import insert, select

from node.outbox import OutboxWorker
from node.store import outbox_repo as repo
from node.store.db import create_engine
from node.store.tables import outbox, transactions
from tests.peer import LoopbackPeer

TRANSACTIONS = 50
PER_TRANSACTION = 4  # 200 messages in all


class CountingPeer(LoopbackPeer):
    def __init__(self, port: int):
        super().__init__(port)
        self.received: list[bytes] = []

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        await asyncio.sleep(random.uniform(0, 0.004))
        self.received.append(body)
        if random.random() < 0.05:  # now and then a hiccup: must be retried, in order
            self.received.pop()
            return web.Response(status=503, body=b"busy")
        return web.Response(body=b"<confirmation/>", content_type="application/xml")

async def fill(engine, url) -> None:
    now = datetime.now(UTC)
    async with engine.begin() as conn:
        for t in range(TRANSACTIONS):
            tid = (await conn.execute(
                insert(transactions).values(
                    role="lending", public_id=f"P{t}", requesting_agency_id="ISIL:XX-1",
                    requesting_request_id=f"R{t}", status="new", created_at=now,
                    updated_at=now, state={}).returning(transactions.c.id))).scalar_one()
            for seq in range(PER_TRANSACTION):
                await repo.enqueue(conn, transaction_id=tid, peer="ISIL:YY-1", url=url,
                                   kind="supplyingAgencyMessage",
                                   body=f"{t}:{seq}".encode(), now=now)


def check_delivery(received: list[bytes]) -> None:
    counts = Counter(received)
    duplicates = {k: v for k, v in counts.items() if v > 1}
    assert not duplicates, f"delivered more than once: {duplicates}"
    expected = {f"{t}:{s}".encode() for t in range(TRANSACTIONS) for s in range(PER_TRANSACTION)}
    assert set(counts) == expected, f"missing: {sorted(expected - set(counts))[:10]}"
    order = defaultdict(list)
    for body in received:
        t, seq = body.decode().split(":")
        order[t].append(int(seq))
    assert all(seqs == sorted(seqs) for seqs in order.values()), "order per transaction broken"


async def all_sent(engine) -> bool:
    async with engine.connect() as conn:
        states = Counter((await conn.execute(select(outbox.c.state))).scalars())
        return states == {"sent": TRANSACTIONS * PER_TRANSACTION}


async def test_two_workers_two_engines_deliver_each_message_once(migrated_engine, db_url,
                                                                 unused_port):
    async with CountingPeer(unused_port()) as peer:
        await fill(migrated_engine, peer.url)
        engines = [create_engine(db_url), create_engine(db_url)]
        try:
            async with aiohttp.ClientSession() as s1, aiohttp.ClientSession() as s2:
                workers = [
                    OutboxWorker(engine, session, worker_id=f"w{n}", timeout_seconds=5,
                                 max_attempts=20, initial_backoff_seconds=0.02,
                                 max_backoff_seconds=0.1, poll_seconds=0.01, batch_size=8)
                    for n, (engine, session) in enumerate(zip(engines, (s1, s2)))
                ]
                processed = Counter()

                async def drain(worker):
                    while True:
                        n = await worker.run_once()
                        processed[worker.worker_id] += n
                        if n == 0:
                            async with worker.engine.connect() as conn:
                                if await repo.pending_count(conn) == 0:
                                    return
                            await asyncio.sleep(0.01)

                await asyncio.wait_for(asyncio.gather(*(drain(w) for w in workers)), 60)
        finally:
            for engine in engines:
                await engine.dispose()
        check_delivery(peer.received)
        assert await all_sent(migrated_engine)
        assert processed["w0"] > 0 and processed["w1"] > 0, processed


async def test_two_processes_deliver_each_message_once(migrated_engine, db_url, unused_port):
    script = Path(__file__).with_name("drain_worker.py")
    async with CountingPeer(unused_port()) as peer:
        await fill(migrated_engine, peer.url)
        procs = [
            await asyncio.create_subprocess_exec(
                sys.executable, str(script), db_url, f"proc{n}",
                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE)
            for n in range(2)
        ]
        try:
            for proc in procs:
                line = await asyncio.wait_for(proc.stdout.readline(), 30)
                assert line.strip() == b"ready", (line, await proc.stderr.read())
            for proc in procs:
                proc.stdin.write(b"go\n")
                await proc.stdin.drain()
            results = await asyncio.wait_for(
                asyncio.gather(*(proc.communicate() for proc in procs)), 90)
        finally:
            for proc in procs:
                if proc.returncode is None:
                    proc.kill()
                    await proc.wait()
        for proc, (_, err) in zip(procs, results):
            assert proc.returncode == 0, err.decode()[-3000:]
        check_delivery(peer.received)
        assert await all_sent(migrated_engine)
        async with migrated_engine.connect() as conn:
            by = Counter((await conn.execute(select(outbox.c.locked_by))).scalars())
        assert by == {None: TRANSACTIONS * PER_TRANSACTION}
