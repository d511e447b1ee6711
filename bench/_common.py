"""Shared helpers for the benchmarks in bench/ (not part of the node).

- databases: a fresh SQLite file in a temp dir or a fresh PostgreSQL database
  (``ILL_BENCH_PG``, default postgresql://postgres@127.0.0.1:5432/postgres),
  dropped afterwards;
- configs: a node TOML written into a temp dir;
- processes: ``ill-node serve`` and helper processes (peers, load generators)
  started as subprocesses, waited for on /healthz, stopped by PID;
- statistics: percentiles, RSS from /proc.

Everything binds to 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
ILL_NODE = str(Path(sys.executable).parent / "ill-node")
PG_ADMIN_DSN = os.environ.get("ILL_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
XML_HEADERS = {"Content-Type": "application/xml; charset=utf-8"}

if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from node.demo import free_port  # noqa: E402, F401  (re-exported: the node's, shared)


def pct(values: list[float], p: float) -> float:
    """The p-th percentile (0..100), nearest rank; NaN for no values."""
    if not values:
        return float("nan")
    s = sorted(values)
    k = max(0, min(len(s) - 1, int(round(p / 100 * len(s) + 0.5)) - 1))
    return s[k]


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def rss_mb(pid: int) -> float:
    """Resident set size of one process, MiB (VmRSS from /proc)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def cpu_seconds(pid: int) -> float:
    """utime+stime of a process (all threads), seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def with_children(pid: int) -> list[int]:
    """The process and its children (a node's processes, ``[node] processes``)."""
    pids = [pid]
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and int((entry / "stat").read_text().rsplit(")", 1)[1]
                                            .split()[1]) == pid:
                pids.append(int(entry.name))
        except OSError:
            continue
    return pids


def now_iso() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


# --------------------------------------------------------------------------- databases


async def _pg_admin(sql: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(PG_ADMIN_DSN, timeout=5)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


async def _pg_value(sql: str, *args):
    """One value of one query, on the administrator's connection."""
    import asyncpg

    conn = await asyncpg.connect(PG_ADMIN_DSN, timeout=5)
    try:
        return await conn.fetchval(sql, *args)
    finally:
        await conn.close()


def _pg_url(database: str) -> str:
    parts = urlsplit(PG_ADMIN_DSN)
    return urlunsplit(("postgresql+asyncpg", parts.netloc, "/" + database, parts.query, ""))


class Databases:
    """Fresh databases of one kind; every one made is dropped by ``close()``."""

    def __init__(self, kind: str, directory: Path):
        if kind not in ("sqlite", "postgresql"):
            raise SystemExit(f"--db must be sqlite or postgresql, not {kind}")
        self.kind = kind
        self.directory = directory
        self.made: list[str] = []

    def make(self, name: str, *, template: str | None = None) -> str:
        """A fresh database; on PostgreSQL, a copy of ``template`` if given."""
        if self.kind == "sqlite":
            return f"sqlite+aiosqlite:///{self.directory / (name + '.db')}"
        database = f"ill_bench_{name}_{uuid.uuid4().hex[:8]}".lower()
        copy = f' TEMPLATE "{template}"' if template else ""
        asyncio.run(_pg_admin(f'CREATE DATABASE "{database}"{copy}'))
        self.made.append(database)
        return _pg_url(database)

    async def amake(self, name: str) -> str:
        if self.kind == "sqlite":
            return self.make(name)
        database = f"ill_bench_{name}_{uuid.uuid4().hex[:8]}".lower()
        await _pg_admin(f'CREATE DATABASE "{database}"')
        self.made.append(database)
        return _pg_url(database)

    def close(self) -> None:
        for database in self.made:
            with contextlib.suppress(Exception):
                asyncio.run(_pg_admin(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)'))
        self.made.clear()

    async def aclose(self) -> None:
        for database in self.made:
            with contextlib.suppress(Exception):
                await _pg_admin(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        self.made.clear()


@contextlib.contextmanager
def workdir(prefix: str) -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix=f"ill-bench-{prefix}-") as d:
        yield Path(d)


# --------------------------------------------------------------------------- configs

FAST_OUTBOX = """
[outbox]
timeout_seconds = 5
max_attempts = 50
initial_backoff_seconds = 0.05
max_backoff_seconds = 0.5
poll_seconds = 0.05
"""


# The defaults (600 messages a minute per partner, 256 connections) would
# throttle a load generator playing one partner at 10 msg/s: lift them.
BENCH_LIMITS = """
[limits]
partner_requests_per_minute = 100000000
max_connections = 4096
"""


def node_config(*, symbol: str, port: int, db_url: str, partners: list[tuple[str, str]],
                rota: list[str] | None = None, extra: str = "") -> str:
    """A node TOML: ``partners`` are (symbol, endpoint); one rota "default"."""
    text = (
        f'[node]\nsymbol = "{symbol}"\nname = "bench {symbol}"\n'
        f'listen = "127.0.0.1:{port}"\npublic_url = "http://127.0.0.1:{port}/iso18626"\n'
        f'database = "{db_url}"\n\n'
        f'[lending]\nauto_answer = true\n\n'
        f"{BENCH_LIMITS}\n{FAST_OUTBOX}\n{extra}\n"
    )
    for sym, url in partners:
        text += f'\n[[partners]]\nsymbol = "{sym}"\nname = "{sym}"\nurl = "{url}"\n'
    rota = rota if rota is not None else [s for s, _ in partners]
    if rota:
        text += '\n[[rotas]]\nname = "default"\npartners = [' + ", ".join(
            f'"{s}"' for s in rota) + "]\n"
    return text


def write_config(directory: Path, name: str, text: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}.toml"
    path.write_text(text)
    return path


def holdings_csv(path: Path, n_records: int, *, items_per_record: int = 3,
                 start: int = 0) -> list[tuple[str, str]]:
    """Write a holdings CSV of ``n_records`` books; return their (isbn13, title)."""
    out = []
    lines = ["record_id,title,author,isbn,barcode,call_number,location,status"]
    for i in range(start, start + n_records):
        isbn = isbn13(i)
        title = f"Bench title {i} of the node"
        out.append((isbn, title))
        for j in range(items_per_record):
            lines.append(f"R{i},{title},Author {i},{isbn},B{i}-{j},QA {i}.{j},MAIN,available")
    path.write_text("\n".join(lines) + "\n")
    return out


def isbn13(i: int) -> str:
    first12 = f"978{i % 10**9:09d}"
    total = sum(int(c) * (1 if k % 2 == 0 else 3) for k, c in enumerate(first12))
    return first12 + str((10 - total % 10) % 10)


def run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    result = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, **kw)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({result.returncode}):\n{result.stderr}")
    return result


def migrate(config: Path) -> None:
    run([ILL_NODE, "migrate", "--config", str(config)])


def import_holdings(config: Path, csv_path: Path, *, replace: bool = True) -> None:
    run([ILL_NODE, "holdings", "import", str(csv_path), "--config", str(config),
         "--replace" if replace else "--merge"])


# --------------------------------------------------------------------------- processes


class Proc:
    """A subprocess we started; stopped by its PID only."""

    def __init__(self, cmd: list[str], *, log: Path, env: dict | None = None):
        self.cmd = cmd
        self.log_path = log
        self._log = open(log, "wb")
        self.started = time.perf_counter()
        self.p = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT, cwd=ROOT,
                                  env={**os.environ, **(env or {})})

    @property
    def pid(self) -> int:
        return self.p.pid

    def stop(self, timeout: float = 15) -> None:
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGINT)
            try:
                self.p.wait(timeout)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait(5)
        self._log.close()

    def tail(self, n: int = 30) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        return ""


def wait_http(url: str, proc: Proc | None = None, timeout: float = 30) -> float:
    """Poll ``url`` until it answers 200; return seconds waited."""
    import urllib.request

    t0 = time.perf_counter()
    while time.perf_counter() - t0 < timeout:
        if proc is not None and proc.p.poll() is not None:
            raise RuntimeError(f"{proc.cmd} exited {proc.p.returncode}:\n{proc.tail()}")
        try:
            with urllib.request.urlopen(url, timeout=1) as r:
                if r.status == 200:
                    return time.perf_counter() - t0
        except Exception:
            pass
        time.sleep(0.01)
    raise RuntimeError(f"{url} did not answer in {timeout}s\n{proc.tail() if proc else ''}")


def start_node(config: Path, log: Path, port: int, *, processes: int = 1) -> Proc:
    proc = Proc([ILL_NODE, "serve", "--config", str(config)], log=log)
    wait_http(f"http://127.0.0.1:{port}/healthz", proc)
    if processes > 1:  # the first serves before the others start
        deadline = time.monotonic() + 60
        while "serving with" not in log.read_text() and time.monotonic() < deadline:
            time.sleep(0.05)
    return proc


def start_peer(log: Path, port: int, *args: str) -> Proc:
    proc = Proc([PY, str(ROOT / "bench" / "_peer.py"), "--port", str(port), *args], log=log)
    wait_http(f"http://127.0.0.1:{port}/stats", proc)
    return proc


def get_json(url: str) -> dict:
    import json
    import urllib.request

    with urllib.request.urlopen(url, timeout=10) as r:
        return json.loads(r.read())


def request_body(requester: str, supplier: str, rari: str, *, title: str,
                 isbn: str | None) -> bytes:
    """A valid ISO 18626 v1.2 request, serialised by our own writer."""
    from node.protocol import writer
    from tests.builders import request

    return writer.serialise(request(requester, supplier, rari, title=title, isbn=isbn))


def parse_args(description: str, extra=None):
    import argparse

    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--db", choices=("sqlite", "postgresql"), default="sqlite")
    ap.add_argument("--quick", action="store_true", help="smaller and shorter run")
    if extra:
        extra(ap)
    return ap.parse_args()


def header(title: str, args) -> None:
    print(f"== {title}  db={args.db}{'  (quick)' if args.quick else ''}  {now_iso()}  "
          f"nproc={os.cpu_count()}  loadavg {loadavg()}", flush=True)
    import atexit

    atexit.register(lambda: print(f"== end {now_iso()}  loadavg {loadavg()}", flush=True))


def loadavg() -> str:
    """The 1/5/15-minute load averages: other work on the same two cores skews every figure."""
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])
