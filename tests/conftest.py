"""Shared fixtures.

- ``db_url``: an async SQLAlchemy URL, parametrised ``sqlite`` (a file in tmp_path)
  and ``postgresql`` (a fresh database per test on ``ILL_TEST_PG``, default
  postgresql://postgres@127.0.0.1:5432/postgres, dropped afterwards). Without a
  reachable PostgreSQL the ``postgresql`` case is skipped, or fails when ``CI`` is set.
- ``migrated_engine``: an AsyncEngine (``node.store.db.create_engine``) on a
  migrated ``db_url``; disposed afterwards.
- ``unused_port``: a function returning a free TCP port on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlsplit, urlunsplit

import pytest

PG_ADMIN_DSN = os.environ.get("ILL_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")

_pg_problem: list[str | None] = []  # cached result of the first reachability check


def get_unused_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now (node.demo.free_port)."""
    from node.demo import free_port

    return free_port()


@pytest.fixture
def unused_port():
    """``unused_port()`` -> a free loopback port (call it as often as needed)."""
    return get_unused_port


def _in_thread(coro_fn, *args):
    """Run an async function in a private event loop on another thread.

    Keeps the admin connection off the test's event loop, so sync and async tests
    can both use the sync ``db_url`` fixture.
    """
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coro_fn(*args)).result()


async def _pg_admin(sql: str | None) -> None:
    import asyncpg

    conn = await asyncpg.connect(PG_ADMIN_DSN, timeout=5)
    try:
        if sql:
            await conn.execute(sql)
    finally:
        await conn.close()


def _pg_unavailable() -> str | None:
    if not _pg_problem:
        try:
            _in_thread(_pg_admin, None)
            _pg_problem.append(None)
        except Exception as exc:  # noqa: BLE001 - refused, auth, asyncpg missing...
            _pg_problem.append(
                f"PostgreSQL not reachable at {PG_ADMIN_DSN} ({type(exc).__name__}: {exc}); "
                "start it or set ILL_TEST_PG"
            )
    return _pg_problem[0]


def _pg_url(database: str) -> str:
    parts = urlsplit(PG_ADMIN_DSN)
    return urlunsplit(("postgresql+asyncpg", parts.netloc, "/" + database, parts.query, ""))


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request, tmp_path):
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'node.db'}"
        return
    problem = _pg_unavailable()
    if problem:
        if os.environ.get("CI"):
            pytest.fail(problem)
        pytest.skip(problem)
    name = f"ill_test_{uuid.uuid4().hex[:12]}"
    _in_thread(_pg_admin, f'CREATE DATABASE "{name}"')
    try:
        yield _pg_url(name)
    finally:
        _in_thread(_pg_admin, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
async def migrated_engine(db_url):
    from node.store.db import create_engine, migrate_async

    engine = create_engine(db_url)
    try:
        await migrate_async(engine)
        yield engine
    finally:
        await engine.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_factory(request, tmp_path):
    """``make(name)`` -> a fresh database URL, one per node in a multi-node test.

    Parametrised like ``db_url``; every PostgreSQL database made is dropped afterwards.
    """
    if request.param == "postgresql":
        problem = _pg_unavailable()
        if problem:
            if os.environ.get("CI"):
                pytest.fail(problem)
            pytest.skip(problem)
    made: list[str] = []

    def make(name: str) -> str:
        if request.param == "sqlite":
            return f"sqlite+aiosqlite:///{tmp_path / (name + '.db')}"
        database = f"ill_test_{uuid.uuid4().hex[:12]}"
        _in_thread(_pg_admin, f'CREATE DATABASE "{database}"')
        made.append(database)
        return _pg_url(database)

    yield make
    for database in made:
        _in_thread(_pg_admin, f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')


@pytest.fixture
async def net(tmp_path, database_factory):
    """A :class:`tests.harness.Network` of our nodes, each on a database of its own."""
    from tests.harness import Network

    network = Network(tmp_path, database_factory)
    yield network
    await network.stop()
