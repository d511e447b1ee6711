"""The outbox table: queue, claim, and record the result of sends.

Every function takes an :class:`AsyncConnection` and runs in the caller's
transaction (``async with engine.begin() as conn: ...``); none of them commits.

Claiming rules (``claim_due``):

- the row is ``pending``, due (``next_attempt_at <= now``) and not leased
  (``locked_until`` is NULL or past);
- it is the oldest pending row of its transaction, so messages for one request
  go out in order: a later one waits until the earlier one is sent or has failed
  (rows without a transaction are not ordered);
- one ``UPDATE ... RETURNING`` picks the rows and writes the lease; on PostgreSQL
  the candidates are locked with ``FOR UPDATE SKIP LOCKED`` inside it, so two
  processes never claim the same row; on SQLite a single connection writes.

The ``mark_*`` functions only touch rows still ``pending``; given ``worker_id``
they also require the caller to hold the lease, and they return whether a row
changed (``mark_all_sent``: which rows), so a worker whose lease ran out cannot
overwrite another's result.
"""

from __future__ import annotations

import functools
from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import (
    ARRAY,
    Integer,
    and_,
    bindparam,
    case,
    exists,
    func,
    insert,
    literal,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.ext.asyncio import AsyncConnection

from node.store import bulk
from node.store.tables import outbox


@dataclass(frozen=True, kw_only=True)
class OutboxRow:
    id: int
    transaction_id: int | None
    peer: str
    url: str
    kind: str
    body: bytes
    state: str
    attempts: int
    maybe_delivered: bool  # an attempt's outcome unknown: the peer may have it
    next_attempt_at: datetime
    last_error: str | None
    last_http_status: int | None
    last_attempt_at: datetime | None
    locked_by: str | None
    locked_until: datetime | None
    created_at: datetime
    sent_at: datetime | None
    confirmation: bytes | None

    @classmethod
    def from_mapping(cls, m) -> OutboxRow:
        return cls(**{name: m[name] for name in _FIELDS})


_FIELDS = tuple(c.name for c in outbox.columns)


def outbox_row(*, transaction_id: int | None, peer: str, url: str, kind: str, body: bytes,
               now: datetime) -> dict:
    """A message to POST to ``url``, due at once (:func:`enqueue`, or a batch's with
    :func:`node.store.repo.write_rows`)."""
    return dict(transaction_id=transaction_id, peer=peer, url=url, kind=kind, body=bytes(body),
                state="pending", attempts=0, next_attempt_at=now, created_at=now)


_ENQUEUE_RETURNING_ID = insert(outbox).returning(outbox.c.id)


async def enqueue(conn: AsyncConnection, **row) -> int:
    """Queue one message (:func:`outbox_row`'s arguments); returns the outbox id."""
    return int((await conn.execute(_ENQUEUE_RETURNING_ID, outbox_row(**row))).scalar_one())


async def enqueue_leased(
    conn: AsyncConnection,
    *,
    transaction_id: int,
    peer: str,
    url: str,
    kind: str,
    body: bytes,
    now: datetime,
    worker_id: str,
    until: datetime,
) -> OutboxRow:
    """Queue ``body`` like :func:`enqueue`, leased to ``worker_id`` until ``until`` unless
    an earlier row of its transaction is still pending (that one goes first, and this
    one is claimed after it).  One statement; the caller sends a leased row itself once
    its transaction has committed (no claim needed), and if it dies the lease expires."""
    earlier = outbox.alias("earlier")
    first = ~exists().where(earlier.c.transaction_id == transaction_id,
                            earlier.c.state == "pending")
    result = await conn.execute(
        insert(outbox)
        .values(
            **outbox_row(transaction_id=transaction_id, peer=peer, url=url, kind=kind,
                         body=body, now=now),
            locked_by=case((first, literal(worker_id, outbox.c.locked_by.type))),
            locked_until=case((first, literal(until, outbox.c.locked_until.type))),
        )
        .returning(*outbox.columns)
    )
    return OutboxRow.from_mapping(result.mappings().one())


def _claim_statement(dialect: str, excluding: bool):
    """:func:`claim_due`'s statement, built once per dialect (and whether it leaves out
    rows being sent): building and caching it again on every claim cost more than
    running it.  Parameters: ``now``, ``until``, ``worker_id``, ``limit``, ``sending``."""
    o, earlier = outbox.alias("o"), outbox.alias("earlier")
    now = bindparam("now", type_=outbox.c.next_attempt_at.type)
    claimable = [
        o.c.state == "pending",
        o.c.next_attempt_at <= now,
        or_(o.c.locked_until.is_(None), o.c.locked_until <= now),
        or_(
            o.c.transaction_id.is_(None),
            ~exists().where(
                earlier.c.transaction_id == o.c.transaction_id,
                earlier.c.state == "pending",
                earlier.c.id < o.c.id,
            ),
        ),
    ]
    if excluding:
        claimable.append(~bulk.in_list(o.c.id, "sending"))
    candidates = (
        select(o.c.id)
        .where(*claimable)
        .order_by(o.c.next_attempt_at, o.c.id)
        .limit(bindparam("limit", type_=Integer))
    )
    # One statement: pick the candidates and write the lease.
    if dialect == "postgresql":
        # A locking CTE is evaluated once; SKIP LOCKED leaves rows another worker
        # is claiming right now to that worker.
        picked = candidates.with_for_update(skip_locked=True, of=o).cte("picked")
        where = outbox.c.id == picked.c.id
    else:
        where = outbox.c.id.in_(candidates.scalar_subquery())
    # A lease that ran out: whoever held it may have sent the row, and never said.
    return (update(outbox)
            .where(where)
            .values(locked_by=bindparam("worker_id", type_=outbox.c.locked_by.type),
                    locked_until=bindparam("until", type_=outbox.c.locked_until.type),
                    maybe_delivered=or_(outbox.c.maybe_delivered,
                                        outbox.c.locked_by.is_not(None)))
            .returning(*outbox.columns))


_CLAIM_STATEMENTS = {(dialect, excluding): _claim_statement(dialect, excluding)
                     for dialect in ("postgresql", "sqlite") for excluding in (False, True)}


async def claim_due(
    conn: AsyncConnection,
    *,
    worker_id: str,
    now: datetime,
    lease_seconds: float,
    limit: int,
    sending: Collection[int] = (),
) -> list[OutboxRow]:
    """Lease up to ``limit`` due rows to ``worker_id`` until ``now + lease_seconds``.

    At most one row per transaction is returned (the oldest pending one). Rows
    come back oldest first. Commit promptly: the lease is what other workers see.
    ``sending`` are the rows this worker is sending now: never claimed again,
    even if their lease has run out (a slow send, or a clock moved forward).
    """
    if limit <= 0:
        return []
    params = {"now": now, "until": now + timedelta(seconds=lease_seconds),
              "worker_id": worker_id, "limit": limit}
    if sending:
        params["sending"] = list(sending)
    result = await conn.execute(
        _CLAIM_STATEMENTS[conn.dialect.name, bool(sending)], params)
    rows = [OutboxRow.from_mapping(m) for m in result.mappings().all()]
    rows.sort(key=lambda r: (r.next_attempt_at, r.id))
    return rows


def _held(id: int, worker_id: str | None):
    cond = [outbox.c.id == id, outbox.c.state == "pending"]
    if worker_id is not None:
        cond.append(outbox.c.locked_by == worker_id)
    return and_(*cond)


async def _update(conn: AsyncConnection, where, **values) -> bool:
    result = await conn.execute(update(outbox).where(where).values(**values))
    return result.rowcount == 1


def _sent(now: datetime, http_status, confirmation) -> dict:
    """The values that mark a row sent (shared by mark_sent and mark_all_sent)."""
    return {
        "state": "sent",
        "attempts": outbox.c.attempts + 1,
        "sent_at": now,
        "last_attempt_at": now,
        "last_http_status": http_status,
        "confirmation": confirmation,
        "locked_by": None,
        "locked_until": None,
    }


async def mark_sent(
    conn: AsyncConnection,
    id: int,
    *,
    now: datetime,
    confirmation: bytes | None,
    http_status: int | None = None,
    worker_id: str | None = None,
) -> bool:
    """The peer answered 2xx: the row is done."""
    return await _update(
        conn,
        _held(id, worker_id),
        **_sent(now, http_status, None if confirmation is None else bytes(confirmation)),
    )


@dataclass(frozen=True)
class Delivery:
    """One row for :func:`mark_all_sent`: the peer's 2xx status and its answer."""

    id: int
    http_status: int
    confirmation: bytes


async def mark_all_sent(
    conn: AsyncConnection, deliveries: Collection[Delivery], *, now: datetime, worker_id: str
) -> set[int]:
    """:func:`mark_sent` for many rows in ONE statement; returns the ids it marked.

    An id missing from the result was not pending or not leased to ``worker_id``
    any more (RETURNING, because asyncpg reports no rowcount for an executemany).
    """
    if not deliveries:
        return set()
    params = {"now": now, "worker_id": worker_id}
    if conn.dialect.name == "postgresql":
        params.update(ids=[d.id for d in deliveries],
                      statuses=[d.http_status for d in deliveries],
                      confirmations=[bytes(d.confirmation) for d in deliveries])
        statement = _MARK_ALL_SENT_FROM_ARRAYS
    else:
        for n, d in enumerate(deliveries):
            params.update({f"id_{n}": d.id, f"status_{n}": d.http_status,
                           f"confirmation_{n}": bytes(d.confirmation)})
        statement = _mark_all_sent_statement(len(deliveries))
    result = await conn.execute(statement, params)
    return set(result.scalars())


def _mark_all_sent(where, status, confirmation):
    return (update(outbox)
            .where(where, outbox.c.state == "pending",
                   outbox.c.locked_by == bindparam("worker_id", type_=outbox.c.locked_by.type))
            .values(**_sent(bindparam("now", type_=outbox.c.sent_at.type), status,
                            confirmation))
            .returning(outbox.c.id))


def _mark_all_sent_from_arrays():
    """:func:`mark_all_sent`'s statement on PostgreSQL: the rows' ids, statuses and
    confirmations as three arrays (``ids``, ``statuses``, ``confirmations``), one text
    for any number of rows (prepared once, see :mod:`node.store.bulk`)."""
    arrays = [bindparam(name, type_=ARRAY(column.type)) for name, column in (
        ("ids", outbox.c.id), ("statuses", outbox.c.last_http_status),
        ("confirmations", outbox.c.confirmation))]
    sent = func.unnest(*arrays).table_valued("id", "status", "confirmation").render_derived()
    return _mark_all_sent(outbox.c.id == sent.c.id, sent.c.status, sent.c.confirmation)


_MARK_ALL_SENT_FROM_ARRAYS = _mark_all_sent_from_arrays()


@functools.lru_cache(maxsize=128)
def _mark_all_sent_statement(rows: int):
    """:func:`mark_all_sent`'s statement on SQLite for ``rows`` rows, built once per
    size (building it on every round cost more than running it): ``id_N``,
    ``status_N`` and ``confirmation_N`` per row, ``now`` and ``worker_id``."""
    ids = [bindparam(f"id_{n}", type_=outbox.c.id.type) for n in range(rows)]

    def per_row(name: str, column):  # CASE WHEN id = :id_0 THEN :name_0 ... END
        return case(*((outbox.c.id == ids[n], bindparam(f"{name}_{n}", type_=column.type))
                      for n in range(rows)))

    return _mark_all_sent(outbox.c.id.in_(ids), per_row("status", outbox.c.last_http_status),
                          per_row("confirmation", outbox.c.confirmation))


async def mark_retry(
    conn: AsyncConnection,
    id: int,
    *,
    now: datetime,
    error: str,
    next_attempt_at: datetime,
    http_status: int | None = None,
    worker_id: str | None = None,
    maybe_delivered: bool = False,
) -> bool:
    """This attempt failed; try again at ``next_attempt_at``.  ``maybe_delivered``: the
    peer may have the message all the same (a timeout, a broken connection)."""
    return await _update(
        conn,
        _held(id, worker_id),
        attempts=outbox.c.attempts + 1,
        last_error=error,
        last_attempt_at=now,
        last_http_status=http_status,
        next_attempt_at=next_attempt_at,
        locked_by=None,
        locked_until=None,
        **_maybe_delivered(maybe_delivered),
    )


async def mark_failed(
    conn: AsyncConnection,
    id: int,
    *,
    now: datetime,
    error: str,
    http_status: int | None = None,
    confirmation: bytes | None = None,
    worker_id: str | None = None,
    maybe_delivered: bool = False,
) -> bool:
    """Give up on the row (out of attempts, or the peer answered with an ERROR)."""
    values = {
        "state": "failed",
        "attempts": outbox.c.attempts + 1,
        "last_error": error,
        "last_attempt_at": now,
        "last_http_status": http_status,
        "locked_by": None,
        "locked_until": None,
        **_maybe_delivered(maybe_delivered),
    }
    if confirmation is not None:
        values["confirmation"] = bytes(confirmation)
    return await _update(conn, _held(id, worker_id), **values)


def _maybe_delivered(maybe: bool) -> dict:
    # Only ever set: once a peer may have a message, every later attempt is a resend.
    return {"maybe_delivered": True} if maybe else {}


async def retry_now(conn: AsyncConnection, id: int, now: datetime) -> bool:
    """Staff "retry now": a pending or failed row becomes due at once.

    A failed row goes back to pending (its attempt count restarts, so it gets a
    full series of retries). A row being sent right now (leased) keeps its lease;
    a sent row is not touched. Returns whether a row changed.
    """
    pending = await _update(
        conn,
        and_(outbox.c.id == id, outbox.c.state == "pending"),
        next_attempt_at=now,
    )
    if pending:
        return True
    return await _update(
        conn,
        and_(outbox.c.id == id, outbox.c.state == "failed"),
        state="pending",
        attempts=0,
        next_attempt_at=now,
        locked_by=None,
        locked_until=None,
    )


async def get(conn: AsyncConnection, id: int) -> OutboxRow | None:
    """One row by id."""
    m = (await conn.execute(select(outbox).where(outbox.c.id == id))).mappings().first()
    return None if m is None else OutboxRow.from_mapping(m)


async def for_transaction(conn: AsyncConnection, transaction_id: int) -> list[OutboxRow]:
    """All rows of a transaction, oldest first (for the staff view)."""
    result = await conn.execute(
        select(outbox).where(outbox.c.transaction_id == transaction_id).order_by(outbox.c.id)
    )
    return [OutboxRow.from_mapping(m) for m in result.mappings().all()]


def _text(value: bytes | None) -> str | None:
    return None if value is None else value.decode("utf-8", "replace")


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


async def list_rows(
    conn: AsyncConnection, *, state: str | None = None, limit: int = 100, offset: int = 0
) -> list[dict]:
    """Rows for the staff API, newest first, as JSON-ready dicts (text bodies, ISO times).

    ``state`` filters on 'pending' / 'sent' / 'failed'; None lists all.
    """
    q = select(outbox).order_by(outbox.c.id.desc()).limit(max(0, limit)).offset(max(0, offset))
    if state:
        q = q.where(outbox.c.state == state)
    out = []
    for m in (await conn.execute(q)).mappings():
        row = OutboxRow.from_mapping(m)
        out.append(
            {
                "id": row.id,
                "transaction_id": row.transaction_id,
                "peer": row.peer,
                "url": row.url,
                "kind": row.kind,
                "state": row.state,
                "attempts": row.attempts,
                "maybe_delivered": row.maybe_delivered,
                "next_attempt_at": _iso(row.next_attempt_at),
                "last_error": row.last_error,
                "last_http_status": row.last_http_status,
                "last_attempt_at": _iso(row.last_attempt_at),
                "locked_by": row.locked_by,
                "locked_until": _iso(row.locked_until),
                "created_at": _iso(row.created_at),
                "sent_at": _iso(row.sent_at),
                "body": _text(row.body),
                "confirmation": _text(row.confirmation),
            }
        )
    return out


async def pending_count(conn: AsyncConnection) -> int:
    """Rows not yet sent nor given up."""
    result = await conn.execute(
        select(func.count()).select_from(outbox).where(outbox.c.state == "pending")
    )
    return int(result.scalar_one())


async def next_due_at(conn: AsyncConnection) -> datetime | None:
    """When the earliest pending row becomes due (None when nothing is pending)."""
    result = await conn.execute(
        select(func.min(outbox.c.next_attempt_at)).where(outbox.c.state == "pending")
    )
    value = result.scalar_one()
    return value


async def release_leases(conn: AsyncConnection, *, of: str | None = None,
                         unsent: bool = False) -> int:
    """Free the rows leased to worker ``of`` (one gone), or every leased row (a restart
    where no other worker can be running); returns how many.  They may have been sent
    (``maybe_delivered``) unless ``unsent``: a worker handing over rows it never began."""
    o = outbox
    which = o.c.locked_by.is_not(None) if of is None else o.c.locked_by == of
    result = await conn.execute(
        update(o).where(o.c.state == "pending", which).values(
            locked_by=None, locked_until=None, **_maybe_delivered(not unsent)))
    return result.rowcount


async def leaseholders(conn: AsyncConnection, *, now: datetime, excluding: str) -> list[str]:
    """The workers, but ``excluding``, holding a lease on a pending row now."""
    o = outbox
    result = await conn.execute(
        select(o.c.locked_by).distinct()
        .where(o.c.state == "pending", o.c.locked_until > now, o.c.locked_by != excluding))
    return list(result.scalars())


def peers_cte():
    """The distinct ``peer`` values, found by skipping from one to the next in the index
    (peer, state, sent_at): a recursive CTE with column ``peer`` (and one NULL row at
    the end).  Never a scan of the whole outbox, where delivered messages pile up."""
    inner = outbox.alias("o")
    first = select(func.min(outbox.c.peer).label("peer")).cte("peers", recursive=True)
    return first.union_all(
        select(select(func.min(inner.c.peer)).where(inner.c.peer > first.c.peer)
               .scalar_subquery())
        .where(first.c.peer.is_not(None)))


# pg_try_advisory_xact_lock(int4, int4): one prune at a time among a node's processes
# (18626: migration 0007's status-count shards; 18627: node/liveness.py's workers).
_PRUNING = text("SELECT pg_try_advisory_xact_lock(18628, 0)")


async def prune_sent(conn: AsyncConnection, *, before: datetime, limit: int) -> int:
    """Delete up to ``limit`` rows delivered before ``before``; returns how many.

    Their bodies are in the message log; an OK confirmation says nothing more (an
    ERROR is in the request's history).  Each partner's newest delivered row stays:
    the partners screen (:mod:`node.store.partner_status`) shows when it was last
    reached.  Partner by partner, oldest first, through the index (peer, state,
    sent_at), so a call reads only the rows it deletes.  On PostgreSQL, 0 while
    another process's transaction prunes (two deleting the same rows could deadlock)."""
    if conn.dialect.name == "postgresql" and not (await conn.execute(_PRUNING)).scalar():
        return 0
    o = outbox.c
    peers = [p for p in (await conn.execute(select(peers_cte()))).scalars() if p is not None]
    deleted = 0
    for peer in peers:
        if deleted >= limit:
            break
        newest = select(func.max(o.sent_at)).where(o.peer == peer, o.state == "sent")
        old = (select(o.id).where(o.peer == peer, o.state == "sent", o.sent_at < before,
                                  o.sent_at < newest.scalar_subquery())
               .order_by(o.sent_at).limit(limit - deleted))
        result = await conn.execute(outbox.delete().where(o.id.in_(old)))
        deleted += result.rowcount
    return deleted


__all__ = [
    "Delivery",
    "OutboxRow",
    "claim_due",
    "enqueue",
    "enqueue_leased",
    "for_transaction",
    "get",
    "leaseholders",
    "list_rows",
    "mark_all_sent",
    "mark_failed",
    "mark_retry",
    "mark_sent",
    "next_due_at",
    "outbox_row",
    "peers_cte",
    "pending_count",
    "prune_sent",
    "release_leases",
    "retry_now",
]
