"""Queries the service runs inside its transactions.

SQL only: no decisions are taken here (those are the machines'), and every
function takes the caller's connection so that one input is one transaction.

The statements of the inbound hot path are built once, at import, and take
their values as parameters at execute: building ``insert(...).values(**kw)``
per call (and its cache key) cost more than running it (bench/RESULTS.md §2).
"""

from __future__ import annotations

from dataclasses import replace
from datetime import date, datetime
from typing import Any

from sqlalchemy import bindparam, func, insert, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from ..machine import Effect, HistoryEntry
from ..protocol.messages import (
    BusinessMessage,
    Request,
    RequestingAgencyMessage,
    SupplyingAgencyMessage,
)
from ..supplier.locate import identifiers_of
from ..supplier.locate import locate as match_holdings
from . import bulk, holdings_repo, outbox_repo
from . import search as staff_search
from . import tables as t

search = staff_search.search
_row_view = staff_search.row_view
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


def _in_force(configured, row):
    """The database's closure over the config's, which gives the defaults."""
    if row is None:
        return configured
    return replace(configured, active=row.active, start=row.start, end=row.end,
                   note=row.note or "")


_SELECT_CLOSURES = select(t.closures)


async def closure(conn: AsyncConnection, kind: str, config):
    """The closure in force for ``kind``: the database's, else the config's."""
    return (await closures(conn, config))[kind]


async def closures(conn: AsyncConnection, config) -> dict[str, Any]:
    """Every closure in force, by kind, in one query."""
    rows = {r.kind: r for r in await conn.execute(_SELECT_CLOSURES)}
    return {kind: _in_force(getattr(config, kind).closure, rows.get(kind))
            for kind in t.CLOSURE_KINDS}


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
    return (await locate_many(conn, [request], policy, our_symbol))[0]


async def locate_many(conn: AsyncConnection, requests: list[Request], policy, our_symbol
                      ) -> list:
    """:func:`locate` for several requests (a batch's): one query."""
    keys = [identifiers_of(r, our_symbol) for r in requests]
    found = await holdings_repo.candidates_many(conn, keys)
    return [match_holdings(r, records, policy, our_symbol=our_symbol, keys=k)
            for r, records, k in zip(requests, found, keys, strict=True)]


# -- messages -------------------------------------------------------------------------

_SELECT_CONFIRMATIONS = select(t.messages.c.digest, t.messages.c.confirmation).where(
    bulk.in_list(t.messages.c.digest, "digests"))


async def confirmations_for_digests(conn: AsyncConnection, digests: list[str]
                                    ) -> dict[str, bytes]:
    """The answers already given to these messages (digest -> confirmation), in one query."""
    rows = await conn.execute(_SELECT_CONFIRMATIONS, {"digests": digests})
    return {r.digest: r.confirmation.encode("utf-8") for r in rows}


def _summary_fields(message: BusinessMessage) -> dict[str, Any]:
    fields: dict[str, Any] = {"status": None, "action": None, "reason": None}
    if isinstance(message, SupplyingAgencyMessage):
        status = message.status_info.status
        fields.update(status=status.value if status else None,
                      reason=message.message_info.reason_for_message.value)
    elif isinstance(message, RequestingAgencyMessage):
        fields.update(action=message.action.value)
    elif isinstance(message, Request):
        fields.update(reason=message.service_info.service_type.value if message.service_info
                      else None)
    return fields


def message_row(*, direction: str, message: BusinessMessage, raw: bytes, peer: str | None,
                now: datetime, digest: str | None = None,
                confirmation: bytes | None = None) -> dict[str, Any]:
    """One row of the message log, for :func:`write_rows` once its ``transaction_id``
    is set."""
    return dict(
        direction=direction, kind=message.KIND, peer=peer,
        requesting_request_id=message.header.requesting_agency_request_id,
        raw=raw.decode("utf-8", errors="replace"), digest=digest,
        confirmation=confirmation.decode("utf-8") if confirmation is not None else None,
        message_status="OK" if confirmation is not None else None, created_at=now,
        **_summary_fields(message),
    )


async def write_rows(conn: AsyncConnection, *, messages: list[dict[str, Any]],
                     history: list[dict[str, Any]], outbox: list[dict[str, Any]]) -> None:
    """A batch's message-log (:func:`message_row`), history (:func:`history_row`) and
    outbox (:func:`outbox_repo.outbox_row`) rows: one statement on PostgreSQL."""
    await bulk.insert_rows(conn, [(t.messages, messages), (t.history, history),
                                  (t.outbox, outbox)])


# -- transactions -------------------------------------------------------------------


def agency_key(agency_id) -> str:
    """``transactions.requesting_agency_id`` as stored and looked up: agency ids compare
    case-insensitively (``AgencyId.same_agency``), so the column holds them casefolded
    and a lookup is an equality on the unique index."""
    return str(agency_id).casefold()


def _locked(stmt):
    return stmt.with_for_update()  # a no-op on SQLite, whose single writer serialises


_tx = t.transactions
_LOCK_BY_REQUEST_ID = _locked(select(_tx).where(
    _tx.c.role == bindparam("role"),
    _tx.c.requesting_agency_id == bindparam("agency"),
    _tx.c.requesting_request_id == bindparam("request_id"),
))
_LOCK_BY_ATTEMPT = _locked(
    select(_tx).join(t.attempts, t.attempts.c.transaction_id == _tx.c.id)
    .where(t.attempts.c.requesting_request_id == bindparam("request_id"),
           _tx.c.role == "borrowing"))
_INSERT_TRANSACTION = insert(_tx).returning(_tx.c.id)
_SAVE_STATE = update(_tx).where(_tx.c.id == bindparam("tx_id")).values(
    version=_tx.c.version + 1)


async def lock_transaction(conn: AsyncConnection, *, role: str, requesting_agency_id: str,
                           requesting_request_id: str):
    return (await conn.execute(_LOCK_BY_REQUEST_ID, {
        "role": role, "agency": agency_key(requesting_agency_id),
        "request_id": requesting_request_id,
    })).first()


async def lock_transaction_by_id(conn: AsyncConnection, tx_id: int):
    tx = t.transactions
    return (await conn.execute(_locked(select(tx).where(tx.c.id == tx_id)))).first()


async def lock_transaction_by_public_id(conn: AsyncConnection, role: str, public_id: str):
    tx = t.transactions
    return (await conn.execute(_locked(select(tx).where(
        tx.c.role == role, tx.c.public_id == public_id)))).first()


async def lock_borrowing_by_attempt(conn: AsyncConnection, requesting_request_id: str):
    return (await conn.execute(_LOCK_BY_ATTEMPT, {"request_id": requesting_request_id})).first()


def _text(value) -> str | None:
    return None if value is None else str(value)


def _columns(state, next_timer_at: datetime | None) -> dict[str, Any]:
    s = state.summary()
    return dict(
        status=str(s["status"]), partner=_text(s.get("partner")), title=s.get("title"),
        patron_id=s.get("patron_id"), supplying_request_id=s.get("supplying_request_id"),
        requesting_request_id=s["requesting_request_id"],
        needs_attention=bool(s.get("needs_attention")), state=state.to_json(),
        next_timer_at=next_timer_at,
    )


def transaction_row(*, role: str, public_id: str, state, now: datetime,
                    requesting_agency_id: str, next_timer_at: datetime | None,
                    duplicate_key: str | None = None) -> dict[str, Any]:
    """A request's row as inserted (:func:`insert_transaction`, :func:`insert_new_transactions`)."""
    return dict(
        role=role, public_id=public_id, requesting_agency_id=agency_key(requesting_agency_id),
        created_at=now, updated_at=now, duplicate_key=duplicate_key,
        **_columns(state, next_timer_at),
    )


async def insert_transaction(conn: AsyncConnection, row: dict[str, Any], *,
                             if_new: bool = False) -> int | None:
    """Insert a request (:func:`transaction_row`); returns its id.  ``if_new``: return None
    instead of raising when (role, agency, request id) or the public id is already taken."""
    if if_new:
        return (await insert_new_transactions(conn, [row])).get(row["public_id"])
    return (await conn.execute(_INSERT_TRANSACTION, row)).scalar()


async def insert_new_transactions(conn: AsyncConnection, rows: list[dict[str, Any]]
                                  ) -> dict[str, int]:
    """Insert partners' new requests (:func:`transaction_row`) in one statement; returns
    public id -> id of those inserted.  One whose (role, agency, request id) or public id
    is taken is left out, not an error."""
    if not rows:
        return {}
    # A partner's new request: the unique (role, agency, request id) says whether it is new.
    result = await bulk.insert_new(conn, _tx, rows, ("id", "public_id"))
    return {r.public_id: r.id for r in result}


async def save_state(conn: AsyncConnection, tx_id: int, state, *, now: datetime,
                     next_timer_at: datetime | None) -> None:
    await conn.execute(_SAVE_STATE, dict(tx_id=tx_id, updated_at=now,
                                         **_columns(state, next_timer_at)))


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

def history_row(tx_id: int, *, event: str, actor: str, now: datetime, summary: str,
                detail: dict | None = None) -> dict[str, Any]:
    """One line of a request's audit trail, for :func:`add_history` or :func:`write_rows`."""
    return dict(transaction_id=tx_id, at=now, actor=actor, event=event,
                detail={"summary": summary, **(detail or {})})


def history_rows(tx_id: int, entries: tuple[HistoryEntry, ...], *, actor: str,
                 now: datetime) -> list[dict[str, Any]]:
    """A machine's history entries as rows; ``staff`` entries get the acting person."""
    return [history_row(tx_id, event=e.event, actor=e.actor if e.actor != "staff" else actor,
                        now=now, summary=e.summary, detail=e.detail) for e in entries]


async def add_history(conn: AsyncConnection, rows: list[dict[str, Any]]) -> None:
    """Write history rows (:func:`history_row`) in one statement."""
    await bulk.insert_rows(conn, [(t.history, rows)])


async def add_history_event(conn: AsyncConnection, tx_id: int, *, event: str, actor: str,
                            now: datetime, summary: str, detail: dict | None = None) -> None:
    await add_history(conn, [history_row(tx_id, event=event, actor=actor, now=now,
                                         summary=summary, detail=detail)])


async def apply_effect(conn: AsyncConnection, tx_id: int, effect: Effect, *,
                       now: datetime) -> dict[str, Any]:
    """Carry out an effect; returns the history row that records it (the caller writes it)."""
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
    return history_row(tx_id, event=effect.kind, actor="system", now=now,
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
    return await _view(conn, row, full=full)


async def _view(conn: AsyncConnection, row, *, full: bool) -> dict[str, Any]:
    """A request as the staff API shows it; ``full`` adds its messages (raw XML) and
    outbox rows."""
    tx_id = row.id
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


async def view_by_public_id(conn: AsyncConnection, role: str, public_id: str, *,
                            full: bool = True) -> dict[str, Any] | None:
    tx = t.transactions
    row = (await conn.execute(select(tx).where(
        tx.c.role == role, tx.c.public_id == public_id))).first()
    return None if row is None else await _view(conn, row, full=full)
