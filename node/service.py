"""The service: where the pure machines meet the database, the outbox and the clock.

Every input (a partner's message, a staff action, a timer) is handled in ONE
database transaction: load the request's state, run the pure machine, then
write the new state, its history, the messages it sends (to the outbox, already
serialised for the partner's version) and its effects.  Only after the commit
does the confirmation leave or the staff API answer: nothing confirmed is lost.

Partners' messages share transactions (group commit): the HTTP handler checks a
message and queues it; one writer task stores everything queued in one
transaction, each message in its own SAVEPOINT (unless it is alone; the batch's
new requests share one, written a table at a time), commits once, and only then
answers each handler.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone
from typing import Any

import aiohttp
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from . import auth as peer_auth
from . import borrower, tls
from . import limits as node_limits
from .borrower import machine as bmachine
from .config import Closure, NodeConfig, Partner
from .liveness import WorkerLock
from .machine import Result, StaffActionError
from .outbox import DeliveryVerdict, OutboxWorker
from .protocol import confirm, reader, writer
from .protocol.codes import ErrorType, MessageStatus
from .protocol.errors import ProtocolError, UnrecognisedValue
from .protocol.messages import (
    AgencyId,
    BusinessMessage,
    Envelope,
    Request,
    RequestingAgencyMessage,
    SupplyingAgencyMessage,
)
from .protocol.safe_xml import parse_xml
from .store import auth_repo, db, outbox_repo, repo
from .supplier import machine as smachine
from .supplier.locate import LocateResult

log = logging.getLogger("node.messages")

Clock = Callable[[], datetime]

# Most partners' messages one transaction stores: bounds a batch's time, and so the
# wait of the last message in it.
MAX_BATCH = 200
# Event-loop rounds the writer lets run before taking a batch (see _write_inbound), by
# database: 8 gave SQLite the largest batches (bench/inbound.py: 1, 2, 3, 5, 8, 16
# tried; 16 doubled p99 at 500/s).  A batch on PostgreSQL is mostly round trips, each
# a wait for the loop's turn, and larger batches mean fewer waits a message: 16 gave
# a higher max rate and a lower p99 at 500/s (bench/RESULTS.md §1, 12-07 10:20-10:45).
ROUNDS_BEFORE_BATCH = {"sqlite": 8, "postgresql": 16}


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class NotFound(Exception):
    """No request with that id on this side."""


@dataclass(frozen=True, slots=True)
class _Inbound:
    """A partner's message, checked, waiting for the writer to store it."""

    message: BusinessMessage
    body: bytes
    sender: AgencyId
    now: datetime
    digest: str  # idempotency: see message_digest
    answer: bytes  # the OK confirmation, sent once the message is committed
    done: asyncio.Future  # the answer, or why the message could not be stored


@dataclass(slots=True)
class _Rows:
    """History, message-log and outbox rows, written together: one statement per table;
    outbox rows leased to our worker at insert apart (one statement each)."""

    history: list[dict] = field(default_factory=list)
    messages: list[dict] = field(default_factory=list)
    outbox: list[dict] = field(default_factory=list)  # for the worker to claim
    lease: bool = False  # lease outbox rows at insert: the caller hands them over (_send)
    leased: list[outbox_repo.OutboxRow] = field(default_factory=list)
    unleased: int = 0  # queued for the worker to claim

    def extend(self, other: _Rows) -> None:
        self.history.extend(other.history)
        self.messages.extend(other.messages)
        self.outbox.extend(other.outbox)
        self.leased.extend(other.leased)
        self.unleased += other.unleased


@dataclass(frozen=True, slots=True)
class _BatchReads:
    """What a batch read before storing its messages (Node._read_for_batch)."""

    closures: dict[str, Closure]
    # digest -> the answer already given to that message: stored, or (the batch adds
    # them) earlier in this batch
    answered: dict[str, bytes]
    found: dict[int, LocateResult]  # id() of each request of the batch -> auto-locate's

    def located(self, request: Request) -> LocateResult:
        return self.found[id(request)]  # the batch holds its messages: ids stay theirs


class _TogetherFailed(Exception):
    """Storing a batch's new requests together, with no SAVEPOINT, failed: the whole
    transaction is undone and the batch is stored one by one."""


@dataclass(frozen=True, slots=True)
class Side:
    """What differs between the lending and the borrowing side of the service."""

    role: str
    machine: Any
    state_type: type


LENDING = Side("lending", smachine, smachine.LendingTransaction)
BORROWING = Side("borrowing", bmachine, bmachine.BorrowingRequest)
SIDES = {s.role: s for s in (LENDING, BORROWING)}


class Node:
    """One running node: its configuration, database, outbox and clock."""

    def __init__(
        self,
        config: NodeConfig,
        *,
        engine: AsyncEngine | None = None,
        clock: Clock = utcnow,
        worker_id: str | None = None,
        timer_interval_seconds: float = 15.0,
    ):
        self.config = config
        self.engine = engine
        self.clock = clock
        self._config_since = clock()  # outbox rows queued before: see _as_configured
        self.worker_id = worker_id or f"node-{secrets.token_hex(4)}"
        self.client_tls = tls.client_context(config.node)  # for HTTPS partners
        self.server_tls = tls.ServerTLS.of(config.node)  # the listener's, when HTTPS
        self.worker_lock: WorkerLock | None = None  # PostgreSQL: see node/liveness.py
        self.session: aiohttp.ClientSession | None = None
        self.outbox: OutboxWorker | None = None
        self._outbox_task: asyncio.Task | None = None
        self._scheduler = None
        self._timer_jobs: set[asyncio.Task] = set()  # timer ticks running now (scheduler.py)
        self._owns_engine = engine is None
        self._read_engine: AsyncEngine | None = None
        self._autocommit: tuple[AsyncEngine, AsyncEngine] | None = None  # see _apart
        self.timer_interval_seconds = timer_interval_seconds
        self._inbox: asyncio.Queue[_Inbound] | None = None  # partners' messages for the writer
        self._writer_task: asyncio.Task | None = None

    @property
    def read_engine(self) -> AsyncEngine:
        """Staff reads (lists, search, views): off the writer's connection on a SQLite
        file (:func:`node.store.db.create_read_engine`); the engine before start()."""
        return self._read_engine or self.engine

    @property
    def symbol(self) -> AgencyId:
        return AgencyId.parse(str(self.config.node.symbol))

    # -- lifecycle ---------------------------------------------------------------

    async def start(self) -> None:
        if self.engine is None:
            self.engine = db.create_engine(self.config.node.database_url)
        await db.check_migrated(self.engine)
        self._read_engine = db.create_read_engine(self.engine)
        async with self.engine.begin() as conn:
            await repo.seed_closures(conn, self.config, now=self.clock())
            if self.engine.dialect.name == "sqlite":
                # One node process per SQLite file: claims left by a killed process
                # are stale; its messages go out now, as maybe sent already.
                await outbox_repo.release_leases(conn)
        if self.engine.dialect.name == "postgresql":
            # Held before our worker leases a row; the sweep (here, then with the
            # timers) sends at once what a worker gone had leased (node/liveness.py).
            self.worker_lock = WorkerLock(self.engine, self.worker_id)
            await self.worker_lock.sweep(self.clock())
        self.session = aiohttp.ClientSession()
        cfg = self.config.outbox
        self.outbox = OutboxWorker(
            self.engine,
            self.session,
            worker_id=self.worker_id,
            timeout_seconds=cfg.timeout_seconds,
            max_attempts=cfg.max_attempts,
            initial_backoff_seconds=cfg.initial_backoff_seconds,
            max_backoff_seconds=cfg.max_backoff_seconds,
            poll_seconds=cfg.poll_seconds,
            on_delivered=self._on_delivered,
            on_failed=self._on_send_failed,
            headers_for=lambda row: peer_auth.outgoing_headers(self.config, row.peer, row.body),
            ssl_for=lambda row: self.client_tls,
            refresh=self._as_configured,
            clock=self.clock,
            # A send cannot outlive its HTTP timeout; a dead worker's claims expire soon after.
            lease_seconds=cfg.timeout_seconds + 10,
        )
        self._outbox_task = asyncio.create_task(self.outbox.run(), name="outbox")
        from .scheduler import start_scheduler

        self._scheduler = start_scheduler(self)

    async def stop(self) -> None:
        if self._writer_task is not None:
            self._writer_task.cancel()
            await asyncio.gather(self._writer_task, return_exceptions=True)
            self._writer_task = None
        if self._scheduler is not None:
            self._scheduler.shutdown(wait=False)
            self._scheduler = None
        # A tick still running must finish before the engine goes (else its
        # connection is closed under it and the event loop cannot shut down).
        await asyncio.gather(*self._timer_jobs, return_exceptions=True)
        if self.outbox is not None:
            await self.outbox.stop()
        if self._outbox_task is not None:
            await asyncio.gather(self._outbox_task, return_exceptions=True)
            self._outbox_task = None
            await self._hand_over_leases()
        if self.worker_lock is not None:
            await self.worker_lock.release()
            self.worker_lock = None
        if self.session is not None:
            await self.session.close()
            self.session = None
        if self._read_engine is not None:
            await db.dispose_read_engine(self._read_engine, self.engine)
        self._read_engine = None
        if self.engine is not None and self._owns_engine:
            await self.engine.dispose()
            self.engine = None

    def _as_configured(self, row: outbox_repo.OutboxRow) -> outbox_repo.OutboxRow:
        """An outbox row as its partner's configuration now says it goes: to its
        address now (a partner that moved, and was reloaded, gets its queued messages
        there); and, queued before this configuration was loaded (a reload, a restart),
        written again if the partner's ISO 18626 version or the credentials we give it
        have changed since: a partner that upgraded while our messages waited for it
        gets them as it now reads them."""
        partner = self.config.partner(row.peer)
        if partner is None:
            return row
        body = row.body
        if row.created_at < self._config_since:
            try:
                body = _written_for(partner, row.body)
            except Exception:  # a rewrite must never hold a message back: sent as queued
                log.exception("outbox id=%s not rewritten for %s", row.id, row.peer)
        if partner.url == row.url and body is row.body:
            return row
        return replace(row, url=partner.url, body=body)

    async def _hand_over_leases(self) -> None:
        """Rows still leased to our stopped worker were never sent (leased at insert as
        it stopped): another worker, or our next start, sends them now, not once the
        lease runs out."""
        try:
            async with self.engine.begin() as conn:
                released = await outbox_repo.release_leases(conn, of=self.worker_id,
                                                              unsent=True)
        except Exception:  # the database away: the leases run out instead
            log.exception("outbox leases of worker %s not released", self.worker_id)
            return
        if released:
            log.info("outbox: %d unsent message(s) left to the next worker", released)

    async def reload(self, config: NodeConfig) -> list[str]:
        """Take a new configuration (SIGHUP or the admin API): partners, closures,
        policies, certificates. Returns what could not be applied without a restart."""
        previous, notes = self.config, []
        self.config, self._config_since = config, self.clock()
        try:
            self.client_tls = tls.client_context(config.node)
        except (OSError, tls.Encrypted) as exc:  # a file changed since it was checked
            notes.append(f"client certificate not reloaded: {exc}")
        if self.server_tls is not None:
            if note := self.server_tls.reload(config.node):
                notes.append(note)
        elif config.node.tls_cert is not None:
            notes.append("tls_cert and tls_key added: HTTPS is served once the node is restarted")
        async with self.engine.begin() as conn:
            await repo.seed_closures(conn, config, now=self.clock(), previous=previous)
        for note in notes:
            log.warning("reload: %s", note)
        log.info("configuration reloaded from %s", config.source_path)
        return notes

    async def health(self) -> dict[str, Any]:
        try:
            async with self.engine.connect() as conn:
                pending = await repo.outbox_pending(conn)
            return {"status": "ok", "symbol": str(self.config.node.symbol),
                    "outbox_pending": pending, "worker": self.worker_id}
        except Exception as exc:  # health must answer, whatever is wrong
            return {"status": "error", "error": str(exc), "worker": self.worker_id}

    def _wake_outbox(self) -> None:
        if self.outbox is not None:
            self.outbox.wake()

    def _send(self, rows: _Rows) -> None:
        """After the COMMIT that stored ``rows``: send the outbox rows leased to our
        worker at insert, and wake it for the others."""
        if rows.leased:
            self.outbox.take(rows.leased)
        if rows.unleased:
            self._wake_outbox()

    # -- incoming ISO 18626 messages -------------------------------------------

    async def receive(self, body: bytes, *, peer_address: str | None = None,
                      headers=None, peer_cert: bytes | None = None) -> bytes:
        """Handle one POSTed message; return the confirmation to send back.

        ``headers`` / ``peer_cert`` (the TLS client certificate, DER) are what
        the partner's checks need; raises ``auth.AuthenticationFailed`` (401)
        or ``limits.RateLimited`` (429) before anything is stored."""
        started = time.perf_counter()
        now = self.clock()
        limits = self.config.limits
        try:
            envelope = reader.parse(
                body, max_bytes=limits.max_body_bytes, max_depth=limits.max_xml_depth
            )
        except ProtocolError as exc:
            answer = confirm.error_confirmation_from_bytes(body, exc, now=now)
            self._log_in(None, None, exc, started, peer_address)
            return writer.serialise(answer)
        message = envelope.message
        if not isinstance(message, (Request, SupplyingAgencyMessage, RequestingAgencyMessage)):
            exc = ProtocolError(
                ErrorType.BADLY_FORMED_MESSAGE,
                f"{message.KIND} is an answer, not a message: confirmations travel in the "
                "HTTP response to the message they confirm",
            )
            answer = confirm.error_confirmation_from_bytes(body, exc, now=now)
            self._log_in(envelope, None, exc, started, peer_address)
            return writer.serialise(answer)
        try:
            answer = await self._receive_business(
                envelope, body, now, credentials=peer_auth.Credentials(headers or {}, peer_cert))
        except ProtocolError as exc:
            conf = confirm.confirmation_for(message, now=now, error=exc)
            self._log_in(envelope, None, exc, started, peer_address)
            return writer.serialise(Envelope(version=envelope.version, message=conf))
        self._log_in(envelope, MessageStatus.OK, None, started, peer_address)
        return answer

    async def _receive_business(self, envelope: Envelope, body: bytes, now: datetime,
                                credentials=None) -> bytes:
        """Check a partner's message, then hand it to the writer; its answer comes back
        once the message is committed."""
        message: BusinessMessage = envelope.message
        sender, partner = self._check_addressing(message)
        # Issue 7: the partner's checks, then its allowance; nothing stored yet.
        peer_auth.authenticate(partner, message, body, credentials or peer_auth.Credentials())
        node_limits.rate_limiter_for(self).hit(str(partner.symbol),
                                               self.config.limits.partner_requests_per_minute)
        inbound = _Inbound(
            message=message, body=body, sender=sender, now=now,
            digest=message_digest(sender, message, body),
            answer=confirm.ok_confirmation(message, now=now, version=envelope.version),
            done=asyncio.get_running_loop().create_future(),
        )
        self._writer_inbox().put_nowait(inbound)
        return await inbound.done

    def _writer_inbox(self) -> asyncio.Queue[_Inbound]:
        # Started by the first message, not by start(): tools and tests call receive()
        # on a Node they never start.
        if self._writer_task is None:
            self._inbox = asyncio.Queue()
            self._writer_task = asyncio.create_task(self._write_inbound(self._inbox),
                                                    name="inbound-writer")
        return self._inbox

    async def _write_inbound(self, inbox: asyncio.Queue[_Inbound]) -> None:
        """The one writer of partners' messages: whatever waits is stored in ONE
        transaction (group commit), so a busy node commits once for many messages."""
        batch: list[_Inbound] = []
        try:
            while True:
                batch = [await inbox.get()]
                # Let the loop run a few rounds first: the requests whose bytes came in
                # while the last batch was written need some (the socket read,
                # aiohttp's handler task, parsing) to reach the inbox.  Taken at once,
                # a batch left them to the next one: small batches, each paying the
                # whole fixed cost of a cycle (bench/RESULTS.md §1).  A quiet node
                # loses ~0.1 ms (SQLite) or ~0.2 ms (PostgreSQL).
                for _ in range(ROUNDS_BEFORE_BATCH[self.engine.dialect.name]):
                    await asyncio.sleep(0)
                while len(batch) < MAX_BATCH and not inbox.empty():
                    batch.append(inbox.get_nowait())
                await self._store_batch(batch)
                batch = []
        finally:  # stopping: what is not committed is not confirmed
            while not inbox.empty():
                batch.append(inbox.get_nowait())
            for inbound in batch:
                inbound.done.cancel()

    async def _store_batch(self, batch: list[_Inbound], *, together: bool = True,
                           again: bool = True, tries: int = 0) -> None:
        """Store a batch in arrival order, commit once, then answer each message.
        Nothing is confirmed before the COMMIT that stores it.  ``together``: its new
        requests may be stored together (:meth:`_store_new_requests`).  ``again``: if
        another process stored one of its messages meanwhile (PostgreSQL), the batch is
        stored once more, and that message gets the answer stored with it.  A batch the
        database undid, or whose connection it dropped (:func:`db.transient`), is
        stored again, ``tries`` counting, rather than every partner in it told 503."""
        outcomes: list[bytes | Exception] = []
        try:
            async with self.engine.begin() as conn:
                # Read once per batch, first: no partner's message changes a closure.
                reads = await self._read_for_batch(conn, batch)
                # A message alone (a quiet node) needs no SAVEPOINT (two round trips
                # fewer): its failure rolls back the whole transaction, which stores
                # nothing else; and its answers go out leased at insert.  A busy node's
                # batch leaves its answers to the worker's claims, at most batch_size
                # sends at a time.
                alone = len(batch) == 1
                rows = _Rows(lease=alone)  # of the messages stored, one statement per table
                done: dict[int, bytes | Exception] = {}
                if together and not alone:
                    await self._store_new_requests(conn, batch, reads, rows, done)
                for n, inbound in enumerate(batch):
                    if n in done:
                        continue
                    try:
                        done[n] = await self._store_one(
                            conn, inbound, reads, rows, savepoint=not alone)
                    except Exception as exc:  # this message only: its savepoint is undone
                        # ...unless the server undid it (a deadlock): the batch's other
                        # locks may be in the cycle, so the whole batch goes again.
                        if alone or db.retryable(exc, tries):
                            raise
                        done[n] = exc
                outcomes = [done[n] for n in range(len(batch))]
                await _write(conn, rows)
        except _TogetherFailed:
            log.exception("storing %d new requests together failed: one by one now", len(batch))
            return await self._store_batch(batch, together=False, again=again, tries=tries)
        except Exception as exc:  # nothing of the batch is stored (e.g. the COMMIT failed)
            if db.retryable(exc, tries):
                log.warning("storing a batch of %d messages failed, trying again: %s",
                            len(batch), str(exc).splitlines()[0])
                await asyncio.sleep(db.RETRY_DELAYS[tries])
                return await self._store_batch(batch, together=together, again=again,
                                               tries=tries + 1)
            # A digest of the batch stored meanwhile by another process (PostgreSQL):
            # its unique index refused the batch's write, or, alone, its machine the
            # message (a request id taken...).
            if again and isinstance(exc, (IntegrityError, ProtocolError)) and (
                    self._shared_store) and await self._stored_elsewhere(batch):
                log.info("a message of a batch of %d was stored meanwhile by another process:"
                         " storing the batch again", len(batch))
                return await self._store_batch(batch, together=together, again=False,
                                               tries=tries)
            outcomes = [exc] * len(batch)
        else:
            self._send(rows)
        for inbound, outcome in zip(batch, outcomes):
            if inbound.done.done():  # its handler is gone
                continue
            if isinstance(outcome, Exception):
                inbound.done.set_exception(outcome)
            else:
                inbound.done.set_result(outcome)

    async def _read_for_batch(self, conn: AsyncConnection, batch: list[_Inbound]
                              ) -> _BatchReads:
        """What ``batch`` needs read before it is stored: the closures, the answers
        already given to its messages, the holdings its requests may be located in.

        On PostgreSQL the three queries run at once, the last two on connections of
        their own: each query is a round trip after which the writer waits its turn
        behind the HTTP handlers, most of a busy batch's time (bench/RESULTS.md §1).
        Read outside the batch's transaction, they see what it would see (READ
        COMMITTED: each statement reads what is committed when it starts, and the
        batch has written nothing yet); the closures are read on the batch's own
        connection, so that its BEGIN goes meanwhile."""
        requests = [inbound.message for inbound in batch if isinstance(inbound.message, Request)]
        digests = [inbound.digest for inbound in batch]
        locate = functools.partial(repo.locate_many, requests=requests,
                                   policy=self.config.lending, our_symbol=self.symbol)
        if self._shared_store:
            async def apart(read):
                async with self._apart.connect() as other:
                    return await read(other)

            async def located():  # a batch of answers to our requests has nothing to locate
                return await apart(locate) if requests else []

            # All done before any failure goes on: the batch's connection is rolled
            # back then, which cannot be while its query runs.
            done = await asyncio.gather(
                repo.closures(conn, self.config),
                apart(functools.partial(repo.confirmations_for_digests, digests=digests)),
                located(), return_exceptions=True)
            for outcome in done:
                if isinstance(outcome, BaseException):
                    raise outcome
            closures, answered, found = done
        else:  # SQLite: no round trips to save, and one writer's connection
            closures = await repo.closures(conn, self.config)
            answered = await repo.confirmations_for_digests(conn, digests)
            found = await locate(conn)
        return _BatchReads(closures, answered, dict(zip(map(id, requests), found, strict=True)))

    @property
    def _apart(self) -> AsyncEngine:
        """The engine for a batch's reads apart (:meth:`_read_for_batch`): no BEGIN nor
        ROLLBACK around a read, two round trips fewer.  Built once per engine, not per
        batch (the engine may be set after __init__)."""
        if self._autocommit is None or self._autocommit[0] is not self.engine:
            self._autocommit = (self.engine,
                                self.engine.execution_options(isolation_level="AUTOCOMMIT"))
        return self._autocommit[1]

    @property
    def _shared_store(self) -> bool:
        """Whether other node processes may store partners' messages in our database
        (PostgreSQL); a SQLite file has one node process, whose one writer sees all."""
        return self.engine.dialect.name == "postgresql"

    async def _stored_elsewhere(self, batch: list[_Inbound]) -> bool:
        """Whether a message of ``batch`` is stored now (by another process)."""
        try:
            async with self.engine.connect() as conn:
                return bool(await repo.confirmations_for_digests(
                    conn, [inbound.digest for inbound in batch]))
        except Exception:  # the database is down: the batch fails as it would have
            log.exception("looking up a failed batch's messages failed")
            return False

    async def _store_one(self, conn: AsyncConnection, inbound: _Inbound, reads: _BatchReads,
                         rows: _Rows, *, savepoint: bool) -> bytes:
        """One message of a batch, in its own SAVEPOINT if ``savepoint`` so that its
        failure undoes only itself; its log and history rows go to ``rows``."""
        stored = reads.answered.get(inbound.digest)
        if stored is not None:
            return stored  # the same message again: same answer, no change
        received = _received_row(inbound)
        answer = inbound.answer
        try:
            if savepoint:
                own = _Rows(lease=rows.lease)
                async with conn.begin_nested():
                    await self._dispatch(conn, inbound.message, inbound.now, reads,
                                         received, own)
                rows.extend(own)
            else:
                await self._dispatch(conn, inbound.message, inbound.now, reads, received, rows)
        except ProtocolError:
            # Refused, its savepoint undone, unless this very message was stored meanwhile
            # by another process (PostgreSQL): then the first copy's answer.  (Alone, with
            # no savepoint, _store_batch looks, and stores it again.)
            stored = await repo.confirmations_for_digests(conn, [inbound.digest]) if (
                savepoint and self._shared_store) else None
            if not stored:
                raise
            answer = stored[inbound.digest]
        reads.answered[inbound.digest] = answer
        return answer

    def _check_addressing(self, message: BusinessMessage):
        """The message must name us, and come from a partner we know."""
        header = message.header
        if isinstance(message, SupplyingAgencyMessage):
            sender, receiver, ours = header.supplying_agency_id, header.requesting_agency_id, (
                "requestingAgencyId")
        else:
            sender, receiver, ours = header.requesting_agency_id, header.supplying_agency_id, (
                "supplyingAgencyId")
        if receiver is None or not self.symbol.same_agency(receiver):
            raise UnrecognisedValue(
                f"header/{ours}: {receiver} is not this node ({self.symbol})"
            )
        if sender is None:
            raise UnrecognisedValue("header: the sender's agency id is missing")
        partner = self.config.partner(str(sender))
        if partner is None:
            raise UnrecognisedValue(
                f"header: agency {sender} is not a partner of {self.symbol}"
            )
        reader.check_ids(message)  # empty or over-long ids
        return sender, partner

    async def _dispatch(self, conn: AsyncConnection, message: BusinessMessage, now,
                        reads: _BatchReads, received: dict, rows: _Rows) -> None:
        """Run a partner's message through its machine.  ``received``: the message's log
        row; it and the result's rows go to ``rows``."""
        header = message.header
        if isinstance(message, Request):
            return await self._receive_request(conn, message, now, reads, received, rows)
        if isinstance(message, RequestingAgencyMessage):
            row = await repo.lock_transaction(
                conn, role="lending", requesting_agency_id=str(header.requesting_agency_id),
                requesting_request_id=header.requesting_agency_request_id,
            )
            if row is None:
                raise UnrecognisedValue(
                    f"header/requestingAgencyRequestId: no request "
                    f"{header.requesting_agency_request_id!r} from {header.requesting_agency_id}"
                )
            state = LENDING.state_type.from_json(row.state)
            ctx = self._lending_context(row.partner, reads.closures["lending"], now)
            result = LENDING.machine.receive_action(state, message, ctx=ctx)
            await self._apply(conn, LENDING, row.id, result, actor=f"peer:{row.partner}", now=now,
                              received=received, rows=rows)
            return None
        # SupplyingAgencyMessage: an answer about one of our borrowing attempts.
        row = await repo.lock_borrowing_by_attempt(conn, header.requesting_agency_request_id)
        if row is not None:  # issue 7: only the partner the attempt went to may answer it
            owner = await auth_repo.attempt_partner(conn, header.requesting_agency_request_id)
            if owner is None or not AgencyId.parse(owner).same_agency(header.supplying_agency_id):
                row = None
        if row is None:
            raise UnrecognisedValue(
                f"header/requestingAgencyRequestId: {header.requesting_agency_request_id!r} "
                "is not a request of ours"
            )
        state = BORROWING.state_type.from_json(row.state)
        ctx = await self._borrowing_context(conn, now, reads.closures)
        result = BORROWING.machine.receive(state, message, ctx=ctx)
        sender = str(header.supplying_agency_id)
        await self._apply(conn, BORROWING, row.id, result, actor=f"peer:{sender}", now=now,
                          received=received, rows=rows)
        return None

    async def _receive_request(self, conn: AsyncConnection, message: Request, now,
                               reads: _BatchReads, received: dict, rows: _Rows) -> None:
        header = message.header
        requester = str(header.requesting_agency_id)
        actor = f"peer:{requester}"
        closure = reads.closures["lending"]
        located = None
        if not closure.applies_on(now.date()):
            located = reads.located(message)
        result = self._answer_request(message, now, closure, located)
        tx_id = await repo.insert_transaction(conn, _lending_row(message, result, now),
                                              if_new=True)
        if tx_id is not None:
            await self._apply(conn, LENDING, tx_id, result, actor=actor, now=now, inserted=True,
                              received=received, rows=rows)
            return None
        # The unique (agency, request id) says the id is taken: the machine decides
        # whether this is the same request again, a Retry that may reuse it, or neither.
        existing = await repo.lock_transaction(
            conn, role="lending", requesting_agency_id=requester,
            requesting_request_id=header.requesting_agency_request_id,
        )
        if existing is None:  # the row holding it is gone meanwhile
            raise UnrecognisedValue(
                f"header/requestingAgencyRequestId: {header.requesting_agency_request_id!r} "
                f"already exists (a different request from {requester} has that id)"
            )
        previous = LENDING.state_type.from_json(existing.state)
        result = self._answer_request(message, now, closure, located, previous=previous)
        await self._apply(conn, LENDING, existing.id, result, actor=actor, now=now,
                          received=received, rows=rows)
        return None

    def _answer_request(self, message: Request, now, closure, located, previous=None) -> Result:
        ctx = self._lending_context(str(message.header.requesting_agency_id), closure, now)
        return LENDING.machine.receive_request(message, ctx=ctx, located=located,
                                               previous=previous)

    async def _store_new_requests(self, conn: AsyncConnection, batch: list[_Inbound],
                                  reads: _BatchReads, rows: _Rows,
                                  outcomes: dict[int, bytes]) -> None:
        """The new requests of a busy node's batch, stored together (in one SAVEPOINT,
        unless the batch holds nothing else): one INSERT of their states, their log,
        history and outbox rows with the batch's (a few statements for the lot, not
        several each), all located by the batch's one query (:meth:`_read_for_batch`).
        Those stored get their answer in ``outcomes`` (by position in ``batch``); the
        rest (an id already taken, as by a Retry; a request the machine refuses; all of
        them if storing them together fails) are left to the one-by-one way, which says
        why."""
        fresh: dict[int, _Inbound] = {}
        keys = set()
        for n, inbound in enumerate(batch):
            message = inbound.message
            if not isinstance(message, Request) or inbound.digest in reads.answered:
                continue
            key = (repo.agency_key(message.header.requesting_agency_id),
                   message.header.requesting_agency_request_id)
            if key not in keys:  # the same id twice: the second goes one by one
                keys.add(key)
                fresh[n] = inbound
        if len(fresh) < 2:
            return
        own = _Rows()
        stored: dict[int, bytes] = {}
        # Nothing else in the transaction: no SAVEPOINT (two statements fewer); a failure
        # then undoes the whole transaction, and _store_batch starts it again.
        alone = len(fresh) == len(batch)
        try:
            async with contextlib.nullcontext() if alone else conn.begin_nested():
                await self._receive_new_requests(conn, fresh, reads, own, stored)
        except Exception as exc:
            if alone:
                raise _TogetherFailed from exc
            log.exception("storing %d new requests together failed: one by one now", len(fresh))
            return
        rows.extend(own)
        outcomes.update(stored)
        reads.answered.update((fresh[n].digest, answer) for n, answer in stored.items())

    async def _receive_new_requests(self, conn: AsyncConnection, fresh: dict[int, _Inbound],
                                    reads: _BatchReads, rows: _Rows, stored: dict[int, bytes]
                                    ) -> None:
        closure = reads.closures["lending"]
        open_ = [n for n, i in fresh.items() if not closure.applies_on(i.now.date())]
        located = {n: reads.located(fresh[n].message) for n in open_}
        answers: dict[int, Result] = {}
        for n, inbound in fresh.items():
            try:
                answers[n] = self._answer_request(inbound.message, inbound.now, closure,
                                                  located.get(n))
            except ProtocolError:
                continue  # the one-by-one way answers it with this error
        ids = await repo.insert_new_transactions(conn, [
            _lending_row(fresh[n].message, result, fresh[n].now) for n, result in answers.items()])
        for n, result in answers.items():
            tx_id = ids.get(result.state.supplying_request_id)
            if tx_id is None:
                continue  # the id is taken
            inbound = fresh[n]
            await self._apply(conn, LENDING, tx_id, result, now=inbound.now,
                              actor=f"peer:{inbound.message.header.requesting_agency_id}",
                              inserted=True, received=_received_row(inbound), rows=rows)
            stored[n] = inbound.answer

    # -- contexts ----------------------------------------------------------------

    def _lending_context(self, partner_symbol: str | None, closure: Closure, now):
        return smachine.LendingContext(
            our_symbol=self.symbol,
            policy=self.config.lending,
            closure=closure,
            partner=self.config.partner(partner_symbol) if partner_symbol else None,
            now=now,
        )

    async def _borrowing_context(self, conn: AsyncConnection, now, closures):
        return bmachine.BorrowingContext(
            our_symbol=self.symbol,
            policy=self.config.borrowing,
            closure=closures["borrowing"],
            partners=self.config.partners_by_symbol,
            closed_partners=await repo.partner_closures(conn, today=now.date()),
            now=now,
            rotas=self.config.rotas,  # a re-request may name a rota
        )

    async def _context(self, conn, side: Side, row, now):
        closures = await repo.closures(conn, self.config)
        if side is LENDING:
            return self._lending_context(row.partner, closures["lending"], now)
        return await self._borrowing_context(conn, now, closures)

    # -- applying a machine's result ------------------------------------------

    async def _apply(
        self,
        conn: AsyncConnection,
        side: Side,
        tx_id: int,
        result: Result,
        *,
        actor: str,
        now: datetime,
        inserted: bool = False,
        received: dict | None = None,
        rows: _Rows | None = None,
    ) -> None:
        """Write a machine's result: the new state (unless ``inserted`` with it just
        now), its history, the messages it sends and its effects.  ``received``: the
        log row of the partner's message it answers.  ``rows``: leave the history and
        log rows there for the caller to write (a batch at a time)."""
        state = result.state
        if not inserted:
            await repo.save_state(conn, tx_id, state, now=now,
                                  next_timer_at=_next_timer(side, state))
        out = rows if rows is not None else _Rows()
        if received is not None:
            out.messages.append(dict(received, transaction_id=tx_id))
        out.history.extend(repo.history_rows(tx_id, result.history, actor=actor, now=now))
        for message in result.send:
            await self._queue(conn, tx_id, message, now, rows=out)
        for effect in result.effects:
            out.history.append(await repo.apply_effect(conn, tx_id, effect, now=now))
        if rows is None:
            await _write(conn, out)

    async def _queue(self, conn: AsyncConnection, tx_id: int, message: BusinessMessage, now,
                     *, rows: _Rows) -> None:
        """Serialise ``message`` for its partner and queue it in the outbox; its log row
        goes to ``rows``, or a note that it cannot be sent."""
        header = message.header
        peer = header.requesting_agency_id if isinstance(message, SupplyingAgencyMessage) else (
            header.supplying_agency_id)
        partner = self.config.partner(str(peer))
        if partner is None:
            rows.history.append(repo.history_row(
                tx_id, event="send_failed", actor="system", now=now,
                summary=f"{peer} is not a configured partner: {message.KIND} not sent",
            ))
            return
        message, body = _addressed(message, partner)
        if isinstance(message, Request):
            await repo.add_attempt(conn, tx_id, partner=str(partner.symbol),
                                   requesting_request_id=header.requesting_agency_request_id,
                                   now=now)
        rows.messages.append(dict(repo.message_row(
            direction="out", message=message, raw=body, peer=str(partner.symbol), now=now,
        ), transaction_id=tx_id))
        lease = self.outbox.lease(now) if rows.lease and self.outbox is not None else None
        if lease is None:
            rows.outbox.append(outbox_repo.outbox_row(
                transaction_id=tx_id, peer=str(partner.symbol), url=partner.url,
                kind=message.KIND, body=body, now=now))
            rows.unleased += 1
            return
        worker_id, until = lease
        queued = await outbox_repo.enqueue_leased(
            conn, transaction_id=tx_id, peer=str(partner.symbol), url=partner.url,
            kind=message.KIND, body=body, now=now, worker_id=worker_id, until=until)
        if queued.locked_by is None:
            rows.unleased += 1
        else:
            rows.leased.append(queued)

    async def _on_delivered(self, conn: AsyncConnection, row, http_status: int, body: bytes):
        """The outbox got a 2xx, or a 4xx with a body: read the partner's confirmation
        (lenient) and record it; None when it is no ERROR confirmation."""
        try:
            root = parse_xml(body)
            if reader.is_ok_confirmation(root):
                return None
            conf = reader.parse_element(root).message
            status = conf.confirmation_header.message_status
        except (ProtocolError, AttributeError):
            return None  # not a confirmation we can read: delivered is all we know
        if status is MessageStatus.OK:
            return None
        errors = "; ".join(
            f"{e.error_type.value}: {e.error_value or ''}".strip() for e in conf.error_data
        ) or "ERROR without errorData"
        if row.transaction_id is not None:
            await self._delivery_failed(conn, row, errors)
        return DeliveryVerdict.rejected(f"{row.peer} answered ERROR: {errors}")

    async def _delivery_failed(self, conn, sent, error: str) -> None:
        """A partner refused (or never took) the outbox row ``sent``: tell the borrowing
        machine, and whether an earlier attempt may have reached the partner."""
        now = self.clock()
        tx_id = sent.transaction_id
        row = await repo.lock_transaction_by_id(conn, tx_id)
        if row is None or row.role != "borrowing":
            return
        state = BORROWING.state_type.from_json(row.state)
        ctx = await self._borrowing_context(conn, now, await repo.closures(conn, self.config))
        result = BORROWING.machine.delivery_failed(state, kind=sent.kind, error=error, ctx=ctx,
                                                   maybe_delivered=sent.maybe_delivered)
        await self._apply(conn, BORROWING, tx_id, result, actor="system", now=now)

    async def _on_send_failed(self, conn, row, error: str) -> None:
        """The outbox gave up on a message (max attempts): the rota moves on, unless an
        attempt may have reached the lender (see the borrowing machine)."""
        if row.transaction_id is not None:
            await self._delivery_failed(conn, row, error)

    # -- staff actions ---------------------------------------------------------

    async def staff_action(
        self, role: str, public_id: str, action: dict[str, Any], *, actor: str
    ) -> dict[str, Any]:
        """Run one staff action on a request; return the request as the API shows it."""
        side = SIDES[role]
        now = self.clock()
        async with self.engine.begin() as conn:
            row = await repo.lock_transaction_by_public_id(conn, role, public_id)
            if row is None:
                raise NotFound(f"no {role} request {public_id}")
            state = side.state_type.from_json(row.state)
            parsed = side.machine.StaffAction.from_json(action)
            ctx = await self._context(conn, side, row, now)
            result = side.machine.staff(state, parsed, ctx=ctx)
            rows = _Rows(lease=True)
            await self._apply(conn, side, row.id, result, actor=actor, now=now, rows=rows)
            await _write(conn, rows)
            view = await repo.request_view(conn, row.id)
        self._send(rows)
        return view

    async def create_borrowing(self, data: dict[str, Any], *, actor: str) -> dict[str, Any]:
        """Create a borrowing request from the staff or patron form; send it to the rota."""
        now = self.clock()
        async with self.engine.begin() as conn:
            ctx = await self._borrowing_context(conn, now, await repo.closures(conn, self.config))
            if ctx.closure.applies_on(now.date()):
                raise StaffActionError(
                    f"{ctx.closure.describe('Borrowing')}: new requests cannot be created"
                )
            form = borrower.form.parse_form(
                data, policy=self.config.borrowing,
                partners=self.config.partners_by_symbol, rotas=self.config.rotas,
                today=now.date(),  # a needed-by date in the past is refused
            )
            rota = borrower.rota.build_rota(
                form, rotas=self.config.rotas,
                partners=self.config.partners_by_symbol,
                closed_partners=ctx.closed_partners, today=now.date(),
            )
            public_id = new_public_id("B")
            result = bmachine.create(form, ctx=ctx, rota=rota, public_id=public_id)
            duplicate_of = await repo.open_duplicate(conn, borrower.form.duplicate_key(form))
            tx_id = await repo.insert_transaction(conn, repo.transaction_row(
                role="borrowing", public_id=public_id, state=result.state, now=now,
                requesting_agency_id=str(self.symbol), duplicate_key=borrower.form.duplicate_key(form),
                next_timer_at=_next_timer(BORROWING, result.state),
            ))
            rows = _Rows(lease=True)
            await self._apply(conn, BORROWING, tx_id, result, actor=actor, now=now, inserted=True,
                              rows=rows)
            await _write(conn, rows)
            if duplicate_of:
                await repo.add_history_event(
                    conn, tx_id, event="possible_duplicate", actor="system", now=now,
                    summary=f"possible duplicate of open request {duplicate_of}",
                    detail={"duplicate_of": duplicate_of},
                )
            view = await repo.request_view(conn, tx_id)
        self._send(rows)
        return view

    # -- timers ------------------------------------------------------------------

    async def run_due_timers(self, limit: int = 200) -> int:
        """Tick every request whose next timer is due (answer timeouts, retries, overdue)."""
        now = self.clock()
        done = 0
        async with self.engine.connect() as conn:
            due = await repo.due_timers(conn, now=now, limit=limit)
        for tx_id, role in due:
            side = SIDES[role]
            async with self.engine.begin() as conn:
                row = await repo.lock_transaction_by_id(conn, tx_id)
                if row is None or row.next_timer_at is None or row.next_timer_at > now:
                    continue
                state = side.state_type.from_json(row.state)
                ctx = await self._context(conn, side, row, now)
                result = side.machine.tick(state, ctx=ctx)
                await self._apply(conn, side, tx_id, result, actor="system", now=now)
                done += 1
        if done:
            self._wake_outbox()
        return done

    async def prune_outbox(self, chunk: int = 1000) -> int:
        """Delete the messages delivered more than ``[outbox] keep_sent_days`` ago
        (:func:`node.store.outbox_repo.prune_sent`); returns how many.  ``chunk`` rows a
        transaction, so that a first prune of a big outbox never holds the writer long."""
        days = self.config.outbox.keep_sent_days
        if not days:
            return 0
        before = self.clock() - timedelta(days=days)
        pruned = 0
        while True:
            async with self.engine.begin() as conn:
                n = await outbox_repo.prune_sent(conn, before=before, limit=chunk)
            pruned += n
            if n < chunk:
                break
            await asyncio.sleep(0)  # partners' messages go first
        if pruned:
            log.info("outbox: %d delivered message(s) older than %d days deleted", pruned, days)
        return pruned

    # -- logging -------------------------------------------------------------------

    def _log_in(self, envelope, status, exc, started, peer_address) -> None:
        message = envelope.message if envelope is not None else None
        header = getattr(message, "header", None)
        log.info(
            "in kind=%s peer=%s request_id=%s status=%s ms=%.1f%s",
            message.KIND if message is not None else "-",
            (header.supplying_agency_id if isinstance(message, SupplyingAgencyMessage)
             else header.requesting_agency_id) if header is not None else peer_address,
            header.requesting_agency_request_id if header is not None else "-",
            "ERROR" if exc is not None else "OK",
            (time.perf_counter() - started) * 1000,
            f" error={exc.error_type.value}" if exc is not None else "",
        )


def _addressed(message: BusinessMessage, partner: Partner) -> tuple[BusinessMessage, bytes]:
    """``message`` as ``partner`` expects it, and its body: with the credentials we give
    it, written in its ISO 18626 version."""
    message = peer_auth.with_authentication(message, partner)
    return message, writer.serialise(Envelope(version=partner.iso18626_version, message=message))


def _written_for(partner: Partner, body: bytes) -> bytes:
    """``body`` (a message we queued) as ``partner``'s configuration now wants it
    (:func:`_addressed`); ``body`` itself when nothing changed."""
    envelope = reader.parse(body)
    message, rewritten = _addressed(envelope.message, partner)
    unchanged = envelope.version is partner.iso18626_version and message == envelope.message
    return body if unchanged else rewritten


async def _write(conn: AsyncConnection, rows: _Rows) -> None:
    await repo.write_rows(conn, messages=rows.messages, history=rows.history, outbox=rows.outbox)


def _received_row(inbound: _Inbound) -> dict[str, Any]:
    return repo.message_row(
        direction="in", message=inbound.message, raw=inbound.body, peer=str(inbound.sender),
        now=inbound.now, digest=inbound.digest, confirmation=inbound.answer,
    )


def _lending_row(message: Request, result: Result, now: datetime) -> dict[str, Any]:
    """A partner's new request as stored: staff and the partner see the same id, our
    supplyingAgencyRequestId."""
    return repo.transaction_row(
        role="lending", public_id=result.state.supplying_request_id, state=result.state,
        now=now, requesting_agency_id=str(message.header.requesting_agency_id),
        next_timer_at=_next_timer(LENDING, result.state))


def _next_timer(side: Side, state) -> datetime | None:
    fn = getattr(side.machine, "next_timer", None)
    return fn(state) if fn is not None else None


def message_digest(sender: AgencyId, message: BusinessMessage, body: bytes) -> str:
    """What makes a message 'the same message again': sender, kind, id, timestamp, content."""
    header = message.header
    h = hashlib.sha256()
    for part in (str(sender).casefold(), message.KIND, header.requesting_agency_request_id,
                 header.timestamp.isoformat()):
        h.update(part.encode())
        h.update(b"\0")
    h.update(body)
    return h.hexdigest()


def new_public_id(prefix: str) -> str:
    """Short ids staff can read out and type: L-7K3M9Q2X (lending), B-... (borrowing)."""
    alphabet = "23456789ABCDEFGHJKLMNPQRSTUVWXYZ"
    return prefix + "-" + "".join(secrets.choice(alphabet) for _ in range(8))

