"""The node's SQLite connection runs its statements on the event loop's own thread
(node.store.sqlite_inline), and still behaves as aiosqlite's: a lock held by another
connection is waited for on aiosqlite's thread, not on the loop's."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time

import pytest
from sqlalchemy import text
from sqlalchemy.exc import OperationalError

from node.store import db, sqlite_inline


async def test_statements_run_on_the_event_loops_thread(tmp_path):
    engine = db.create_engine(f"sqlite+aiosqlite:///{tmp_path / 'inline.db'}")
    try:
        async with engine.connect() as conn:
            raw = await conn.get_raw_connection()
            raw.driver_connection._conn.create_function("thread_id", 0, threading.get_ident)
            ran_on = (await conn.execute(text("SELECT thread_id()"))).scalar_one()
        assert ran_on == threading.get_ident()
    finally:
        await engine.dispose()


async def test_transactions_commit_roll_back_and_report_errors(tmp_path):
    engine = db.create_engine(f"sqlite+aiosqlite:///{tmp_path / 'inline.db'}")
    try:
        async with engine.begin() as conn:
            await conn.execute(text("CREATE TABLE t (x INTEGER PRIMARY KEY)"))
            await conn.execute(text("INSERT INTO t VALUES (1)"))
        with pytest.raises(Exception, match="UNIQUE"):
            async with engine.begin() as conn:
                await conn.execute(text("INSERT INTO t VALUES (2)"))
                await conn.execute(text("INSERT INTO t VALUES (1)"))
        async with engine.connect() as conn:
            assert (await conn.execute(text("SELECT x FROM t"))).scalars().all() == [1]
    finally:
        await engine.dispose()
    # The connection is closed: a new engine on the file sees the same.
    again = db.create_engine(f"sqlite+aiosqlite:///{tmp_path / 'inline.db'}")
    try:
        async with again.connect() as conn:
            assert (await conn.execute(text("SELECT count(*) FROM t"))).scalar_one() == 1
    finally:
        await again.dispose()


@pytest.fixture
async def locked(tmp_path):
    """(the node's engine on a file with a table t, another connection holding the
    file's write lock: the CLI's, say)."""
    path = tmp_path / "locked.db"
    engine = db.create_engine(f"sqlite+aiosqlite:///{path}")
    other = sqlite3.connect(path, isolation_level=None)
    try:
        async with engine.begin() as conn:
            await conn.execute(text("CREATE TABLE t (x INTEGER)"))
        other.execute("BEGIN IMMEDIATE")
        yield engine, other
    finally:
        other.close()
        await engine.dispose()


async def insert(engine, x: int) -> None:
    async with engine.begin() as conn:
        await conn.execute(text("INSERT INTO t VALUES (:x)"), {"x": x})


async def test_a_lock_held_elsewhere_is_waited_for_off_the_event_loop(locked):
    """The node's transaction waits for another connection's write lock on aiosqlite's
    thread while the loop goes on, then goes through."""
    engine, other = locked
    writing = asyncio.create_task(insert(engine, 1))
    started = time.monotonic()
    ticks = 0
    while time.monotonic() - started < 0.3:
        await asyncio.sleep(0.01)
        ticks += 1
    assert not writing.done() and ticks >= 10  # waiting, and the loop runs meanwhile
    other.execute("COMMIT")
    await asyncio.wait_for(writing, 5)
    async with engine.connect() as conn:
        assert (await conn.execute(text("SELECT x FROM t"))).scalars().all() == [1]


async def test_a_lock_never_released_is_database_is_locked(locked, monkeypatch):
    monkeypatch.setattr(sqlite_inline, "BUSY_TIMEOUT_MS", 200)
    engine, other = locked
    with pytest.raises(OperationalError, match="database is locked"):
        await insert(engine, 1)
    other.execute("ROLLBACK")
    await insert(engine, 2)  # and the connection is usable after


async def test_a_call_left_waiting_on_the_thread_keeps_the_connection(locked):
    """A caller cancelled while its call waits for the lock on aiosqlite's thread (a
    stopping node): the thread still runs the call, and the connection's next call waits
    for it instead of using the connection from the loop's thread at the same time
    (which crashed the process)."""
    engine, other = locked
    async with engine.connect() as conn:
        raw = (await conn.get_raw_connection()).driver_connection
        waiting = asyncio.create_task(raw.execute("BEGIN IMMEDIATE"))
        await asyncio.sleep(0.05)
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        after = asyncio.create_task(raw.execute("SELECT 1"))
        await asyncio.sleep(0.1)
        assert not after.done()  # the BEGIN still runs on the thread, waiting for the lock
        other.execute("COMMIT")
        await asyncio.wait_for(after, 5)
        assert raw.in_transaction  # the cancelled call's BEGIN did run, then the SELECT
        await raw.rollback()
