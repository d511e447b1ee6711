"""Migration 0002: agency ids written before it are casefolded, so the new equality
lookup (repo.agency_key) finds the requests they belong to."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import insert, select

from node.store import repo
from node.store import tables as t
from node.store.db import create_engine, migrate_async


async def test_existing_agency_ids_are_casefolded(db_url):
    engine = create_engine(db_url)
    try:
        await migrate_async(engine, "0001")
        now = datetime(2026, 11, 25, tzinfo=UTC)
        async with engine.begin() as conn:
            for n, agency in enumerate(("ISIL:XX-Peer", "isil:xx-other")):
                await conn.execute(insert(t.transactions).values(
                    role="lending", public_id=f"L-{n}", requesting_agency_id=agency,
                    requesting_request_id="r1", status="NEW", created_at=now, updated_at=now,
                    state={}))
        await migrate_async(engine)
        async with engine.connect() as conn:
            stored = sorted(r.requesting_agency_id for r in await conn.execute(
                select(t.transactions.c.requesting_agency_id)))
            assert stored == ["isil:xx-other", "isil:xx-peer"]
            found = await repo.lock_transaction(conn, role="lending",
                                                requesting_agency_id="ISIL:XX-PEER",
                                                requesting_request_id="r1")
            assert found is not None and found.public_id == "L-0"
    finally:
        await engine.dispose()
