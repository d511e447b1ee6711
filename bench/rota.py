"""A rota of 20 lenders that all answer Unfilled: time to "unfilled, end of rota".

Our borrowing node (``ill-node serve``) has 20 partners in one rota; all 20
symbols point at one fast stand-in peer process (bench/_peer.py --mode
unfilled) which confirms each Request OK and at once sends back a
supplyingAgencyMessage Unfilled (reason NotHeld) to the borrower.  The figure
is the time from the create API call returning to the request's status
becoming ``unfilled`` (polled every 5 ms); median over ``--runs`` requests.

If the node refuses the last lender's Unfilled (so the request never reaches
``unfilled``), the script says so, shows the node's answer, and reports the
time until that last answer was delivered (the peer's clock, same host)
instead: the rota walk itself, without the final state change.

    .venv/bin/python bench/rota.py [--db sqlite|postgresql] [--quick] [--lenders 20]
"""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import (  # noqa: E402
    Databases,
    Proc,
    free_port,
    header,
    median,
    migrate,
    node_config,
    parse_args,
    start_node,
    start_peer,
    workdir,
    write_config,
)

B_SYM = "ISIL:XX-BORROW"
TIMEOUT = 60


async def peer_stats(http, peer: str) -> dict:
    async with http.get(peer + "/stats") as resp:
        return await resp.json()


async def one(http, base: str, peer: str, i: int, expected_answers: int) -> dict:
    async with http.post(base + "/api/borrowing/requests", headers={"X-Staff-User": "bench"},
                         json={"title": f"Nobody has this {i}", "isbn": "9780140449136",
                               "patron_id": f"P-{i}", "pickup_location": "MAIN"}) as resp:
        view = await resp.json(content_type=None)
        if resp.status != 201:
            raise RuntimeError(f"create: HTTP {resp.status} {view}")
    created, created_wall = time.perf_counter(), time.time()
    bid = view["id"]
    while time.perf_counter() - created < TIMEOUT:
        async with http.get(f"{base}/api/borrowing/requests/{bid}") as resp:
            view = await resp.json(content_type=None)
        if view.get("status") == "unfilled":
            return {"seconds": time.perf_counter() - created, "reached": True, "view": view}
        stats = await peer_stats(http, peer)
        if stats["sent"] + stats["refused"] >= expected_answers and stats["refused"]:
            return {"seconds": stats["last_answer_at"] - created_wall, "reached": False,
                    "view": view, "refusal": stats["last_refusal"]}
        await asyncio.sleep(0.005)
    raise RuntimeError(f"{bid} is {view.get('status')} after {TIMEOUT} s")


async def run(args, base: str, peer: str) -> list[dict]:
    out = []
    async with aiohttp.ClientSession() as http:
        answers = args.lenders
        await one(http, base, peer, 0, answers)  # warm-up
        for i in range(1, args.runs + 1):
            answers += args.lenders
            r = await one(http, base, peer, i, answers)
            tried = len(r["view"].get("state", {}).get("attempts", []))
            out.append(r)
            what = "to status unfilled" if r["reached"] else (
                "to the LAST lender's Unfilled delivered (node refused it: status stays "
                f"{r['view'].get('status')!r})")
            print(f"  run {i}: {1000 * r['seconds']:.0f} ms {what}; lenders asked: {tried}",
                  flush=True)
    return out


def main() -> int:
    args = parse_args(__doc__.splitlines()[0], lambda ap: (
        ap.add_argument("--lenders", type=int, default=20),
        ap.add_argument("--runs", type=int),
    ))
    args.runs = args.runs or (3 if args.quick else 7)
    header("rota", args)
    with workdir("rota") as d:
        dbs = Databases(args.db, d)
        procs: list[Proc] = []
        try:
            b_port, p_port = free_port(), free_port()
            peer_end = f"http://127.0.0.1:{p_port}/iso18626"
            symbols = [f"ISIL:XX-L{i:02d}" for i in range(1, args.lenders + 1)]
            cfg = write_config(d, "borrower", node_config(
                symbol=B_SYM, port=b_port, db_url=dbs.make("borrower"),
                partners=[(s, peer_end) for s in symbols],
                extra='[borrowing]\npickup_locations = ["MAIN"]\n'))
            migrate(cfg)
            procs.append(start_peer(d / "peer.log", p_port, "--mode", "unfilled",
                                    "--reply-to", f"http://127.0.0.1:{b_port}/iso18626"))
            procs.append(start_node(cfg, d / "borrower.log", b_port))
            results = asyncio.run(run(args, f"http://127.0.0.1:{b_port}",
                                      f"http://127.0.0.1:{p_port}"))
            times = [r["seconds"] for r in results]
            reached = all(r["reached"] for r in results)
            print(f"{args.lenders}-lender rota: median {1000 * median(times):.0f} ms "
                  f"(min {1000 * min(times):.0f}, max {1000 * max(times):.0f}) = "
                  f"{1000 * median(times) / args.lenders:.1f} ms per lender; "
                  + ("status 'unfilled' reached every time" if reached else
                     "status 'unfilled' NOT reached: the node refused the last Unfilled"))
            if not reached:
                refusal = next(r["refusal"] for r in results if not r["reached"])
                value = refusal.split("<errorValue>")[-1].split("</errorValue>")[0]
                print(f"  node's answer to the last Unfilled: ERROR {value!r}")
            return 0 if reached else 2
        finally:
            for p in reversed(procs):
                p.stop()
            dbs.close()


if __name__ == "__main__":
    sys.exit(main())
