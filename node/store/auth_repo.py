"""Look-ups the peer checks need (issue 7)."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from node.store import tables as t


async def attempt_partner(conn: AsyncConnection, requesting_request_id: str) -> str | None:
    """The partner a borrowing attempt (by its RARI) was sent to, or None."""
    return (await conn.execute(
        select(t.attempts.c.partner).where(
            t.attempts.c.requesting_request_id == requesting_request_id)
    )).scalar_one_or_none()
