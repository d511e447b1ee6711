"""The lending side of an ISO 18626 transaction, as a transition table.

Pure (docs/ARCHITECTURE.md, "The state machines"): every function takes the
current :class:`LendingTransaction`, one input and a :class:`LendingContext`
(our symbol, policy, effective closure, partner, ``now``) and returns a
:class:`~node.machine.Result`: the new transaction, the
``SupplyingAgencyMessage``\\ s to queue, history entries and effects.

Rule: everything that decides which (state, input) pairs are legal lives in
:data:`TRANSITIONS`.  A missing key is the one illegal-transition error:
``ProtocolError(UNRECOGNISED_DATA_VALUE)`` for a partner's message,
:class:`~node.machine.StaffActionError` for a staff action or timer.

Protocol rules followed (ISO 18626:2017 clause 8.4/8.5, 2021 clause 9; see
shared/iso18626/NOTES.md section 4): ``RequestResponse`` only on the first
answer, ``StatusChange`` for later changes, ``Notification`` for notes (the
current status repeated); Cancel -> ``CancelResponse`` Y/N; Renew ->
``RenewResponse`` with a new ``dueDate`` on Y; StatusRequest ->
``StatusRequestResponse``; Received/ShippedReturn need only the confirmation;
check-in -> ``LoanCompleted``; Lost (2021) -> ``CompletedWithoutReturn``.
Loan conditions travel as ``deliveryInfo/loanCondition`` on ``WillSupply``;
the borrower answers with a Notification whose note starts ``ACCEPT`` or
``REJECT`` (Alma), carries ``#ReShareLoanConditionAgreeResponse#``
(ReShare; accept), or with ``Cancel`` (reject).
"""

from __future__ import annotations

import enum
import hashlib
import re
import sys
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import MISSING, dataclass, fields, is_dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any, ClassVar, Protocol

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
    ServiceType,
    Status,
    YesNo,
    normalise_open,
)
from ..protocol.errors import ProtocolError
from ..protocol.messages import (
    AgencyId,
    Costs,
    DeliveryInfo,
    ElectronicAddress,
    Header,
    MessageInfo,
    PhysicalAddress,
    Request,
    RequestingAgencyMessage,
    StatusInfo,
    SupplyingAgencyMessage,
)
from .locate import LocateResult

frozen = dataclass(frozen=True, kw_only=True, slots=True)

#: Time of day written for a due date (``dueDate`` is an xs:dateTime).  Noon
#: UTC reads as the same calendar day in every zone from UTC-11 to UTC+11.
DUE_TIME = time(12, 0, tzinfo=UTC)


# -- states and inputs -----------------------------------------------------------


class LendingState(enum.Enum):
    """Where a lending request stands; :data:`ISO_STATUS` is what we report."""

    NEW = "NEW"  # before the Request is processed (never stored)
    RECEIVED = "RECEIVED"  # awaiting a staff decision
    EXPECT_TO_SUPPLY = "EXPECT_TO_SUPPLY"
    WILL_SUPPLY = "WILL_SUPPLY"  # to be pulled and shipped
    CONDITIONAL = "CONDITIONAL"  # conditions sent, awaiting the borrower's answer
    SHIPPED = "SHIPPED"  # on loan
    OVERDUE = "OVERDUE"
    RECALLED = "RECALLED"
    RETURN_SHIPPED = "RETURN_SHIPPED"  # borrower sent ShippedReturn; awaiting check-in
    COPY_COMPLETED = "COPY_COMPLETED"
    LOAN_COMPLETED = "LOAN_COMPLETED"
    COMPLETED_WITHOUT_RETURN = "COMPLETED_WITHOUT_RETURN"  # lost / damaged
    UNFILLED = "UNFILLED"
    RETRY_POSSIBLE = "RETRY_POSSIBLE"
    CANCELLED = "CANCELLED"


S = LendingState

ISO_STATUS: dict[LendingState, Status] = {
    S.NEW: Status.REQUEST_RECEIVED,
    S.RECEIVED: Status.REQUEST_RECEIVED,
    S.EXPECT_TO_SUPPLY: Status.EXPECT_TO_SUPPLY,
    S.WILL_SUPPLY: Status.WILL_SUPPLY,
    S.CONDITIONAL: Status.WILL_SUPPLY,  # there is no "Conditional" status
    S.SHIPPED: Status.LOANED,
    S.OVERDUE: Status.OVERDUE,
    S.RECALLED: Status.RECALLED,
    S.RETURN_SHIPPED: Status.LOANED,  # or the Overdue/Recalled last reported
    S.COPY_COMPLETED: Status.COPY_COMPLETED,
    S.LOAN_COMPLETED: Status.LOAN_COMPLETED,
    S.COMPLETED_WITHOUT_RETURN: Status.COMPLETED_WITHOUT_RETURN,
    S.UNFILLED: Status.UNFILLED,
    S.RETRY_POSSIBLE: Status.RETRY_POSSIBLE,
    S.CANCELLED: Status.CANCELLED,
}

TERMINAL_STATES = frozenset(
    {S.COPY_COMPLETED, S.LOAN_COMPLETED, S.COMPLETED_WITHOUT_RETURN, S.UNFILLED,
     S.RETRY_POSSIBLE, S.CANCELLED}
)
BEFORE_SHIPPING = (S.RECEIVED, S.EXPECT_TO_SUPPLY, S.WILL_SUPPLY)
ON_LOAN = (S.SHIPPED, S.OVERDUE, S.RECALLED)


class LendingInput(enum.Enum):
    RECV_REQUEST = "RECV_REQUEST"
    RECV_REQUEST_AGAIN = "RECV_REQUEST_AGAIN"  # the Request we hold, resent: receive_request
    RECV_STATUS_REQUEST = "RECV_STATUS_REQUEST"
    RECV_RECEIVED = "RECV_RECEIVED"
    RECV_CANCEL = "RECV_CANCEL"
    RECV_RENEW = "RECV_RENEW"
    RECV_SHIPPED_RETURN = "RECV_SHIPPED_RETURN"
    RECV_SHIPPED_FORWARD = "RECV_SHIPPED_FORWARD"
    RECV_NOTIFICATION = "RECV_NOTIFICATION"
    RECV_HOLD_RETURN = "RECV_HOLD_RETURN"  # 2021
    RECV_LOST = "RECV_LOST"  # 2021
    RECV_CONDITIONS_ACCEPTED = "RECV_CONDITIONS_ACCEPTED"  # a Notification, see _condition_answer
    RECV_CONDITIONS_REJECTED = "RECV_CONDITIONS_REJECTED"
    STAFF_WILL_SUPPLY = "STAFF_WILL_SUPPLY"
    STAFF_EXPECT_TO_SUPPLY = "STAFF_EXPECT_TO_SUPPLY"
    STAFF_ADD_CONDITIONS = "STAFF_ADD_CONDITIONS"
    STAFF_REJECT = "STAFF_REJECT"
    STAFF_RETRY_POSSIBLE = "STAFF_RETRY_POSSIBLE"
    STAFF_SHIP = "STAFF_SHIP"
    STAFF_DELIVER_COPY = "STAFF_DELIVER_COPY"
    STAFF_RENEW_ANSWER = "STAFF_RENEW_ANSWER"
    STAFF_CANCEL_ANSWER = "STAFF_CANCEL_ANSWER"
    STAFF_CHECK_IN = "STAFF_CHECK_IN"
    STAFF_LOST = "STAFF_LOST"
    STAFF_RECALL = "STAFF_RECALL"
    STAFF_MESSAGE = "STAFF_MESSAGE"
    STAFF_NOTE = "STAFF_NOTE"
    STAFF_MARK_READ = "STAFF_MARK_READ"
    TIMER_OVERDUE = "TIMER_OVERDUE"


In = LendingInput

ACTION_INPUT: dict[Action, LendingInput] = {
    Action.STATUS_REQUEST: In.RECV_STATUS_REQUEST,
    Action.RECEIVED: In.RECV_RECEIVED,
    Action.CANCEL: In.RECV_CANCEL,
    Action.RENEW: In.RECV_RENEW,
    Action.SHIPPED_RETURN: In.RECV_SHIPPED_RETURN,
    Action.SHIPPED_FORWARD: In.RECV_SHIPPED_FORWARD,
    Action.NOTIFICATION: In.RECV_NOTIFICATION,
    Action.HOLD_RETURN: In.RECV_HOLD_RETURN,
    Action.LOST: In.RECV_LOST,
}


# -- context (filled by the service) ---------------------------------------------


class ClosureLike(Protocol):
    """The shape of ``node.config.Closure`` the machine uses."""

    active: bool
    start: date | None
    end: date | None
    note: str

    def applies_on(self, day: date) -> bool: ...
    def describe(self, kind: str) -> str: ...


@frozen
class LendingContext:
    """What the machine may know beyond the transaction; built per call.

    ``policy`` is a ``node.config.LendingPolicy``, ``closure`` the effective
    lending ``Closure`` (DB or config), ``partner`` the requesting agency's
    ``Partner`` (``None`` if unknown); ``now`` is aware UTC.
    """

    our_symbol: AgencyId
    policy: Any
    closure: ClosureLike | None = None
    partner: Any = None
    now: datetime


# -- the transaction --------------------------------------------------------------


@frozen
class Identifier:
    kind: str  # "ISBN", "ISSN", "OCLC", "LCCN", ... as sent
    value: str


@frozen
class Money:
    amount: Decimal
    currency: str

    def __str__(self) -> str:
        return f"{self.amount} {self.currency}"


@frozen
class RequestDetails:
    """What the borrower asked for (a summary of the Request)."""

    title: str | None = None
    author: str | None = None
    subtitle: str | None = None
    edition: str | None = None
    publisher: str | None = None
    publication_date: str | None = None
    volume: str | None = None
    title_of_component: str | None = None
    author_of_component: str | None = None
    pages_requested: str | None = None
    identifiers: tuple[Identifier, ...] = ()
    supplier_unique_record_id: str | None = None
    service_type: str = "Loan"
    request_type: str | None = None
    previous_request_id: str | None = None
    service_level: str | None = None
    item_format: str | None = None
    need_before: datetime | None = None
    copyright_compliance: str | None = None
    patron_id: str | None = None
    patron_name: str | None = None
    delivery_address: str | None = None
    delivery_method: str | None = None
    note: str | None = None
    max_cost: Money | None = None
    billing_method: str | None = None


@frozen
class LocatedItem:
    outcome: str
    record_id: str | None = None
    barcode: str | None = None
    call_number: str | None = None
    location: str | None = None
    matched_on: str = ""
    earliest_due: date | None = None


@frozen
class PartnerNote:
    at: datetime
    action: str  # the Action it came with, e.g. "Notification", "Renew"
    note: str


@frozen
class InternalNote:
    at: datetime
    by: str
    text: str


@frozen
class Charge:
    at: datetime
    amount: Decimal
    currency: str
    reason: str


@frozen
class Pending:
    """A partner's question waiting for staff (renew, cancel)."""

    at: datetime
    note: str | None = None


@frozen
class LendingTransaction:
    requesting_agency_id: str  # "ISIL:DK-710100"
    supplying_agency_id: str  # our symbol
    requesting_request_id: str  # RARI, the key peers use
    supplying_request_id: str
    multiple_item_request_id: str | None = None
    partner: str  # the partner's symbol as configured (usually = requesting_agency_id)
    request: RequestDetails
    located: LocatedItem | None = None
    state: LendingState = LendingState.NEW
    answered: bool = False  # a RequestResponse was sent
    reported_status: Status | None = None  # the last status we sent
    status_changed_at: datetime
    created_at: datetime
    updated_at: datetime
    due_date: date | None = None
    shipped_at: datetime | None = None
    shipped_barcodes: tuple[str, ...] = ()
    delivery_method: str | None = None
    received_at: datetime | None = None  # the borrower said Received
    return_shipped_at: datetime | None = None
    conditions: tuple[str, ...] = ()
    conditions_note: str | None = None
    conditions_accepted: bool | None = None
    renewals: int = 0
    recalled_at: datetime | None = None  # staff recalled the item: no renewals from then on
    pending_renew: Pending | None = None
    pending_cancel: Pending | None = None
    unread: tuple[PartnerNote, ...] = ()
    notes: tuple[InternalNote, ...] = ()
    charges: tuple[Charge, ...] = ()

    @property
    def status(self) -> Status:
        """The ISO status the partner currently sees."""
        if self.state is S.RETURN_SHIPPED and self.reported_status in (
            Status.OVERDUE, Status.RECALLED
        ):
            return self.reported_status
        return ISO_STATUS[self.state]

    @property
    def is_copy(self) -> bool:
        return self.request.service_type == ServiceType.COPY.value

    @property
    def needs_attention(self) -> bool:
        """Staff have something to do: decide, pull/ship, check in, answer, read."""
        return bool(
            self.state in (S.RECEIVED, S.EXPECT_TO_SUPPLY, S.WILL_SUPPLY, S.RETURN_SHIPPED)
            or self.pending_renew
            or self.pending_cancel
            or self.unread
        )

    def summary(self) -> dict[str, Any]:
        """The searchable columns of ``transactions``."""
        return {
            "status": self.state.value,
            "partner": self.partner,
            "title": self.request.title,
            "patron_id": self.request.patron_id,
            "requesting_agency_id": self.requesting_agency_id,
            "requesting_request_id": self.requesting_request_id,
            "supplying_request_id": self.supplying_request_id,
            "needs_attention": self.needs_attention,
        }

    def to_json(self) -> dict[str, Any]:
        return to_json_value(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> LendingTransaction:
        return _load(cls, data, "transaction")


# -- states from JSON (to JSON: node.machine.to_json_value) ----------------------------


_HINTS: dict[type, dict[str, Any]] = {}


def _hints(cls: type) -> dict[str, Any]:
    if cls not in _HINTS:
        _HINTS[cls] = typing.get_type_hints(cls, vars(sys.modules[cls.__module__]))
    return _HINTS[cls]


class _LoadError(ValueError):
    """What is wrong (``problem``) with the JSON value at ``where`` (e.g. ``ship.due_date``)."""

    def __init__(self, where: str, problem: str):
        self.where, self.problem = where, problem
        super().__init__(f"{where}: {problem}")


def _load(tp: Any, value: Any, where: str) -> Any:
    """Convert JSON ``value`` to type ``tp``; ``_LoadError`` names the field."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None:
            if len(args) < len(typing.get_args(tp)):
                return None
            raise _LoadError(where, "may not be null")
        return _load(args[0], value, where)
    if origin is tuple:
        if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
            raise _LoadError(where, f"expected a list, got {value!r}")
        (item_type, _ellipsis) = typing.get_args(tp)
        return tuple(_load(item_type, v, f"{where}[{i}]") for i, v in enumerate(value))
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise _LoadError(where, f"expected an object, got {value!r}")
        return dict(value)
    if tp is Any:
        return value
    if is_dataclass(tp):
        if not isinstance(value, Mapping):
            raise _LoadError(where, f"expected an object, got {value!r}")
        hints = _hints(tp)
        known = {f.name for f in fields(tp) if f.init}
        unknown = set(value) - known
        if unknown:
            raise _LoadError(where, f"unknown field(s) {', '.join(sorted(unknown))}")
        kwargs = {}
        for f in fields(tp):
            if not f.init:
                continue
            if f.name not in value:
                if f.default is MISSING and f.default_factory is MISSING:
                    raise _LoadError(where, f"missing field {f.name}")
                continue
            kwargs[f.name] = _load(hints[f.name], value[f.name], f"{where}.{f.name}")
        try:
            return tp(**kwargs)
        except (TypeError, ValueError) as exc:
            raise _LoadError(where, str(exc)) from None
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        try:
            return tp(value)
        except ValueError:
            raise _LoadError(
                where, f"{value!r} is not one of {', '.join(m.value for m in tp)}"
            ) from None
    if tp is datetime:
        try:
            result = datetime.fromisoformat(value)
        except (TypeError, ValueError):
            raise _LoadError(where, f"expected an ISO date-time, got {value!r}") from None
        if result.tzinfo is None:
            raise _LoadError(where, f"date-time {value!r} has no time zone")
        return result
    if tp is date:
        try:
            return date.fromisoformat(value)
        except (TypeError, ValueError):
            raise _LoadError(where, f"expected a date YYYY-MM-DD, got {value!r}") from None
    if tp is Decimal:
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            raise _LoadError(where, f"expected an amount, got {value!r}")
        try:
            amount = Decimal(str(value).strip())
        except InvalidOperation:
            raise _LoadError(where, f"expected an amount, got {value!r}") from None
        if not amount.is_finite():
            raise _LoadError(where, f"expected an amount, got {value!r}")
        return amount
    if tp is bool:
        if not isinstance(value, bool):
            raise _LoadError(where, f"expected true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise _LoadError(where, f"expected a whole number, got {value!r}")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise _LoadError(where, f"expected text, got {value!r}")
        return value
    raise _LoadError(where, f"cannot load type {tp!r}")  # pragma: no cover


# -- staff actions ---------------------------------------------------------------


@frozen
class StaffAction:
    """Base of the staff actions; ``by`` is the staff member's name.

    JSON form: ``{"action": "<NAME>", "by": "anna", ...fields}``; see
    :data:`STAFF_ACTIONS` for the names and each class for its fields.
    Dates are ``YYYY-MM-DD``, amounts strings or numbers.
    """

    NAME: ClassVar[str] = ""
    INPUT: ClassVar[LendingInput]
    by: str = ""

    @property
    def actor(self) -> str:
        return f"staff:{self.by}" if self.by else "staff"

    def to_json(self) -> dict[str, Any]:
        return {"action": self.NAME, **to_json_value(self)}

    @staticmethod
    def from_json(data: Mapping[str, Any]) -> StaffAction:
        """Build the action named by ``data["action"]``; :class:`StaffActionInvalid`
        names every field that is unknown, missing or of the wrong type."""
        if not isinstance(data, Mapping):
            raise StaffActionInvalid(None, {"action": f"a staff action must be a JSON object, "
                                                      f"got {data!r}"})
        name = data.get("action")
        cls = STAFF_ACTIONS.get(name) if isinstance(name, str) else None
        if cls is None:
            raise StaffActionInvalid(None, {"action": f"unknown staff action {name!r}; expected "
                                                      f"one of {', '.join(STAFF_ACTIONS)}"})
        hints = _hints(cls)
        known = {f.name: f for f in fields(cls) if f.init}
        problems: dict[str, str] = {}
        kwargs: dict[str, Any] = {}
        for key in sorted(set(data) - set(known) - {"action"}):
            problems[key] = f"not a field of {name}"
        for key, f in known.items():
            if key not in data:
                if f.default is MISSING and f.default_factory is MISSING:
                    problems[key] = "missing"
                continue
            try:
                kwargs[key] = _load(hints[key], data[key], key)
            except _LoadError as exc:
                problems[exc.where] = exc.problem
        if problems:
            raise StaffActionInvalid(name, problems)
        return cls(**kwargs)


@frozen
class WillSupply(StaffAction):
    NAME: ClassVar[str] = "will_supply"
    INPUT: ClassVar[LendingInput] = In.STAFF_WILL_SUPPLY
    note: str | None = None


@frozen
class ExpectToSupply(StaffAction):
    NAME: ClassVar[str] = "expect_to_supply"
    INPUT: ClassVar[LendingInput] = In.STAFF_EXPECT_TO_SUPPLY
    note: str | None = None
    expected_delivery: date | None = None


@frozen
class AddConditions(StaffAction):
    """Offer to supply on conditions (LoanCondition codes, e.g. LibraryUseOnly) and/or
    at a cost; at least one of the two."""

    NAME: ClassVar[str] = "add_conditions"
    INPUT: ClassVar[LendingInput] = In.STAFF_ADD_CONDITIONS
    conditions: tuple[str, ...] = ()
    note: str | None = None
    cost: Money | None = None


@frozen
class Reject(StaffAction):
    """Unfilled; ``reason`` from the ReasonUnfilled list (e.g. NotOnShelf)."""

    NAME: ClassVar[str] = "reject"
    INPUT: ClassVar[LendingInput] = In.STAFF_REJECT
    reason: str
    note: str | None = None


@frozen
class OfferRetry(StaffAction):
    """RetryPossible; ``reason`` from the ReasonRetry list (e.g. OnLoan)."""

    NAME: ClassVar[str] = "retry_possible"
    INPUT: ClassVar[LendingInput] = In.STAFF_RETRY_POSSIBLE
    reason: str
    note: str | None = None
    retry_after: date | None = None
    retry_before: date | None = None
    cost: Money | None = None


@frozen
class Ship(StaffAction):
    """Ship a loan: barcodes default to the located item, due date to
    ``now + policy.loan_period_days``, delivery method to Mail."""

    NAME: ClassVar[str] = "ship"
    INPUT: ClassVar[LendingInput] = In.STAFF_SHIP
    barcodes: tuple[str, ...] = ()
    due_date: date | None = None
    delivery_method: str | None = None
    tracking: str | None = None
    note: str | None = None
    cost: Money | None = None


@frozen
class DeliverCopy(StaffAction):
    """Deliver a copy: a URL and/or a note (how it was sent)."""

    NAME: ClassVar[str] = "deliver_copy"
    INPUT: ClassVar[LendingInput] = In.STAFF_DELIVER_COPY
    url: str | None = None
    note: str | None = None
    delivery_method: str | None = None
    cost: Money | None = None


@frozen
class AnswerRenew(StaffAction):
    """Answer a pending Renew; on yes the due date defaults to
    ``due + policy.renew_period_days``."""

    NAME: ClassVar[str] = "renew_answer"
    INPUT: ClassVar[LendingInput] = In.STAFF_RENEW_ANSWER
    approve: bool
    due_date: date | None = None
    note: str | None = None


@frozen
class AnswerCancel(StaffAction):
    NAME: ClassVar[str] = "cancel_answer"
    INPUT: ClassVar[LendingInput] = In.STAFF_CANCEL_ANSWER
    approve: bool
    note: str | None = None


@frozen
class CheckIn(StaffAction):
    NAME: ClassVar[str] = "check_in"
    INPUT: ClassVar[LendingInput] = In.STAFF_CHECK_IN
    note: str | None = None


@frozen
class MarkLost(StaffAction):
    """Lost or damaged: CompletedWithoutReturn, with the charge (if any) sent
    as ``deliveryCosts``."""

    NAME: ClassVar[str] = "lost"
    INPUT: ClassVar[LendingInput] = In.STAFF_LOST
    charge: Money | None = None
    damaged: bool = False
    note: str | None = None


@frozen
class Recall(StaffAction):
    NAME: ClassVar[str] = "recall"
    INPUT: ClassVar[LendingInput] = In.STAFF_RECALL
    due_date: date | None = None
    note: str | None = None


@frozen
class SendMessage(StaffAction):
    """A Notification to the partner (the current status repeated)."""

    NAME: ClassVar[str] = "message"
    INPUT: ClassVar[LendingInput] = In.STAFF_MESSAGE
    note: str


@frozen
class AddNote(StaffAction):
    """An internal note; nothing is sent."""

    NAME: ClassVar[str] = "note"
    INPUT: ClassVar[LendingInput] = In.STAFF_NOTE
    text: str


@frozen
class MarkRead(StaffAction):
    NAME: ClassVar[str] = "mark_read"
    INPUT: ClassVar[LendingInput] = In.STAFF_MARK_READ


STAFF_ACTIONS: dict[str, type[StaffAction]] = {
    cls.NAME: cls
    for cls in (WillSupply, ExpectToSupply, AddConditions, Reject, OfferRetry, Ship, DeliverCopy,
                AnswerRenew, AnswerCancel, CheckIn, MarkLost, Recall, SendMessage, AddNote,
                MarkRead)
}


# -- building messages -------------------------------------------------------------


def _day(d: date) -> datetime:
    return datetime.combine(d, DUE_TIME)


def _start_of(d: date) -> datetime:
    return datetime.combine(d, time(0, 0, tzinfo=UTC))


def _costs(money: Money | None) -> tuple[Costs, ...]:
    if money is None:
        return ()
    return (Costs(currency_code=Code(money.currency), monetary_value=money.amount),)


def _message(
    tx: LendingTransaction,
    ctx: LendingContext,
    *,
    reason: ReasonForMessage,
    status: Status,
    note: str | None = None,
    answer: YesNo | None = None,
    reason_unfilled: str | None = None,
    reason_retry: str | None = None,
    retry_after: datetime | None = None,
    retry_before: datetime | None = None,
    offered_costs: tuple[Costs, ...] = (),
    due_date: date | None = None,
    expected_delivery: date | None = None,
    delivery: DeliveryInfo | None = None,
) -> SupplyingAgencyMessage:
    """A full SupplyingAgencyMessage; the header echoes the request's ids."""
    changed = status is not tx.reported_status
    return SupplyingAgencyMessage(
        header=Header(
            supplying_agency_id=ctx.our_symbol,
            requesting_agency_id=AgencyId.parse(tx.requesting_agency_id),
            timestamp=ctx.now,
            requesting_agency_request_id=tx.requesting_request_id,
            multiple_item_request_id=tx.multiple_item_request_id,
            supplying_agency_request_id=tx.supplying_request_id,
        ),
        message_info=MessageInfo(
            reason_for_message=reason,
            answer_yes_no=answer,
            note=note or None,
            reason_unfilled=normalise_open("ReasonUnfilled", reason_unfilled)
            if reason_unfilled else None,
            reason_retry=normalise_open("ReasonRetry", reason_retry) if reason_retry else None,
            offered_costs=offered_costs,
            retry_after=retry_after,
            retry_before=retry_before,
        ),
        status_info=StatusInfo(
            status=status,
            last_change=ctx.now if changed else tx.status_changed_at,
            expected_delivery_date=_day(expected_delivery) if expected_delivery else None,
            due_date=_day(due_date) if due_date else None,
        ),
        delivery_info=delivery,
    )


def _answer_reason(tx: LendingTransaction) -> ReasonForMessage:
    """RequestResponse for the first answer, StatusChange after."""
    return ReasonForMessage.STATUS_CHANGE if tx.answered else ReasonForMessage.REQUEST_RESPONSE


def _entry(event: str, actor: str, summary: str, **detail: Any) -> HistoryEntry:
    return HistoryEntry(event=event, actor=actor, summary=summary, detail=to_json_value(detail))


def _peer(tx: LendingTransaction) -> str:
    return f"peer:{tx.requesting_agency_id}"


def _join(*parts: str | None) -> str | None:
    text = " ".join(p.strip() for p in parts if p and p.strip())
    return text or None


def _item_effects(
    barcodes: tuple[str, ...], status: str, due: date | None = None
) -> tuple[Effect, ...]:
    return tuple(
        Effect(kind="item_status", detail={"barcode": b, "status": status,
                                            "due_date": due.isoformat() if due else None})
        for b in barcodes
    )


def _pull_slip(tx: LendingTransaction) -> tuple[Effect, ...]:
    """Ask the service to print/e-mail a pull slip (Alma: "Print Slip")."""
    located = tx.located
    return (
        Effect(kind="pull_slip", detail={
            "supplying_request_id": tx.supplying_request_id,
            "requesting_agency_id": tx.requesting_agency_id,
            "requesting_request_id": tx.requesting_request_id,
            "title": tx.request.title,
            "author": tx.request.author,
            "service_type": tx.request.service_type,
            "barcode": located.barcode if located else None,
            "call_number": located.call_number if located else None,
            "location": located.location if located else None,
            "need_before": tx.request.need_before.isoformat() if tx.request.need_before else None,
            "delivery_address": tx.request.delivery_address,
        }),
    )


def _with_note(tx: LendingTransaction, ctx: LendingContext, action: str, note: str | None,
               ) -> LendingTransaction:
    """Keep a partner's note as unread."""
    if not note or not note.strip():
        return tx
    return evolve(tx, unread=tx.unread + (PartnerNote(at=ctx.now, action=action, note=note),))


# -- the Request --------------------------------------------------------------------


def _address_text(address: Any) -> str | None:
    if isinstance(address, ElectronicAddress):
        return f"{address.electronic_address_type.value}: {address.electronic_address_data}"
    if isinstance(address, PhysicalAddress):
        parts = [address.line1, address.line2,
                 _join(address.postal_code, address.locality),
                 address.region.value if address.region else None,
                 address.country.value if address.country else None]
        return ", ".join(p for p in parts if p) or None
    return None


def details_of(msg: Request) -> RequestDetails:
    """The summary of a Request kept on the transaction."""
    bib = msg.bibliographic_info
    service = msg.service_info
    pub = msg.publication_info
    patron = msg.patron_info
    billing = msg.billing_info
    delivery = msg.requested_delivery_info
    ordered = sorted(delivery, key=lambda d: d.sort_order if d.sort_order is not None else 1 << 30)
    address = next((_address_text(d.address) for d in ordered if d.address), None)
    method = next((d.delivery_method.value for d in ordered if d.delivery_method), None)
    identifiers = tuple(
        Identifier(kind=i.code.value, value=i.identifier) for i in bib.bibliographic_item_id
    ) + tuple(
        Identifier(kind=r.code.value, value=r.identifier) for r in bib.bibliographic_record_id
    )
    max_cost = None
    if billing and billing.maximum_costs:
        max_cost = Money(amount=billing.maximum_costs.monetary_value,
                         currency=billing.maximum_costs.currency_code.value)
    name = _join(patron.given_name, patron.surname) if patron else None
    return RequestDetails(
        title=bib.title,
        author=bib.author,
        subtitle=bib.subtitle,
        edition=bib.edition,
        publisher=pub.publisher if pub else None,
        publication_date=pub.publication_date if pub else None,
        volume="; ".join(bib.volume) or None,
        title_of_component=bib.title_of_component,
        author_of_component=bib.author_of_component,
        pages_requested=bib.pages_requested,
        identifiers=identifiers,
        supplier_unique_record_id=bib.supplier_unique_record_id,
        service_type=(service.service_type.value if service else ServiceType.LOAN.value),
        request_type=service.request_type.value if service and service.request_type else None,
        previous_request_id=service.requesting_agency_previous_request_id if service else None,
        service_level=service.service_level.value if service and service.service_level else None,
        item_format=service.item_format.value if service and service.item_format else None,
        need_before=service.need_before_date if service else None,
        copyright_compliance=service.copyright_compliance.value
        if service and service.copyright_compliance else None,
        patron_id=patron.patron_id if patron else None,
        patron_name=name,
        delivery_address=address,
        delivery_method=method,
        note=service.note if service else None,
        max_cost=max_cost,
        billing_method=billing.billing_method.value if billing and billing.billing_method else None,
    )


def _located_of(result: LocateResult | None) -> LocatedItem | None:
    if result is None:
        return None
    item = result.item
    return LocatedItem(
        outcome=result.outcome,
        record_id=result.record_id,
        barcode=item.barcode if item else None,
        call_number=item.call_number if item else None,
        location=item.location if item else None,
        matched_on=result.matched_on,
        earliest_due=result.earliest_due,
    )


def default_request_id(requesting_agency_id: str, rari: str) -> str:
    """A stable supplying request id when the service gives none."""
    digest = hashlib.sha256(f"{requesting_agency_id.casefold()}\n{rari}".encode()).hexdigest()
    return "L-" + digest[:10].upper()


def _new_transaction(msg: Request, ctx: LendingContext, supplying_request_id: str | None,
                     ) -> LendingTransaction:
    header = msg.header
    requester = str(header.requesting_agency_id)
    return LendingTransaction(
        requesting_agency_id=requester,
        supplying_agency_id=str(ctx.our_symbol),
        requesting_request_id=header.requesting_agency_request_id,
        supplying_request_id=supplying_request_id
        or default_request_id(requester, header.requesting_agency_request_id),
        multiple_item_request_id=header.multiple_item_request_id,
        partner=str(ctx.partner.symbol) if ctx.partner is not None else requester,
        request=details_of(msg),
        state=S.NEW,
        status_changed_at=ctx.now,
        created_at=ctx.now,
        updated_at=ctx.now,
    )


def _closure_note(closure: Any) -> str:
    text = closure.describe("Lending")
    if closure.note and closure.note not in text:
        text = f"{text.rstrip('.')}. {closure.note}"
    return text


def _on_request(tx: LendingTransaction, data: tuple[Request, LocateResult | None],
                ctx: LendingContext, target: LendingState | None) -> Result[LendingTransaction]:
    """NEW (or RETRY_POSSIBLE, for a Retry reusing the id) + Request.

    Closure -> Unfilled/RetryPossible at once; unknown partner or lend_to
    off -> Unfilled PolicyProblem; auto_answer -> answer from the locate
    result; otherwise RECEIVED for staff.
    """
    msg, result = data
    if tx.state is S.RETRY_POSSIBLE:
        if msg.service_info is None or msg.service_info.request_type is None or \
                msg.service_info.request_type.value != "Retry":
            raise ProtocolError(
                ErrorType.UNRECOGNISED_DATA_VALUE,
                f"requestingAgencyRequestId {tx.requesting_request_id} is already in use; "
                "only a Retry request may reuse it after RetryPossible",
            )
        tx = evolve(
            tx, request=details_of(msg), answered=False, conditions=(), conditions_note=None,
            conditions_accepted=None, pending_cancel=None, pending_renew=None, located=None,
        )
    policy = ctx.policy
    peer = _peer(tx)
    history = [
        _entry("received_request", peer,
               f"{tx.request.service_type} request {tx.requesting_request_id} from "
               f"{tx.requesting_agency_id}: {tx.request.title or '(no title)'}",
               service_type=tx.request.service_type, title=tx.request.title,
               request_type=tx.request.request_type)
    ]
    located = _located_of(result)
    tx = evolve(tx, located=located)
    if result is not None:
        history.append(_entry("located", "system", result.reason or result.outcome,
                              outcome=result.outcome, matched_on=result.matched_on,
                              record_id=result.record_id,
                              barcode=located.barcode if located else None))

    def answer(
        state: LendingState, note: str | None = None, **kw: Any
    ) -> Result[LendingTransaction]:
        status = ISO_STATUS[state]
        message = _message(tx, ctx, reason=_answer_reason(tx), status=status, note=note, **kw)
        history.append(_entry(f"sent_{status.value}", "system",
                              f"Answered {status.value}" + (f": {note}" if note else "."),
                              status=status.value, **{k: v for k, v in kw.items() if v}))
        effects = _pull_slip(tx) if state is S.WILL_SUPPLY else ()
        return Result(state=evolve(tx, state=state), send=(message,), history=tuple(history),
                      effects=effects)

    today = ctx.now.date()
    closure = ctx.closure
    if closure is not None and closure.applies_on(today):
        note = _closure_note(closure)
        partner = ctx.partner
        history.append(_entry("closed_for_lending", "system", note))
        if partner is not None and partner.closure_reply == "RetryPossible" and closure.end:
            return answer(S.RETRY_POSSIBLE, note, reason_retry="NotCurrentAvailableForILL",
                          retry_after=_start_of(closure.end + timedelta(days=1)))
        return answer(S.UNFILLED, note, reason_unfilled="NotAvailableForILL")
    if ctx.partner is None:
        return answer(S.UNFILLED, f"{tx.requesting_agency_id} is not a lending partner of "
                      f"{ctx.our_symbol}.", reason_unfilled="PolicyProblem")
    if not ctx.partner.lend_to:
        return answer(S.UNFILLED, f"{ctx.our_symbol} does not lend to {tx.requesting_agency_id}.",
                      reason_unfilled="PolicyProblem")
    if not policy.auto_answer or result is None:
        why = ("automatic answers are off" if not policy.auto_answer
               else "no holdings lookup was made")
        history.append(_entry("awaiting_staff", "system", f"Waiting for staff ({why})."))
        return Result(state=evolve(tx, state=S.RECEIVED), history=tuple(history))
    outcome = result.outcome
    if outcome == "available":
        found = S.EXPECT_TO_SUPPLY if policy.found_status == "ExpectToSupply" else S.WILL_SUPPLY
        return answer(found)
    if outcome == "on_loan":
        if policy.when_on_loan == "RetryPossible":
            due = result.earliest_due
            return answer(
                S.RETRY_POSSIBLE,
                "All copies are on loan" + (f"; the first is due back {due.isoformat()}." if due
                                            else "."),
                reason_retry="OnLoan", retry_after=_start_of(due) if due else None,
            )
        return answer(S.UNFILLED, "All copies are on loan.", reason_unfilled="NotOnShelf")
    if outcome == "non_circulating":
        return answer(S.UNFILLED, "Our copies do not circulate.",
                      reason_unfilled="NotAvailableForILL")
    if outcome == "missing":
        return answer(S.UNFILLED, "Our copies are missing from the shelf.",
                      reason_unfilled="NotOnShelf")
    return answer(S.UNFILLED, "We do not hold this item.", reason_unfilled="NotHeld")


# -- the partner's actions ------------------------------------------------------------

Data = Any
Handler = Callable[[LendingTransaction, Data, LendingContext, "LendingState | None"],
                   Result[LendingTransaction]]


def _on_status_request(tx, msg, ctx, target):
    message = _message(tx, ctx, reason=ReasonForMessage.STATUS_REQUEST_RESPONSE, status=tx.status,
                       due_date=tx.due_date if tx.state in ON_LOAN + (S.RETURN_SHIPPED,) else None)
    return Result(
        state=_with_note(tx, ctx, "StatusRequest", msg.note), send=(message,),
        history=(_entry("status_request", _peer(tx),
                        f"Status requested; answered {tx.status.value}."),),
    )


def _on_received(tx, msg, ctx, target):
    return Result(
        state=_with_note(evolve(tx, received_at=ctx.now), ctx, "Received", msg.note),
        history=(_entry("partner_received", _peer(tx), "The borrower received the item.",
                        note=msg.note),),
    )


def _on_shipped_return(tx, msg, ctx, target):
    return Result(
        state=_with_note(evolve(tx, return_shipped_at=ctx.now), ctx, "ShippedReturn", msg.note),
        history=(_entry("partner_shipped_return", _peer(tx),
                        "The borrower shipped the item back; check it in when it arrives.",
                        note=msg.note),),
    )


def _on_note_only(event: str, summary: str) -> Handler:
    def handler(tx, msg, ctx, target):
        action = msg.action.value
        return Result(
            state=_with_note(tx, ctx, action, msg.note or summary),
            history=(_entry(event, _peer(tx), summary, note=msg.note),),
        )
    handler.__name__ = f"_on_{event}"
    return handler


def _on_notification(tx, msg, ctx, target):
    return Result(
        state=_with_note(tx, ctx, "Notification", msg.note),
        history=(_entry("partner_notification", _peer(tx),
                        f"Message from the borrower: {msg.note or '(empty)'}", note=msg.note),),
    )


def _on_conditions_accepted(tx, msg, ctx, target):
    tx = evolve(tx, conditions_accepted=True)
    return Result(
        state=_with_note(tx, ctx, "Notification", msg.note),
        history=(_entry("conditions_accepted", _peer(tx),
                        f"The borrower accepted the conditions ({', '.join(tx.conditions)}).",
                        note=msg.note),),
        effects=_pull_slip(tx),
    )


def _on_conditions_rejected(tx, msg, ctx, target):
    note = "Conditions not accepted; the request is cancelled."
    message = _message(tx, ctx, reason=ReasonForMessage.STATUS_CHANGE, status=Status.CANCELLED,
                       note=note)
    return Result(
        state=_with_note(evolve(tx, conditions_accepted=False), ctx, "Notification", msg.note),
        send=(message,),
        history=(_entry("conditions_rejected", _peer(tx),
                        "The borrower rejected the conditions; request cancelled.",
                        note=msg.note),),
    )


def _cancel_answer(tx, ctx, yes: bool, note: str | None, actor: str) -> Result[LendingTransaction]:
    status = Status.CANCELLED if yes else tx.status
    message = _message(tx, ctx, reason=ReasonForMessage.CANCEL_RESPONSE, status=status,
                       answer=YesNo.Y if yes else YesNo.N, note=note)
    new = evolve(tx, pending_cancel=None, state=S.CANCELLED if yes else tx.state)
    summary = "Cancel accepted." if yes else f"Cancel refused (status {tx.status.value})."
    return Result(state=new, send=(message,),
                  history=(_entry("cancel_answered", actor, summary, answer=yes, note=note),))


def _on_cancel(tx, msg, ctx, target):
    """Before shipping: auto_cancel answers Y, else staff decide.  While
    CONDITIONAL a Cancel rejects the conditions: Y.  On loan: N."""
    tx = _with_note(tx, ctx, "Cancel", msg.note)
    if tx.state is S.CONDITIONAL or (tx.state in BEFORE_SHIPPING and ctx.policy.auto_cancel):
        result = _cancel_answer(tx, ctx, True, None, "system")
    elif tx.state in BEFORE_SHIPPING:
        pending = evolve(tx, pending_cancel=Pending(at=ctx.now, note=msg.note))
        return Result(state=pending, history=(
            _entry("cancel_requested", _peer(tx), "The borrower asks to cancel; staff to answer.",
                   note=msg.note),))
    else:
        result = _cancel_answer(tx, ctx, False, "The item has already been shipped.", "system")
    return evolve(result, history=(
        _entry("cancel_requested", _peer(tx), "The borrower asks to cancel.", note=msg.note),
    ) + result.history)


def _renewed_due(tx: LendingTransaction, ctx: LendingContext) -> date:
    """``due + renew_period_days``; from today if that is not in the future."""
    period = timedelta(days=ctx.policy.renew_period_days)
    base = tx.due_date or ctx.now.date()
    due = base + period
    return due if due > ctx.now.date() else ctx.now.date() + period


def _renew_answer(tx, ctx, due: date | None, note: str | None, actor: str):
    if due is not None:
        message = _message(tx, ctx, reason=ReasonForMessage.RENEW_RESPONSE, status=Status.LOANED,
                           answer=YesNo.Y, due_date=due, note=note)
        new = evolve(tx, due_date=due, renewals=tx.renewals + 1, pending_renew=None,
                      state=S.SHIPPED)
        return Result(state=new, send=(message,),
                      history=(_entry("renewed", actor, f"Renewed until {due.isoformat()}.",
                                      due_date=due, note=note),),
                      effects=_item_effects(tx.shipped_barcodes, "on_loan", due))
    message = _message(tx, ctx, reason=ReasonForMessage.RENEW_RESPONSE, status=tx.status,
                       answer=YesNo.N, due_date=tx.due_date, note=note)
    return Result(state=evolve(tx, pending_renew=None), send=(message,),
                  history=(_entry("renew_refused", actor, "Renewal refused.", note=note),))


def _on_renew(tx, msg, ctx, target):
    tx = _with_note(tx, ctx, "Renew", msg.note)
    asked = _entry("renew_requested", _peer(tx), "The borrower asks to renew.", note=msg.note)
    if tx.recalled_at is not None or tx.state is S.RECALLED:  # also once overdue after it
        result = _renew_answer(tx, ctx, None, "The item has been recalled.", "system")
    elif ctx.policy.auto_renew:
        result = _renew_answer(tx, ctx, _renewed_due(tx, ctx), None, "system")
    else:
        return Result(state=evolve(tx, pending_renew=Pending(at=ctx.now, note=msg.note)),
                      history=(asked,))
    return evolve(result, history=(asked,) + result.history)


def _on_lost(tx, msg, ctx, target):
    note = "Recorded as lost by the borrower."
    message = _message(tx, ctx, reason=ReasonForMessage.STATUS_CHANGE,
                       status=Status.COMPLETED_WITHOUT_RETURN, note=note)
    return Result(
        state=_with_note(tx, ctx, "Lost", msg.note), send=(message,),
        history=(_entry("partner_lost", _peer(tx), "The borrower reports the item lost.",
                        note=msg.note),),
        effects=_item_effects(tx.shipped_barcodes, "missing"),
    )


# -- staff actions ---------------------------------------------------------------------


def _status_answer(tx, ctx, action: StaffAction, status: Status, event: str, summary: str,
                   **kw: Any) -> tuple[SupplyingAgencyMessage, HistoryEntry]:
    message = _message(tx, ctx, reason=_answer_reason(tx), status=status, **kw)
    return message, _entry(event, action.actor, summary, status=status.value,
                           **{k: v for k, v in kw.items() if v is not None and v != ()})


def _staff_will_supply(tx, action: WillSupply, ctx, target):
    message, entry = _status_answer(tx, ctx, action, Status.WILL_SUPPLY, "sent_WillSupply",
                                    "Will supply.", note=action.note)
    return Result(state=tx, send=(message,), history=(entry,), effects=_pull_slip(tx))


def _staff_expect_to_supply(tx, action: ExpectToSupply, ctx, target):
    message, entry = _status_answer(tx, ctx, action, Status.EXPECT_TO_SUPPLY,
                                    "sent_ExpectToSupply", "Expect to supply.", note=action.note,
                                    expected_delivery=action.expected_delivery)
    return Result(state=tx, send=(message,), history=(entry,))


def _staff_add_conditions(tx, action: AddConditions, ctx, target):
    if not action.conditions and action.cost is None:
        raise StaffActionInvalid(action.NAME, {"conditions": "give at least one condition "
                                                             "or a cost"})
    codes = tuple(normalise_open("LoanCondition", c) for c in action.conditions)
    names = ", ".join([c.value for c in codes] + ([f"a cost of {action.cost}"] if action.cost
                                                   else []))
    note = _join(f"We can supply on these conditions: {names}.", action.note,
                 "Please reply with a message starting ACCEPT or REJECT.")
    delivery = DeliveryInfo(date_sent=ctx.now, loan_condition=codes) if codes else None
    message, entry = _status_answer(tx, ctx, action, Status.WILL_SUPPLY, "sent_conditions",
                                    f"Conditions offered: {names}.", note=note,
                                    offered_costs=_costs(action.cost), delivery=delivery)
    new = evolve(tx, conditions=tuple(c.value for c in codes), conditions_note=action.note,
                  conditions_accepted=None)
    return Result(state=new, send=(message,), history=(entry,))


def _checked_code(list_name: str, value: str, action: str, field: str) -> str:
    """``value`` as spelled in the standard list; any other value is a malformed action."""
    known = OPEN_LISTS[list_name]
    for candidate in known:
        if candidate.lower() == value.strip().lower():
            return candidate
    raise StaffActionInvalid(action, {field: f"{value!r} is not one of {', '.join(sorted(known))}"})


def _staff_reject(tx, action: Reject, ctx, target):
    reason = _checked_code("ReasonUnfilled", action.reason, action.NAME, "reason")
    message, entry = _status_answer(tx, ctx, action, Status.UNFILLED, "sent_Unfilled",
                                    f"Unfilled ({reason})" + (f": {action.note}" if action.note
                                                              else "."),
                                    note=action.note, reason_unfilled=reason)
    return Result(state=evolve(tx, pending_cancel=None), send=(message,), history=(entry,))


def _staff_retry_possible(tx, action: OfferRetry, ctx, target):
    reason = _checked_code("ReasonRetry", action.reason, action.NAME, "reason")
    if action.retry_after and action.retry_before and action.retry_before <= action.retry_after:
        raise StaffActionError("retry_possible: retry_before must be after retry_after")
    message, entry = _status_answer(
        tx, ctx, action, Status.RETRY_POSSIBLE, "sent_RetryPossible",
        f"Retry possible ({reason})" + (f": {action.note}" if action.note else "."),
        note=action.note, reason_retry=reason,
        retry_after=_start_of(action.retry_after) if action.retry_after else None,
        retry_before=_start_of(action.retry_before) if action.retry_before else None,
        offered_costs=_costs(action.cost),
    )
    return Result(state=evolve(tx, pending_cancel=None), send=(message,), history=(entry,))


def _staff_ship(tx, action: Ship, ctx, target):
    if tx.is_copy:
        raise StaffActionError("ship: this is a copy request; use deliver_copy")
    barcodes = tuple(b.strip() for b in action.barcodes if b.strip())
    if not barcodes and tx.located and tx.located.barcode:
        barcodes = (tx.located.barcode,)
    if not barcodes:
        raise StaffActionError("ship: no item was located; give the barcodes shipped")
    due = action.due_date or ctx.now.date() + timedelta(days=ctx.policy.loan_period_days)
    if due <= ctx.now.date():
        raise StaffActionError(f"ship: the due date {due.isoformat()} is not in the future")
    method = normalise_open("DeliveryMethod", action.delivery_method or "Mail")
    note = _join(action.note, f"Tracking: {action.tracking}." if action.tracking else None)
    delivery = DeliveryInfo(
        date_sent=ctx.now, item_id=barcodes, delivery_method=method,
        loan_condition=tuple(Code(c) for c in tx.conditions), delivery_costs=_costs(action.cost),
    )
    message, entry = _status_answer(
        tx, ctx, action, Status.LOANED, "shipped",
        f"Shipped {', '.join(barcodes)} by {method.value}, due {due.isoformat()}.",
        note=note, due_date=due, delivery=delivery,
    )
    new = evolve(tx, shipped_barcodes=barcodes, due_date=due, shipped_at=ctx.now,
                  delivery_method=method.value, pending_cancel=None)
    effects = _item_effects(barcodes, "on_loan", due)
    if action.cost is not None:
        effects += (Effect(kind="charge", detail={"amount": str(action.cost.amount),
                                                  "currency": action.cost.currency,
                                                  "reason": "shipping"}),)
    return Result(state=new, send=(message,), history=(entry,), effects=effects)


def _staff_deliver_copy(tx, action: DeliverCopy, ctx, target):
    if tx.request.service_type == ServiceType.LOAN.value:
        raise StaffActionError("deliver_copy: this is a loan request; use ship")
    if not (action.url or action.note):
        raise StaffActionError("deliver_copy: give the URL or a note saying how it was sent")
    version = str(getattr(ctx.partner, "iso18626_version", "") or "")
    method = normalise_open("DeliveryMethod",
                            action.delivery_method or ("URL" if action.url else "Email"))
    delivery = DeliveryInfo(
        date_sent=ctx.now, delivery_method=method,
        url=action.url if action.url and version.startswith("2021") else None,
        service_type=ServiceType.COPY, delivery_costs=_costs(action.cost),
    )
    note = _join(action.note, action.url)
    message, entry = _status_answer(tx, ctx, action, Status.COPY_COMPLETED, "copy_delivered",
                                    "Copy delivered" + (f": {action.url}" if action.url else "."),
                                    note=note, delivery=delivery)
    effects: tuple[Effect, ...] = ()
    if action.cost is not None:
        effects = (Effect(kind="charge", detail={"amount": str(action.cost.amount),
                                                 "currency": action.cost.currency,
                                                 "reason": "copy"}),)
    return Result(state=evolve(tx, pending_cancel=None, delivery_method=method.value),
                  send=(message,), history=(entry,), effects=effects)


def _staff_renew_answer(tx, action: AnswerRenew, ctx, target):
    if tx.pending_renew is None:
        raise StaffActionError("renew_answer: the borrower has not asked to renew")
    if not action.approve:
        return _renew_answer(tx, ctx, None, action.note, action.actor)
    due = action.due_date or _renewed_due(tx, ctx)
    if due <= ctx.now.date():
        raise StaffActionError(f"renew_answer: the due date {due.isoformat()} is not in the future")
    return _renew_answer(tx, ctx, due, action.note, action.actor)


def _staff_cancel_answer(tx, action: AnswerCancel, ctx, target):
    if tx.pending_cancel is None:
        raise StaffActionError("cancel_answer: the borrower has not asked to cancel")
    return _cancel_answer(tx, ctx, action.approve, action.note, action.actor)


def _staff_check_in(tx, action: CheckIn, ctx, target):
    message = _message(tx, ctx, reason=ReasonForMessage.STATUS_CHANGE,
                       status=Status.LOAN_COMPLETED, note=action.note)
    return Result(
        state=evolve(tx, pending_renew=None), send=(message,),
        history=(_entry("checked_in", action.actor,
                        f"Checked in {', '.join(tx.shipped_barcodes) or 'the item'}; "
                        "loan completed.",
                        note=action.note),),
        effects=_item_effects(tx.shipped_barcodes, "available"),
    )


def _staff_lost(tx, action: MarkLost, ctx, target):
    what = "damaged" if action.damaged else "lost"
    note = _join(f"The item is recorded as {what}.",
                 f"Charge: {action.charge}." if action.charge else None, action.note)
    delivery = None
    charges = tx.charges
    effects = _item_effects(tx.shipped_barcodes, "non_circulating" if action.damaged else "missing")
    if action.charge is not None:
        delivery = DeliveryInfo(date_sent=tx.shipped_at or ctx.now, item_id=tx.shipped_barcodes,
                                delivery_costs=_costs(action.charge))
        charges += (Charge(at=ctx.now, amount=action.charge.amount,
                           currency=action.charge.currency, reason=what),)
        effects += (Effect(kind="charge", detail={"amount": str(action.charge.amount),
                                                  "currency": action.charge.currency,
                                                  "reason": what,
                                                  "partner": tx.partner}),)
    message = _message(tx, ctx, reason=ReasonForMessage.STATUS_CHANGE,
                       status=Status.COMPLETED_WITHOUT_RETURN, note=note, delivery=delivery)
    return Result(
        state=evolve(tx, charges=charges, pending_renew=None), send=(message,),
        history=(_entry("marked_" + what, action.actor, note or what,
                        charge=action.charge, note=action.note),),
        effects=effects,
    )


def _staff_charge_after_lost(tx, action: MarkLost, ctx, target):
    """The borrower reported the item lost (we answered CompletedWithoutReturn at once):
    staff record the replacement charge afterwards, once, sent as ``deliveryCosts``."""
    if action.charge is None:
        raise StaffActionError("lost: the loan is already completed without return; "
                               "give the charge to record")
    if tx.charges:
        raise StaffActionError(f"lost: a charge of {tx.charges[0].amount} "
                               f"{tx.charges[0].currency} is already recorded")
    return _staff_lost(tx, action, ctx, target)


def _staff_recall(tx, action: Recall, ctx, target):
    due = action.due_date or tx.due_date
    message = _message(tx, ctx, reason=ReasonForMessage.STATUS_CHANGE, status=Status.RECALLED,
                       note=action.note or "Please return the item as soon as possible.",
                       due_date=due)
    return Result(
        state=evolve(tx, due_date=due, pending_renew=None, recalled_at=ctx.now), send=(message,),
        history=(_entry("recalled", action.actor,
                        "Recalled" + (f", due {due.isoformat()}." if due else "."),
                        due_date=due, note=action.note),),
    )


def _staff_message(tx, action: SendMessage, ctx, target):
    if not action.note.strip():
        raise StaffActionError("message: the note is empty")
    message = _message(tx, ctx, reason=ReasonForMessage.NOTIFICATION, status=tx.status,
                       note=action.note)
    return Result(state=tx, send=(message,),
                  history=(_entry("sent_message", action.actor, f"Message sent: {action.note}",
                                  note=action.note),))


def _staff_note(tx, action: AddNote, ctx, target):
    if not action.text.strip():
        raise StaffActionError("note: the text is empty")
    by = action.by or "staff"
    return Result(state=evolve(tx, notes=tx.notes + (InternalNote(at=ctx.now, by=by,
                                                                   text=action.text),)),
                  history=(_entry("note", action.actor, action.text),))


def _staff_mark_read(tx, action: MarkRead, ctx, target):
    count = len(tx.unread)
    return Result(state=evolve(tx, unread=()),
                  history=(_entry("marked_read", action.actor,
                                  f"{count} partner message(s) marked read."),))


def _timer_overdue(tx, _data, ctx, target):
    message = _message(tx, ctx, reason=ReasonForMessage.STATUS_CHANGE, status=Status.OVERDUE,
                       due_date=tx.due_date,
                       note=f"The item was due on {tx.due_date.isoformat()}." if tx.due_date
                       else None)
    return Result(state=tx, send=(message,),
                  history=(_entry("overdue", "system", "The loan is overdue.",
                                  due_date=tx.due_date),))


def _on_action_again(tx: LendingTransaction, msg: RequestingAgencyMessage, ctx: LendingContext,
                     target: LendingState | None) -> Result[LendingTransaction]:
    """The action that brought the request where it is, sent again (the requester did not
    get our confirmation, and retried): confirmed, nothing changes."""
    action = msg.action.value
    return Result(state=tx, history=(_entry(
        "action_again", _peer(tx), f"{action} received again (a resend): no change.",
        action=action),))


def _on_request_again(tx: LendingTransaction, msg: Request, ctx: LendingContext,
                      target: LendingState | None) -> Result[LendingTransaction]:
    """Any stored state + the Request it holds, sent again: nothing changes, nothing is
    sent (our answers go out, or went out, through the outbox)."""
    return Result(state=tx, history=(_entry(
        "received_request_again", _peer(tx),
        f"Request {tx.requesting_request_id} received again from {tx.requesting_agency_id}"
        " (a resend of the same request): no change."),))


# -- the table ------------------------------------------------------------------------


def _table() -> dict[tuple[LendingState, LendingInput], tuple[Handler, LendingState | None]]:
    """Every legal (state, input) pair; ``None`` = the handler picks the state
    (see the handler's docstring)."""
    t: dict[tuple[LendingState, LendingInput], tuple[Handler, LendingState | None]] = {
        (S.NEW, In.RECV_REQUEST): (_on_request, None),
        (S.RETRY_POSSIBLE, In.RECV_REQUEST): (_on_request, None),
        (S.CONDITIONAL, In.RECV_CONDITIONS_ACCEPTED): (_on_conditions_accepted, S.WILL_SUPPLY),
        (S.CONDITIONAL, In.RECV_CONDITIONS_REJECTED): (_on_conditions_rejected, S.CANCELLED),
        (S.CONDITIONAL, In.RECV_CANCEL): (_on_cancel, S.CANCELLED),
        (S.RECEIVED, In.STAFF_EXPECT_TO_SUPPLY): (_staff_expect_to_supply, S.EXPECT_TO_SUPPLY),
        (S.SHIPPED, In.TIMER_OVERDUE): (_timer_overdue, S.OVERDUE),
        (S.RECALLED, In.TIMER_OVERDUE): (_timer_overdue, S.OVERDUE),
        (S.RECALLED, In.RECV_RENEW): (_on_renew, S.RECALLED),  # always N
        (S.COMPLETED_WITHOUT_RETURN, In.STAFF_LOST): (
            _staff_charge_after_lost, S.COMPLETED_WITHOUT_RETURN),
    }
    stored = [s for s in S if s is not S.NEW]
    for s in stored:
        t[(s, In.RECV_REQUEST_AGAIN)] = (_on_request_again, s)
        t[(s, In.RECV_STATUS_REQUEST)] = (_on_status_request, s)
        t[(s, In.RECV_NOTIFICATION)] = (_on_notification, s)
        t[(s, In.STAFF_MESSAGE)] = (_staff_message, s)
        t[(s, In.STAFF_NOTE)] = (_staff_note, s)
        t[(s, In.STAFF_MARK_READ)] = (_staff_mark_read, s)
    for s in (S.RECEIVED, S.EXPECT_TO_SUPPLY):
        t[(s, In.STAFF_WILL_SUPPLY)] = (_staff_will_supply, S.WILL_SUPPLY)
    for s in BEFORE_SHIPPING:
        t[(s, In.RECV_CANCEL)] = (_on_cancel, None)  # Cancelled (auto) or unchanged + pending
        t[(s, In.STAFF_CANCEL_ANSWER)] = (_staff_cancel_answer, None)  # Cancelled or unchanged
        t[(s, In.STAFF_ADD_CONDITIONS)] = (_staff_add_conditions, S.CONDITIONAL)
        t[(s, In.STAFF_SHIP)] = (_staff_ship, S.SHIPPED)
        t[(s, In.STAFF_DELIVER_COPY)] = (_staff_deliver_copy, S.COPY_COMPLETED)
    for s in BEFORE_SHIPPING + (S.CONDITIONAL,):
        t[(s, In.STAFF_REJECT)] = (_staff_reject, S.UNFILLED)
        t[(s, In.STAFF_RETRY_POSSIBLE)] = (_staff_retry_possible, S.RETRY_POSSIBLE)
    for s in ON_LOAN:
        t[(s, In.RECV_RECEIVED)] = (_on_received, s)
        t[(s, In.RECV_SHIPPED_RETURN)] = (_on_shipped_return, S.RETURN_SHIPPED)
        t[(s, In.RECV_CANCEL)] = (_on_cancel, s)  # N: already shipped
        t[(s, In.RECV_HOLD_RETURN)] = (
            _on_note_only("partner_hold_return", "The borrower cannot return the item yet."), s)
        t[(s, In.RECV_SHIPPED_FORWARD)] = (
            _on_note_only("partner_shipped_forward",
                          "The borrower shipped the item on to another agency."), s)
    for s in (S.SHIPPED, S.OVERDUE):
        t[(s, In.RECV_RENEW)] = (_on_renew, None)  # SHIPPED with Y (auto) or unchanged + pending
        t[(s, In.STAFF_RENEW_ANSWER)] = (_staff_renew_answer, None)  # SHIPPED (Y) or unchanged
        t[(s, In.STAFF_RECALL)] = (_staff_recall, S.RECALLED)
    # What the requester sent to end up here, sent again: a resend, not a mistake.
    for s, input_ in ((S.RETURN_SHIPPED, In.RECV_SHIPPED_RETURN),
                      (S.LOAN_COMPLETED, In.RECV_SHIPPED_RETURN),
                      (S.CANCELLED, In.RECV_CANCEL),
                      (S.COMPLETED_WITHOUT_RETURN, In.RECV_LOST)):
        t[(s, input_)] = (_on_action_again, s)
    for s in ON_LOAN + (S.RETURN_SHIPPED,):
        t[(s, In.RECV_LOST)] = (_on_lost, S.COMPLETED_WITHOUT_RETURN)
        t[(s, In.STAFF_CHECK_IN)] = (_staff_check_in, S.LOAN_COMPLETED)
        t[(s, In.STAFF_LOST)] = (_staff_lost, S.COMPLETED_WITHOUT_RETURN)
    return t


TRANSITIONS: dict[tuple[LendingState, LendingInput], tuple[Handler, LendingState | None]] = _table()


def _illegal(tx: LendingTransaction, input_: LendingInput) -> Exception:
    status = tx.status.value
    if input_.name.startswith("RECV_"):
        if input_ is In.RECV_REQUEST:
            return ProtocolError(
                ErrorType.UNRECOGNISED_DATA_VALUE,
                f"requestingAgencyRequestId {tx.requesting_request_id!r} already exists: a "
                f"different request from {tx.requesting_agency_id} has that id (status {status})",
            )
        if input_ is In.RECV_SHIPPED_RETURN and tx.shipped_at is None:
            return ProtocolError(
                ErrorType.UNRECOGNISED_DATA_VALUE,
                f"ShippedReturn for a request that was never shipped (status {status})",
            )
        if input_ is In.RECV_RENEW:
            return ProtocolError(ErrorType.UNRECOGNISED_DATA_VALUE,
                                 f"Renew for a request that is not on loan (status {status})")
        if input_ in (In.RECV_CONDITIONS_ACCEPTED, In.RECV_CONDITIONS_REJECTED):
            return ProtocolError(ErrorType.UNRECOGNISED_DATA_VALUE,
                                 f"no loan conditions are waiting for an answer (status {status})")
        action = next((a.value for a, i in ACTION_INPUT.items() if i is input_), input_.name)
        return ProtocolError(ErrorType.UNRECOGNISED_DATA_VALUE,
                             f"{action} is not allowed for a request in status {status}")
    name = input_.name.removeprefix("STAFF_").removeprefix("TIMER_").lower()
    return StaffActionError(
        f"{name}: not allowed while the request is {tx.state.value} (status {status})"
    )


def step(tx: LendingTransaction, input_: LendingInput, data: Data, *,
         ctx: LendingContext) -> Result[LendingTransaction]:
    """Apply one input through :data:`TRANSITIONS` and do the bookkeeping
    (next state, reported status, answered flag, timestamps)."""
    try:
        handler, target = TRANSITIONS[(tx.state, input_)]
    except KeyError:
        raise _illegal(tx, input_) from None
    result = handler(tx, data, ctx, target)
    new = result.state
    updates: dict[str, Any] = {"updated_at": ctx.now}
    if target is not None:
        updates["state"] = target
    if result.send:
        last = result.send[-1].status_info.status
        if last is not new.reported_status:
            updates["reported_status"] = last
            updates["status_changed_at"] = ctx.now
        if any(m.message_info.reason_for_message is ReasonForMessage.REQUEST_RESPONSE
               for m in result.send):
            updates["answered"] = True
    return evolve(result, state=evolve(new, **updates))


# -- the public entry points -------------------------------------------------------------


def receive_request(
    msg: Request,
    *,
    ctx: LendingContext,
    located: LocateResult | None,
    supplying_request_id: str | None = None,
    previous: LendingTransaction | None = None,
) -> Result[LendingTransaction]:
    """A partner's Request.  ``previous`` is the stored transaction with the
    same requesting agency and request id, if any: the same request again (its
    confirmation lost, a requester's resend with a new timestamp) changes nothing and
    is confirmed OK again; a Retry after RetryPossible reuses the id; anything else
    reusing it is refused (ProtocolError)."""
    if msg.header.supplying_agency_id is not None and not ctx.our_symbol.same_agency(
        msg.header.supplying_agency_id
    ):
        raise ProtocolError(ErrorType.UNRECOGNISED_DATA_VALUE,
                            f"supplyingAgencyId {msg.header.supplying_agency_id} is not this "
                            f"node ({ctx.our_symbol})")
    if previous is not None and details_of(msg) == previous.request:
        return step(previous, In.RECV_REQUEST_AGAIN, msg, ctx=ctx)
    tx = previous if previous is not None else _new_transaction(msg, ctx, supplying_request_id)
    return step(tx, In.RECV_REQUEST, (msg, located), ctx=ctx)


_SEQ_MARKER = re.compile(r"#seq:\d+#")


def _condition_answer(note: str | None) -> bool | None:
    """True for an accept (``ACCEPT…`` or ReShare's agree marker), False for
    ``REJECT…``, None for an ordinary note."""
    if not note:
        return None
    if "#ReShareLoanConditionAgreeResponse#" in note:
        return True
    text = _SEQ_MARKER.sub("", note).strip().upper()
    if text.startswith("ACCEPT"):
        return True
    if text.startswith("REJECT"):
        return False
    return None


def input_for(tx: LendingTransaction, msg: RequestingAgencyMessage) -> LendingInput:
    """The table input a partner's message means in the current state."""
    input_ = ACTION_INPUT.get(msg.action)
    if input_ is None:  # pragma: no cover - every Action is mapped
        raise ProtocolError(ErrorType.UNSUPPORTED_ACTION_TYPE, f"action {msg.action.value}")
    if input_ is In.RECV_NOTIFICATION and tx.state is S.CONDITIONAL:
        answer = _condition_answer(msg.note)
        if answer is True:
            return In.RECV_CONDITIONS_ACCEPTED
        if answer is False:
            return In.RECV_CONDITIONS_REJECTED
    return input_


def receive_action(tx: LendingTransaction, msg: RequestingAgencyMessage, *,
                   ctx: LendingContext) -> Result[LendingTransaction]:
    """A partner's RequestingAgencyMessage about ``tx``."""
    header = msg.header
    if not AgencyId.parse(tx.requesting_agency_id).same_agency(header.requesting_agency_id) or \
            header.requesting_agency_request_id != tx.requesting_request_id:
        raise ProtocolError(
            ErrorType.UNRECOGNISED_DATA_VALUE,
            f"message for {header.requesting_agency_id}/{header.requesting_agency_request_id} "
            f"does not belong to request {tx.requesting_agency_id}/{tx.requesting_request_id}",
        )
    if header.supplying_agency_id is not None and not ctx.our_symbol.same_agency(
        header.supplying_agency_id
    ):
        raise ProtocolError(ErrorType.UNRECOGNISED_DATA_VALUE,
                            f"supplyingAgencyId {header.supplying_agency_id} is not this node "
                            f"({ctx.our_symbol})")
    return step(tx, input_for(tx, msg), msg, ctx=ctx)


def staff(tx: LendingTransaction, action: StaffAction, *,
          ctx: LendingContext) -> Result[LendingTransaction]:
    """A staff action (build one from JSON with :meth:`StaffAction.from_json`)."""
    if not isinstance(action, StaffAction) or type(action) is StaffAction:
        raise StaffActionError(f"not a staff action: {action!r}")
    return step(tx, action.INPUT, action, ctx=ctx)


def is_overdue(tx: LendingTransaction, now: datetime) -> bool:
    return tx.due_date is not None and now.date() > tx.due_date


def tick(tx: LendingTransaction, *, ctx: LendingContext) -> Result[LendingTransaction]:
    """The clock: a loan past its due date becomes Overdue (with a
    StatusChange); otherwise the same transaction and nothing to do."""
    if (tx.state, In.TIMER_OVERDUE) in TRANSITIONS and is_overdue(tx, ctx.now):
        return step(tx, In.TIMER_OVERDUE, None, ctx=ctx)
    return Result(state=tx)


def next_timer(tx: LendingTransaction) -> datetime | None:
    """When the clock next matters (the service stores it; its timer job calls
    :func:`tick`): the first moment a loan counts as overdue (the day after
    its due date, 00:00 UTC), while it is out and not yet reported Overdue."""
    if tx.due_date is None or (tx.state, In.TIMER_OVERDUE) not in TRANSITIONS:
        return None
    return _start_of(tx.due_date + timedelta(days=1))
