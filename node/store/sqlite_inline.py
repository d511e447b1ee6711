"""aiosqlite without its thread hop, for the node's one SQLite connection.

aiosqlite runs every call on a worker thread and wakes the event loop when it is
done: two thread switches, a GIL hand-off and a trip through the loop's queue per
call, which on this path cost more than SQLite's own work (a statement is tens of
microseconds; bench/RESULTS.md §1).  Here each call runs at once on the event
loop's thread instead, so a batch's statements also run back to back instead of
each waiting behind the HTTP handlers queued meanwhile.

What it gives up: while SQLite works (or waits up to ``busy_timeout`` for another
process's write lock: the CLI's), the loop does nothing else.  With ONE connection
for the node that is no loss: everything that needs the database waited for that
connection anyway.  aiosqlite's thread still opens and closes the connection.
"""

from __future__ import annotations

import sqlite3
from functools import partial

import aiosqlite


class InlineConnection(aiosqlite.Connection):
    async def _execute(self, fn, *args, **kwargs):
        if not self._running or not self._connection:
            raise ValueError("Connection closed")
        return fn(*args, **kwargs)


def connect(database: str, *, iter_chunk_size: int = 64, **kwargs) -> InlineConnection:
    """``aiosqlite.connect`` for :class:`InlineConnection` (SQLAlchemy's
    ``async_creator_fn`` connect argument)."""
    # Opened on aiosqlite's thread, used on the loop's.
    kwargs["check_same_thread"] = False
    connection = InlineConnection(partial(sqlite3.connect, database, **kwargs), iter_chunk_size)
    connection._thread.daemon = True  # as SQLAlchemy does for aiosqlite's own
    return connection
