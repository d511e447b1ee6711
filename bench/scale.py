"""Scale: staff list/search and auto-locate latency with 1,000,000 requests and
1,000,000 holdings items.

Fills a fresh, migrated database (node.store.db.migrate_async; the real tables
of node/store/tables.py) by SQLAlchemy Core executemany in batches of 10,000:

- ``transactions``: N requests (70 % lending, 30 % borrowing), statuses spread
  like a live system (most completed), titles from a word list, a small state
  JSON, timestamps over three years;
- ``holdings_records``: N/2 records, each with an ISBN and a local id in
  ``holdings_identifiers`` and two ``holdings_items``: N items.

Lending rows name a located item barcode (and shipped rows the same as shipped), so
the triggers of migration 0003 fill ``request_barcodes``; they also fill the title
words' full-text table (SQLite) and ``status_counts`` during the load.

Then times, through the node's own query functions (node.store.search, node.store.repo),
each ``--runs`` times (p50/p99; a query is cut short after ~15 s of repeats):

- staff lists (``search.search``): by status, unfiltered, needs attention; the next
  page by cursor; ten pages by cursor;
- searches: one and two title words, a word with a status filter, a request id, an
  item barcode, a patron id;
- ``repo.lock_transaction`` (the duplicate check every inbound Request makes);
- ``repo.view_by_public_id`` (a staff member opens one request);
- auto-locate ``repo.locate`` for an ISBN hit and for a title-only hit;
- the desk (``--desk``: these only): check-in by barcode (``lending_repo.out_by_barcode``,
  scanned in lower case), the lending list's ``?barcode=`` filter, receive by the
  lender's request id (``borrowing_repo.by_lender_request_id``; the loaded borrowing
  rows have none, so this times the miss), a return scan (``borrowing_repo.with_barcode``,
  a miss too), the partner filter, and the admin's partners screen
  (``partner_status.delivery_status``; the outbox is empty unless filled otherwise);

prints the query plans (EXPLAIN) of the slow ones and the database size.
PostgreSQL gets ANALYZE after the load (autovacuum would do it); SQLite does
not (the node never runs ANALYZE).

    .venv/bin/python bench/scale.py [--db sqlite|postgresql] [--quick]   # quick: 100,000
    .venv/bin/python bench/scale.py --url sqlite:////tmp/scale.db         # kept, reused
    .venv/bin/python bench/scale.py --url ... --rows 1000000 --desk        # desk paths only
"""

from __future__ import annotations

import asyncio
import os
import random
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import (  # noqa: E402
    Databases,
    header,
    isbn13,
    median,
    node_config,
    parse_args,
    pct,
    workdir,
    write_config,
)

WORDS = ("history river garden winter music stone silver night city light ocean mountain "
         "letters empire science children journey shadow island memory language machine "
         "forest kingdom theory secret voyage fire glass harbour").split()
RARE = "zanzibar"  # in about 1 title in 2,000
LENDING = [("LOAN_COMPLETED", 70), ("UNFILLED", 8), ("CANCELLED", 4), ("SHIPPED", 8),
           ("WILL_SUPPLY", 3), ("RECEIVED", 1), ("RETURN_SHIPPED", 2), ("RETRY_POSSIBLE", 2),
           ("OVERDUE", 1), ("COPY_COMPLETED", 1)]
BORROWING = [("complete", 75), ("unfilled", 8), ("cancelled", 4), ("on_loan", 6),
             ("sent", 3), ("will_supply", 2), ("shipped", 2)]
BATCH = 10_000


def weighted(choices, rng):
    total = sum(w for _, w in choices)
    x = rng.uniform(0, total)
    for value, w in choices:
        x -= w
        if x <= 0:
            return value
    return choices[-1][0]


def title_of(i: int, rng) -> str:
    words = rng.sample(WORDS, 3)
    if i % 2000 == 7:
        words[1] = RARE
    return f"The {words[0]} of {words[1]} and {words[2]} vol {i}"


async def fill(engine, n: int, rng) -> dict:
    from sqlalchemy import insert

    from node.store import tables as t
    from node.supplier.locate import author_key, title_key

    now = datetime.now(timezone.utc)
    start = now - timedelta(days=3 * 365)
    partners = [f"ISIL:XX-P{k:02d}" for k in range(50)]
    t0 = time.perf_counter()
    for base in range(0, n, BATCH):
        rows = []
        for i in range(base, min(n, base + BATCH)):
            lending = i % 10 < 7
            status = weighted(LENDING if lending else BORROWING, rng)
            created = start + timedelta(seconds=i * (3 * 365 * 86400 / n))
            title = title_of(i, rng)
            partner = partners[i % 50]
            state = {"state": status, "title": title, "partner": partner,
                     "requesting_request_id": f"REQ-{i:08d}",
                     "history_note": "bench row " + "x" * 120}
            if lending:
                state["located"] = {"barcode": f"IB{i:08d}"}
                if status not in ("UNFILLED", "CANCELLED", "WILL_SUPPLY", "RETRY_POSSIBLE"):
                    state["shipped_barcodes"] = [f"IB{i:08d}"]
            rows.append(dict(
                role="lending" if lending else "borrowing",
                public_id=("L-" if lending else "B-") + f"{i:08d}",
                partner=partner,
                requesting_agency_id=partner if lending else "ISIL:XX-US",
                requesting_request_id=f"REQ-{i:08d}",
                supplying_request_id=f"L-{i:08d}" if lending else None,
                status=status, title=title, patron_id=None if lending else f"P-{i % 40000}",
                created_at=created, updated_at=created + timedelta(days=rng.randint(0, 40)),
                needs_attention=(i % 97 == 0),
                state=state,
                version=1,
            ))
        async with engine.begin() as conn:
            await conn.execute(insert(t.transactions), rows)
    t_tx = time.perf_counter() - t0
    t0 = time.perf_counter()
    n_records = n // 2
    for base in range(0, n_records, BATCH // 2):
        recs, idents, items = [], [], []
        for i in range(base, min(n_records, base + BATCH // 2)):
            rid = f"R{i}"
            title = title_of(i + 10_000_000, rng).replace(" vol ", " book ")
            author = f"Author{i % 50000}, A."
            recs.append(dict(record_id=rid, title=title, author=author,
                             title_key=title_key(title), author_key=author_key(author),
                             updated_at=now))
            idents.append(dict(record_id=rid, kind="isbn", value=isbn13(i)))
            idents.append(dict(record_id=rid, kind="local", value=rid))
            for j in range(2):
                items.append(dict(record_id=rid, barcode=f"B{i}-{j}", call_number=f"QA{i}.{j}",
                                  location="MAIN", status="available" if (i + j) % 5 else "on_loan",
                                  updated_at=now))
        async with engine.begin() as conn:
            await conn.execute(insert(t.holdings_records), recs)
            await conn.execute(insert(t.holdings_identifiers), idents)
            await conn.execute(insert(t.holdings_items), items)
    t_h = time.perf_counter() - t0
    return {"transactions_s": t_tx, "holdings_s": t_h, "records": n_records, "items": 2 * n_records}


BUDGET = [15.0]


async def timed(name: str, fn, runs: int, budget: float | None = None) -> dict:
    budget = BUDGET[0] if budget is None else budget
    times = []
    t_end = time.perf_counter() + budget
    result = None
    for k in range(runs):
        s = time.perf_counter()
        result = await fn(k)
        times.append(time.perf_counter() - s)
        if time.perf_counter() > t_end and k >= 2:
            break
    r = {"name": name, "n": len(times), "p50_ms": 1000 * median(times),
         "p99_ms": 1000 * pct(times, 99), "max_ms": 1000 * max(times)}
    print(f"  {r['p50_ms']:9.2f} ms p50 {r['p99_ms']:9.2f} ms p99  (n={r['n']:2d})  {name}"
          f"{'' if r['p50_ms'] < 20 else '   <-- over 20 ms'}", flush=True)
    return {**r, "result": result}


async def explain(engine, label: str, fn) -> None:
    """Run fn once, capture its SQL, print the plan of each statement."""
    from sqlalchemy import event

    captured: list[tuple[str, object]] = []

    def grab(conn, cursor, statement, parameters, context, executemany):
        if not statement.lstrip().upper().startswith(("EXPLAIN", "BEGIN", "SET")):
            captured.append((statement, parameters))

    event.listen(engine.sync_engine, "before_cursor_execute", grab)
    try:
        async with engine.connect() as conn:
            await fn(conn)
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", grab)
    print(f"  plan: {label}")
    sqlite = engine.dialect.name == "sqlite"
    async with engine.connect() as conn:
        for statement, params in captured:
            prefix = "EXPLAIN QUERY PLAN " if sqlite else "EXPLAIN "
            raw = await conn.get_raw_connection()
            drv = raw.driver_connection
            short = " ".join(statement.split())[:110]
            if sqlite:
                cur = await drv.execute(prefix + statement, params)
                lines = [" ".join(str(x) for x in row[3:]) for row in await cur.fetchall()]
            else:
                lines = [r[0] for r in await drv.fetch(prefix + statement, *params)]
            print(f"    {short}")
            for line in lines[:8]:
                print(f"        {line}")


async def run(args, d: Path, dbs: Databases) -> None:
    from node.config import load
    from node.protocol.messages import AgencyId
    from node.store import db, repo, search
    from tests.builders import request

    url = args.url or await dbs.amake("scale")
    cfg = load(write_config(d, "node", node_config(
        symbol="ISIL:XX-US", port=1, db_url=url, partners=[])))
    engine = db.create_engine(cfg.node.database_url)
    await db.migrate_async(engine)
    rng = random.Random(18626)
    n = args.rows
    if await _count_requests(engine) == n:
        print(f"reusing the {n:,} requests already in {args.url}", flush=True)
    else:
        print(f"filling {n:,} requests and {n:,} holdings items ...", flush=True)
        load_t = await fill(engine, n, rng)
        print(f"  loaded in {load_t['transactions_s']:.0f} s (requests) + "
              f"{load_t['holdings_s']:.0f} s (holdings: {load_t['records']:,} records, "
              f"{load_t['items']:,} items)", flush=True)
    if engine.dialect.name == "postgresql":
        async with engine.connect() as conn:
            await conn.exec_driver_sql("COMMIT")
            await conn.exec_driver_sql("ANALYZE")
    policy, us = cfg.lending, AgencyId.parse("ISIL:XX-US")
    runs = args.runs
    results = []
    print(f"query latency, {runs} runs each:", flush=True)

    async def q(fn):
        async with engine.connect() as conn:
            return await fn(conn)

    def pick(k: int, step: int = 10) -> int:
        return (k * 7919 * step) % n // step * step

    if args.desk:
        await desk(engine, q, pick, runs)
        await engine.dispose()
        return

    def words(k: int, *steps: int) -> str:
        return " ".join(WORDS[(k + step) % len(WORDS)] for step in steps)

    lists = [
        ("staff list: lending, status=WILL_SUPPLY, first page of 50",
         lambda k: dict(role="lending", status="WILL_SUPPLY")),
        ("staff list: lending, no filter, first page of 50", lambda k: dict(role="lending")),
        ("staff list: borrowing, needs attention, first page of 50",
         lambda k: dict(role="borrowing", needs_attention=True)),
        # title_of puts RARE in borrowing rows only (i % 10 == 7).
        (f"search by title word ({RARE!r}, ~1 in 2,000 titles), borrowing",
         lambda k: dict(role="borrowing", q=RARE)),
        (f"search by two title words ({RARE!r} + a common one), borrowing",
         lambda k: dict(role="borrowing", q=f"{RARE} {WORDS[k % len(WORDS)]}")),
        ("search by title word, common (1 title in 10), lending",
         lambda k: dict(role="lending", q=WORDS[k % len(WORDS)])),
        ("search by title word, common, with status=SHIPPED, lending",
         lambda k: dict(role="lending", q=WORDS[k % len(WORDS)], status="SHIPPED")),
        ("search by two common title words, lending",
         lambda k: dict(role="lending", q=words(k, 0, 3))),
        ("search by three common title words, lending (all matches counted)",
         lambda k: dict(role="lending", q=words(k, 0, 3, 7))),
        ("search by a common title word, needs attention, borrowing",
         lambda k: dict(role="borrowing", q=WORDS[k % len(WORDS)], needs_attention=True)),
        ("search by request id (q=REQ-...)",
         lambda k: dict(role="lending" if pick(k) % 10 < 7 else "borrowing",
                        q=f"REQ-{pick(k):08d}")),
        ("search by item barcode, lending (q=IB...)",
         lambda k: dict(role="lending", q=f"IB{pick(k):08d}")),
        ("search by patron id, borrowing (q=P-...)",
         lambda k: dict(role="borrowing", q=f"P-{k * 37 % 4000 * 10 + 7}")),  # i % 10 == 7
    ]
    for name, params in lists:
        results.append(await timed(name, lambda k, params=params: q(
            lambda c: search.search(c, **params(k))), runs))
    cursors: dict[str, str | None] = {}
    for status in ("WILL_SUPPLY", None):
        async with engine.connect() as conn:
            cursors[status] = (await search.search(conn, "lending", status=status))["next"]
    results.append(await timed(
        "staff list: lending, status=WILL_SUPPLY, next page by cursor",
        lambda k: q(lambda c: search.search(c, "lending", status="WILL_SUPPLY",
                                            cursor=cursors["WILL_SUPPLY"])), runs))
    results.append(await timed(
        "staff list: lending, no filter, next page by cursor",
        lambda k: q(lambda c: search.search(c, "lending", cursor=cursors[None])), runs))

    async def ten_pages(k):
        cursor = None
        async with engine.connect() as conn:
            for _ in range(10):
                cursor = (await search.search(conn, "lending", status="SHIPPED",
                                              cursor=cursor))["next"]
        return cursor

    results.append(await timed("staff list: lending, status=SHIPPED, 10 pages by cursor "
                               "(all 10)", ten_pages, runs))
    results.append(await timed("repo.lock_transaction (inbound duplicate check)",
                               lambda k: q(lambda c: repo.lock_transaction(
                                   c, role="lending", requesting_agency_id="ISIL:XX-P00",
                                   requesting_request_id=f"REQ-{(k * 1000) % n // 50 * 50:08d}")),
                               runs))
    results.append(await timed("repo.view_by_public_id (open one request)",
                               lambda k: q(lambda c: repo.view_by_public_id(
                                   c, "lending", f"L-{(k * 1000) % n // 10 * 10:08d}")), runs))
    n_rec = n // 2

    def isbn_request(k):
        i = (k * 104729) % n_rec
        return request("ISIL:XX-P01", "ISIL:XX-US", f"x{k}", title="whatever",
                       isbn=isbn13(i)).message

    titles = await _record_titles(engine, [(k * 104729) % n_rec for k in range(runs)])
    hits = {"isbn": 0, "title": 0}

    async def locate_isbn(k):
        res = await q(lambda c: repo.locate(c, isbn_request(k), policy, us))
        hits["isbn"] += res.outcome != "not_held"
        return res

    async def locate_title(k):
        msg = request("ISIL:XX-P01", "ISIL:XX-US", f"y{k}", title=titles[k % len(titles)]).message
        res = await q(lambda c: repo.locate(c, msg, policy, us))
        hits["title"] += res.outcome != "not_held"
        return res

    r = await timed("auto-locate: ISBN hit (repo.locate)", locate_isbn, runs)
    r["hits"] = hits["isbn"]
    results.append(r)
    r = await timed("auto-locate: title hit, no identifiers (repo.locate)", locate_title, runs)
    r["hits"] = hits["title"]
    results.append(r)
    print(f"  locate found the item: ISBN {hits['isbn']}/{results[-2]['n']}, "
          f"title {hits['title']}/{results[-1]['n']}")
    print("query plans:")
    await explain(engine, "staff list with status filter",
                  lambda c: search.search(c, "lending", status="WILL_SUPPLY"))
    await explain(engine, "staff list, no filter, next page",
                  lambda c: search.search(c, "lending", cursor=cursors[None]))
    await explain(engine, "search by request id",
                  lambda c: search.search(c, "lending", q="REQ-00000010"))
    await explain(engine, "search by title word",
                  lambda c: search.search(c, "borrowing", q=RARE))
    await explain(engine, "search by a common title word",
                  lambda c: search.search(c, "lending", q=WORDS[0]))
    await explain(engine, "lock_transaction",
                  lambda c: repo.lock_transaction(c, role="lending",
                                                  requesting_agency_id="ISIL:XX-P00",
                                                  requesting_request_id="REQ-00000050"))
    await explain(engine, "locate by title",
                  lambda c: repo.locate(c, request("ISIL:XX-P01", "ISIL:XX-US", "z",
                                                   title=titles[0]).message, policy, us))
    if engine.dialect.name == "sqlite":
        path = Path(engine.url.database)
        size = sum(p.stat().st_size for p in path.parent.glob(path.name + "*"))
    else:
        async with engine.connect() as conn:
            size = (await conn.exec_driver_sql("SELECT pg_database_size(current_database())")
                    ).scalar_one()
    print(f"database size on disk: {size / 2**20:.0f} MiB ({n:,} requests, {n:,} items; "
          "no messages/history rows)")
    await engine.dispose()


async def desk(engine, q, pick, runs: int) -> None:
    """The staff desk's lookups (see the module docstring), with their query plans."""
    from node.store import borrowing_repo, lending_repo, partner_status, search

    def barcode(k: int) -> str:  # a lending row's item, scanned in lower case
        return f"ib{pick(k):08d}"

    desk_queries = [
        ("check-in by barcode (lending_repo.out_by_barcode)",
         lambda c, k: lending_repo.out_by_barcode(c, barcode(k))),
        ("lending list, ?barcode= filter",
         lambda c, k: search.search(c, "lending",
                                    extra=lending_repo.search_filters(barcode=barcode(k)))),
        ("receive by lender request id (borrowing_repo.by_lender_request_id)",
         lambda c, k: borrowing_repo.by_lender_request_id(c, f"l-{pick(k):08d}")),
        ("return scan by temporary barcode, every status (borrowing_repo.with_barcode)",
         lambda c, k: borrowing_repo.with_barcode(c, f"tmp-{k}",
                                                  statuses=tuple(s for s, _ in BORROWING))),
        ("staff list: lending, partner filter (lower case), first page of 50",
         lambda c, k: search.search(c, "lending", partner=f"isil:xx-p{k % 50:02d}")),
        ("staff list: lending, partner filter + status=SHIPPED, first page of 50",
         lambda c, k: search.search(c, "lending", partner=f"ISIL:XX-P{k % 50:02d}",
                                    status="SHIPPED")),
        ("admin partners screen (partner_status.delivery_status)",
         lambda c, k: partner_status.delivery_status(c)),
    ]
    for name, fn in desk_queries:
        await timed(name, lambda k, fn=fn: q(lambda c: fn(c, k)), runs)
    print("query plans:")
    for name, fn in desk_queries:
        await explain(engine, name, lambda c, fn=fn: fn(c, 1))


async def _count_requests(engine) -> int:
    from sqlalchemy import func, select

    from node.store import tables as t

    async with engine.connect() as conn:
        return (await conn.execute(select(func.count()).select_from(t.transactions))
                ).scalar_one()


async def _record_titles(engine, ids: list[int]) -> list[str]:
    from sqlalchemy import select

    from node.store import tables as t

    async with engine.connect() as conn:
        rows = await conn.execute(select(t.holdings_records.c.title).where(
            t.holdings_records.c.record_id.in_([f"R{i}" for i in ids])))
        return [r.title for r in rows] or ["nothing"]


def main() -> int:
    args = parse_args(__doc__.splitlines()[0], lambda ap: (
        ap.add_argument("--rows", type=int),
        ap.add_argument("--runs", type=int, default=50),
        ap.add_argument("--budget", type=float, default=15.0,
                        help="seconds of repeats per query at most (3 runs minimum)"),
        ap.add_argument("--desk", action="store_true", help="time the desk's lookups only"),
        ap.add_argument("--url", help="a database to fill and keep (or reuse, when it "
                        "already holds --rows requests), instead of a throw-away one"),
    ))
    BUDGET[0] = args.budget
    args.rows = args.rows or (100_000 if args.quick else 1_000_000)
    header("scale", args)
    with workdir("scale") as d:
        dbs = Databases(args.db, d)

        async def go():
            try:
                await run(args, d, dbs)
            finally:
                await dbs.aclose()

        asyncio.run(go())
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    sys.exit(main())
