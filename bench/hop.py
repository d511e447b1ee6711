"""One outbox hop, without the rest of the node: what the outbox itself costs.

An :class:`node.outbox.OutboxWorker` on a fresh database sends to a bare aiohttp
peer in the same process (it answers at once, stores nothing).  For each of
``--messages`` messages of one request: commit the outbox row, ``wake()`` the
worker, then time

- wake -> the peer has the message (the claim, then the POST);
- wake -> the row is marked sent (the peer's answer recorded);

and, for reference, a bare POST to the same peer with the same HTTP session.
"wake -> peer" minus "bare POST" is what the outbox adds to every message hop
of a loan or a rota step, before the receiving node's own transaction.

    .venv/bin/python bench/hop.py [--db sqlite|postgresql] [--quick]
"""

from __future__ import annotations

import asyncio
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
from aiohttp import web

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import (  # noqa: E402
    Databases,
    free_port,
    header,
    median,
    parse_args,
    workdir,
)
from node.outbox import OutboxWorker  # noqa: E402
from node.store import db, outbox_repo  # noqa: E402
from node.store.tables import transactions  # noqa: E402


async def bench(url: str, messages: int) -> None:
    await db.migrate_async(url)
    engine = db.create_engine(url)
    arrived: dict[bytes, float] = {}

    async def peer(request: web.Request) -> web.Response:
        arrived[await request.read()] = time.perf_counter()
        return web.Response(body=b"<confirmation/>", content_type="application/xml")

    app = web.Application()
    app.router.add_post("/iso18626", peer)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    peer_url = f"http://127.0.0.1:{port}/iso18626"
    to_peer, to_sent, bare = [], [], []
    try:
        async with aiohttp.ClientSession() as http:
            worker = OutboxWorker(engine, http, worker_id="bench", poll_seconds=5)
            running = asyncio.create_task(worker.run())
            now = datetime.now(UTC)
            async with engine.begin() as conn:
                tid = (await conn.execute(transactions.insert().values(
                    role="lending", public_id="HOP", requesting_agency_id="ISIL:XX-1",
                    requesting_request_id="HOP", status="new", created_at=now, updated_at=now,
                    state={}).returning(transactions.c.id))).scalar_one()
            for i in range(messages):
                body = f"<m{i}/>".encode()
                async with engine.begin() as conn:
                    oid = await outbox_repo.enqueue(
                        conn, transaction_id=tid, peer="ISIL:XX-1", url=peer_url,
                        kind="supplyingAgencyMessage", body=body, now=datetime.now(UTC))
                woken = time.perf_counter()
                worker.wake()
                while body not in arrived:
                    await asyncio.sleep(0.0002)
                to_peer.append(arrived[body] - woken)
                while True:
                    async with engine.connect() as conn:
                        if (await outbox_repo.get(conn, oid)).state == "sent":
                            break
                    await asyncio.sleep(0.0005)
                to_sent.append(time.perf_counter() - woken)
            await worker.stop()
            await running
            for _ in range(messages):
                started = time.perf_counter()
                async with http.post(peer_url, data=b"<bare/>") as response:
                    await response.read()
                bare.append(time.perf_counter() - started)
    finally:
        await runner.cleanup()
        await engine.dispose()
    for name, values in (("wake -> peer has it", to_peer), ("wake -> marked sent", to_sent),
                         ("bare POST (reference)", bare)):
        print(f"  {name:24s} median {1000 * median(values):6.2f} ms   "
              f"min {1000 * min(values):6.2f} ms")
    print(f"outbox cost per hop (wake -> peer minus bare POST), median: "
          f"{1000 * (median(to_peer) - median(bare)):.2f} ms", flush=True)


def main() -> int:
    args = parse_args(__doc__.splitlines()[0], lambda ap: (
        ap.add_argument("--messages", type=int),
    ))
    args.messages = args.messages or (50 if args.quick else 300)
    header("hop", args)
    with workdir("hop") as d:
        dbs = Databases(args.db, d)
        try:
            asyncio.run(bench(dbs.make("hop"), args.messages))
        finally:
            dbs.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
