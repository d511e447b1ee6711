"""Lookups for the borrowing desk: by the lender's id, by a temporary barcode,
the partners' known closures, the patron notices of a request.

SQL only, like :mod:`node.store.repo`; every function takes the caller's connection.
"""

from __future__ import annotations

from datetime import date
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from . import tables as t
from .lending_repo import with_barcode_clauses
from .search import Identifies, same_text


def patron_filter(patron_id: str) -> Identifies:
    """``search(..., extra=[...])``'s filter for one patron's requests: the id exactly as
    given (another patron's may differ only in case), looked up in its lower() index."""
    tx = t.transactions
    return Identifies(select(tx.c.id).where(same_text(tx.c.patron_id, patron_id),
                                            tx.c.patron_id == patron_id))


async def due_dates(conn: AsyncConnection, public_ids: list[str]) -> dict[str, str | None]:
    """The lender's due date (ISO 8601, as stored) of each of these borrowing requests."""
    tx = t.transactions
    rows = await conn.execute(select(tx.c.public_id, tx.c.state).where(
        tx.c.role == "borrowing", tx.c.public_id.in_(public_ids)))
    return {r.public_id: r.state.get("due_date") for r in rows}


async def by_lender_request_id(conn: AsyncConnection, lender_request_id: str
                               ) -> list[tuple[str, str]]:
    """(public_id, status) of borrowing requests the lender knows by that id, newest first."""
    tx = t.transactions
    rows = await conn.execute(
        select(tx.c.public_id, tx.c.status, tx.c.updated_at, tx.c.id).where(
            tx.c.role == "borrowing",
            same_text(tx.c.supplying_request_id, lender_request_id),
        ))
    # Sorted here: they are few, and an ORDER BY tempts the planners into walking the
    # role's whole list newest first instead of looking the id up in its index.
    newest_first = sorted(rows, key=lambda r: (r.updated_at, r.id), reverse=True)
    return [(r.public_id, r.status) for r in newest_first]


async def with_barcode(conn: AsyncConnection, barcode: str, *, statuses: tuple[str, ...]
                       ) -> list[tuple[str, str]]:
    """(public_id, status) of borrowing requests in ``statuses`` whose temporary
    barcodes include ``barcode`` (case-insensitive), newest first.

    Found through ``request_barcodes`` (kept from the requests' JSON state by triggers).
    """
    tx = t.transactions
    rows = await conn.execute(
        select(tx.c.public_id, tx.c.status).where(
            *with_barcode_clauses("borrowing", barcode), tx.c.status.in_(statuses),
        ).order_by(tx.c.updated_at.desc(), tx.c.id.desc()))
    return [(r.public_id, r.status) for r in rows]


async def known_partner_closures(conn: AsyncConnection) -> dict[str, dict[str, Any]]:
    """Every closure learned from a partner (current, future or past): symbol -> row."""
    pc = t.partner_closures
    rows = await conn.execute(select(pc))
    return {r.symbol: {"start": r.start, "end": r.end, "note": r.note,
                       "learned_at": r.learned_at} for r in rows}


def closure_in_effect(closure: dict[str, Any], today: date) -> bool:
    start, end = closure.get("start"), closure.get("end")
    return (start is None or start <= today) and (end is None or end >= today)


async def patron_notices(conn: AsyncConnection, public_id: str) -> list[dict[str, Any]] | None:
    """The notices sent to the patron of a borrowing request (None: no such request)."""
    tx, h = t.transactions, t.history
    row = (await conn.execute(select(tx.c.id, tx.c.patron_id).where(
        tx.c.role == "borrowing", tx.c.public_id == public_id))).first()
    if row is None:
        return None
    rows = await conn.execute(select(h).where(
        h.c.transaction_id == row.id, h.c.event == "patron_notice").order_by(h.c.id))
    out = []
    for r in rows:
        detail = r.detail or {}
        out.append({"at": r.at.isoformat(), "patron_id": detail.get("patron_id") or row.patron_id,
                    "notice": detail.get("notice"), "text": detail.get("text")
                    or detail.get("summary")})
    return out
