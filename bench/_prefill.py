"""A node's database as a hub's is after years of work, for benchmarks of the write
path at scale (``bench/inbound.py --prefill N``).

N requests already handled (``bench/scale.py``'s rows: statuses, titles, three
years of dates; their triggers fill the full-text, barcode and count tables),
N/2 holdings records of two items each, and what handling them left behind:
per request, four messages in the message log (two in, with their digests and
the confirmations we gave; two out), four history rows, and, for the newest
tenth (those within the outbox's retention), the two delivered outbox rows.

Filling a million takes minutes, so each kind and size is filled once and kept:
a SQLite file under ``bench/out/prefill/``, copied for each run; a PostgreSQL
database ``ill_bench_prefill_N``, each run's database made from it as a template.
Several GiB each: ``rm -r bench/out/prefill`` and ``DROP DATABASE
ill_bench_prefill_N`` give the space back.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import shutil
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

from bench._common import ROOT, Databases, _pg_admin, _pg_url, _pg_value

BATCH = 5_000
RAW = ("<?xml version='1.0' encoding='UTF-8'?>\n<ISO18626Message ill:version=\"1.2\" "
       "xmlns:ill=\"http://illtransactions.org/2013/iso18626\">"
       + "<!-- a message of about the usual size -->" * 19 + "</ISO18626Message>")
CONFIRMATION = "<?xml version='1.0' encoding='UTF-8'?>\n<ISO18626Message>" + "x" * 260 + (
    "</ISO18626Message>")


async def fill_log(engine, n: int) -> float:
    """The message log, history and outbox rows of requests 1..``n`` (their ids in a
    database filled by ``scale.fill``); returns the seconds it took."""
    from sqlalchemy import insert

    from node.store import tables as t

    now = datetime.now(timezone.utc)
    start = now - timedelta(days=3 * 365)
    t0 = time.perf_counter()
    for base in range(1, n + 1, BATCH):
        messages, history, outbox = [], [], []
        for tx in range(base, min(n + 1, base + BATCH)):
            at = start + timedelta(seconds=tx * (3 * 365 * 86400 / n))
            rari = f"REQ-{tx - 1:08d}"
            for k, (direction, kind) in enumerate((
                    ("in", "request"), ("out", "supplyingAgencyMessage"),
                    ("in", "requestingAgencyMessage"), ("out", "supplyingAgencyMessage"))):
                inbound = direction == "in"
                messages.append(dict(
                    transaction_id=tx, direction=direction, kind=kind, peer="ISIL:XX-P01",
                    requesting_request_id=rari, message_status="OK" if inbound else None,
                    raw=RAW,
                    digest=hashlib.sha256(f"{tx}:{k}".encode()).hexdigest() if inbound
                    else None,
                    confirmation=CONFIRMATION if inbound else None,
                    created_at=at + timedelta(days=k)))
                history.append(dict(transaction_id=tx, at=at + timedelta(days=k),
                                    actor="peer:ISIL:XX-P01", event="message",
                                    detail={"kind": kind, "status": "WillSupply"}))
                if not inbound and tx > n - n // 10:
                    outbox.append(dict(
                        transaction_id=tx, peer="ISIL:XX-P01",
                        url="http://127.0.0.1:1/iso18626", kind=kind, body=RAW.encode(),
                        state="sent", attempts=1, next_attempt_at=at, last_http_status=200,
                        last_attempt_at=at, created_at=at, sent_at=at,
                        confirmation=CONFIRMATION.encode()))
        async with engine.begin() as conn:
            await conn.execute(insert(t.messages), messages)
            await conn.execute(insert(t.history), history)
            if outbox:
                await conn.execute(insert(t.outbox), outbox)
    return time.perf_counter() - t0


async def _fill(url: str, n: int) -> None:
    from bench.scale import fill
    from node.store import db

    engine = db.create_engine(url)
    try:
        await db.migrate_async(engine)
        print(f"prefill: {n:,} requests and {n:,} holdings items ...", flush=True)
        took = await fill(engine, n, random.Random(18626))
        print(f"  requests {took['transactions_s']:.0f} s, holdings "
              f"{took['holdings_s']:.0f} s", flush=True)
        print(f"  their message log, history and outbox: {await fill_log(engine, n):.0f} s",
              flush=True)
        if engine.dialect.name == "postgresql":
            async with engine.connect() as conn:
                await conn.exec_driver_sql("COMMIT")
                await conn.exec_driver_sql("VACUUM ANALYZE")
    finally:
        await engine.dispose()


def prefilled(dbs: Databases, name: str, n: int) -> str:
    """A fresh database (``dbs`` drops it at close) holding ``n`` requests handled."""
    if dbs.kind == "sqlite":
        kept = ROOT / "bench" / "out" / "prefill" / f"sqlite-{n}.db"
        if not kept.exists():
            kept.parent.mkdir(parents=True, exist_ok=True)
            making = kept.with_suffix(".making")
            making.unlink(missing_ok=True)
            asyncio.run(_fill(f"sqlite+aiosqlite:///{making}", n))
            making.rename(kept)  # only a whole fill is kept
        url = dbs.make(name)
        shutil.copyfile(kept, url.split("///", 1)[1])
        return url
    template = f"ill_bench_prefill_{n}"
    if not asyncio.run(_pg_value("SELECT 1 FROM pg_database WHERE datname = $1", template)):
        making = template + "_making"
        asyncio.run(_pg_admin(f'DROP DATABASE IF EXISTS "{making}" WITH (FORCE)'))
        asyncio.run(_pg_admin(f'CREATE DATABASE "{making}"'))
        asyncio.run(_fill(_pg_url(making), n))
        asyncio.run(_pg_admin(f'ALTER DATABASE "{making}" RENAME TO "{template}"'))
    return dbs.make(name, template=template)


def size_mb(url: str) -> float:
    """The database's size on disk, as its server counts it."""
    if url.startswith("sqlite"):
        path = Path(url.split("///", 1)[1])
        return sum(p.stat().st_size for p in path.parent.glob(path.name + "*")) / 2**20
    return asyncio.run(_pg_value("SELECT pg_database_size($1)", url.rsplit("/", 1)[1])) / 2**20
