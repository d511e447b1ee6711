"""Run real nodes on loopback for end-to-end tests.

A :class:`Network` starts several libraries' nodes in this event loop, each
with its own database and TOML configuration, each knowing the others as
partners, all talking real HTTP on 127.0.0.1.  A shared :class:`Clock`
lets tests move time forward (answer timeouts, closures, due dates).
"""

from __future__ import annotations

import asyncio
import textwrap
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from node.config import NodeConfig, load
from node.demo import free_port
from node.http import create_app
from node.limits import guard_server
from node.service import Node
from node.store import db

XML = {"Content-Type": "application/xml; charset=utf-8"}


class Clock:
    """The real time plus an offset that tests move forward.

    Time keeps flowing (outbox back-off needs it to); ``advance`` jumps ahead,
    e.g. past an answer timeout or into a closure window.
    """

    def __init__(self, offset: timedelta = timedelta()):
        self.offset = offset

    def __call__(self) -> datetime:
        return datetime.now(timezone.utc) + self.offset

    def advance(self, **kwargs: float) -> None:
        self.offset += timedelta(**kwargs)


FAST_OUTBOX = """
[outbox]
timeout_seconds = 5
max_attempts = 50
initial_backoff_seconds = 0.05
max_backoff_seconds = 0.5
poll_seconds = 0.05
"""


@dataclass
class Library:
    name: str
    symbol: str
    port: int
    db_url: str
    directory: Path
    sections: str = ""
    rota: list[str] | None = None
    config: NodeConfig | None = None
    node: Node | None = None
    runner: web.AppRunner | None = None
    http: aiohttp.ClientSession | None = field(default=None, repr=False)
    # Security tests (issue 7): extra TOML for this library's [[partners]] entry of
    # another library (key: its name or symbol), https, the API token to send, and
    # the SSL context test clients use to reach this library.
    partner_auth: dict[str, str] = field(default_factory=dict)
    scheme: str = "http"
    token: str | None = field(default=None, repr=False)
    client_ssl: Any = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}"

    @property
    def endpoint(self) -> str:
        return f"{self.url}/iso18626"

    async def api(self, method: str, path: str, json: Any = None,
                  user: str = "alice") -> tuple[int, Any]:
        async with self.http.request(method, self.url + path, json=json,
                                     headers={"X-Staff-User": user, **(
                                         {"Authorization": f"Bearer {self.token}"}
                                         if self.token else {})}) as resp:
            return resp.status, await resp.json()

    async def post_xml(self, body: bytes, headers: dict | None = None) -> tuple[int, bytes]:
        async with self.http.post(self.endpoint, data=body, headers=headers or XML) as resp:
            return resp.status, await resp.read()

    async def request(self, role: str, public_id: str) -> dict[str, Any]:
        status, view = await self.api("GET", f"/api/{role}/requests/{public_id}")
        assert status == 200, view
        return view

    async def act(self, role: str, public_id: str, **action: Any) -> dict[str, Any]:
        status, view = await self.api("POST", f"/api/{role}/requests/{public_id}/actions",
                                      json=action)
        assert status == 200, view
        return view

    async def wait_for(self, role: str, public_id: str, status: str | set[str],
                       timeout: float = 10.0) -> dict[str, Any]:
        """Poll until the request reaches ``status``; fail with its history if it doesn't."""
        wanted = {status} if isinstance(status, str) else status
        deadline = asyncio.get_running_loop().time() + timeout
        view: dict[str, Any] = {}
        while asyncio.get_running_loop().time() < deadline:
            view = await self.request(role, public_id)
            if view["status"] in wanted:
                return view
            await asyncio.sleep(0.05)
        history = "\n".join(f"  {h['event']}: {h.get('summary', '')}" for h in view.get("history", []))
        raise AssertionError(
            f"{self.name} {role} {public_id} is {view.get('status')}, not {wanted}\n{history}")

    async def only_request(self, role: str, timeout: float = 10.0) -> dict[str, Any]:
        """The single request on this side, once it exists."""
        deadline = asyncio.get_running_loop().time() + timeout
        while asyncio.get_running_loop().time() < deadline:
            status, found = await self.api("GET", f"/api/{role}/requests")
            if found["requests"]:
                assert len(found["requests"]) == 1, found
                return found["requests"][0]
            await asyncio.sleep(0.05)
        raise AssertionError(f"{self.name} has no {role} request")


class Network:
    """Libraries on loopback, each the others' partner."""

    def __init__(self, directory: Path, database_urls, clock: Clock | None = None):
        self.directory = directory
        self.database_urls = database_urls  # callable name -> fresh database URL
        self.clock = clock or Clock()
        self.libraries: dict[str, Library] = {}
        self.peers: list[tuple[str, str]] = []  # (symbol, endpoint) of peers we don't run

    def add_peer(self, symbol: str, endpoint: str) -> None:
        """A partner that is not one of our nodes (a test peer, another vendor)."""
        self.peers.append((symbol, endpoint))

    def add(self, name: str, *, symbol: str | None = None, sections: str = "",
            rota: list[str] | None = None) -> Library:
        lib = Library(
            name=name, symbol=symbol or f"ISIL:XX-{name.upper()}", port=free_port(),
            db_url=self.database_urls(name), directory=self.directory / name,
            sections=textwrap.dedent(sections), rota=rota,
        )
        self.libraries[name] = lib
        return lib

    def __getitem__(self, name: str) -> Library:
        return self.libraries[name]

    def config_text(self, lib: Library) -> str:
        others = [o for o in self.libraries.values() if o is not lib]
        partners = "".join(
            f'\n[[partners]]\nsymbol = "{o.symbol}"\nname = "{o.name}"\nurl = "{o.endpoint}"\n'
            f'{lib.partner_auth.get(o.name, lib.partner_auth.get(o.symbol, ""))}\n'
            for o in others
        ) + "".join(
            f'\n[[partners]]\nsymbol = "{symbol}"\nname = "peer"\nurl = "{url}"\n'
            f'{lib.partner_auth.get(symbol, "")}\n'
            for symbol, url in self.peers
        )
        symbols = ([self.libraries[n].symbol if n in self.libraries else n for n in lib.rota]
                   if lib.rota is not None
                   else [o.symbol for o in others] + [symbol for symbol, _ in self.peers])
        rota = (f'[[rotas]]\nname = "default"\npartners = [{", ".join(map(repr, symbols))}]\n'
                .replace("'", '"') if symbols else "")
        sections = lib.sections
        if "[outbox]" not in sections:
            sections += FAST_OUTBOX
        return (
            f'[node]\nsymbol = "{lib.symbol}"\nname = "{lib.name}"\n'
            f'listen = "127.0.0.1:{lib.port}"\npublic_url = "{lib.endpoint}"\n'
            f'database = "{lib.db_url}"\n'
            f"{sections}\n{partners}\n{rota}"
        )

    async def start(self) -> None:
        for lib in self.libraries.values():
            await self.start_library(lib)

    async def start_library(self, lib: Library) -> None:
        lib.directory.mkdir(parents=True, exist_ok=True)
        path = lib.directory / "config.toml"
        path.write_text(self.config_text(lib))
        lib.config = load(path)
        await db.migrate_async(lib.config.node.database_url)
        lib.node = Node(lib.config, clock=self.clock, timer_interval_seconds=0.1)
        app = create_app(lib.config, node=lib.node)
        lib.runner = web.AppRunner(app, access_log=None)
        await lib.runner.setup()
        guard_server(lib.runner.server, lambda: lib.node.config.limits)
        server_tls = lib.node.server_tls
        await web.TCPSite(lib.runner, "127.0.0.1", lib.port,
                          ssl_context=server_tls.context if server_tls else None).start()
        lib.http = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=lib.client_ssl) if lib.client_ssl else None)

    async def stop_library(self, lib: Library) -> None:
        if lib.http is not None:
            await lib.http.close()
            lib.http = None
        if lib.runner is not None:
            await lib.runner.cleanup()
            lib.runner = None

    async def stop(self) -> None:
        for lib in self.libraries.values():
            await self.stop_library(lib)
