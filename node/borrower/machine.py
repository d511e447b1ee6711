"""The borrowing side of an ILL transaction, as a transition table.

Pure, in the h11/h2 style: no I/O, no clock, no database.  Each call takes
the stored :class:`BorrowingRequest` and one input -- a partner's
``supplyingAgencyMessage`` (``RECV_*``), a staff or patron action
(``STAFF_*``) or the clock (``TIMER_*``) -- and returns a
:class:`~node.machine.Result`: the new request, the messages to queue (full
protocol objects, headers filled in), history lines and effects for the
service to apply.

Every legal move is a row of :data:`TRANSITIONS`, keyed by
``(BorrowingState, BorrowingInput)`` and giving ``(handler, next_state)``; a
``None`` next state means the handler decides (e.g. move on in the rota or
end it).  A missing key is the one illegal-transition error: a
:class:`ProtocolError` (``UnrecognisedDataValue``) for a partner's message, a
:class:`StaffActionError` for staff and the clock.

ISO 18626:2017 references: clause 5 (message flow), 8.3-8.9 (header,
messageInfo, statusInfo, deliveryInfo), Annex A (status/reason rules).
Each send to a partner is an *attempt* with its own
``requestingAgencyRequestId`` ``"<public_id>-<n>"``; a Retry request is a
new attempt that names the previous one in
``requestingAgencyPreviousRequestId``.
"""

from __future__ import annotations

import enum
import re
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, is_dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

from ..machine import (
    Effect,
    HistoryEntry,
    Result,
    StaffActionError,
    StaffActionInvalid,
    evolve,
    to_json_value,
)
from ..protocol.codes import (
    OPEN_LISTS,
    Action,
    Code,
    ErrorType,
    ReasonForMessage,
    RequestType,
    ServiceType,
    Status,
    Version,
    YesNo,
)
from ..protocol.errors import ProtocolError
from ..protocol.messages import (
    AgencyId,
    BibliographicInfo,
    BibliographicItemId,
    BibliographicRecordId,
    BillingInfo,
    BusinessMessage,
    Costs,
    Header,
    PatronInfo,
    PhysicalAddress,
    PublicationInfo,
    Request,
    RequestedDeliveryInfo,
    RequestingAgencyMessage,
    ServiceInfo,
    SupplyingAgencyMessage,
)
from . import rota as rota_mod
from .form import BorrowingForm
from .rota import EntryState, RotaEntry

__all__ = [
    "TRANSITIONS",
    "BorrowingContext",
    "BorrowingInput",
    "BorrowingRequest",
    "BorrowingState",
    "StaffAction",
    "apply",
    "classify",
    "create",
    "delivery_failed",
    "next_timer",
    "parse_closure_note",
    "receive",
    "staff",
    "tick",
]


# ReShare / Alma condition handshakes (NOTES.md section 6, items 4 and 5).
RESHARE_ADD_CONDITION = "#ReShareAddLoanCondition#"
RESHARE_AWAITING_CONDITION = "#ReShareSupplierAwaitingConditionConfirmation#"
RESHARE_AGREE = "#ReShareLoanConditionAgreeResponse#"
ALMA_CONDITIONS_PENDING = "Conditions pending"
_MARKERS = re.compile(r"#ReShare[A-Za-z]+#|#seq:\d+#")


# -- states and inputs ----------------------------------------------------------------


class BorrowingState(enum.Enum):
    """Where a borrowing request stands, in words staff use."""

    CREATED = "created"
    SENT = "sent"  # with a lender, no answer yet (RequestReceived counts as none)
    EXPECT_TO_SUPPLY = "expect_to_supply"
    WILL_SUPPLY = "will_supply"
    CONDITIONAL = "conditional"  # the lender set conditions or costs: staff answer
    RETRY_WAIT = "retry_wait"  # RetryPossible: a Retry request goes out at retry.at
    SHIPPED = "shipped"  # the lender's Loaned
    RECEIVED = "received"  # received, in transit to the pickup location
    ON_HOLD = "on_hold"  # on the hold shelf for the patron
    ON_LOAN = "on_loan"  # loaned to the patron
    RETURNED_BY_PATRON = "returned_by_patron"
    RETURNED_TO_PARTNER = "returned_to_partner"  # we sent ShippedReturn
    RENEW_REQUESTED = "renew_requested"
    OVERDUE = "overdue"
    RECALLED = "recalled"
    CANCEL_REQUESTED = "cancel_requested"
    COMPLETE = "complete"
    CANCELLED = "cancelled"
    UNFILLED = "unfilled"  # end of the rota
    COPY_DELIVERED = "copy_delivered"
    LOST = "lost"  # the patron lost it; waiting for the lender to close it

    @property
    def label(self) -> str:
        return _LABELS[self]


S = BorrowingState
_LABELS = {
    S.CREATED: "created, not sent yet",
    S.SENT: "sent to the lender and waiting for an answer",
    S.EXPECT_TO_SUPPLY: "expected to be supplied",
    S.WILL_SUPPLY: "going to be supplied",
    S.CONDITIONAL: "waiting for our answer to the lender's conditions",
    S.RETRY_WAIT: "waiting to retry with the same lender",
    S.SHIPPED: "shipped by the lender",
    S.RECEIVED: "received, in transit to the pickup location",
    S.ON_HOLD: "on hold for the patron",
    S.ON_LOAN: "loaned to the patron",
    S.RETURNED_BY_PATRON: "returned by the patron",
    S.RETURNED_TO_PARTNER: "returned to the lender",
    S.RENEW_REQUESTED: "waiting for the lender's answer to a renewal",
    S.OVERDUE: "overdue",
    S.RECALLED: "recalled by the lender",
    S.CANCEL_REQUESTED: "waiting for the lender's answer to a cancellation",
    S.COMPLETE: "complete",
    S.CANCELLED: "cancelled",
    S.UNFILLED: "unfilled (end of the rota)",
    S.COPY_DELIVERED: "delivered (copy)",
    S.LOST: "lost",
}

FINAL_STATES = frozenset({S.COMPLETE, S.CANCELLED, S.COPY_DELIVERED})
CLOSED_WITHOUT_RETURN = "completed without return (lost)"  # end_reason
BEFORE_SHIPPING = (S.SENT, S.EXPECT_TO_SUPPLY, S.WILL_SUPPLY, S.CONDITIONAL)
WITH_US = (S.RECEIVED, S.ON_HOLD, S.ON_LOAN, S.RETURNED_BY_PATRON)  # the item is here
LOAN_STATES = (S.SHIPPED, *WITH_US, S.RENEW_REQUESTED, S.OVERDUE, S.RECALLED)
PHYSICAL_STATES = frozenset({S.SHIPPED, *WITH_US, S.RETURNED_TO_PARTNER})


class BorrowingInput(enum.Enum):
    # a partner's supplyingAgencyMessage (by status, or by reason for replies)
    RECV_REQUEST_RECEIVED = "recv_request_received"
    RECV_EXPECT_TO_SUPPLY = "recv_expect_to_supply"
    RECV_WILL_SUPPLY = "recv_will_supply"
    RECV_LOANED = "recv_loaned"
    RECV_OVERDUE = "recv_overdue"
    RECV_RECALLED = "recv_recalled"
    RECV_RETRY_POSSIBLE = "recv_retry_possible"
    RECV_UNFILLED = "recv_unfilled"
    RECV_COPY_COMPLETED = "recv_copy_completed"
    RECV_LOAN_COMPLETED = "recv_loan_completed"
    RECV_COMPLETED_WITHOUT_RETURN = "recv_completed_without_return"
    RECV_CANCELLED = "recv_cancelled"
    RECV_RENEW_RESPONSE_YES = "recv_renew_response_yes"
    RECV_RENEW_RESPONSE_NO = "recv_renew_response_no"
    RECV_CANCEL_RESPONSE_YES = "recv_cancel_response_yes"
    RECV_CANCEL_RESPONSE_NO = "recv_cancel_response_no"
    RECV_NOTIFICATION = "recv_notification"
    RECV_STATUS_REQUEST_RESPONSE = "recv_status_request_response"
    # staff (or patron) actions
    STAFF_RECEIVE = "staff_receive"
    STAFF_ON_HOLD = "staff_on_hold"
    STAFF_LOAN_TO_PATRON = "staff_loan_to_patron"
    STAFF_PATRON_RETURN = "staff_patron_return"
    STAFF_RETURN_TO_PARTNER = "staff_return_to_partner"
    STAFF_RENEW = "staff_renew"
    STAFF_CANCEL = "staff_cancel"
    STAFF_CANCEL_PARTNER = "staff_cancel_partner"
    STAFF_CONDITION_ANSWER = "staff_condition_answer"
    STAFF_STATUS_REQUEST = "staff_status_request"
    STAFF_MESSAGE = "staff_message"
    STAFF_NOTE = "staff_note"
    STAFF_LOST = "staff_lost"
    STAFF_REREQUEST = "staff_rerequest"
    STAFF_ROTA_MOVE = "staff_rota_move"
    STAFF_ROTA_ADD = "staff_rota_add"
    STAFF_ROTA_REMOVE = "staff_rota_remove"
    STAFF_MARK_READ = "staff_mark_read"
    # the clock
    TIMER_ANSWER_TIMEOUT = "timer_answer_timeout"
    TIMER_RETRY_DUE = "timer_retry_due"
    TIMER_OVERDUE = "timer_overdue"


I = BorrowingInput  # noqa: E741  (short name for the table rows)
Input = BorrowingInput


# -- context -------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class BorrowingContext:
    """What the service looked up for this call.

    ``closure`` is the effective borrowing closure (or None);
    ``closed_partners`` maps a symbol to ``(start, end, note)`` for partners
    known closed for lending; ``rotas`` (optional) serves re-requests by rota
    name; ``now`` is an aware UTC datetime.
    """

    our_symbol: AgencyId
    policy: Any
    closure: Any = None
    partners: Mapping[str, Any] = field(default_factory=dict)
    closed_partners: Mapping[str, tuple[date | None, date | None, str | None]] = field(
        default_factory=dict
    )
    now: datetime
    rotas: Any = ()

    @property
    def today(self) -> date:
        return self.now.astimezone(UTC).date()


# -- the request's parts ---------------------------------------------------------------------

frozen = dataclass(frozen=True, kw_only=True, slots=True)


@frozen
class Attempt:
    """One send of a Request to a partner (the ``attempts`` table)."""

    seq: int
    partner: str
    request_id: str
    sent_at: datetime
    previous_request_id: str | None = None  # set on a Retry request


@frozen
class Money:
    amount: Decimal
    currency: str

    def __str__(self) -> str:
        return f"{self.amount} {self.currency}"


@frozen
class ConditionOffer:
    """Conditions and/or costs a lender set, and our answer."""

    partner: str
    received_at: datetime
    loan_conditions: tuple[str, ...] = ()
    costs: tuple[Money, ...] = ()
    note: str | None = None
    answer: str | None = None  # None (open) | "accepted" | "rejected" | "superseded"
    answered_at: datetime | None = None
    answered_by: str | None = None
    answer_note: str | None = None


@frozen
class RetryPlan:
    at: datetime
    reason: str | None
    previous_request_id: str
    retry_before: datetime | None = None
    max_costs: Money | None = None


@frozen
class RenewRequest:
    asked_at: datetime
    asked_by: str
    prior: BorrowingState
    note: str | None = None


@frozen
class RenewRecord:
    asked_at: datetime
    answered_at: datetime
    answer: str  # "Y" | "N"
    old_due: datetime | None
    new_due: datetime | None
    note: str | None = None


@frozen
class CancelRequest:
    kind: str  # "request" (cancel the whole request) | "partner" (move on in the rota)
    asked_at: datetime
    asked_by: str
    prior: BorrowingState
    reason: str | None = None
    note: str | None = None
    notify_patron: bool = False


@frozen
class Delivery:
    at: datetime
    item_ids: tuple[str, ...] = ()
    url: str | None = None
    method: str | None = None
    note: str | None = None


@frozen
class Charge:
    at: datetime
    partner: str
    amount: Decimal
    currency: str
    reason: str


@frozen
class PatronNotice:
    at: datetime
    event: str
    text: str


@frozen
class PartnerMessage:
    at: datetime
    partner: str
    direction: str  # "in" | "out" | "problem" (delivery failure)
    text: str
    read: bool = False


@frozen
class Note:
    at: datetime
    author: str
    text: str


@frozen
class BorrowingRequest:
    """The whole state of one borrowing request (stored as JSON)."""

    public_id: str
    form: BorrowingForm
    state: BorrowingState
    created_at: datetime
    rota: tuple[RotaEntry, ...] = ()
    active: int | None = None  # index of the active lender's rota entry
    attempts: tuple[Attempt, ...] = ()
    supplying_request_id: str | None = None
    lender_status: str | None = None  # the active lender's latest status
    answer_by: datetime | None = None  # answer timeout of the current attempt
    retry: RetryPlan | None = None
    due_date: datetime | None = None
    item_at: BorrowingState | None = None  # where the item physically is
    prior: BorrowingState | None = None  # where CONDITIONAL returns to
    barcodes: tuple[str, ...] = ()  # temporary barcodes, one per volume
    delivery: Delivery | None = None
    conditions: tuple[ConditionOffer, ...] = ()
    pending_renew: RenewRequest | None = None
    renewals: tuple[RenewRecord, ...] = ()
    pending_cancel: CancelRequest | None = None
    charges: tuple[Charge, ...] = ()
    patron_notices: tuple[PatronNotice, ...] = ()
    messages: tuple[PartnerMessage, ...] = ()
    notes: tuple[Note, ...] = ()
    end_reason: str | None = None

    # -- derived -------------------------------------------------------------

    @property
    def active_entry(self) -> RotaEntry | None:
        return self.rota[self.active] if self.active is not None else None

    @property
    def partner(self) -> str | None:
        """The active lender's symbol."""
        entry = self.active_entry
        return entry.symbol if entry is not None else None

    @property
    def requesting_request_id(self) -> str | None:
        """The current attempt's ``requestingAgencyRequestId``."""
        entry = self.active_entry
        return entry.attempt_request_id if entry is not None else None

    @property
    def open_offer(self) -> ConditionOffer | None:
        if self.conditions and self.conditions[-1].answer is None:
            return self.conditions[-1]
        return None

    @property
    def needs_attention(self) -> bool:
        if self.state in (S.CONDITIONAL, S.UNFILLED, S.OVERDUE, S.RECALLED):
            return True
        return any(not m.read and m.direction != "out" for m in self.messages)

    def summary(self) -> dict[str, Any]:
        """The searchable columns of ``transactions``."""
        return {
            "status": self.state.value,
            "partner": self.partner,
            "title": self.form.title or self.form.title_of_component,
            "patron_id": self.form.patron_id,
            # Never empty (the column is the peers' key and NOT NULL): with no
            # active lender, the latest attempt's id, else our own id.
            "requesting_request_id": self.requesting_request_id
            or (self.attempts[-1].request_id if self.attempts else self.public_id),
            "supplying_request_id": self.supplying_request_id,
            "needs_attention": self.needs_attention,
        }

    def to_json(self) -> dict[str, Any]:
        return to_json_value(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> BorrowingRequest:
        return _decode(cls, data)


# -- staff actions ---------------------------------------------------------------------------

# action name -> (input, required fields, optional fields)
_ACTIONS: dict[str, tuple[BorrowingInput, frozenset[str], frozenset[str]]] = {
    name: (inp, frozenset(req), frozenset(opt))
    for name, inp, req, opt in (
        ("receive", I.STAFF_RECEIVE, {"barcodes"}, {"in_transit", "note"}),
        ("on_hold", I.STAFF_ON_HOLD, (), {"note"}),
        ("loan_to_patron", I.STAFF_LOAN_TO_PATRON, (), {"note"}),
        ("patron_return", I.STAFF_PATRON_RETURN, (), {"note"}),
        ("return_to_partner", I.STAFF_RETURN_TO_PARTNER, (), {"note"}),
        ("renew", I.STAFF_RENEW, (), {"note", "due_date"}),
        ("cancel", I.STAFF_CANCEL, {"reason"}, {"note", "notify_patron"}),
        ("cancel_partner", I.STAFF_CANCEL_PARTNER, (), {"note"}),
        ("condition_answer", I.STAFF_CONDITION_ANSWER, {"accept"}, {"note"}),
        ("status_request", I.STAFF_STATUS_REQUEST, (), ()),
        ("message", I.STAFF_MESSAGE, {"note"}, ()),
        ("note", I.STAFF_NOTE, {"note"}, ()),
        ("lost", I.STAFF_LOST, (), {"note"}),
        ("rerequest", I.STAFF_REREQUEST, (), {"partners", "rota", "note"}),
        ("rota_move", I.STAFF_ROTA_MOVE, {"symbol", "position"}, ()),
        ("rota_add", I.STAFF_ROTA_ADD, {"symbol"}, {"position"}),
        ("rota_remove", I.STAFF_ROTA_REMOVE, {"symbol"}, {"note"}),
        ("mark_read", I.STAFF_MARK_READ, (), ()),
    )
}
ACTION_NAMES = {inp: name for name, (inp, _r, _o) in _ACTIONS.items()}


@frozen
class StaffAction:
    """A staff (or patron) action.  JSON: ``{"action": "receive", "actor":
    "staff:anna", "barcodes": ["TMP-1", "TMP-2"]}``; see :data:`_ACTIONS`
    for each action's fields."""

    action: str
    actor: str = "staff"
    note: str | None = None
    barcodes: tuple[str, ...] = ()
    in_transit: bool = False
    reason: str | None = None
    notify_patron: bool = False
    accept: bool | None = None
    due_date: date | None = None
    partners: tuple[str, ...] = ()
    rota: str | None = None
    symbol: str | None = None
    position: int | None = None

    @property
    def input(self) -> BorrowingInput:
        return _ACTIONS[self.action][0]

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> StaffAction:
        """Build the action; :class:`StaffActionInvalid` names every field that is
        unknown, missing or of the wrong type."""
        if not isinstance(data, Mapping):
            raise StaffActionInvalid(None, {"action": "a staff action must be a JSON object"})
        name = data.get("action")
        if not isinstance(name, str) or name not in _ACTIONS:
            raise StaffActionInvalid(None, {
                "action": f"unknown action {name!r}; one of: {', '.join(sorted(_ACTIONS))}"})
        _inp, required, optional = _ACTIONS[name]
        problems: dict[str, str] = {}
        for key in sorted(set(data) - required - optional - {"action", "actor"}):
            problems[key] = f"not a field of {name!r}"
        for key in sorted(required):
            if data.get(key) in (None, "", []):
                problems[key] = "is required"
        kwargs: dict[str, Any] = {"action": name}
        for key, value in data.items():
            if key == "action" or value is None or key not in required | optional | {"actor"}:
                continue
            try:
                kwargs[key] = _ACTION_FIELD[key](value)
            except (TypeError, ValueError) as exc:
                problems.setdefault(key, str(exc))
        if problems:
            raise StaffActionInvalid(name, problems)
        return cls(**kwargs)

    def to_json(self) -> dict[str, Any]:
        _inp, required, optional = _ACTIONS[self.action]
        out: dict[str, Any] = {"action": self.action, "actor": self.actor}
        for key in sorted(required | optional):
            value = getattr(self, key)
            if value is None or value == ():
                continue
            out[key] = to_json_value(value)
        return out


def _as_text(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError("must be non-empty text")
    return value.strip()


def _as_bool(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError("must be true or false")
    return value


def _as_symbols(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, (list, tuple)) or not all(
        isinstance(v, str) and v.strip() for v in value
    ):
        raise ValueError("must be a list of non-empty strings")
    return tuple(v.strip() for v in value)


def _as_barcodes(value: Any) -> tuple[str, ...]:
    codes = _as_symbols(value)
    duplicates = sorted({c for c in codes if codes.count(c) > 1})
    if duplicates:
        raise ValueError(f"lists {', '.join(duplicates)} twice (one barcode per volume)")
    return codes


def _as_int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError("must be a whole number from 0")
    return value


def _as_date(value: Any) -> date:
    try:
        return date.fromisoformat(str(value))
    except ValueError:
        raise ValueError("must be a date (YYYY-MM-DD)") from None


_ACTION_FIELD: dict[str, Callable[[Any], Any]] = {
    "actor": _as_text,
    "note": _as_text,
    "barcodes": _as_barcodes,
    "in_transit": _as_bool,
    "reason": _as_text,
    "notify_patron": _as_bool,
    "accept": _as_bool,
    "due_date": _as_date,
    "partners": _as_symbols,
    "rota": _as_text,
    "symbol": _as_text,
    "position": _as_int,
}


# -- the output collector -------------------------------------------------------------------


class _Out:
    """What a handler produces besides the new request."""

    def __init__(self, actor: str, ctx: BorrowingContext):
        self.actor = actor
        self.ctx = ctx
        self.send: list[BusinessMessage] = []
        self.history: list[HistoryEntry] = []
        self.effects: list[Effect] = []

    def log(self, event: str, summary: str, /, **detail: Any) -> None:
        self.history.append(
            HistoryEntry(event=event, actor=self.actor, summary=summary, detail=to_json_value(detail))
        )

    def effect(self, kind: str, /, **detail: Any) -> None:
        self.effects.append(Effect(kind=kind, detail=detail))


Handler = Callable[[BorrowingRequest, Any, BorrowingContext, _Out], BorrowingRequest]


# -- building messages --------------------------------------------------------------------


def _header(req: BorrowingRequest, ctx: BorrowingContext, symbol: str, rari: str,
            *, with_supplier_id: bool = True) -> Header:
    return Header(
        supplying_agency_id=AgencyId.parse(symbol),
        requesting_agency_id=ctx.our_symbol,
        timestamp=ctx.now,
        requesting_agency_request_id=rari,
        supplying_agency_request_id=req.supplying_request_id if with_supplier_id else None,
    )


def _end_of_day(day: date) -> datetime:
    return datetime.combine(day, time(23, 59, 59), tzinfo=UTC)


def build_request_message(
    req: BorrowingRequest,
    ctx: BorrowingContext,
    symbol: str,
    rari: str,
    *,
    previous_request_id: str | None = None,
    max_costs: Money | None = None,
) -> Request:
    """The ISO 18626 ``request`` for one attempt (clause 8.2)."""
    form = req.form
    item_ids = []
    record_ids = []
    if form.isbn:
        item_ids.append(BibliographicItemId(identifier=form.isbn, code=Code("ISBN")))
    if form.issn:
        item_ids.append(BibliographicItemId(identifier=form.issn, code=Code("ISSN")))
    if form.oclc:
        record_ids.append(BibliographicRecordId(identifier=form.oclc, code=Code("OCLC")))
    item_codes = {c.casefold(): c for c in OPEN_LISTS["BibliographicItemIdentifierCode"]}
    record_codes = {c.casefold(): c for c in OPEN_LISTS["BibliographicRecordIdentifierCode"]}
    for code, value in form.identifiers:
        if code.casefold() in item_codes:
            item_ids.append(
                BibliographicItemId(identifier=value, code=Code(item_codes[code.casefold()]))
            )
        else:
            known = record_codes.get(code.casefold(), code)
            record_ids.append(BibliographicRecordId(identifier=value, code=Code(known)))
    bib = BibliographicInfo(
        title=form.title,
        author=form.author,
        edition=form.edition,
        title_of_component=form.title_of_component,
        author_of_component=form.author_of_component,
        volume=(form.volume,) if form.volume else (),
        issue=form.issue,
        pages_requested=form.pages,
        bibliographic_item_id=tuple(item_ids),
        bibliographic_record_id=tuple(record_ids),
    )
    publication = None
    if form.publisher or form.publication_date or form.place_of_publication:
        publication = PublicationInfo(
            publisher=form.publisher,
            publication_date=form.publication_date,
            place_of_publication=form.place_of_publication,
        )
    wishes = []
    if form.reading_room_only:
        wishes.append("For reading room use only.")
    if form.allow_other_format:
        wishes.append("Other formats are acceptable.")
    if form.requested_media:
        wishes.append(f"Requested media: {form.requested_media}.")
    if form.language:
        wishes.append(f"Language: {form.language}.")
    if form.note:
        wishes.append(form.note)
    copy = form.service_type is ServiceType.COPY
    service = ServiceInfo(
        service_type=form.service_type,
        request_type=RequestType.RETRY if previous_request_id else RequestType.NEW,
        requesting_agency_previous_request_id=previous_request_id,
        service_level=Code(form.service_level) if form.service_level else None,
        item_format=Code(form.requested_media) if form.requested_media else None,
        need_before_date=_end_of_day(form.needed_by) if form.needed_by else None,
        copyright_compliance=(
            Code(form.copyright_compliance or "Other") if copy and form.copyright_agreed else None
        ),
        note=" ".join(wishes) or None,
    )
    delivery = RequestedDeliveryInfo(
        sort_order=1,
        address=PhysicalAddress(line1=form.pickup_location),
        delivery_method=(
            Code(form.preferred_delivery_method) if form.preferred_delivery_method else None
        ),
    )
    billing = None
    limit = max_costs
    if limit is None and form.willing_to_pay and form.max_fee is not None and form.currency:
        limit = Money(amount=form.max_fee, currency=form.currency)
    if limit is not None:
        billing = BillingInfo(
            maximum_costs=Costs(currency_code=Code(limit.currency), monetary_value=limit.amount)
        )
    return Request(
        header=_header(req, ctx, symbol, rari, with_supplier_id=False),
        bibliographic_info=bib,
        publication_info=publication,
        service_info=service,
        requested_delivery_info=(delivery,),
        patron_info=PatronInfo(patron_id=form.patron_id),
        billing_info=billing,
    )


def _ram(req: BorrowingRequest, ctx: BorrowingContext, action: Action,
         note: str | None = None) -> RequestingAgencyMessage:
    entry = req.active_entry
    assert entry is not None and entry.attempt_request_id is not None
    return RequestingAgencyMessage(
        header=_header(req, ctx, entry.symbol, entry.attempt_request_id),
        action=action,
        note=note,
    )


def _partner_version(ctx: BorrowingContext, symbol: str) -> Version:
    partner = rota_mod.find_partner(ctx.partners, symbol)
    raw = getattr(partner, "iso18626_version", None) if partner is not None else None
    if isinstance(raw, Version):
        return raw
    try:
        return Version.parse(str(raw)) if raw else Version.V1_2
    except ValueError:
        return Version.V1_2


# -- small state helpers -----------------------------------------------------------------------


def _set_entry(req: BorrowingRequest, index: int, **changes: Any) -> BorrowingRequest:
    entries = list(req.rota)
    entries[index] = evolve(entries[index], **changes)
    return evolve(req, rota=tuple(entries))


def _close_entry(req: BorrowingRequest, ctx: BorrowingContext, state: EntryState,
                 note: str | None) -> BorrowingRequest:
    assert req.active is not None
    return _set_entry(req, req.active, state=state, note=note, answered_at=ctx.now)


def _notice(req: BorrowingRequest, out: _Out, event: str, text: str) -> BorrowingRequest:
    # The service records the effect in the history (event "patron_notice"), where
    # staff and the patron-notices listing see it; "notice" names which notice it was.
    out.effect("patron_notice", patron_id=req.form.patron_id, public_id=req.public_id,
               notice=event, text=text)
    return evolve(req, patron_notices=req.patron_notices + (
        PatronNotice(at=out.ctx.now, event=event, text=text),))


def _message(req: BorrowingRequest, ctx: BorrowingContext, direction: str, text: str,
             *, partner: str | None = None, read: bool = False) -> BorrowingRequest:
    msg = PartnerMessage(at=ctx.now, partner=partner or req.partner or "", direction=direction,
                         text=text, read=read)
    return evolve(req, messages=req.messages + (msg,))


def _items(req: BorrowingRequest, out: _Out, status: str) -> None:
    for barcode in req.barcodes:
        due = req.due_date.isoformat() if req.due_date is not None else None
        out.effect("item_status", barcode=barcode, status=status, due_date=due,
                   public_id=req.public_id, title=req.form.title)


def _title(req: BorrowingRequest) -> str:
    return req.form.title or req.form.title_of_component or "your request"


def _day(value: datetime | None) -> str:
    return value.date().isoformat() if value is not None else "unknown"


def _clean(note: str | None) -> str | None:
    if note is None:
        return None
    text = _MARKERS.sub("", note).strip()
    return text or None


def _money(costs: Any) -> tuple[Money, ...]:
    return tuple(Money(amount=c.monetary_value, currency=c.currency_code.value) for c in costs)


def _charge(req: BorrowingRequest, out: _Out, costs: tuple[Money, ...],
            reason: str) -> BorrowingRequest:
    if not costs:
        return req
    partner = req.partner or ""
    charges = []
    for cost in costs:
        charges.append(Charge(at=out.ctx.now, partner=partner, amount=cost.amount,
                              currency=cost.currency, reason=reason))
        out.effect("charge", amount=cost.amount, currency=cost.currency, reason=reason,
                   partner=partner, public_id=req.public_id)
    out.log("charge", f"{partner} charges " + ", ".join(map(str, costs)) + f" ({reason})")
    return evolve(req, charges=req.charges + tuple(charges))


# -- the rota: sending and moving on ------------------------------------------------------------


def _send_request(req: BorrowingRequest, ctx: BorrowingContext, out: _Out, index: int, *,
                  previous_request_id: str | None = None,
                  max_costs: Money | None = None) -> BorrowingRequest:
    seq = len(req.attempts) + 1
    rari = f"{req.public_id}-{seq}"
    symbol = req.rota[index].symbol
    hours = _hours(ctx)
    req = _set_entry(req, index, state=EntryState.ACTIVE, attempt_request_id=rari,
                     sent_at=ctx.now, answered_at=None)
    req = evolve(
        req,
        active=index,
        attempts=req.attempts + (Attempt(seq=seq, partner=symbol, request_id=rari,
                                         sent_at=ctx.now,
                                         previous_request_id=previous_request_id),),
        supplying_request_id=None,
        lender_status=None,
        answer_by=ctx.now + timedelta(hours=hours) if hours > 0 else None,
        retry=None,
        prior=None,
        end_reason=None,
        state=S.SENT,
    )
    out.send.append(build_request_message(req, ctx, symbol, rari,
                                          previous_request_id=previous_request_id,
                                          max_costs=max_costs))
    kind = "Retry request" if previous_request_id else "Request"
    out.log("sent_request", f"{kind} sent to {symbol} (attempt {rari})", partner=symbol,
            request_id=rari, previous_request_id=previous_request_id)
    return req


def _advance(req: BorrowingRequest, ctx: BorrowingContext, out: _Out) -> BorrowingRequest:
    """Ask the next partner in the rota, or end the request as unfilled."""
    req = evolve(req, pending_cancel=None, pending_renew=None, retry=None, answer_by=None)
    while True:
        index = rota_mod.next_pending(req.rota)
        if index is None:
            break
        entry = req.rota[index]
        partner = rota_mod.find_partner(ctx.partners, entry.symbol)
        closed = rota_mod.closed_note(entry.symbol, ctx.closed_partners, ctx.today)
        if partner is None or not getattr(partner, "borrow_from", False):
            note = "no longer a partner we borrow from"
        elif closed is not None:
            note = closed
        else:
            return _send_request(req, ctx, out, index)
        req = _set_entry(req, index, state=EntryState.SKIPPED, note=note)
        out.log("skipped_partner", f"{entry.symbol} not asked: {note}", partner=entry.symbol)
    asked = any(e.sent_at is not None for e in req.rota)
    reason = "unfilled — end of rota" if asked else "no partner in the rota"
    if not asked and req.rota:
        reason = "no partner in the rota could be asked"
    out.log("unfilled", f"Unfilled: {reason}")
    return evolve(req, state=S.UNFILLED, active=None, end_reason=reason, lender_status=None)


# -- partner closures learned from notes -------------------------------------------------------

_ISO = r"(\d{4}-\d{2}-\d{2})"
_RANGE = re.compile(_ISO + r"\s*(?:to|until|till|through|thru|-|–|—)\s*" + _ISO, re.IGNORECASE)
_UNTIL = re.compile(r"\b(?:until|till|through|thru|reopens?(?: on)?)\s+" + _ISO, re.IGNORECASE)
_FROM = re.compile(r"\b(?:from|since)\s+" + _ISO, re.IGNORECASE)
_FURTHER = re.compile(r"until further notice|indefinitely", re.IGNORECASE)
_CLOSED_WORDS = re.compile(
    r"clos|suspend|inactive|not lending|no lending|holiday|not available for (?:ill|lending)",
    re.IGNORECASE,
)


def parse_closure_note(note: str | None, *, reason: str | None = None
                       ) -> tuple[date | None, date | None] | None:
    """Closure dates stated in an Unfilled/RetryPossible note, or None.

    Understands "... 2026-12-20 to 2027-01-05", "... until 2027-01-05" and
    "... [from 2026-12-20] until further notice" (our supplier's ``Closure.describe`` and
    Alma's inactive-lending unfill, which sends the date range as a note).
    The note must say it is a closure, or come with ``NotAvailableForILL``.
    """
    if not note:
        return None
    if not _CLOSED_WORDS.search(note) and (reason or "").casefold() != "notavailableforill":
        return None
    try:
        if m := _RANGE.search(note):
            return date.fromisoformat(m.group(1)), date.fromisoformat(m.group(2))
        if m := _UNTIL.search(note):
            return None, date.fromisoformat(m.group(1))
    except ValueError:
        return None
    if _FURTHER.search(note):
        start = _FROM.search(note)
        return (date.fromisoformat(start.group(1)) if start else None), None
    return None


def _learn_closure(req: BorrowingRequest, out: _Out, note: str | None,
                   reason: str | None) -> None:
    dates = parse_closure_note(_clean(note), reason=reason)
    if dates is None or req.partner is None:
        return
    start, end = dates
    out.effect("partner_closure", symbol=req.partner, start=start, end=end, note=_clean(note))
    until = end.isoformat() if end else "further notice"
    out.log("partner_closure", f"{req.partner} is closed for lending until {until}",
            symbol=req.partner, start=start, end=end)


# -- conditions ----------------------------------------------------------------------------------


def _offer_in(msg: SupplyingAgencyMessage, ctx: BorrowingContext,
              partner: str) -> ConditionOffer | None:
    conditions: list[str] = []
    if msg.delivery_info is not None:
        conditions.extend(c.value for c in msg.delivery_info.loan_condition)
    note = msg.message_info.note or ""
    if any(marker in note for marker in (RESHARE_ADD_CONDITION, RESHARE_AWAITING_CONDITION,
                                         ALMA_CONDITIONS_PENDING)) and not conditions:
        conditions.append("other")
    costs = _money(msg.message_info.offered_costs)
    if not conditions and not costs:
        return None
    return ConditionOffer(partner=partner, received_at=ctx.now,
                          loan_conditions=tuple(dict.fromkeys(conditions)), costs=costs,
                          note=_clean(note))


def _costs_acceptable(costs: tuple[Money, ...], req: BorrowingRequest,
                      ctx: BorrowingContext) -> bool:
    form = req.form
    if not costs or not getattr(ctx.policy, "auto_accept_costs", False):
        return False
    if not form.willing_to_pay or form.max_fee is None or not form.currency:
        return False
    if any(c.currency.upper() != form.currency.upper() for c in costs):
        return False
    return sum((c.amount for c in costs), Decimal(0)) <= form.max_fee


def _value(code: Any) -> str:
    """An enum's value, or the text itself (config may hold either)."""
    return str(getattr(code, "value", code))


def _hours(ctx: BorrowingContext) -> float:
    return float(getattr(ctx.policy, "answer_timeout_hours", 0) or 0)


def _resume_state(status: str | None) -> BorrowingState:
    if status == Status.EXPECT_TO_SUPPLY.value:
        return S.EXPECT_TO_SUPPLY
    if status == Status.WILL_SUPPLY.value:
        return S.WILL_SUPPLY
    return S.SENT


def _accept_message(note: str | None) -> str:
    return f"{RESHARE_AGREE}ACCEPT" + (f": {note}" if note else "")


def _consider_offer(req: BorrowingRequest, msg: SupplyingAgencyMessage, ctx: BorrowingContext,
                    out: _Out, resume: BorrowingState) -> BorrowingRequest:
    """After an answer from the lender: are there conditions to agree to?"""
    offer = _offer_in(msg, ctx, req.partner or "")
    current = req.open_offer
    if offer is None:
        if current is not None:
            return evolve(req, state=S.CONDITIONAL, prior=resume)
        return evolve(req, state=resume, prior=None)
    if current is not None:  # add to the open offer
        offer = evolve(
            current,
            loan_conditions=tuple(dict.fromkeys(current.loan_conditions + offer.loan_conditions)),
            costs=offer.costs or current.costs,
            note=offer.note or current.note,
        )
        req = evolve(req, conditions=req.conditions[:-1] + (offer,))
    else:
        req = evolve(req, conditions=req.conditions + (offer,))
    described = ", ".join(list(offer.loan_conditions) + [f"costs {c}" for c in offer.costs])
    if not offer.loan_conditions and _costs_acceptable(offer.costs, req, ctx):
        accepted = evolve(offer, answer="accepted", answered_at=ctx.now, answered_by="system",
                           answer_note="within the patron's maximum fee")
        req = evolve(req, conditions=req.conditions[:-1] + (accepted,), state=resume,
                      prior=None)
        out.send.append(_ram(req, ctx, Action.NOTIFICATION,
                             _accept_message("costs within the patron's maximum fee")))
        out.log("accepted_conditions",
                f"Costs from {req.partner} accepted automatically ({described})")
        return req
    out.log("conditional", f"{req.partner} sets conditions: {described}",
            conditions=list(offer.loan_conditions), costs=[str(c) for c in offer.costs])
    return evolve(req, state=S.CONDITIONAL, prior=resume)


def _supersede_offer(req: BorrowingRequest, ctx: BorrowingContext, why: str) -> BorrowingRequest:
    offer = req.open_offer
    if offer is None:
        return req
    done = evolve(offer, answer="superseded", answered_at=ctx.now, answer_note=why)
    return evolve(req, conditions=req.conditions[:-1] + (done,))


# -- RECV handlers ---------------------------------------------------------------------------------

SAM = SupplyingAgencyMessage


def _stay(req: BorrowingRequest, msg: Any, ctx: BorrowingContext, out: _Out) -> BorrowingRequest:
    return req


def _recv_expect(req, msg: SAM, ctx, out):
    resume = S.EXPECT_TO_SUPPLY
    return _consider_offer(req, msg, ctx, out, resume)


def _recv_will_supply(req, msg: SAM, ctx, out):
    return _consider_offer(req, msg, ctx, out, S.WILL_SUPPLY)


def _recv_notification(req, msg: SAM, ctx, out):
    if req.state in BEFORE_SHIPPING:
        resume = req.prior if req.state is S.CONDITIONAL else req.state
        return _consider_offer(req, msg, ctx, out, resume or _resume_state(req.lender_status))
    return req


def _shipped(req: BorrowingRequest, msg: SAM, ctx: BorrowingContext,
             out: _Out) -> BorrowingRequest:
    if req.pending_cancel is not None:
        req = _message(req, ctx, "in", f"{req.partner} shipped the item before answering our "
                       "cancellation")
    req = _supersede_offer(req, ctx, "the lender shipped the item")
    info = msg.delivery_info
    due = msg.status_info.due_date
    req = _close_entry(req, ctx, EntryState.SUPPLIED, None)
    req = evolve(
        req, state=S.SHIPPED, item_at=S.SHIPPED, due_date=due, pending_cancel=None, prior=None,
        answer_by=None,
        delivery=Delivery(
            at=ctx.now,
            item_ids=info.item_id if info else (),
            url=info.url if info else None,
            method=info.delivery_method.value if info and info.delivery_method else None,
            note=_clean(msg.message_info.note),
        ),
    )
    out.log("shipped", f"{req.partner} shipped the item, due {_day(due)}", due_date=due)
    if info is not None:
        req = _charge(req, out, _money(info.delivery_costs), "delivery costs")
    return req


def _recv_loaned(req, msg: SAM, ctx, out):
    return _shipped(req, msg, ctx, out)


def _recv_loaned_again(req, msg: SAM, ctx, out):
    """Loaned after shipping: a new due date, or a recall/overdue lifted."""
    due = msg.status_info.due_date or req.due_date
    if due != req.due_date:
        out.log("due_date", f"{req.partner} sets the due date to {_day(due)}", due_date=due)
    state = req.state
    if state in (S.OVERDUE, S.RECALLED):
        state = req.item_at or S.SHIPPED
        out.log("loaned_again", f"{req.partner} reports the item on loan again")
    return evolve(req, due_date=due, state=state)


def _recv_overdue(req, msg: SAM, ctx, out):
    due = msg.status_info.due_date or req.due_date
    req = evolve(req, due_date=due)
    if req.state is S.RETURNED_TO_PARTNER:
        out.log("overdue_crossed", f"{req.partner} reports the item overdue; it is already "
                "on its way back")
        return req
    if req.state is S.RENEW_REQUESTED:
        assert req.pending_renew is not None
        return evolve(req, pending_renew=evolve(req.pending_renew, prior=S.OVERDUE))
    req = evolve(req, state=S.OVERDUE)
    out.log("overdue", f"{req.partner} reports the item overdue (due {_day(due)})")
    if req.item_at is S.ON_LOAN:
        req = _notice(req, out, "overdue",
                      f"{_title(req)} was due on {_day(due)}; please return it")
    return req


def _recv_recalled(req, msg: SAM, ctx, out):
    due = msg.status_info.due_date or req.due_date
    req = evolve(req, due_date=due)
    if req.state is S.RETURNED_TO_PARTNER:
        out.log("recall_crossed", f"{req.partner} recalls the item; it is already on its way")
        return req
    if req.state is S.RENEW_REQUESTED:
        assert req.pending_renew is not None
        req = evolve(req, pending_renew=evolve(req.pending_renew, prior=S.RECALLED))
    else:
        req = evolve(req, state=S.RECALLED)
    out.log("recalled", f"{req.partner} recalls the item, return by {_day(due)}")
    if req.item_at is S.ON_LOAN:
        req = _notice(req, out, "recalled",
                      f"The lending library recalls {_title(req)}: please return it by "
                      f"{_day(due)}")
    return req


def _end_with_lender(req: BorrowingRequest, ctx: BorrowingContext, out: _Out,
                     entry_state: EntryState, note: str | None) -> BorrowingRequest:
    """The active lender will not supply: move on, or finish a pending cancellation."""
    req = _supersede_offer(req, ctx, f"the lender answered {entry_state.value}")
    req = _close_entry(req, ctx, entry_state, note)
    pending = req.pending_cancel
    if pending is not None and pending.kind == "request":
        return _cancelled(req, ctx, out, pending)
    return _advance(req, ctx, out)


def _recv_unfilled(req, msg: SAM, ctx, out):
    mi = msg.message_info
    reason = mi.reason_unfilled.value if mi.reason_unfilled else None
    note = "; ".join(x for x in (reason, _clean(mi.note)) if x) or "unfilled"
    out.log("unfilled_by_partner", f"{req.partner} cannot supply: {note}")
    _learn_closure(req, out, mi.note, reason)
    return _end_with_lender(req, ctx, out, EntryState.UNFILLED, note)


_WAITING_REASONS = {"atbindery", "notcurrentavailableforill", "onloan", "onorder"}


def _recv_retry_possible(req, msg: SAM, ctx, out):
    mi = msg.message_info
    reason = mi.reason_retry.value if mi.reason_retry else None
    after, before = mi.retry_after, mi.retry_before
    offered = _money(mi.offered_costs)
    text = "; ".join(x for x in (reason, f"retry after {_day(after)}" if after else None,
                                 _clean(mi.note)) if x)
    out.log("retry_possible", f"{req.partner} says retry possible: {text or 'no reason'}")
    if (reason or "").casefold() == "notcurrentavailableforill":
        if parse_closure_note(_clean(mi.note)) is not None:
            _learn_closure(req, out, mi.note, "NotAvailableForILL")
        elif after is not None and req.partner:
            end = (after - timedelta(days=1)).date()
            out.effect("partner_closure", symbol=req.partner, start=ctx.today, end=end,
                       note=_clean(mi.note))
            out.log("partner_closure", f"{req.partner} is closed for lending until "
                    f"{end.isoformat()}", symbol=req.partner, start=ctx.today, end=end)
    if req.pending_cancel is not None:
        return _end_with_lender(req, ctx, out, EntryState.UNFILLED, f"retry possible: {text}")
    needed_by = _end_of_day(req.form.needed_by) if req.form.needed_by else None
    key = (reason or "").casefold()
    plan: RetryPlan | None = None
    why = None
    assert req.requesting_request_id is not None
    if key == "costexceedsmaxcost":
        if offered and _costs_acceptable(offered, req, ctx):
            plan = RetryPlan(at=max(after or ctx.now, ctx.now), reason=reason,
                             previous_request_id=req.requesting_request_id,
                             retry_before=before, max_costs=offered[0])
        else:
            why = "the costs offered are more than the patron agreed to pay"
    elif _value(getattr(ctx.policy, "retry_policy", "retry")).casefold() == "next":
        why = "our retry policy is to ask the next partner"
    elif key not in _WAITING_REASONS:
        why = f"waiting will not help ({reason or 'no reason given'})"
    elif after is None:
        why = "no retry date given"
    elif needed_by is not None and after > needed_by:
        why = f"retry date {_day(after)} is after the needed-by date {_day(needed_by)}"
    elif before is not None and before < after:
        why = "the retry window is empty"
    else:
        plan = RetryPlan(at=after, reason=reason, previous_request_id=req.requesting_request_id,
                         retry_before=before)
    if plan is None:
        return _end_with_lender(req, ctx, out, EntryState.UNFILLED,
                                f"retry possible ({text}); moved on: {why}")
    req = _supersede_offer(req, ctx, "the lender answered retry possible")
    req = _close_entry(req, ctx, EntryState.RETRY, f"retry on {_day(plan.at)}: {text}")
    req = evolve(req, retry=plan, state=S.RETRY_WAIT, answer_by=None)
    out.log("retry_planned", f"Retry with {req.partner} planned for {_day(plan.at)}",
            at=plan.at)
    if plan.at <= ctx.now:
        return _send_retry(req, ctx, out)
    return req


def _recv_cancelled(req, msg: SAM, ctx, out):
    if req.pending_cancel is not None:
        return _recv_cancel_yes(req, msg, ctx, out)
    note = _clean(msg.message_info.note)
    out.log("cancelled_by_partner", f"{req.partner} cancelled the request"
            + (f": {note}" if note else ""))
    return _end_with_lender(req, ctx, out, EntryState.CANCELLED,
                            "cancelled by the lender" + (f": {note}" if note else ""))


def _recv_copy_completed(req, msg: SAM, ctx, out):
    info = msg.delivery_info
    req = _supersede_offer(req, ctx, "the lender delivered the copy")
    req = _close_entry(req, ctx, EntryState.SUPPLIED, None)
    note = _clean(msg.message_info.note)
    url = info.url if info else None
    if url is None and note:  # v1.2 has no deliveryInfo/url: lenders put the link in the note
        found = re.search(r"https?://[^\s<>\"']+", note)
        url = found.group(0).rstrip(".,;)") if found else None
    delivery = Delivery(
        at=ctx.now,
        item_ids=info.item_id if info else (),
        url=url,
        method=info.delivery_method.value if info and info.delivery_method else None,
        note=note,
    )
    req = evolve(req, delivery=delivery, pending_cancel=None, answer_by=None,
                  end_reason="copy delivered")
    out.log("copy_delivered", f"{req.partner} delivered the copy"
            + (f" at {delivery.url}" if delivery.url else ""))
    if info is not None:
        req = _charge(req, out, _money(info.delivery_costs), "delivery costs")
    where = f": {delivery.url}" if delivery.url else ""
    return _notice(req, out, "copy_delivered", f"Your copy of {_title(req)} has arrived{where}")


def _recv_loan_completed(req, msg: SAM, ctx, out):
    if req.state is not S.RETURNED_TO_PARTNER:
        req = _message(req, ctx, "in", f"{req.partner} completed the loan while we had it as "
                       f"{req.state.label}")
    _items(req, out, "removed")
    out.log("completed", f"{req.partner} checked the item in: loan complete")
    return evolve(req, end_reason="loan completed", pending_renew=None)


def _lender_costs(msg: SAM) -> tuple[Money, ...]:
    costs = _money(msg.message_info.offered_costs)
    if msg.delivery_info is not None:
        costs += _money(msg.delivery_info.delivery_costs)
    return costs


def _recv_completed_without_return(req, msg: SAM, ctx, out):
    note = _clean(msg.message_info.note)
    req = _charge(req, out, _lender_costs(msg), "completed without return")
    _items(req, out, "removed")
    out.log("completed_without_return", f"{req.partner} closed the loan without return"
            + (f": {note}" if note else ""))
    return evolve(req, end_reason=CLOSED_WITHOUT_RETURN, pending_renew=None)


def _recv_charges_after_closing(req, msg: SAM, ctx, out):
    """CompletedWithoutReturn again, after the loan was closed so: the lender's charges
    for the lost item, sent later (a 2021 ``Lost`` is answered at once, the bill after)."""
    if req.end_reason != CLOSED_WITHOUT_RETURN:
        raise _illegal(req, I.RECV_COMPLETED_WITHOUT_RETURN, msg)
    return _charge(req, out, _lender_costs(msg), "completed without return")


def _recv_renew_yes(req, msg: SAM, ctx, out):
    pending = req.pending_renew
    assert pending is not None
    new_due = msg.status_info.due_date or req.due_date
    record = RenewRecord(asked_at=pending.asked_at, answered_at=ctx.now, answer="Y",
                         old_due=req.due_date, new_due=new_due,
                         note=_clean(msg.message_info.note))
    state = pending.prior
    if state in (S.OVERDUE, S.RECALLED):
        state = req.item_at or S.ON_LOAN
    req = evolve(req, due_date=new_due, pending_renew=None, state=state,
                  renewals=req.renewals + (record,))
    out.log("renewed", f"{req.partner} renewed the loan until {_day(new_due)}", due_date=new_due)
    _items(req, out, req.state.value)
    return _notice(req, out, "renewed", f"Your loan of {_title(req)} is renewed until "
                   f"{_day(new_due)}")


def _recv_renew_no(req, msg: SAM, ctx, out):
    pending = req.pending_renew
    assert pending is not None
    note = _clean(msg.message_info.note)
    record = RenewRecord(asked_at=pending.asked_at, answered_at=ctx.now, answer="N",
                         old_due=req.due_date, new_due=req.due_date, note=note)
    state = pending.prior
    status = msg.status_info.status
    if status is Status.RECALLED:
        state = S.RECALLED
    elif status is Status.OVERDUE:
        state = S.OVERDUE
    due = msg.status_info.due_date or req.due_date
    req = evolve(req, pending_renew=None, state=state, due_date=due,
                  renewals=req.renewals + (record,))
    req = _message(req, ctx, "in", f"Renewal refused by {req.partner}"
                   + (f": {note}" if note else ""))
    out.log("renew_refused", f"{req.partner} refused the renewal" + (f": {note}" if note else ""))
    return _notice(req, out, "renew_refused", f"The lending library did not renew "
                   f"{_title(req)}; please return it by {_day(due)}")


def _cancelled(req: BorrowingRequest, ctx: BorrowingContext, out: _Out,
               pending: CancelRequest) -> BorrowingRequest:
    reason = pending.reason or "cancelled"
    req = evolve(req, state=S.CANCELLED, pending_cancel=None, answer_by=None, retry=None,
                  end_reason=f"cancelled: {reason}")
    out.log("cancelled", f"Request cancelled ({reason})")
    if pending.notify_patron:
        req = _notice(req, out, "cancelled", f"Your request for {_title(req)} is cancelled: "
                      f"{reason}")
    return req


def _recv_cancel_yes(req, msg: SAM, ctx, out):
    pending = req.pending_cancel
    assert pending is not None
    req = _supersede_offer(req, ctx, "cancelled")
    if pending.kind == "partner":
        req = _close_entry(req, ctx, EntryState.CANCELLED,
                           "cancelled by staff" + (f": {pending.note}" if pending.note else ""))
        out.log("partner_cancelled", f"{req.partner} agreed to cancel; moving on")
        return _advance(req, ctx, out)
    req = _close_entry(req, ctx, EntryState.CANCELLED, f"cancelled: {pending.reason}")
    return _cancelled(req, ctx, out, pending)


def _recv_cancel_no(req, msg: SAM, ctx, out):
    pending = req.pending_cancel
    assert pending is not None
    note = _clean(msg.message_info.note)
    req = evolve(req, pending_cancel=None, state=pending.prior)
    req = _message(req, ctx, "in", f"{req.partner} refused to cancel"
                   + (f": {note}" if note else ""))
    out.log("cancel_refused", f"{req.partner} refused to cancel" + (f": {note}" if note else ""))
    if msg.status_info.status is Status.LOANED:
        return _shipped(req, msg, ctx, out)
    return req


def _recv_cancel_no_after_shipping(req, msg: SAM, ctx, out):
    """The lender's No to our Cancel arrives after its Loaned (it shipped first)."""
    note = _clean(msg.message_info.note)
    req = _message(req, ctx, "in", f"{req.partner} refused to cancel: the item was already "
                   "shipped" + (f" ({note})" if note else ""))
    out.log("cancel_refused", f"{req.partner} refused to cancel; the item is on its way"
            + (f": {note}" if note else ""))
    return req


# -- STAFF handlers ---------------------------------------------------------------------------


def _staff_receive(req, action: StaffAction, ctx, out):
    if not action.barcodes:
        raise StaffActionError("receive needs the temporary barcodes, one per volume")
    state = S.RECEIVED if action.in_transit else S.ON_HOLD
    req = _supersede_offer(req, ctx, "the item arrived")
    if req.state is not S.SHIPPED:  # arrived before the lender's Loaned
        req = _close_entry(req, ctx, EntryState.SUPPLIED, None)
    req = evolve(req, barcodes=action.barcodes, state=state, item_at=state, prior=None,
                  answer_by=None)
    out.send.append(_ram(req, ctx, Action.RECEIVED, action.note))
    volumes = len(action.barcodes)
    out.log("received", f"Received {volumes} item{'s' if volumes > 1 else ''} "
            f"({', '.join(action.barcodes)})", barcodes=list(action.barcodes))
    _items(req, out, "in_transit" if action.in_transit else "on_hold")
    if state is S.ON_HOLD:
        req = _notice(req, out, "on_hold", f"{_title(req)} is ready for pickup at "
                      f"{req.form.pickup_location}")
    return req


def _staff_on_hold(req, action, ctx, out):
    req = evolve(req, item_at=S.ON_HOLD)
    _items(req, out, "on_hold")
    out.log("on_hold", f"On the hold shelf at {req.form.pickup_location}")
    return _notice(req, out, "on_hold", f"{_title(req)} is ready for pickup at "
                   f"{req.form.pickup_location}")


def _staff_loan_to_patron(req, action, ctx, out):
    req = evolve(req, item_at=S.ON_LOAN)
    _items(req, out, "on_loan")
    out.log("loaned_to_patron", f"Loaned to patron {req.form.patron_id}, due "
            f"{_day(req.due_date)}")
    return req


def _staff_patron_return(req, action, ctx, out):
    req = evolve(req, item_at=S.RETURNED_BY_PATRON)
    _items(req, out, "returned_by_patron")
    out.log("returned_by_patron", "The patron returned the item")
    return req


def _staff_return_to_partner(req, action, ctx, out):
    req = evolve(req, item_at=S.RETURNED_TO_PARTNER)
    out.send.append(_ram(req, ctx, Action.SHIPPED_RETURN, action.note))
    _items(req, out, "returned_to_partner")
    out.log("returned_to_partner", f"Item sent back to {req.partner}")
    return req


def _staff_renew(req, action, ctx, out):
    wish = f"Renewal requested until {action.due_date.isoformat()}." if action.due_date else None
    note = " ".join(x for x in (wish, action.note) if x) or None
    req = evolve(req, pending_renew=RenewRequest(asked_at=ctx.now, asked_by=out.actor,
                                                  prior=req.state, note=note))
    out.send.append(_ram(req, ctx, Action.RENEW, note))
    out.log("renew_requested", f"Renewal asked of {req.partner}")
    return req


def _staff_cancel(req, action: StaffAction, ctx, out):
    reason = action.reason or "cancelled by staff"
    pending = CancelRequest(kind="request", asked_at=ctx.now, asked_by=out.actor,
                            prior=req.state, reason=reason, note=action.note,
                            notify_patron=action.notify_patron)
    if req.state in (S.CREATED, S.UNFILLED, S.RETRY_WAIT):
        # nothing outstanding with a lender: cancel here and now
        if req.state is S.RETRY_WAIT:
            req = _close_entry(req, ctx, EntryState.CANCELLED, f"cancelled: {reason}")
        return _cancelled(req, ctx, out, pending)
    note = reason + (f": {action.note}" if action.note else "")
    req = evolve(req, pending_cancel=pending, state=S.CANCEL_REQUESTED)
    out.send.append(_ram(req, ctx, Action.CANCEL, note))
    out.log("cancel_requested", f"Cancellation asked of {req.partner}: {note}")
    return req


def _staff_cancel_partner(req, action: StaffAction, ctx, out):
    if req.state is S.RETRY_WAIT:
        req = _close_entry(req, ctx, EntryState.CANCELLED, "retry cancelled by staff")
        out.log("partner_cancelled", f"Retry with {req.partner} dropped; moving on")
        return _advance(req, ctx, out)
    pending = CancelRequest(kind="partner", asked_at=ctx.now, asked_by=out.actor,
                            prior=req.state, note=action.note)
    req = evolve(req, pending_cancel=pending, state=S.CANCEL_REQUESTED)
    out.send.append(_ram(req, ctx, Action.CANCEL, action.note))
    out.log("cancel_partner", f"Cancellation asked of {req.partner}, to move on in the rota")
    return req


def _staff_condition_answer(req, action: StaffAction, ctx, out):
    offer = req.open_offer
    assert offer is not None
    answered = evolve(offer, answer="accepted" if action.accept else "rejected",
                       answered_at=ctx.now, answered_by=out.actor, answer_note=action.note)
    req = evolve(req, conditions=req.conditions[:-1] + (answered,))
    if action.accept:
        out.send.append(_ram(req, ctx, Action.NOTIFICATION, _accept_message(action.note)))
        out.log("accepted_conditions", f"Conditions of {req.partner} accepted")
        return evolve(req, state=req.prior or _resume_state(req.lender_status), prior=None)
    out.send.append(_ram(req, ctx, Action.CANCEL,
                         "REJECT" + (f": {action.note}" if action.note else "")))
    out.log("refused_conditions", f"Conditions of {req.partner} refused; moving on")
    req = _close_entry(req, ctx, EntryState.REFUSED,
                       "conditions refused" + (f": {action.note}" if action.note else ""))
    return _advance(req, ctx, out)


def _staff_status_request(req, action, ctx, out):
    out.send.append(_ram(req, ctx, Action.STATUS_REQUEST))
    out.log("status_request", f"Status asked of {req.partner}")
    return req


def _staff_message(req, action: StaffAction, ctx, out):
    if req.active_entry is None or req.active_entry.attempt_request_id is None:
        raise StaffActionError("there is no lender to send a message to")
    if not action.note:
        raise StaffActionError("message needs the text to send (note)")
    out.send.append(_ram(req, ctx, Action.NOTIFICATION, action.note))
    out.log("message_sent", f"Message to {req.partner}: {action.note}")
    return _message(req, ctx, "out", action.note or "", read=True)


def _staff_note(req, action: StaffAction, ctx, out):
    if not action.note:
        raise StaffActionError("note needs its text")
    out.log("note", f"Note: {action.note}")
    return evolve(req, notes=req.notes + (Note(at=ctx.now, author=out.actor,
                                                text=action.note or ""),))


def _staff_mark_read(req, action, ctx, out):
    out.log("marked_read", "Messages marked as read")
    return evolve(req, messages=tuple(evolve(m, read=True) for m in req.messages))


def _staff_lost(req, action: StaffAction, ctx, out):
    text = "Lost: the item was lost while with us" + (f". {action.note}" if action.note else "")
    if _partner_version(ctx, req.partner or "") is Version.V2021_2:
        out.send.append(_ram(req, ctx, Action.LOST, action.note))
    else:  # v1.2 has no Lost action (ISO 18626:2021 adds it)
        out.send.append(_ram(req, ctx, Action.NOTIFICATION, text + "; please send your charges"))
    _items(req, out, "lost")
    out.log("lost", f"Reported lost to {req.partner}")
    return evolve(req, end_reason="lost", pending_renew=None)


def _staff_rerequest(req, action: StaffAction, ctx, out):
    symbols: tuple[str, ...] = action.partners
    if action.rota:
        found = rota_mod.find_rota(ctx.rotas, action.rota)
        if found is None:
            raise StaffActionError(f"{action.rota!r} is not a configured rota")
        symbols = symbols + tuple(map(str, found.partners))
    problems = []
    for symbol in action.partners:
        partner = rota_mod.find_partner(ctx.partners, symbol)
        if partner is None:
            problems.append(f"{symbol} is not a configured partner")
        elif not getattr(partner, "borrow_from", False):
            problems.append(f"{partner.symbol} is a partner we do not borrow from")
    if problems:
        raise StaffActionError("; ".join(problems))
    waiting = {e.symbol.casefold() for e in req.rota if e.state is EntryState.PENDING}
    new = [e for e in rota_mod.entries_for(symbols, partners=ctx.partners,
                                           closed_partners=ctx.closed_partners, today=ctx.today)
           if e.symbol.casefold() not in waiting]
    req = evolve(req, rota=req.rota + tuple(new))
    if action.note:
        req = evolve(req, notes=req.notes + (Note(at=ctx.now, author=out.actor,
                                                   text=action.note),))
    out.log("rerequest", "Re-request" + (f" to {', '.join(e.symbol for e in new)}" if new else ""))
    result = _advance(req, ctx, out)
    if result.state is S.UNFILLED:
        skipped = "; ".join(f"{e.symbol}: {e.note}" for e in new if e.note) or "none given"
        raise StaffActionError(f"no partner can be asked (pending partners or new partners "
                               f"needed; skipped: {skipped})")
    return result


def _with_active_kept(req: BorrowingRequest, entries: list[RotaEntry]) -> BorrowingRequest:
    rari = req.requesting_request_id
    active = None
    if rari is not None:
        active = next(i for i, e in enumerate(entries) if e.attempt_request_id == rari)
    return evolve(req, rota=tuple(entries), active=active)


def _staff_rota_move(req, action: StaffAction, ctx, out):
    assert action.symbol is not None and action.position is not None
    entries = rota_mod.move_entry(req.rota, action.symbol, action.position)
    out.log("rota_move", f"{action.symbol} moved to pending position {action.position}")
    return _with_active_kept(req, entries)


def _staff_rota_add(req, action: StaffAction, ctx, out):
    assert action.symbol is not None
    entries = rota_mod.add_partner(req.rota, action.symbol, partners=ctx.partners,
                                   position=action.position,
                                   closed_partners=ctx.closed_partners, today=ctx.today)
    out.log("rota_add", f"{action.symbol} added to the rota")
    return _with_active_kept(req, entries)


def _staff_rota_remove(req, action: StaffAction, ctx, out):
    assert action.symbol is not None
    entries = rota_mod.remove_entry(req.rota, action.symbol, action.note)
    out.log("rota_remove", f"{action.symbol} removed from the rota")
    return _with_active_kept(req, entries)


# -- TIMER handlers ------------------------------------------------------------------------


def _timer_answer_timeout(req, _ev, ctx, out):
    hours = f"{_hours(ctx):g}"
    note = f"No answer within {hours} hours; request withdrawn"
    out.send.append(_ram(req, ctx, Action.CANCEL, note))
    out.log("timed_out", f"{req.partner} did not answer within {hours} hours; moving on")
    req = _close_entry(req, ctx, EntryState.TIMED_OUT, f"no answer within {hours} hours")
    return _advance(req, ctx, out)


def _send_retry(req: BorrowingRequest, ctx: BorrowingContext, out: _Out) -> BorrowingRequest:
    plan = req.retry
    assert plan is not None and req.active is not None
    if plan.retry_before is not None and ctx.now > plan.retry_before:
        req = _close_entry(req, ctx, EntryState.UNFILLED, "retry window passed")
        return _advance(req, ctx, out)
    closed = rota_mod.closed_note(req.partner or "", ctx.closed_partners, ctx.today)
    if closed is not None:
        req = _close_entry(req, ctx, EntryState.SKIPPED, f"retry not sent: {closed}")
        return _advance(req, ctx, out)
    return _send_request(req, ctx, out, req.active,
                         previous_request_id=plan.previous_request_id, max_costs=plan.max_costs)


def _timer_retry_due(req, _ev, ctx, out):
    return _send_retry(req, ctx, out)


def _timer_overdue(req, _ev, ctx, out):
    out.log("overdue", f"Past the due date {_day(req.due_date)}")
    if req.state is S.ON_LOAN:
        req = _notice(req, out, "overdue", f"{_title(req)} was due on {_day(req.due_date)}; "
                      "please return it")
    return req


# -- the table ----------------------------------------------------------------------------------

TRANSITIONS: dict[tuple[BorrowingState, BorrowingInput],
                  tuple[Handler, BorrowingState | None]] = {}


def _rows(states: Any, inp: BorrowingInput, handler: Handler,
          next_state: BorrowingState | None) -> None:
    for state in states if isinstance(states, (tuple, list, frozenset, set)) else (states,):
        key = (state, inp)
        assert key not in TRANSITIONS, key
        TRANSITIONS[key] = (handler, next_state)


_WITH_LENDER = (*BEFORE_SHIPPING, S.RETRY_WAIT, *LOAN_STATES, S.RETURNED_TO_PARTNER,
                S.CANCEL_REQUESTED, S.LOST)
_OPEN = (S.CREATED, *BEFORE_SHIPPING, S.RETRY_WAIT, S.CANCEL_REQUESTED, S.UNFILLED)
_ANSWERING = (*BEFORE_SHIPPING, S.CANCEL_REQUESTED)
_COMPLETABLE = (*LOAN_STATES, S.RETURNED_TO_PARTNER, S.LOST)

# partner messages (clause 8.4 statuses, Annex A)
_rows(S.SENT, I.RECV_REQUEST_RECEIVED, _stay, None)
_rows((S.SENT, S.EXPECT_TO_SUPPLY, S.CONDITIONAL), I.RECV_EXPECT_TO_SUPPLY, _recv_expect, None)
_rows(BEFORE_SHIPPING, I.RECV_WILL_SUPPLY, _recv_will_supply, None)
_rows(_ANSWERING, I.RECV_LOANED, _recv_loaned, S.SHIPPED)
_rows((*LOAN_STATES, S.RETURNED_TO_PARTNER), I.RECV_LOANED, _recv_loaned_again, None)
_rows((*LOAN_STATES, S.RETURNED_TO_PARTNER), I.RECV_OVERDUE, _recv_overdue, None)
_rows((*LOAN_STATES, S.RETURNED_TO_PARTNER), I.RECV_RECALLED, _recv_recalled, None)
_rows(_ANSWERING, I.RECV_RETRY_POSSIBLE, _recv_retry_possible, None)
_rows(_ANSWERING, I.RECV_UNFILLED, _recv_unfilled, None)
_rows(_ANSWERING, I.RECV_CANCELLED, _recv_cancelled, None)
_rows((*_ANSWERING, S.SHIPPED), I.RECV_COPY_COMPLETED, _recv_copy_completed, S.COPY_DELIVERED)
_rows(_COMPLETABLE, I.RECV_LOAN_COMPLETED, _recv_loan_completed, S.COMPLETE)
_rows(_COMPLETABLE, I.RECV_COMPLETED_WITHOUT_RETURN, _recv_completed_without_return, S.COMPLETE)
_rows(S.COMPLETE, I.RECV_COMPLETED_WITHOUT_RETURN, _recv_charges_after_closing, None)
_rows(S.RENEW_REQUESTED, I.RECV_RENEW_RESPONSE_YES, _recv_renew_yes, None)
_rows(S.RENEW_REQUESTED, I.RECV_RENEW_RESPONSE_NO, _recv_renew_no, None)
_rows(S.CANCEL_REQUESTED, I.RECV_CANCEL_RESPONSE_YES, _recv_cancel_yes, None)
_rows(S.CANCEL_REQUESTED, I.RECV_CANCEL_RESPONSE_NO, _recv_cancel_no, None)
_rows(LOAN_STATES, I.RECV_CANCEL_RESPONSE_NO, _recv_cancel_no_after_shipping, None)
# The lender's message that ended the request, sent again (it did not get our
# confirmation, and retried): confirmed, recorded, no change.
_rows(S.COMPLETE, I.RECV_LOAN_COMPLETED, _stay, None)
_rows(S.COPY_DELIVERED, I.RECV_COPY_COMPLETED, _stay, None)
_rows(S.CANCELLED, I.RECV_CANCEL_RESPONSE_YES, _stay, None)
_rows(S.CANCELLED, I.RECV_CANCELLED, _stay, None)
_rows((*_WITH_LENDER, *FINAL_STATES), I.RECV_NOTIFICATION, _recv_notification, None)
_rows((*_WITH_LENDER, *FINAL_STATES), I.RECV_STATUS_REQUEST_RESPONSE, _stay, None)

# staff and patron actions
_rows((S.SHIPPED, S.EXPECT_TO_SUPPLY, S.WILL_SUPPLY), I.STAFF_RECEIVE, _staff_receive, None)
_rows(S.RECEIVED, I.STAFF_ON_HOLD, _staff_on_hold, S.ON_HOLD)
_rows((S.RECEIVED, S.ON_HOLD), I.STAFF_LOAN_TO_PATRON, _staff_loan_to_patron, S.ON_LOAN)
_rows((S.ON_HOLD, S.ON_LOAN, S.OVERDUE, S.RECALLED), I.STAFF_PATRON_RETURN,
      _staff_patron_return, S.RETURNED_BY_PATRON)
_rows((*WITH_US, S.OVERDUE, S.RECALLED), I.STAFF_RETURN_TO_PARTNER, _staff_return_to_partner,
      S.RETURNED_TO_PARTNER)
_rows((S.RECEIVED, S.ON_HOLD, S.ON_LOAN, S.OVERDUE), I.STAFF_RENEW, _staff_renew,
      S.RENEW_REQUESTED)
_rows((S.CREATED, *BEFORE_SHIPPING, S.RETRY_WAIT, S.UNFILLED), I.STAFF_CANCEL, _staff_cancel,
      None)
_rows((*BEFORE_SHIPPING, S.RETRY_WAIT), I.STAFF_CANCEL_PARTNER, _staff_cancel_partner, None)
_rows(S.CONDITIONAL, I.STAFF_CONDITION_ANSWER, _staff_condition_answer, None)
_rows(_WITH_LENDER, I.STAFF_STATUS_REQUEST, _staff_status_request, None)
_rows((*_WITH_LENDER, *FINAL_STATES), I.STAFF_MESSAGE, _staff_message, None)
_rows(tuple(S), I.STAFF_NOTE, _staff_note, None)
_rows(tuple(S), I.STAFF_MARK_READ, _staff_mark_read, None)
_rows((S.SHIPPED, *WITH_US, S.OVERDUE, S.RECALLED), I.STAFF_LOST, _staff_lost, S.LOST)
_rows((S.CREATED, S.UNFILLED), I.STAFF_REREQUEST, _staff_rerequest, None)
_rows(_OPEN, I.STAFF_ROTA_MOVE, _staff_rota_move, None)
_rows(_OPEN, I.STAFF_ROTA_ADD, _staff_rota_add, None)
_rows(_OPEN, I.STAFF_ROTA_REMOVE, _staff_rota_remove, None)

# the clock
_rows(S.SENT, I.TIMER_ANSWER_TIMEOUT, _timer_answer_timeout, None)
_rows(S.RETRY_WAIT, I.TIMER_RETRY_DUE, _timer_retry_due, None)
_rows((S.RECEIVED, S.ON_HOLD, S.ON_LOAN), I.TIMER_OVERDUE, _timer_overdue, S.OVERDUE)


# Why an action is refused, beyond "not now" (shown with the illegal-transition error).
_HINTS: dict[BorrowingInput, str] = {
    I.STAFF_CANCEL: "a request can be cancelled only before the lender ships it; once it is "
    "here, return it to the lender",
    I.STAFF_CANCEL_PARTNER: "only a lender that has not shipped yet can be cancelled",
    I.STAFF_RECEIVE: "an item can be received once the lender has agreed to supply it",
    I.STAFF_RENEW: "a renewal can be asked while the item is with us and not recalled, and "
    "one at a time",
    I.STAFF_CONDITION_ANSWER: "there are no conditions waiting for an answer",
    I.STAFF_REREQUEST: "a re-request is for a request that reached the end of its rota",
    I.STAFF_RETURN_TO_PARTNER: "only an item we have received can be returned",
}


# -- entry points ---------------------------------------------------------------------------------


def apply(tx: BorrowingRequest, inp: BorrowingInput, event: Any, *, ctx: BorrowingContext,
          actor: str = "system") -> Result[BorrowingRequest]:
    """Run one table row: the single place where inputs meet the table."""
    try:
        handler, next_state = TRANSITIONS[(tx.state, inp)]
    except KeyError:
        raise _illegal(tx, inp, event) from None
    out = _Out(actor, ctx)
    if inp.name.startswith("RECV_"):
        tx = _record_sam(tx, inp, event, ctx, out)
    new = handler(tx, event, ctx, out)
    if next_state is not None:
        new = evolve(new, state=next_state)
    if new.state is not tx.state:
        out.log("state", f"{tx.state.label} -> {new.state.label}", old=tx.state.value,
                new=new.state.value)
    return Result(state=new, send=tuple(out.send), history=tuple(out.history),
                  effects=tuple(out.effects))


def _illegal(tx: BorrowingRequest, inp: BorrowingInput, event: Any) -> Exception:
    if inp.name.startswith("RECV_"):
        what = _describe_sam(event) if isinstance(event, SupplyingAgencyMessage) else inp.name
        return ProtocolError(
            ErrorType.UNRECOGNISED_DATA_VALUE,
            f"{what} is not expected now: borrowing request {tx.public_id} is "
            f"{tx.state.label}",
        )
    name = ACTION_NAMES.get(inp, inp.name.lower())
    hint = _HINTS.get(inp)
    return StaffActionError(
        f"cannot {name.replace('_', ' ')} now: the request is {tx.state.label}"
        + (f" ({hint})" if hint else "")
    )


def _describe_sam(msg: SupplyingAgencyMessage) -> str:
    reason = msg.message_info.reason_for_message.value
    status = msg.status_info.status.value if msg.status_info.status else "empty"
    return f"{reason} with status {status}"


def create(form: BorrowingForm, *, ctx: BorrowingContext, rota: Any,
           public_id: str) -> Result[BorrowingRequest]:
    """A new borrowing request, sent to the first partner in ``rota`` that can be asked."""
    closure = ctx.closure
    if closure is not None and closure.applies_on(ctx.today):
        raise StaffActionError(
            f"{closure.describe('Borrowing')}: new requests cannot be created"
        )
    req = BorrowingRequest(public_id=public_id, form=form, state=S.CREATED,
                           created_at=ctx.now, rota=tuple(rota))
    out = _Out("system", ctx)
    out.log("created", f"Request created for patron {form.patron_id}: {_title(req)}",
            partners=[e.symbol for e in req.rota])
    new = _advance(req, ctx, out)
    return Result(state=new, send=tuple(out.send), history=tuple(out.history),
                  effects=tuple(out.effects))


_STATUS_INPUT = {
    Status.REQUEST_RECEIVED: I.RECV_REQUEST_RECEIVED,
    Status.EXPECT_TO_SUPPLY: I.RECV_EXPECT_TO_SUPPLY,
    Status.WILL_SUPPLY: I.RECV_WILL_SUPPLY,
    Status.LOANED: I.RECV_LOANED,
    Status.OVERDUE: I.RECV_OVERDUE,
    Status.RECALLED: I.RECV_RECALLED,
    Status.RETRY_POSSIBLE: I.RECV_RETRY_POSSIBLE,
    Status.UNFILLED: I.RECV_UNFILLED,
    Status.COPY_COMPLETED: I.RECV_COPY_COMPLETED,
    Status.LOAN_COMPLETED: I.RECV_LOAN_COMPLETED,
    Status.COMPLETED_WITHOUT_RETURN: I.RECV_COMPLETED_WITHOUT_RETURN,
    Status.CANCELLED: I.RECV_CANCELLED,
    Status.HOLD_RETURN: I.RECV_NOTIFICATION,
    Status.RELEASE_HOLD_RETURN: I.RECV_NOTIFICATION,
}


def classify(msg: SupplyingAgencyMessage) -> BorrowingInput:
    """Which input a supplying agency message is (reason first, then status)."""
    reason = msg.message_info.reason_for_message
    answer = msg.message_info.answer_yes_no
    if reason in (ReasonForMessage.RENEW_RESPONSE, ReasonForMessage.CANCEL_RESPONSE):
        if answer is None:
            raise ProtocolError(ErrorType.UNRECOGNISED_DATA_ELEMENT,
                                f"answerYesNo is required with {reason.value}")
        if reason is ReasonForMessage.RENEW_RESPONSE:
            return I.RECV_RENEW_RESPONSE_YES if answer is YesNo.Y else I.RECV_RENEW_RESPONSE_NO
        return I.RECV_CANCEL_RESPONSE_YES if answer is YesNo.Y else I.RECV_CANCEL_RESPONSE_NO
    if reason is ReasonForMessage.NOTIFICATION:
        return I.RECV_NOTIFICATION
    if reason is ReasonForMessage.STATUS_REQUEST_RESPONSE:
        return I.RECV_STATUS_REQUEST_RESPONSE
    status = msg.status_info.status
    if status is None:
        raise ProtocolError(ErrorType.UNRECOGNISED_DATA_VALUE,
                            f"statusInfo/status is empty on a {reason.value}")
    return _STATUS_INPUT[status]


def _record_sam(req: BorrowingRequest, inp: BorrowingInput, msg: SupplyingAgencyMessage,
                ctx: BorrowingContext, out: _Out) -> BorrowingRequest:
    """What every accepted partner message changes: ids, last status, unread note."""
    status = msg.status_info.status
    changes: dict[str, Any] = {
        "supplying_request_id": msg.header.supplying_agency_request_id
        or req.supplying_request_id,
    }
    if status is not None and inp not in (I.RECV_NOTIFICATION, I.RECV_STATUS_REQUEST_RESPONSE,
                                          I.RECV_CANCEL_RESPONSE_NO):
        changes["lender_status"] = status.value
    req = evolve(req, **changes)
    if req.active is not None and req.rota[req.active].state is EntryState.ACTIVE:
        req = _set_entry(req, req.active, answered_at=ctx.now)
    note = _clean(msg.message_info.note)
    if inp is I.RECV_STATUS_REQUEST_RESPONSE:
        shown = status.value if status else "no status"
        req = _message(req, ctx, "in", f"Status: {shown}" + (f". {note}" if note else ""))
    elif note and inp not in (I.RECV_UNFILLED, I.RECV_RETRY_POSSIBLE):
        req = _message(req, ctx, "in", note)
    out.log(f"received_{inp.value[5:]}", f"{req.partner}: {_describe_sam(msg)}"
            + (f" — {note}" if note else ""), reason=msg.message_info.reason_for_message.value,
            status=status.value if status else None, note=note)
    return req


def receive(tx: BorrowingRequest, msg: SupplyingAgencyMessage, *,
            ctx: BorrowingContext) -> Result[BorrowingRequest]:
    """A partner's supplyingAgencyMessage about this request."""
    header = msg.header
    if not ctx.our_symbol.same_agency(header.requesting_agency_id):
        raise ProtocolError(ErrorType.UNRECOGNISED_DATA_VALUE,
                            f"requestingAgencyId {header.requesting_agency_id} is not this "
                            f"library ({ctx.our_symbol})")
    rari = header.requesting_agency_request_id
    if rari != tx.requesting_request_id:
        late = _late_cancel_answer(tx, msg, ctx) or _late_unfilled_again(tx, msg, ctx)
        if late is not None:
            return late
        raise _not_current(tx, rari)
    entry = tx.active_entry
    assert entry is not None
    if not AgencyId.parse(entry.symbol).same_agency(header.supplying_agency_id):
        raise ProtocolError(ErrorType.UNRECOGNISED_DATA_VALUE,
                            f"request id {rari} was sent to {entry.symbol}, not to "
                            f"{header.supplying_agency_id}")
    return apply(tx, classify(msg), msg, ctx=ctx, actor=f"peer:{entry.symbol}")


def _not_current(tx: BorrowingRequest, rari: str) -> ProtocolError:
    attempt = next((a for a in tx.attempts if a.request_id == rari), None)
    if attempt is None:
        return ProtocolError(ErrorType.UNRECOGNISED_DATA_VALUE,
                             f"request id {rari} is not a request of ours")
    now_with = (f"the request is now with {tx.partner}" if tx.partner
                else f"the request is {tx.state.label}")
    return ProtocolError(ErrorType.UNRECOGNISED_DATA_VALUE,
                         f"request id {rari} belongs to an earlier attempt with "
                         f"{attempt.partner}; {now_with}")


def _late_cancel_answer(tx: BorrowingRequest, msg: SupplyingAgencyMessage,
                        ctx: BorrowingContext) -> Result[BorrowingRequest] | None:
    """An earlier lender answering the Cancel we sent when we moved on: expected, recorded."""
    mi = msg.message_info
    is_answer = mi.reason_for_message is ReasonForMessage.CANCEL_RESPONSE or (
        msg.status_info.status is Status.CANCELLED
    )
    if not is_answer:
        return None
    rari = msg.header.requesting_agency_request_id
    entry = next((e for e in tx.rota if e.attempt_request_id == rari), None)
    if entry is None or entry.state not in (EntryState.TIMED_OUT, EntryState.REFUSED,
                                            EntryState.CANCELLED):
        return None
    if not AgencyId.parse(entry.symbol).same_agency(msg.header.supplying_agency_id):
        return None
    out = _Out(f"peer:{entry.symbol}", ctx)
    new = tx
    if mi.answer_yes_no is YesNo.N:
        note = _clean(mi.note)
        new = _message(tx, ctx, "in", f"{entry.symbol} refused our cancellation of attempt "
                       f"{rari}; it may still send the item" + (f": {note}" if note else ""),
                       partner=entry.symbol)
        out.log("late_cancel_refused", f"{entry.symbol} refused to cancel attempt {rari}")
    else:
        out.log("late_cancel_confirmed", f"{entry.symbol} confirmed the cancellation of "
                f"attempt {rari}")
    return Result(state=new, history=tuple(out.history))


def _late_unfilled_again(tx: BorrowingRequest, msg: SupplyingAgencyMessage,
                         ctx: BorrowingContext) -> Result[BorrowingRequest] | None:
    """An earlier lender sending again the Unfilled that ended its attempt (it never got
    our confirmation, and retried): confirmed, recorded, nothing changes."""
    if msg.status_info.status is not Status.UNFILLED:
        return None
    rari = msg.header.requesting_agency_request_id
    entry = next((e for e in tx.rota if e.attempt_request_id == rari), None)
    if entry is None or entry.state is not EntryState.UNFILLED or not AgencyId.parse(
            entry.symbol).same_agency(msg.header.supplying_agency_id):
        return None
    out = _Out(f"peer:{entry.symbol}", ctx)
    out.log("unfilled_again", f"{entry.symbol} sent its Unfilled for attempt {rari} again "
            "(already recorded): no change")
    return Result(state=tx, history=tuple(out.history))


def staff(tx: BorrowingRequest, action: StaffAction, *,
          ctx: BorrowingContext) -> Result[BorrowingRequest]:
    """A staff (or patron) action."""
    return apply(tx, action.input, action, ctx=ctx, actor=action.actor)


def _due_timer(tx: BorrowingRequest, now: datetime) -> BorrowingInput | None:
    if tx.state is S.RETRY_WAIT and tx.retry is not None and now >= tx.retry.at:
        return I.TIMER_RETRY_DUE
    if tx.state is S.SENT and tx.answer_by is not None and now >= tx.answer_by:
        return I.TIMER_ANSWER_TIMEOUT
    if tx.state in (S.RECEIVED, S.ON_HOLD, S.ON_LOAN) and tx.due_date is not None \
            and now >= tx.due_date:
        return I.TIMER_OVERDUE
    return None


def tick(tx: BorrowingRequest, *, ctx: BorrowingContext) -> Result[BorrowingRequest]:
    """Fire whichever timer is due (none: no change)."""
    inp = _due_timer(tx, ctx.now)
    if inp is None:
        return Result(state=tx)
    return apply(tx, inp, None, ctx=ctx)


def next_timer(tx: BorrowingRequest) -> datetime | None:
    """When :func:`tick` should next run for this request, or None."""
    if tx.state is S.RETRY_WAIT and tx.retry is not None:
        return tx.retry.at
    if tx.state is S.SENT:
        return tx.answer_by
    if tx.state in (S.RECEIVED, S.ON_HOLD, S.ON_LOAN):
        return tx.due_date
    return None


def delivery_failed(tx: BorrowingRequest, *, kind: str, error: str, ctx: BorrowingContext,
                    request_id: str | None = None, maybe_delivered: bool = False
                    ) -> Result[BorrowingRequest]:
    """A message we queued got an ERROR confirmation or could not be delivered in the end.

    ``kind`` is the message kind (``request`` ...).  A failed Request to the
    current lender ends that attempt and moves on in the rota, unless an earlier
    attempt may have reached the lender (``maybe_delivered``): it may hold the request,
    and answer ERROR to it sent again (CrossLink: the id "already exists"), so the
    request stays with it until staff decide or its answer time runs out (two lenders
    must not both ship).  Anything else is recorded and flags the request for attention.
    """
    out = _Out("system", ctx)
    current = request_id is None or request_id == tx.requesting_request_id
    if kind == Request.KIND and current and tx.state is S.SENT and maybe_delivered:
        wait = (f"if it does not answer by {tx.answer_by.isoformat(timespec='minutes')}, the "
                "next lender is asked" if tx.answer_by is not None
                else "no answer time is set: move on by hand if it does not answer")
        text = (f"Request to {tx.partner} failed: {error}. An earlier attempt may have "
                f"reached {tx.partner}, which may hold the request: check with it; {wait}.")
        out.log("delivery_uncertain", text, error=error)
        new = _message(tx, ctx, "problem", text)
    elif kind == Request.KIND and current and tx.state is S.SENT:
        out.log("delivery_failed", f"Request to {tx.partner} failed: {error}", error=error)
        new = _close_entry(tx, ctx, EntryState.UNFILLED, f"request not accepted: {error}")
        new = _advance(new, ctx, out)
        if new.state is not tx.state:
            out.log("state", f"{tx.state.label} -> {new.state.label}", old=tx.state.value,
                    new=new.state.value)
    else:
        out.log("delivery_failed", f"{kind} to {tx.partner or 'the lender'} failed: {error}",
                error=error, kind=kind)
        new = _message(tx, ctx, "problem", f"Our {kind} could not be delivered: {error}")
    return Result(state=new, send=tuple(out.send), history=tuple(out.history),
                  effects=tuple(out.effects))


# -- JSON codec (exact round trip) -------------------------------------------------------------


_HINT_CACHE: dict[type, dict[str, Any]] = {}


def _hints(cls: type) -> dict[str, Any]:
    if cls not in _HINT_CACHE:
        _HINT_CACHE[cls] = typing.get_type_hints(cls)
    return _HINT_CACHE[cls]


def _decode(tp: Any, value: Any) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None:
            return None
        inner = [a for a in args if a is not type(None)]
        return _decode(inner[0], value)
    if value is None:
        return None
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_decode(args[0], v) for v in value)
        return tuple(_decode(a, v) for a, v in zip(args, value, strict=True))
    if origin in (dict, Mapping) or tp is Any:
        return value
    if isinstance(tp, type):
        if is_dataclass(tp):
            hints = _hints(tp)
            return tp(**{f.name: _decode(hints[f.name], value[f.name])
                         for f in fields(tp) if f.name in value})
        if issubclass(tp, enum.Enum):
            return tp(value)
        if tp is datetime:
            return datetime.fromisoformat(value)
        if tp is date:
            return date.fromisoformat(value)
        if tp is Decimal:
            return Decimal(value)
    return value
