"""node.store.search (staff lists and search) on SQLite and PostgreSQL.

Rows are written with the same columns the store writes; the triggers of migration
0003 must keep the facets, the barcodes and the title words in step with them.
"""

from __future__ import annotations

import asyncio
import random
import re
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import delete, func, insert, select, update

from node.store import search
from node.store.db import create_engine, migrate_async
from node.store.tables import attempts, transactions
from tests.store.statements import explain, statements_of
from tests.store.test_desk_lookups import assert_no_scan, plans

T0 = datetime(2026, 5, 4, 10, 0, tzinfo=UTC)


async def add(conn, n: int, *, role: str = "lending", status: str = "WILL_SUPPLY",
              title: str | None = None, at: datetime | None = None, state: dict | None = None,
              patron_id: str | None = None, needs_attention: bool = False) -> int:
    when = at or T0 + timedelta(minutes=n)
    return (await conn.execute(insert(transactions).values(
        role=role, public_id=f"{role[0].upper()}-{n:04d}", partner="ISIL:XX-P1",
        requesting_agency_id="ISIL:XX-P1", requesting_request_id=f"REQ-{n:04d}",
        supplying_request_id=f"SUP-{n:04d}" if role == "lending" else None,
        status=status, title=title if title is not None else f"Title number {n}",
        patron_id=patron_id, created_at=when, updated_at=when,
        needs_attention=needs_attention, state=state or {},
    ).returning(transactions.c.id))).scalar_one()


async def add_attempt(conn, tx_id: int, requesting_request_id: str) -> None:
    """A borrowing request's first attempt, with its own request id."""
    await conn.execute(insert(attempts).values(
        transaction_id=tx_id, seq=1, partner="ISIL:XX-P2",
        requesting_request_id=requesting_request_id, created_at=T0))


async def find(engine, role: str = "lending", **kw) -> dict:
    async with engine.connect() as conn:
        return await search.search(conn, role, **kw)


def ids(found: dict) -> list[str]:
    return [r["id"] for r in found["requests"]]


async def true_facets(engine, role: str) -> dict[str, int]:
    async with engine.connect() as conn:
        rows = await conn.execute(select(transactions.c.status, func.count())
                                  .where(transactions.c.role == role)
                                  .group_by(transactions.c.status))
        return dict(rows.all())


async def test_cursor_pages_do_not_shift_when_requests_arrive(migrated_engine):
    async with migrated_engine.begin() as conn:
        for n in range(1, 121):
            await add(conn, n)
    newest_first = [f"L-{n:04d}" for n in range(120, 0, -1)]

    first = await find(migrated_engine, limit=50)
    assert ids(first) == newest_first[:50]
    assert first["total"] == 120 and first["total_exact"]
    async with migrated_engine.begin() as conn:
        for n in range(121, 131):  # newer than everything listed so far
            await add(conn, n)
    second = await find(migrated_engine, limit=50, cursor=first["next"])
    assert ids(second) == newest_first[50:100]
    third = await find(migrated_engine, limit=50, cursor=second["next"])
    assert ids(third) == newest_first[100:]
    assert third["next"] is None
    assert third["total"] == 130  # the count does follow the arrivals

    # Equal update times are ordered by id, so no row is lost at a page boundary.
    async with migrated_engine.begin() as conn:
        for n in range(200, 205):
            await add(conn, n, status="SHIPPED", at=T0 + timedelta(days=9))
    seen, cursor = [], None
    while True:
        page = await find(migrated_engine, status="SHIPPED", limit=2, cursor=cursor)
        seen += ids(page)
        if not (cursor := page["next"]):
            break
    assert seen == [f"L-{n:04d}" for n in range(204, 199, -1)]

    # Numbered pages still work.
    assert ids(await find(migrated_engine, limit=10, offset=5))[0] == "L-0130"


async def test_a_cursor_not_given_out_is_refused(migrated_engine):
    for bad in ("nonsense", "W10=", search.encode_cursor(T0, 1)[:-3] + "!!!"):
        with pytest.raises(ValueError, match="is not one this server gave out"):
            await find(migrated_engine, cursor=bad)


async def test_facets_follow_every_write(migrated_engine):
    async with migrated_engine.begin() as conn:
        for n in range(1, 11):
            await add(conn, n, status="WILL_SUPPLY" if n % 2 else "SHIPPED")
        for n in range(11, 14):
            await add(conn, n, role="borrowing", status="sent")
    assert (await find(migrated_engine))["facets"] == {"WILL_SUPPLY": 5, "SHIPPED": 5}

    async with migrated_engine.begin() as conn:
        tx = transactions
        await conn.execute(update(tx).where(tx.c.public_id.in_(["L-0001", "L-0002"]))
                           .values(status="LOAN_COMPLETED"))
        await conn.execute(update(tx).where(tx.c.public_id == "L-0003")  # status unchanged
                           .values(title="Renamed", status="WILL_SUPPLY"))
        await conn.execute(delete(tx).where(tx.c.public_id == "L-0004"))
    found = await find(migrated_engine)
    assert found["facets"] == await true_facets(migrated_engine, "lending") == {
        "WILL_SUPPLY": 4, "SHIPPED": 3, "LOAN_COMPLETED": 2}
    assert found["total"] == 9
    only = await find(migrated_engine, status="SHIPPED")
    assert only["total"] == 3 and ids(only) == ["L-0010", "L-0008", "L-0006"]
    assert only["facets"] == found["facets"]  # the other statuses stay visible
    assert (await find(migrated_engine, "borrowing"))["facets"] == {"sent": 3}


async def test_facets_of_a_filtered_list_count_its_matches(migrated_engine):
    async with migrated_engine.begin() as conn:
        for n in range(1, 8):
            await add(conn, n, status="SHIPPED" if n < 4 else "WILL_SUPPLY",
                      needs_attention=n in (2, 5, 6))
    found = await find(migrated_engine, needs_attention=True)
    assert ids(found) == ["L-0006", "L-0005", "L-0002"]
    assert found["facets"] == {"SHIPPED": 1, "WILL_SUPPLY": 2} and found["total"] == 3
    calm = await find(migrated_engine, needs_attention=False, status="SHIPPED")
    assert ids(calm) == ["L-0003", "L-0001"] and calm["total"] == 2


async def test_q_finds_a_request_by_any_of_its_ids(migrated_engine):
    async with migrated_engine.begin() as conn:
        await add(conn, 1, title="REQ-0002 is mentioned in this title")
        await add(conn, 2)
        b = await add(conn, 3, role="borrowing", status="sent", patron_id="PAT-7")
        await add(conn, 4, role="borrowing", status="sent", patron_id="PAT-7")
        await add_attempt(conn, b, "REQ-0003-2")
    # An identifier finds its request only, not titles that mention it.
    assert ids(await find(migrated_engine, q="REQ-0002")) == ["L-0002"]
    assert ids(await find(migrated_engine, q=" L-0001 ")) == ["L-0001"]
    assert ids(await find(migrated_engine, q="SUP-0002")) == ["L-0002"]
    assert ids(await find(migrated_engine, "borrowing", q="PAT-7")) == ["B-0004", "B-0003"]
    assert ids(await find(migrated_engine, "borrowing", q="REQ-0003-2")) == ["B-0003"]
    assert ids(await find(migrated_engine, "borrowing", q="REQ-0002")) == []  # other role
    found = await find(migrated_engine, "borrowing", q="PAT-7", status="sent")
    assert found["total"] == 2 and found["facets"] == {"sent": 2}
    assert (await find(migrated_engine, "borrowing", q="PAT-7", status="complete"))[
        "requests"] == []


async def test_q_finds_a_lending_request_by_item_barcode(migrated_engine):
    async with migrated_engine.begin() as conn:
        tx_id = await add(conn, 1, state={"located": {"barcode": "39015-0001"}})
        await add(conn, 2, state={"located": {"barcode": "39015-0002"}})
    assert ids(await find(migrated_engine, q="39015-0001")) == ["L-0001"]

    # Shipped with other items than the one located; then located again elsewhere.
    async with migrated_engine.begin() as conn:
        await conn.execute(update(transactions).where(transactions.c.id == tx_id).values(
            status="SHIPPED", state={"located": {"barcode": "39015-0001"},
                                     "shipped_barcodes": ["V1-777", "V2-777"]}))
    assert ids(await find(migrated_engine, q="V2-777")) == ["L-0001"]
    assert ids(await find(migrated_engine, q="39015-0001")) == ["L-0001"]
    async with migrated_engine.begin() as conn:
        await conn.execute(update(transactions).where(transactions.c.id == tx_id).values(
            state={"located": {"barcode": "39015-0009"}}))
    assert ids(await find(migrated_engine, q="V2-777")) == []
    assert ids(await find(migrated_engine, q="39015-0009")) == ["L-0001"]
    async with migrated_engine.begin() as conn:
        await conn.execute(delete(transactions).where(transactions.c.id == tx_id))
    assert ids(await find(migrated_engine, q="39015-0009")) == []


async def test_q_finds_a_barcode_our_id_and_a_supplying_request_id_in_any_case(migrated_engine):
    async with migrated_engine.begin() as conn:
        await add(conn, 1, state={"located": {"barcode": "Ab-39015"}})
        await add(conn, 2, state={"located": {"barcode": "AB-39016"}})
    assert ids(await find(migrated_engine, q=" ab-39015 ")) == ["L-0001"]
    assert ids(await find(migrated_engine, q="ab-3901")) == []  # no partial matches
    assert ids(await find(migrated_engine, q="sup-0002")) == ["L-0002"]
    assert ids(await find(migrated_engine, q="l-0002")) == ["L-0002"]  # our id, typed

    # Through the lower(...) indexes of migration 0004, as the desk's scans.
    found, plan = await plans(migrated_engine,
                              lambda c: search.search(c, "lending", q="ab-39016"))
    assert ids(found) == ["L-0002"]
    assert "ix_request_barcodes_lower_barcode" in plan, plan
    assert "ix_transactions_lower_supplying_request_id" in plan, plan
    assert_no_scan(plan, "transactions", "request_barcodes", "attempts")


async def test_q_finds_both_request_ids_and_the_patron_id_in_any_case(migrated_engine):
    async with migrated_engine.begin() as conn:
        await add(conn, 1)
        b = await add(conn, 2, role="borrowing", status="sent", patron_id="Pat-7x")
        await add(conn, 3, role="borrowing", status="sent", patron_id="PAT-8")
        await add_attempt(conn, b, "Req-0002-1")
    assert ids(await find(migrated_engine, q=" req-0001 ")) == ["L-0001"]
    assert ids(await find(migrated_engine, "borrowing", q="pat-7X")) == ["B-0002"]
    assert ids(await find(migrated_engine, "borrowing", q="REQ-0002-1")) == ["B-0002"]
    assert ids(await find(migrated_engine, "borrowing", q="pat-")) == []  # no partial matches

    # Through the lower(...) indexes of migration 0005, never a scan.
    for q, role, index in (("req-0001", "lending", "ix_transactions_lower_requesting_request_id"),
                           ("pat-8", "borrowing", "ix_transactions_lower_patron_id"),
                           ("req-0002-1", "borrowing", "ix_attempts_lower_requesting_request_id")):
        found, plan = await plans(migrated_engine, lambda c: search.search(c, role, q=q))
        assert len(found["requests"]) == 1, q
        assert index in plan, plan
        assert_no_scan(plan, "transactions", "attempts", "request_barcodes")


async def test_q_finds_title_words(migrated_engine):
    async with migrated_engine.begin() as conn:
        await add(conn, 1, title="Introduction to Quantum Physics")
        await add(conn, 2, title="Quantum chemistry, 2nd ed.", status="SHIPPED")
        await add(conn, 3, title="The physics of Müller's quantum dots")
        await add(conn, 4, title=None)
        await add(conn, 5, role="borrowing", status="sent", title="Quantum Physics")
    assert ids(await find(migrated_engine, q="quantum")) == ["L-0003", "L-0002", "L-0001"]
    assert ids(await find(migrated_engine, q="PHYSICS  quantum")) == ["L-0003", "L-0001"]
    assert ids(await find(migrated_engine, q="physics quant")) == ["L-0003", "L-0001"]  # typing
    assert ids(await find(migrated_engine, q="quantum phys")) == ["L-0003", "L-0001"]
    assert ids(await find(migrated_engine, q="quant physics")) == []  # whole words before
    assert ids(await find(migrated_engine, q="chemistry!")) == ["L-0002"]
    assert ids(await find(migrated_engine, q="quantum biology")) == []
    assert ids(await find(migrated_engine, q='"*) OR (')) == []  # no query syntax gets in
    assert ids(await find(migrated_engine, q="-- ;")) == []
    found = await find(migrated_engine, q="quantum", status="SHIPPED")
    assert ids(found) == ["L-0002"]
    assert found["facets"] == {"WILL_SUPPLY": 2, "SHIPPED": 1} and found["total"] == 1

    async with migrated_engine.begin() as conn:  # a title changed: its words follow
        await conn.execute(update(transactions).where(transactions.c.public_id == "L-0001")
                           .values(title="Classical mechanics"))
        await conn.execute(update(transactions).where(transactions.c.public_id == "L-0004")
                           .values(title="Quantum optics"))
        await conn.execute(delete(transactions).where(transactions.c.public_id == "L-0003"))
    assert ids(await find(migrated_engine, q="quantum")) == ["L-0004", "L-0002"]
    assert ids(await find(migrated_engine, q="mechanics")) == ["L-0001"]


async def test_search_counts_stop_at_the_limit(migrated_engine, monkeypatch):
    monkeypatch.setattr(search, "COUNT_LIMIT", 3)
    async with migrated_engine.begin() as conn:
        for n in range(1, 7):
            await add(conn, n, title=f"Atlas volume {n}")
    found = await find(migrated_engine, q="atlas", limit=2)
    assert not found["total_exact"] and found["total"] == 4  # counted up to 3, then stopped
    assert ids(found) == ["L-0006", "L-0005"]
    rest = await find(migrated_engine, q="atlas", limit=10, cursor=found["next"])
    assert ids(rest) == ["L-0004", "L-0003", "L-0002", "L-0001"] and rest["next"] is None


async def test_facets_stay_exact_under_concurrent_writers(migrated_engine):
    async with migrated_engine.begin() as conn:
        for n in range(1, 41):
            await add(conn, n, status="SHIPPED")
    cycle = ("RECEIVED", "RETURN_SHIPPED", "LOAN_COMPLETED", "SHIPPED")

    async def writer(first: int) -> None:
        # Ten requests each, moved through statuses one transaction at a time.
        for step, status in enumerate(cycle * 2):
            async with migrated_engine.begin() as conn:
                for n in range(first, first + 10):
                    await conn.execute(update(transactions)
                                       .where(transactions.c.public_id == f"L-{n:04d}")
                                       .values(status=cycle[(n + step) % 4]))
                await add(conn, 1000 + first * 10 + step, status=status)

    await asyncio.gather(*(writer(first) for first in (1, 11, 21, 31)))
    found = await find(migrated_engine)
    assert found["facets"] == await true_facets(migrated_engine, "lending")
    assert found["total"] == 40 + 4 * 8


async def test_concurrent_writers_never_wait_on_each_other_for_the_counts(migrated_engine):
    """PostgreSQL: each writing transaction counts in a shard no other running one holds
    (migration 0007). By backend (0003), 20 transactions open at once over 16 shards
    had two sharing one: the second waited on the first's counter rows, and two that
    went on to touch each other's statuses deadlocked."""
    if migrated_engine.dialect.name != "postgresql":
        pytest.skip("SQLite has one writer at a time")
    statuses = ("SHIPPED", "RECEIVED", "LOAN_COMPLETED", "RETURN_SHIPPED")
    async with migrated_engine.begin() as conn:
        for n in range(1, 41):
            await add(conn, n, status=statuses[n % 4])
    # A pool of its own: the migrated engine's holds 15 connections at most.
    engine = create_engine(migrated_engine.url.render_as_string(hide_password=False),
                           pool_size=20)
    try:
        conns = [await engine.connect() for _ in range(20)]
        shards = []
        for n, conn in enumerate(conns, start=1):
            await conn.begin()
            await conn.exec_driver_sql("SET LOCAL lock_timeout = '2s'")  # a wait fails
            await conn.execute(update(transactions).where(transactions.c.public_id == f"L-{n:04d}")
                               .values(status=statuses[(n + 1) % 4]))
            shards.append(await conn.scalar(select(func.current_setting("ill.count_shard"))))
        assert len(set(shards)) == 20
        for n, conn in enumerate(conns, start=21):  # then other statuses, in another order
            await conn.execute(update(transactions).where(transactions.c.public_id == f"L-{n:04d}")
                               .values(status=statuses[(n + 3) % 4]))
        for conn in conns:
            await conn.commit()
            await conn.close()
    finally:
        await engine.dispose()
    found = await find(migrated_engine)
    assert found["facets"] == await true_facets(migrated_engine, "lending")
    assert sum(found["facets"].values()) == 40


async def test_a_common_word_finds_what_a_rare_one_would(migrated_engine, monkeypatch):
    # Past COUNT_LIMIT matches the page walks the list testing each row, and the facets
    # are counted from the first matches read: the role's only, those of every word only.
    async with migrated_engine.begin() as conn:
        for n in range(1, 13):
            await add(conn, n, status="SHIPPED" if n % 3 else "WILL_SUPPLY",
                      title=f"Atlas of the {'sea' if n % 2 else 'land'} {n}",
                      needs_attention=n % 4 == 0)
        for n in range(13, 21):
            await add(conn, n, role="borrowing", status="sent", title=f"Atlas of the sea {n}")
    searches = [dict(q="atlas"), dict(q="atlas", status="SHIPPED"), dict(q="the atl"),
                dict(q="atlas", needs_attention=False), dict(q="atlas", limit=4)]

    async def pages(**kw) -> list[tuple[list[str], dict]]:
        found, cursor = [], None
        while True:
            page = await find(migrated_engine, cursor=cursor, **kw)
            found.append((ids(page), page))
            if not (cursor := page["next"]):
                return found

    exact = [await pages(**kw) for kw in searches]
    monkeypatch.setattr(search, "COUNT_LIMIT", 5)
    for kw, expected in zip(searches, exact):
        common = await pages(**kw)
        assert [i for i, _ in common] == [i for i, _ in expected], kw
        assert [p["next"] for _, p in common] == [p["next"] for _, p in expected], kw
        first, counted = common[0][1], expected[0][1]["facets"]
        assert not first["total_exact"] and sum(first["facets"].values()) == 6, kw
        assert all(n <= counted[status] for status, n in first["facets"].items()), kw

    monkeypatch.setattr(search, "COUNT_LIMIT", 6)  # 6 lending titles of each word
    for word, first_id in (("sea", "L-0011"), ("land", "L-0012")):
        found = await find(migrated_engine, q=word)
        assert found["total_exact"] and found["total"] == 6, word
        assert ids(found)[0] == first_id
    assert (await find(migrated_engine, q="sea", status="WILL_SUPPLY"))["facets"] == {
        "SHIPPED": 4, "WILL_SUPPLY": 2}


# Words that tokenizers split, fold or keep: case, diacritics (composed and not), "_",
# "-", "'", digits in words, words in words ("art" in "part"), other scripts.
TRICKY_WORDS = ["Café", "cafe", "CAFÉ", "cafe\u0301s", "naïve", "Straße", "strasse", "über",
                "Øster", "İstanbul", "x_y", "foo-bar", "O'Brien", "ab12", "12ab", "1984",
                "history", "His", "story", "stories", "art", "Part", "ARTS", "heart",
                "Москва", "東京", "the", "of", "and"]


async def test_the_walked_title_test_agrees_with_full_text(migrated_engine, monkeypatch):
    """Past COUNT_LIMIT matches the page walks the list testing each row (SQLite: an
    ASCII title by GLOB, or against FTS5's set of matches; PostgreSQL: each word in the
    lower-cased title, then full text): it must find what reading the matches from full
    text finds, whatever the titles hold."""
    rng = random.Random(7)
    async with migrated_engine.begin() as conn:
        for n in range(1, 301):
            words = rng.sample(TRICKY_WORDS, rng.randint(1, 5))
            glue = rng.choice([" ", " ", ", ", "-", "_", "\t", ": "])
            await add(conn, n, title=glue.join(words))
    queries = ["cafe", "caf", "café", "art", "ar", "history", "stor", "ab1",
               "12", "1984", "o brien", "brien", "foo bar", "x_y", "the of", "of the",
               "ost", "uber", "über", "strasse", "istanbul", "москва", "the art",
               "heart his", "part", "arts", "stor his", "art heart", "ab history"]
    found = []
    for q in queries:
        monkeypatch.setattr(search, "COUNT_LIMIT", 10_000)
        exact = await find(migrated_engine, q=q, limit=300)
        assert exact["total_exact"], q
        monkeypatch.setattr(search, "COUNT_LIMIT", 1)
        for cost in (0, 10**9):  # SQLite: by GLOB where it can, then against the set
            monkeypatch.setattr(search, "TITLE_TEST_COST", cost)
            walked = await all_pages(migrated_engine, q=q, limit=40)
            assert walked == ids(exact), (q, cost)
        found.append(walked)
    assert sum(map(bool, found)) >= len(queries) - 4, found  # "ost", "stor his"...


async def test_sqlite_walks_titles_when_the_words_are_common_among_the_newest(
        migrated_engine, monkeypatch):
    """SQLite: a common word's page tests each ASCII title walked by GLOB, rather than
    against the set of all its matches FTS5 builds first (~10 ms per 100,000), when the
    newest matches say it is common at the top of the list; not a word common long
    ago only, which would walk every row since, each read from the table."""
    if migrated_engine.dialect.name != "sqlite":
        pytest.skip("SQLite's FTS5 builds the set of matches")
    monkeypatch.setattr(search, "COUNT_LIMIT", 5)
    monkeypatch.setattr(search, "TITLE_TEST_COST", 1)  # the set dearer, as at 1M requests
    async with migrated_engine.begin() as conn:
        for n in range(1, 401):  # "atlas" in 1 title in 2; "plague" in the 10 oldest only
            await add(conn, n, title=f"Atlas of the sea {n}" if n % 2 else
                      f"The plague year {n}" if n <= 20 else f"Chart {n}")

    async def walked(q: str) -> tuple[list[str], bool]:
        async with statements_of(migrated_engine) as seen:
            found = await all_pages(migrated_engine, q=q, limit=20)
        return found, any("GLOB" in statement for statement, _ in seen)

    atlas, by_title = await walked("atlas")
    assert atlas == [f"L-{n:04d}" for n in range(399, 0, -2)] and by_title
    plague, by_title = await walked("plag")
    assert plague == [f"L-{n:04d}" for n in range(20, 0, -2)] and not by_title


async def analyze(engine) -> None:
    async with engine.begin() as conn:
        await conn.exec_driver_sql("ANALYZE transactions")


async def counted(engine, **kw) -> tuple[dict, str, tuple, str]:
    """``find(engine, **kw)`` on PostgreSQL, with the statement counting its facets, that
    statement's parameters and its plan, explained in the search's own transaction (its
    settings) but for a full scan, which a small table would get."""
    async with statements_of(engine) as seen, engine.connect() as conn:
        found = await search.search(conn, "lending", **kw)
        [(statement, params)] = [(s, p) for s, p in seen
                                 if s.startswith("SELECT transactions.id, transactions.status")]
        plan = await explain(conn, statement, params)
    return found, statement, params, plan


async def all_pages(engine, **kw) -> list[str]:
    found, cursor = [], None
    while True:
        page = await find(engine, cursor=cursor, **kw)
        found += ids(page)
        if not (cursor := page["next"]):
            return found


async def test_common_words_are_counted_walking_the_list_by_the_statistics(
        migrated_engine, monkeypatch):
    if migrated_engine.dialect.name == "sqlite":
        pytest.skip("PostgreSQL's statistics choose how title words are read")
    monkeypatch.setattr(search, "COUNT_LIMIT", 5)
    monkeypatch.setattr(search, "STATS_SECONDS", 0)  # ANALYZE is seen at once
    status_of = {}
    async with migrated_engine.begin() as conn:
        # No statistics but the test's own ANALYZE.
        await conn.exec_driver_sql("ALTER TABLE transactions SET (autovacuum_enabled = off)")
        # "atlas" is in most titles, the oldest ones; "zanzibar" in three.
        for n in range(1, 301):
            status = ("SHIPPED", "WILL_SUPPLY", "RECEIVED")[n % 3]
            title = (f"Atlas of Zanzibar {n}" if n in (13, 100) else "Chart of Zanzibar"
                     if n == 250 else f"Atlas of the {'sea' if n % 2 else 'land'} {n}"
                     if n <= 240 else f"Chart of the coast {n}")
            await add(conn, n, status=status, title=title, needs_attention=n % 7 == 0)
            status_of[f"L-{n:04d}"] = status
        for n in range(301, 321):
            await add(conn, n, role="borrowing", status="sent", title="Atlas of the sea")
    atlas = [f"L-{n:04d}" for n in range(240, 0, -1)]

    def facets_of(found_ids: list[str]) -> dict[str, int]:
        return dict(Counter(status_of[i] for i in found_ids))

    # No statistics: every word's matches read through GIN, as before them (the last
    # word as the title words it starts, here itself).
    found, statement, params, plan = await counted(migrated_engine, q="atlas")
    assert "ix_transactions_title_words" in plan and "'atlas'" in params, plan
    assert not found["total_exact"] and found["facets"] == facets_of(atlas[:6])
    assert await all_pages(migrated_engine, q="atlas", limit=50) == atlas

    await analyze(migrated_engine)
    # A common word: its first matches counted walking the list newest first, the cheap
    # test of each row before full text; then pages walked the same way.
    found, statement, params, plan = await counted(migrated_engine, q="atlas")
    assert "Index Scan Backward using ix_transactions_role_updated_at_id" in plan, plan
    assert "ix_transactions_title_words" not in plan, plan
    [filter_line] = [line for line in plan.splitlines() if "Filter:" in line]
    assert filter_line.index("~~") < filter_line.index("@@"), plan
    assert not found["total_exact"] and found["total"] == 6
    assert found["facets"] == facets_of(atlas[:6])  # the six newest matches
    assert ids(found) == atlas[:50]
    assert await all_pages(migrated_engine, q="atlas", limit=50) == atlas
    assert await all_pages(migrated_engine, q="the atl", limit=7) == [
        i for i in atlas if i not in ("L-0100", "L-0013")]  # "Atlas of Zanzibar"
    shipped = await find(migrated_engine, q="atlas", status="SHIPPED")
    assert ids(shipped) == [i for i in atlas if status_of[i] == "SHIPPED"][:50]
    assert shipped["total"] == facets_of(atlas[:6])["SHIPPED"]
    found = await find(migrated_engine, q="atlas", needs_attention=True)
    assert ids(found) == [f"L-{n:04d}" for n in range(238, 0, -1) if n % 7 == 0][:50]

    # A rare word and a common one: the rare word's matches read through GIN, the
    # common one tested on each.
    found, statement, params, plan = await counted(migrated_engine, q="zanzibar atl")
    assert "ix_transactions_title_words" in plan and "zanzibar" in params, plan
    assert "ORDER BY" not in statement
    assert ids(found) == ["L-0100", "L-0013"] and found["total_exact"]
    assert found["facets"] == facets_of(["L-0100", "L-0013"])

    # Statistics gone stale: only the time taken differs.
    async with migrated_engine.begin() as conn:
        await conn.execute(update(transactions).where(transactions.c.title.like("Atlas of the%"),
                                                      transactions.c.role == "lending",
                                                      transactions.c.public_id < "L-0238")
                           .values(title="Globe"))
        for n in range(321, 341):  # "zanzibar", rare in the statistics, now common
            await add(conn, n, title="Zanzibar atlas", status="SHIPPED")
            status_of[f"L-{n:04d}"] = "SHIPPED"
    found, statement, *_ = await counted(migrated_engine, q="atlas")
    assert "ORDER BY" in statement  # still walked: the statistics say common
    rest = ["L-0240", "L-0239", "L-0238", "L-0100", "L-0013"]
    assert await all_pages(migrated_engine, q="atlas") == [
        f"L-{n:04d}" for n in range(340, 320, -1)] + rest
    assert not found["total_exact"] and found["facets"] == {"SHIPPED": 6}
    monkeypatch.setattr(search, "COUNT_LIMIT", 30)
    found = await find(migrated_engine, q="atlas")
    assert found["total_exact"] and found["facets"] == facets_of(
        [f"L-{n:04d}" for n in range(340, 320, -1)] + rest)
    found, statement, *_ = await counted(migrated_engine, q="zanzibar")
    assert "ORDER BY" not in statement  # read through GIN: the statistics say rare
    assert found["total"] == 23 and found["total_exact"]


def words_index_reads(engine, statements) -> int:
    """How many of ``statements`` read the title words' index: FTS5's MATCH on SQLite,
    the expression of ix_transactions_title_words on PostgreSQL."""
    mark = "MATCH" if engine.dialect.name == "sqlite" else "coalesce(transactions.title, '')"
    return sum(mark in statement for statement, _ in statements)


async def test_the_matches_of_a_search_are_read_once(migrated_engine):
    """All of them counted (few): the page takes them by id, not from the words' index
    again (a second read of every match, ~30 ms for two common words at 1M requests)."""
    async with migrated_engine.begin() as conn:
        for n in range(1, 61):
            await add(conn, n, title=f"Atlas of Zanzibar {n}" if n % 6 == 0 else f"Chart {n}",
                      status=("SHIPPED", "RECEIVED")[n % 4 == 0])
    zanzibar = [f"L-{n:04d}" for n in range(60, 0, -6)]
    async with statements_of(migrated_engine) as seen:
        found = await find(migrated_engine, q="zanzibar", limit=4)
    assert words_index_reads(migrated_engine, seen) == 1, seen
    assert ids(found) == zanzibar[:4] and found["total"] == 10 and found["total_exact"]
    assert found["facets"] == {"SHIPPED": 5, "RECEIVED": 5}
    assert await all_pages(migrated_engine, q="zanzibar", limit=3) == zanzibar
    shipped = await find(migrated_engine, q="atlas zan", status="SHIPPED", limit=2)
    assert ids(shipped) == ["L-0054", "L-0042"] and shipped["total"] == 5
    assert shipped["facets"] == {"SHIPPED": 5, "RECEIVED": 5}


async def test_title_words_in_the_attention_queue_walk_it(migrated_engine):
    """Title words with needs_attention: the few requests needing attention are walked in
    list order (their own index), each title tested, rather than every match of the
    words read from their index (a common word: ~100 against ~12 ms at 1M requests)."""
    async with migrated_engine.begin() as conn:
        for n in range(1, 201):
            await add(conn, n, title=f"Atlas of the sea {n}" if n % 2 else f"Chart {n}",
                      status=("SHIPPED", "RECEIVED")[n % 3 == 0], needs_attention=n % 5 == 0)
    queue = [f"L-{n:04d}" for n in range(200, 0, -1) if n % 10 == 5]
    async with statements_of(migrated_engine) as seen:
        found = await find(migrated_engine, q="atlas", needs_attention=True, limit=8)
    assert ids(found) == queue[:8] and found["total"] == 20 and found["total_exact"]
    assert found["facets"] == {"SHIPPED": 13, "RECEIVED": 7}
    assert await all_pages(migrated_engine, q="atl", needs_attention=True, limit=6) == queue
    if migrated_engine.dialect.name == "postgresql":
        assert words_index_reads(migrated_engine, seen) == 0, seen
        found, statement, params, plan = await counted(
            migrated_engine, q="atlas", needs_attention=True)
        assert "ix_transactions_needs_attention" in plan, plan
        assert "ix_transactions_title_words" not in plan, plan
    # Not the queue: the words' matches, as before.
    assert (await find(migrated_engine, q="atlas", needs_attention=False))["total"] == 80


async def test_words_with_underscores_match_as_full_text_does(migrated_engine, monkeypatch):
    # The parsers split words at "_" ("foo_bar" is the phrase "foo bar"), so that the
    # test of each row must not look for "foo_bar" (or "foo?bar") as it is.
    async with migrated_engine.begin() as conn:
        for n, title in enumerate(["Foo_bar notes", "Foo, bar notes", "foo bar", "fooXbar notes",
                                   "bar foo notes", "100% foo"], start=1):
            await add(conn, n, title=title)
    for analyzed in (False, True):
        for count_limit in (1_000, 1):  # the matches read, then the list walked
            monkeypatch.setattr(search, "COUNT_LIMIT", count_limit)
            monkeypatch.setattr(search, "STATS_SECONDS", 0)
            assert ids(await find(migrated_engine, q="foo_bar")) == [
                "L-0003", "L-0002", "L-0001"], (analyzed, count_limit)
            assert ids(await find(migrated_engine, q="foo%bar")) == [
                "L-0005", "L-0003", "L-0002", "L-0001"], (analyzed, count_limit)
            assert ids(await find(migrated_engine, q="100% foo")) == ["L-0006"]
        await analyze(migrated_engine)


async def test_common_words_with_a_common_last_word_spare_its_prefix(
        migrated_engine, monkeypatch):
    """GIN gathers every title holding a word the last one starts before its first match
    (~35 ms for two common words at 1M requests). When the last word starts too many
    title words to read them whole, by the statistics, the facets are first counted on
    the titles holding the last word whole (~9 ms); the answers are those of a prefix
    all the same."""
    if migrated_engine.dialect.name == "sqlite":
        pytest.skip("PostgreSQL's statistics choose how title words are read")
    monkeypatch.setattr(search, "STATS_SECONDS", 0)
    monkeypatch.setattr(search, "STARTING_LIMIT", 1)  # "north", "northern"
    monkeypatch.setattr(search, "WALK_COST", 10**6)  # read through GIN, never walked
    status_of = {}
    async with migrated_engine.begin() as conn:
        await conn.exec_driver_sql("ALTER TABLE transactions SET (autovacuum_enabled = off)")
        for n in range(1, 241):  # each word in half the titles; "north" a quarter
            status = ("SHIPPED", "WILL_SUPPLY", "RECEIVED")[n % 3]
            title = (f"{('atlas', 'chart')[n % 2]} of the {('sea', 'land')[n // 2 % 2]} "
                     f"{('north', 'northern', 'south', 'southern')[n // 4 % 4]} {n}")
            await add(conn, n, status=status, title=title)
            status_of[f"L-{n:04d}"] = status
        for n in range(241, 261):
            await add(conn, n, role="borrowing", status="sent", title="atlas of the sea north")
    await analyze(migrated_engine)
    newest_first = [f"L-{n:04d}" for n in range(240, 0, -1)]
    atlas_north = [i for i in newest_first if int(i[2:]) % 2 == 0 and int(i[2:]) // 4 % 4 < 2]

    async def facet_reads(**kw) -> tuple[dict, list]:
        async with statements_of(migrated_engine) as seen:
            found = await find(migrated_engine, **kw)
        return found, [params for s, params in seen
                       if s.startswith("SELECT transactions.id, transactions.status")]

    # Two words: more than COUNT_LIMIT with "north" whole, so more in all.
    for count_limit in (5, 12):
        monkeypatch.setattr(search, "COUNT_LIMIT", count_limit)
        monkeypatch.setattr(search, "RAREST_ALONE", 1)
        found, reads = await facet_reads(q="atlas north")
        assert len(reads) == 1 and "atlas & north" in reads[0], reads
        assert not found["total_exact"] and found["total"] == count_limit + 1
        assert all(n <= Counter(status_of[i] for i in atlas_north)[s]
                   for s, n in found["facets"].items())
        assert ids(found) == atlas_north[:50]
    assert await all_pages(migrated_engine, q="atlas north", limit=7) == atlas_north
    monkeypatch.setattr(search, "COUNT_LIMIT", 100)  # too few whole: the prefix at once
    found, reads = await facet_reads(q="atlas north")
    assert len(reads) == 1 and "atlas & north:*" in reads[0], reads
    assert found["total_exact"] and found["total"] == len(atlas_north) == 60
    assert found["facets"] == dict(Counter(status_of[i] for i in atlas_north))

    # Statistics gone stale ("north" now in no title whole): the prefix read follows.
    async with migrated_engine.begin() as conn:
        await conn.execute(update(transactions).values(
            title=func.replace(transactions.c.title, "north ", "northerly ")))
    monkeypatch.setattr(search, "COUNT_LIMIT", 5)
    monkeypatch.setattr(search, "RAREST_ALONE", 1)
    found, reads = await facet_reads(q="atlas north")
    assert [r[0] for r in reads] == ["atlas & north", "atlas & north:*"], reads
    assert not found["total_exact"] and found["total"] == 6
    assert await all_pages(migrated_engine, q="atlas north", limit=25) == atlas_north


WINTER_TITLES = ["Winter tales", "Winters of discontent", "Wintering in the north",
                 "Summer and winter", "A winter-garden", "Tales of the wintry sea", "Summer days",
                 "North winters"]


def starting_winter(titles: dict[str, str]) -> list[str]:
    """The ids whose titles hold a word starting "winter", newest first."""
    return sorted((i for i, title in titles.items()
                   if any(w.startswith("winter") for w in re.split(r"[\W_]+", title.lower()))),
                  reverse=True)


async def test_a_last_word_is_read_as_the_title_words_it_starts(migrated_engine, monkeypatch):
    """PostgreSQL: GIN reads a prefix by gathering every title holding a word it starts
    before the first match (three common words at 1M requests: ~35 ms); the title words
    it starts (migration 0006), read whole, are read together, skipping (~8 ms)."""
    if migrated_engine.dialect.name == "sqlite":
        pytest.skip("FTS5 reads a prefix from its own terms")
    titles = {f"L-{n:04d}": title for n, title in enumerate(WINTER_TITLES, start=1)}
    async with migrated_engine.begin() as conn:
        # Several requests in one INSERT, as the store writes a batch.
        await conn.execute(insert(transactions), [dict(
            role="lending", public_id=i, partner="ISIL:XX-P1", requesting_agency_id="x",
            requesting_request_id=i, status="SHIPPED", title=title, created_at=T0,
            updated_at=T0 + timedelta(minutes=int(i[2:])), state={})
            for i, title in titles.items()])
        # Words as the parser may keep them, which to_tsquery would read otherwise.
        await conn.exec_driver_sql("INSERT INTO title_lexemes VALUES ('winter''s'),"
                                   " ('winter\\x'), ('winter:*'), ('winter|a'), ('north_winter')")

    async def searched(q: str) -> tuple[list[str], list]:
        async with statements_of(migrated_engine) as seen:
            found = await find(migrated_engine, q=q)
        return ids(found), [p for s, p in seen if "coalesce(transactions.title, '')" in s]

    found, reads = await searched("winter")
    assert found == starting_winter(titles)
    [(query, *_)] = reads  # each word whole, quoted as tsquery's input reads it
    assert query == ("'winter' | 'winter''s' | 'winter-garden' | 'winter:*' | 'winter\\\\x'"
                     " | 'wintering' | 'winters' | 'winter|a'")
    assert (await searched("tales winter"))[0] == ["L-0001"]
    assert (await searched("tales wint"))[0] == ["L-0006", "L-0001"]  # wintry too
    # A title changed: its words are added.
    async with migrated_engine.begin() as conn:
        await conn.execute(update(transactions).where(transactions.c.public_id == "L-0007")
                           .values(title="Winterbourne abbey"))
    titles["L-0007"] = "Winterbourne abbey"
    assert (await searched("winter"))[0] == starting_winter(titles)
    # Too many words start it: read as a prefix, with the same answers.
    monkeypatch.setattr(search, "STARTING_LIMIT", 3)
    found, reads = await searched("winter")
    assert found == starting_winter(titles) and "winter:*" in str(reads), reads
    # No title word starts it: as a prefix.
    assert (await searched("summerx"))[0] == []
    # Not one word as to_tsquery reads it ("north" then "winter:*"): as a prefix, though
    # a stored word starts with it.
    found, reads = await searched("north_winter")
    assert found == ["L-0008"] and "north_winter:*" in str(reads), reads


async def test_title_words_stored_before_migration_0006_are_read(db_url):
    engine = create_engine(db_url)
    try:
        await migrate_async(engine, "0005")
        async with engine.begin() as conn:
            for n, title in enumerate(WINTER_TITLES[:4], start=1):
                await add(conn, n, title=title)
        await migrate_async(engine)
        async with engine.begin() as conn:
            await add(conn, 5, title="Winter again")
        found = await find(engine, q="winter")
        assert ids(found) == ["L-0005", "L-0004", "L-0003", "L-0002", "L-0001"]
    finally:
        await engine.dispose()
