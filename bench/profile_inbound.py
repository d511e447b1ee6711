"""The inbound path in process, no HTTP: where does Node.receive's time go?

Builds a Node on a fresh migrated database with holdings, then calls
``Node.receive`` for ``--n`` new requests one after another, or ``--batch`` at a
time (one batch of the writer each; the outbox worker and scheduler are NOT
started, so only the receive transaction is measured),
and prints: ms per message (median, p99), SQL statements per message and their
kinds, time inside the database driver vs the rest, and the top functions of a
cProfile run (``--cprofile``).

    .venv/bin/python bench/profile_inbound.py [--db sqlite|postgresql] [--n 300] [--batch 1]
        [--cprofile] [--breakdown]
"""

from __future__ import annotations

import asyncio
import cProfile
import io
import os
import pstats
import sys
import time
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import (  # noqa: E402
    Databases,
    header,
    holdings_csv,
    median,
    node_config,
    parse_args,
    pct,
    request_body,
    workdir,
    write_config,
)

US = "ISIL:XX-NODE"
PEER = "ISIL:XX-PEER"


async def run(args, d: Path, dbs: Databases) -> None:
    from sqlalchemy import event

    from node.config import load
    from node.serve_cli import quiet_garbage_collector
    from node.service import Node
    from node.store import db, holdings_repo
    from node.supplier import holdings

    url = await dbs.amake("prof")
    cfg = load(write_config(d, "node", node_config(
        symbol=US, port=1, db_url=url, partners=[(PEER, "http://127.0.0.1:9/iso18626")])))
    engine = db.create_engine(cfg.node.database_url)
    await db.migrate_async(engine)
    books = holdings_csv(d / "h.csv", 2000)
    report = holdings.parse_csv((d / "h.csv").read_text())
    async with engine.begin() as conn:
        await holdings_repo.import_records(conn, report.records, replace=True,
                                           now=datetime.now(timezone.utc))
    node = Node(cfg, engine=engine)
    spans = instrument() if args.breakdown else None
    hops = count_hops() if engine.dialect.name == "sqlite" else None
    stmts: Counter[str] = Counter()
    driver_time = [0.0]
    t_exec: dict = {}

    @event.listens_for(engine.sync_engine, "before_cursor_execute")
    def _before(conn, cursor, statement, parameters, context, executemany):
        stmts[" ".join(statement.split()[:4])[:60]] += 1
        t_exec[id(cursor)] = time.perf_counter()

    @event.listens_for(engine.sync_engine, "after_cursor_execute")
    def _after(conn, cursor, statement, parameters, context, executemany):
        driver_time[0] += time.perf_counter() - t_exec.pop(id(cursor), time.perf_counter())

    bodies = [request_body(PEER, US, f"p-{i}", title=books[i % len(books)][1],
                           isbn=books[i % len(books)][0]) for i in range(args.n + 20)]
    for b in bodies[:20]:  # warm-up: statement caches
        await node.receive(b)
    quiet_garbage_collector()  # as `ill-node serve` does once started
    stmts.clear()
    driver_time[0] = 0.0
    if spans is not None:
        spans.clear()
    if hops is not None:
        hops["n"] = 0
    times = []
    cpu0 = time.thread_time()
    proc0 = time.process_time()
    prof = cProfile.Profile() if args.cprofile else None
    t0 = time.perf_counter()
    if prof:
        prof.enable()
    rest = bodies[20:]
    for i in range(0, len(rest), args.batch):
        group = rest[i:i + args.batch]
        s = time.perf_counter()
        # Handed over together, they reach the writer as one batch (group commit).
        answers = await asyncio.gather(*(node.receive(b) for b in group))
        times.extend([(time.perf_counter() - s)] * len(group))
        for answer in answers:
            assert b"messageStatus>OK<" in answer, answer[:500]
    if prof:
        prof.disable()
    wall = time.perf_counter() - t0
    main_cpu = time.thread_time() - cpu0
    all_cpu = time.process_time() - proc0
    n = len(times)
    print(f"Node.receive, {args.batch} at a time, {n} new requests: median "
          f"{1000 * median(times):.2f} ms, "
          f"p99 {1000 * pct(times, 99):.2f} ms, {n / wall:.0f}/s"
          f"{' (under cProfile: inflated)' if prof else ''}")
    print(f"CPU per message: event-loop thread {1000 * main_cpu / n:.2f} ms, whole process "
          f"{1000 * all_cpu / n:.2f} ms (the rest of the {1000 * wall / n:.2f} ms wall is waiting: "
          f"thread hand-offs, DB server, commit)")
    print(f"SQL statements per message: {sum(stmts.values()) / n:.1f}; time in "
          f"cursor.execute (driver+DB, sync side) {1000 * driver_time[0] / n:.2f} ms/msg")
    for s, c in stmts.most_common():
        print(f"  {c / n:5.2f}  {s}")
    if hops is not None:
        print(f"aiosqlite thread hand-offs per message: {hops['n'] / n:.1f}")
    if spans is not None:
        print("breakdown (wall ms / event-loop-thread CPU ms per message; nested spans overlap):")
        for name, (calls, wall_s, cpu_s) in sorted(spans.items(), key=lambda kv: -kv[1][1]):
            print(f"  {1000 * wall_s / n:7.3f} {1000 * cpu_s / n:7.3f}  x{calls / n:4.1f}  {name}")
    if prof:
        out = io.StringIO()
        pstats.Stats(prof, stream=out).sort_stats("cumulative").print_stats(45)
        print(out.getvalue()[:9000])
        out = io.StringIO()
        pstats.Stats(prof, stream=out).sort_stats("tottime").print_stats(25)
        print(out.getvalue()[:6000])
        if dump := os.environ.get("ILL_PROFILE_DUMP"):  # for pstats: callers and callees
            prof.dump_stats(dump)
    await engine.dispose()


def count_hops():
    """Count calls that cross to aiosqlite's worker thread."""
    import aiosqlite.core as core

    counter = {"n": 0}
    original = core.Connection._execute

    async def _execute(self, fn, *a, **kw):
        counter["n"] = counter.get("n", 0) + 1
        return await original(self, fn, *a, **kw)

    core.Connection._execute = _execute
    return counter


def instrument() -> dict:
    """Wrap the inbound path's steps (in our process only) to time them."""
    import functools
    import inspect

    from node import service
    from node.protocol import reader, writer
    from node.store import holdings_repo, outbox_repo, repo
    from node.supplier import machine as smachine

    spans: dict[str, list] = {}

    def wrap(owner, attr, label):
        fn = getattr(owner, attr)
        if inspect.iscoroutinefunction(fn):
            @functools.wraps(fn)
            async def timed(*a, **kw):
                w, c = time.perf_counter(), time.thread_time()
                try:
                    return await fn(*a, **kw)
                finally:
                    s = spans.setdefault(label, [0, 0.0, 0.0])
                    s[0] += 1
                    s[1] += time.perf_counter() - w
                    s[2] += time.thread_time() - c
        else:
            @functools.wraps(fn)
            def timed(*a, **kw):
                w, c = time.perf_counter(), time.thread_time()
                try:
                    return fn(*a, **kw)
                finally:
                    s = spans.setdefault(label, [0, 0.0, 0.0])
                    s[0] += 1
                    s[1] += time.perf_counter() - w
                    s[2] += time.thread_time() - c
        setattr(owner, attr, timed)

    wrap(reader, "parse", "reader.parse (lxml parse+validate+model)")
    wrap(writer, "serialise", "writer.serialise (confirmation + outgoing message)")
    wrap(service.Node, "_receive_business", "_receive_business (checks, then waits for the writer's commit)")
    wrap(service.Node, "_store_batch", "_store_batch (one transaction incl. commit)")
    wrap(service.Node, "_dispatch", "_dispatch (inside the message's savepoint)")
    wrap(repo, "confirmations_for_digests", "repo.confirmations_for_digests (idempotency SELECT, per batch)")
    wrap(repo, "lock_transaction", "repo.lock_transaction (duplicate check SELECT)")
    wrap(repo, "closures", "repo.closures (SELECT closures, per batch)")
    wrap(service.Node, "_store_new_requests", "_store_new_requests (a batch's new requests, "
         "one savepoint)")
    wrap(repo, "locate_many", "repo.locate_many (auto-locate, 1 SELECT per batch)")
    wrap(holdings_repo, "candidates_many", "  holdings_repo.candidates_many (1 SELECT)")
    wrap(smachine, "receive_request", "supplier machine.receive_request (pure)")
    wrap(repo, "insert_transaction", "repo.insert_transaction (INSERT..RETURNING)")
    wrap(repo, "insert_new_transactions", "repo.insert_new_transactions (INSERT..RETURNING, "
         "per batch)")
    wrap(repo, "save_state", "repo.save_state (UPDATE transactions, state JSON)")
    wrap(repo, "add_history", "repo.add_history (INSERT history)")
    wrap(repo, "add_history_event", "repo.add_history_event (INSERT history)")
    wrap(repo, "write_rows", "repo.write_rows (INSERT messages in + out, history, outbox, "
         "per batch)")
    wrap(outbox_repo, "enqueue_leased", "outbox_repo.enqueue_leased (INSERT outbox..RETURNING)")
    wrap(service.Node, "_queue", "_queue (serialise + log + enqueue)")
    wrap(service.Node, "_apply", "_apply (save_state+history+queue)")
    return spans


def main() -> int:
    args = parse_args(__doc__.splitlines()[0], lambda ap: (
        ap.add_argument("--n", type=int, default=300),
        ap.add_argument("--cprofile", action="store_true"),
        ap.add_argument("--breakdown", action="store_true", help="time each step"),
        ap.add_argument("--batch", type=int, default=1,
                        help="hand over this many at a time: the writer stores them as one batch"),
    ))
    header("profile_inbound", args)
    with workdir("prof") as d:
        dbs = Databases(args.db, d)

        async def go():
            try:
                await run(args, d, dbs)
            finally:
                await dbs.aclose()

        asyncio.run(go())
    return 0


if __name__ == "__main__":
    sys.exit(main())
