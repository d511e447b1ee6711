"""A batch's rows, of one table or several, written in ONE statement on PostgreSQL;
and lists of values bound as one array there (:func:`in_list`).

On PostgreSQL every statement is a round trip, and at full load the writer then
waits for the event loop's turn behind the HTTP handlers queued meanwhile: ~2 ms a
statement, most of a batch's time (bench/RESULTS.md §1).  And asyncpg's
``executemany`` runs the INSERT once per row on the server, as SQLAlchemy's
multi-row VALUES changes its text (so is prepared again) with the number of rows.
Here each table's rows go as one array per column, expanded by ``unnest``: one
statement text whatever the number of rows, run once; several tables are one
statement of data-modifying ``WITH``\\ s.

On SQLite, whose calls cost no round trip (:mod:`node.store.sqlite_inline`), each
table's rows are one ``executemany``.

A statement's text that changes with a list's length (an expanding ``IN``) is
prepared again by asyncpg at each new length, on each connection (~2 ms under
load, hundreds of times in a minute of a busy node): :func:`in_list` binds the
list as one array on PostgreSQL, so that the statement is prepared once.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache

from sqlalchemy import ARRAY, Boolean, Result, String, Table, any_, bindparam, insert, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.elements import ColumnElement, TextClause
from sqlalchemy.sql.visitors import InternalTraversal

_POSTGRESQL = postgresql.dialect()


async def insert_rows(conn: AsyncConnection, writes: Sequence[tuple[Table, list[dict]]]
                      ) -> None:
    """Insert the rows of each ``(table, rows)`` of ``writes``.  A table's rows all
    have the same keys, the columns they set (the others take their defaults)."""
    writes = [(table, rows) for table, rows in writes if rows]
    if not writes:
        return
    _check_keys(writes)
    if conn.dialect.name != "postgresql":
        for table, rows in writes:
            await conn.execute(_insert(table), rows)
        return
    await _unnest(conn, writes)


async def insert_new(conn: AsyncConnection, table: Table, rows: list[dict],
                     returning: tuple[str, ...]) -> Result:
    """Insert ``rows`` (as :func:`insert_rows`) but those a unique constraint refuses
    (no error); returns the ``returning`` columns of those inserted."""
    _check_keys([(table, rows)])
    if conn.dialect.name != "postgresql":
        return await conn.execute(_insert_new(table, returning), rows)
    return await _unnest(conn, [(table, rows)], returning)


def _check_keys(writes: list[tuple[Table, list[dict]]]) -> None:
    """One table's rows set the same columns (executemany would drop a key of a
    later row silently; ``unnest`` would misplace it)."""
    for table, rows in writes:
        names = rows[0].keys()
        for row in rows:
            if row.keys() != names:
                raise ValueError(f"rows for {table.name} differ in their keys: {sorted(row)} "
                                 f"against {sorted(names)}")


async def _unnest(conn: AsyncConnection, writes: list[tuple[Table, list[dict]]],
                  returning: tuple[str, ...] = ()) -> Result:
    shapes = tuple((table, tuple(rows[0])) for table, rows in writes)
    params: dict[str, list] = {}
    for n, ((table, rows), (_, names)) in enumerate(zip(writes, shapes, strict=True)):
        for m, name in enumerate(names):
            # The column's own conversion, as SQLAlchemy's for one row (aware UTC
            # datetimes, JSON text...); asyncpg then sends the array.
            process = table.c[name].type._cached_bind_processor(conn.dialect)
            values = [row[name] for row in rows]
            params[f"p{n}_{m}"] = values if process is None else [process(v) for v in values]
    return await conn.execute(_statement(shapes, returning), params)


@cache
def _insert(table: Table):
    return insert(table)


@cache
def _insert_new(table: Table, returning: tuple[str, ...]):
    return sqlite.insert(table).on_conflict_do_nothing().returning(
        *(table.c[name] for name in returning))


@cache
def _statement(shapes: tuple[tuple[Table, tuple[str, ...]], ...],
               returning: tuple[str, ...]) -> TextClause:
    """``WITH w0 AS (INSERT ...), w1 AS (INSERT ...) INSERT ...``: the rows of each
    table from ``unnest`` of one array per column, inserted in the arrays' order (the
    outbox sends a request's messages in id order).  With ``returning``, the last
    INSERT leaves out the rows a unique constraint refuses and returns those columns."""
    quote = _POSTGRESQL.identifier_preparer.quote
    inserts = []
    for n, (table, names) in enumerate(shapes):
        arrays = ", ".join(
            f"CAST(:p{n}_{m} AS {table.c[name].type.compile(dialect=_POSTGRESQL)}[])"
            for m, name in enumerate(names))
        aliases = ", ".join(f"c{m}" for m in range(len(names)))
        inserts.append(
            f"INSERT INTO {quote(table.name)} ({', '.join(quote(name) for name in names)}) "
            f"SELECT {aliases} FROM unnest({arrays}) WITH ORDINALITY AS u({aliases}, n) "
            "ORDER BY n")
    if returning:
        inserts[-1] += (" ON CONFLICT DO NOTHING RETURNING "
                        + ", ".join(quote(name) for name in returning))
    *first, last = inserts
    with_ = ", ".join(f"w{n} AS ({sql})" for n, sql in enumerate(first))
    return text((f"WITH {with_} " if first else "") + last)


class in_list(ColumnElement[bool]):  # noqa: N801 - used as a SQL function
    """``expr IN (:name)`` for a list bound as the parameter ``name``: an expanding
    ``IN`` (one placeholder per value) on SQLite, ``expr = ANY(:name)`` with the list
    as one array on PostgreSQL, whose text then does not change with its length."""

    __visit_name__ = "in_list"
    inherit_cache = True
    type = Boolean()
    _is_implicitly_boolean = True  # else SQLite gets "... IN (...) = 1", which no index serves
    _traverse_internals = [("expr", InternalTraversal.dp_clauseelement),
                           ("name", InternalTraversal.dp_string)]

    def __init__(self, expr: ColumnElement, name: str) -> None:
        self.expr = expr
        self.name = name


@compiles(in_list)
def _in_list(element: in_list, compiler, **kw) -> str:
    return compiler.process(element.expr.in_(bindparam(element.name, expanding=True)), **kw)


@compiles(in_list, "postgresql")
def _any_of_array(element: in_list, compiler, **kw) -> str:
    type_ = element.expr.type
    if isinstance(type_, String):  # no length: a CAST to VARCHAR(n)[] would cut values
        type_ = String()
    array = bindparam(element.name, type_=ARRAY(type_))
    return compiler.process(element.expr == any_(array), **kw)
