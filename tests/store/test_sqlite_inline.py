"""The node's SQLite connection runs its statements on the event loop's own thread
(node.store.sqlite_inline), and still behaves as aiosqlite's."""

from __future__ import annotations

import threading

import pytest
from sqlalchemy import text

from node.store import db


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
