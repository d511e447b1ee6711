"""Outbox workers that are gone, found at once (PostgreSQL).

A worker leases the outbox rows it sends (``locked_by``, ``locked_until``). One that
dies (killed, crashed, its machine down) leaves its rows to wait until their lease
runs out, ``[outbox] timeout_seconds`` + 10 s. So each worker holds a session
advisory lock named by its id, on a connection of its own, for as long as it runs;
at its start and with the timers (every 15 s) it tries the lock of every other
worker holding leases, and a lock it gets is that of a worker gone: its rows are
released, to be claimed now.

A worker whose own connection breaks (the database restarted) looks gone to the
others until it holds its lock again, at its next sweep: they may send what it was
sending, once more (at least once, as when a lease runs out; partners take a
message received twice as once).

A node that stops releases what is still leased to its worker, unsent (``Node.stop``);
on SQLite, where one node process owns the file, leases left by a process killed are
released at the next start (``Node.start``).
"""

from __future__ import annotations

import logging
from datetime import datetime

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from .store import outbox_repo

log = logging.getLogger("node.outbox")

# pg_advisory_lock(int4, int4): ours, and the worker id's hash. Migration 0007's
# status-count shards use (18626, n).
LOCK_SPACE = 18627

_TRY_HOLD = text("SELECT pg_try_advisory_lock(:space, hashtext(:worker))")
_TRY_UNTIL_COMMIT = text("SELECT pg_try_advisory_xact_lock(:space, hashtext(:worker))")


class WorkerLock:
    """Our worker's lock, and the sweep for the leases of workers gone."""

    def __init__(self, engine: AsyncEngine, worker_id: str) -> None:
        self.engine = engine
        self.worker_id = worker_id
        self._held: AsyncConnection | None = None

    async def hold(self) -> None:
        """Take our lock, or check that its connection still holds it (else take it
        again). Call before the worker leases its first row."""
        if self._held is not None:
            try:
                await self._held.execute(text("SELECT 1"))
                return
            except Exception as exc:  # the connection broke: so did the lock
                log.warning("worker %s: the connection holding its lock broke (%s): "
                            "taking it again", self.worker_id, exc)
                await self._drop()
        # Autocommit: a session lock needs no transaction, and the connection must not
        # sit in one (it would hold back vacuum for as long as the worker runs).
        conn = await self.engine.execution_options(isolation_level="AUTOCOMMIT").connect()
        try:
            if not await conn.scalar(_TRY_HOLD, {"space": LOCK_SPACE, "worker": self.worker_id}):
                # Another running worker's id has the same hash: it holds the lock, so
                # ours look alive to the others as well. Nothing is released wrongly.
                log.warning("worker %s: its lock is held by a worker whose id hashes alike",
                            self.worker_id)
        except BaseException:
            await conn.close()
            raise
        self._held = conn

    async def release(self) -> None:
        """Let go of the lock (the worker has stopped)."""
        await self._drop()

    async def _drop(self) -> None:
        conn, self._held = self._held, None
        if conn is not None:
            try:
                await conn.close()
            except Exception:  # broken already: the server has let go of the lock
                await conn.invalidate()

    async def sweep(self, now: datetime) -> int:
        """Hold our lock, then release the leases of every worker gone; how many rows."""
        await self.hold()
        async with self.engine.connect() as conn:
            holders = await outbox_repo.leaseholders(conn, now=now, excluding=self.worker_id)
        released = 0
        for worker in holders:
            async with self.engine.begin() as conn:
                # Until this transaction ends: the lock taken is the sign of a worker gone.
                if await conn.scalar(_TRY_UNTIL_COMMIT, {"space": LOCK_SPACE, "worker": worker}):
                    rows = await outbox_repo.release_leases(conn, of=worker)
                    if rows:
                        log.warning("worker %s is gone: its %d message(s) go out now",
                                    worker, rows)
                    released += rows
        return released
