"""Queries the service runs inside its transactions.

SQL only: no decisions are taken here (those are the machines'), and every
function takes the caller's connection so that one input is one transaction.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import date, datetime
from typing import Any

from sqlalchemy import and_, func, insert, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from ..machine import Effect, HistoryEntry
from ..protocol.messages import (
    BusinessMessage,
    Request,
    RequestingAgencyMessage,
    SupplyingAgencyMessage,
)
from ..supplier.locate import identifiers_of, locate as match_holdings
from . import holdings_repo, outbox_repo
from . import tables as t

enqueue = outbox_repo.enqueue
outbox_pending = outbox_repo.pending_count

# -- closures ---------------------------------------------------------------------


async def seed_closures(conn: AsyncConnection, config, *, now: datetime, previous=None) -> None:
    """Write the config's closures to the database.

    At start a closure the staff set through the API is kept; a closure that
    changed in the config file (reload) replaces whatever is there.
    """
    for kind in t.CLOSURE_KINDS:
        closure = getattr(config, kind).closure
        row = (await conn.execute(select(t.closures).where(t.closures.c.kind == kind))).first()
        changed = previous is not None and getattr(previous, kind).closure != closure
        if row is not None and not changed and (previous is not None or row.set_by != "config"):
            continue
        values = dict(active=closure.active, start=closure.start, end=closure.end,
                      note=closure.note, set_by="config", set_at=now)
        if row is None:
            await conn.execute(insert(t.closures).values(kind=kind, **values))
        else:
            await conn.execute(update(t.closures).where(t.closures.c.kind == kind).values(**values))


async def closure(conn: AsyncConnection, kind: str, config):
    """The closure in force for ``kind``: the database's, else the config's."""
    row = (await conn.execute(select(t.closures).where(t.closures.c.kind == kind))).first()
    configured = getattr(config, kind).closure
    if row is None:
        return configured
    return replace(configured, active=row.active, start=row.start, end=row.end,
                   note=row.note or "")


async def set_closure(conn: AsyncConnection, kind: str, *, active: bool, start: date | None,
                      end: date | None, note: str, actor: str, now: datetime) -> None:
    values = dict(active=active, start=start, end=end, note=note, set_by=actor, set_at=now)
    updated = await conn.execute(
        update(t.closures).where(t.closures.c.kind == kind).values(**values))
    if updated.rowcount == 0:
        await conn.execute(insert(t.closures).values(kind=kind, **values))


async def partner_closures(conn: AsyncConnection, *, today: date) -> dict[str, tuple]:
    """Partners known closed for lending today: symbol -> (start, end, note)."""
    pc = t.partner_closures
    rows = await conn.execute(
        select(pc).where(or_(pc.c.end.is_(None), pc.c.end >= today))
        .where(or_(pc.c.start.is_(None), pc.c.start <= today))
    )
    return {r.symbol: (r.start, r.end, r.note or "") for r in rows}


# -- holdings ---------------------------------------------------------------------------


async def locate(conn: AsyncConnection, request: Request, policy, our_symbol):
    """Auto-locate: fetch the candidate records, let the pure matcher decide."""
    keys = identifiers_of(request, our_symbol)
    found = await holdings_repo.candidates(conn, keys)
    return match_holdings(request, found, policy, our_symbol=our_symbol)


# -- messages -------------------------------------------------------------------------


async def confirmation_for_digest(conn: AsyncConnection, digest: str) -> bytes | None:
    row = (await conn.execute(
        select(t.messages.c.confirmation).where(t.messages.c.digest == digest))).first()
    if row is None:
        return None
    return row.confirmation.encode("utf-8")


def _summary_fields(message: BusinessMessage) -> dict[str, Any]:
    if isinstance(message, SupplyingAgencyMessage):
        status = message.status_info.status
        return {"status": status.value if status else None,
                "reason": message.message_info.reason_for_message.value}
    if isinstance(message, RequestingAgencyMessage):
        return {"action": message.action.value}
    if isinstance(message, Request):
        return {"reason": message.service_info.service_type.value if message.service_info
                else None}
    return {}


async def log_message(conn: AsyncConnection, *, direction: str, message: BusinessMessage,
                      raw: bytes, peer: str | None, transaction_id: int | None, now: datetime,
                      digest: str | None = None, confirmation: bytes | None = None) -> None:
    await conn.execute(insert(t.messages).values(
        transaction_id=transaction_id, direction=direction, kind=message.KIND, peer=peer,
        requesting_request_id=message.header.requesting_agency_request_id,
        raw=raw.decode("utf-8", errors="replace"), digest=digest,
        confirmation=confirmation.decode("utf-8") if confirmation is not None else None,
        message_status="OK" if confirmation is not None else None, created_at=now,
        **_summary_fields(message),
    ))


# -- transactions -------------------------------------------------------------------


def _locked(stmt):
    return stmt.with_for_update()  # a no-op on SQLite, whose single writer serialises


async def lock_transaction(conn: AsyncConnection, *, role: str, requesting_agency_id: str,
                           requesting_request_id: str):
    tx = t.transactions
    return (await conn.execute(_locked(select(tx).where(
        tx.c.role == role,
        func.lower(tx.c.requesting_agency_id) == requesting_agency_id.lower(),
        tx.c.requesting_request_id == requesting_request_id,
    )))).first()


async def lock_transaction_by_id(conn: AsyncConnection, tx_id: int):
    tx = t.transactions
    return (await conn.execute(_locked(select(tx).where(tx.c.id == tx_id)))).first()


async def lock_transaction_by_public_id(conn: AsyncConnection, role: str, public_id: str):
    tx = t.transactions
    return (await conn.execute(_locked(select(tx).where(
        tx.c.role == role, tx.c.public_id == public_id)))).first()


async def lock_borrowing_by_attempt(conn: AsyncConnection, requesting_request_id: str):
    tx, at = t.transactions, t.attempts
    return (await conn.execute(_locked(
        select(tx).join(at, at.c.transaction_id == tx.c.id)
        .where(at.c.requesting_request_id == requesting_request_id, tx.c.role == "borrowing")
    ))).first()


def _text(value) -> str | None:
    return None if value is None else str(value)


def _columns(state) -> dict[str, Any]:
    s = state.summary()
    return dict(
        status=str(s["status"]), partner=_text(s.get("partner")), title=s.get("title"),
        patron_id=s.get("patron_id"), supplying_request_id=s.get("supplying_request_id"),
        requesting_request_id=s["requesting_request_id"],
        needs_attention=bool(s.get("needs_attention")), state=state.to_json(),
    )


async def insert_transaction(conn: AsyncConnection, *, role: str, public_id: str, state,
                             now: datetime, requesting_agency_id: str,
                             duplicate_key: str | None = None) -> int:
    result = await conn.execute(insert(t.transactions).values(
        role=role, public_id=public_id, requesting_agency_id=requesting_agency_id,
        created_at=now, updated_at=now, duplicate_key=duplicate_key, **_columns(state),
    ).returning(t.transactions.c.id))
    return result.scalar_one()


async def save_state(conn: AsyncConnection, tx_id: int, state, *, now: datetime,
                     next_timer_at: datetime | None) -> None:
    tx = t.transactions
    await conn.execute(update(tx).where(tx.c.id == tx_id).values(
        updated_at=now, version=tx.c.version + 1, next_timer_at=next_timer_at,
        **_columns(state),
    ))


async def add_attempt(conn: AsyncConnection, tx_id: int, *, partner: str,
                      requesting_request_id: str, now: datetime) -> None:
    at = t.attempts
    seq = (await conn.execute(select(func.count()).select_from(at)
                              .where(at.c.transaction_id == tx_id))).scalar_one() + 1
    await conn.execute(insert(at).values(
        transaction_id=tx_id, seq=seq, partner=partner,
        requesting_request_id=requesting_request_id, created_at=now))


async def open_duplicate(conn: AsyncConnection, key: str) -> str | None:
    tx = t.transactions
    row = (await conn.execute(select(tx.c.public_id).where(
        tx.c.role == "borrowing", tx.c.duplicate_key == key,
        tx.c.status.not_in(CLOSED_BORROWING_STATES),
    ).limit(1))).first()
    return row.public_id if row else None


CLOSED_BORROWING_STATES = ("COMPLETE", "CANCELLED", "UNFILLED", "COPY_DELIVERED", "LOST")


async def due_timers(conn: AsyncConnection, *, now: datetime, limit: int) -> list[tuple]:
    tx = t.transactions
    rows = await conn.execute(select(tx.c.id, tx.c.role).where(
        tx.c.next_timer_at.is_not(None), tx.c.next_timer_at <= now,
    ).order_by(tx.c.next_timer_at).limit(limit))
    return [(r.id, r.role) for r in rows]


# -- history and effects --------------------------------------------------------------


async def add_history(conn: AsyncConnection, tx_id: int, entries: tuple[HistoryEntry, ...], *,
                      actor: str, now: datetime) -> None:
    if not entries:
        return
    await conn.execute(insert(t.history), [
        dict(transaction_id=tx_id, at=now, actor=e.actor if e.actor != "staff" else actor,
             event=e.event, detail={"summary": e.summary, **e.detail})
        for e in entries
    ])


async def add_history_event(conn: AsyncConnection, tx_id: int, *, event: str, actor: str,
                            now: datetime, summary: str, detail: dict | None = None) -> None:
    await conn.execute(insert(t.history).values(
        transaction_id=tx_id, at=now, actor=actor, event=event,
        detail={"summary": summary, **(detail or {})}))


async def apply_effect(conn: AsyncConnection, tx_id: int, effect: Effect, *,
                       now: datetime) -> None:
    d = effect.detail
    if effect.kind == "item_status":
        items = t.holdings_items
        due = d.get("due_date")
        await conn.execute(update(items).where(items.c.barcode == d["barcode"]).values(
            status=d["status"], due_date=date.fromisoformat(due[:10]) if due else None,
            updated_at=now))
    elif effect.kind == "partner_closure":
        pc = t.partner_closures
        values = dict(start=_as_date(d.get("start")), end=_as_date(d.get("end")),
                      note=d.get("note"), learned_at=now)
        updated = await conn.execute(update(pc).where(pc.c.symbol == d["symbol"]).values(**values))
        if updated.rowcount == 0:
            await conn.execute(insert(pc).values(symbol=d["symbol"], **values))
    # patron notices and charges are kept in the history, where staff see them
    await add_history_event(conn, tx_id, event=effect.kind, actor="system", now=now,
                            summary=d.get("text") or effect.kind.replace("_", " "),
                            detail={k: _jsonable(v) for k, v in d.items()})


def _as_date(value) -> date | None:
    if value is None or isinstance(value, date):
        return value
    return date.fromisoformat(str(value)[:10])


def _jsonable(value):
    return value.isoformat() if isinstance(value, (date, datetime)) else (
        str(value) if not isinstance(value, (str, int, float, bool, list, dict, type(None)))
        else value)


# -- views for the staff API ---------------------------------------------------------


async def request_view(conn: AsyncConnection, tx_id: int, *, full: bool = False
                       ) -> dict[str, Any]:
    tx = t.transactions
    row = (await conn.execute(select(tx).where(tx.c.id == tx_id))).one()
    view = _row_view(row)
    view["state"] = row.state
    hist = await conn.execute(select(t.history).where(t.history.c.transaction_id == tx_id)
                              .order_by(t.history.c.id))
    view["history"] = [
        {"at": h.at.isoformat(), "actor": h.actor, "event": h.event, **(h.detail or {})}
        for h in hist
    ]
    if full:
        msgs = await conn.execute(select(t.messages).where(t.messages.c.transaction_id == tx_id)
                                  .order_by(t.messages.c.id))
        view["messages"] = [
            {"at": m.created_at.isoformat(), "direction": m.direction, "kind": m.kind,
             "peer": m.peer, "status": m.status, "action": m.action, "reason": m.reason,
             "raw": m.raw, "confirmation": m.confirmation}
            for m in msgs
        ]
        out = await conn.execute(select(t.outbox).where(t.outbox.c.transaction_id == tx_id)
                                 .order_by(t.outbox.c.id))
        view["outbox"] = [
            {"id": o.id, "kind": o.kind, "peer": o.peer, "state": o.state,
             "attempts": o.attempts, "last_error": o.last_error,
             "next_attempt_at": o.next_attempt_at.isoformat()}
            for o in out
        ]
    return view


def _row_view(row) -> dict[str, Any]:
    return {
        "id": row.public_id, "role": row.role, "status": row.status, "partner": row.partner,
        "title": row.title, "patron_id": row.patron_id,
        "requesting_request_id": row.requesting_request_id,
        "supplying_request_id": row.supplying_request_id,
        "needs_attention": row.needs_attention,
        "created_at": row.created_at.isoformat(), "updated_at": row.updated_at.isoformat(),
    }


async def view_by_public_id(conn: AsyncConnection, role: str, public_id: str,
                            ) -> dict[str, Any] | None:
    tx = t.transactions
    row = (await conn.execute(select(tx.c.id).where(
        tx.c.role == role, tx.c.public_id == public_id))).first()
    return None if row is None else await request_view(conn, row.id, full=True)


async def search(conn: AsyncConnection, role: str, *, status: str | None = None,
                 partner: str | None = None, q: str | None = None,
                 needs_attention: bool | None = None, limit: int = 50, offset: int = 0,
                 extra: tuple | list = (),
                 ) -> dict[str, Any]:
    """Staff list and search, with facet counts by status (as the seeds' lists have).
    ``extra``: more WHERE clauses from a side's own filters (lending_repo.search_filters)."""
    tx = t.transactions
    where = [tx.c.role == role, *extra]
    if partner:
        where.append(func.lower(tx.c.partner) == partner.lower())
    if needs_attention is not None:
        where.append(tx.c.needs_attention.is_(needs_attention))
    if q:
        like = f"%{q.lower()}%"
        where.append(or_(
            func.lower(tx.c.title).like(like), tx.c.public_id == q,
            tx.c.requesting_request_id == q, tx.c.supplying_request_id == q,
            tx.c.patron_id == q,
            tx.c.id.in_(select(t.attempts.c.transaction_id)
                        .where(t.attempts.c.requesting_request_id == q)),
        ))
    facets = {r.status: r.n for r in await conn.execute(
        select(tx.c.status, func.count().label("n")).where(and_(*where)).group_by(tx.c.status))}
    if status:
        where.append(tx.c.status == status)
    total = (await conn.execute(select(func.count()).select_from(tx).where(and_(*where)))
             ).scalar_one()
    rows = await conn.execute(select(tx).where(and_(*where))
                              .order_by(tx.c.updated_at.desc(), tx.c.id.desc())
                              .limit(limit).offset(offset))
    return {"total": total, "facets": facets, "requests": [_row_view(r) for r in rows]}
