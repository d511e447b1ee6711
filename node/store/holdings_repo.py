"""The library's holdings in the database: import, and the lookups auto-locate needs.

Identifiers are stored normalised (ISBN-13, ISSN without hyphen, OCLC
number without prefix, normalised LCCN) so that a lookup is an indexed
equality match; the pure matching itself is ``node.supplier.locate``.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Callable
from datetime import datetime
from operator import attrgetter
from typing import Any

from sqlalchemy import (
    Date,
    Integer,
    String,
    cast,
    delete,
    func,
    insert,
    null,
    or_,
    select,
    union,
    union_all,
)
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from ..supplier.locate import (
    HoldingsItem,
    HoldingsRecord,
    LookupKeys,
    author_key,
    normalise_isbn,
    normalise_issn,
    normalise_lccn,
    normalise_oclc,
    title_key,
)
from . import bulk
from . import tables as t

_NORMALISE = {
    "isbn": (lambda r: r.isbns, normalise_isbn),
    "issn": (lambda r: r.issns, normalise_issn),
    "oclc": (lambda r: r.oclc, normalise_oclc),
    "lccn": (lambda r: r.lccn, normalise_lccn),
}


#: The holdings tables, each before the one its rows belong to.
_TABLES = (t.holdings_items, t.holdings_identifiers, t.holdings_records)


def _identifier_rows(record: HoldingsRecord) -> list[dict]:
    rows = {("local", record.record_id)}
    for kind, (values, normalise) in _NORMALISE.items():
        for value in values(record):
            normal = normalise(value)
            if normal:
                rows.add((kind, normal))
    return [{"record_id": record.record_id, "kind": k, "value": v} for k, v in sorted(rows)]


#: Records written per transaction by :func:`import_in_steps`: each step holds SQLite's
#: write lock for a fraction of a second, so a serving node's writes go on in between.
IMPORT_STEP = 1000
#: Seconds :func:`import_in_steps` lets go of the database between steps: a waiting
#: node tries for the lock every few milliseconds (node/store/sqlite_inline.py).
STEP_PAUSE = 0.01
#: Records deleted per statement.
_DELETE_CHUNK = 500


async def import_records(conn: AsyncConnection, records: list[HoldingsRecord], *,
                         replace: bool, now: datetime) -> dict[str, int]:
    """Load records and their items in the caller's transaction. ``replace``: the file is
    the whole catalogue; otherwise merge: records in the file replace their earlier
    versions, others stay. Returns the counts of :func:`import_in_steps`."""
    counts = await _write_records(conn, records, now)
    counts["removed"] = 0
    if replace:
        gone, _ = await _not_in(conn, {r.record_id for r in records})
        counts["removed"] = await _delete_records(conn, gone)
    return counts


class TooManyRemoved(Exception):
    """A ``replace`` import would remove more of the stored records than allowed: likely
    a broken or partial export, which would leave auto-locate answering NotHeld."""

    def __init__(self, removed: int, stored: int, limit: float):
        self.removed, self.stored, self.limit = removed, stored, limit
        super().__init__(f"it would remove {removed} of the {stored} records stored "
                         f"({100 * removed / stored:.0f} %), more than {100 * limit:g} %")


async def import_in_steps(engine: AsyncEngine, records: list[HoldingsRecord], *,
                          replace: bool, now: datetime, step: int = IMPORT_STEP,
                          progress: Callable[[int], None] | None = None,
                          max_removed: float | None = None) -> dict[str, int]:
    """:func:`import_records`, committed ``step`` records at a time, so that a node serving
    from the same SQLite file is never locked out for long (a whole catalogue in one
    transaction held the write lock for a minute per million items, and partners got 503
    meanwhile). Each record is replaced whole in one step, so auto-locate always sees a
    record's old version or its new one; with ``replace``, the records no longer in the
    file go last. Records stored exactly as the file has them are not written again: a
    nightly refresh writes what changed. Interrupted, it leaves some records updated and
    the rest as they were; running it again finishes the job. ``progress`` is told the
    records done after each step. ``max_removed``: with ``replace``, the share of the
    stored records it may remove; beyond it, :class:`TooManyRemoved` before any write."""
    counts = {"records": 0, "items": 0, "written": 0, "removed": 0}
    gone: list[str] = []
    if replace:
        async with engine.connect() as conn:
            gone, stored = await _not_in(conn, {r.record_id for r in records})
        if max_removed is not None and gone and len(gone) > max_removed * stored:
            raise TooManyRemoved(len(gone), stored, max_removed)
    for n, chunk in enumerate(_chunks(records, step), 1):
        async with engine.begin() as conn:
            done = await _write_records(conn, chunk, now)
        for key, value in done.items():
            counts[key] += value
        if progress is not None:
            progress(counts["records"])
        if n & (n - 1) == 0 and engine.dialect.name == "postgresql":
            # As the tables grow from few rows, statistics that still say "few" make
            # each step's lookups read whole tables (quadratic time).
            async with engine.begin() as conn:
                await analyze(conn)
        await asyncio.sleep(STEP_PAUSE)
    for chunk in _chunks(gone, step):  # the records no longer in the file, with replace
        async with engine.begin() as conn:
            counts["removed"] += await _delete_records(conn, chunk)
        await asyncio.sleep(STEP_PAUSE)
    return counts


def _rows_of(record: HoldingsRecord, now: datetime) -> tuple[dict, list[dict], list[dict]]:
    """A record's rows in the three holdings tables."""
    record_row = dict(record_id=record.record_id, title=record.title, author=record.author,
                      title_key=title_key(record.title), author_key=author_key(record.author),
                      updated_at=now)
    item_rows = [dict(record_id=record.record_id, barcode=i.barcode,
                      call_number=i.call_number, location=i.location, status=i.status,
                      due_date=i.due_date, updated_at=now) for i in record.items]
    return record_row, _identifier_rows(record), item_rows


def _same_as_stored(rows: tuple[dict, list[dict], list[dict]],
                    stored: dict[str, Any] | None) -> bool:
    """Whether a record's rows (:func:`_rows_of`) say what is stored (:func:`_stored`)."""
    record_row, identifier_rows, item_rows = rows
    return stored is not None and stored["record"] == (record_row["title"],
                                                       record_row["author"]) and (
        stored["identifiers"] == {(r["kind"], r["value"]) for r in identifier_rows}) and (
        stored["items"] == {(r["barcode"], r["call_number"], r["location"], r["status"],
                             r["due_date"]) for r in item_rows})


async def _stored(conn: AsyncConnection, record_ids: list[str]) -> dict[str, dict[str, Any]]:
    """The stored versions of these records, in the form :func:`_same_as_stored` compares."""
    stored: dict[str, dict[str, Any]] = {}
    rows = await conn.execute(select(_records.c.record_id, _records.c.title, _records.c.author)
                              .where(_records.c.record_id.in_(record_ids)))
    for r in rows:
        stored[r.record_id] = {"record": (r.title, r.author), "identifiers": set(), "items": set()}
    if not stored:
        return stored
    found = list(stored)
    for r in await conn.execute(select(_ident.c.record_id, _ident.c.kind, _ident.c.value)
                                .where(_ident.c.record_id.in_(found))):
        stored[r.record_id]["identifiers"].add((r.kind, r.value))
    for r in await conn.execute(
            select(_items.c.record_id, _items.c.barcode, _items.c.call_number,
                   _items.c.location, _items.c.status, _items.c.due_date)
            .where(_items.c.record_id.in_(found))):
        stored[r.record_id]["items"].add(
            (r.barcode, r.call_number, r.location, r.status, r.due_date))
    return stored


async def _write_records(conn: AsyncConnection, records: list[HoldingsRecord], now: datetime
                         ) -> dict[str, int]:
    """Store these records (a few thousand at most), each replacing its stored version
    unless that is the same already."""
    stored: dict[str, dict[str, Any]] = {}
    for chunk in _chunks([r.record_id for r in records], _DELETE_CHUNK):
        stored.update(await _stored(conn, chunk))
    changed = [rows for rows in (_rows_of(r, now) for r in records)
               if not _same_as_stored(rows, stored.get(rows[0]["record_id"]))]
    await _delete_records(conn, [rows[0]["record_id"] for rows in changed
                                 if rows[0]["record_id"] in stored])
    item_rows = [item for rows in changed for item in rows[2]]
    # A barcode moving to another record: the file is right.
    for chunk in _chunks([i["barcode"] for i in item_rows], _DELETE_CHUNK):
        await conn.execute(delete(_items).where(_items.c.barcode.in_(chunk)))
    for table, rows in ((_records, [rows[0] for rows in changed]),
                        (_ident, [i for rows in changed for i in rows[1]]),
                        (_items, item_rows)):
        for chunk in _chunks(rows, 1000):
            await conn.execute(insert(table), chunk)
    return {"records": len(records), "items": sum(len(r.items) for r in records),
            "written": len(changed)}


async def _not_in(conn: AsyncConnection, keep: set[str]) -> tuple[list[str], int]:
    """The stored records' ids that are not in ``keep``, and how many records are stored."""
    ids = (await conn.execute(select(_records.c.record_id))).scalars().all()
    return [record_id for record_id in ids if record_id not in keep], len(ids)


async def _delete_records(conn: AsyncConnection, record_ids: list[str]) -> int:
    """Delete these records, _DELETE_CHUNK a statement; their identifiers and items go
    with them (ON DELETE CASCADE). Returns how many were deleted."""
    deleted = 0
    for chunk in _chunks(record_ids, _DELETE_CHUNK):
        result = await conn.execute(delete(_records).where(_records.c.record_id.in_(chunk)))
        deleted += result.rowcount
    return deleted


async def analyze(conn: AsyncConnection) -> None:
    """PostgreSQL: the holdings tables' statistics, gathered after an import. Until
    autovacuum analyses a freshly loaded table, the planner may read all of it for the
    locate query. SQLite is left as the node leaves it everywhere, without statistics."""
    if conn.dialect.name == "postgresql":
        await conn.exec_driver_sql("ANALYZE " + ", ".join(table.name for table in _TABLES))


def _chunks(rows: list, size: int):
    for i in range(0, len(rows), size):
        yield rows[i:i + size]


_ident, _records, _items = t.holdings_identifiers, t.holdings_records, t.holdings_items
CANDIDATE_LIMIT = 50


def _first_per_key(table, conditions, *key_columns):
    """Ids of ``table`` rows meeting ``conditions``: the first CANDIDATE_LIMIT by record
    id for each value of ``key_columns``. A request's own first CANDIDATE_LIMIT
    candidates are always among the union of its keys' first ones."""
    ranked = select(table.c.record_id, func.row_number().over(
        partition_by=key_columns, order_by=table.c.record_id).label("rank")).where(
        *conditions).subquery()
    return select(ranked.c.record_id).where(ranked.c.rank <= CANDIDATE_LIMIT)


#: Joins a pair of keys into one value, so that pairs go as one list (bulk.in_list):
#: no key holds it (identifier kinds are names; values, titles and authors are
#: normalised, their words joined by spaces).
_PAIR = "\x1f"


def _pair(first, second):
    return first + _PAIR + second


def _candidate_ids():
    """Record ids any request of a batch may match: by identifier, by title alone, or
    by title and author (records without an author too), each with its position
    in the database's order of record ids."""
    by_identifier = _first_per_key(_ident, [
        # The pairs alone are exact but scan on SQLite; kind IN and value IN reach the index.
        bulk.in_list(_ident.c.kind, "kinds"),
        bulk.in_list(_ident.c.value, "values"),
        bulk.in_list(_pair(_ident.c.kind, _ident.c.value), "keys"),
    ], _ident.c.kind, _ident.c.value)
    by_title = _first_per_key(_records, [
        bulk.in_list(_records.c.title_key, "titles"),
    ], _records.c.title_key)
    by_title_and_author = _first_per_key(_records, [
        bulk.in_list(_records.c.title_key, "titles_with_author"),
        or_(bulk.in_list(_pair(_records.c.title_key, _records.c.author_key),
                         "titles_and_authors"), _records.c.author_key.is_(None)),
    ], _records.c.title_key, _records.c.author_key)
    ids = union(by_identifier, by_title, by_title_and_author).subquery()
    # The position follows the database's collation, as the LIMIT of a query per
    # request did: it decides which CANDIDATE_LIMIT records a request gets.
    return select(ids.c.record_id, func.row_number().over(order_by=ids.c.record_id)
                  .label("position")).cte("candidate_ids")


def _candidates_query():
    """ONE query for the candidate records of a batch: a row per item (identifier
    columns NULL) and a row per identifier (the others NULL)."""
    ids = _candidate_ids()
    no_text, no_date, no_number = cast(null(), String), cast(null(), Date), cast(null(), Integer)
    records_items = (
        select(_records.c.record_id, ids.c.position, _records.c.title, _records.c.author,
               _records.c.title_key, _records.c.author_key,
               no_text.label("kind"), no_text.label("value"), _items.c.barcode,
               _items.c.call_number, _items.c.location, _items.c.status, _items.c.due_date)
        .select_from(ids.join(_records, _records.c.record_id == ids.c.record_id)
                     .outerjoin(_items, _items.c.record_id == _records.c.record_id))
    )
    identifiers = (
        select(_ident.c.record_id, no_number, no_text, no_text, no_text, no_text,
               _ident.c.kind, _ident.c.value, no_text, no_text, no_text, no_text, no_date)
        .select_from(ids.join(_ident, _ident.c.record_id == ids.c.record_id))
    )
    return union_all(records_items, identifiers)


_CANDIDATES = _candidates_query()


def _wanted(keys: LookupKeys) -> set[tuple[str, str]]:
    """The (kind, value) identifier pairs a request is looked up by."""
    wanted = set(keys.record_ids)
    wanted.update(("isbn", v) for v in keys.isbns if len(v) == 13)
    wanted.update(("issn", v) for v in keys.issns)
    if keys.supplier_unique_record_id:
        wanted.add(("local", keys.supplier_unique_record_id))
    return wanted


class _Found:
    """The candidate records of a batch, indexed by what requests look them up by."""

    def __init__(self, rows) -> None:
        self.position: dict[str, int] = {}
        self.by_identifier: dict[tuple[str, str], list[str]] = defaultdict(list)
        self.by_title: dict[str, list[tuple[str, str | None]]] = defaultdict(list)
        titles: dict[str, tuple[str | None, str | None]] = {}  # record id -> title, author
        idents: dict[str, dict[str, list[str]]] = {}
        items: dict[str, list[HoldingsItem]] = {}
        # Rows unpacked by position (_candidates_query's columns): a batch has dozens,
        # and a Row's attributes cost a lookup each.
        for row in rows:
            (record_id, position, title, author, title_key, author_key, kind, value,
             barcode, call_number, location, status, due_date) = row
            if kind is not None:
                idents.setdefault(record_id, {}).setdefault(kind, []).append(value)
                self.by_identifier[kind, value].append(record_id)
                continue
            if record_id not in titles:
                titles[record_id] = title, author
                self.position[record_id] = position
                if title_key is not None:
                    self.by_title[title_key].append((record_id, author_key))
            if barcode is not None:
                items.setdefault(record_id, []).append(HoldingsItem(
                    barcode=barcode, call_number=call_number, location=location,
                    status=status, due_date=due_date))
        self.records = {}
        for record_id, (title, author) in titles.items():
            kinds = idents.get(record_id, {})
            self.records[record_id] = HoldingsRecord(
                record_id=record_id, title=title, author=author,
                isbns=tuple(kinds.get("isbn", ())), issns=tuple(kinds.get("issn", ())),
                oclc=tuple(kinds.get("oclc", ())), lccn=tuple(kinds.get("lccn", ())),
                items=tuple(sorted(items.get(record_id, ()), key=attrgetter("barcode"))))

    def for_request(self, keys: LookupKeys, wanted: set[tuple[str, str]]
                    ) -> list[HoldingsRecord]:
        """The request's candidates: its first CANDIDATE_LIMIT in the database's order."""
        ids = {record_id for pair in wanted for record_id in self.by_identifier.get(pair, ())}
        if keys.title_key:
            ids.update(record_id for record_id, author in self.by_title.get(keys.title_key, ())
                       if not keys.author_key or author in (None, keys.author_key))
        first = sorted(ids, key=self.position.__getitem__)[:CANDIDATE_LIMIT]
        return [self.records[record_id] for record_id in sorted(first)]


async def candidates(conn: AsyncConnection, keys: LookupKeys) -> list[HoldingsRecord]:
    """Records that may match the request, each with its identifiers and items."""
    return (await candidates_many(conn, [keys]))[0]


async def candidates_many(conn: AsyncConnection, keys_list: list[LookupKeys]
                          ) -> list[list[HoldingsRecord]]:
    """Each request's :func:`candidates`, read in ONE query for the whole list
    (none when no request has anything to look up by)."""
    wanted = [_wanted(keys) for keys in keys_list]
    pairs = set().union(*wanted)
    titles = {k.title_key for k in keys_list if k.title_key and not k.author_key}
    titles_and_authors = {(k.title_key, k.author_key) for k in keys_list
                          if k.title_key and k.author_key}
    if not pairs and not titles and not titles_and_authors:
        return [[] for _ in keys_list]
    found = _Found(await conn.execute(_CANDIDATES, {
        "keys": sorted(_pair(*pair) for pair in pairs), "kinds": sorted({k for k, _ in pairs}),
        "values": sorted({v for _, v in pairs}), "titles": sorted(titles),
        "titles_with_author": sorted({title for title, _ in titles_and_authors}),
        "titles_and_authors": sorted(_pair(*pair) for pair in titles_and_authors),
    }))
    return [found.for_request(keys, w) for keys, w in zip(keys_list, wanted, strict=True)]


async def summary(conn: AsyncConnection) -> dict[str, Any]:
    """What the admin screen says of the holdings: records, items, items per status and
    when a record last changed (the last import that changed something)."""
    statuses = dict((await conn.execute(
        select(_items.c.status, func.count()).group_by(_items.c.status))).all())
    records, changed = (await conn.execute(
        select(func.count(), func.max(_records.c.updated_at)))).one()
    return {"records": records, "items": sum(statuses.values()), "items_by_status": statuses,
            "last_changed": changed.isoformat() if changed is not None else None}


async def count(conn: AsyncConnection) -> dict[str, int]:
    n = {}
    for name, table in (("records", t.holdings_records), ("items", t.holdings_items)):
        n[name] = (await conn.execute(select(func.count()).select_from(table))).scalar_one()
    return n
