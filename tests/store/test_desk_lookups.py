"""The staff desk's lookups (issue 8) on SQLite and PostgreSQL: each answers in any
case, and each is read through an index, never by scanning a table (the query plan
says so; PostgreSQL is told to avoid sequential scans, as on a big table).
"""

from __future__ import annotations

import functools
from datetime import UTC, datetime, timedelta

from sqlalchemy import insert

from node.store import borrowing_repo, lending_repo, outbox_repo, partner_status, search
from node.store.tables import holdings_items, holdings_records, outbox, transactions
from tests.store.statements import explain, statements_of

T0 = datetime(2026, 5, 4, 10, 0, tzinfo=UTC)


async def add(conn, n: int, *, role: str, status: str, state: dict | None = None,
              partner: str = "ISIL:XX-P1", supplying_request_id: str | None = None) -> None:
    when = T0 + timedelta(minutes=n)
    await conn.execute(insert(transactions).values(
        role=role, public_id=f"{role[0].upper()}-{n}", partner=partner,
        requesting_agency_id="isil:xx-p1", requesting_request_id=f"REQ-{n}",
        supplying_request_id=supplying_request_id, status=status, title=f"Title {n}",
        created_at=when, updated_at=when, state=state or {}))


async def plans(engine, run) -> str:
    """``run(conn)``'s statements, each with its query plan."""
    async with statements_of(engine) as captured, engine.connect() as conn:
        result = await run(conn)
    async with engine.connect() as conn:
        out = [statement + "\n" + await explain(conn, statement, params)
               for statement, params in captured]
    return result, "\n\n".join(out)


def assert_read_by_id(plan: str) -> None:
    """SQLite reads the requests by id from the barcode index's matches, not by walking
    the role's list (which, without statistics, it guesses is short). PostgreSQL's
    choice on a few rows says nothing of a big table: bench/scale.py --desk shows it."""
    if "SEARCH" in plan:
        assert "SEARCH transactions USING INTEGER PRIMARY KEY (rowid=?)" in plan, plan
        assert "SEARCH transactions USING INDEX" not in plan, plan
        assert "SEARCH transactions USING COVERING INDEX" not in plan, plan


def assert_no_scan(plan: str, *tables: str) -> None:
    for table in tables:
        assert f"SCAN {table}\n" not in plan + "\n" and f"SCAN {table} " not in plan, plan
        assert f"Seq Scan on {table}" not in plan, plan


async def test_check_in_finds_a_shipped_item_in_any_case_through_the_barcode_index(
        migrated_engine):
    async with migrated_engine.begin() as conn:
        await add(conn, 1, role="lending", status="SHIPPED",
                  state={"located": {"barcode": "Ab-1"}, "shipped_barcodes": ["Ab-1", "Ab-2"]})
        await add(conn, 2, role="lending", status="WILL_SUPPLY",
                  state={"located": {"barcode": "Ab-3"}})
        await add(conn, 3, role="lending", status="LOAN_COMPLETED",
                  state={"located": {"barcode": "AB-2"}, "shipped_barcodes": ["AB-2"]})

    out, plan = await plans(migrated_engine,
                            lambda c: lending_repo.out_by_barcode(c, " ab-2 "))
    assert [r.public_id for r in out] == ["L-1"]  # L-3 is checked in already
    assert "ix_request_barcodes_lower_barcode" in plan, plan
    assert_no_scan(plan, "transactions", "request_barcodes")
    assert_read_by_id(plan)

    async with migrated_engine.connect() as conn:
        # Located but not shipped: not out, yet known.
        assert await lending_repo.out_by_barcode(conn, "AB-3") == []
        assert [r.public_id for r in await lending_repo.any_by_barcode(conn, "ab-3")] == ["L-2"]
        assert await lending_repo.any_by_barcode(conn, "ab-") == []  # no partial matches

    found, plan = await plans(migrated_engine, lambda c: search.search(
        c, "lending", extra=lending_repo.search_filters(barcode="AB-2")))
    assert [r["id"] for r in found["requests"]] == ["L-3", "L-1"]
    assert "ix_request_barcodes_lower_barcode" in plan, plan
    assert_no_scan(plan, "transactions", "request_barcodes")
    assert_read_by_id(plan)


async def test_a_scanned_holdings_item_is_found_in_any_case_through_an_index(migrated_engine):
    async with migrated_engine.begin() as conn:
        await conn.execute(insert(holdings_records).values(record_id="R1", title="Moby Dick",
                                                           updated_at=T0))
        await conn.execute(insert(holdings_items).values(record_id="R1", barcode="Item-9",
                                                         updated_at=T0))
    item, plan = await plans(migrated_engine, lambda c: lending_repo.item(c, "ITEM-9"))
    assert item.barcode == "Item-9" and item.title == "Moby Dick"
    assert "ix_holdings_items_lower_barcode" in plan, plan
    assert_no_scan(plan, "holdings_items")


async def test_receive_finds_the_lenders_request_id_in_any_case_through_an_index(
        migrated_engine):
    async with migrated_engine.begin() as conn:
        await add(conn, 1, role="borrowing", status="shipped", supplying_request_id="Lend-77")
        await add(conn, 2, role="lending", status="SHIPPED", supplying_request_id="LEND-77")
        await add(conn, 3, role="borrowing", status="unfilled", supplying_request_id="LEND-77")
    found, plan = await plans(migrated_engine,
                              lambda c: borrowing_repo.by_lender_request_id(c, " lend-77 "))
    assert found == [("B-3", "unfilled"), ("B-1", "shipped")]
    assert "ix_transactions_lower_supplying_request_id" in plan, plan
    assert_no_scan(plan, "transactions")


async def test_a_return_scan_finds_the_temporary_barcode_in_any_case_through_an_index(
        migrated_engine):
    async with migrated_engine.begin() as conn:
        await add(conn, 1, role="borrowing", status="received", state={"barcodes": ["Tmp-1"]})
        await add(conn, 2, role="borrowing", status="complete", state={"barcodes": ["TMP-1"]})
        await add(conn, 3, role="lending", status="SHIPPED",
                  state={"located": {"barcode": "tmp-1"}, "shipped_barcodes": ["tmp-1"]})
    found, plan = await plans(migrated_engine, lambda c: borrowing_repo.with_barcode(
        c, "tmp-1", statuses=("received", "complete")))
    assert found == [("B-2", "complete"), ("B-1", "received")]
    assert "ix_request_barcodes_lower_barcode" in plan, plan
    assert_no_scan(plan, "transactions", "request_barcodes")
    assert_read_by_id(plan)
    async with migrated_engine.connect() as conn:
        assert await borrowing_repo.with_barcode(conn, "TMP-1", statuses=("received",)) == [
            ("B-1", "received")]


async def test_the_partner_filter_reads_the_list_in_order_from_an_index(migrated_engine):
    async with migrated_engine.begin() as conn:
        for n in range(1, 7):
            await add(conn, n, role="lending", status="SHIPPED" if n % 2 else "WILL_SUPPLY",
                      partner="ISIL:XX-Mixed" if n % 3 else "ISIL:XX-Other")
    found, plan = await plans(migrated_engine,
                              lambda c: search.search(c, "lending", partner="isil:xx-MIXED"))
    assert [r["id"] for r in found["requests"]] == ["L-5", "L-4", "L-2", "L-1"]
    assert found["facets"] == {"SHIPPED": 2, "WILL_SUPPLY": 2}
    assert "ix_transactions_lower_partner_role_updated_at_id" in plan, plan
    assert_no_scan(plan, "transactions")
    # The page comes in list order from the index: nothing to sort.
    assert "FOR ORDER BY" not in plan and "Sort Key: transactions.updated_at" not in plan, plan
    async with migrated_engine.connect() as conn:
        shipped = await search.search(conn, "lending", partner="ISIL:XX-MIXED", status="SHIPPED")
    assert [r["id"] for r in shipped["requests"]] == ["L-5", "L-1"]


async def test_the_partners_screen_reads_the_outbox_peer_by_peer_through_an_index(
        migrated_engine):
    def row(peer: str, state: str, minute: int, **kw) -> dict:
        at = T0 + timedelta(minutes=minute)
        return {"peer": peer, "url": "http://x/", "kind": "x", "body": b"", "state": state,
                "next_attempt_at": at, "created_at": at, "sent_at": None, "last_error": None,
                "last_http_status": None, "last_attempt_at": None, **kw}

    async with migrated_engine.begin() as conn:
        await conn.execute(insert(outbox), [
            row("ISIL:XX-A", "sent", 1, sent_at=T0 + timedelta(minutes=1)),
            row("ISIL:XX-A", "sent", 2, sent_at=T0 + timedelta(minutes=5),
                last_error="timeout", last_attempt_at=T0 + timedelta(minutes=4)),
            row("ISIL:XX-A", "pending", 3),
            row("ISIL:XX-B", "failed", 4, last_error="HTTP 500", last_http_status=500,
                last_attempt_at=T0 + timedelta(minutes=6)),
            row("ISIL:XX-B", "pending", 5, last_error="refused",
                last_attempt_at=T0 + timedelta(minutes=7)),
            row("ISIL:XX-B", "pending", 6),
        ])
    status, plan = await plans(migrated_engine, partner_status.delivery_status)
    assert status == {
        "ISIL:XX-A": {"last_success_at": T0 + timedelta(minutes=5), "pending": 1, "failed": 0,
                      "last_failure_at": None, "last_error": None, "last_http_status": None},
        "ISIL:XX-B": {"last_success_at": None, "pending": 2, "failed": 1,
                      "last_failure_at": T0 + timedelta(minutes=7), "last_error": "refused",
                      "last_http_status": None},
    }
    assert partner_status.last_outcome(status["ISIL:XX-A"]) == "ok"
    assert partner_status.last_outcome(status["ISIL:XX-B"]) == "failing"
    assert "ix_outbox_peer_state_sent_at" in plan, plan
    assert_no_scan(plan, "outbox")
    async with migrated_engine.connect() as conn:
        await conn.execute(outbox.delete())
        assert await partner_status.delivery_status(conn) == {}


async def test_the_outbox_prune_reads_the_old_deliveries_peer_by_peer_through_an_index(
        migrated_engine):
    async with migrated_engine.begin() as conn:
        await conn.execute(insert(outbox), [
            {"peer": peer, "url": "http://x/", "kind": "x", "body": b"", "state": "sent",
             "next_attempt_at": T0, "created_at": T0, "sent_at": T0 + timedelta(minutes=n)}
            for peer in ("ISIL:XX-A", "ISIL:XX-B") for n in range(3)])
    pruned, plan = await plans(migrated_engine, functools.partial(
        outbox_repo.prune_sent, before=T0 + timedelta(hours=1), limit=100))
    assert pruned == 4  # each peer's newest stays
    assert "ix_outbox_peer_state_sent_at" in plan, plan
    assert_no_scan(plan, "outbox")
