"""Group commit of partners' messages (issue 8): one writer stores whatever messages are
waiting in ONE transaction, a SAVEPOINT each (none for a message alone), and answers
them only after the COMMIT.

Messages handed to ``Node.receive`` together (``asyncio.gather``) reach the writer
before it runs, so they form one batch; the engine's commit events count the batches.
"""

from __future__ import annotations

import asyncio
import re

import aiohttp
import pytest
from sqlalchemy import event, func, select, text
from sqlalchemy.exc import SQLAlchemyError

from node import service
from node.protocol import reader, writer
from node.protocol.codes import Action, ErrorType, MessageStatus
from node.store import holdings_repo, repo
from node.store import tables as t
from node.store.db import create_engine, migrate_async
from node.supplier.locate import HoldingsItem, HoldingsRecord
from tests import builders
from tests.harness import free_port
from tests.peer import Peer
from tests.service.test_processes import NodeProcess, send, write_config

PEER = "ISIL:XX-PEER"


async def started(net) -> tuple:
    lib = net.add("alpha")
    peer = Peer(PEER)
    net.add_peer(PEER, peer.endpoint)
    await peer.start()
    await net.start()
    return lib, peer


def count_commits(engine) -> list[int]:
    """Commits of transactions that stored partners' messages (those that log messages;
    the outbox and the timers commit too, without)."""
    commits = [0]
    storing: set[int] = set()

    @event.listens_for(engine.sync_engine, "before_cursor_execute")
    def _logging(conn, _cursor, statement, *_):
        if "INSERT INTO messages " in statement:  # alone, or in a WITH (node.store.bulk)
            storing.add(id(conn))

    @event.listens_for(engine.sync_engine, "commit")
    def _commit(conn):
        if id(conn) in storing:
            storing.discard(id(conn))
            commits[0] += 1

    return commits


async def rows(lib, table, *where) -> list:
    async with lib.node.engine.connect() as conn:
        return list(await conn.execute(select(table).where(*where)))


async def install(lib, statements: dict[str, list[str]]) -> None:
    """Run the dialect's statements (test triggers) on the node's database."""
    async with lib.node.engine.begin() as conn:
        for statement in statements[conn.dialect.name]:
            await conn.execute(text(statement))


def refusing_inserts(table: str, when: str | None = None) -> dict[str, list[str]]:
    """Triggers refusing every INSERT into ``table`` (``when``: only rows matching it)."""
    name = f"refuse_{table}"
    return {
        "sqlite": [
            f"CREATE TRIGGER {name} BEFORE INSERT ON {table} "
            + (f"WHEN {when} " if when else "")
            + f"BEGIN SELECT RAISE(ABORT, '{table} refused'); END",
        ],
        "postgresql": [
            f"CREATE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS "
            f"$$ BEGIN RAISE EXCEPTION '{table} refused'; END $$",
            f"CREATE TRIGGER {name} BEFORE INSERT ON {table} FOR EACH ROW "
            + (f"WHEN ({when}) " if when else "")
            + f"EXECUTE FUNCTION {name}()",
        ],
    }


def status_of(answer: bytes):
    conf = reader.parse(answer).message
    return conf.confirmation_header.message_status, conf.error_data


async def test_one_failing_message_does_not_sink_its_batch(net):
    lib, peer = await started(net)
    ok = [builders.request(PEER, lib.symbol, f"batch-{i}") for i in range(4)]
    clash = builders.request(PEER, lib.symbol, "batch-1", title="Another book")  # id taken
    unknown = builders.action(PEER, lib.symbol, "no-such-request", Action.CANCEL)
    bodies = [writer.serialise(e) for e in (ok[0], ok[1], clash, unknown, ok[2], ok[3])]
    commits = count_commits(lib.node.engine)
    answers = await asyncio.gather(*(lib.node.receive(b) for b in bodies))
    assert commits[0] == 1  # one transaction for the six
    statuses = [status_of(a) for a in answers]
    assert [s for s, _ in statuses] == [MessageStatus.OK, MessageStatus.OK, MessageStatus.ERROR,
                                        MessageStatus.ERROR, MessageStatus.OK, MessageStatus.OK]
    assert "already exists" in statuses[2][1][0].error_value
    assert statuses[3][1][0].error_type is ErrorType.UNRECOGNISED_DATA_VALUE
    stored = await rows(lib, t.transactions)
    assert sorted(r.requesting_request_id for r in stored) == [f"batch-{i}" for i in range(4)]
    assert all(r.title == "Moby Dick" for r in stored)  # the clash changed nothing
    received = await rows(lib, t.messages, t.messages.c.direction == "in")
    assert len(received) == 4
    await peer.wait_for(4)  # each stored request was answered through the outbox
    await peer.stop()


async def test_messages_a_few_loop_rounds_behind_join_the_batch(net, monkeypatch):
    """The writer lets the loop run a few rounds before taking a batch, so requests
    still on their way to the inbox (socket read, handler, parsing) join it."""
    lib, peer = await started(net)
    commits = count_commits(lib.node.engine)

    async def late(rari: str, rounds: int) -> bytes:
        for _ in range(rounds):
            await asyncio.sleep(0)
        return await lib.node.receive(writer.serialise(builders.request(PEER, lib.symbol, rari)))

    answers = await asyncio.gather(late("first", 0), *(late(f"late-{i}", 3) for i in range(4)))
    assert all(status_of(a)[0] is MessageStatus.OK for a in answers)
    assert commits[0] == 1
    # taken at once: two batches
    monkeypatch.setitem(service.ROUNDS_BEFORE_BATCH, lib.node.engine.dialect.name, 0)
    await asyncio.gather(late("second", 0), *(late(f"later-{i}", 3) for i in range(4)))
    assert commits[0] == 3
    await peer.wait_for(10)
    await peer.stop()


async def test_the_same_message_twice_in_one_batch_is_stored_once(net):
    lib, peer = await started(net)
    body = writer.serialise(builders.request(PEER, lib.symbol, "twice"))
    other = writer.serialise(builders.request(PEER, lib.symbol, "once"))
    commits = count_commits(lib.node.engine)
    first, middle, second = await asyncio.gather(
        lib.node.receive(body), lib.node.receive(other), lib.node.receive(body))
    assert commits[0] == 1
    assert first == second and status_of(first)[0] is MessageStatus.OK
    assert status_of(middle)[0] is MessageStatus.OK
    assert len(await rows(lib, t.transactions)) == 2
    assert len(await rows(lib, t.messages, t.messages.c.direction == "in")) == 2
    await peer.wait_for(2)
    await asyncio.sleep(0.3)
    assert len(peer.received) == 2  # one answer per request, not per copy
    await peer.stop()


# A constraint checked at COMMIT, not at INSERT: the only way to make a COMMIT fail
# after every statement of the batch succeeded.
_FAIL_AT_COMMIT = {
    "sqlite": [
        "CREATE TABLE fail_at_commit (x INTEGER REFERENCES transactions(id) "
        "DEFERRABLE INITIALLY DEFERRED)",
        "CREATE TRIGGER fail_at_commit AFTER INSERT ON messages "
        "WHEN NEW.requesting_request_id = 'poison' "
        "BEGIN INSERT INTO fail_at_commit VALUES (-1); END",
    ],
    "postgresql": [
        "CREATE FUNCTION fail_at_commit() RETURNS trigger LANGUAGE plpgsql AS "
        "$$ BEGIN RAISE EXCEPTION 'refused at commit'; END $$",
        "CREATE CONSTRAINT TRIGGER fail_at_commit AFTER INSERT ON messages "
        "DEFERRABLE INITIALLY DEFERRED FOR EACH ROW "
        "WHEN (NEW.requesting_request_id = 'poison') EXECUTE FUNCTION fail_at_commit()",
    ],
}


async def test_a_failed_commit_fails_every_message_of_its_batch(net):
    lib, peer = await started(net)
    await install(lib, _FAIL_AT_COMMIT)
    bodies = [writer.serialise(builders.request(PEER, lib.symbol, rari))
              for rari in ("before", "poison", "after")]
    results = await asyncio.gather(*(lib.node.receive(b) for b in bodies),
                                   return_exceptions=True)
    # Not stored, so not confirmed: over HTTP each is a 503 (tests/service/test_endpoint.py).
    assert all(isinstance(r, SQLAlchemyError) for r in results), results
    assert await rows(lib, t.transactions) == []
    assert await rows(lib, t.messages) == []
    assert await rows(lib, t.outbox) == []
    # The writer goes on: the next message is stored and confirmed.
    answer = await lib.node.receive(writer.serialise(builders.request(PEER, lib.symbol, "later")))
    assert status_of(answer)[0] is MessageStatus.OK
    assert [r.requesting_request_id for r in await rows(lib, t.transactions)] == ["later"]
    await peer.stop()


def count_savepoints(engine) -> list[int]:
    savepoints = [0]

    @event.listens_for(engine.sync_engine, "savepoint")
    def _savepoint(conn, _name):
        savepoints[0] += 1

    return savepoints


async def test_a_message_alone_is_stored_without_a_savepoint(net):
    lib, peer = await started(net)
    savepoints = count_savepoints(lib.node.engine)
    body = writer.serialise(builders.request(PEER, lib.symbol, "alone"))
    answer = await lib.node.receive(body)
    assert status_of(answer)[0] is MessageStatus.OK
    assert savepoints[0] == 0
    assert [r.requesting_request_id for r in await rows(lib, t.transactions)] == ["alone"]
    assert len(await rows(lib, t.messages, t.messages.c.direction == "in")) == 1
    await peer.wait_for(1)
    # The same message again, alone: the stored answer, nothing more stored.
    assert await lib.node.receive(body) == answer
    assert len(await rows(lib, t.messages, t.messages.c.direction == "in")) == 1
    await peer.stop()


async def test_a_failing_message_alone_answers_error_and_stores_nothing(net):
    lib, peer = await started(net)
    first = await lib.node.receive(writer.serialise(builders.request(PEER, lib.symbol, "taken")))
    assert status_of(first)[0] is MessageStatus.OK
    history_before = await rows(lib, t.history)
    clash = builders.request(PEER, lib.symbol, "taken", title="Another book")
    status, errors = status_of(await lib.node.receive(writer.serialise(clash)))
    assert status is MessageStatus.ERROR and "already exists" in errors[0].error_value
    unknown = builders.action(PEER, lib.symbol, "no-such-request", Action.CANCEL)
    status, errors = status_of(await lib.node.receive(writer.serialise(unknown)))
    assert status is MessageStatus.ERROR
    assert errors[0].error_type is ErrorType.UNRECOGNISED_DATA_VALUE
    assert [r.title for r in await rows(lib, t.transactions)] == ["Moby Dick"]
    assert len(await rows(lib, t.messages, t.messages.c.direction == "in")) == 1
    assert len(await rows(lib, t.history)) == len(history_before)
    await peer.wait_for(1)
    await peer.stop()


async def test_a_message_alone_failing_after_a_write_undoes_the_write(net):
    lib, peer = await started(net)
    await install(lib, refusing_inserts("outbox"))
    body = writer.serialise(builders.request(PEER, lib.symbol, "half-done"))
    with pytest.raises(SQLAlchemyError):  # not stored, so not confirmed (503 over HTTP)
        await lib.node.receive(body)
    assert await rows(lib, t.transactions) == []  # inserted before the outbox row, undone
    assert await rows(lib, t.messages) == []
    assert await rows(lib, t.history) == []
    await peer.stop()


def count_inserts(engine) -> dict[str, int]:
    """INSERT statements run (an executemany counts once), by table, and under
    ``"statements"`` how many statements did (on PostgreSQL one may write several
    tables: node.store.bulk)."""
    inserts: dict[str, int] = {}

    @event.listens_for(engine.sync_engine, "before_cursor_execute")
    def _count(_conn, _cursor, statement, *_):
        tables = re.findall(r"\bINSERT INTO (\w+)", statement)
        for table in tables:
            inserts[table] = inserts.get(table, 0) + 1
        if tables:
            inserts["statements"] = inserts.get("statements", 0) + 1

    return inserts


async def test_the_new_requests_of_a_batch_are_stored_together(net):
    lib, peer = await started(net)
    inserts = count_inserts(lib.node.engine)
    commits = count_commits(lib.node.engine)
    savepoints = count_savepoints(lib.node.engine)
    bodies = [writer.serialise(builders.request(PEER, lib.symbol, f"together-{i}"))
              for i in range(12)]
    answers = await asyncio.gather(*(lib.node.receive(b) for b in bodies))
    assert all(status_of(a)[0] is MessageStatus.OK for a in answers)
    assert commits[0] == 1
    assert savepoints[0] == 0  # nothing but new requests: no joint savepoint either
    # One statement per table for the twelve, not twelve.
    assert {k: inserts.get(k) for k in ("transactions", "messages", "history", "outbox")} == {
        "transactions": 1, "messages": 1, "history": 1, "outbox": 1}
    # On PostgreSQL the last three are one statement (a round trip each saved).
    assert inserts["statements"] == (2 if lib.node.engine.dialect.name == "postgresql" else 4)
    stored = await rows(lib, t.transactions)
    assert sorted(r.requesting_request_id for r in stored) == sorted(
        f"together-{i}" for i in range(12))
    assert len({r.public_id for r in stored}) == 12
    by_tx = {r.transaction_id for r in await rows(lib, t.messages, t.messages.c.direction == "in")}
    assert by_tx == {r.id for r in stored}  # each logged against its own request
    rari = {r.id: r.requesting_request_id for r in stored}
    queued = await rows(lib, t.outbox)
    assert len(queued) == 12
    for answer in queued:  # each answer queued against its own request
        assert f">{rari[answer.transaction_id]}<" in bytes(answer.body).decode()
    history = await rows(lib, t.history)
    assert {r.transaction_id for r in history} == set(rari)
    received_by = {r.transaction_id: r.detail["summary"] for r in history
                   if r.event == "received_request"}
    assert len(received_by) == 12
    assert all(f" {rari[tx_id]} " in summary for tx_id, summary in received_by.items())
    received = await peer.wait_for(12)
    assert {e.message.header.requesting_agency_request_id for e in received} == {
        f"together-{i}" for i in range(12)}
    await peer.stop()


async def test_a_new_request_of_a_batch_whose_id_is_stored_is_left_out_with_its_rows(net):
    """Stored together, a request whose id a stored request has is left out with its
    log, history and outbox rows, and answered ERROR by the one-by-one way; the others
    are stored with theirs."""
    lib, peer = await started(net)
    first = await lib.node.receive(writer.serialise(builders.request(PEER, lib.symbol, "old")))
    assert status_of(first)[0] is MessageStatus.OK
    await peer.wait_for(1)
    ids = ["new-1", "old", "new-2", "new-3"]
    answers = await asyncio.gather(*(lib.node.receive(writer.serialise(builders.request(
        PEER, lib.symbol, rari, title="Another book" if rari == "old" else "Moby Dick")))
        for rari in ids))
    statuses = [status_of(a) for a in answers]
    assert [s for s, _ in statuses] == [MessageStatus.OK, MessageStatus.ERROR,
                                        MessageStatus.OK, MessageStatus.OK]
    assert "already exists" in statuses[1][1][0].error_value
    stored = {r.id: r for r in await rows(lib, t.transactions)}
    assert sorted(r.requesting_request_id for r in stored.values()) == [
        "new-1", "new-2", "new-3", "old"]
    assert all(r.title == "Moby Dick" for r in stored.values())
    for table in (t.messages, t.history, t.outbox):
        assert {r.transaction_id for r in await rows(lib, table)} == set(stored), table.name
    received = await rows(lib, t.messages, t.messages.c.direction == "in")
    assert sorted(r.requesting_request_id for r in received) == ["new-1", "new-2", "new-3", "old"]
    by_request = {stored[r.transaction_id].requesting_request_id: r.transaction_id
                  for r in await rows(lib, t.outbox)}
    assert len(by_request) == 4  # an answer each, queued against its own request
    delivered = await peer.wait_for(4)
    assert sorted(e.message.header.requesting_agency_request_id for e in delivered) == sorted(
        ["old", "new-1", "new-2", "new-3"])
    await peer.stop()


async def test_new_requests_together_while_closed_for_lending_are_answered_unfilled(net):
    """Closed for lending: the batch's new requests are stored and answered Unfilled,
    whatever their holdings, still a statement per table for all of them."""
    lib = net.add("alpha", sections='[lending.closure]\nactive = true\nnote = "Stocktaking"\n')
    peer = Peer(PEER)
    net.add_peer(PEER, peer.endpoint)
    await peer.start()
    await net.start()
    inserts = count_inserts(lib.node.engine)
    answers = await asyncio.gather(*(
        lib.node.receive(writer.serialise(builders.request(PEER, lib.symbol, f"closed-{i}")))
        for i in range(5)))
    assert all(status_of(a)[0] is MessageStatus.OK for a in answers)
    assert inserts.get("transactions") == 1
    received = await peer.wait_for(5)
    assert {e.message.status_info.status.value for e in received} == {"Unfilled"}
    assert all("Stocktaking" in (e.message.message_info.note or "") for e in received)
    await peer.stop()


@pytest.mark.parametrize("mixed", [False, True], ids=["new-requests-only", "mixed"])
async def test_a_batch_of_new_requests_that_fails_together_is_stored_one_by_one(
        net, caplog, mixed):
    """A write refused for one request undoes the batch's joint savepoint (or, with
    nothing else in the batch, its whole transaction); the requests are then stored one
    by one, and only the refused one is not confirmed."""
    lib, peer = await started(net)
    await install(lib, refusing_inserts("transactions", "NEW.requesting_request_id = 'poison'"))
    ids = ["one", "two", "poison", "three"]
    envelopes = [builders.request(PEER, lib.symbol, rari) for rari in ids]
    if mixed:  # a message for an unknown request: stored one by one, answered ERROR
        envelopes.append(builders.action(PEER, lib.symbol, "no-such-request", Action.CANCEL))
    results = await asyncio.gather(
        *(lib.node.receive(writer.serialise(e)) for e in envelopes), return_exceptions=True)
    assert "4 new requests together failed" in caplog.text
    if mixed:
        assert status_of(results[4])[0] is MessageStatus.ERROR
    assert isinstance(results[2], SQLAlchemyError)  # not stored, not confirmed: a 503
    assert all(status_of(results[n])[0] is MessageStatus.OK for n in (0, 1, 3))
    assert sorted(r.requesting_request_id for r in await rows(lib, t.transactions)) == [
        "one", "three", "two"]
    assert len(await rows(lib, t.messages, t.messages.c.direction == "in")) == 3
    await peer.wait_for(3)
    await peer.stop()


async def test_many_messages_at_once_over_http_are_all_stored_and_answered(net):
    lib, peer = await started(net)
    commits = count_commits(lib.node.engine)
    envs = [builders.request(PEER, lib.symbol, f"http-{i}") for i in range(60)]
    answers = await asyncio.gather(*(peer.send(lib.endpoint, e) for e in envs))
    assert all(status == 200 and status_of(a)[0] is MessageStatus.OK for status, a in answers)
    assert len(await rows(lib, t.transactions)) == 60
    await peer.wait_for(60, timeout=30)
    assert commits[0] < 60  # some messages shared a transaction
    await peer.stop()


async def test_agency_ids_are_stored_casefolded_and_found_through_the_index(net):
    lib, peer = await started(net)
    env = builders.request("ISIL:xx-Peer", lib.symbol, "mixed-case")
    answer = await lib.node.receive(writer.serialise(env))
    assert status_of(answer)[0] is MessageStatus.OK
    [row] = await rows(lib, t.transactions)
    assert row.requesting_agency_id == "isil:xx-peer"
    # A later message names the requester in another case: still the same request (the
    # machine answers it; unknown, it would be "no request 'mixed-case'").
    cancel = builders.action("ISIL:XX-PEER", lib.symbol, "mixed-case", Action.CANCEL)
    _, errors = status_of(await lib.node.receive(writer.serialise(cancel)))
    assert not any("no request" in e.error_value for e in errors), errors
    async with lib.node.engine.connect() as conn:
        found = await repo.lock_transaction(conn, role="lending", requesting_agency_id="iSiL:XX-PEER",
                                            requesting_request_id="mixed-case")
        assert found is not None and found.id == row.id
        plan = await explain(conn, repo._LOCK_BY_REQUEST_ID, {
            "role": "lending", "agency": "isil:xx-peer", "request_id": "mixed-case"})
    if lib.db_url.startswith("sqlite"):
        assert "(role=? AND requesting_agency_id=? AND requesting_request_id=?)" in plan, plan
    else:
        assert "Index" in plan and "Seq Scan" not in plan and "lower" not in plan, plan
    await peer.stop()


async def explain(conn, statement, params: dict) -> str:
    sql = str(statement.params(**params).compile(dialect=conn.dialect,
                                                 compile_kwargs={"literal_binds": True}))
    if conn.dialect.name == "sqlite":
        return "\n".join(r[-1] for r in await conn.exec_driver_sql("EXPLAIN QUERY PLAN " + sql))
    await conn.exec_driver_sql("SET enable_seqscan = off")  # as on a big table
    return "\n".join(r[0] for r in await conn.exec_driver_sql("EXPLAIN " + sql))


async def test_auto_locate_reads_the_holdings_in_one_query(net):
    lib = net.add("alpha", sections="[lending]\nauto_answer = true\n")
    await net.start()
    now = lib.node.clock()
    async with lib.node.engine.begin() as conn:
        await holdings_repo.import_records(conn, [HoldingsRecord(
            record_id="R1", title="Moby Dick", author="Melville", isbns=("9780140449136",),
            items=(HoldingsItem(barcode="B1"), HoldingsItem(barcode="B2")))],
            replace=True, now=now)
    statements: list[str] = []
    request = builders.request(PEER, lib.symbol, "r", isbn="9780140449136").message
    async with lib.node.engine.connect() as conn:
        ours = conn.sync_connection  # the outbox and the timers run queries meanwhile

        @event.listens_for(lib.node.engine.sync_engine, "before_cursor_execute")
        def _count(sync_conn, _cursor, statement, *_):
            if sync_conn is ours and statement.startswith(("SELECT", "WITH")):
                statements.append(statement)

        located = await repo.locate(conn, request, lib.config.lending, lib.node.symbol)
    assert len(statements) == 1
    assert located.record_id == "R1" and located.item.barcode in ("B1", "B2")
    async with lib.node.engine.connect() as conn:
        assert (await conn.execute(select(func.count()).select_from(t.holdings_items))
                ).scalar_one() == 2


async def test_a_batch_reads_what_it_needs_beside_its_transaction_on_postgresql(net):
    """PostgreSQL: a batch's answers already given and its requests' holdings are read
    at once on other connections while its own reads the closures: each query is a
    round trip after which the writer waits its turn, so one after the other they were
    most of a busy batch's time.  SQLite reads them on its one connection."""
    lib = net.add("alpha", sections="[lending]\nauto_answer = true\n")
    peer = Peer(PEER)
    net.add_peer(PEER, peer.endpoint)
    await peer.start()
    await net.start()
    async with lib.node.engine.begin() as conn:
        await holdings_repo.import_records(conn, [HoldingsRecord(
            record_id="R1", title="Moby Dick", author="Melville", isbns=("9780140449136",),
            items=(HoldingsItem(barcode="B1"),))], replace=True, now=lib.node.clock())
    ran: list[tuple[int, str]] = []

    @event.listens_for(lib.node.engine.sync_engine, "before_cursor_execute")
    def _grab(sync_conn, _cursor, statement, *_):
        ran.append((id(sync_conn.connection.dbapi_connection), statement))

    answers = await asyncio.gather(*(lib.node.receive(writer.serialise(builders.request(
        PEER, lib.symbol, f"beside-{i}", isbn="9780140449136"))) for i in range(5)))
    assert all(status_of(a)[0] is MessageStatus.OK for a in answers)

    def where(marker: str) -> set[int]:
        return {conn for conn, statement in ran if marker in statement}

    [writer_conn] = where("INSERT INTO transactions")
    apart = lib.node.engine.dialect.name == "postgresql"
    assert where("FROM closures") == {writer_conn}
    for read in ("WHERE messages.digest", "candidate_ids"):  # answers given; holdings
        assert where(read) and (writer_conn not in where(read)) is apart, read
    received = await peer.wait_for(5)
    assert {e.message.status_info.status.value for e in received} == {"WillSupply"}
    await peer.stop()


async def waiting_for_a_lock(engine, query: str) -> None:
    """Until a PostgreSQL query holding ``query`` waits for a lock."""
    async with engine.connect() as watch:
        # A transaction reads one snapshot of pg_stat_activity: one per look.
        while not (await watch.execute(text(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                " AND query LIKE :query"), {"query": f"%{query}%"})).scalar_one():
            await watch.rollback()
            await asyncio.sleep(0.01)


async def test_a_failing_read_fails_its_batch_and_the_writer_goes_on(net, caplog):
    """A batch's reads failing (here auto-locate's, its table gone): nothing is stored,
    nothing confirmed, and the next batch is stored.  On PostgreSQL the locate fails
    on a connection of its own while the batch's connection still reads the closures
    (held up by a lock here): the batch's failure waits for that read, as its
    connection cannot be rolled back while a query runs on it."""
    lib, peer = await started(net)
    async with lib.node.engine.begin() as conn:
        await conn.execute(text("ALTER TABLE holdings_identifiers RENAME TO hidden"))
    unread = [writer.serialise(builders.request(PEER, lib.symbol, f"unread-{i}"))
              for i in range(3)]
    if lib.node.engine.dialect.name == "postgresql":
        async with lib.node.engine.connect() as locker:
            await locker.execute(text("LOCK TABLE closures IN ACCESS EXCLUSIVE MODE"))
            batch = asyncio.gather(*(lib.node.receive(b) for b in unread),
                                   return_exceptions=True)
            await waiting_for_a_lock(lib.node.engine, "FROM closures")
            await asyncio.sleep(0.2)  # the locate has failed meanwhile
            await locker.commit()
            results = await batch
    else:
        results = await asyncio.gather(*(lib.node.receive(b) for b in unread),
                                       return_exceptions=True)
    assert all(isinstance(r, SQLAlchemyError) for r in results), results
    assert "holdings_identifiers" in str(results[0])
    assert await rows(lib, t.transactions) == []
    assert "another operation is in progress" not in caplog.text
    async with lib.node.engine.begin() as conn:
        await conn.execute(text("ALTER TABLE hidden RENAME TO holdings_identifiers"))
    answers = await asyncio.gather(*(lib.node.receive(writer.serialise(builders.request(
        PEER, lib.symbol, f"read-{i}"))) for i in range(3)))
    assert all(status_of(a)[0] is MessageStatus.OK for a in answers)
    assert len(await rows(lib, t.transactions)) == 3
    await peer.wait_for(3)
    await peer.stop()


async def test_sigkill_mid_batches_loses_no_confirmed_message(tmp_path, db_url):
    """Many clients at once, so the writer stores batches; kill it mid-traffic; every
    message it confirmed is there after a restart, and its answer goes out."""
    port = free_port()
    peer = Peer(PEER)
    peer.answer = lambda env: 503  # the peer refuses for now: our answers stay queued
    await peer.start()
    database = db_url.replace("+aiosqlite", "").replace("+asyncpg", "")
    config = write_config(tmp_path / "config.toml", port, database, peer.endpoint)
    config.write_text(config.read_text() + "\n[limits]\npartner_requests_per_minute = 1000000\n")
    await migrate_async(db_url)
    node = NodeProcess(config, port, tmp_path / "node.log")
    await node.start()
    confirmed: list[str] = []
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as http:
            async def client(n: int) -> None:
                for i in range(1000):
                    rari = f"c{n}-{i}"
                    if await send(http, port, rari):
                        confirmed.append(rari)
                    elif node.proc.poll() is not None:
                        return

            clients = [asyncio.create_task(client(n)) for n in range(16)]
            while len(confirmed) < 100:
                await asyncio.sleep(0.01)
            node.kill()
            await asyncio.gather(*clients)
        peer.answer = lambda env: None
        await node.start()
        engine = create_engine(db_url)
        try:
            async with engine.connect() as conn:
                stored = {r.requesting_request_id for r in await conn.execute(
                    select(t.messages.c.requesting_request_id)
                    .where(t.messages.c.direction == "in"))}
        finally:
            await engine.dispose()
        assert set(confirmed) <= stored
        await peer.wait_for(len(confirmed), timeout=60)
        answered = {e.message.header.requesting_agency_request_id for e in peer.received}
        assert set(confirmed) <= answered
    finally:
        node.stop()
        await peer.stop()


@pytest.mark.parametrize("case", ["request in a batch", "request alone",
                                  "notification in a batch"])
async def test_a_message_another_process_stored_meanwhile_gets_its_answer_and_the_batch_goes_on(
        net, monkeypatch, case):
    """PostgreSQL, several node processes: a partner's resend reached another process,
    which stored it while this one's batch was open. Its machine refuses the copy (a
    request id taken), or the batch's write meets the stored message's unique digest;
    either way the copy gets the stored answer, and the rest of the batch is stored
    (before, the copy got an ERROR, or the whole batch failed and got 503s)."""
    lib, peer = await started(net)
    if lib.node.engine.dialect.name == "sqlite":
        pytest.skip("one node process per SQLite file: its one writer stores every message")
    if case.startswith("notification"):
        await lib.node.receive(writer.serialise(builders.request(PEER, lib.symbol, "both")))
        both = writer.serialise(builders.action(PEER, lib.symbol, "both", Action.NOTIFICATION,
                                                note="Is it on its way?"))
    else:
        both = writer.serialise(builders.request(PEER, lib.symbol, "both"))
    batch = [both] if case.endswith("alone") else [
        both, writer.serialise(builders.request(PEER, lib.symbol, "mine"))]
    other = service.Node(lib.config, clock=net.clock, timer_interval_seconds=0.1)
    await other.start()
    real, theirs = repo.confirmations_for_digests, []

    async def meanwhile(conn, digests):
        found = await real(conn, digests)
        if not theirs:  # our batch has read what is stored; the other process stores now
            theirs.append(None)
            theirs[0] = await other.receive(both)
        return found

    monkeypatch.setattr(repo, "confirmations_for_digests", meanwhile)
    try:
        answers = await asyncio.gather(*(lib.node.receive(b) for b in batch))
    finally:
        await other.stop()
    assert status_of(theirs[0])[0] is MessageStatus.OK
    assert answers[0] == theirs[0]  # the stored answer, not an error of a second copy
    assert all(status_of(a)[0] is MessageStatus.OK for a in answers)
    stored = await rows(lib, t.transactions)
    assert sorted(r.requesting_request_id for r in stored) == sorted(
        ["both", "mine"][:len(batch)])
    # Each message stored once (the notification's request too).
    received = await rows(lib, t.messages, t.messages.c.direction == "in")
    assert len(received) == len(batch) + case.startswith("notification")
    await peer.stop()


def deadlock_once(when: str) -> dict[str, list[str]]:
    """PostgreSQL: the first statement that fires a trigger ``when`` ("BEFORE INSERT ON
    t FOR EACH STATEMENT"...) fails as a deadlock's victim does (SQLSTATE 40P01).  A
    sequence counts the firings: its values survive the rollback."""
    return {"postgresql": [
        "CREATE SEQUENCE deadlocks",
        "CREATE FUNCTION deadlock_once() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
        "IF nextval('deadlocks') = 1 THEN "
        "RAISE EXCEPTION 'deadlock detected (a test''s)' USING ERRCODE = '40P01'; END IF; "
        "RETURN NEW; END $$",
        f"CREATE TRIGGER deadlock_once {when} EXECUTE FUNCTION deadlock_once()",
    ]}


async def postgresql_only(net):
    lib, peer = await started(net)
    if lib.node.engine.dialect.name != "postgresql":
        await peer.stop()
        pytest.skip("PostgreSQL's: SQLite's one writer neither deadlocks nor loses its file")
    return lib, peer


async def test_a_batch_the_database_undid_is_stored_again(net, caplog):
    """A deadlock (or a serialization failure) undoes the batch's transaction: it is
    stored again at once, and its partners get OK, not 503."""
    lib, peer = await postgresql_only(net)
    await install(lib, deadlock_once("BEFORE INSERT ON messages FOR EACH STATEMENT"))
    bodies = [writer.serialise(builders.request(PEER, lib.symbol, f"undone-{i}"))
              for i in range(3)]
    answers = await asyncio.gather(*(lib.node.receive(b) for b in bodies))
    assert all(status_of(a)[0] is MessageStatus.OK for a in answers)
    assert len(await rows(lib, t.transactions)) == 3
    assert len(await rows(lib, t.messages, t.messages.c.direction == "in")) == 3
    async with lib.node.engine.connect() as conn:  # undone once, then stored
        assert await conn.scalar(text("SELECT last_value FROM deadlocks")) == 2
    assert "storing a batch of 3 messages failed, trying again" in caplog.text
    await peer.wait_for(3)
    await peer.stop()


async def test_a_message_of_a_batch_the_database_undid_takes_the_batch_again(net, caplog):
    """A deadlock met by one message of a batch, in its savepoint: the batch's other
    locks may be in the cycle, so the whole batch is stored again, and that message
    gets OK too, not 503."""
    lib, peer = await postgresql_only(net)
    first = await lib.node.receive(writer.serialise(builders.request(PEER, lib.symbol, "held")))
    assert status_of(first)[0] is MessageStatus.OK
    await install(lib, deadlock_once(
        "BEFORE UPDATE ON transactions FOR EACH ROW "
        "WHEN (NEW.state::text LIKE '%Is it on its way%')"))
    bodies = [writer.serialise(builders.request(PEER, lib.symbol, "fresh-1")),
              writer.serialise(builders.action(PEER, lib.symbol, "held", Action.NOTIFICATION,
                                               note="Is it on its way?")),
              writer.serialise(builders.request(PEER, lib.symbol, "fresh-2"))]
    answers = await asyncio.gather(*(lib.node.receive(b) for b in bodies))
    assert all(status_of(a)[0] is MessageStatus.OK for a in answers)
    assert "storing a batch of 3 messages failed, trying again" in caplog.text
    assert len(await rows(lib, t.transactions)) == 3
    assert len(await rows(lib, t.messages, t.messages.c.direction == "in")) == 4
    await peer.stop()


async def test_a_batch_whose_connections_the_server_dropped_is_stored_again(net, caplog):
    """The server ends the node's connections (a restart, a proxy's idle cut): the next
    batch meets a dead pooled connection, which SQLAlchemy replaces, and is stored on
    the new one.  (A node of its own on the database, never started, so that no timer
    or outbox meets the dead connections first.)"""
    lib, peer = await postgresql_only(net)
    node = service.Node(lib.config, engine=create_engine(lib.db_url), clock=net.clock)
    try:
        first = await node.receive(writer.serialise(builders.request(PEER, lib.symbol, "first")))
        assert status_of(first)[0] is MessageStatus.OK
        async with lib.node.engine.connect() as conn:
            ended = await conn.scalar(text(
                "SELECT count(pg_terminate_backend(pid, 5000)) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"))
        assert ended >= 1
        bodies = [writer.serialise(builders.request(PEER, lib.symbol, f"after-{i}"))
                  for i in range(3)]
        answers = await asyncio.gather(*(node.receive(b) for b in bodies))
    finally:
        await node.engine.dispose()
    assert all(status_of(a)[0] is MessageStatus.OK for a in answers)
    assert "storing a batch of 3 messages failed, trying again" in caplog.text
    assert len(await rows(lib, t.transactions)) == 4
    await peer.wait_for(4)  # lib's worker sends what the other node queued
    await peer.stop()


async def test_the_outbox_records_again_a_result_the_database_undid(net, caplog):
    """The transaction recording a delivered answer is undone (a deadlock): it runs
    again at once, so the answer is marked sent now, and not sent twice when its
    lease runs out."""
    lib, peer = await postgresql_only(net)
    await install(lib, deadlock_once(
        "BEFORE UPDATE ON outbox FOR EACH ROW WHEN (NEW.state = 'sent')"))
    answer = await lib.node.receive(writer.serialise(builders.request(PEER, lib.symbol, "r")))
    assert status_of(answer)[0] is MessageStatus.OK
    for _ in range(100):
        async with lib.node.engine.connect() as conn:
            states = list(await conn.scalars(select(t.outbox.c.state)))
        if states == ["sent"]:
            break
        await asyncio.sleep(0.05)
    assert states == ["sent"]
    assert "recording failed, trying again" in caplog.text
    await asyncio.sleep(0.3)
    assert len(peer.received) == 1
    await peer.stop()
