"""What the store runs, as the driver sees it: the statements an engine executes, and
their query plans (for the tests that say a lookup is served by an index)."""

from __future__ import annotations

from contextlib import asynccontextmanager

from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncConnection


@asynccontextmanager
async def statements_of(engine):
    """The statements the engine runs meanwhile (BEGIN left out), with their parameters."""
    seen: list[tuple[str, object]] = []

    def grab(_conn, _cursor, statement, parameters, _context, _many):
        if not statement.startswith("BEGIN"):
            seen.append((statement, parameters))

    event.listen(engine.sync_engine, "before_cursor_execute", grab)
    try:
        yield seen
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", grab)


async def explain(conn: AsyncConnection, statement: str, parameters) -> str:
    """The plan of a statement :func:`statements_of` saw, run on ``conn`` (in its
    transaction: its settings); PostgreSQL is told to avoid sequential scans, as on a
    big table."""
    driver = (await conn.get_raw_connection()).driver_connection
    if conn.dialect.name == "sqlite":
        cursor = await driver.execute("EXPLAIN QUERY PLAN " + statement, parameters)
        return "\n".join(row[-1] for row in await cursor.fetchall())
    await conn.exec_driver_sql("SET LOCAL enable_seqscan = off")
    return "\n".join(row[0] for row in await driver.fetch("EXPLAIN " + statement, *parameters))
