"""aiosqlite without its thread hop, for the node's one SQLite connection.

aiosqlite runs every call on a worker thread and wakes the event loop when it is
done: two thread switches, a GIL hand-off and a trip through the loop's queue per
call, which on this path cost more than SQLite's own work (a statement is tens of
microseconds; bench/RESULTS.md §1).  Here each call runs at once on the event
loop's thread instead, so a batch's statements also run back to back instead of
each waiting behind the HTTP handlers queued meanwhile.

What it gives up would be the loop itself while SQLite waits for a lock held by
another connection (the CLI's, in another process): so the connection waits for
no lock on the loop's thread (its busy timeout is 0), and a call that finds the
database locked is run again on aiosqlite's thread, tried every
``RETRY_SECONDS`` for up to ``BUSY_TIMEOUT_MS`` while the loop serves the rest
(and whoever holds the lock in this process, if anyone, can finish).  SQLite
has not run a statement that failed busy, so running it again is safe.  It is
tried that often rather than with SQLite's own busy handler, which sleeps up to
100 ms between tries: a process writing in steps (``holdings import``) takes the
lock again within a millisecond of letting it go, and the node would find it
taken at every try until the handler gives up.  With ONE connection for the node,
nothing else of the node's waits on its calls that did not before.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from functools import partial

import aiosqlite

# How long a call waits for another connection's lock before "database is locked".
BUSY_TIMEOUT_MS = 5000
# How often it tries meanwhile.
RETRY_SECONDS = 0.002


class InlineConnection(aiosqlite.Connection):
    # The call running on aiosqlite's thread, if any.  Its caller may have been
    # cancelled (a stopping node, a handler gone), and the thread still runs it; until
    # it is done no other call may run on the loop's thread: one sqlite3 connection
    # used from two threads at once can crash the process.
    _on_thread: asyncio.Future | None = None

    async def _execute(self, fn, *args, **kwargs):
        while self._on_thread is not None:
            await asyncio.wait([self._on_thread])  # neither its outcome nor our cancel passes
        if not self._running or not self._connection:
            raise ValueError("Connection closed")
        try:
            return fn(*args, **kwargs)
        except sqlite3.OperationalError as exc:
            if not _locked(exc):
                raise
        on_thread = asyncio.ensure_future(super()._execute(self._waiting, fn, *args, **kwargs))
        self._on_thread = on_thread
        on_thread.add_done_callback(self._thread_done)
        return await asyncio.shield(on_thread)  # a cancelled caller leaves it running

    def _thread_done(self, on_thread: asyncio.Future) -> None:
        if self._on_thread is on_thread:
            self._on_thread = None
        if not on_thread.cancelled():
            on_thread.exception()  # its caller may be gone: retrieved, not logged

    def _waiting(self, fn, *args, **kwargs):
        """On aiosqlite's thread: ``fn``, tried again while the database is locked."""
        deadline = time.monotonic() + BUSY_TIMEOUT_MS / 1000
        while True:
            try:
                return fn(*args, **kwargs)
            except sqlite3.OperationalError as exc:
                if not _locked(exc) or time.monotonic() >= deadline:
                    raise
            time.sleep(RETRY_SECONDS)


def _locked(exc: sqlite3.OperationalError) -> bool:
    """SQLITE_BUSY (any extended code): another connection holds the lock."""
    return exc.sqlite_errorcode & 0xFF == sqlite3.SQLITE_BUSY


def connect(database: str, *, iter_chunk_size: int = 64, **kwargs) -> InlineConnection:
    """``aiosqlite.connect`` for :class:`InlineConnection` (SQLAlchemy's
    ``async_creator_fn`` connect argument)."""
    kwargs["check_same_thread"] = False  # opened on aiosqlite's thread, used on the loop's
    kwargs["timeout"] = 0  # no waiting for locks on the loop's thread: see above
    connection = InlineConnection(partial(sqlite3.connect, database, **kwargs), iter_chunk_size)
    connection._thread.daemon = True  # as SQLAlchemy does for aiosqlite's own
    return connection
