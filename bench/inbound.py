"""Inbound throughput: new ISO 18626 requests into a real ``ill-node serve``.

Processes (all on 127.0.0.1, all started and stopped here):

- our node (``ill-node serve``), auto_answer on, holdings of N records x 3 items
  so that every request is located by ISBN (and title);
- a recording peer (bench/_peer.py --mode ok), the requester: our WillSupply
  answers go to it through the outbox, and it confirms them OK at once;
- a bare aiohttp server (bench/_peer.py --mode bare) returning a canned
  confirmation: the ceiling;
- the load generator: wrk (Lua script, unique request ids) for the max-rate
  phase if installed, else bench/_loadgen.py closed loop; bench/_loadgen.py
  open loop for the fixed-rate phase.

Phases: (a) max rate, ``--conns`` connections, ``--duration`` s, bare then node;
(b) ``--rate`` (500/s) open loop against the bare server (the generator's own
latency) then for ``--duration`` s against the node.
After each node phase it waits until the outbox is empty and checks that every
OK-confirmed request's answer reached the peer.

    .venv/bin/python bench/inbound.py [--db sqlite|postgresql] [--quick]
        [--conns 32] [--rate 500] [--duration 10] [--profile out-dir] [--processes N]
        [--timeline out-dir]
        [--prefill 1000000]   # into a hub's database: a million requests handled
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import (  # noqa: E402
    PY,
    ROOT,
    Databases,
    Proc,
    cpu_seconds,
    free_port,
    get_json,
    header,
    holdings_csv,
    import_holdings,
    migrate,
    node_config,
    parse_args,
    request_body,
    rss_mb,
    start_node,
    start_peer,
    with_children,
    workdir,
    write_config,
)
from bench._prefill import prefilled, size_mb  # noqa: E402

US = "ISIL:XX-NODE"
PEER = "ISIL:XX-PEER"

WRK_LUA = r"""
local counter = 0
local threads = {}
local prefix, tmpl
local books = {}
function setup(thread) table.insert(threads, thread) end
function init(args)
  prefix = args[1]
  local f = io.open(args[2], "rb"); tmpl = f:read("*a"); f:close()
  for line in io.lines(args[3]) do
    local isbn, title = line:match("([^|]+)|(.*)")
    table.insert(books, {isbn, title})
  end
  ok = 0; bad = 0
end
function request()
  counter = counter + 1
  local b = books[(counter % #books) + 1]
  local body = tmpl:gsub("RARIPLACEHOLDER", prefix .. "-" .. counter, 1)
                   :gsub("ISBNPLACEHOLDER", b[1], 1):gsub("TITLEPLACEHOLDER", b[2], 1)
  return wrk.format("POST", "/iso18626",
                    {["Content-Type"] = "application/xml; charset=utf-8"}, body)
end
function response(status, headers, body)
  if status == 200 and body:find("messageStatus>OK<", 1, true) then ok = ok + 1
  else bad = bad + 1 end
end
function done(summary, latency, requests)
  local tok, tbad = 0, 0
  for _, t in ipairs(threads) do tok = tok + t:get("ok"); tbad = tbad + t:get("bad") end
  local e = summary.errors
  io.write(string.format(
    '{"requests":%d,"duration_s":%.3f,"ok":%d,"bad":%d,"p50_ms":%.3f,"p90_ms":%.3f,' ..
    '"p99_ms":%.3f,"max_ms":%.3f,"errors":%d}\n',
    summary.requests, summary.duration / 1e6, tok, tbad,
    latency:percentile(50) / 1000, latency:percentile(90) / 1000,
    latency:percentile(99) / 1000, latency.max / 1000,
    e.connect + e.read + e.write + e.status + e.timeout))
end
"""


def wrk_run(url: str, *, conns: int, duration: float, prefix: str, files: dict) -> dict:
    cmd = ["wrk", "-t1", f"-c{conns}", f"-d{int(duration)}s", "--timeout", "10s", "-s",
           str(files["lua"]), url, "--", prefix, str(files["template"]), str(files["books"])]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 60)
    line = [x for x in out.stdout.splitlines() if x.startswith("{")]
    if not line:
        raise RuntimeError(f"wrk failed:\n{out.stdout}\n{out.stderr}")
    r = json.loads(line[-1])
    r["rate"] = r["requests"] / r["duration_s"]
    r["tool"] = "wrk -t1"
    return r


def loadgen(url: str, *, prefix: str, files: dict, duration: float, conns: int = 32,
            rate: float | None = None, timeout: float = 10.0,
            timeline: Path | None = None) -> dict:
    cmd = [PY, str(ROOT / "bench" / "_loadgen.py"), "--url", url, "--template",
           str(files["template"]), "--isbns", str(files["books"]), "--prefix", prefix,
           "--duration", str(duration), "--conns", str(conns), "--timeout", str(timeout)]
    if rate:
        cmd += ["--rate", str(rate)]
    if timeline:
        cmd += ["--timeline", str(timeline)]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + timeout + 60)
    line = [x for x in out.stdout.splitlines() if x.startswith("{")]
    if not line:
        raise RuntimeError(f"loadgen failed:\n{out.stdout}\n{out.stderr}")
    r = json.loads(line[-1])
    r["requests"] = r["sent"]
    r["bad"] = r["error_conf"] + r["http_error"] + r["exception"] + r["timeout"]
    r["duration_s"] = r["elapsed_s"]
    r["tool"] = "bench/_loadgen.py " + (f"open loop {rate}/s" if rate else f"closed c={conns}")
    return r


def max_rate(url: str, **kw) -> dict:
    if shutil.which("wrk"):
        return wrk_run(url, **kw)
    return loadgen(url, **kw)


def drain(node_port: int, peer_port: int, expected: int, timeout: float) -> dict:
    """Wait until the outbox is empty and the peer has ``expected`` answers."""
    t0 = time.perf_counter()
    answered = 0
    pending = None
    while time.perf_counter() - t0 < timeout:
        try:
            health = get_json(f"http://127.0.0.1:{node_port}/healthz")
        except OSError:  # a backlogged node answers /healthz late (it needs the DB)
            continue
        pending = health.get("outbox_pending")
        stats = get_json(f"http://127.0.0.1:{peer_port}/stats")
        answered = sum(v for k, v in stats["unique"].items()
                       if k.startswith("supplyingAgencyMessage"))
        if pending == 0 and answered >= expected:
            break
        time.sleep(0.1)
    stats = get_json(f"http://127.0.0.1:{peer_port}/stats")
    return {"drain_s": time.perf_counter() - t0, "answered": answered, "pending": pending,
            "statuses": stats["statuses"], "peer_last_at": stats["last_at"],
            "peer_first_at": stats["first_at"]}


def reset_peer(port: int) -> None:
    urllib.request.urlopen(urllib.request.Request(
        f"http://127.0.0.1:{port}/reset", method="POST"), timeout=5).read()


def fmt(r: dict) -> str:
    return (f"{r['rate']:8.0f} msg/s  p50 {r['p50_ms']:7.2f} ms  p99 {r['p99_ms']:8.2f} ms  "
            f"max {r['max_ms']:8.1f} ms  n={r['requests']} ok={r['ok']} bad={r['bad']}")


def main() -> int:
    args = parse_args(__doc__.splitlines()[0], lambda ap: (
        ap.add_argument("--conns", type=int, default=32),
        ap.add_argument("--rate", type=float, default=500),
        ap.add_argument("--duration", type=float),
        ap.add_argument("--records", type=int),
        ap.add_argument("--profile", type=Path, help="py-spy the node in phase (a) into DIR"),
        ap.add_argument("--timeline", type=Path, help="phase (b)'s latency per request, in "
                        "order of its due time, into DIR/<db>.txt"),
        ap.add_argument("--partners", type=int, default=1,
                        help="partners configured, as at a consortium hub (the requests "
                        "come from the last)"),
        ap.add_argument("--processes", type=int, default=1,
                        help="[node] processes (PostgreSQL); CPU and memory are summed"),
        ap.add_argument("--prefill", type=int, default=0, metavar="N",
                        help="into a database already holding N requests handled, with "
                        "their message log and history, and N holdings items "
                        "(bench/_prefill.py; filled once, then kept)"),
    ))
    if args.processes > 1 and args.db != "postgresql":
        print("--processes above 1 needs --db postgresql", file=sys.stderr)
        return 2
    duration = args.duration or (5 if args.quick else 10)
    records = args.records or (500 if args.quick else 2000)
    header("inbound" + (f" ({args.processes} processes)" if args.processes > 1 else "")
           + (f" ({args.partners} partners)" if args.partners > 1 else ""), args)
    with workdir("inbound") as d:
        dbs = Databases(args.db, d)
        procs: list[Proc] = []
        try:
            node_port, peer_port, bare_port = free_port(), free_port(), free_port()
            peer_url = f"http://127.0.0.1:{peer_port}/iso18626"
            # A hub's partners (all the stand-in); the one sending is configured last.
            others = [(f"ISIL:XX-P{i}", peer_url) for i in range(args.partners - 1)]
            db_url = prefilled(dbs, "node", args.prefill) if args.prefill else dbs.make("node")
            text = node_config(symbol=US, port=node_port, db_url=db_url,
                               partners=[*others, (PEER, peer_url)], rota=[PEER])
            if args.processes > 1:
                text = text.replace("\ndatabase = ", f"\nprocesses = {args.processes}"
                                    "\ndatabase = ", 1)
            cfg = write_config(d, "node", text)
            migrate(cfg)
            books = holdings_csv(d / "holdings.csv", records)
            import_holdings(cfg, d / "holdings.csv", replace=not args.prefill)
            files = {"lua": d / "post.lua", "template": d / "request.xml",
                     "books": d / "books.txt"}
            files["lua"].write_text(WRK_LUA)
            body = request_body(PEER, US, "RARIPLACEHOLDER", title="TITLEPLACEHOLDER",
                                isbn=books[0][0]).replace(books[0][0].encode(),
                                                          b"ISBNPLACEHOLDER")
            files["template"].write_bytes(body)
            files["books"].write_text("".join(f"{i}|{t}\n" for i, t in books))
            print(f"request body {len(body)} B; holdings {records} records x 3 items; "
                  f"{args.conns} connections; {duration:g} s per phase", flush=True)
            if args.prefill:
                print(f"the database already holds {args.prefill:,} requests handled and "
                      f"{args.prefill:,} holdings items: {size_mb(db_url):,.0f} MiB", flush=True)

            peer = start_peer(d / "peer.log", peer_port, "--mode", "ok")
            procs.append(peer)
            bare = start_peer(d / "bare.log", bare_port, "--mode", "bare")
            procs.append(bare)
            node = start_node(cfg, d / "node.log", node_port, processes=args.processes)
            procs.append(node)
            node_pids = with_children(node.pid)  # the parent and its members
            node_url = f"http://127.0.0.1:{node_port}/iso18626"
            bare_url = f"http://127.0.0.1:{bare_port}/iso18626"

            # warm-up (discarded): caches, connection pools, SQLite pages
            max_rate(bare_url, conns=args.conns, duration=2, prefix="wb", files=files)
            max_rate(node_url, conns=args.conns, duration=2, prefix="wn", files=files)
            drain(node_port, peer_port, 0, 60)
            reset_peer(peer_port)

            # (a) max rate
            bare_cpu0 = cpu_seconds(bare.pid)
            ceiling = max_rate(bare_url, conns=args.conns, duration=duration, prefix="b",
                               files=files)
            ceiling["server_cpu"] = (cpu_seconds(bare.pid) - bare_cpu0) / ceiling["duration_s"]
            print(f"(a) bare ceiling   {fmt(ceiling)}  cpu {ceiling['server_cpu']:.0%}",
                  flush=True)
            spy = None
            if args.profile:
                args.profile.mkdir(parents=True, exist_ok=True)
                spy = subprocess.Popen(
                    [str(Path(PY).parent / "py-spy"), "record", "--pid", str(node.pid),
                     "--rate", "200", "--duration", str(int(duration)), "--threads",
                     "--format", "raw", "-o",
                     str(args.profile / f"inbound-{args.db}.collapsed")],
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            cpu0 = sum(map(cpu_seconds, node_pids))
            ours = max_rate(node_url, conns=args.conns, duration=duration, prefix="a",
                            files=files)
            ours["server_cpu"] = (sum(map(cpu_seconds, node_pids)) - cpu0) / ours["duration_s"]
            rss_load = sum(map(rss_mb, node_pids))
            dr = drain(node_port, peer_port, ours["ok"], 120)
            if spy is not None:
                spy.wait(60)
            answered_rate = dr["answered"] / (dr["peer_last_at"] - dr["peer_first_at"]) if (
                dr["peer_last_at"] and dr["peer_first_at"] and dr["answered"] > 1) else 0
            e2e_rate = dr["answered"] / (ours["duration_s"] + dr["drain_s"])
            print(f"(a) node           {fmt(ours)}  cpu {ours['server_cpu']:.0%}  "
                  f"rss {rss_load:.0f} MiB", flush=True)
            print(f"    ratio to bare  {ours['rate'] / ceiling['rate']:.3f}", flush=True)
            print(f"    answers at peer {dr['answered']} (need >= {ours['ok']}), outbox "
                  f"pending {dr['pending']}, drain after load {dr['drain_s']:.1f} s, "
                  f"{dr['statuses']}", flush=True)
            print(f"    stored+answered rate (answers / (load + drain)) {e2e_rate:.0f}/s; "
                  f"answer arrival rate at peer {answered_rate:.0f}/s", flush=True)
            ok_a = ours["bad"] == 0 and dr["answered"] >= ours["ok"] and dr["pending"] == 0
            reset_peer(peer_port)

            # (b) fixed rate, open loop.  Over capacity the backlog grows without
            # bound: then run 2 s only (requests time out after 10 s), and add (c) at
            # half the measured capacity to show the latency the node gives when it keeps up.
            # The same open loop against the bare server: the generator's own latency,
            # which is in the node's figures too.
            if args.timeline:
                args.timeline.mkdir(parents=True, exist_ok=True)
            floor = loadgen(bare_url, prefix="fb", files=files, duration=min(duration, 5),
                            rate=args.rate)
            print(f"(b) bare @{args.rate:g}/s   {fmt(floor)}  (the load generator's floor)",
                  flush=True)
            over = ours["rate"] < args.rate * 0.8
            fixed = loadgen(node_url, prefix="f", files=files,
                            duration=min(duration, 2) if over else duration, rate=args.rate,
                            timeline=args.timeline and args.timeline / f"{args.db}.txt")
            dr_b = drain(node_port, peer_port, fixed["ok"], 180)
            print(f"(b) node @{args.rate:g}/s   {fmt(fixed)}  timeouts(10 s)={fixed['timeout']} "
                  f"(latency from due time; from send: p50 {fixed['send_p50_ms']:.2f} "
                  f"p99 {fixed['send_p99_ms']:.2f})"
                  + (f"  [over capacity: ran {fixed['duration_s']:.0f} s]" if over else ""),
                  flush=True)
            print(f"    answers at peer {dr_b['answered']} (need >= {fixed['ok']}), outbox "
                  f"pending {dr_b['pending']}, drain {dr_b['drain_s']:.1f} s", flush=True)
            ok_b = fixed["bad"] == 0 and dr_b["answered"] >= fixed["ok"] and dr_b["pending"] == 0
            sustainable = None
            if over:
                reset_peer(peer_port)
                half = max(1.0, round(ours["rate"] / 2))
                sustainable = loadgen(node_url, prefix="h", files=files, duration=duration,
                                      rate=half)
                dr_c = drain(node_port, peer_port, sustainable["ok"], 120)
                print(f"(c) node @{half:g}/s (half its max)  {fmt(sustainable)}  "
                      f"answers at peer {dr_c['answered']}, pending {dr_c['pending']}",
                      flush=True)
            print(json.dumps({"db": args.db, "bare": ceiling, "node_max": ours,
                              "ratio": ours["rate"] / ceiling["rate"],
                              "e2e_rate": e2e_rate, "fixed": fixed, "fixed_bare": floor, "half_capacity": sustainable, "rss_load_mb": rss_load,
                              "checks": {"max_rate": ok_a, "fixed_rate": ok_b}}))
            print(f"checks: every request OK-confirmed and answered: (a) {ok_a}  (b) {ok_b}")
            return 0 if ok_a and ok_b else 1
        finally:
            for p in reversed(procs):
                p.stop()
            dbs.close()


if __name__ == "__main__":
    sys.exit(main())
