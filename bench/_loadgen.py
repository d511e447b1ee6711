"""Load generator for bench/inbound.py and bench/footprint.py (a separate process).

Sends ISO 18626 requests built from a template (``RARIPLACEHOLDER`` and
``ISBNPLACEHOLDER`` filled in per request: unique request ids, ISBNs cycled)
to one URL, and prints one JSON line with the figures.

- ``--rate R``: open loop, request i is due at t0 + i/R whatever the answers
  do; latency is measured from the due time (no coordinated omission) and,
  separately, from the actual send.
- no ``--rate``: closed loop, ``--conns`` workers each send the next request
  as soon as the previous answer is in (what wrk does).

A request counts as OK when the HTTP status is 200 and the confirmation's
messageStatus is OK.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time

import aiohttp


def pct(values, p):
    if not values:
        return None
    s = sorted(values)
    k = max(0, min(len(s) - 1, int(round(p / 100 * len(s) + 0.5)) - 1))
    return s[k]


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True)
    ap.add_argument("--template", required=True)
    ap.add_argument("--isbns", required=True, help="file, one ISBN|title a line")
    ap.add_argument("--prefix", required=True)
    ap.add_argument("--rate", type=float)
    ap.add_argument("--conns", type=int, default=32)
    ap.add_argument("--duration", type=float, default=10)
    ap.add_argument("--max-requests", type=int, default=100_000)
    ap.add_argument("--timeout", type=float, default=10.0, help="per request, seconds")
    ap.add_argument("--timeline", help="file: one line per answered request, "
                    "its due time from the start and its latency, both in ms")
    args = ap.parse_args()
    template = open(args.template, "rb").read()
    books = [line.rstrip("\n").encode().split(b"|") for line in open(args.isbns) if line.strip()]
    headers = {"Content-Type": "application/xml; charset=utf-8"}

    def body(i: int) -> bytes:
        return template.replace(b"RARIPLACEHOLDER", f"{args.prefix}-{i}".encode()).replace(
            b"ISBNPLACEHOLDER", books[i % len(books)][0]).replace(
            b"TITLEPLACEHOLDER", books[i % len(books)][1])

    lat_send: list[float] = []
    counts = {"sent": 0, "ok": 0, "error_conf": 0, "http_error": 0, "exception": 0,
              "timeout": 0}
    ok_ids: list[int] = []
    timeline: list[tuple[float, float]] = []
    connector = aiohttp.TCPConnector(limit=max(args.conns, 1) if not args.rate else 512,
                                     force_close=False)
    timeout = aiohttp.ClientTimeout(total=args.timeout)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

        async def one(i: int, due: float) -> None:
            data = body(i)
            start = time.perf_counter()
            counts["sent"] += 1
            try:
                async with session.post(args.url, data=data, headers=headers) as resp:
                    answer = await resp.read()
                    status = resp.status
            except asyncio.TimeoutError:
                counts["timeout"] += 1
                return
            except Exception as exc:  # noqa: BLE001
                counts["exception"] += 1
                counts.setdefault("last_exception", repr(exc)[:200])
                return
            end = time.perf_counter()
            timeline.append((due - t0, end - due))
            lat_send.append(end - start)
            if status != 200:
                counts["http_error"] += 1
                counts.setdefault("last_http_error", f"{status} {answer[:200]!r}")
            elif b"messageStatus>OK<" in answer:
                counts["ok"] += 1
                ok_ids.append(i)
            else:
                counts["error_conf"] += 1
                counts.setdefault("last_error_conf", answer[:600].decode("utf-8", "replace"))

        t0 = time.perf_counter()
        deadline = t0 + args.duration
        if args.rate:
            tasks = []
            n = min(args.max_requests, int(args.rate * args.duration))
            for i in range(n):
                due = t0 + i / args.rate
                delay = due - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                tasks.append(asyncio.create_task(one(i, due)))
            await asyncio.gather(*tasks)
        else:
            next_i = 0

            async def worker() -> None:
                nonlocal next_i
                while time.perf_counter() < deadline and next_i < args.max_requests:
                    i = next_i
                    next_i += 1
                    await one(i, time.perf_counter())

            await asyncio.gather(*(worker() for _ in range(args.conns)))
        elapsed = time.perf_counter() - t0
    ms = 1000
    lat_due = [lat for _, lat in timeline]
    if args.timeline:
        with open(args.timeline, "w") as out:
            out.writelines(f"{due * ms:.1f} {lat * ms:.2f}\n" for due, lat in sorted(timeline))
    print(json.dumps({
        **counts, "elapsed_s": elapsed, "rate": counts["sent"] / elapsed,
        "ok_rate": counts["ok"] / elapsed,
        "p50_ms": (pct(lat_due, 50) or 0) * ms, "p90_ms": (pct(lat_due, 90) or 0) * ms,
        "p99_ms": (pct(lat_due, 99) or 0) * ms, "max_ms": (max(lat_due) if lat_due else 0) * ms,
        "send_p50_ms": (pct(lat_send, 50) or 0) * ms, "send_p99_ms": (pct(lat_send, 99) or 0) * ms,
        "ok_ids_first": min(ok_ids) if ok_ids else None, "n_ok_ids": len(ok_ids),
    }))
    sys.stdout.flush()


if __name__ == "__main__":
    asyncio.run(main())
