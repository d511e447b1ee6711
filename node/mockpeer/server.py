"""The mock peer's HTTP edge: aiohttp routes around :class:`~node.mockpeer.core.MockPeer`.

Routes (as illmock's): ``POST /iso18626``; ``/iso18626/error400`` and
``/iso18626/error500`` (always that HTTP error); ``GET /healthz``;
``GET /api/flows?id=&role=&requester=&supplier=`` (XML) and
``GET /api/flows.json`` (the same as JSON).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Self

import aiohttp
from aiohttp import web

from node.protocol.codes import Version

from .core import MockPeer, Send
from .flows import FlowLog

log = logging.getLogger("node.mockpeer")

MOCK = web.AppKey("mockpeer", object)


def utcnow() -> datetime:
    return datetime.now(UTC)


class MockServer:
    """Owns the core, the outgoing HTTP session and the background send tasks."""

    def __init__(self, core: MockPeer, *, delay: float = 0.1,
                 clock: Callable[[], datetime] = utcnow, send_timeout: float = 30.0):
        self.core = core
        self.delay = delay
        self.clock = clock
        self.send_timeout = send_timeout
        self.session: aiohttp.ClientSession | None = None
        self.tasks: set[asyncio.Task] = set()

    # -- routes -----------------------------------------------------------------------

    async def iso18626(self, request: web.Request) -> web.Response:
        body = await request.read()
        reply = self.core.receive(body, self.clock(), request.content_type)
        for send in reply.sends:
            self._spawn(send)
        return web.Response(status=reply.status, body=reply.body, headers=reply.headers,
                            content_type=reply.content_type,
                            charset="utf-8" if reply.content_type.endswith("xml") else None)

    async def error400(self, request: web.Request) -> web.Response:
        return web.Response(status=400, text="MOCK HTTP-ERROR-400")

    async def error500(self, request: web.Request) -> web.Response:
        return web.Response(status=500, text="MOCK HTTP-ERROR-500")

    async def healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok", "pending_sends": len(self.tasks)})

    def _flows(self, request: web.Request):
        q = request.query
        return self.core.flows.find(id=q.get("id"), role=q.get("role"),
                                    requester=q.get("requester"), supplier=q.get("supplier"))

    async def flows_xml(self, request: web.Request) -> web.Response:
        return web.Response(body=FlowLog.to_xml(self._flows(request)),
                            content_type="application/xml", charset="utf-8")

    async def flows_json(self, request: web.Request) -> web.Response:
        return web.json_response({"flows": FlowLog.to_json(self._flows(request))})

    # -- sending ----------------------------------------------------------------------

    def _spawn(self, send: Send) -> None:
        task = asyncio.get_running_loop().create_task(self._send(send))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _send(self, send: Send) -> None:
        await asyncio.sleep(self.delay * send.factor)
        built = self.core.build(send, self.clock())
        if built is None:
            return
        url, body = built
        status, content_type, answer = None, "", b""
        try:
            async with self.session.post(
                url, data=body, headers={"Content-Type": "application/xml; charset=utf-8"},
                timeout=aiohttp.ClientTimeout(total=self.send_timeout),
            ) as resp:
                status, content_type, answer = resp.status, resp.content_type, await resp.read()
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            log.warning("sending %s to %s failed: %s", send.kind, url, exc)
            answer = f"{type(exc).__name__}: {exc}".encode()
        for follow in self.core.answered(send, body, status, content_type, answer, self.clock()):
            self._spawn(follow)

    async def idle(self, timeout: float = 10.0) -> None:
        """Wait until no send is pending (tests)."""
        deadline = asyncio.get_running_loop().time() + timeout
        while self.tasks and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.02)

    # -- app ----------------------------------------------------------------------------

    def app(self) -> web.Application:
        app = web.Application(client_max_size=2 * 1024 * 1024)
        app[MOCK] = self
        app.router.add_post("/iso18626", self.iso18626)
        app.router.add_route("*", "/iso18626/error400", self.error400)
        app.router.add_route("*", "/iso18626/error500", self.error500)
        app.router.add_get("/healthz", self.healthz)
        app.router.add_get("/api/flows", self.flows_xml)
        app.router.add_get("/api/flows.json", self.flows_json)
        app.cleanup_ctx.append(self._lifecycle)
        return app

    async def _lifecycle(self, app: web.Application):
        self.session = aiohttp.ClientSession()
        try:
            yield
        finally:
            for task in list(self.tasks):
                task.cancel()
            await asyncio.gather(*self.tasks, return_exceptions=True)
            await self.session.close()


class RunningMock:
    """A mock peer listening on loopback in this event loop (tests, conformance)."""

    def __init__(self, *, host: str = "127.0.0.1", port: int = 0, peer_url: str | None = None,
                 delay: float = 0.05, quirks=frozenset(), breaks=frozenset(),
                 version: Version | None = None):
        self.host, self.port = host, port
        self.version = version
        self._peer_url = peer_url
        self.delay = delay
        self.quirks, self.breaks = quirks, breaks
        self.server: MockServer | None = None
        self.runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def endpoint(self) -> str:
        return f"{self.url}/iso18626"

    async def start(self) -> RunningMock:
        if not self.port:
            import socket

            with socket.socket() as s:
                s.bind((self.host, 0))
                self.port = s.getsockname()[1]
        core = MockPeer(peer_url=self._peer_url or self.endpoint, quirks=self.quirks,
                        breaks=self.breaks, version=self.version)
        self.server = MockServer(core, delay=self.delay)
        self.runner = web.AppRunner(self.server.app(), access_log=None)
        await self.runner.setup()
        await web.TCPSite(self.runner, self.host, self.port).start()
        return self

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(self, *exc) -> None:
        await self.stop()
