"""The borrowing request's transition table, driven through whole stories.

Config objects are small local dataclasses of the config's shape; partner
messages are built here as a lender would send them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from node.borrower.form import BorrowingForm
from node.borrower.machine import (
    BorrowingContext,
    BorrowingRequest,
    BorrowingState,
    StaffAction,
    create,
    delivery_failed,
    next_timer,
    parse_closure_note,
    receive,
    staff,
    tick,
)
from node.borrower.rota import EntryState, RotaEntry
from node.machine import StaffActionError, StaffActionInvalid
from node.protocol.codes import (
    Action,
    Code,
    ErrorType,
    ReasonForMessage,
    RequestType,
    ServiceType,
    Status,
    YesNo,
)
from node.protocol.errors import ProtocolError
from node.protocol.messages import (
    AgencyId,
    Costs,
    DeliveryInfo,
    Header,
    MessageInfo,
    Request,
    RequestingAgencyMessage,
    StatusInfo,
    SupplyingAgencyMessage,
)

S = BorrowingState
US = AgencyId.parse("ISIL:DK-100")
A, B, C, D = "ISIL:XX-1", "ISIL:XX-2", "ISIL:XX-3", "ISIL:XX-4"
T0 = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)


# -- config shapes (as node.config has them) ----------------------------------------


@dataclass(frozen=True)
class Closure:
    active: bool = False
    start: date | None = None
    end: date | None = None
    note: str | None = None

    def applies_on(self, day: date) -> bool:
        if not self.active:
            return False
        return (self.start is None or self.start <= day) and (self.end is None or day <= self.end)

    def describe(self, kind: str) -> str:
        if self.start and self.end:
            return f"{kind} suspended {self.start} to {self.end}"
        if self.end:
            return f"{kind} suspended until {self.end}"
        return f"{kind} suspended until further notice"

    def reopens(self) -> date | None:
        return self.end + timedelta(days=1) if self.end else None


@dataclass(frozen=True)
class Policy:
    answer_timeout_hours: int = 48
    retry_policy: str = "retry"
    auto_accept_costs: bool = False
    pickup_locations: tuple[str, ...] = ("Main desk", "Branch")
    closure: Closure = field(default_factory=Closure)


@dataclass(frozen=True)
class Partner:
    symbol: str
    name: str = "A library"
    url: str = "https://example.org/iso18626"
    iso18626_version: str = "1.2"
    lend_to: bool = True
    borrow_from: bool = True
    closure_reply: str = "unfilled"


PARTNERS = {s: Partner(symbol=s) for s in (A, B, C, D)}


def ctx(now: datetime = T0, *, policy: Policy | None = None, closure: Closure | None = None,
        closed: dict | None = None, partners: dict | None = None) -> BorrowingContext:
    policy = policy or Policy()
    return BorrowingContext(
        our_symbol=US,
        policy=policy,
        closure=closure if closure is not None else policy.closure,
        partners=partners if partners is not None else PARTNERS,
        closed_partners=closed or {},
        now=now,
    )


def form(**changes) -> BorrowingForm:
    base = dict(patron_id="P-42", pickup_location="Main desk", title="The Old Man and the Sea",
                author="Hemingway", isbn="9780684801223", needed_by=date(2027, 3, 1))
    base.update(changes)
    return BorrowingForm(**base)


def rota(*symbols: str) -> list[RotaEntry]:
    return [RotaEntry(symbol=s) for s in symbols]


def new(*symbols: str, f: BorrowingForm | None = None, c: BorrowingContext | None = None):
    return create(f or form(), ctx=c or ctx(), rota=rota(*(symbols or (A, B))), public_id="BR7")


def sam(req: BorrowingRequest, status: Status | None, *,
        reason: ReasonForMessage = ReasonForMessage.STATUS_CHANGE, answer: YesNo | None = None,
        note: str | None = None, due: datetime | None = None, rari: str | None = None,
        sender: str | None = None, reason_unfilled: str | None = None,
        reason_retry: str | None = None, retry_after: datetime | None = None,
        offered: tuple = (), delivery: DeliveryInfo | None = None,
        at: datetime = T0) -> SupplyingAgencyMessage:
    return SupplyingAgencyMessage(
        header=Header(
            supplying_agency_id=AgencyId.parse(sender or req.partner),
            requesting_agency_id=US,
            timestamp=at,
            requesting_agency_request_id=rari or req.requesting_request_id,
            supplying_agency_request_id="L-77",
        ),
        message_info=MessageInfo(
            reason_for_message=reason,
            answer_yes_no=answer,
            note=note,
            reason_unfilled=Code(reason_unfilled) if reason_unfilled else None,
            reason_retry=Code(reason_retry) if reason_retry else None,
            retry_after=retry_after,
            offered_costs=tuple(Costs(currency_code=Code(cur), monetary_value=Decimal(v))
                                for v, cur in offered),
        ),
        status_info=StatusInfo(status=status, last_change=at, due_date=due),
        delivery_info=delivery,
    )


def act(name: str, **fields) -> StaffAction:
    return StaffAction.from_json({"action": name, "actor": "staff:anna", **fields})


def only(result, kind):
    assert len(result.send) == 1, result.send
    msg = result.send[0]
    assert isinstance(msg, kind), msg
    return msg


def effects(result, kind):
    return [e for e in result.effects if e.kind == kind]


DUE = datetime(2027, 1, 15, 23, 59, 59, tzinfo=UTC)


def shipped(c=None):
    r = new(c=c)
    r = receive(r.state, sam(r.state, Status.WILL_SUPPLY,
                             reason=ReasonForMessage.REQUEST_RESPONSE), ctx=ctx())
    return receive(r.state, sam(r.state, Status.LOANED, due=DUE), ctx=ctx())


def on_loan():
    r = shipped()
    r = staff(r.state, act("receive", barcodes=["TMP-1"]), ctx=ctx())
    return staff(r.state, act("loan_to_patron"), ctx=ctx())


# -- the stories ----------------------------------------------------------------------


def test_loan_from_creation_to_completion():
    r = new(A, B)
    req = r.state
    assert req.state is S.SENT and req.partner == A
    msg = only(r, Request)
    assert msg.header.requesting_agency_request_id == "BR7-1"
    assert str(msg.header.supplying_agency_id) == A
    assert str(msg.header.requesting_agency_id) == str(US)
    assert msg.header.timestamp == T0
    assert msg.service_info.service_type is ServiceType.LOAN
    assert msg.service_info.request_type is RequestType.NEW
    assert msg.service_info.need_before_date == datetime(2027, 3, 1, 23, 59, 59, tzinfo=UTC)
    assert msg.bibliographic_info.bibliographic_item_id[0].identifier == "9780684801223"
    assert msg.patron_info.patron_id == "P-42"
    assert msg.requested_delivery_info[0].address.line1 == "Main desk"
    assert [a.request_id for a in req.attempts] == ["BR7-1"]
    assert req.summary()["requesting_request_id"] == "BR7-1"

    r = receive(req, sam(req, Status.REQUEST_RECEIVED,
                         reason=ReasonForMessage.REQUEST_RESPONSE), ctx=ctx())
    assert r.state.state is S.SENT and not r.send
    r = receive(r.state, sam(r.state, Status.WILL_SUPPLY), ctx=ctx())
    assert r.state.state is S.WILL_SUPPLY and r.state.supplying_request_id == "L-77"
    r = receive(r.state, sam(r.state, Status.LOANED, due=DUE), ctx=ctx())
    assert r.state.state is S.SHIPPED and r.state.due_date == DUE
    assert r.state.rota[0].state is EntryState.SUPPLIED

    r = staff(r.state, act("receive", barcodes=["TMP-1", "TMP-2"]), ctx=ctx())
    ram = only(r, RequestingAgencyMessage)
    assert ram.action is Action.RECEIVED
    assert ram.header.requesting_agency_request_id == "BR7-1"
    assert ram.header.supplying_agency_request_id == "L-77"
    assert r.state.state is S.ON_HOLD and r.state.barcodes == ("TMP-1", "TMP-2")
    assert [e.detail["barcode"] for e in effects(r, "item_status")] == ["TMP-1", "TMP-2"]
    (notice,) = effects(r, "patron_notice")
    assert notice.detail["patron_id"] == "P-42" and "Main desk" in notice.detail["text"]

    r = staff(r.state, act("loan_to_patron"), ctx=ctx())
    assert r.state.state is S.ON_LOAN and not r.send
    assert next_timer(r.state) == DUE

    r = staff(r.state, act("renew", due_date="2027-02-15"), ctx=ctx())
    assert only(r, RequestingAgencyMessage).action is Action.RENEW
    assert r.state.state is S.RENEW_REQUESTED
    new_due = DUE + timedelta(days=31)
    r = receive(r.state, sam(r.state, Status.LOANED, reason=ReasonForMessage.RENEW_RESPONSE,
                             answer=YesNo.Y, due=new_due), ctx=ctx())
    assert r.state.state is S.ON_LOAN and r.state.due_date == new_due
    assert r.state.renewals[-1].answer == "Y"
    assert "renewed until 2027-02-15" in effects(r, "patron_notice")[0].detail["text"]

    r = staff(r.state, act("patron_return"), ctx=ctx())
    assert r.state.state is S.RETURNED_BY_PATRON
    r = staff(r.state, act("return_to_partner"), ctx=ctx())
    assert only(r, RequestingAgencyMessage).action is Action.SHIPPED_RETURN
    assert r.state.state is S.RETURNED_TO_PARTNER
    r = receive(r.state, sam(r.state, Status.LOAN_COMPLETED), ctx=ctx())
    assert r.state.state is S.COMPLETE and not r.send
    assert r.state.summary() == {
        "status": "complete", "partner": A, "title": "The Old Man and the Sea",
        "patron_id": "P-42", "requesting_request_id": "BR7-1", "supplying_request_id": "L-77",
        "needs_attention": False,
    }


def test_first_lender_closed_unfilled_with_dates_then_second_lends():
    r = new(A, B)
    note = "Lending suspended 2026-12-20 to 2027-01-05 (holidays)"
    r = receive(r.state, sam(r.state, Status.UNFILLED, reason=ReasonForMessage.REQUEST_RESPONSE,
                             reason_unfilled="NotAvailableForILL", note=note), ctx=ctx())
    (closure,) = effects(r, "partner_closure")
    assert closure.detail["symbol"] == A
    assert closure.detail["start"] == date(2026, 12, 20)
    assert closure.detail["end"] == date(2027, 1, 5)
    assert r.state.rota[0].state is EntryState.UNFILLED and "2027-01-05" in r.state.rota[0].note
    req_msg = only(r, Request)
    assert str(req_msg.header.supplying_agency_id) == B
    assert req_msg.header.requesting_agency_request_id == "BR7-2"
    assert r.state.partner == B
    r = receive(r.state, sam(r.state, Status.LOANED, due=DUE), ctx=ctx())
    assert r.state.state is S.SHIPPED and r.state.partner == B


def test_known_closed_partner_is_skipped_when_moving_on():
    closed = {B: (None, date(2027, 1, 5), "holidays")}
    r = new(A, B, C)
    r = receive(r.state, sam(r.state, Status.UNFILLED, reason_unfilled="NotHeld"),
                ctx=ctx(closed=closed))
    assert r.state.rota[1].state is EntryState.SKIPPED
    assert r.state.rota[1].note == "closed for lending until 2027-01-05"
    assert str(only(r, Request).header.supplying_agency_id) == C


@pytest.mark.parametrize("note,expected", [
    ("Lending suspended 2026-12-20 to 2027-01-05", (date(2026, 12, 20), date(2027, 1, 5))),
    ("Closed for lending until 2027-01-05", (None, date(2027, 1, 5))),
    ("Library closed until further notice", (None, None)),
    ("Lending suspended from 2026-12-20 until further notice", (date(2026, 12, 20), None)),
    ("Not on shelf until 2027-01-05", None),
    ("Not held", None),
])
def test_closure_notes(note, expected):
    assert parse_closure_note(note) == expected


def test_no_answer_times_out_and_moves_on():
    r = new(A, B)
    assert next_timer(r.state) == T0 + timedelta(hours=48)
    early = tick(r.state, ctx=ctx(T0 + timedelta(hours=47)))
    assert early.state is r.state and not early.send
    r = tick(r.state, ctx=ctx(T0 + timedelta(hours=48)))
    cancel, request = r.send
    assert isinstance(cancel, RequestingAgencyMessage) and cancel.action is Action.CANCEL
    assert str(cancel.header.supplying_agency_id) == A
    assert cancel.header.requesting_agency_request_id == "BR7-1"
    assert isinstance(request, Request)
    assert str(request.header.supplying_agency_id) == B
    assert request.header.requesting_agency_request_id == "BR7-2"
    assert r.state.rota[0].state is EntryState.TIMED_OUT

    # A's answer to our Cancel is expected: recorded, no change
    late = receive(r.state, sam(r.state, Status.CANCELLED, reason=ReasonForMessage.CANCEL_RESPONSE,
                                answer=YesNo.Y, rari="BR7-1", sender=A), ctx=ctx())
    assert late.state is r.state and late.history


def test_late_message_from_an_earlier_lender_is_refused_without_change():
    r = new(A, B)
    r = receive(r.state, sam(r.state, Status.UNFILLED, reason_unfilled="NotHeld"), ctx=ctx())
    before = r.state
    with pytest.raises(ProtocolError) as err:
        receive(before, sam(before, Status.WILL_SUPPLY, rari="BR7-1", sender=A), ctx=ctx())
    assert err.value.error_type is ErrorType.UNRECOGNISED_DATA_VALUE
    assert err.value.value == ("request id BR7-1 belongs to an earlier attempt with ISIL:XX-1; "
                               "the request is now with ISIL:XX-2")
    # A's Unfilled sent again (it never got our confirmation): confirmed, no change.
    again = receive(before, sam(before, Status.UNFILLED, reason_unfilled="NotHeld",
                                rari="BR7-1", sender=A), ctx=ctx())
    assert again.state is before and not again.send
    assert [h.event for h in again.history] == ["unfilled_again"]
    with pytest.raises(ProtocolError, match="earlier attempt"):  # only A's, only Unfilled
        receive(before, sam(before, Status.UNFILLED, rari="BR7-1", sender=B), ctx=ctx())
    with pytest.raises(ProtocolError, match="not a request of ours"):
        receive(before, sam(before, Status.WILL_SUPPLY, rari="BR7-9"), ctx=ctx())
    with pytest.raises(ProtocolError, match="was sent to ISIL:XX-2"):
        receive(before, sam(before, Status.WILL_SUPPLY, sender=C), ctx=ctx())


def test_illegal_partner_message_is_a_protocol_error():
    r = new(A)
    with pytest.raises(ProtocolError, match="LoanCompleted is not expected now"):
        receive(r.state, sam(r.state, Status.LOAN_COMPLETED), ctx=ctx())


def test_retry_possible_retries_the_same_partner_with_a_retry_request():
    r = new(A, B)
    after = datetime(2026, 11, 20, 0, 0, tzinfo=UTC)
    r = receive(r.state, sam(r.state, Status.RETRY_POSSIBLE, reason_retry="OnLoan",
                             retry_after=after), ctx=ctx())
    assert r.state.state is S.RETRY_WAIT and not r.send
    assert r.state.rota[0].state is EntryState.RETRY
    assert next_timer(r.state) == after
    assert tick(r.state, ctx=ctx(after - timedelta(minutes=1))).send == ()
    r = tick(r.state, ctx=ctx(after))
    msg = only(r, Request)
    assert str(msg.header.supplying_agency_id) == A
    assert msg.header.requesting_agency_request_id == "BR7-2"
    assert msg.service_info.request_type is RequestType.RETRY
    assert msg.service_info.requesting_agency_previous_request_id == "BR7-1"
    assert r.state.state is S.SENT and r.state.rota[0].state is EntryState.ACTIVE
    # the old id now belongs to an earlier attempt
    with pytest.raises(ProtocolError, match="earlier attempt"):
        receive(r.state, sam(r.state, Status.WILL_SUPPLY, rari="BR7-1"), ctx=ctx())


def test_retry_after_the_needed_by_date_moves_on():
    r = new(A, B, f=form(needed_by=date(2026, 11, 10)))
    r = receive(r.state, sam(r.state, Status.RETRY_POSSIBLE,
                             reason_retry="NotCurrentAvailableForILL",
                             retry_after=datetime(2027, 1, 6, tzinfo=UTC)), ctx=ctx())
    msg = only(r, Request)
    assert str(msg.header.supplying_agency_id) == B
    assert msg.service_info.request_type is RequestType.NEW
    assert r.state.rota[0].state is EntryState.UNFILLED
    assert "needed-by" in r.state.rota[0].note
    (closure,) = effects(r, "partner_closure")
    assert closure.detail["end"] == date(2027, 1, 5)


def test_retry_policy_next_moves_on():
    c = ctx(policy=Policy(retry_policy="next"))
    r = new(A, B, c=c)
    r = receive(r.state, sam(r.state, Status.RETRY_POSSIBLE, reason_retry="OnLoan",
                             retry_after=T0 + timedelta(days=2)), ctx=c)
    assert str(only(r, Request).header.supplying_agency_id) == B


def test_cost_retry_within_max_fee_is_sent_at_once():
    c = ctx(policy=Policy(auto_accept_costs=True))
    f = form(willing_to_pay=True, max_fee=Decimal(20), currency="EUR")
    r = new(A, B, f=f, c=c)
    assert only(r, Request).billing_info.maximum_costs.monetary_value == Decimal(20)
    r = receive(r.state, sam(r.state, Status.RETRY_POSSIBLE, reason_retry="CostExceedsMaxCost",
                             offered=(("15.00", "EUR"),)), ctx=c)
    msg = only(r, Request)
    assert str(msg.header.supplying_agency_id) == A
    assert msg.service_info.request_type is RequestType.RETRY
    assert msg.billing_info.maximum_costs.monetary_value == Decimal("15.00")
    # above the maximum: move on
    r2 = new(A, B, f=f, c=c)
    r2 = receive(r2.state, sam(r2.state, Status.RETRY_POSSIBLE, reason_retry="CostExceedsMaxCost",
                               offered=(("25", "EUR"),)), ctx=c)
    assert str(only(r2, Request).header.supplying_agency_id) == B


def conditional():
    r = new(A, B)
    delivery = DeliveryInfo(date_sent=T0, loan_condition=(Code("LibraryUseOnly"),))
    r = receive(r.state, sam(r.state, Status.WILL_SUPPLY, delivery=delivery,
                             note="#ReShareAddLoanCondition# reading room only"), ctx=ctx())
    return r


def test_condition_accepted():
    r = conditional()
    assert r.state.state is S.CONDITIONAL and r.state.needs_attention
    assert r.state.open_offer.loan_conditions == ("LibraryUseOnly",)
    r = staff(r.state, act("condition_answer", accept=True, note="patron agrees"), ctx=ctx())
    msg = only(r, RequestingAgencyMessage)
    assert msg.action is Action.NOTIFICATION
    assert msg.note.startswith("#ReShareLoanConditionAgreeResponse#ACCEPT")
    assert r.state.state is S.WILL_SUPPLY and r.state.conditions[-1].answer == "accepted"
    assert r.state.partner == A


def test_condition_refused_moves_on():
    r = conditional()
    r = staff(r.state, act("condition_answer", accept=False, note="no reading room"), ctx=ctx())
    cancel, request = r.send
    assert cancel.action is Action.CANCEL and cancel.note.startswith("REJECT")
    assert str(cancel.header.supplying_agency_id) == A
    assert str(request.header.supplying_agency_id) == B
    assert r.state.rota[0].state is EntryState.REFUSED
    assert r.state.state is S.SENT


def test_costs_within_max_fee_are_accepted_automatically():
    c = ctx(policy=Policy(auto_accept_costs=True))
    f = form(willing_to_pay=True, max_fee=Decimal(20), currency="EUR")
    r = new(A, f=f, c=c)
    r = receive(r.state, sam(r.state, Status.WILL_SUPPLY, offered=(("10", "EUR"),)), ctx=c)
    assert r.state.state is S.WILL_SUPPLY
    assert only(r, RequestingAgencyMessage).note.startswith("#ReShareLoanConditionAgreeResponse#")
    # no auto acceptance: staff decide
    r = new(A, f=f)
    r = receive(r.state, sam(r.state, Status.WILL_SUPPLY, offered=(("10", "EUR"),)), ctx=ctx())
    assert r.state.state is S.CONDITIONAL and not r.send


def test_renew_refused_keeps_the_due_date_and_flags():
    r = on_loan()
    r = staff(r.state, StaffAction.from_json({"action": "renew", "actor": "patron:P-42"}),
              ctx=ctx())
    r = receive(r.state, sam(r.state, Status.LOANED, reason=ReasonForMessage.RENEW_RESPONSE,
                             answer=YesNo.N, note="needed here"), ctx=ctx())
    assert r.state.state is S.ON_LOAN and r.state.due_date == DUE
    assert r.state.renewals[-1].answer == "N"
    assert "did not renew" in effects(r, "patron_notice")[0].detail["text"]
    assert r.state.needs_attention
    r = staff(r.state, act("mark_read"), ctx=ctx())
    assert not r.state.needs_attention


def test_cancel_accepted():
    r = new(A, B)
    r = receive(r.state, sam(r.state, Status.WILL_SUPPLY), ctx=ctx())
    r = staff(r.state, act("cancel", reason="patron no longer needs it", notify_patron=True),
              ctx=ctx())
    msg = only(r, RequestingAgencyMessage)
    assert msg.action is Action.CANCEL and "no longer needs" in msg.note
    assert r.state.state is S.CANCEL_REQUESTED
    r = receive(r.state, sam(r.state, Status.CANCELLED, reason=ReasonForMessage.CANCEL_RESPONSE,
                             answer=YesNo.Y), ctx=ctx())
    assert r.state.state is S.CANCELLED and not r.send
    assert r.state.rota[0].state is EntryState.CANCELLED
    assert effects(r, "patron_notice")


def test_the_lenders_message_that_ended_a_request_sent_again_changes_nothing():
    """A lender that did not get our confirmation sends its last message again: the
    second LoanCompleted or Cancelled is confirmed and recorded, and changes nothing."""
    r = new(A, B)
    r = receive(r.state, sam(r.state, Status.WILL_SUPPLY), ctx=ctx())
    r = staff(r.state, act("cancel", reason="not needed"), ctx=ctx())
    r = receive(r.state, sam(r.state, Status.CANCELLED, reason=ReasonForMessage.CANCEL_RESPONSE,
                             answer=YesNo.Y), ctx=ctx())
    cancelled = r.state
    r = new(A, B)
    r = receive(r.state, sam(r.state, Status.LOANED, due=DUE), ctx=ctx())
    r = staff(r.state, act("receive", barcodes=["TMP-1"]), ctx=ctx())
    r = staff(r.state, act("return_to_partner"), ctx=ctx())
    r = receive(r.state, sam(r.state, Status.LOAN_COMPLETED), ctx=ctx())
    completed = r.state
    assert (cancelled.state, completed.state) == (S.CANCELLED, S.COMPLETE)
    for req, again in ((cancelled, sam(cancelled, Status.CANCELLED, rari="BR7-1", sender=A,
                                       reason=ReasonForMessage.CANCEL_RESPONSE,
                                       answer=YesNo.Y)),
                       (completed, sam(completed, Status.LOAN_COMPLETED))):
        result = receive(req, again, ctx=ctx())
        assert result.state.state is req.state and not result.send
        assert len(result.history) == 1 and result.history[0].event.startswith("received_")


def test_cancel_refused_goes_back():
    r = new(A, B)
    r = receive(r.state, sam(r.state, Status.WILL_SUPPLY), ctx=ctx())
    r = staff(r.state, act("cancel", reason="duplicate"), ctx=ctx())
    r = receive(r.state, sam(r.state, Status.WILL_SUPPLY, reason=ReasonForMessage.CANCEL_RESPONSE,
                             answer=YesNo.N, note="already packed"), ctx=ctx())
    assert r.state.state is S.WILL_SUPPLY and r.state.pending_cancel is None
    assert r.state.needs_attention and "already packed" in r.state.messages[-1].text


def test_cancel_partner_moves_on_once_confirmed():
    r = new(A, B)
    r = staff(r.state, act("cancel_partner"), ctx=ctx())
    assert only(r, RequestingAgencyMessage).action is Action.CANCEL
    r = receive(r.state, sam(r.state, Status.CANCELLED, reason=ReasonForMessage.CANCEL_RESPONSE,
                             answer=YesNo.Y), ctx=ctx())
    assert str(only(r, Request).header.supplying_agency_id) == B
    assert r.state.rota[0].state is EntryState.CANCELLED


def test_cancel_after_shipping_is_refused():
    r = shipped()
    with pytest.raises(StaffActionError, match="only before the lender ships"):
        staff(r.state, act("cancel", reason="x"), ctx=ctx())


def test_copy_delivered():
    f = form(format="digital", copyright_agreed=True, title_of_component="A chapter",
             pages="10-20")
    r = new(A, f=f)
    msg = only(r, Request)
    assert msg.service_info.service_type is ServiceType.COPY
    assert msg.service_info.copyright_compliance.value == "Other"
    assert msg.bibliographic_info.pages_requested == "10-20"
    delivery = DeliveryInfo(date_sent=T0, url="https://lender.example/copy/1.pdf",
                            delivery_method=Code("URL"))
    r = receive(r.state, sam(r.state, Status.COPY_COMPLETED, delivery=delivery), ctx=ctx())
    assert r.state.state is S.COPY_DELIVERED
    assert r.state.delivery.url == "https://lender.example/copy/1.pdf"
    assert "1.pdf" in effects(r, "patron_notice")[0].detail["text"]


def test_borrowing_closure_refuses_create_with_its_dates():
    closure = Closure(active=True, start=date(2026, 10, 1), end=date(2027, 1, 5))
    with pytest.raises(StaffActionError) as err:
        new(A, c=ctx(closure=closure))
    assert str(err.value) == ("Borrowing suspended 2026-10-01 to 2027-01-05: "
                              "new requests cannot be created")
    # outside the dates: fine
    later = Closure(active=True, start=date(2026, 12, 20), end=date(2027, 1, 5))
    assert new(A, c=ctx(closure=later)).state.state is S.SENT


def test_end_of_rota_then_rerequest_with_new_partners():
    r = new(A, B)
    r = receive(r.state, sam(r.state, Status.UNFILLED, reason_unfilled="NotHeld"), ctx=ctx())
    r = receive(r.state, sam(r.state, Status.UNFILLED, reason_unfilled="NotOnShelf"), ctx=ctx())
    assert r.state.state is S.UNFILLED and not r.send
    assert r.state.end_reason == "unfilled — end of rota"
    assert r.state.needs_attention and r.state.partner is None
    with pytest.raises(StaffActionError, match="not a configured partner"):
        staff(r.state, act("rerequest", partners=["ISIL:ZZ-9"]), ctx=ctx())
    r = staff(r.state, act("rerequest", partners=[C]), ctx=ctx())
    msg = only(r, Request)
    assert str(msg.header.supplying_agency_id) == C
    assert msg.header.requesting_agency_request_id == "BR7-3"
    assert r.state.state is S.SENT and r.state.end_reason is None


def test_empty_rota_is_unfilled_at_once():
    r = create(form(), ctx=ctx(), rota=[], public_id="BR8")
    assert r.state.state is S.UNFILLED and not r.send
    assert r.state.end_reason == "no partner in the rota"


def test_overdue_timer_and_recall():
    r = on_loan()
    assert tick(r.state, ctx=ctx(DUE - timedelta(seconds=1))).send == ()
    o = tick(r.state, ctx=ctx(DUE + timedelta(hours=1)))
    assert o.state.state is S.OVERDUE and effects(o, "patron_notice")
    assert o.state.needs_attention
    rec = receive(r.state, sam(r.state, Status.RECALLED, due=DUE - timedelta(days=5)), ctx=ctx())
    assert rec.state.state is S.RECALLED and effects(rec, "patron_notice")
    back = receive(rec.state, sam(rec.state, Status.LOANED, due=DUE), ctx=ctx())
    assert back.state.state is S.ON_LOAN


def test_lost_on_v12_is_a_notification_and_on_2021_a_lost_action():
    r = on_loan()
    lost = staff(r.state, act("lost", note="patron moved away"), ctx=ctx())
    msg = only(lost, RequestingAgencyMessage)
    assert msg.action is Action.NOTIFICATION and msg.note.startswith("Lost")
    assert lost.state.state is S.LOST
    partners = {**PARTNERS, A: Partner(symbol=A, iso18626_version="2021-2")}
    lost21 = staff(r.state, act("lost"), ctx=ctx(partners=partners))
    assert only(lost21, RequestingAgencyMessage).action is Action.LOST
    done = receive(lost.state, sam(lost.state, Status.COMPLETED_WITHOUT_RETURN,
                                   offered=(("80", "EUR"),)), ctx=ctx())
    assert done.state.state is S.COMPLETE
    assert effects(done, "charge")[0].detail["amount"] == Decimal(80)


def test_delivery_failure_of_a_request_moves_on():
    r = new(A, B)
    f = delivery_failed(r.state, kind="request", error="UnrecognisedDataValue: unknown agency",
                        ctx=ctx())
    assert str(only(f, Request).header.supplying_agency_id) == B
    assert "unknown agency" in f.state.rota[0].note
    g = delivery_failed(f.state, kind="requestingAgencyMessage", error="HTTP 500", ctx=ctx())
    assert g.state.state is S.SENT and g.state.needs_attention and not g.send


def test_an_error_to_a_request_that_may_have_reached_the_lender_does_not_move_on():
    """CrossLink answers ERROR to a request id it already holds: after an attempt whose
    outcome is unknown (a timeout...), that ERROR may mean the lender has the request,
    so asking the next lender could make two of them ship."""
    r = new(A, B)
    error = "UnrecognisedDataValue: RequestingAgencyRequestId already exists"
    f = delivery_failed(r.state, kind="request", error=error, ctx=ctx(), maybe_delivered=True)
    assert not f.send
    assert f.state.state is S.SENT and f.state.partner == A
    assert f.state.answer_by == r.state.answer_by  # its answer time still runs
    assert f.state.rota[0].state is EntryState.ACTIVE and f.state.needs_attention
    [entry] = [h for h in f.history if h.event == "delivery_uncertain"]
    assert "already exists" in entry.summary and "may hold the request" in entry.summary
    assert "next lender is asked" in entry.summary
    # Its answer time runs out: the request is cancelled there, and the next lender asked.
    g = tick(f.state, ctx=ctx(T0 + timedelta(days=30)))
    cancel, request = g.send
    assert cancel.action is Action.CANCEL and str(cancel.header.supplying_agency_id) == A
    assert str(request.header.supplying_agency_id) == B


def test_staff_action_json_errors_are_clear():
    with pytest.raises(StaffActionInvalid, match="unknown action 'fly'"):
        StaffAction.from_json({"action": "fly"})
    with pytest.raises(StaffActionInvalid) as err:
        StaffAction.from_json({"action": "receive", "barcodes": ["A", "A"], "colour": "red"})
    assert err.value.problems["colour"] == "not a field of 'receive'"
    assert "twice" in err.value.problems["barcodes"]
    with pytest.raises(StaffActionInvalid, match="reason: is required") as err:
        StaffAction.from_json({"action": "cancel", "notify_patron": "yes"})
    assert err.value.problems == {"reason": "is required",
                                  "notify_patron": "must be true or false"}
    a = StaffAction.from_json({"action": "rota_move", "symbol": B, "position": 0})
    assert StaffAction.from_json(a.to_json()) == a


def test_rota_edits_through_the_machine_keep_the_active_partner():
    r = new(A, B, C)
    r = staff(r.state, act("rota_add", symbol=D, position=0), ctx=ctx())
    assert r.state.partner == A and [e.symbol for e in r.state.rota] == [A, D, B, C]
    r = staff(r.state, act("rota_move", symbol=C, position=0), ctx=ctx())
    with pytest.raises(StaffActionError, match="active partner"):
        staff(r.state, act("rota_remove", symbol=A), ctx=ctx())
    r = staff(r.state, act("rota_remove", symbol=D), ctx=ctx())
    r = receive(r.state, sam(r.state, Status.UNFILLED), ctx=ctx())
    assert str(only(r, Request).header.supplying_agency_id) == C


# -- every state: reachable, and JSON round trip -------------------------------------------


def reach_all() -> dict[BorrowingState, tuple[BorrowingRequest, BorrowingContext]]:
    """One request in every state, each reached through the machine."""
    c = ctx()
    out: dict[BorrowingState, tuple[BorrowingRequest, BorrowingContext]] = {}

    def keep(result):
        out.setdefault(result.state.state, (result.state, c))
        return result.state

    out[S.CREATED] = (replace(new(A).state, state=S.CREATED, active=None, rota=(
        RotaEntry(symbol=A),), attempts=()), c)
    sent = keep(new(A, B))
    keep(receive(sent, sam(sent, Status.EXPECT_TO_SUPPLY), ctx=c))
    ws = keep(receive(sent, sam(sent, Status.WILL_SUPPLY), ctx=c))
    keep(conditional())
    keep(receive(sent, sam(sent, Status.RETRY_POSSIBLE, reason_retry="OnLoan",
                           retry_after=T0 + timedelta(days=3)), ctx=c))
    keep(staff(ws, act("cancel", reason="x"), ctx=c))
    sh = keep(receive(ws, sam(ws, Status.LOANED, due=DUE), ctx=c))
    rc = keep(staff(sh, act("receive", barcodes=["T1"], in_transit=True), ctx=c))
    oh = keep(staff(rc, act("on_hold"), ctx=c))
    ol = keep(staff(oh, act("loan_to_patron"), ctx=c))
    rb = keep(staff(ol, act("patron_return"), ctx=c))
    rp = keep(staff(rb, act("return_to_partner"), ctx=c))
    keep(staff(ol, act("renew"), ctx=c))
    keep(tick(ol, ctx=ctx(DUE + timedelta(days=1))))
    keep(receive(ol, sam(ol, Status.RECALLED), ctx=c))
    keep(receive(rp, sam(rp, Status.LOAN_COMPLETED), ctx=c))
    keep(staff(sent, act("cancel", reason="x"), ctx=c))
    cr = staff(sent, act("cancel", reason="x"), ctx=c).state
    keep(receive(cr, sam(cr, Status.CANCELLED, reason=ReasonForMessage.CANCEL_RESPONSE,
                         answer=YesNo.Y), ctx=c))
    keep(receive(sent, sam(sent, Status.UNFILLED), ctx=c))  # moves on to B: SENT
    last = new(A).state
    keep(receive(last, sam(last, Status.UNFILLED), ctx=c))
    keep(receive(sent, sam(sent, Status.COPY_COMPLETED,
                           delivery=DeliveryInfo(date_sent=T0, url="u")), ctx=c))
    keep(staff(ol, act("lost"), ctx=c))
    return out


def test_every_state_is_reachable():
    assert set(reach_all()) == set(BorrowingState)


@pytest.mark.parametrize("state", list(BorrowingState), ids=lambda s: s.value)
def test_json_round_trip_in_every_state(state):
    req, _ = reach_all()[state]
    data = json.loads(json.dumps(req.to_json()))
    assert BorrowingRequest.from_json(data) == req
    assert BorrowingRequest.from_json(data).to_json() == req.to_json()
    assert req.summary()["status"] == state.value


# -- what we send is valid ISO 18626 v1.2 ---------------------------------------------------

XSD = Path("/work/shared/iso18626/ISO-18626-v1_2.xsd")


def all_sent_messages():
    """Every message the stories above send."""
    sent = []
    c = ctx()
    pay = form(willing_to_pay=True, max_fee=Decimal(20), currency="EUR", service_level="Rush",
               identifiers=(("LCCN", "2001012345"),), oclc="123", volume="2", note="please")
    r = new(A, B, f=pay)
    sent += r.send
    sent += staff(r.state, act("cancel", reason="x"), ctx=c).send
    sent += staff(r.state, act("status_request"), ctx=c).send
    sent += staff(r.state, act("message", note="hello"), ctx=c).send
    sent += tick(r.state, ctx=ctx(T0 + timedelta(days=3))).send
    sent += conditional().send
    cond = conditional().state
    sent += staff(cond, act("condition_answer", accept=True), ctx=c).send
    sent += staff(cond, act("condition_answer", accept=False), ctx=c).send
    copy = new(A, f=form(format="digital", copyright_agreed=True, requested_media="PDF"))
    sent += copy.send
    rw = receive(r.state, sam(r.state, Status.RETRY_POSSIBLE, reason_retry="OnLoan",
                              retry_after=T0 + timedelta(days=2)), ctx=c).state
    sent += tick(rw, ctx=ctx(T0 + timedelta(days=2))).send
    sh = shipped().state
    rc = staff(sh, act("receive", barcodes=["T1", "T2"]), ctx=c)
    sent += rc.send
    ol = staff(rc.state, act("loan_to_patron"), ctx=c).state
    sent += staff(ol, act("renew", note="exam"), ctx=c).send
    sent += staff(ol, act("return_to_partner"), ctx=c).send
    sent += staff(ol, act("lost"), ctx=c).send
    return sent


def test_every_message_we_send_validates_against_the_official_v12_schema():
    writer = pytest.importorskip("node.protocol.writer")
    etree = pytest.importorskip("lxml.etree")
    from node.protocol.codes import Version
    from node.protocol.messages import Envelope

    schema = etree.XMLSchema(etree.parse(str(XSD)))
    messages = all_sent_messages()
    kinds = {type(m).__name__ for m in messages}
    assert kinds == {"Request", "RequestingAgencyMessage"}
    actions = {m.action for m in messages if isinstance(m, RequestingAgencyMessage)}
    assert actions >= {Action.CANCEL, Action.STATUS_REQUEST, Action.NOTIFICATION,
                       Action.RECEIVED, Action.RENEW, Action.SHIPPED_RETURN}
    for message in messages:
        body = writer.serialise(Envelope(version=Version.V1_2, message=message))
        doc = etree.fromstring(body)
        assert schema.validate(doc), (message, schema.error_log)
