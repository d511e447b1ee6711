"""Nodes as real OS processes: two processes on one database (SIGKILL: test_group_commit)."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import aiohttp
import pytest

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
    finally:
        for node in nodes:
            node.stop()
        await peer.stop()
