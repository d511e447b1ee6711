"""Auto-locate for a batch (issue 8): ``candidates_many`` finds, in ONE statement, what
``candidates`` finds for each request, on SQLite and PostgreSQL, through indexes only."""

from __future__ import annotations

from datetime import UTC, datetime

from node.store import holdings_repo
from node.supplier.locate import HoldingsItem, HoldingsRecord, LookupKeys
from tests.store.statements import explain, statements_of

NOW = datetime(2026, 5, 4, 10, 0, tzinfo=UTC)
KARAMAZOV, KARAMAZOV_10 = "9780140449242", "0140449248"

RECORDS = [
    HoldingsRecord(record_id="r1", title="The Brothers Karamazov", author="Dostoyevsky, Fyodor",
                   isbns=("0-14-044924-8",), oclc=("(OCoLC)ocm12345",),
                   items=(HoldingsItem(barcode="B2", status="on_loan"),
                          HoldingsItem(barcode="B1", call_number="PG3326", location="MAIN"))),
    HoldingsRecord(record_id="r2", title="Moby Dick", author="Melville, Herman",
                   isbns=("9780140449136",), lccn=("n 78-890351",),
                   items=(HoldingsItem(barcode="B3"),)),
    HoldingsRecord(record_id="r3", title="Moby-Dick; or, The Whale", items=(
        HoldingsItem(barcode="B4", status="missing"),)),
    HoldingsRecord(record_id="r4", title="Moby Dick", author="Someone Else"),
    HoldingsRecord(record_id="r5", title="Nature", issns=("0028-792X",), isbns=(
        "9780140449136",), items=(HoldingsItem(barcode="B5"),)),
    # More records of one title and author than a request may be offered.
    *(HoldingsRecord(record_id=f"p{n:02d}", title="Poems", author="Anon" if n % 2 else None,
                     items=(HoldingsItem(barcode=f"P{n:02d}"),)) for n in range(60)),
]

KEYS = [
    LookupKeys(isbns=(KARAMAZOV, KARAMAZOV_10), title_key="karamazov brothers"),
    LookupKeys(isbns=("9780140449136",)),  # two records share it
    LookupKeys(issns=("0028792X",)),
    LookupKeys(record_ids=(("oclc", "12345"), ("lccn", "n78890351"))),
    LookupKeys(record_ids=(("local", "r4"),)),
    LookupKeys(supplier_unique_record_id="r3", title_key="moby dick"),
    LookupKeys(title_key="moby dick"),
    LookupKeys(title_key="moby dick", author_key="melville"),
    LookupKeys(title_key="nature", author_key="nobody"),
    LookupKeys(title_key="poems"),
    LookupKeys(title_key="poems", author_key="anon", record_ids=(("local", "p59"),)),
    LookupKeys(isbns=("9780000000002",), issns=("12345679",), title_key="unheld"),
    LookupKeys(),
    LookupKeys(record_ids=(("local", "r1"),)),  # the same record as the first request
]


async def imported(engine) -> None:
    async with engine.begin() as conn:
        await holdings_repo.import_records(conn, RECORDS, replace=True, now=NOW)


async def test_one_statement_finds_what_each_request_finds_alone(migrated_engine):
    await imported(migrated_engine)
    async with migrated_engine.connect() as conn:
        one_by_one = [await holdings_repo.candidates(conn, keys) for keys in KEYS]
        async with statements_of(migrated_engine) as seen:
            batch = await holdings_repo.candidates_many(conn, KEYS)
    assert len(seen) == 1
    assert batch == one_by_one
    ids = [[r.record_id for r in found] for found in batch]
    assert ids[:9] == [["r1"], ["r2", "r5"], ["r5"], ["r1", "r2"], ["r4"], ["r2", "r3", "r4"],
                       ["r2", "r3", "r4"], ["r2", "r3"], ["r5"]]  # no author: may be theirs
    assert ids[9] == [f"p{n:02d}" for n in range(50)]
    assert ids[10] == [f"p{n:02d}" for n in range(50)]  # the cap holds p59 back
    assert ids[11:] == [[], [], ["r1"]]
    karamazov = batch[0][0]
    assert karamazov == HoldingsRecord(
        record_id="r1", title="The Brothers Karamazov", author="Dostoyevsky, Fyodor",
        isbns=(KARAMAZOV,), oclc=("12345",), items=(
            HoldingsItem(barcode="B1", call_number="PG3326", location="MAIN"),
            HoldingsItem(barcode="B2", status="on_loan")))


async def test_nothing_to_look_up_runs_no_statement(migrated_engine):
    async with migrated_engine.connect() as conn:
        async with statements_of(migrated_engine) as seen:
            assert await holdings_repo.candidates_many(conn, [LookupKeys(), LookupKeys()]) \
                == [[], []]
            assert await holdings_repo.candidates_many(conn, []) == []
    assert seen == []


async def test_the_batch_query_reads_the_holdings_through_indexes(migrated_engine):
    await imported(migrated_engine)
    async with migrated_engine.connect() as conn:
        async with statements_of(migrated_engine) as seen:
            await holdings_repo.candidates_many(conn, KEYS)
        ((statement, parameters),) = seen
        plan = await explain(conn, statement, parameters)
    assert "SCAN holdings_" not in plan and "Seq Scan on holdings_" not in plan, plan
    assert "holdings_identifiers" in plan and "holdings_records" in plan, plan
