"""The library's holdings in the database: import, and the lookups auto-locate needs.

Identifiers are stored normalised (ISBN-13, ISSN without hyphen, OCLC
number without prefix, normalised LCCN) so that a lookup is an indexed
equality match; the pure matching itself is ``node.supplier.locate``.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime
from typing import Any

from sqlalchemy import (
    Date,
    String,
    bindparam,
    cast,
    delete,
    func,
    insert,
    null,
    or_,
    select,
    tuple_,
    union,
    union_all,
)
from sqlalchemy.ext.asyncio import AsyncConnection

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
from . import tables as t

_NORMALISE = {
    "isbn": (lambda r: r.isbns, normalise_isbn),
    "issn": (lambda r: r.issns, normalise_issn),
    "oclc": (lambda r: r.oclc, normalise_oclc),
    "lccn": (lambda r: r.lccn, normalise_lccn),
}


def _identifier_rows(record: HoldingsRecord) -> list[dict]:
    rows = {("local", record.record_id)}
    for kind, (values, normalise) in _NORMALISE.items():
        for value in values(record):
            normal = normalise(value)
            if normal:
                rows.add((kind, normal))
    return [{"record_id": record.record_id, "kind": k, "value": v} for k, v in sorted(rows)]


async def import_records(conn: AsyncConnection, records: list[HoldingsRecord], *,
                         replace: bool, now: datetime) -> dict[str, int]:
    """Load records and their items. ``replace``: the file is the whole catalogue;
    otherwise merge: records in the file replace their earlier versions, others stay."""
    if replace:
        for table in (t.holdings_items, t.holdings_identifiers, t.holdings_records):
            await conn.execute(delete(table))
    else:
        ids = [r.record_id for r in records]
        for chunk in _chunks(ids, 500):
            await conn.execute(delete(t.holdings_records).where(
                t.holdings_records.c.record_id.in_(chunk)))
    record_rows, identifier_rows, item_rows = [], [], []
    for r in records:
        record_rows.append(dict(
            record_id=r.record_id, title=r.title, author=r.author,
            title_key=title_key(r.title), author_key=author_key(r.author),
            updated_at=now,
        ))
        identifier_rows.extend(_identifier_rows(r))
        item_rows.extend(dict(
            record_id=r.record_id, barcode=i.barcode, call_number=i.call_number,
            location=i.location, status=i.status, due_date=i.due_date, updated_at=now,
        ) for i in r.items)
    if not replace and item_rows:
        # A barcode moving to another record: the file is right.
        for chunk in _chunks([i["barcode"] for i in item_rows], 500):
            await conn.execute(delete(t.holdings_items).where(
                t.holdings_items.c.barcode.in_(chunk)))
    for table, rows in ((t.holdings_records, record_rows),
                        (t.holdings_identifiers, identifier_rows),
                        (t.holdings_items, item_rows)):
        for chunk in _chunks(rows, 1000):
            await conn.execute(insert(table), chunk)
    return {"records": len(record_rows), "items": len(item_rows)}


def _chunks(rows: list, size: int):
    for i in range(0, len(rows), size):
        yield rows[i:i + size]


_ident, _records, _items = t.holdings_identifiers, t.holdings_records, t.holdings_items
CANDIDATE_LIMIT = 50


def _candidate_ids(by_title: bool, by_author: bool):
    """Record ids a request may match: by identifier, or by title (and author)."""
    parts = [select(_ident.c.record_id).where(
        # The pairs alone are exact but scan on SQLite; kind IN and value IN reach the index.
        _ident.c.kind.in_(bindparam("kinds", expanding=True)),
        _ident.c.value.in_(bindparam("values", expanding=True)),
        tuple_(_ident.c.kind, _ident.c.value).in_(bindparam("keys", expanding=True)))]
    if by_title:
        by_title_stmt = select(_records.c.record_id).where(
            _records.c.title_key == bindparam("title_key"))
        if by_author:
            by_title_stmt = by_title_stmt.where(or_(
                _records.c.author_key == bindparam("author_key"), _records.c.author_key.is_(None)))
        parts.append(by_title_stmt)
    return union(*parts).order_by("record_id").limit(CANDIDATE_LIMIT)


def _candidates_query(by_title: bool, by_author: bool):
    """ONE query for the candidate records: a row per item (identifier columns NULL)
    and a row per identifier (item columns NULL)."""
    ids = _candidate_ids(by_title, by_author)
    no_text, no_date = cast(null(), String), cast(null(), Date)
    records_items = (
        select(_records.c.record_id, _records.c.title, _records.c.author,
               no_text.label("kind"), no_text.label("value"), _items.c.barcode,
               _items.c.call_number, _items.c.location, _items.c.status, _items.c.due_date)
        .select_from(_records.outerjoin(_items, _items.c.record_id == _records.c.record_id))
        .where(_records.c.record_id.in_(ids))
    )
    identifiers = select(_ident.c.record_id, no_text, no_text, _ident.c.kind, _ident.c.value,
                         no_text, no_text, no_text, no_text, no_date).where(
        _ident.c.record_id.in_(ids))
    return union_all(records_items, identifiers)


_CANDIDATES = {(title, author): _candidates_query(title, author)
               for title in (False, True) for author in (False, True) if title or not author}


async def candidates(conn: AsyncConnection, keys: LookupKeys) -> list[HoldingsRecord]:
    """Records that may match the request, each with its identifiers and items."""
    wanted = list(keys.record_ids)
    wanted += [("isbn", v) for v in keys.isbns if len(v) == 13]
    wanted += [("issn", v) for v in keys.issns]
    if keys.supplier_unique_record_id:
        wanted.append(("local", keys.supplier_unique_record_id))
    if not wanted and not keys.title_key:
        return []
    by_title = bool(keys.title_key)
    rows = await conn.execute(_CANDIDATES[by_title, by_title and bool(keys.author_key)], {
        "keys": wanted, "kinds": sorted({k for k, _ in wanted}),
        "values": sorted({v for _, v in wanted}),
        "title_key": keys.title_key, "author_key": keys.author_key,
    })
    records: dict[str, Any] = {}
    idents: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    items: dict[str, list[HoldingsItem]] = defaultdict(list)
    for row in rows:
        if row.kind is not None:
            idents[row.record_id][row.kind].append(row.value)
            continue
        records[row.record_id] = row
        if row.barcode is not None:
            items[row.record_id].append(HoldingsItem(
                barcode=row.barcode, call_number=row.call_number, location=row.location,
                status=row.status, due_date=row.due_date))
    return [HoldingsRecord(
        record_id=record_id, title=row.title, author=row.author,
        isbns=tuple(idents[record_id]["isbn"]), issns=tuple(idents[record_id]["issn"]),
        oclc=tuple(idents[record_id]["oclc"]), lccn=tuple(idents[record_id]["lccn"]),
        items=tuple(sorted(items[record_id], key=lambda i: i.barcode)))
        for record_id, row in sorted(records.items())]


async def count(conn: AsyncConnection) -> dict[str, int]:
    n = {}
    for name, table in (("records", t.holdings_records), ("items", t.holdings_items)):
        n[name] = (await conn.execute(select(func.count()).select_from(table))).scalar_one()
    return n
