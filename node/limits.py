"""Limits against hostile or broken clients (``[limits]``).

- ``max_body_bytes`` / ``max_xml_depth``: enforced in ``http.py`` and the reader.
- ``partner_requests_per_minute``: :class:`RateLimiter`, one sliding window per
  partner symbol, checked after authentication (a forger cannot use up a
  partner's allowance); over it, HTTP 429 with Retry-After.
- ``max_connections``: :func:`guard_server` closes connections over the limit.
- ``header_timeout_seconds``: a connection that has not sent one complete
  request head in that time is closed (slowloris); ``request_timeout_seconds``
  bounds reading a body (``http.py``); idle keep-alive connections close after
  ``keepalive_timeout_seconds``.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import math
import signal
import time
import weakref
from collections.abc import Callable

from aiohttp import web

from .config import Limits

log = logging.getLogger("node.limits")

# At a stop, between closing the listener and closing the connections with no request
# in progress: a request's bytes follow its connection by well under a millisecond on
# a network, so this covers a slow one many times over.
STOP_GRACE_SECONDS = 0.3


class RateLimited(Exception):
    """Too many messages from one partner: HTTP 429."""

    def __init__(self, who: str, retry_after: int):
        super().__init__(f"{who}: more than the allowed messages per minute")
        self.retry_after = retry_after


class RateLimiter:
    """At most ``per_minute`` events per key in any 60-second window."""

    WINDOW = 60.0

    def __init__(self, clock: Callable[[], float] = time.monotonic):
        self.clock = clock
        self._seen: dict[str, collections.deque[float]] = {}

    def hit(self, key: str, per_minute: int) -> None:
        """Count one event, or raise :class:`RateLimited` (not counted)."""
        now = self.clock()
        seen = self._seen.setdefault(key.casefold(), collections.deque())
        while seen and seen[0] <= now - self.WINDOW:
            seen.popleft()
        if len(seen) >= per_minute:
            raise RateLimited(key, max(1, math.ceil(seen[0] + self.WINDOW - now)))
        seen.append(now)


_limiters: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def rate_limiter_for(owner) -> RateLimiter:
    """One limiter per node (kept beside it, not in it)."""
    limiter = _limiters.get(owner)
    if limiter is None:
        limiter = _limiters[owner] = RateLimiter()
    return limiter


def guard_server(server: web.Server, limits: Callable[[], Limits] | Limits) -> None:
    """Enforce max_connections and header_timeout_seconds on an aiohttp server
    (``AppRunner.server``, after ``setup()``). ``limits`` may be a callable so
    a reloaded configuration applies to new connections."""
    get = limits if callable(limits) else (lambda: limits)
    original = server.connection_made
    loop = asyncio.get_event_loop()

    def connection_made(handler, transport) -> None:
        original(handler, transport)
        current = get()
        if len(server.connections) > current.max_connections:
            log.warning("connection refused: more than %d open", current.max_connections)
            transport.close()
            return
        loop.call_later(current.header_timeout_seconds, _deadline, handler, transport)

    def _deadline(handler, transport) -> None:
        # No complete request head yet: a slow (or idle, silent) client.
        if getattr(handler, "_request_count", 1) == 0 and not transport.is_closing():
            transport.close()

    server.connection_made = connection_made  # type: ignore[method-assign]


def run(app: web.Application, *, host: str, port: int, limits: Callable[[], Limits],
        ssl_context=None, print: Callable[[str], None] = print, reuse_port: bool = False,
        started: Callable[[asyncio.Event], None] | None = None) -> None:
    """Like ``web.run_app``, with :func:`guard_server` on the server. ``reuse_port``:
    one of several processes on the port (node/processes.py); ``started(stop)`` is
    called once serving, with the event that stops the node."""

    async def main() -> None:
        current = limits()
        runner = web.AppRunner(app, access_log=None, handle_signals=False,
                               keepalive_timeout=current.keepalive_timeout_seconds,
                               shutdown_timeout=10)
        await runner.setup()
        guard_server(runner.server, limits)
        site = web.TCPSite(runner, host, port, ssl_context=ssl_context,
                           reuse_port=reuse_port or None)
        await site.start()
        scheme = "https" if ssl_context is not None else "http"
        print(f"======== Running on {scheme}://{host}:{port} ========")
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        if started is not None:
            started(stop)
        try:
            await stop.wait()
        finally:
            # Stop listening first (of several processes on the port, the others take
            # new connections), and give the connections accepted just before a moment
            # to send their request: the cleanup closes every one with none in progress.
            await site.stop()
            await asyncio.sleep(STOP_GRACE_SECONDS)
            await runner.cleanup()

    asyncio.run(main())
