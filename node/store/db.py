"""Engine factory and migrations.

``create_engine(url)`` gives an :class:`AsyncEngine` set up for the node:

- ``sqlite+aiosqlite:///path``: ONE pooled connection (one writer; see
  /work/shared/perf-ceiling.md §4.4), WAL, ``synchronous=FULL`` (below),
  ``foreign_keys=ON``, and every transaction opened with ``BEGIN IMMEDIATE`` so
  that another process on the same file (the CLI, a second node process) waits
  for the write lock up front (up to 5 s) instead of failing half-way.  Its calls
  run on the event loop's thread, and wait for a lock on aiosqlite's
  (:mod:`node.store.sqlite_inline`).
- ``postgresql+asyncpg://...``: a normal pool, no pre-ping (see below).

``create_read_engine(engine)`` gives the engine for staff reads (lists, search, a
request's view), each read seeing one snapshot: on a SQLite file, connections of its
own (see there); on PostgreSQL, ``engine``'s pool in read-only REPEATABLE READ.

Migrations are Alembic scripts in ``node/store/migrations``, found relative to
this file, never the working directory.  Alembic is imported only to migrate:
checking that a database is migrated (every ``serve``) reads ``alembic_version``
and the migration files' revision lines, which keeps it off the start-up path.
"""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import event
from sqlalchemy.engine import URL, Connection, make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import AsyncAdaptedQueuePool, StaticPool

if TYPE_CHECKING:
    from alembic.config import Config

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"

_SQLITE_PRAGMAS = (
    "PRAGMA journal_mode=WAL",
    # A partner's message is confirmed OK once its COMMIT returns: with NORMAL, a COMMIT
    # of WAL mode survives the process but not a power cut or an OS crash.  FULL syncs
    # the WAL at each COMMIT, as PostgreSQL does by default: ~0.3 ms a COMMIT here, one
    # per batch of messages, no loss measured in throughput (bench/RESULTS.md).
    "PRAGMA synchronous=FULL",
    "PRAGMA foreign_keys=ON",
)


class NotMigrated(RuntimeError):
    """The database schema is not at the revision this code needs."""

    def __init__(self, url: str, current: str | None, head: str):
        self.url = url
        self.current = current
        self.head = head
        super().__init__(
            f"database at {url} is not migrated (at revision {current or 'none'}, "
            f"need {head}): run `ill-node migrate --config FILE`"
        )


def safe_url(url: str | Any) -> str:
    """The URL as text with any password masked, for messages and logs."""
    return make_url(url).render_as_string(hide_password=True)


_ASYNC_DRIVERS = {
    "sqlite": "sqlite+aiosqlite",
    "sqlite+pysqlite": "sqlite+aiosqlite",
    "postgres": "postgresql+asyncpg",
    "postgresql": "postgresql+asyncpg",
    "postgresql+psycopg2": "postgresql+asyncpg",
    "postgresql+psycopg": "postgresql+asyncpg",
}


def async_url(url: str | URL) -> URL:
    """``url`` with its driver swapped for the async one (``sqlite://`` -> aiosqlite...)."""
    parsed = make_url(url)
    driver = _ASYNC_DRIVERS.get(parsed.drivername)
    return parsed.set(drivername=driver) if driver else parsed


def create_engine(url: str | URL, **kwargs: Any) -> AsyncEngine:
    """An AsyncEngine for ``url`` (``sqlite+aiosqlite`` or ``postgresql+asyncpg``;
    plain ``sqlite://`` / ``postgresql://`` URLs get those drivers).

    Extra keyword arguments go to :func:`sqlalchemy.ext.asyncio.create_async_engine`.
    """
    parsed = async_url(url)
    if parsed.get_backend_name() == "sqlite":
        from . import sqlite_inline

        kwargs.setdefault("connect_args", {}).setdefault("async_creator_fn",
                                                         sqlite_inline.connect)
        if _in_memory(parsed):
            kwargs.setdefault("poolclass", StaticPool)
        else:
            kwargs.setdefault("poolclass", AsyncAdaptedQueuePool)
            kwargs.setdefault("pool_size", 1)
            kwargs.setdefault("max_overflow", 0)
        engine = create_async_engine(parsed, **kwargs)
        _setup_sqlite(engine)
        return engine
    # No pre-ping: on asyncpg it is three round trips on every checkout. A connection
    # the server dropped fails one transaction, which SQLAlchemy follows by replacing
    # the whole pool, and the writers run it again (transient, below); old
    # connections are recycled.
    kwargs.setdefault("pool_recycle", 1800)
    return create_async_engine(parsed, **kwargs)


#: Staff reads at once on a SQLite file (each connection on its own thread).
SQLITE_READERS = 2


def create_read_engine(engine: AsyncEngine) -> AsyncEngine:
    """The engine for staff reads beside ``engine`` (from :func:`create_engine`).

    On a SQLite file: up to SQLITE_READERS connections of its own, each reading a
    WAL snapshot (a deferred ``BEGIN``) on aiosqlite's thread, ``query_only``.  A
    long search (tens of ms on a common word at 1M requests) then runs beside the
    event loop, since SQLite lets go of the GIL while it works, and takes no write
    lock: partners' messages, the outbox and a CLI's import do not wait for it, as
    they would on the writing connection, which runs on the loop's thread.
    On PostgreSQL, whose pool already reads beside writes: ``engine``'s pool, each
    read a read-only REPEATABLE READ transaction.  Under READ COMMITTED, a request's
    row and its history, read one after the other, could straddle a commit: a view
    whose history says what its status and flags do not yet show.  On SQLite in
    memory, which other connections cannot see: ``engine`` itself."""
    url = engine.url
    if url.get_backend_name() == "postgresql":
        return engine.execution_options(isolation_level="REPEATABLE READ",
                                        postgresql_readonly=True)
    if url.get_backend_name() != "sqlite" or _in_memory(url):
        return engine
    reader = create_async_engine(url, poolclass=AsyncAdaptedQueuePool,
                                 pool_size=SQLITE_READERS, max_overflow=0)

    @event.listens_for(reader.sync_engine, "connect")
    def _on_connect(dbapi_connection, _record):  # pragma: no cover - trivial
        dbapi_connection.isolation_level = None  # BEGIN below, as for the writer
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute("PRAGMA query_only=ON")
        finally:
            cursor.close()

    @event.listens_for(reader.sync_engine, "begin")
    def _on_begin(conn):  # pragma: no cover - trivial
        conn.exec_driver_sql("BEGIN")  # one snapshot for the count and the page
    return reader


async def dispose_read_engine(reader: AsyncEngine, engine: AsyncEngine) -> None:
    """Close what ``create_read_engine(engine)`` opened: SQLite's reader connections;
    nothing on PostgreSQL or in memory, whose reads use ``engine``'s own pool."""
    if reader.pool is not engine.pool:
        await reader.dispose()


# Seconds to wait before each new try of a transaction that failed :func:`transient`ly:
# a deadlock's at once, a restarting server's a little later.
RETRY_DELAYS = (0.0, 0.1, 0.5)
# PostgreSQL undid the transaction, and running it again may well succeed:
# serialization_failure and deadlock_detected.
_RETRYABLE_SQLSTATES = frozenset({"40001", "40P01"})


def transient(exc: BaseException) -> bool:
    """Whether a transaction that failed with ``exc`` may succeed if run again at once:
    the server undid it (a deadlock, a serialization failure), or dropped its
    connection, which the pool has replaced (a restart, a proxy's idle cut).  The
    caller runs the whole transaction again; whatever it writes must be keyed (the
    messages' digests) so that a COMMIT that did reach the server is not doubled."""
    if not isinstance(exc, DBAPIError):
        return False
    if exc.connection_invalidated:
        return True
    return getattr(exc.orig, "sqlstate", None) in _RETRYABLE_SQLSTATES


def retryable(exc: BaseException, tries: int) -> bool:
    """Whether a transaction that failed with ``exc``, already run again ``tries``
    times, is run once more (after ``RETRY_DELAYS[tries]``)."""
    return tries < len(RETRY_DELAYS) and transient(exc)


def _in_memory(url: URL) -> bool:
    return url.database in (None, "", ":memory:") or "mode=memory" in str(url)


def _setup_sqlite(engine: AsyncEngine) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection, _record):  # pragma: no cover - trivial
        # Let us issue BEGIN ourselves (the driver's implicit BEGIN is deferred and
        # skips DDL); see the SQLAlchemy aiosqlite docs, "Serializable isolation".
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            for pragma in _SQLITE_PRAGMAS:
                cursor.execute(pragma)
        finally:
            cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn):  # pragma: no cover - trivial
        conn.exec_driver_sql("BEGIN IMMEDIATE")


# --------------------------------------------------------------------------- Alembic


def alembic_config() -> Config:
    """An Alembic Config pointing at our migrations (no ini file, no CWD)."""
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    return cfg


# ``revision = '0003'`` and ``down_revision = '0002'`` (or None, or a tuple of
# revisions for a merge), with or without a type annotation.
_REVISION_LINE = re.compile(r"^(down_revision|revision)\b[^=\n]*=(.*)$", re.MULTILINE)
_QUOTED = re.compile(r"""['"]([^'"]+)['"]""")


def head_revision() -> str:
    """The newest migration revision this code knows: the one revision no other
    migration names as its ``down_revision`` (what Alembic calls the head,
    found without importing Alembic; tests/test_cold_start.py compares them)."""
    revisions: set[str] = set()
    parents: set[str] = set()
    for script in (MIGRATIONS_DIR / "versions").glob("*.py"):
        for name, value in _REVISION_LINE.findall(script.read_text(encoding="utf-8")):
            (revisions if name == "revision" else parents).update(_QUOTED.findall(value))
    heads = revisions - parents
    if len(heads) != 1:
        raise RuntimeError(f"{MIGRATIONS_DIR}: expected one head revision, found {sorted(heads)}")
    return heads.pop()


def _upgrade(sync_conn: Connection, revision: str) -> None:
    from alembic import command

    cfg = alembic_config()
    cfg.attributes["connection"] = sync_conn
    if sync_conn.dialect.name == "postgresql":
        # Two processes migrating at once: the second waits, then finds nothing to do.
        sync_conn.exec_driver_sql("SELECT pg_advisory_xact_lock(1815626)")
    command.upgrade(cfg, revision)


async def migrate_async(target: str | AsyncEngine, revision: str = "head") -> str:
    """Upgrade the database to ``revision`` (default head); returns the new revision."""
    engine = create_engine(target) if isinstance(target, str) else target
    try:
        async with engine.begin() as conn:
            await conn.run_sync(_upgrade, revision)
        return await current_revision(engine) or "none"
    finally:
        if isinstance(target, str):
            await engine.dispose()


def migrate(url: str, revision: str = "head") -> str:
    """Synchronous :func:`migrate_async` for the CLI (must not run inside an event loop)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(migrate_async(url, revision))
    raise RuntimeError("migrate() called inside a running event loop: await migrate_async()")


async def current_revision(engine: AsyncEngine) -> str | None:
    """The database's Alembic revision (from ``alembic_version``), or None for
    an empty database."""
    async with engine.connect() as conn:
        if not await conn.run_sync(lambda sync: sync.dialect.has_table(sync, "alembic_version")):
            return None
        rows = (await conn.exec_driver_sql("SELECT version_num FROM alembic_version")).all()
    # One row on a linear history; several would be branches, which we never make.
    return ",".join(sorted(row[0] for row in rows)) or None


async def check_migrated(engine: AsyncEngine) -> None:
    """Raise :class:`NotMigrated` unless the database is at the head revision."""
    current = await current_revision(engine)
    head = head_revision()
    if current != head:
        raise NotMigrated(safe_url(engine.url), current, head)


__all__ = [
    "MIGRATIONS_DIR",
    "NotMigrated",
    "alembic_config",
    "async_url",
    "check_migrated",
    "create_engine",
    "current_revision",
    "head_revision",
    "migrate",
    "migrate_async",
    "safe_url",
]
