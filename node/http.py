"""The HTTP edge: aiohttp app factory, the ISO 18626 endpoint and health.

Thin on purpose (crosslink's front door, not its 1,000-line handler): check
method, content type and size, read the body, hand it to the service, send
back what it answers.  Staff and patron APIs live in ``node/api.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web
from sqlalchemy.exc import SQLAlchemyError

from . import auth as peer_auth
from . import limits as node_limits
from .config import NodeConfig
from .service import Node

NODE = web.AppKey("node", Node)
# This process's place among [node] processes (node/processes.py), None when alone.
MEMBER = web.AppKey("member", object)
log = logging.getLogger("node.http")

XML_TYPES = frozenset({"application/xml", "text/xml"})


def looks_like_xml(body: bytes) -> bool:
    """True when the body could be XML at all (after a BOM and white space)."""
    head = body[:64].lstrip(b"\xef\xbb\xbf").lstrip()
    if head[:2] in (b"\xff\xfe", b"\xfe\xff"):  # UTF-16 BOMs
        return True
    return head.startswith(b"<")


async def iso18626(request: web.Request) -> web.Response:
    node = request.app[NODE]
    if request.content_type not in XML_TYPES:
        raise web.HTTPUnsupportedMediaType(
            text=f"Content-Type must be application/xml or text/xml, not {request.content_type!r}"
        )
    limit = node.config.limits.max_body_bytes
    if request.content_length is not None and request.content_length > limit:
        raise web.HTTPRequestEntityTooLarge(max_size=limit, actual_size=request.content_length)
    try:
        # A slow client gets request_timeout_seconds to send its body, no more.
        async with asyncio.timeout(node.config.limits.request_timeout_seconds):
            body = await request.content.readexactly(request.content_length) if (
                request.content_length is not None
            ) else await _read_limited(request, limit)
    except _TooLarge:
        raise web.HTTPRequestEntityTooLarge(max_size=limit, actual_size=limit + 1) from None
    except TimeoutError:
        raise web.HTTPRequestTimeout(text="the body took too long to arrive") from None
    except asyncio.IncompleteReadError:
        raise web.HTTPBadRequest(text="the body is shorter than its Content-Length") from None
    if not looks_like_xml(body):
        raise web.HTTPBadRequest(text="the body is not XML: ISO 18626 messages are XML documents")
    try:
        answer = await node.receive(
            body, peer_address=request.remote, headers=request.headers,
            peer_cert=peer_auth.peer_certificate(request.transport),
        )
    except peer_auth.AuthenticationFailed as exc:
        log.warning("refused a message from %s: %s", request.remote, exc)  # no secrets in exc
        raise web.HTTPUnauthorized(text="authentication failed") from None
    except node_limits.RateLimited as exc:
        log.warning("rate limited: %s", exc)
        raise web.HTTPTooManyRequests(
            text="too many messages; try again later",
            headers={"Retry-After": str(exc.retry_after)},
        ) from None
    except SQLAlchemyError as exc:
        # Not stored, so not confirmed: the peer must send it again later.
        log.error("cannot store an incoming message: %s", exc)
        raise web.HTTPServiceUnavailable(
            text="the message could not be stored; send it again later",
            headers={"Retry-After": "30"},
        ) from None
    return web.Response(body=answer, content_type="application/xml", charset="utf-8")


class _TooLarge(Exception):
    pass


async def _read_limited(request: web.Request, limit: int) -> bytes:
    """Read a chunked body, refusing it as soon as it passes the limit."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.content.iter_chunked(65536):
        size += len(chunk)
        if size > limit:
            raise _TooLarge()
        chunks.append(chunk)
    return b"".join(chunks)


async def healthz(request: web.Request) -> web.Response:
    node = request.app[NODE]
    health = await node.health()
    return web.json_response(health, status=200 if health["status"] == "ok" else 503)


def json_error(status: int, message: str, **extra: Any) -> web.Response:
    return web.json_response({"error": message, **extra}, status=status, dumps=_dumps)


def _dumps(obj: Any) -> str:
    return json.dumps(obj, default=str)


def create_app(config: NodeConfig, *, node: Node | None = None) -> web.Application:
    """The node's aiohttp application.

    The database engine, the outbox worker and the scheduler start and stop
    with the app (``cleanup_ctx``).  Tests pass a ready ``node``.
    """
    # The body limit is enforced in the handler (to answer 413 cleanly); the
    # aiohttp limit is a backstop a little above it.
    app = web.Application(client_max_size=config.limits.max_body_bytes + 65536)
    app[NODE] = node or Node(config)
    app.router.add_post("/iso18626", iso18626)
    app.router.add_get("/healthz", healthz)
    from . import staff_auth
    from .api import setup_api

    app.middlewares.append(staff_auth.middleware)  # before the API's own: 401/403 first
    staff_auth.open_mode_warning(config)
    setup_api(app)
    from . import console_routes

    console_routes.setup(app)
    app.cleanup_ctx.append(_node_lifecycle)
    return app


async def _node_lifecycle(app: web.Application) -> AsyncIterator[None]:
    node = app[NODE]
    await node.start()
    try:
        yield
    finally:
        with contextlib.suppress(Exception):
            await node.stop()
