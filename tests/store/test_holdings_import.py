"""Holdings import on SQLite and PostgreSQL: in one transaction (``import_records``) or
committed a few records at a time (``import_in_steps``, what ``holdings import`` runs),
with the same result; records stored as the file has them are not written again."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest
from sqlalchemy import select

from node.store import holdings_repo
from node.store.tables import holdings_identifiers, holdings_items, holdings_records
from node.supplier.locate import HoldingsItem, HoldingsRecord

T0 = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
T1 = T0 + timedelta(days=1)


def isbn(n: int) -> str:
    first12 = f"978{n:09d}"
    total = sum(int(c) * (3 if k % 2 else 1) for k, c in enumerate(first12))
    return first12 + str(-total % 10)


def book(n: int, *barcodes: str, title: str | None = None, status: str = "available",
         due: date | None = None) -> HoldingsRecord:
    return HoldingsRecord(
        record_id=f"r{n}", title=title or f"Book {n}", author="Someone",
        isbns=(isbn(n),),
        items=tuple(HoldingsItem(barcode=b, call_number=f"QA {n}", location="MAIN",
                                 status=status, due_date=due) for b in barcodes))


async def stored(engine) -> dict[str, tuple]:
    """record id -> (title, updated_at, identifiers, items as (barcode, status, due))."""
    async with engine.connect() as conn:
        records = (await conn.execute(select(holdings_records))).all()
        idents = (await conn.execute(select(holdings_identifiers))).all()
        items = (await conn.execute(select(holdings_items))).all()
    return {r.record_id: (
        r.title, r.updated_at,
        sorted((i.kind, i.value) for i in idents if i.record_id == r.record_id),
        sorted((i.barcode, i.status, i.due_date) for i in items if i.record_id == r.record_id),
    ) for r in records}


async def run(engine, records, *, replace: bool, now: datetime, steps: bool):
    if steps:
        return await holdings_repo.import_in_steps(engine, records, replace=replace, now=now,
                                                   step=2)
    async with engine.begin() as conn:
        return await holdings_repo.import_records(conn, records, replace=replace, now=now)


@pytest.mark.parametrize("steps", [True, False], ids=["in steps", "one transaction"])
async def test_import_replaces_what_changed_and_leaves_the_rest_unwritten(migrated_engine,
                                                                         steps):
    first = [book(1, "B1", "B2"), book(2, "B3"), book(3, "B4"), book(4, "B5"), book(5)]
    counts = await run(migrated_engine, first, replace=False, now=T0, steps=steps)
    assert counts == {"records": 5, "items": 5, "written": 5, "removed": 0}
    before = await stored(migrated_engine)
    assert before["r1"] == ("Book 1", T0, [("isbn", isbn(1)), ("local", "r1")],
                            [("B1", "available", None), ("B2", "available", None)])

    # The whole catalogue again: r2 has a new title, r3's item is out, r4's barcode B5
    # moved to the new r6 (in another step), r5 is gone.
    due = date(2026, 12, 24)
    second = [book(1, "B1", "B2"), book(2, "B3", title="Book two"), book(3, "B4", status="on_loan",
              due=due), book(4), book(6, "B5")]
    counts = await run(migrated_engine, second, replace=True, now=T1, steps=steps)
    assert counts == {"records": 5, "items": 5, "written": 4, "removed": 1}
    after = await stored(migrated_engine)
    assert set(after) == {"r1", "r2", "r3", "r4", "r6"}
    assert after["r1"] == before["r1"]  # unchanged: not written (its time is the first import's)
    assert after["r2"][:2] == ("Book two", T1)
    assert after["r3"][3] == [("B4", "on_loan", due)]
    assert after["r4"][3] == [] and after["r6"][3] == [("B5", "available", None)]

    # Merging a file of one record touches that record only.
    counts = await run(migrated_engine, [book(4, "B7")], replace=False, now=T1, steps=steps)
    assert counts == {"records": 1, "items": 1, "written": 1, "removed": 0}
    merged = await stored(migrated_engine)
    assert merged["r4"][3] == [("B7", "available", None)]
    assert {k: v for k, v in merged.items() if k != "r4"} == {
        k: v for k, v in after.items() if k != "r4"}


async def test_a_barcode_moving_to_a_record_of_an_earlier_step(migrated_engine):
    await run(migrated_engine, [book(1), book(2), book(3, "B9")], replace=False, now=T0,
              steps=True)
    # B9 moves from r3 (second step) to r1 (first step), and r3 keeps nothing.
    await run(migrated_engine, [book(1, "B9"), book(2), book(3)], replace=True, now=T1,
              steps=True)
    items = {k: v[3] for k, v in (await stored(migrated_engine)).items()}
    assert items == {"r1": [("B9", "available", None)], "r2": [], "r3": []}


async def test_a_replace_removing_too_much_is_refused_before_any_write(migrated_engine):
    await run(migrated_engine, [book(n, f"B{n}") for n in range(1, 6)], replace=False, now=T0,
              steps=True)
    before = await stored(migrated_engine)
    # A partial export: two records, one of them changed; three of five would go.
    partial = [book(1, "B1", title="Changed"), book(2, "B2")]
    with pytest.raises(holdings_repo.TooManyRemoved) as refused:
        await holdings_repo.import_in_steps(migrated_engine, partial, replace=True, now=T1,
                                            max_removed=0.5)
    assert (refused.value.removed, refused.value.stored) == (3, 5)
    assert await stored(migrated_engine) == before  # not even the changed record
    counts = await holdings_repo.import_in_steps(migrated_engine, partial, replace=True, now=T1,
                                                 max_removed=0.6)
    assert counts["removed"] == 3 and counts["written"] == 1
