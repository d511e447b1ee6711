"""A batch's rows in one statement (node.store.bulk, issue 8): on PostgreSQL each table's
rows go as arrays through ``unnest``, several tables in one statement; what is stored
must be exactly what SQLAlchemy's INSERT of each row stores, on both databases."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import insert, select

from node.store import bulk, repo
from node.store import tables as t
from tests.store.statements import statements_of

NOW = datetime(2026, 12, 7, 9, 30, 0, 123456, tzinfo=timezone(timedelta(hours=5, minutes=30)))
# What an array literal or a CSV would trip on, and what JSON and text columns hold.
ODD = ['a,b', '{x}', '"q"', "back\\slash", "O'Brien", "NULL", "", "tab\tline\nend",
       "Tōkyō — Достоевский 東京"]


def _request(n: int, **over) -> dict:
    row = dict(role="lending", public_id=f"L-{n}", partner=None, requesting_agency_id="isil:xx",
               requesting_request_id=f"R{n}", supplying_request_id=ODD[n % len(ODD)],
               status="WillSupply", title=ODD[(n + 1) % len(ODD)], patron_id=None,
               created_at=NOW, updated_at=NOW + timedelta(seconds=n), needs_attention=n % 2 == 0,
               state={"n": n, "text": ODD[n % len(ODD)], "none": None, "list": [1, "2", None]},
               next_timer_at=None if n % 3 else NOW + timedelta(days=n), duplicate_key=None)
    row.update(over)
    return row


def _children(ids: list[int]) -> list[tuple]:
    messages = [dict(transaction_id=tx_id, direction="in" if n % 2 else "out", kind="request",
                     peer=ODD[n % len(ODD)], requesting_request_id=f"R{n}", status=None,
                     action=None, reason="Loan", message_status="OK" if n % 2 else None,
                     raw=f"<x>{ODD[n % len(ODD)]}</x>", digest=f"{n:064x}" if n % 2 else None,
                     confirmation=None, created_at=NOW)
                for n, tx_id in enumerate(ids)]
    history = [dict(transaction_id=tx_id, at=NOW - timedelta(minutes=n), actor=ODD[n % len(ODD)],
                    event="received", detail={"summary": ODD[n % len(ODD)], "n": n})
               for n, tx_id in enumerate(ids)]
    outbox = [dict(transaction_id=tx_id, peer="ISIL:XX", url="http://127.0.0.1:1/iso18626",
                   kind="supplyingAgencyMessage", body=bytes([0, 1, 2, 255]) + ODD[n].encode(),
                   state="pending", attempts=0, next_attempt_at=NOW, created_at=NOW)
              for n, tx_id in enumerate(ids)]
    return [(t.messages, messages), (t.history, history), (t.outbox, outbox)]


async def _stored(conn, table, *skip: str) -> list[tuple]:
    """The rows of ``table`` in id order, without ``skip`` and their ids."""
    columns = [c for c in table.c if c.name not in ("id", *skip)]
    return [tuple(r) for r in await conn.execute(select(*columns).order_by(table.c.id))]


async def test_rows_are_stored_as_an_insert_of_each_row_stores_them(migrated_engine):
    """Two sets of the same rows: one through bulk, one row by row; each table then holds
    the same values twice over (datetimes in UTC, JSON, bytes, NULLs, odd text)."""
    half = len(ODD)
    async with migrated_engine.begin() as conn:
        returned = await bulk.insert_new(
            conn, t.transactions, [_request(n) for n in range(half)], ("id", "public_id"))
        bulk_ids = [r.id for r in returned]
        single_ids = [(await conn.execute(insert(t.transactions).values(
            _request(n, public_id=f"S-{n}", requesting_request_id=f"S{n}")).returning(
            t.transactions.c.id))).scalar_one() for n in range(half)]
        async with statements_of(migrated_engine) as seen:
            await bulk.insert_rows(conn, _children(bulk_ids))
        if migrated_engine.dialect.name == "postgresql":
            assert len(seen) == 1  # three tables, one statement
        else:
            assert len(seen) == 3  # one executemany per table
        for table, rows in _children(single_ids):
            for row in rows:
                if row.get("digest"):
                    row["digest"] = "s" + row["digest"][1:]  # unique
                await conn.execute(insert(table).values(row))

        requests = await _stored(conn, t.transactions, "public_id", "requesting_request_id")
        assert requests[:half] == requests[half:]
        assert (await conn.execute(select(t.transactions.c.created_at))).scalar() == NOW
        for table in (t.messages, t.history, t.outbox):
            assert (await _stored(conn, table, "transaction_id", "digest")) == (
                await _stored(conn, table, "transaction_id", "digest"))[half:] * 2, table.name
            # ...each row with its own request, in the order given
            owners = await conn.execute(select(table.c.transaction_id).order_by(table.c.id))
            assert list(owners.scalars()) == bulk_ids + single_ids
        digests = await conn.execute(select(t.messages.c.digest).order_by(t.messages.c.id))
        assert list(digests.scalars())[:half] == [
            f"{n:064x}" if n % 2 else None for n in range(half)]


async def test_rows_go_in_in_the_order_given(migrated_engine):
    """The outbox sends a request's messages in id order."""
    async with migrated_engine.begin() as conn:
        ids = [r.id for r in await bulk.insert_new(
            conn, t.transactions, [_request(n) for n in range(3)], ("id", "public_id"))]
        rows = _children([ids[0]] * 3)[2][1]
        for n, row in enumerate(rows):
            row["kind"] = f"message {n}"
        await bulk.insert_rows(conn, [(t.outbox, rows * 20)])
        kinds = (await conn.execute(select(t.outbox.c.kind).order_by(t.outbox.c.id))).scalars()
        assert list(kinds) == [f"message {n}" for n in range(3)] * 20


async def test_a_new_row_whose_key_is_taken_is_left_out(migrated_engine):
    async with migrated_engine.begin() as conn:
        first = await repo.insert_new_transactions(conn, [_request(1), _request(2)])
        assert set(first) == {"L-1", "L-2"}
        again = await repo.insert_new_transactions(conn, [
            _request(3),
            _request(4, requesting_request_id="R1"),  # (role, agency, request id) taken
            _request(2, requesting_request_id="R9"),  # public id taken
            _request(5),
        ])
        assert set(again) == {"L-3", "L-5"}
        assert await repo.insert_transaction(conn, _request(6, public_id="L-3"),
                                             if_new=True) is None
        new = await repo.insert_transaction(conn, _request(6), if_new=True)
        assert new == (await conn.execute(select(t.transactions.c.id).where(
            t.transactions.c.public_id == "L-6"))).scalar_one()
        count = (await conn.execute(select(t.transactions.c.id))).all()
        assert len(count) == 5


async def test_rows_of_one_table_with_different_keys_are_refused(migrated_engine):
    async with migrated_engine.begin() as conn:
        ids = [r.id for r in await bulk.insert_new(
            conn, t.transactions, [_request(1)], ("id", "public_id"))]
        history = _children(ids)[1][1]
        odd = dict(history[0], surplus=1)
        with pytest.raises(ValueError, match="rows for history differ in their keys"):
            await bulk.insert_rows(conn, [(t.history, history + [odd])])
        with pytest.raises(ValueError, match="rows for transactions differ"):
            await bulk.insert_new(conn, t.transactions, [_request(2), dict(_request(3), id=9)],
                                  ("id",))
        # no rows, nothing to do (no statement, no error)
        async with statements_of(migrated_engine) as seen:
            await bulk.insert_rows(conn, [(t.history, []), (t.outbox, [])])
        assert seen == []


async def test_in_list_selects_as_in_does_with_one_statement_text_on_postgresql(
        migrated_engine):
    """``bulk.in_list``: the rows an ``IN`` of the list selects (negated too), whatever
    the list; on PostgreSQL one statement text for any length (prepared once), the
    values whole (a CAST to the column's VARCHAR(n)[] would cut them)."""
    column = t.transactions.c.requesting_request_id  # VARCHAR(255)
    long_id = "L" * 255
    async with migrated_engine.begin() as conn:
        await repo.insert_new_transactions(conn, [
            _request(n, requesting_request_id=rid)
            for n, rid in enumerate([*ODD[:6], long_id])])
        statement = select(column).where(bulk.in_list(column, "ids")).order_by(column)
        negated = select(column).where(~bulk.in_list(column, "ids")).order_by(column)
        every = set((await conn.execute(select(column))).scalars())
        async with statements_of(migrated_engine) as seen:
            for ids in ([], ["O'Brien"], ODD, [long_id], [long_id + "x"], [None, "a,b"]):
                got = set((await conn.execute(statement, {"ids": ids})).scalars())
                assert got == every & set(ids), ids
                got = set((await conn.execute(negated, {"ids": ids})).scalars())
                if None not in ids:  # NOT IN a list holding NULL is NULL: nothing
                    assert got == every - set(ids), ids
    texts = {text for text, _ in seen}
    # SQLite: a text per length (0, 1, 2 and 9 values) and sense
    assert len(texts) == (2 if migrated_engine.dialect.name == "postgresql" else 8), texts
