"""The long hostile-input run (issue 7): mutated ISO 18626 messages against a real
node over HTTP, in rounds, checking after every message that the node answered
sanely (never a 500), that a refused message changed nothing in the database,
and at the end that memory did not keep rising.

    .venv/bin/python bench/fuzz.py [--rounds 40] [--per-round 250] [--db sqlite|postgresql]

Prints the figures; exits 1 on any failure. Each round is one hypothesis run
(generation only, fresh engine), so the generator's own bookkeeping does not
grow across rounds; the RSS figure is the whole process (node + client), and
tracemalloc counts what is still allocated from node/, aiohttp and SQLAlchemy.
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import tempfile
import time
import tracemalloc
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from hypothesis import HealthCheck, Phase, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from tests.security.fuzzing import LiveNode, bases, check, headers_strategy, mutated  # noqa: E402


def rss_mib() -> float:
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def traced_mib(snapshot) -> float:
    keep = ("/node/", "/aiohttp/", "/sqlalchemy/")
    return sum(s.size for s in snapshot.statistics("filename")
               if any(k in s.traceback[0].filename for k in keep)) / 2**20


def database_urls(kind: str, directory: Path):
    if kind == "sqlite":
        return lambda name: f"sqlite+aiosqlite:///{directory / (name + '.db')}"
    import asyncio

    import asyncpg

    admin = os.environ.get("ILL_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/postgres")

    def make(name: str) -> str:
        db = f"ill_fuzz_{uuid.uuid4().hex[:10]}"

        async def create():
            conn = await asyncpg.connect(admin)
            await conn.execute(f'CREATE DATABASE "{db}"')
            await conn.close()

        asyncio.run(create())
        base = admin.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://")
        return f"{base}/{db}"

    return make


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--per-round", type=int, default=250)
    parser.add_argument("--db", choices=["sqlite", "postgresql"], default="sqlite")
    parser.add_argument("--max-growth-mib", type=float, default=64.0,
                        help="fail if RSS grows more than this after the first round")
    args = parser.parse_args()

    directory = Path(tempfile.mkdtemp(prefix="ill-fuzz-"))
    node = LiveNode(directory, database_urls(args.db, directory))
    messages = bases(node.lib.symbol)
    kinds: dict[str, int] = {}
    failures: list[str] = []

    @settings(max_examples=args.per_round, deadline=None, database=None,
              phases=[Phase.generate], suppress_health_check=list(HealthCheck))
    @given(data=st.data())
    def one_round(data):
        base = data.draw(st.sampled_from(messages))
        kind, body = data.draw(mutated(base))
        headers = data.draw(headers_strategy())
        kinds[kind] = kinds.get(kind, 0) + 1
        try:
            check(node, body, headers)
        except AssertionError as exc:
            failures.append(f"{kind}: {str(exc)[:300]}")
        except Exception as exc:  # a crash of the client side (node down...)
            failures.append(f"{kind}: {type(exc).__name__}: {exc}"[:300])

    tracemalloc.start(1)
    started = time.perf_counter()
    samples = []
    try:
        for r in range(args.rounds):
            one_round()
            gc.collect()
            samples.append((rss_mib(), traced_mib(tracemalloc.take_snapshot())))
            print(f"round {r + 1}/{args.rounds}: rss {samples[-1][0]:.1f} MiB, "
                  f"traced {samples[-1][1]:.2f} MiB, failures {len(failures)}", flush=True)
            if len(failures) > 20:
                break
        status, _ = node.post(messages[0].replace(b"FUZZ-1", b"FUZZ-ALIVE"), {
            "Content-Type": "application/xml", "X-ILL-Secret": "fuzz-secret"})
        if status != 200:
            failures.append(f"node no longer answers a valid message (HTTP {status})")
    finally:
        node.close()
    elapsed = time.perf_counter() - started
    total = sum(kinds.values())
    growth = samples[-1][0] - samples[0][0] if samples else 0.0
    traced_growth = samples[-1][1] - samples[0][1] if samples else 0.0
    print(f"messages: {total} in {elapsed:.1f}s ({total / elapsed:.0f}/s), db {args.db}")
    print("mutations: " + ", ".join(f"{k} {v}" for k, v in sorted(kinds.items())))
    print(f"rss: first round {samples[0][0]:.1f} MiB, last {samples[-1][0]:.1f} MiB, "
          f"growth {growth:+.1f} MiB; traced (node/aiohttp/sqlalchemy) growth "
          f"{traced_growth:+.2f} MiB")
    if growth > args.max_growth_mib:
        failures.append(f"RSS grew {growth:.1f} MiB (> {args.max_growth_mib} MiB)")
    for f in failures[:20]:
        print("FAIL", f)
    print("clean" if not failures else f"{len(failures)} failures")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
