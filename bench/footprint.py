"""Footprint: cold start of ``ill-node serve`` to the first answered request, and
resident memory idle and under load.

The database is migrated and the holdings imported beforehand (not timed).
Cold start: from spawning ``ill-node serve`` to the first OK confirmation of a
valid Request POSTed to /iso18626 (the script POSTs every 5 ms from the
moment of the spawn); median and min of ``--starts`` starts, in wall time and
in the node's CPU time (user+sys, which other work on the machine inflates
less).  The node's bytecode is cached, as in any installed copy: one untimed
start first writes it to a cache in the work directory (this environment sets
PYTHONDONTWRITEBYTECODE); ``--compile-each-start`` keeps that setting, so every
start compiles the node's own modules again.  Memory: VmRSS from
/proc of the node process after 2 s idle, its peak (sampled every 0.25 s)
during ``--duration`` s of closed-loop load (bench/_loadgen.py, 32
connections, new requests, auto-answer on, answers going out through the
outbox to a recording peer), and after the outbox has drained.

    .venv/bin/python bench/footprint.py [--db sqlite|postgresql] [--quick]
        [--starts N] [--duration S] [--compile-each-start]
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import (  # noqa: E402
    ILL_NODE,
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
    median,
    migrate,
    node_config,
    parse_args,
    request_body,
    rss_mb,
    start_peer,
    workdir,
    write_config,
)

US, PEER = "ISIL:XX-NODE", "ISIL:XX-PEER"


def post(url: str, body: bytes) -> bytes | None:
    req = urllib.request.Request(url, data=body, method="POST",
                                 headers={"Content-Type": "application/xml; charset=utf-8"})
    try:
        with urllib.request.urlopen(req, timeout=2) as r:
            return r.read()
    except Exception:
        return None


def cold_start(cfg: Path, port: int, log: Path, body: bytes,
               env: dict[str, str] | None) -> tuple[float, float, Proc]:
    """(wall seconds, node CPU seconds) to the first answered request, and the node."""
    url = f"http://127.0.0.1:{port}/iso18626"
    t0 = time.perf_counter()
    proc = Proc([ILL_NODE, "serve", "--config", str(cfg)], log=log, env=env)
    while time.perf_counter() - t0 < 30:
        answer = post(url, body)
        if answer is not None and b"messageStatus>OK<" in answer:
            return time.perf_counter() - t0, cpu_seconds(proc.pid), proc
        if proc.p.poll() is not None:
            raise RuntimeError(f"node exited:\n{proc.tail()}")
        time.sleep(0.005)
    proc.stop()
    raise RuntimeError("no answer in 30 s")


def main() -> int:
    args = parse_args(__doc__.splitlines()[0], lambda ap: (
        ap.add_argument("--starts", type=int),
        ap.add_argument("--duration", type=float),
        ap.add_argument("--compile-each-start", action="store_true",
                        help="no bytecode cache: each start compiles the node's modules"),
    ))
    starts = args.starts or (3 if args.quick else 5)
    duration = args.duration or (5 if args.quick else 10)
    header("footprint", args)
    with workdir("footprint") as d:
        dbs = Databases(args.db, d)
        procs: list[Proc] = []
        try:
            port, peer_port = free_port(), free_port()
            cfg = write_config(d, "node", node_config(
                symbol=US, port=port, db_url=dbs.make("node"),
                partners=[(PEER, f"http://127.0.0.1:{peer_port}/iso18626")]))
            migrate(cfg)
            books = holdings_csv(d / "holdings.csv", 2000)
            import_holdings(cfg, d / "holdings.csv")
            procs.append(start_peer(d / "peer.log", peer_port, "--mode", "ok"))
            env = None
            if not args.compile_each_start:
                env = {"PYTHONDONTWRITEBYTECODE": "", "PYTHONPYCACHEPREFIX": str(d / "pycache")}
                body = request_body(PEER, US, "warm-up", title=books[0][1], isbn=books[0][0])
                cold_start(cfg, port, d / "warm-up.log", body, env)[2].stop()
            times, cpus = [], []
            node = None
            for k in range(starts):
                body = request_body(PEER, US, f"cold-{k}", title=books[k][1], isbn=books[k][0])
                took, cpu, node = cold_start(cfg, port, d / f"node{k}.log", body, env)
                times.append(took)
                cpus.append(cpu)
                print(f"  start {k + 1}: first answered request after {1000 * took:.0f} ms "
                      f"({1000 * cpu:.0f} ms CPU)", flush=True)
                if k < starts - 1:
                    node.stop()
            procs.append(node)
            print(f"cold start to first answered request "
                  f"({'compiling' if args.compile_each_start else 'bytecode cached'}): "
                  f"median {1000 * median(times):.0f} ms (min {1000 * min(times):.0f}, "
                  f"max {1000 * max(times):.0f}); node CPU median {1000 * median(cpus):.0f} ms "
                  f"(min {1000 * min(cpus):.0f})", flush=True)
            time.sleep(2)
            idle = rss_mb(node.pid)
            print(f"RSS idle (after the first request, 2 s idle): {idle:.0f} MiB", flush=True)
            # under load
            files = {"template": d / "request.xml", "books": d / "books.txt"}
            files["template"].write_bytes(request_body(
                PEER, US, "RARIPLACEHOLDER", title="TITLEPLACEHOLDER",
                isbn=books[0][0]).replace(books[0][0].encode(), b"ISBNPLACEHOLDER"))
            files["books"].write_text("".join(f"{i}|{t}\n" for i, t in books))
            peak = [idle]
            stop = threading.Event()

            def sample():
                while not stop.is_set():
                    peak[0] = max(peak[0], rss_mb(node.pid))
                    time.sleep(0.25)

            sampler = threading.Thread(target=sample)
            sampler.start()
            out = subprocess.run(
                [PY, str(ROOT / "bench" / "_loadgen.py"), "--url",
                 f"http://127.0.0.1:{port}/iso18626", "--template", str(files["template"]),
                 "--isbns", str(files["books"]), "--prefix", "load", "--duration",
                 str(duration), "--conns", "32"], capture_output=True, text=True,
                timeout=duration + 120)
            t_drain = time.perf_counter()
            while time.perf_counter() - t_drain < 120:
                if get_json(f"http://127.0.0.1:{port}/healthz").get("outbox_pending") == 0:
                    break
                time.sleep(0.2)
            stop.set()
            sampler.join()
            load = json.loads([x for x in out.stdout.splitlines() if x.startswith("{")][-1])
            after = rss_mb(node.pid)
            print(f"RSS under load ({load['sent']} requests in {load['elapsed_s']:.0f} s, "
                  f"c=32, ok={load['ok']}): peak {peak[0]:.0f} MiB; after the outbox drained "
                  f"{after:.0f} MiB", flush=True)
            print(json.dumps({"db": args.db, "bytecode_cached": not args.compile_each_start,
                              "cold_start_ms": [1000 * t for t in times],
                              "cold_start_cpu_ms": [1000 * c for c in cpus],
                              "rss_idle_mb": idle, "rss_peak_mb": peak[0],
                              "rss_after_mb": after}))
            return 0
        finally:
            for p in reversed(procs):
                if p is not None:
                    p.stop()
            dbs.close()


if __name__ == "__main__":
    sys.exit(main())
