"""Partners and their reachability, for the administration screen.

- :func:`partners`: each configured partner (``borrowing_ops.partners``) with how
  deliveries to it went lately, from the outbox (``store/partner_status.py``).
- :func:`check`: "check now": one HEAD request to the partner's ISO 18626 URL with
  a short timeout. HEAD carries no message, so the partner sees nothing happen;
  any HTTP answer below 500 (an endpoint that wants POST answers 405) means it is up.
"""

from __future__ import annotations

import asyncio
import time
from datetime import datetime
from typing import Any

import aiohttp

from . import borrowing_ops
from .service import NotFound
from .store import partner_status

CHECK_TIMEOUT_SECONDS = 5.0


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


async def partners(node) -> list[dict[str, Any]]:
    async with node.read_engine.connect() as conn:
        status = await partner_status.delivery_status(conn)
    by_symbol = {peer.casefold(): s for peer, s in status.items()}
    out = []
    for p in await borrowing_ops.partners(node):
        s = by_symbol.get(p["symbol"].casefold())
        p["delivery"] = None if s is None else {
            "outcome": partner_status.last_outcome(s),
            "last_success_at": _iso(s["last_success_at"]), "pending": s["pending"],
            "failed": s["failed"], "last_failure_at": _iso(s["last_failure_at"]),
            "last_error": s["last_error"], "last_http_status": s["last_http_status"],
        }
        out.append(p)
    return out


async def check(node, symbol: str) -> dict[str, Any]:
    partner = node.config.partner(symbol)
    if partner is None:
        raise NotFound(f"no partner {symbol} in the configuration")
    extra: dict[str, Any] = {}
    if partner.url.lower().startswith("https:") and node.client_tls is not None:
        extra["ssl"] = node.client_tls
    started = time.monotonic()
    http_status, error = None, None
    try:
        async with node.session.head(
                partner.url, allow_redirects=False,
                timeout=aiohttp.ClientTimeout(total=CHECK_TIMEOUT_SECONDS), **extra) as resp:
            http_status = resp.status
    except asyncio.TimeoutError:
        error = f"no answer within {CHECK_TIMEOUT_SECONDS:g} seconds"
    except aiohttp.ClientError as exc:
        error = str(exc) or type(exc).__name__
    return {
        "symbol": str(partner.symbol), "url": partner.url,
        "reachable": http_status is not None and http_status < 500,
        "http_status": http_status, "error": error,
        "elapsed_ms": round((time.monotonic() - started) * 1000, 1),
        "checked_at": node.clock().isoformat(),
    }
