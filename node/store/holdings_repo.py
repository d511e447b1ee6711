"""The library's holdings in the database: import, and the lookups auto-locate needs.

Identifiers are stored normalised (ISBN-13, ISSN without hyphen, OCLC
number without prefix, normalised LCCN) so that a lookup is an indexed
equality match; the pure matching itself is ``node.supplier.locate``.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime

from sqlalchemy import delete, func, insert, or_, select
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


async def candidates(conn: AsyncConnection, keys: LookupKeys, *, limit: int = 50
                     ) -> list[HoldingsRecord]:
    """Records that may match the request, each with its identifiers and items."""
    ident = t.holdings_identifiers
    records = t.holdings_records
    wanted = list(keys.record_ids)
    wanted += [("isbn", v) for v in keys.isbns if len(v) == 13]
    wanted += [("issn", v) for v in keys.issns]
    if keys.supplier_unique_record_id:
        wanted.append(("local", keys.supplier_unique_record_id))
    ids: set[str] = set()
    if wanted:
        clauses = [(ident.c.kind == k) & (ident.c.value == v) for k, v in wanted]
        rows = await conn.execute(select(ident.c.record_id).where(or_(*clauses)).limit(limit))
        ids.update(r.record_id for r in rows)
    if keys.title_key:
        stmt = select(records.c.record_id).where(records.c.title_key == keys.title_key)
        if keys.author_key:
            stmt = stmt.where(or_(records.c.author_key == keys.author_key,
                                  records.c.author_key.is_(None)))
        ids.update(r.record_id for r in await conn.execute(stmt.limit(limit)))
    return await _load(conn, sorted(ids)[:limit])


async def _load(conn: AsyncConnection, ids: list[str]) -> list[HoldingsRecord]:
    if not ids:
        return []
    idents: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    for row in await conn.execute(select(t.holdings_identifiers).where(
            t.holdings_identifiers.c.record_id.in_(ids))):
        idents[row.record_id][row.kind].append(row.value)
    items: dict[str, list[HoldingsItem]] = defaultdict(list)
    for row in await conn.execute(select(t.holdings_items).where(
            t.holdings_items.c.record_id.in_(ids)).order_by(t.holdings_items.c.barcode)):
        items[row.record_id].append(HoldingsItem(
            barcode=row.barcode, call_number=row.call_number, location=row.location,
            status=row.status, due_date=row.due_date))
    found = []
    for row in await conn.execute(select(t.holdings_records).where(
            t.holdings_records.c.record_id.in_(ids))):
        i = idents[row.record_id]
        found.append(HoldingsRecord(
            record_id=row.record_id, title=row.title, author=row.author,
            isbns=tuple(i["isbn"]), issns=tuple(i["issn"]), oclc=tuple(i["oclc"]),
            lccn=tuple(i["lccn"]), items=tuple(items[row.record_id])))
    return found


async def count(conn: AsyncConnection) -> dict[str, int]:
    n = {}
    for name, table in (("records", t.holdings_records), ("items", t.holdings_items)):
        n[name] = (await conn.execute(select(func.count()).select_from(table))).scalar_one()
    return n
