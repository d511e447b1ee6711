"""A stand-in for another vendor's ISO 18626 peer, for end-to-end tests.

It listens on loopback, records every message it receives, and answers each
with an OK confirmation (or what a test scripts: an ERROR, an HTTP error).
It can be started late, on a port chosen in advance, to play a peer that
was down.  Tests use it to send messages to our node as that peer would.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime, timezone

import aiohttp
from aiohttp import web

from node.protocol import confirm, reader, writer
from node.protocol.codes import ErrorType
from node.protocol.errors import ProtocolError
from node.protocol.messages import Envelope
from tests.harness import XML, free_port


class LoopbackPeer:
    """A partner answering ``POST /iso18626`` on 127.0.0.1:``port`` with :meth:`handle`;
    ``async with`` (or start/stop) runs it."""

    def __init__(self, port: int):
        self.port = port
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/iso18626"

    async def handle(self, request: web.Request) -> web.Response:
        raise NotImplementedError

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/iso18626", self.handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self):
        await self.start()
        return self

    async def __aexit__(self, *exc) -> None:
        await self.stop()


class Peer(LoopbackPeer):
    def __init__(self, symbol: str, port: int | None = None):
        super().__init__(port or free_port())
        self.symbol = symbol
        self.received: list[Envelope] = []
        self.raw: list[bytes] = []
        # Scripted answer: None -> OK; "error" -> ERROR confirmation; "error400" -> the
        # same with HTTP 400 (as Koha answers); an int -> that HTTP status.
        self.answer: Callable[[Envelope], object] = lambda env: None
        self._arrived = asyncio.Event()

    @property
    def endpoint(self) -> str:
        return self.url

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        envelope = reader.parse(body)
        scripted = self.answer(envelope)
        if isinstance(scripted, int):
            return web.Response(status=scripted, text="scripted failure")
        self.raw.append(body)
        self.received.append(envelope)
        self._arrived.set()
        now = datetime.now(timezone.utc)
        error = ProtocolError(ErrorType.UNRECOGNISED_DATA_VALUE, "scripted ERROR") if (
            scripted in ("error", "error400")) else None
        conf = confirm.confirmation_for(envelope.message, now=now, error=error)
        return web.Response(body=writer.serialise(Envelope(version=envelope.version, message=conf)),
                            content_type="application/xml",
                            status=400 if scripted == "error400" else 200)

    async def wait_for(self, count: int, timeout: float = 10.0) -> list[Envelope]:
        """Wait until ``count`` messages have arrived; return them all."""
        deadline = asyncio.get_running_loop().time() + timeout
        while len(self.received) < count:
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                raise AssertionError(f"{self.symbol} got {len(self.received)} messages, "
                                     f"expected {count}")
            self._arrived.clear()
            try:
                await asyncio.wait_for(self._arrived.wait(), remaining)
            except asyncio.TimeoutError:
                pass
        return self.received

    async def send(self, url: str, envelope: Envelope) -> tuple[int, bytes]:
        async with aiohttp.ClientSession() as http:
            async with http.post(url, data=writer.serialise(envelope), headers=XML) as resp:
                return resp.status, await resp.read()
