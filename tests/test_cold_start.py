"""Start-up stays lean: the schema check needs no Alembic, the CLI's parser
imports no heavy library, and ``serve`` refuses an unmigrated database before
it opens its port (issue 8: cold start under 1.5 s)."""

from __future__ import annotations

import asyncio
import re
import socket
import subprocess
import sys
import textwrap

import pytest
from alembic.script import ScriptDirectory

from node.store import db

# Libraries that cost tens of milliseconds each to import (bench/RESULTS.md §5).
HEAVY = ("sqlalchemy", "aiohttp", "lxml", "alembic", "cryptography", "apscheduler",
         "aiosqlite", "asyncpg", "xmlschema")


# ``ill-node ARGS`` in a fresh interpreter, then the modules it imported, on a last line.
_RUN_CLI = """
import sys
from node.cli import main
try:
    code = main(sys.argv[1:])
except SystemExit as exc:
    code = exc.code
print("MODULES", " ".join(sorted(sys.modules)), file=sys.stderr)
sys.exit(code)
"""


async def run_cli(*argv: str) -> tuple[int, str, str, set[str]]:
    """(exit code, stdout, stderr without the last line, modules imported)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", _RUN_CLI, *argv,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    stderr, _, modules = err.decode().rpartition("MODULES ")
    return proc.returncode, out.decode(), stderr, set(modules.split())


def heavy(modules: set[str], libraries=HEAVY) -> set[str]:
    return {m for m in modules if m.split(".")[0] in libraries}


def test_head_revision_is_alembics_head():
    """The head found from the migration files' revision lines is the one Alembic finds."""
    assert db.head_revision() == ScriptDirectory.from_config(db.alembic_config()).get_current_head()


def test_head_revision_reads_every_way_a_revision_is_written(tmp_path, monkeypatch):
    versions = tmp_path / "versions"
    versions.mkdir()
    (versions / "a.py").write_text('"""Revision ID: a1\nRevises:\n"""\n'
                                   "revision = 'a1'\ndown_revision: Union[str, None] = None\n")
    (versions / "b.py").write_text('revision: str = "b2"\ndown_revision = "a1"\n')
    (versions / "c.py").write_text("revision = 'c3'\ndown_revision = 'a1'\n")
    monkeypatch.setattr(db, "MIGRATIONS_DIR", tmp_path)
    with pytest.raises(RuntimeError, match=r"expected one head revision, found \['b2', 'c3'\]"):
        db.head_revision()
    (versions / "d.py").write_text("revision = 'd4'\ndown_revision = ('b2', 'c3')  # merge\n")
    assert db.head_revision() == "d4"


async def test_help_imports_no_heavy_library():
    """Every command module is imported to build the parser: their tops stay cheap."""
    code, out, err, modules = await run_cli("--help")
    assert code == 0, err
    assert "serve" in out and "mock-peer" in out
    assert {"node.serve_cli", "node.lending_cli", "node.mockpeer_cli"} <= modules
    assert heavy(modules) == set()
    assert not {m for m in modules if m in ("node.config", "node.service") or m.startswith((
        "node.store.", "node.supplier.", "node.borrower.", "node.mockpeer.", "node.conformance."))}


@pytest.mark.parametrize("argv, shows", [
    (["lending", "act", "--help"], "will_supply"),  # the lending machine's staff actions
    (["mock-peer", "--help"], "offset-0000"),  # the mock's quirks
    (["conformance", "--help"], "Checks: confirmation-wellformed-valid"),
    (["staff", "add", "--help"], "read-only"),  # node.config's staff roles
])
def test_command_help_filled_in_when_used(argv, shows):
    proc = subprocess.run([sys.executable, "-m", "node.cli", *argv],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    text = re.sub(r"-\s+", "-", " ".join(proc.stdout.split()))  # undo argparse's wrapping
    assert shows in text


def _port_is_free(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


def node_toml(directory, port: int, database: str):
    """A minimal node configuration listening on ``port``, on ``database``."""
    config = directory / "node.toml"
    config.write_text(textwrap.dedent(f"""
        [node]
        symbol = "ISIL:XX-US"
        name = "Us"
        listen = "127.0.0.1:{port}"
        public_url = "http://127.0.0.1:{port}/iso18626"
        database = "{database}"
    """))
    return config


async def test_serve_refuses_unmigrated_database_once_and_without_alembic(
        db_url, tmp_path, unused_port):
    port = unused_port()
    config = node_toml(tmp_path, port, db_url)
    code, _, err, modules = await run_cli("serve", "--config", str(config))
    assert code == 1, err
    assert f"need {db.head_revision()}): run `ill-node migrate --config {config}`" in err
    assert err.count("is not migrated") == 1
    assert "Traceback" not in err
    assert _port_is_free(port)
    # By then the whole serve path is imported: the app, the service, the store.
    assert {"node.http", "node.service", "node.store.db"} <= modules
    assert heavy(modules, ("alembic", "cryptography")) == set()


async def test_serve_says_what_is_wrong_when_the_database_is_unreachable(tmp_path, unused_port):
    port, dead = unused_port(), unused_port()
    config = node_toml(tmp_path, port, f"postgresql://postgres@127.0.0.1:{dead}/nothing")
    code, _, err, _ = await run_cli("serve", "--config", str(config))
    assert code == 1, err
    assert "ill-node serve: cannot start:" in err and f"127.0.0.1:{dead}/nothing" in err
    assert "Traceback" not in err
    assert _port_is_free(port)


def test_init_writes_a_config_and_a_migrated_database(tmp_path):
    target = tmp_path / "library"
    proc = subprocess.run([sys.executable, "-m", "node.cli", "init", str(target),
                           "--symbol", "ISIL:XX-INIT", "--listen", "127.0.0.1:18626"],
                          capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert f"ill-node serve --config {target / 'config.toml'}" in proc.stdout
    from node.config import load

    config = load(target / "config.toml")
    assert str(config.node.symbol) == "ISIL:XX-INIT"

    async def revision() -> str | None:
        engine = db.create_engine(config.node.database_url)
        try:
            return await db.current_revision(engine)
        finally:
            await engine.dispose()

    assert asyncio.run(revision()) == db.head_revision()
    # A second init does not overwrite it.
    again = subprocess.run([sys.executable, "-m", "node.cli", "init", str(target)],
                           capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert again.returncode == 1 and "exists already" in again.stderr


def test_once_started_the_collector_leaves_the_start_up_heap_alone():
    """serve's quiet_garbage_collector (the p99 of inbound messages): what exists at
    start is frozen out of collections, which run less often."""
    script = textwrap.dedent("""
        import gc
        import node.service  # the heavy imports a started node has made
        from node.serve_cli import quiet_garbage_collector
        before = gc.get_freeze_count()
        quiet_garbage_collector()
        print(before, gc.get_freeze_count(), *gc.get_threshold())
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=60, check=True).stdout.split()
    before, frozen, *threshold = map(int, out)
    assert before == 0 and frozen > 50_000  # modules, SQLAlchemy, aiohttp, lxml...
    assert threshold[0] > 700  # Python's default: a collection every 700 allocations
