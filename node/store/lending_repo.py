"""Lending-only queries for the staff API and CLI: barcodes, overdue, pull list.

SQL only, like :mod:`node.store.repo`; each function takes the caller's
connection.  Barcodes live in the transaction's JSON state (the located item,
``located.barcode``, and the shipped items, ``shipped_barcodes``); the triggers of
migration 0003 copy them to ``request_barcodes``, where a scan is looked up in any
case through the index on ``lower(barcode)`` (migration 0004).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import and_, or_, select
from sqlalchemy.ext.asyncio import AsyncConnection

from ..supplier.machine import LendingState
from . import tables as t
from .search import Identifies, role_clause, same_text

ON_LOAN = (LendingState.SHIPPED.value, LendingState.OVERDUE.value, LendingState.RECALLED.value)
#: Shipped and not yet checked in: what a scanned barcode can be checked in against.
OUT = ON_LOAN + (LendingState.RETURN_SHIPPED.value,)
#: Waiting to be pulled from the shelf (a slip to print).
TO_PULL = (LendingState.WILL_SUPPLY.value,)


def barcode_ids(barcode: str):
    """Ids of the requests naming item ``barcode`` (any case): lending ones, their located
    item or shipped items; borrowing ones, their temporary barcodes."""
    rb = t.request_barcodes
    return select(rb.c.transaction_id).where(same_text(rb.c.barcode, barcode))


def with_barcode_clauses(role: str, barcode: str) -> list[Any]:
    """``role``'s requests naming ``barcode``: looked up by id from the barcode index
    (the role as no index serves, else SQLite may walk the role's whole list)."""
    return [role_clause(role, few=True), t.transactions.c.id.in_(barcode_ids(barcode))]


def overdue_clause(now: datetime):
    """Reported Overdue, or out and past the due date (the timer not run yet)."""
    tx = t.transactions
    return or_(
        tx.c.status == LendingState.OVERDUE.value,
        and_(tx.c.status.in_((LendingState.SHIPPED.value, LendingState.RECALLED.value)),
             tx.c.next_timer_at.is_not(None), tx.c.next_timer_at <= now),
    )


def search_filters(*, barcode: str | None = None, overdue: bool = False,
                   now: datetime | None = None) -> list[Any]:
    """Extra filters for ``repo.search(..., extra=...)`` on the lending side."""
    clauses: list[Any] = []
    if barcode and barcode.strip():
        clauses.append(Identifies(barcode_ids(barcode)))
    if overdue:
        if now is None:
            raise ValueError("overdue needs the time")
        clauses.append(overdue_clause(now))
    return clauses


async def out_by_barcode(conn: AsyncConnection, barcode: str) -> list[Any]:
    """Shipped, not yet checked-in lending requests with ``barcode`` (any case) among
    the items shipped (checked on the loaded state: a located item is not yet out)."""
    tx = t.transactions
    wanted = barcode.strip().casefold()
    rows = await conn.execute(select(tx).where(
        *with_barcode_clauses("lending", barcode), tx.c.status.in_(OUT),
    ).order_by(tx.c.id))
    return [r for r in rows
            if any(str(b).casefold() == wanted for b in r.state.get("shipped_barcodes") or ())]


async def any_by_barcode(conn: AsyncConnection, barcode: str) -> list[Any]:
    """Every lending request that located or shipped ``barcode`` (newest first)."""
    tx = t.transactions
    rows = await conn.execute(select(tx.c.public_id, tx.c.status).where(
        *with_barcode_clauses("lending", barcode),
    ).order_by(tx.c.updated_at.desc(), tx.c.id.desc()))
    return list(rows)


async def to_pull(conn: AsyncConnection, limit: int = 500) -> list[Any]:
    """Requests waiting to be pulled from the shelf, oldest first."""
    tx = t.transactions
    rows = await conn.execute(select(tx).where(
        tx.c.role == "lending", tx.c.status.in_(TO_PULL),
    ).order_by(tx.c.created_at, tx.c.id).limit(limit))
    return list(rows)


async def row_by_public_id(conn: AsyncConnection, public_id: str):
    tx = t.transactions
    return (await conn.execute(select(tx).where(
        tx.c.role == "lending", tx.c.public_id == public_id))).first()


async def item(conn: AsyncConnection, barcode: str):
    """The holdings item with ``barcode`` (its record's title and author too)."""
    items, records = t.holdings_items, t.holdings_records
    return (await conn.execute(
        select(items, records.c.title, records.c.author)
        .join(records, records.c.record_id == items.c.record_id, isouter=True)
        .where(same_text(items.c.barcode, barcode))
    )).first()
