"""Limits on hostile clients (issue 7): requests per partner per minute (429 +
Retry-After), connections, slow request heads and slow bodies."""

from __future__ import annotations

import asyncio

from node.limits import RateLimited, RateLimiter
from tests import builders
from tests.security.support import counts, post, serialise

PEER = "ISIL:XX-PEER"


def test_rate_limiter_window():
    now = [0.0]
    limiter = RateLimiter(clock=lambda: now[0])
    for _ in range(3):
        limiter.hit("ISIL:A", 3)
    try:
        limiter.hit("isil:a", 3)
        raise AssertionError("not limited")
    except RateLimited as exc:
        assert exc.retry_after == 60
    limiter.hit("ISIL:B", 3)  # per partner
    now[0] = 60.5
    limiter.hit("ISIL:A", 3)


async def test_partner_rate_limit_gives_429_and_changes_nothing(net):
    lib = net.add("alpha", sections="[limits]\npartner_requests_per_minute = 2\n")
    net.add_peer(PEER, "http://127.0.0.1:9/iso18626")
    await net.start()
    for i in range(2):
        status, _ = await post(lib.endpoint, serialise(builders.request(PEER, lib.symbol, f"R-{i}")))
        assert status == 200
    before = await counts(lib)
    import aiohttp

    async with aiohttp.ClientSession() as http:
        async with http.post(lib.endpoint, data=serialise(builders.request(PEER, lib.symbol, "R-9")),
                             headers={"Content-Type": "application/xml"}) as resp:
            assert resp.status == 429
            assert 1 <= int(resp.headers["Retry-After"]) <= 60
    assert await counts(lib) == before


async def _open(lib):
    return await asyncio.open_connection("127.0.0.1", lib.port)


async def test_connections_and_slow_clients(net):
    lib = net.add("alpha", sections=(
        "[limits]\nmax_connections = 3\nheader_timeout_seconds = 0.5\n"
        "request_timeout_seconds = 0.5\n"))
    await net.start()
    # A silent client is dropped after header_timeout_seconds.
    reader, writer = await _open(lib)
    writer.write(b"POST /iso18626 HTTP/1.1\r\nHost: x\r\n")  # never finishes its head
    await writer.drain()
    assert await asyncio.wait_for(reader.read(), 5) == b""  # closed by the node
    writer.close()

    # A slow body: 408 after request_timeout_seconds.
    reader, writer = await _open(lib)
    writer.write(b"POST /iso18626 HTTP/1.1\r\nHost: x\r\nContent-Type: application/xml\r\n"
                 b"Content-Length: 100\r\n\r\n<ISO")
    await writer.drain()
    answer = await asyncio.wait_for(reader.readline(), 5)
    assert answer.startswith(b"HTTP/1.1 408"), answer[:80]
    writer.close()

    # Over max_connections: the extra connection is closed at once.
    held = [await _open(lib) for _ in range(3)]
    reader, writer = await _open(lib)
    assert await asyncio.wait_for(reader.read(), 5) == b""
    writer.close()
    for _, w in held:
        w.close()
    await asyncio.sleep(0.2)
    status, _ = await lib.api("GET", "/healthz")  # and the node still serves
    assert status == 200
