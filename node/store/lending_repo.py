"""Lending-only queries for the staff API and CLI: barcodes, overdue, pull list.

SQL only, like :mod:`node.store.repo`; each function takes the caller's
connection.  Barcodes live in the transaction's JSON state (the located item,
``located.barcode``, and the shipped items, ``shipped_barcodes``); both
databases can extract those paths, so the filters stay in SQL.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import String, and_, cast, func, or_, select
from sqlalchemy.ext.asyncio import AsyncConnection

from ..supplier.machine import LendingState
from . import tables as t

ON_LOAN = (LendingState.SHIPPED.value, LendingState.OVERDUE.value, LendingState.RECALLED.value)
#: Shipped and not yet checked in: what a scanned barcode can be checked in against.
OUT = ON_LOAN + (LendingState.RETURN_SHIPPED.value,)
#: Waiting to be pulled from the shelf (a slip to print).
TO_PULL = (LendingState.WILL_SUPPLY.value,)


def _like_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def barcode_clause(barcode: str):
    """Lending requests whose located item or shipped items include ``barcode``."""
    tx = t.transactions
    barcode = barcode.strip()
    located = tx.c.state["located"]["barcode"].as_string()
    # The shipped barcodes are a JSON list; its text holds each one quoted.
    shipped = cast(tx.c.state["shipped_barcodes"], String)
    return or_(located == barcode,
               shipped.like(f'%"{_like_escape(barcode)}"%', escape="\\"))


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
    """Extra WHERE clauses for ``repo.search(..., extra=...)`` on the lending side."""
    clauses: list[Any] = []
    if barcode and barcode.strip():
        clauses.append(barcode_clause(barcode))
    if overdue:
        if now is None:
            raise ValueError("overdue needs the time")
        clauses.append(overdue_clause(now))
    return clauses


async def out_by_barcode(conn: AsyncConnection, barcode: str) -> list[Any]:
    """Shipped, not yet checked-in lending requests with ``barcode`` among the
    items shipped (exact match, checked on the loaded state)."""
    tx = t.transactions
    barcode = barcode.strip()
    rows = await conn.execute(select(tx).where(
        tx.c.role == "lending", tx.c.status.in_(OUT), barcode_clause(barcode),
    ).order_by(tx.c.id))
    return [r for r in rows if barcode in (r.state.get("shipped_barcodes") or ())]


async def any_by_barcode(conn: AsyncConnection, barcode: str) -> list[Any]:
    """Every lending request that located or shipped ``barcode`` (newest first)."""
    tx = t.transactions
    rows = await conn.execute(select(tx.c.public_id, tx.c.status).where(
        tx.c.role == "lending", barcode_clause(barcode),
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
        .where(func.lower(items.c.barcode) == barcode.strip().lower())
    )).first()
