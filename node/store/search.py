"""Staff lists and search: ``GET /api/{role}/requests`` and the CLIs' list commands.

Every page is an index range read, newest first by ``(updated_at, id)``:

- with no ``q``, through the ``(role, [status,] updated_at, id)`` indexes, or with
  ``partner``, ``(lower(partner), role, updated_at, id)`` (any case, migration 0004);
- an extra filter naming few requests (:class:`Identifies`: the lending list's
  ``?barcode=``) is read like an identifier below: the matches looked up, then sorted;
- ``q`` is first taken as an identifier, by indexed equalities: our public id, the
  requesting and supplying request ids, a borrowing attempt's request id, the patron id,
  an item barcode (``request_barcodes``); the barcode and the supplying request id in
  any case, as the desk's scans (migration 0004's ``lower(...)`` indexes).  When nothing
  has that identifier, as title words (every word; the last one as a prefix) through
  full text: FTS5 (``transactions_fts``) on SQLite, the GIN index on
  ``to_tsvector('simple', title)`` on PostgreSQL.  Up to :data:`COUNT_LIMIT` matches are
  read from those indexes and sorted; with more (common words) the list's index is
  walked instead, each row tested: on PostgreSQL by its title, on SQLite against the
  whole match set, which FTS5 builds once (~8 ms per 100,000).  Counting them stops at
  COUNT_LIMIT on SQLite (FTS5 reads the matches one at a time), but not on PostgreSQL,
  whose GIN index reads them all first (~28 ms per 100,000 for a prefix).

Pages follow each other by an opaque cursor (the last row's ``(updated_at, id)``), so
requests arriving while staff page through do not shift the pages; ``offset`` still
works for numbered pages.  The facets (requests per status) of a plain list come
from ``status_counts``; with ``q`` or another filter they are counted over the
matches, up to :data:`COUNT_LIMIT`.

``status_counts``, ``request_barcodes`` and ``transactions_fts`` are kept in step by
the triggers of migration 0003, whoever writes ``transactions``.
"""

from __future__ import annotations

import base64
import json
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import (
    String,
    and_,
    column,
    false,
    func,
    literal,
    literal_column,
    select,
    table,
    tuple_,
    union,
)
from sqlalchemy.ext.asyncio import AsyncConnection

from . import tables as t

#: Matches counted for the facets of a search at most; beyond it ``total_exact`` is false.
COUNT_LIMIT = 1_000

_FTS = table("transactions_fts", column("rowid"))
_WORD = re.compile(r"\w+")


def same_text(column, value: str):
    """``column`` equals ``value`` in any case, as the indexes on ``lower(column)`` serve
    (migration 0004): SQL's ``lower`` on both sides, since SQLite's folds ASCII only."""
    return func.lower(column) == func.lower(literal(value.strip(), String))


@dataclass(frozen=True)
class Identifies:
    """An extra filter naming few requests (a scanned barcode): ``ids`` selects their ids
    from an index, so they are looked up and sorted rather than the list walked."""

    ids: Any


def row_view(row) -> dict[str, Any]:
    """A request as the staff lists show it."""
    return {
        "id": row.public_id, "role": row.role, "status": row.status, "partner": row.partner,
        "title": row.title, "patron_id": row.patron_id,
        "requesting_request_id": row.requesting_request_id,
        "supplying_request_id": row.supplying_request_id,
        "needs_attention": row.needs_attention,
        "created_at": row.created_at.isoformat(), "updated_at": row.updated_at.isoformat(),
    }


def encode_cursor(updated_at: datetime, tx_id: int) -> str:
    raw = json.dumps([updated_at.isoformat(), tx_id]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, int]:
    """The position a cursor from :func:`search` stands for; ValueError if it is not one."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        at, tx_id = json.loads(raw)
        when = datetime.fromisoformat(at)
        if when.tzinfo is None or not isinstance(tx_id, int):
            raise ValueError
    except (ValueError, TypeError):
        raise ValueError(f"cursor {cursor!r} is not one this server gave out") from None
    return when, tx_id


def _identifier_ids(q: str):
    """Ids of the requests that have ``q`` as an identifier: one indexed equality each;
    in any case where an index on ``lower(...)`` serves it, as for the desk's scans."""
    tx, at, rb = t.transactions, t.attempts, t.request_barcodes
    return union(
        select(tx.c.id).where(tx.c.public_id == q),
        select(tx.c.id).where(tx.c.requesting_request_id == q),
        select(tx.c.id).where(same_text(tx.c.supplying_request_id, q)),
        select(tx.c.id).where(tx.c.patron_id == q),
        select(at.c.transaction_id).where(at.c.requesting_request_id == q),
        select(rb.c.transaction_id).where(same_text(rb.c.barcode, q)),
    )


def _fts_match(words: list[str]):
    """FTS5's MATCH for titles holding every word, the last one as a prefix; each word
    quoted, so that no query syntax gets in."""
    match = " ".join([*(f'"{w}"' for w in words[:-1]), f'"{words[-1]}"*'])
    return literal_column("transactions_fts").op("MATCH")(literal(match))


def _words_clause(dialect: str, words: list[str], *, indexed: bool = True):
    """Titles holding every word, the last one as a prefix (the staff may still be
    typing it); through the full-text index, or (``indexed=False``, PostgreSQL) row by
    row, for walking an index in list order when the words are common."""
    tx = t.transactions
    if dialect == "sqlite":
        return tx.c.id.in_(select(_FTS.c.rowid).where(_fts_match(words)))
    # The same expression as the index ix_transactions_title_words, so that it is used;
    # title || '' is not that expression, so that it is not.
    title = tx.c.title if indexed else tx.c.title.op("||")(literal_column("''"))
    document = func.to_tsvector(literal_column("'simple'"),
                                func.coalesce(title, literal_column("''")))
    query = func.to_tsquery(literal_column("'simple'"),
                            " & ".join([*words[:-1], f"{words[-1]}:*"]))
    return document.op("@@")(query)


def _streamed_statuses(role: str, words: list[str]):
    """SQLite: the statuses of ``role``'s titles holding ``words``, read from FTS5 one
    match at a time (in rowid order), so that counting up to COUNT_LIMIT stops there,
    where ``id IN (...)`` first builds the whole match set (~10 ms per 100,000).
    ``rowid + 0`` keeps FTS5 from being the inner table, looked up per row (~35 us each)."""
    tx = t.transactions
    return (select(tx.c.status)
            .select_from(_FTS.join(tx, tx.c.id == _FTS.c.rowid + literal_column("0")))
            .where(role_clause(role, few=True), _fts_match(words)))


async def _q_clauses(conn: AsyncConnection, role: str, q: str) -> tuple[Any, Any, Any]:
    """The WHERE clause for ``q`` (the requests it identifies, else its title words):
    as read from the matches (few of them), and as tested on each row (many); and for
    title words on SQLite, the statuses of the matches as FTS5 reads them (else None)."""
    tx = t.transactions
    ids = _identifier_ids(q)
    if (await conn.execute(select(tx.c.id).where(role_clause(role, few=True),
                                                 tx.c.id.in_(ids)).limit(1))).first():
        return tx.c.id.in_(ids), tx.c.id.in_(ids), None
    words = _WORD.findall(q.casefold())
    if not words:
        return false(), false(), None
    dialect = conn.dialect.name
    if dialect == "postgresql":
        # The planner overestimates prefix matches and starts parallel workers, which
        # take longer to start than the whole index read (~20 ms against ~3 ms at 1M).
        await conn.exec_driver_sql("SET LOCAL max_parallel_workers_per_gather = 0")
    return (_words_clause(dialect, words),
            _words_clause(dialect, words, indexed=False),
            _streamed_statuses(role, words) if dialect == "sqlite" else None)


def role_clause(role: str, *, few: bool):
    """``role = :role``; with few matches, as an expression no index can serve: else the
    planner may walk the role's (updated_at, id) index testing every row against the
    matches (SQLite always, PostgreSQL when it misjudges the words' cost), when looking
    the matches up and sorting them is far cheaper."""
    role_column = t.transactions.c.role
    return (role_column.op("||")(literal_column("''")) if few else role_column) == role


async def _counted_facets(conn: AsyncConnection, role: str) -> dict[str, int]:
    sc = t.status_counts
    rows = await conn.execute(select(sc.c.status, func.sum(sc.c.n).label("n"))
                              .where(sc.c.role == role).group_by(sc.c.status))
    return {r.status: int(r.n) for r in rows if r.n}


async def _facets_of_matches(conn: AsyncConnection, statuses) -> tuple[dict[str, int], bool]:
    """Requests per status among ``statuses`` (a select), counted up to COUNT_LIMIT + 1;
    and whether that is all of them."""
    matches = statuses.limit(COUNT_LIMIT + 1).subquery()
    rows = await conn.execute(select(matches.c.status, func.count().label("n"))
                              .group_by(matches.c.status))
    facets = {r.status: r.n for r in rows}
    return facets, sum(facets.values()) <= COUNT_LIMIT


async def search(conn: AsyncConnection, role: str, *, status: str | None = None,
                 partner: str | None = None, q: str | None = None,
                 needs_attention: bool | None = None, limit: int = 50, offset: int = 0,
                 cursor: str | None = None, extra: tuple | list = (),
                 ) -> dict[str, Any]:
    """One page of ``role``'s requests, newest first, with facet counts by status.

    ``extra``: more WHERE clauses from a side's own filters (lending_repo.search_filters),
    or :class:`Identifies`.
    ``cursor``: the ``next`` of the previous page. The answer: ``requests``, ``next``
    (None on the last page), ``facets`` and ``total`` (exact unless ``total_exact`` is
    false: a search with more than COUNT_LIMIT matches).
    """
    tx = t.transactions
    after = decode_cursor(cursor) if cursor else None
    identified = any(isinstance(e, Identifies) for e in extra)
    where = [tx.c.id.in_(e.ids) if isinstance(e, Identifies) else e for e in extra]
    if partner:
        # Served, in list order, by the index (lower(partner), role, updated_at, id).
        where.append(same_text(tx.c.partner, partner))
    if needs_attention is not None:
        where.append(tx.c.needs_attention == needs_attention)
    q = (q or "").strip()
    if not q and not where:
        facets, exact = await _counted_facets(conn, role), True
    elif not q:
        facets, exact = await _facets_of_matches(
            conn, select(tx.c.status).where(role_clause(role, few=identified), *where))
    else:
        read_matches, test_rows, statuses = await _q_clauses(conn, role, q)
        # Counting stops at COUNT_LIMIT, so it may start from the matches: as FTS5 reads
        # them (SQLite), unless another filter may name fewer requests.
        if statuses is None or where:
            statuses = select(tx.c.status).where(role_clause(role, few=True),
                                                 read_matches, *where)
        facets, exact = await _facets_of_matches(conn, statuses)
        where.append(read_matches if exact else test_rows)
    where.insert(0, role_clause(role, few=identified or bool(q) and exact))
    if status:
        where.append(tx.c.status == status)
    if after:
        at, tx_id = after
        where.append(tuple_(tx.c.updated_at, tx.c.id)
                     < tuple_(literal(at, tx.c.updated_at.type), literal(tx_id, tx.c.id.type)))
    rows = (await conn.execute(select(tx).where(and_(*where))
                               .order_by(tx.c.updated_at.desc(), tx.c.id.desc())
                               .limit(limit + 1).offset(offset))).all()
    page = rows[:limit]
    more = len(rows) > limit and page
    return {
        "total": facets.get(status, 0) if status else sum(facets.values()),
        "total_exact": exact,
        "facets": facets,
        "requests": [row_view(r) for r in page],
        "next": encode_cursor(page[-1].updated_at, page[-1].id) if more else None,
    }
