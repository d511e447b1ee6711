"""Nodes as real OS processes: two processes on one database (SIGKILL: test_group_commit)."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import aiohttp
import pytest

from node.processes import MIGRATE_REQUESTS
from node.protocol import reader, writer
from node.protocol.codes import MessageStatus
from node.store import db
from tests import builders
from tests.harness import XML, free_port
from tests.peer import Peer

PEER = "ISIL:XX-PEER"
US = "ISIL:XX-US"


def write_config(path: Path, port: int, database: str, peer_url: str) -> Path:
    path.write_text(textwrap.dedent(f"""
        [node]
        symbol = "{US}"
        name = "Us"
        listen = "127.0.0.1:{port}"
        public_url = "http://127.0.0.1:{port}/iso18626"
        database = "{database}"

        [outbox]
        timeout_seconds = 2
        max_attempts = 1000
        initial_backoff_seconds = 0.1
        max_backoff_seconds = 0.5
        poll_seconds = 0.1

        [[partners]]
        symbol = "{PEER}"
        name = "Peer"
        url = "{peer_url}"
    """))
    return path


class NodeProcess:
    def __init__(self, config: Path, port: int, log: Path):
        self.config, self.port, self.log = config, port, log
        self.proc: subprocess.Popen | None = None

    async def start(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "node.cli", "serve", "--config", str(self.config)],
            stdout=self.log.open("ab"), stderr=subprocess.STDOUT,
        )
        async with aiohttp.ClientSession() as http:
            for _ in range(200):
                try:
                    async with http.get(f"http://127.0.0.1:{self.port}/healthz") as resp:
                        if resp.status == 200:
                            return
                except aiohttp.ClientError:
                    pass
                if self.proc.poll() is not None:
                    raise AssertionError(f"node exited: {self.log.read_text()[-2000:]}")
                await asyncio.sleep(0.05)
        raise AssertionError("node did not start")

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()


async def send(http: aiohttp.ClientSession, port: int, rari: str) -> bool:
    """True when the node confirmed the request OK."""
    body = writer.serialise(builders.request(PEER, US, rari, title=f"Book {rari}"))
    try:
        async with http.post(f"http://127.0.0.1:{port}/iso18626", data=body, headers=XML) as r:
            if r.status != 200:
                return False
            conf = reader.parse(await r.read()).message
            return conf.confirmation_header.message_status is MessageStatus.OK
    except (aiohttp.ClientError, asyncio.TimeoutError):
        return False


async def test_two_processes_on_one_postgresql_send_each_message_once(tmp_path, db_url):
    if not db_url.startswith("postgresql"):
        pytest.skip("several node processes share a database through PostgreSQL")
    peer = Peer(PEER)
    await peer.start()
    database = db_url.replace("postgresql+asyncpg", "postgresql")
    await db.migrate_async(db_url)
    nodes = []
    for n in range(2):
        port = free_port()
        config = write_config(tmp_path / f"config{n}.toml", port, database, peer.endpoint)
        nodes.append(NodeProcess(config, port, tmp_path / f"node{n}.log"))
    try:
        for node in nodes:
            await node.start()
        async with aiohttp.ClientSession() as http:
            results = await asyncio.gather(*(
                send(http, nodes[i % 2].port, f"r{i}") for i in range(120)))
        assert all(results)
        await peer.wait_for(120, timeout=30)
        await asyncio.sleep(1.0)  # give a duplicate time to show up
        answered = [e.message.header.requesting_agency_request_id for e in peer.received]
        assert len(answered) == 120
        assert sorted(answered) == sorted(f"r{i}" for i in range(120))
        # A lone node has no processes to restart: SIGUSR2 (whose default action would
        # end it) is refused in its log.
        nodes[0].proc.send_signal(signal.SIGUSR2)
        await wait_until(lambda: "SIGUSR2 ignored" in nodes[0].log.read_text())
        assert nodes[0].proc.poll() is None
    finally:
        for node in nodes:
            node.stop()
        await peer.stop()


# -- [node] processes: one node, several processes on one port (node/processes.py) --


class ProcessGroup:
    """``ill-node serve`` with ``[node] processes = 2``: the parent and its members."""

    def __init__(self, tmp_path: Path, database: str, peer_url: str):
        self.port = free_port()
        self.config = write_config(tmp_path / "group.toml", self.port, database, peer_url)
        self.write_config("")
        self.log = tmp_path / "group.log"
        self.proc: subprocess.Popen | None = None

    def write_config(self, limits: str) -> None:
        text = self.config.read_text().split("\n[limits]")[0]
        text = text.replace('database = "', 'processes = 2\ndatabase = "', 1) if (
            "processes" not in text) else text
        self.config.write_text(text + (f"\n[limits]\n{limits}\n" if limits else ""))

    def spawn(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "node.cli", "serve", "--config", str(self.config)],
            stdout=self.log.open("ab"), stderr=subprocess.STDOUT)

    async def start(self) -> None:
        """Spawn the parent (unless spawned) and wait until both members serve."""
        if self.proc is None:
            self.spawn()
        for _ in range(400):  # the first member serves before the second is started
            if "serving with 2 processes" in self.log.read_text():
                return
            if self.proc.poll() is not None:
                raise AssertionError(f"exited: {self.log.read_text()[-2000:]}")
            await asyncio.sleep(0.05)
        raise AssertionError(f"did not start: {self.log.read_text()[-2000:]}")

    def members(self) -> dict[int, str]:
        """pid -> command line of the parent's child processes (from /proc)."""
        found = {}
        for entry in Path("/proc").iterdir():
            try:
                stat = (entry / "stat").read_text()
                if entry.name.isdigit() and int(stat.rsplit(")", 1)[1].split()[1]) == self.proc.pid:
                    found[int(entry.name)] = (entry / "cmdline").read_text().replace("\0", " ")
            except OSError:
                continue
        return found

    async def workers(self, connections: int = 30) -> set[str]:
        """The worker ids that answered /healthz over ``connections`` new connections:
        the kernel spreads connections over the members by their ports."""
        seen = set()
        for _ in range(connections):
            async with self._alone() as http, http.get(
                    f"http://127.0.0.1:{self.port}/healthz") as resp:
                assert resp.status == 200
                seen.add((await resp.json())["worker"])
        return seen

    async def post_statuses(self, body: bytes, connections: int = 20) -> list[int]:
        statuses = []
        for _ in range(connections):
            async with self._alone() as http, http.post(
                    f"http://127.0.0.1:{self.port}/iso18626", data=body, headers=XML) as resp:
                statuses.append(resp.status)
        return statuses

    @staticmethod
    def _alone() -> aiohttp.ClientSession:
        """A client whose every request is a new connection (members get some each)."""
        return aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True))

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)  # the members follow: stdin at EOF
            self.proc.wait()


async def wait_until(predicate, timeout: float = 15.0) -> None:
    for _ in range(int(timeout / 0.05)):
        if predicate():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("timed out")


@pytest.fixture
async def group(tmp_path, db_url):
    if not db_url.startswith("postgresql"):
        pytest.skip("several node processes share a database through PostgreSQL")
    await db.migrate_async(db_url)
    peer = Peer(PEER)
    await peer.start()
    group = ProcessGroup(tmp_path, db_url.replace("postgresql+asyncpg", "postgresql"),
                         peer.endpoint)
    group.peer = peer
    try:
        yield group
    finally:
        group.stop()
        await peer.stop()


async def test_a_node_of_two_processes_shares_its_port_and_answers_each_request_once(group):
    await group.start()
    assert len(group.members()) == 2
    workers = await group.workers()
    assert len(workers) == 2 and {w.split("-")[0] for w in workers} == {"node0", "node1"}

    async def send_alone(rari: str) -> bool:  # a connection each: both members receive
        async with group._alone() as http:
            return await send(http, group.port, rari)

    results = await asyncio.gather(*(send_alone(f"g{i}") for i in range(80)))
    assert all(results)
    await group.peer.wait_for(80, timeout=30)
    await asyncio.sleep(1.0)  # give a duplicate time to show up
    answered = [e.message.header.requesting_agency_request_id for e in group.peer.received]
    assert sorted(answered) == sorted(f"g{i}" for i in range(80))

    # SIGTERM: every member stops as a lone node does, then the parent exits 0.
    members = group.members()
    group.proc.send_signal(signal.SIGTERM)
    assert group.proc.wait(30) == 0
    for pid in members:
        assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text()


async def test_sighup_and_the_admin_api_reload_every_process(group):
    # A SIGHUP while the second member starts: it is not ended by it (the signal's
    # default action, before its handler is in place), but reloads once it serves.
    group.spawn()
    await wait_until(lambda: "Running on" in group.log.read_text(), timeout=30)
    group.proc.send_signal(signal.SIGHUP)
    await group.start()  # the same process: waits until both serve
    await wait_until(lambda: group.log.read_text().count("configuration reloaded") == 2)
    assert "exited" not in group.log.read_text()

    body = writer.serialise(builders.request(PEER, US, "big", title="A book"))
    assert await group.post_statuses(body) == [200] * 20
    group.write_config("max_body_bytes = 200")
    group.proc.send_signal(signal.SIGHUP)
    await wait_until(lambda: group.log.read_text().count("configuration reloaded") == 4)
    assert await group.post_statuses(body) == [413] * 20  # whichever member answers

    # A file with a problem: said once, by the parent; each member keeps what it has.
    group.write_config('max_body_bytes = "big"')
    group.proc.send_signal(signal.SIGHUP)
    await wait_until(lambda: "configuration not reloaded" in group.log.read_text())
    log = group.log.read_text()
    assert log.count("limits.max_body_bytes: must be an integer") == 1
    assert log.count("configuration reloaded") == 4
    assert await group.post_statuses(body) == [413] * 20

    group.write_config("")
    async with aiohttp.ClientSession() as http, http.post(
            f"http://127.0.0.1:{group.port}/api/admin/reload") as resp:
        assert resp.status == 200
    await wait_until(lambda: group.log.read_text().count("configuration reloaded") == 6)
    assert await group.post_statuses(body) == [200] * 20


async def test_a_member_that_dies_is_started_again_and_all_stop_with_the_parent(group):
    await group.start()
    before = await group.workers()
    (victim,) = [pid for pid, cmd in group.members().items() if cmd.endswith("--member 1 ")]
    os.kill(victim, signal.SIGKILL)
    await wait_until(lambda: f"process 1 (pid {victim}) exited with signal SIGKILL"
                     in group.log.read_text())
    await wait_until(lambda: len(group.members()) == 2 and victim not in group.members())
    await wait_until(lambda: group.log.read_text().count("Running on") == 3)
    after = await group.workers()
    assert len(after) == 2 and len(after & before) == 1  # member 1 is a new process

    # The parent killed outright: the members see their stdin close, and stop.
    members = group.members()
    group.proc.send_signal(signal.SIGKILL)
    group.proc.wait()
    await wait_until(lambda: not any(Path(f"/proc/{pid}").exists() for pid in members))
    assert group.log.read_text().count("the parent process has gone: stopping") == 2


@pytest.fixture
def migrate_requests():
    """Connections queued on a listener that closes passed to another of its port's
    (Linux 5.14+; as root), for the test's time, as README advises: else the kernel
    resets any that a stopping process had not accepted yet. Rare with this test's
    load, but not never."""
    path = Path(MIGRATE_REQUESTS)
    try:
        before = path.read_text()
        path.write_text("1\n")
    except OSError:
        yield  # not Linux, or not root: the test runs as it is
        return
    try:
        yield
    finally:
        path.write_text(before)


async def test_sigusr2_replaces_every_process_while_the_port_serves(group, migrate_requests):
    await group.start()
    pids, workers = set(group.members()), await group.workers()
    stop, results = asyncio.Event(), []

    async def client(n: int) -> None:  # a new connection for every request, all along
        while not stop.is_set():
            body = writer.serialise(builders.request(PEER, US, f"c{n}-{len(results)}",
                                                     title="A book"))
            try:
                async with group._alone() as http, http.post(
                        f"http://127.0.0.1:{group.port}/iso18626", data=body,
                        headers=XML) as resp:
                    conf = reader.parse(await resp.read()).message
                    results.append(conf.confirmation_header.message_status.value)
            except aiohttp.ClientError as exc:
                results.append(repr(exc))

    clients = [asyncio.create_task(client(n)) for n in range(3)]
    await asyncio.sleep(0.5)
    group.proc.send_signal(signal.SIGUSR2)
    await wait_until(lambda: "rolling restart done" in group.log.read_text(), timeout=90)
    await asyncio.sleep(0.5)
    stop.set()
    await asyncio.gather(*clients)

    log = group.log.read_text()
    assert log.count("replaced: pid") == 2 and "exited with" not in log, log
    assert len(results) > 30
    assert [r for r in results if r != "OK"] == []  # not one refused, reset or lost
    assert len(group.members()) == 2 and not set(group.members()) & pids
    after = await group.workers()
    assert len(after) == 2 and not after & workers
    await group.peer.wait_for(len(results), timeout=30)
    await asyncio.sleep(1.0)  # give a duplicate time to show up
    assert len(group.peer.received) == len(results)


async def test_a_rolling_restart_stops_where_a_new_process_cannot_start(group):
    await group.start()
    pids = set(group.members())
    group.config.write_text(group.config.read_text().replace("[outbox]", "[outbox]\nx = 1"))
    group.proc.send_signal(signal.SIGUSR2)
    await wait_until(lambda: "rolling restart stopped" in group.log.read_text(), timeout=60)
    assert "outbox.x: unknown key" in group.log.read_text()
    assert set(group.members()) == pids  # the old ones serve on
    assert len(await group.workers()) == 2


async def test_a_node_of_several_processes_that_cannot_start_says_why_once(tmp_path, db_url):
    if not db_url.startswith("postgresql"):
        pytest.skip("several node processes share a database through PostgreSQL")
    database = db_url.replace("postgresql+asyncpg", "postgresql")
    group = ProcessGroup(tmp_path, database, "http://127.0.0.1:9/iso18626")
    serve = [sys.executable, "-m", "node.cli", "serve", "--config", str(group.config)]
    # Not migrated: the first member says so, and no other is started.
    result = await asyncio.to_thread(
        subprocess.run, serve, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 1
    assert result.stderr.count("is not migrated") == 1
    assert "[1]" not in result.stderr and "Unknown child" not in result.stderr
    # The port taken, even by a socket that would share it: nothing is started.
    await db.migrate_async(db_url)
    with socket.socket() as other:
        other.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        other.bind(("127.0.0.1", group.port))
        other.listen()
        result = await asyncio.to_thread(
            subprocess.run, serve, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 1
    assert result.stderr == (f"ill-node serve: cannot start: 127.0.0.1:{group.port}: "
                             f"Address already in use (config: {group.config})\n")
