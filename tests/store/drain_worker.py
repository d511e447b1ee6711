"""Run one OutboxWorker in its own process until the outbox is drained.

Used by test_outbox_concurrency.py:  python drain_worker.py DB_URL WORKER_ID
Exits 0 when no pending rows remain, 3 after 60 s.
"""

from __future__ import annotations

import asyncio
import sys
import time

import aiohttp


async def main(url: str, worker_id: str) -> int:
    from node.outbox import OutboxWorker
    from node.store import outbox_repo
    from node.store.db import check_migrated, create_engine

    engine = create_engine(url)
    try:
        await check_migrated(engine)
        async with aiohttp.ClientSession() as session:
            worker = OutboxWorker(
                engine, session, worker_id=worker_id, timeout_seconds=5, max_attempts=20,
                initial_backoff_seconds=0.05, max_backoff_seconds=0.2, poll_seconds=0.02,
                batch_size=8,
            )
            print("ready", flush=True)
            sys.stdin.readline()  # the parent says go, so both start together
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                if await worker.run_once() == 0:
                    async with engine.connect() as conn:
                        if await outbox_repo.pending_count(conn) == 0:
                            return 0
                    await asyncio.sleep(0.02)
            return 3
    finally:
        await engine.dispose()


if __name__ == "__main__":
    sys.exit(asyncio.run(main(sys.argv[1], sys.argv[2])))
