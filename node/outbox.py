"""The outbox worker: sends queued ISO 18626 messages to peers.

An edge module: it owns the HTTP client side and the clock. It leases due rows
(``node.store.outbox_repo.claim_due``; at most one per request at a time, so
messages for one request go out in order), POSTs them concurrently, and records
the results that have come in, together with the next claim, in one database
transaction:

- 2xx with a body: delivered. ``on_delivered(conn, row, status, body)`` runs in the
  same transaction as the write that marks the row sent (one statement for all
  the rows delivered in a round). If it returns a
  :class:`DeliveryVerdict` with ``ok=False`` (the peer's confirmation said ERROR)
  the row is marked failed, not retried (a business answer, not a network
  fault), with a ``send_error`` history row and ``needs_attention`` set.
- 4xx with a body: ``on_delivered`` reads it too, since some peers answer an ERROR
  confirmation with 400 (Koha, NOTES §6.6): a rejected verdict is that refusal;
  anything else is a failure like the next ones.
- connection error, timeout, non-2xx, or 2xx without a body: retried after
  ``min(max_backoff, initial_backoff * 2**(attempts-1))`` plus up to 10 % jitter,
  or the peer's ``Retry-After`` if longer (up to ``max_backoff``);
  after ``max_attempts`` attempts the row is marked failed, with a
  ``send_failed`` history row and ``needs_attention`` set.

Nothing is dropped silently and nothing is marked sent without a 2xx. One log
line per send goes to the ``node.outbox`` logger.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable, Collection, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Any

import aiohttp
from sqlalchemy import insert, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from node.store import db, outbox_repo
from node.store.outbox_repo import OutboxRow
from node.store.tables import history, transactions

log = logging.getLogger("node.outbox")

CONTENT_TYPE = "application/xml; charset=utf-8"
ACTOR = "system"
_MAX_STORED_ERROR = 2000


@dataclass(frozen=True, kw_only=True)
class DeliveryVerdict:
    """What ``on_delivered`` made of the peer's confirmation.

    ``ok=False`` means the peer answered with an ERROR confirmation: the row is
    marked failed with ``error`` as its last_error and is not retried.
    """

    ok: bool = True
    error: str | None = None
    detail: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def delivered(cls) -> DeliveryVerdict:
        return cls(ok=True)

    @classmethod
    def rejected(cls, error: str, detail: Mapping[str, Any] | None = None) -> DeliveryVerdict:
        return cls(ok=False, error=error, detail=dict(detail or {}))


OnDelivered = Callable[[AsyncConnection, OutboxRow, int, bytes], Awaitable[DeliveryVerdict | None]]
# Called in the transaction that gives a message up (max attempts), with the last error.
OnFailed = Callable[[AsyncConnection, OutboxRow, str], Awaitable[None]]


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class _Outcome:
    status: int | None  # HTTP status, None when no answer
    body: bytes
    error: str | None  # None: delivered (2xx with a body)
    # Whether the peer may have the message even so: not when the connection was never
    # made, or the peer said 4xx; yes after a timeout, a connection broken midway, a 5xx.
    reached: bool = True
    retry_after: float = 0.0  # seconds the peer asked us to wait (429, 503: Retry-After)

    @property
    def refusal(self) -> bool:
        """A 4xx with a body: maybe an ERROR confirmation (Koha answers ERROR with 400)."""
        return self.status is not None and 400 <= self.status < 500 and bool(self.body.strip())


@dataclass(frozen=True)
class _Sent:
    row: OutboxRow
    outcome: _Outcome
    ms: float  # how long the POST took


def retry_after(value: str | None, now: datetime) -> float:
    """Seconds a ``Retry-After`` header asks for (delay-seconds or an HTTP date); 0 for
    none, or one we cannot read."""
    if not value:
        return 0.0
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return 0.0
    if when.tzinfo is None:  # an HTTP date is GMT
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - now).total_seconds())


def _error_text(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:_MAX_STORED_ERROR]


def _results(done: set[asyncio.Task[_Sent]]) -> list[_Sent]:
    """The finished sends; one that crashed (a bug) is logged, and its lease expires."""
    out = []
    for task in done:
        if task.cancelled():
            continue
        if (exc := task.exception()) is not None:
            log.error("outbox send crashed", exc_info=(type(exc), exc, exc.__traceback__))
            continue
        out.append(task.result())
    return out


# _record's result for a delivered row with an ok verdict, not yet written:
# _mark_sent writes all of a round's such rows in one statement.
_SENT = "sent"


class _LeaseLost(Exception):
    """Our lease on a row ran out and someone else took it: roll back, write nothing."""


class _Redo(Exception):
    """Roll the recording transaction back and run it again, ``row_id`` settled."""

    def __init__(self, row_id: int, cause: Exception | None):
        super().__init__(row_id)
        self.row_id = row_id
        self.cause = cause  # None: the lease was lost


class OutboxWorker:
    """Drains the outbox. Run ``await worker.run()`` in a task; ``await worker.stop()``."""

    def __init__(
        self,
        engine: AsyncEngine,
        session: aiohttp.ClientSession,
        *,
        worker_id: str,
        timeout_seconds: float = 30.0,
        max_attempts: int = 10,
        initial_backoff_seconds: float = 30.0,
        max_backoff_seconds: float = 3600.0,
        poll_seconds: float = 5.0,
        on_delivered: OnDelivered | None = None,
        on_failed: OnFailed | None = None,
        clock: Callable[[], datetime] = utc_now,
        # Sends in flight at once: 16 let a busy node's answers fall behind its
        # confirmations (bench/inbound.py), 64 keeps up.
        batch_size: int = 64,
        lease_seconds: float | None = None,
        headers_for: Callable[[OutboxRow], Mapping[str, str]] | None = None,
        ssl_for: Callable[[OutboxRow], Any] | None = None,
        refresh: Callable[[OutboxRow], OutboxRow] | None = None,
    ) -> None:
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        self.engine = engine
        # A claim alone is one statement, atomic by itself: on PostgreSQL it runs
        # without BEGIN and COMMIT (two round trips fewer on every hop). SQLite
        # opens every transaction with BEGIN IMMEDIATE, so it keeps the engine.
        self._claim_engine = (
            engine.execution_options(isolation_level="AUTOCOMMIT")
            if engine.dialect.name == "postgresql"
            else engine
        )
        self.session = session
        self.worker_id = worker_id
        self.timeout_seconds = timeout_seconds
        self.max_attempts = max_attempts
        self.initial_backoff_seconds = initial_backoff_seconds
        self.max_backoff_seconds = max_backoff_seconds
        self.poll_seconds = poll_seconds
        self.on_delivered = on_delivered
        self.on_failed = on_failed
        self.clock = clock
        self.batch_size = batch_size
        # Per-peer credentials, computed at send time from the current config
        # (secrets are never stored in the outbox): extra headers, TLS context.  And
        # ``refresh``: the row as the configuration now says it goes (the peer's
        # address, its ISO 18626 version), which may have changed since it was queued.
        self.headers_for = headers_for
        self.ssl_for = ssl_for
        self.refresh = refresh
        # A connection not made in time is a send that cannot have reached the peer.
        self._timeout = aiohttp.ClientTimeout(total=timeout_seconds,
                                              sock_connect=min(10.0, timeout_seconds))
        # A send lasts at most one timeout; the slack covers recording its result.
        self.lease_seconds = lease_seconds if lease_seconds is not None else timeout_seconds * 2 + 30
        self._wake = asyncio.Event()
        self._stopping = False
        self._running: asyncio.Future[None] | None = None
        self._in_flight: dict[asyncio.Task[_Sent], int] = {}  # send -> its outbox row id

    # ------------------------------------------------------------------ control

    def wake(self) -> None:
        """Look for due rows now (call after committing new outbox rows)."""
        self._wake.set()

    def lease(self, now: datetime) -> tuple[str, datetime] | None:
        """Who may lease a row at insert, and until when (``outbox_repo.enqueue_leased``);
        None when this worker is not running, so cannot :meth:`take` it."""
        if self._running is None or self._stopping:
            return None
        return self.worker_id, now + timedelta(seconds=self.lease_seconds)

    def take(self, rows: Collection[OutboxRow]) -> None:
        """Send rows leased to us at insert, whose transaction has committed: no claim
        (its transaction and round trips) before the POST.  Not running any more: the
        leases expire and the rows are claimed again (at least once)."""
        if self._running is None:
            return
        for row in rows:
            self._start_send(row)

    async def stop(self) -> None:
        """Let the sends in flight finish and be recorded, then make ``run()`` return."""
        self._stopping = True
        self._wake.set()
        if self._running is not None:
            await asyncio.shield(self._running)

    async def run(self) -> None:
        """Send until :meth:`stop`. Database or programming errors are logged and retried.

        Sends are not done in rounds: a row is claimed as soon as it is due (on
        :meth:`wake`, when a send finishes, or every ``poll_seconds``), up to
        ``batch_size`` in flight, so a slow peer holds up only its own messages.
        Results that came in meanwhile are recorded, and the next due rows claimed,
        in one transaction.
        """
        if self._running is not None:
            raise RuntimeError("OutboxWorker.run() is already running")
        self._stopping = False
        self._running = asyncio.get_running_loop().create_future()
        in_flight = self._in_flight
        try:
            while True:
                self._wake.clear()
                done = {task for task in in_flight if task.done()}
                for task in done:
                    del in_flight[task]
                finished = _results(done)
                room = 0 if self._stopping else self.batch_size - len(in_flight)
                claimed: list[OutboxRow] = []
                if finished or room > 0:
                    claimed = await self._record_and_claim(
                        finished, room, sending=list(in_flight.values()))
                # A row taken (leased at insert) while this claim ran is being sent
                # already: a clock moved past its lease must not send it twice.
                taken = set(in_flight.values())
                for row in claimed:
                    if row.id not in taken:
                        self._start_send(row)
                if self._stopping and not in_flight:
                    break
                if claimed and len(claimed) == room:
                    continue  # probably more due
                try:
                    await asyncio.wait_for(self._wake.wait(), self.poll_seconds)
                except TimeoutError:
                    pass
        finally:
            for task in in_flight:
                task.cancel()  # only when cancelled: the leases expire, the rows go again
            in_flight.clear()
            running, self._running = self._running, None
            if not running.done():
                running.set_result(None)

    # ------------------------------------------------------------------ one round

    async def run_once(self) -> int:
        """Claim one batch of due rows, send them, record the results; returns how many."""
        rows = await self._record_and_claim([], self.batch_size)
        if not rows:
            return 0
        sends = {asyncio.create_task(self._send_timed(row)) for row in rows}
        await asyncio.wait(sends)
        await self._record_and_claim(_results(sends), 0)
        return len(rows)

    async def _record_and_claim(self, finished: list[_Sent], limit: int,
                                sending: Collection[int] = ()) -> list[OutboxRow]:
        """Record ``finished`` sends and lease up to ``limit`` due rows, in ONE transaction.

        Claiming after recording lets the next message of a request that was just
        marked sent go out at once. A failure loses only this transaction: the
        leases of its rows expire and they are sent again (at least once).
        """
        engine = self.engine if finished else self._claim_engine
        settled: dict[int, Exception | None] = {}
        tries = 0
        while True:
            results: list[str] = []
            try:
                async with engine.begin() as conn:
                    now = self.clock()
                    for sent in finished:
                        results.append(await self._record(conn, sent, now, settled))
                    await self._mark_sent(
                        conn, [s for s, result in zip(finished, results) if result == _SENT], now)
                    claimed = await outbox_repo.claim_due(
                        conn,
                        worker_id=self.worker_id,
                        now=now,
                        lease_seconds=self.lease_seconds,
                        limit=limit,
                        sending=sending,
                    )
                break
            except _Redo as redo:  # rolled back; at most once per row
                settled[redo.row_id] = redo.cause
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if db.retryable(exc, tries):
                    # Undone, or its connection dropped: recorded again, not sent again.
                    log.warning("outbox worker %s: recording failed, trying again: %s",
                                self.worker_id, str(exc).splitlines()[0])
                    await asyncio.sleep(db.RETRY_DELAYS[tries])
                    tries += 1
                    continue
                if not finished:
                    log.exception("outbox claim failed (worker %s)", self.worker_id)
                for sent in finished:
                    # The lease expires and the row is tried again; nothing is lost.
                    log.exception("outbox id=%s: recording the result failed", sent.row.id)
                return []
        for sent, result in zip(finished, results):
            self._log_send(sent, result)
        return claimed

    def _start_send(self, row: OutboxRow) -> None:
        task = asyncio.create_task(self._send_timed(row))
        task.add_done_callback(lambda _: self._wake.set())
        self._in_flight[task] = row.id

    async def _send_timed(self, row: OutboxRow) -> _Sent:
        started = time.perf_counter()
        outcome = await self._send(row)
        return _Sent(row, outcome, (time.perf_counter() - started) * 1000)

    def _log_send(self, sent: _Sent, result: str) -> None:
        row, outcome, ms = sent.row, sent.outcome, sent.ms
        log.info(
            "outbox send peer=%s kind=%s id=%s status=%s ms=%.1f result=%s",
            row.peer,
            row.kind,
            row.id,
            outcome.status if outcome.status is not None else "-",
            ms,
            result,
            extra={
                "peer": row.peer,
                "kind": row.kind,
                "outbox_id": row.id,
                "http_status": outcome.status,
                "ms": round(ms, 1),
                "result": result,
                "attempt": row.attempts + 1,
            },
        )

    async def _send(self, row: OutboxRow) -> _Outcome:
        headers = {"Content-Type": CONTENT_TYPE}
        extra: dict[str, Any] = {}
        try:
            if self.refresh is not None:
                row = self.refresh(row)
            url = row.url
            if self.headers_for is not None:
                headers.update(self.headers_for(row))
            if self.ssl_for is not None and url.lower().startswith("https:"):
                context = self.ssl_for(row)
                if context is not None:
                    extra["ssl"] = context
        except Exception as exc:  # a broken key or certificate: retried, and visible
            return _Outcome(None, b"", f"credentials for {row.peer}: {type(exc).__name__}",
                            reached=False)
        try:
            async with self.session.post(
                url,
                data=row.body,
                headers=headers,
                **extra,
                timeout=self._timeout,
                allow_redirects=False,
            ) as response:
                body = await response.read()
                status = response.status
                asked = response.headers.get("Retry-After")
        except (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError,
                aiohttp.InvalidURL, ConnectionRefusedError, ValueError) as exc:
            # No connection, so no request: the peer cannot have it.
            return _Outcome(None, b"", _error_text(exc), reached=False)
        except TimeoutError:
            return _Outcome(None, b"", f"timeout after {self.timeout_seconds:g}s")
        except (aiohttp.ClientError, OSError) as exc:  # reset, disconnected midway...
            return _Outcome(None, b"", _error_text(exc))
        if not 200 <= status < 300:
            snippet = body[:200].decode("utf-8", "replace")
            # A 5xx may come after the peer stored it; a 4xx is a refusal.
            return _Outcome(status, body, f"HTTP {status}: {snippet}", reached=status >= 500,
                            retry_after=retry_after(asked, self.clock()))
        if not body.strip():
            return _Outcome(status, body, f"HTTP {status} with an empty body (no confirmation)")
        return _Outcome(status, body, None)

    def backoff(self, attempts: int) -> float:
        """Seconds to wait after the ``attempts``-th failed attempt (1-based), with jitter."""
        base = min(
            self.max_backoff_seconds,
            self.initial_backoff_seconds * 2 ** max(0, attempts - 1),
        )
        return base * (1 + random.uniform(0, 0.1))

    async def _record(
        self, conn: AsyncConnection, sent: _Sent, now: datetime,
        settled: dict[int, Exception | None],
    ) -> str:
        """Write one send's result in the caller's transaction; returns what happened.

        A delivered row's ``on_delivered`` runs with no savepoint of its own (two
        round trips fewer each): if it raises, or our lease turns out lost, the
        whole transaction is redone with the row in ``settled`` (the exception, or
        None for the lease). "stale" means another worker took the row over: then
        nothing of ours is written and its result stands. ``_SENT`` rows are not
        written yet: :meth:`_mark_sent` marks them together.
        """
        row, outcome = sent.row, sent.outcome
        attempt = row.attempts + 1
        if (outcome.error is None or outcome.refusal) and row.id not in settled:
            try:
                result = await self._record_delivered(conn, row, outcome, now)
            except _LeaseLost:
                raise _Redo(row.id, None) from None
            except Exception as exc:
                log.exception("outbox id=%s: processing the confirmation failed", row.id)
                raise _Redo(row.id, exc) from exc
            # A 4xx is an answer only when it is an ERROR confirmation; else, as any
            # other failure, it is tried again (nothing was written for it).
            if outcome.error is None or result != _SENT:
                return result
        elif outcome.error is None:
            cause = settled[row.id]
            if cause is None:
                return "stale"
            # The peer has the message (2xx) but we could not process its answer.
            # Record it as sent (it was), flag the request for staff, keep the bug visible.
            if not await outbox_repo.mark_sent(
                conn,
                row.id,
                now=now,
                confirmation=outcome.body,
                http_status=outcome.status,
                worker_id=self.worker_id,
            ):
                return "stale"
            await self._flag(
                conn, row, now, "confirmation_error",
                {"error": f"{type(cause).__name__}: {cause}"[:_MAX_STORED_ERROR],
                 "http_status": outcome.status},
            )
            return "sent-unprocessed"

        if attempt >= self.max_attempts:
            if not await outbox_repo.mark_failed(
                conn,
                row.id,
                now=now,
                error=outcome.error,
                http_status=outcome.status,
                worker_id=self.worker_id,
                maybe_delivered=outcome.reached,
            ):
                return "stale"
            row = replace(row, maybe_delivered=row.maybe_delivered or outcome.reached)
            await self._flag(
                conn, row, now, "send_failed",
                {"error": outcome.error, "http_status": outcome.status},
            )
            if self.on_failed is not None:
                await self.on_failed(conn, row, outcome.error or "not delivered")
            return "failed"
        if not await outbox_repo.mark_retry(
            conn,
            row.id,
            now=now,
            error=outcome.error,
            next_attempt_at=now + timedelta(seconds=max(
                self.backoff(attempt), min(outcome.retry_after, self.max_backoff_seconds))),
            http_status=outcome.status,
            worker_id=self.worker_id,
            maybe_delivered=outcome.reached,
        ):
            return "stale"
        return "retry"

    async def _record_delivered(
        self, conn: AsyncConnection, row: OutboxRow, outcome: _Outcome, now: datetime
    ) -> str:
        """on_delivered, then the row's new state, or ``_SENT`` for :meth:`_mark_sent`
        to write (raises :class:`_LeaseLost`)."""
        verdict = None
        if self.on_delivered is not None:
            verdict = await self.on_delivered(conn, row, outcome.status, outcome.body)
        if verdict is not None and not verdict.ok:
            error = verdict.error or "peer answered with an ERROR confirmation"
            if not await outbox_repo.mark_failed(
                conn,
                row.id,
                now=now,
                error=error,
                http_status=outcome.status,
                confirmation=outcome.body,
                worker_id=self.worker_id,
            ):
                raise _LeaseLost()
            await self._flag(
                conn, row, now, "send_error",
                {"error": error, "http_status": outcome.status, **verdict.detail},
            )
            return "error-confirmation"
        return _SENT

    async def _mark_sent(
        self, conn: AsyncConnection, delivered: list[_Sent], now: datetime
    ) -> None:
        """Mark the round's delivered rows sent, in one statement (one round trip, not
        one per row). A row whose lease was lost meanwhile redoes the transaction
        with that row settled, as :meth:`_record` does for one row."""
        marked = await outbox_repo.mark_all_sent(
            conn,
            [outbox_repo.Delivery(s.row.id, s.outcome.status, s.outcome.body) for s in delivered],
            now=now,
            worker_id=self.worker_id,
        )
        for sent in delivered:
            if sent.row.id not in marked:
                raise _Redo(sent.row.id, None)

    async def _flag(
        self, conn: AsyncConnection, row: OutboxRow, now: datetime, event: str, detail: dict
    ) -> None:
        """History row (and needs_attention) for a message that did not go through."""
        if row.transaction_id is None:
            log.warning("outbox id=%s %s (no transaction): %s", row.id, event, detail)
            return
        await conn.execute(
            insert(history).values(
                transaction_id=row.transaction_id,
                at=now,
                actor=ACTOR,
                event=event,
                detail={
                    "outbox_id": row.id,
                    "peer": row.peer,
                    "kind": row.kind,
                    "attempts": row.attempts + 1,
                    **detail,
                },
            )
        )
        await conn.execute(
            update(transactions)
            .where(transactions.c.id == row.transaction_id)
            .values(
                needs_attention=True,
                updated_at=now,
                version=transactions.c.version + 1,  # the optimistic lock sees the change
            )
        )


__all__ = ["CONTENT_TYPE", "DeliveryVerdict", "OnDelivered", "OnFailed", "OutboxWorker", "utc_now"]
