"""The leases of an outbox worker that is gone are released at once (PostgreSQL:
node/liveness.py), those of a worker running are kept; a node that stops releases
its own."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select, text

from node.liveness import WorkerLock
from node.protocol import writer
from node.store import outbox_repo as repo
from node.store.db import create_engine
from node.store.tables import outbox
from tests import builders
from tests.peer import Peer
from tests.store.test_outbox_worker import new_transaction, now


@pytest.fixture
def pg_engine(migrated_engine):
    if migrated_engine.dialect.name != "postgresql":
        pytest.skip("on SQLite one node process owns the file: leases go at its start")
    return migrated_engine


async def lease(engine, worker: str, *, peer: str = "ISIL:YY-1",
                url: str = "http://127.0.0.1:9/iso18626", body: bytes = b"<m/>") -> int:
    """A row of a request of its own, leased to ``worker`` for the hour to come (as a
    process killed while sending leaves it)."""
    async with engine.begin() as conn:
        row = await repo.enqueue_leased(
            conn, transaction_id=await new_transaction(conn), peer=peer, url=url,
            kind="request", body=body, now=now(), worker_id=worker,
            until=now() + timedelta(hours=1))
    return row.id


async def holders(engine) -> dict[int, str | None]:
    async with engine.connect() as conn:
        return dict((await conn.execute(select(outbox.c.id, outbox.c.locked_by))).all())


async def test_a_gone_workers_leases_are_released_a_running_ones_kept(pg_engine):
    running, me = WorkerLock(pg_engine, "node0-running"), WorkerLock(pg_engine, "node1-me")
    await running.hold()
    rows = {w: await lease(pg_engine, w) for w in ("node0-running", "node9-gone", "node1-me")}
    try:
        assert await me.sweep(now()) == 1
        assert await holders(pg_engine) == {rows["node0-running"]: "node0-running",
                                            rows["node9-gone"]: None,
                                            rows["node1-me"]: "node1-me"}
        assert await me.sweep(now()) == 0  # nothing more to release

        # A worker whose connection broke looks gone (its rows may go twice, as when a
        # lease runs out), until it holds its lock again.
        async with pg_engine.connect() as conn:  # (waiting up to 5 s for it to end)
            await conn.execute(text(
                "SELECT pg_terminate_backend(l.pid, 5000) FROM pg_locks l JOIN pg_database d "
                "ON d.oid = l.database WHERE d.datname = current_database() "
                "AND l.locktype = 'advisory' AND l.classid = 18627 "
                "AND l.objid::int = hashtext('node0-running')"))
        assert await me.sweep(now()) == 1
        await running.hold()  # its sweep's first step
        again = await lease(pg_engine, "node0-running")
        assert await me.sweep(now()) == 0
        assert (await holders(pg_engine))[again] == "node0-running"

        await running.release()  # it stops (or is killed): its leases go
        assert await me.sweep(now()) == 1
        assert (await holders(pg_engine))[again] is None
    finally:
        await running.release()
        await me.release()


async def test_a_node_sends_at_once_what_a_worker_gone_had_leased(net, tmp_path):
    peer = Peer("ISIL:XX-PEER")
    await peer.start()
    lib = net.add("alpha")
    net.add_peer("ISIL:XX-PEER", peer.endpoint)
    try:
        await net.start()
        if lib.node.engine.dialect.name != "postgresql":
            pytest.skip("on SQLite one node process owns the file: leases go at its start")
        body = writer.serialise(builders.request("ISIL:XX-ALPHA", "ISIL:XX-PEER", "R-gone",
                                                 title="A book"))
        await lease(lib.node.engine, "node7-gone", peer="ISIL:XX-PEER", url=peer.endpoint,
                    body=body)
        await peer.wait_for(1, timeout=10)
    finally:
        await peer.stop()


async def test_a_node_that_stops_leaves_what_it_had_not_sent_to_the_next_worker(net):
    # Leased at insert as the node stopped (its worker gone, the row never taken):
    # released at the stop, on either database, rather than left for the lease to run out.
    lib = net.add("alpha")
    await net.start()
    await lease(lib.node.engine, lib.node.worker_id)
    engine = create_engine(lib.config.node.database_url)
    try:
        await net.stop_library(lib)  # the app's cleanup stops the node
        assert list((await holders(engine)).values()) == [None]
    finally:
        await engine.dispose()
