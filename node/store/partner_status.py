"""How deliveries to each partner went, from the outbox: the admin's reachability view.

SQL only; takes the caller's connection. Peers are the partners' symbols as queued
(``outbox.peer``); the caller matches them to its configured partners.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from .outbox_repo import peers_cte
from .tables import outbox


async def delivery_status(conn: AsyncConnection) -> dict[str, dict[str, Any]]:
    """peer -> {last_success_at, pending, failed, last_failure_at, last_error, last_http_status}.

    The last failure is the newest attempt that ended in an error on a message not
    delivered (still pending, or given up): a row sent in the end keeps the error of
    an earlier attempt but no longer tells anything about the partner.

    Read peer by peer through the index (peer, state, sent_at), never the whole outbox
    (delivered messages pile up): the peers are found by skipping from one to the next
    in that index (:func:`~node.store.outbox_repo.peers_cte`), then each figure is a
    short range of it.
    """
    o = outbox.c
    peers = peers_cte()

    def of_peer(column, *where):
        """``column`` over the peer's rows matching ``where``: a range of the index."""
        return select(column).where(o.peer == peers.c.peer, *where)

    newest_failure = (
        of_peer(o.id, o.state.in_(("pending", "failed")), o.last_error.is_not(None),
                o.last_attempt_at.is_not(None))
        .order_by(o.last_attempt_at.desc(), o.id.desc()).limit(1))
    per_peer = select(
        peers.c.peer,
        of_peer(func.max(o.sent_at), o.state == "sent").scalar_subquery()
        .label("last_success_at"),
        of_peer(func.count(), o.state == "pending").scalar_subquery().label("pending"),
        of_peer(func.count(), o.state == "failed").scalar_subquery().label("failed"),
        newest_failure.scalar_subquery().label("failure_id"),
    ).where(peers.c.peer.is_not(None)).subquery()
    failure = outbox.alias("failure")
    rows = await conn.execute(
        select(per_peer, failure.c.last_attempt_at, failure.c.last_error,
               failure.c.last_http_status)
        .join_from(per_peer, failure, failure.c.id == per_peer.c.failure_id, isouter=True))
    return {
        r.peer: {"last_success_at": r.last_success_at, "pending": int(r.pending),
                 "failed": int(r.failed), "last_failure_at": r.last_attempt_at,
                 "last_error": r.last_error, "last_http_status": r.last_http_status}
        for r in rows
    }


def last_outcome(status: dict[str, Any]) -> str | None:
    """"ok" if the newest outcome was a delivery, "failing" if an error, None if never tried."""
    success: datetime | None = status["last_success_at"]
    failure: datetime | None = status["last_failure_at"]
    if failure is not None and (success is None or failure > success):
        return "failing"
    return "ok" if success is not None else None
