"""How deliveries to each partner went, from the outbox: the admin's reachability view.

SQL only; takes the caller's connection. Peers are the partners' symbols as queued
(``outbox.peer``); the caller matches them to its configured partners.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import case, func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from .tables import outbox


async def delivery_status(conn: AsyncConnection) -> dict[str, dict[str, Any]]:
    """peer -> {last_success_at, pending, failed, last_failure_at, last_error, last_http_status}.

    The last failure is the newest attempt that ended in an error on a message not
    delivered (still pending, or given up): a row sent in the end keeps the error of
    an earlier attempt but no longer tells anything about the partner.
    """
    o = outbox.c
    counts = await conn.execute(
        select(
            o.peer,
            func.max(case((o.state == "sent", o.sent_at))).label("last_success_at"),
            func.sum(case((o.state == "pending", 1), else_=0)).label("pending"),
            func.sum(case((o.state == "failed", 1), else_=0)).label("failed"),
        ).group_by(o.peer))
    out = {
        r.peer: {"last_success_at": r.last_success_at, "pending": int(r.pending or 0),
                 "failed": int(r.failed or 0), "last_failure_at": None, "last_error": None,
                 "last_http_status": None}
        for r in counts
    }
    newest = func.row_number().over(partition_by=o.peer,
                                     order_by=(o.last_attempt_at.desc(), o.id.desc()))
    failures = (
        select(o.peer, o.last_attempt_at, o.last_error, o.last_http_status,
               newest.label("n"))
        .where(o.state != "sent", o.last_error.is_not(None), o.last_attempt_at.is_not(None))
        .subquery()
    )
    for r in await conn.execute(select(failures).where(failures.c.n == 1)):
        out[r.peer].update(last_failure_at=r.last_attempt_at, last_error=r.last_error,
                           last_http_status=r.last_http_status)
    return out


def last_outcome(status: dict[str, Any]) -> str | None:
    """"ok" if the newest outcome was a delivery, "failing" if an error, None if never tried."""
    success: datetime | None = status["last_success_at"]
    failure: datetime | None = status["last_failure_at"]
    if failure is not None and (success is None or failure > success):
        return "failing"
    return "ok" if success is not None else None
