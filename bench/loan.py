"""A whole loan between two of our nodes on loopback, request to completion.

Two ``ill-node serve`` processes (borrower B, lender L), each with its own
database; L holds the books (auto_answer on). One loan is:

  B: POST /api/borrowing/requests         -> Request goes to L (outbox)
  L: auto-locates, answers WillSupply     (automatic)
  L: action ship                          -> Loaned to B
  B: action receive                       -> Received to L
  B: action return_to_partner             -> ShippedReturn to L
     (if the machine wants the patron steps first: loan_to_patron, patron_return)
  L: action check_in                      -> LoanCompleted to B
  B: status "complete"

Waits poll the brief request view (``?brief=1``) every ``--poll`` ms (default 5).  Prints the wall
time per loan (sequential, median over ``--loans``), the time of each step,
and loans/s with ``--parallel`` loans at once.  Steps that fail (sides still
being finished) are reported and the run measures what works.

    .venv/bin/python bench/loan.py [--db sqlite|postgresql] [--quick]
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections import defaultdict
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import (  # noqa: E402
    Databases,
    Proc,
    free_port,
    header,
    holdings_csv,
    import_holdings,
    median,
    migrate,
    node_config,
    parse_args,
    pct,
    start_node,
    workdir,
    write_config,
)

B_SYM, L_SYM = "ISIL:XX-BORROW", "ISIL:XX-LEND"


class StepFailed(Exception):
    pass


class Loan:
    def __init__(self, http: aiohttp.ClientSession, b: str, lender: str, poll: float):
        self.http = http
        self.b = b
        self.l = lender
        self.poll = poll
        self.steps: dict[str, float] = {}
        self.skipped: list[str] = []
        self.used_patron_steps = False

    async def api(self, base: str, method: str, path: str, json=None):
        async with self.http.request(method, base + path, json=json,
                                     headers={"X-Staff-User": "bench"}) as resp:
            return resp.status, await resp.json(content_type=None)

    async def wait(self, base: str, role: str, rid: str, wanted: set[str],
                   timeout: float = 30) -> dict:
        deadline = time.perf_counter() + timeout
        view: dict = {}
        while time.perf_counter() < deadline:
            code, view = await self.api(base, "GET", f"/api/{role}/requests/{rid}?brief=1")
            if code == 200 and view.get("status") in wanted:
                return view
            await asyncio.sleep(self.poll)
        raise StepFailed(f"{role} {rid} is {view.get('status')}, not {wanted} after {timeout}s")

    async def act(self, base: str, role: str, rid: str, **action) -> dict:
        code, view = await self.api(base, "POST", f"/api/{role}/requests/{rid}/actions",
                                    json=action)
        if code != 200:
            raise StepFailed(f"{role} {action.get('action')}: HTTP {code} {view}")
        return view

    async def step(self, name: str, coro):
        t = time.perf_counter()
        result = await coro
        self.steps[name] = time.perf_counter() - t
        return result

    async def run(self, book: tuple[str, str], patron: str) -> float:
        t0 = time.perf_counter()
        code, view = await self.step("B create (API)", self.api(
            self.b, "POST", "/api/borrowing/requests",
            json={"title": book[1], "isbn": book[0], "patron_id": patron,
                  "pickup_location": "MAIN"}))
        if code != 201:
            raise StepFailed(f"create: HTTP {code} {view}")
        bid = view["id"]
        view = await self.step("-> L auto WillSupply seen at B", self.wait(
            self.b, "borrowing", bid, {"will_supply"}))
        lid = view.get("supplying_request_id")
        if not lid:
            code, found = await self.api(self.l, "GET", "/api/lending/requests?q="
                                         + view["requesting_request_id"])
            lid = found["requests"][0]["id"]
        await self.step("L ship (API)", self.act(self.l, "lending", lid, action="ship"))
        await self.step("-> Loaned seen at B", self.wait(self.b, "borrowing", bid, {"shipped"}))
        await self.step("B receive (API)", self.act(self.b, "borrowing", bid, action="receive",
                                                     barcodes=[f"TMP-{bid}"]))
        try:
            await self.step("B return_to_partner (API)",
                            self.act(self.b, "borrowing", bid, action="return_to_partner"))
        except StepFailed:
            # The machine wants the patron's part first.
            self.used_patron_steps = True
            await self.step("B loan_to_patron (API)",
                            self.act(self.b, "borrowing", bid, action="loan_to_patron"))
            await self.step("B patron_return (API)",
                            self.act(self.b, "borrowing", bid, action="patron_return"))
            await self.step("B return_to_partner (API)",
                            self.act(self.b, "borrowing", bid, action="return_to_partner"))
        await self.step("-> ShippedReturn seen at L", self.wait(
            self.l, "lending", lid, {"RETURN_SHIPPED"}))
        await self.step("L check_in (API)", self.act(self.l, "lending", lid, action="check_in"))
        await self.step("-> LoanCompleted seen at B", self.wait(
            self.b, "borrowing", bid, {"complete"}))
        return time.perf_counter() - t0


async def bench(args, b_url: str, l_url: str, books) -> dict:
    poll = args.poll / 1000
    out: dict = {}
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=200)) as http:
        # warm-up
        await Loan(http, b_url, l_url, poll).run(books[0], "P-warm")
        walls, per_step = [], defaultdict(list)
        patron_steps = False
        for i in range(1, args.loans + 1):
            loan = Loan(http, b_url, l_url, poll)
            walls.append(await loan.run(books[i], f"P-{i}"))
            patron_steps |= loan.used_patron_steps
            for k, v in loan.steps.items():
                per_step[k].append(v)
        out["sequential"] = walls
        out["steps"] = per_step
        out["patron_steps"] = patron_steps
        print(f"sequential, {len(walls)} loans: median {1000 * median(walls):.0f} ms, "
              f"p90 {1000 * pct(walls, 90):.0f} ms, min {1000 * min(walls):.0f} ms, "
              f"max {1000 * max(walls):.0f} ms per loan", flush=True)
        if patron_steps:
            print("  (return_to_partner was refused straight after receive: the loan went "
                  "through loan_to_patron and patron_return as well)")
        print("  per step, median (min):")
        for k, v in per_step.items():
            print(f"    {1000 * median(v):7.1f} ms ({1000 * min(v):6.1f})  {k}")
        # parallel
        start = args.loans + 1
        loans = [Loan(http, b_url, l_url, max(poll, 0.1)) for _ in range(args.parallel)]
        t0 = time.perf_counter()
        results = await asyncio.gather(*(
            loan.run(books[start + i], f"PP-{i}") for i, loan in enumerate(loans)),
            return_exceptions=True)
        elapsed = time.perf_counter() - t0
        ok = [r for r in results if not isinstance(r, BaseException)]
        errors = [r for r in results if isinstance(r, BaseException)]
        out["parallel"] = {"n": args.parallel, "ok": len(ok), "elapsed": elapsed,
                           "loans_per_s": len(ok) / elapsed,
                           "median": median(ok), "p99": pct(ok, 99)}
        print("(parallel loans poll every 100 ms, so per-loan times are rounded up by the polling)")
        print(f"parallel, {args.parallel} loans at once: {len(ok)} completed in {elapsed:.2f} s "
              f"= {len(ok) / elapsed:.1f} loans/s; per loan median {1000 * median(ok):.0f} ms, "
              f"max {1000 * max(ok, default=0):.0f} ms", flush=True)
        for e in errors[:3]:
            print(f"  failed: {type(e).__name__}: {e}")
    return out


def main() -> int:
    args = parse_args(__doc__.splitlines()[0], lambda ap: (
        ap.add_argument("--loans", type=int),
        ap.add_argument("--parallel", type=int),
        ap.add_argument("--poll", type=float, default=5, help="poll interval, ms"),
    ))
    args.loans = args.loans or (10 if args.quick else 20)
    args.parallel = args.parallel or (20 if args.quick else 50)
    header("loan", args)
    with workdir("loan") as d:
        dbs = Databases(args.db, d)
        procs: list[Proc] = []
        try:
            b_port, l_port = free_port(), free_port()
            b_end = f"http://127.0.0.1:{b_port}/iso18626"
            l_end = f"http://127.0.0.1:{l_port}/iso18626"
            b_cfg = write_config(d, "borrower", node_config(
                symbol=B_SYM, port=b_port, db_url=dbs.make("borrower"),
                partners=[(L_SYM, l_end)],
                extra='[borrowing]\npickup_locations = ["MAIN"]\n'))
            l_cfg = write_config(d, "lender", node_config(
                symbol=L_SYM, port=l_port, db_url=dbs.make("lender"),
                partners=[(B_SYM, b_end)], rota=[]))
            for cfg in (b_cfg, l_cfg):
                migrate(cfg)
            books = holdings_csv(d / "holdings.csv", args.loans + args.parallel + 10,
                                 items_per_record=1)
            import_holdings(l_cfg, d / "holdings.csv")
            procs.append(start_node(l_cfg, d / "lender.log", l_port))
            procs.append(start_node(b_cfg, d / "borrower.log", b_port))
            try:
                asyncio.run(bench(args, f"http://127.0.0.1:{b_port}",
                                  f"http://127.0.0.1:{l_port}", books))
            except StepFailed as exc:
                print(f"loan did not complete: {exc}")
                print("--- lender log\n" + procs[0].tail(15))
                print("--- borrower log\n" + procs[1].tail(15))
                return 1
            return 0
        finally:
            for p in reversed(procs):
                p.stop()
            dbs.close()


if __name__ == "__main__":
    sys.exit(main())
