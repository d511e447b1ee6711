"""The lending machine, driven through whole conversations (no I/O)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest

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
    BibliographicInfo,
    BibliographicItemId,
    BillingInfo,
    Costs,
    Header,
    PatronInfo,
    PhysicalAddress,
    Request,
    RequestedDeliveryInfo,
    RequestingAgencyMessage,
    ServiceInfo,
    SupplyingAgencyMessage,
)
from node.supplier import machine as m
from node.supplier.locate import HoldingsItem, HoldingsRecord, LocateResult, locate
from node.supplier.machine import LendingState as S

NOW = datetime(2026, 3, 2, 9, 30, tzinfo=UTC)
US = AgencyId.parse("ISIL:DK-820010")
THEM = AgencyId.parse("ISIL:DK-710100")

SENT: list[SupplyingAgencyMessage] = []  # every message produced, for the schema check


# -- small stand-ins for node.config ------------------------------------------------------


@dataclass(frozen=True)
class Closure:
    active: bool = False
    start: date | None = None
    end: date | None = None
    note: str = ""

    def applies_on(self, day: date) -> bool:
        if not self.active:
            return False
        if self.start and day < self.start:
            return False
        return not (self.end and day > self.end)

    def describe(self, kind: str) -> str:
        if self.start and self.end:
            return f"{kind} suspended {self.start.isoformat()} to {self.end.isoformat()}"
        if self.end:
            return f"{kind} suspended until {self.end.isoformat()}"
        return f"{kind} suspended until further notice"

    def reopens(self) -> date | None:
        return self.end + timedelta(days=1) if self.end else None


@dataclass(frozen=True)
class Policy:
    auto_answer: bool = True
    found_status: str = "WillSupply"
    when_on_loan: str = "RetryPossible"
    loan_period_days: int = 28
    auto_renew: bool = True
    renew_period_days: int = 14
    auto_cancel: bool = True
    location_preference: tuple[str, ...] = ("Main", "Annex")
    non_lendable_locations: tuple[str, ...] = ("Reference",)
    closure: Closure = Closure()


@dataclass(frozen=True)
class Partner:
    symbol: str = "ISIL:DK-710100"
    name: str = "Borrowing Library"
    url: str = "https://borrower.example/iso18626"
    iso18626_version: str = "1.2"
    lend_to: bool = True
    borrow_from: bool = True
    closure_reply: str = "Unfilled"


def ctx(now: datetime = NOW, *, policy: Policy | None = None, closure: Closure | None = None,
        partner: Partner | None = Partner()) -> m.LendingContext:
    policy = policy or Policy()
    return m.LendingContext(our_symbol=US, policy=policy,
                            closure=closure if closure is not None else policy.closure,
                            partner=partner, now=now)


# -- messages -----------------------------------------------------------------------------


def request(rari: str = "R-1", service: ServiceType = ServiceType.LOAN, *,
            request_type: RequestType = RequestType.NEW, isbn: str = "0-14-044913-2",
            title: str = "The Odyssey", author: str = "Homer") -> Request:
    return Request(
        header=Header(supplying_agency_id=US, requesting_agency_id=THEM, timestamp=NOW,
                      requesting_agency_request_id=rari, multiple_item_request_id=""),
        bibliographic_info=BibliographicInfo(
            title=title, author=author,
            bibliographic_item_id=(BibliographicItemId(identifier=isbn, code=Code("ISBN")),),
        ),
        service_info=ServiceInfo(service_type=service, request_type=request_type,
                                 need_before_date=datetime(2026, 4, 1, tzinfo=UTC),
                                 note="For a seminar"),
        requested_delivery_info=(RequestedDeliveryInfo(
            sort_order=1,
            address=PhysicalAddress(line1="Main St 1", locality="Aarhus", postal_code="8000")),),
        patron_info=PatronInfo(patron_id="P-77", given_name="Ada", surname="Lovelace"),
        billing_info=BillingInfo(maximum_costs=Costs(currency_code=Code("DKK"),
                                                      monetary_value=Decimal("50.00"))),
    )


def action(act: Action, note: str | None = None, rari: str = "R-1",
           now: datetime = NOW) -> RequestingAgencyMessage:
    return RequestingAgencyMessage(
        header=Header(supplying_agency_id=US, requesting_agency_id=THEM, timestamp=now,
                      requesting_agency_request_id=rari),
        action=act, note=note)


AVAILABLE = LocateResult(
    outcome="available", record_id="rec-1",
    item=HoldingsItem(barcode="B-1", call_number="883 HOM", location="Main"),
    matched_on="ISBN 9780140449136", reason="Matched record rec-1 on ISBN 9780140449136.")


def located(outcome: str, earliest_due: date | None = None) -> LocateResult:
    if outcome == "available":
        return AVAILABLE
    return LocateResult(outcome=outcome, record_id=None if outcome == "not_held" else "rec-1",
                        matched_on="" if outcome == "not_held" else "ISBN 9780140449136",
                        earliest_due=earliest_due, reason=f"outcome {outcome}")


def only(result) -> SupplyingAgencyMessage:
    assert len(result.send) == 1, result.send
    msg = result.send[0]
    check_message(result.state, msg)
    return msg


def check_message(tx: m.LendingTransaction, msg: SupplyingAgencyMessage) -> None:
    SENT.append(msg)
    h = msg.header
    assert h.requesting_agency_id.same_agency(THEM)
    assert h.supplying_agency_id == US
    assert h.requesting_agency_request_id == tx.requesting_request_id
    assert h.supplying_agency_request_id == tx.supplying_request_id
    assert h.timestamp.tzinfo is not None
    assert msg.status_info.status is tx.status  # what we said is what we are


def new(rari="R-1", *, c=None, outcome="available", service=ServiceType.LOAN, **kw):
    c = c or ctx()
    return m.receive_request(request(rari, service, **kw), ctx=c, located=located(outcome))


def drive(result, c=None):
    """Check every message of a result and return its transaction."""
    for msg in result.send:
        check_message(result.state, msg)
    return result.state


def at(days: int) -> datetime:
    return NOW + timedelta(days=days)


# -- closure ------------------------------------------------------------------------------

WINDOW = Closure(active=True, start=date(2026, 3, 1), end=date(2026, 3, 10), note="Moving house")


@pytest.mark.parametrize("day,closed", [
    (date(2026, 2, 28), False), (date(2026, 3, 1), True), (date(2026, 3, 5), True),
    (date(2026, 3, 10), True), (date(2026, 3, 11), False),
])
def test_closure_window_unfills_only_inside_the_dates(day, closed):
    now = datetime.combine(day, datetime.min.time(), UTC).replace(hour=12)
    result = new(c=ctx(now, closure=WINDOW))
    msg = only(result)
    assert msg.message_info.reason_for_message is ReasonForMessage.REQUEST_RESPONSE
    if closed:
        assert result.state.state is S.UNFILLED
        assert msg.status_info.status is Status.UNFILLED
        assert msg.message_info.reason_unfilled.value == "NotAvailableForILL"
        assert msg.message_info.note.startswith("Lending suspended 2026-03-01 to 2026-03-10")
        assert "Moving house" in msg.message_info.note
        assert any(h.event == "closed_for_lending" for h in result.history)
    else:
        assert result.state.state is S.WILL_SUPPLY
        assert msg.status_info.status is Status.WILL_SUPPLY


def test_closure_without_dates_until_further_notice():
    closure = Closure(active=True)
    result = new(c=ctx(closure=closure, partner=Partner(closure_reply="RetryPossible")))
    msg = only(result)
    # no end date: no retryAfter to offer, so Unfilled even for a RetryPossible partner
    assert msg.status_info.status is Status.UNFILLED
    assert msg.message_info.note == "Lending suspended until further notice"
    assert msg.message_info.retry_after is None


def test_inactive_closure_is_ignored():
    result = new(c=ctx(closure=Closure(active=False, start=date(2026, 1, 1))))
    assert result.state.state is S.WILL_SUPPLY


def test_partner_preferring_retry_gets_retry_after_the_day_after_closure():
    result = new(c=ctx(closure=WINDOW, partner=Partner(closure_reply="RetryPossible")))
    msg = only(result)
    assert result.state.state is S.RETRY_POSSIBLE
    assert msg.message_info.reason_retry.value == "NotCurrentAvailableForILL"
    assert msg.message_info.retry_after == datetime(2026, 3, 11, tzinfo=UTC)
    assert "2026-03-10" in msg.message_info.note


def test_unknown_partner_and_lend_to_off_are_policy_problems():
    for partner in (None, Partner(lend_to=False)):
        result = new(c=ctx(partner=partner))
        msg = only(result)
        assert msg.status_info.status is Status.UNFILLED
        assert msg.message_info.reason_unfilled.value == "PolicyProblem"
        assert "ISIL:DK-710100" in msg.message_info.note


# -- automatic answers --------------------------------------------------------------------


@pytest.mark.parametrize("found,state,status", [
    ("WillSupply", S.WILL_SUPPLY, Status.WILL_SUPPLY),
    ("ExpectToSupply", S.EXPECT_TO_SUPPLY, Status.EXPECT_TO_SUPPLY),
])
def test_auto_answer_found(found, state, status):
    result = new(c=ctx(policy=Policy(found_status=found)))
    msg = only(result)
    assert result.state.state is state
    assert msg.status_info.status is status
    assert msg.message_info.reason_for_message is ReasonForMessage.REQUEST_RESPONSE
    assert result.state.answered
    assert result.state.located.barcode == "B-1"
    located_entry = next(h for h in result.history if h.event == "located")
    assert located_entry.detail["matched_on"] == "ISBN 9780140449136"
    if state is S.WILL_SUPPLY:
        assert [e.kind for e in result.effects] == ["pull_slip"]
        assert result.effects[0].detail["call_number"] == "883 HOM"


@pytest.mark.parametrize("outcome,reason", [
    ("not_held", "NotHeld"), ("non_circulating", "NotAvailableForILL"), ("missing", "NotOnShelf"),
])
def test_auto_answer_unfilled(outcome, reason):
    result = new(outcome=outcome)
    msg = only(result)
    assert result.state.state is S.UNFILLED
    assert msg.message_info.reason_unfilled.value == reason
    assert any(h.event == "located" and h.detail["outcome"] == outcome for h in result.history)


def test_on_loan_retry_possible_with_earliest_due():
    c = ctx(policy=Policy(when_on_loan="RetryPossible"))
    result = m.receive_request(request(), ctx=c, located=located("on_loan", date(2026, 3, 20)))
    msg = only(result)
    assert result.state.state is S.RETRY_POSSIBLE
    assert msg.message_info.reason_retry.value == "OnLoan"
    assert msg.message_info.retry_after.date() == date(2026, 3, 20)


def test_on_loan_unfilled_by_policy():
    c = ctx(policy=Policy(when_on_loan="Unfilled"))
    result = m.receive_request(request(), ctx=c, located=located("on_loan", date(2026, 3, 20)))
    msg = only(result)
    assert result.state.state is S.UNFILLED
    assert msg.message_info.reason_unfilled.value == "NotOnShelf"


def test_auto_answer_off_waits_for_staff_then_first_answer_is_request_response():
    c = ctx(policy=Policy(auto_answer=False))
    result = new(c=c)
    assert result.state.state is S.RECEIVED and result.send == ()
    assert result.state.needs_attention
    assert any(h.event == "located" for h in result.history)
    result = m.staff(result.state, m.ExpectToSupply(by="anna"), ctx=c)
    msg = only(result)
    assert msg.status_info.status is Status.EXPECT_TO_SUPPLY
    assert msg.message_info.reason_for_message is ReasonForMessage.REQUEST_RESPONSE
    result = m.staff(result.state, m.WillSupply(by="anna", note="Pulling it"), ctx=c)
    msg = only(result)
    assert msg.status_info.status is Status.WILL_SUPPLY
    assert msg.message_info.reason_for_message is ReasonForMessage.STATUS_CHANGE
    assert result.history[0].actor == "staff:anna"


def test_copy_request_follows_the_same_path_and_completes():
    result = new(service=ServiceType.COPY)
    tx = drive(result)
    assert tx.state is S.WILL_SUPPLY
    with pytest.raises(StaffActionError, match="deliver_copy"):
        m.staff(tx, m.Ship(), ctx=ctx())
    with pytest.raises(StaffActionError, match="URL or a note"):
        m.staff(tx, m.DeliverCopy(), ctx=ctx())
    result = m.staff(tx, m.DeliverCopy(url="https://files.example/x.pdf", by="bo"), ctx=ctx(at(1)))
    msg = only(result)
    assert result.state.state is S.COPY_COMPLETED
    assert msg.status_info.status is Status.COPY_COMPLETED
    assert msg.message_info.reason_for_message is ReasonForMessage.STATUS_CHANGE
    assert msg.delivery_info.delivery_method.value == "URL"
    assert msg.delivery_info.url is None  # the partner speaks 1.2: the URL goes in the note
    assert "https://files.example/x.pdf" in msg.message_info.note
    c2021 = ctx(at(1), partner=Partner(iso18626_version="2021-2"))
    assert m.staff(tx, m.DeliverCopy(url="https://x.example/y"), ctx=c2021).send[0] \
        .delivery_info.url == "https://x.example/y"


# -- a whole loan -------------------------------------------------------------------------


def test_full_loan():
    c = ctx()
    result = new(c=c)
    msg = only(result)
    assert (msg.status_info.status, msg.message_info.reason_for_message) == (
        Status.WILL_SUPPLY, ReasonForMessage.REQUEST_RESPONSE)
    tx = result.state
    assert tx.request.patron_id == "P-77"
    assert tx.request.max_cost == m.Money(amount=Decimal("50.00"), currency="DKK")
    assert tx.request.delivery_address == "Main St 1, 8000 Aarhus"

    result = m.staff(tx, m.Ship(by="anna", tracking="PN123"), ctx=ctx(at(1)))
    msg = only(result)
    tx = result.state
    assert tx.state is S.SHIPPED
    assert msg.status_info.status is Status.LOANED
    assert msg.message_info.reason_for_message is ReasonForMessage.STATUS_CHANGE
    due = date(2026, 3, 3) + timedelta(days=28)
    assert msg.status_info.due_date.date() == due and tx.due_date == due
    assert msg.delivery_info.item_id == ("B-1",)
    assert msg.delivery_info.delivery_method.value == "Mail"
    assert msg.delivery_info.date_sent == at(1)
    assert "PN123" in msg.message_info.note
    assert result.effects[0].kind == "item_status"
    assert result.effects[0].detail == {"barcode": "B-1", "status": "on_loan",
                                        "due_date": due.isoformat()}

    result = m.receive_action(tx, action(Action.RECEIVED, now=at(3)), ctx=ctx(at(3)))
    assert result.send == () and result.state.received_at == at(3)
    tx = result.state

    result = m.receive_action(tx, action(Action.RENEW), ctx=ctx(at(20)))
    msg = only(result)
    tx = result.state
    assert msg.message_info.reason_for_message is ReasonForMessage.RENEW_RESPONSE
    assert msg.message_info.answer_yes_no is YesNo.Y
    assert msg.status_info.status is Status.LOANED
    assert msg.status_info.due_date.date() == due + timedelta(days=14) == tx.due_date
    assert tx.renewals == 1
    assert result.effects[0].detail["due_date"] == (due + timedelta(days=14)).isoformat()

    result = m.receive_action(tx, action(Action.SHIPPED_RETURN, "Sent back"), ctx=ctx(at(30)))
    assert result.send == ()
    tx = result.state
    assert tx.state is S.RETURN_SHIPPED and tx.status is Status.LOANED
    assert tx.needs_attention and tx.unread[0].note == "Sent back"

    result = m.staff(tx, m.CheckIn(by="anna"), ctx=ctx(at(33)))
    msg = only(result)
    assert result.state.state is S.LOAN_COMPLETED
    assert msg.status_info.status is Status.LOAN_COMPLETED
    assert msg.message_info.reason_for_message is ReasonForMessage.STATUS_CHANGE
    assert result.effects[0].detail == {"barcode": "B-1", "status": "available", "due_date": None}


def _shipped(c=None):
    tx = drive(new(c=c))
    return drive(m.staff(tx, m.Ship(barcodes=("B-1", "B-2")), ctx=c or ctx()))


def test_renew_pending_for_staff_then_no():
    c = ctx(policy=Policy(auto_renew=False))
    tx = _shipped(c)
    result = m.receive_action(tx, action(Action.RENEW, "One more week?"), ctx=c)
    assert result.send == () and result.state.pending_renew is not None
    tx = result.state
    assert tx.needs_attention
    result = m.staff(tx, m.AnswerRenew(approve=False, note="Wanted here"), ctx=c)
    msg = only(result)
    assert msg.message_info.answer_yes_no is YesNo.N
    assert msg.status_info.status is Status.LOANED
    assert result.state.pending_renew is None and result.state.renewals == 0
    with pytest.raises(StaffActionError, match="has not asked to renew"):
        m.staff(result.state, m.AnswerRenew(approve=True), ctx=c)


def test_renew_yes_by_staff_with_date():
    c = ctx(policy=Policy(auto_renew=False))
    tx = drive(m.receive_action(_shipped(c), action(Action.RENEW), ctx=c))
    result = m.staff(tx, m.AnswerRenew(approve=True, due_date=date(2026, 6, 1)), ctx=c)
    msg = only(result)
    assert msg.message_info.answer_yes_no is YesNo.Y
    assert msg.status_info.due_date.date() == date(2026, 6, 1)


def test_renew_when_not_on_loan_is_a_protocol_error():
    tx = drive(new())
    with pytest.raises(ProtocolError) as err:
        m.receive_action(tx, action(Action.RENEW), ctx=ctx())
    assert err.value.error_type is ErrorType.UNRECOGNISED_DATA_VALUE
    assert "not on loan" in err.value.value


def test_recalled_item_cannot_be_renewed():
    tx = drive(m.staff(_shipped(), m.Recall(due_date=date(2026, 3, 9)), ctx=ctx()))
    assert tx.state is S.RECALLED and tx.due_date == date(2026, 3, 9)
    result = m.receive_action(tx, action(Action.RENEW), ctx=ctx())
    msg = only(result)
    assert msg.message_info.answer_yes_no is YesNo.N
    assert msg.status_info.status is Status.RECALLED


def test_cancel_before_shipping_auto_yes():
    tx = drive(new())
    result = m.receive_action(tx, action(Action.CANCEL, "Patron no longer needs it"), ctx=ctx())
    msg = only(result)
    assert result.state.state is S.CANCELLED
    assert msg.message_info.reason_for_message is ReasonForMessage.CANCEL_RESPONSE
    assert msg.message_info.answer_yes_no is YesNo.Y
    assert msg.status_info.status is Status.CANCELLED


def test_cancel_after_shipping_no():
    tx = _shipped()
    result = m.receive_action(tx, action(Action.CANCEL), ctx=ctx())
    msg = only(result)
    assert result.state.state is S.SHIPPED
    assert msg.message_info.answer_yes_no is YesNo.N
    assert msg.status_info.status is Status.LOANED


def test_cancel_pending_for_staff():
    c = ctx(policy=Policy(auto_cancel=False))
    tx = drive(new(c=c))
    result = m.receive_action(tx, action(Action.CANCEL), ctx=c)
    assert result.send == () and result.state.pending_cancel is not None
    no = m.staff(result.state, m.AnswerCancel(approve=False), ctx=c)
    assert only(no).message_info.answer_yes_no is YesNo.N
    assert no.state.state is S.WILL_SUPPLY and no.state.pending_cancel is None
    yes = m.staff(result.state, m.AnswerCancel(approve=True, by="bo"), ctx=c)
    assert only(yes).status_info.status is Status.CANCELLED
    assert yes.state.state is S.CANCELLED
    with pytest.raises(StaffActionError, match="has not asked to cancel"):
        m.staff(tx, m.AnswerCancel(approve=True), ctx=c)


def test_lost_with_charge():
    tx = _shipped()
    charge = m.Money(amount=Decimal("450.00"), currency="DKK")
    result = m.staff(tx, m.MarkLost(charge=charge, by="anna"), ctx=ctx(at(40)))
    msg = only(result)
    assert result.state.state is S.COMPLETED_WITHOUT_RETURN
    assert msg.status_info.status is Status.COMPLETED_WITHOUT_RETURN
    assert msg.delivery_info.delivery_costs[0].monetary_value == Decimal("450.00")
    assert msg.delivery_info.delivery_costs[0].currency_code.value == "DKK"
    kinds = [e.kind for e in result.effects]
    assert kinds == ["item_status", "item_status", "charge"]
    assert result.effects[-1].detail["amount"] == "450.00"
    assert result.state.charges[0].amount == Decimal("450.00")


def test_partner_reports_lost_2021():
    result = m.receive_action(_shipped(), action(Action.LOST), ctx=ctx())
    msg = only(result)
    assert result.state.state is S.COMPLETED_WITHOUT_RETURN
    assert msg.message_info.reason_for_message is ReasonForMessage.STATUS_CHANGE
    assert {e.detail["status"] for e in result.effects} == {"missing"}


def test_shipped_return_out_of_sequence_is_refused_and_changes_nothing():
    tx = drive(new())
    with pytest.raises(ProtocolError) as err:
        m.receive_action(tx, action(Action.SHIPPED_RETURN), ctx=ctx())
    assert err.value.error_type is ErrorType.UNRECOGNISED_DATA_VALUE
    assert err.value.value == (
        "ShippedReturn for a request that was never shipped (status WillSupply)")
    assert tx.state is S.WILL_SUPPLY  # frozen: the caller keeps the old state


def test_message_for_another_request_is_refused():
    with pytest.raises(ProtocolError, match="does not belong"):
        m.receive_action(drive(new()), action(Action.STATUS_REQUEST, rari="R-2"), ctx=ctx())


def test_duplicate_request_id_is_refused_but_retry_reuses_it():
    tx = drive(new())
    with pytest.raises(ProtocolError, match="already exists: a different request"):
        m.receive_request(request(title="Another book"), ctx=ctx(), located=AVAILABLE,
                          previous=tx)
    # The same request again (a resend, whatever its timestamp): confirmed, no change.
    again = m.receive_request(request(), ctx=ctx(), located=AVAILABLE, previous=tx)
    assert again.state == replace(tx, updated_at=again.state.updated_at) and not again.send
    assert [h.event for h in again.history] == ["received_request_again"]
    c = ctx(policy=Policy(when_on_loan="RetryPossible"))
    retry = drive(m.receive_request(request(), ctx=c, located=located("on_loan", date(2026, 3, 9))))
    assert retry.state is S.RETRY_POSSIBLE
    assert not m.receive_request(request(), ctx=c, located=AVAILABLE, previous=retry).send
    with pytest.raises(ProtocolError, match="only a Retry"):
        m.receive_request(request(title="Another book"), ctx=c, located=AVAILABLE,
                          previous=retry)
    result = m.receive_request(request(request_type=RequestType.RETRY), ctx=ctx(at(8)),
                               located=AVAILABLE, previous=retry)
    msg = only(result)
    assert result.state.state is S.WILL_SUPPLY
    assert msg.message_info.reason_for_message is ReasonForMessage.REQUEST_RESPONSE


def test_the_action_that_ended_a_request_sent_again_changes_nothing():
    """A requester that did not get our confirmation sends its action again: the second
    ShippedReturn, Cancel or Lost is confirmed and changes nothing (it used to get ERROR)."""
    returned = drive(m.receive_action(_shipped(), action(Action.SHIPPED_RETURN), ctx=ctx(at(3))))
    cancelled = drive(m.receive_action(drive(new()), action(Action.CANCEL), ctx=ctx(at(1))))
    lost = drive(m.receive_action(_shipped(), action(Action.LOST), ctx=ctx(at(3))))
    checked_in = drive(m.staff(returned, m.CheckIn(), ctx=ctx(at(4))))
    for tx, act in ((returned, Action.SHIPPED_RETURN), (checked_in, Action.SHIPPED_RETURN),
                    (cancelled, Action.CANCEL), (lost, Action.LOST)):
        again = m.receive_action(tx, action(act, now=at(5)), ctx=ctx(at(5)))
        assert again.state == replace(tx, updated_at=at(5)) and not again.send, act
        assert [h.event for h in again.history] == ["action_again"]
    with pytest.raises(ProtocolError, match="not allowed"):  # only what led there
        m.receive_action(cancelled, action(Action.LOST), ctx=ctx(at(5)))


def test_status_request_and_notification():
    tx = _shipped()
    result = m.receive_action(tx, action(Action.STATUS_REQUEST), ctx=ctx(at(2)))
    msg = only(result)
    assert msg.message_info.reason_for_message is ReasonForMessage.STATUS_REQUEST_RESPONSE
    assert msg.status_info.status is Status.LOANED
    assert msg.status_info.last_change == NOW  # it changed when we shipped
    assert msg.status_info.due_date.date() == tx.due_date
    result = m.receive_action(tx, action(Action.NOTIFICATION, "Arrived wet"), ctx=ctx(at(2)))
    assert result.send == ()
    assert [n.note for n in result.state.unread] == ["Arrived wet"]
    assert result.state.needs_attention
    read = m.staff(result.state, m.MarkRead(by="anna"), ctx=ctx(at(3)))
    assert read.state.unread == () and read.send == ()


def test_staff_message_and_note():
    tx = _shipped()
    result = m.staff(tx, m.SendMessage(note="Please handle with care"), ctx=ctx(at(2)))
    msg = only(result)
    assert msg.message_info.reason_for_message is ReasonForMessage.NOTIFICATION
    assert msg.status_info.status is Status.LOANED
    result = m.staff(tx, m.AddNote(text="Spine is fragile", by="anna"), ctx=ctx(at(2)))
    assert result.send == () and result.state.notes[0].text == "Spine is fragile"


# -- conditions ---------------------------------------------------------------------------


def _conditional():
    tx = drive(new())
    result = m.staff(tx, m.AddConditions(conditions=("libraryuseonly",), note="Fragile binding"),
                     ctx=ctx())
    msg = only(result)
    assert result.state.state is S.CONDITIONAL
    assert msg.status_info.status is Status.WILL_SUPPLY
    assert msg.delivery_info.loan_condition == (Code("LibraryUseOnly"),)
    assert "ACCEPT or REJECT" in msg.message_info.note
    return result.state


@pytest.mark.parametrize("note", ["ACCEPT", "accepted, thanks", "#seq:3#ACCEPT",
                                  "#ReShareLoanConditionAgreeResponse# ok"])
def test_conditions_accepted(note):
    result = m.receive_action(_conditional(), action(Action.NOTIFICATION, note), ctx=ctx())
    assert result.state.state is S.WILL_SUPPLY and result.state.conditions_accepted
    assert result.send == ()
    shipped = m.staff(result.state, m.Ship(), ctx=ctx())
    assert only(shipped).delivery_info.loan_condition == (Code("LibraryUseOnly"),)


def test_conditions_rejected_by_note():
    result = m.receive_action(_conditional(), action(Action.NOTIFICATION, "REJECT - no"), ctx=ctx())
    msg = only(result)
    assert result.state.state is S.CANCELLED
    assert msg.status_info.status is Status.CANCELLED


def test_conditions_rejected_by_cancel():
    c = ctx(policy=Policy(auto_cancel=False))  # a Cancel while CONDITIONAL is a rejection anyway
    result = m.receive_action(_conditional(), action(Action.CANCEL), ctx=c)
    msg = only(result)
    assert result.state.state is S.CANCELLED
    assert msg.message_info.answer_yes_no is YesNo.Y


def test_plain_notification_while_conditional_stays():
    result = m.receive_action(_conditional(), action(Action.NOTIFICATION, "Thinking"), ctx=ctx())
    assert result.state.state is S.CONDITIONAL


def test_cannot_ship_while_waiting_for_conditions():
    with pytest.raises(StaffActionError, match="ship: not allowed"):
        m.staff(_conditional(), m.Ship(), ctx=ctx())


# -- staff answers ------------------------------------------------------------------------


def test_reject_with_standard_reason():
    c = ctx(policy=Policy(auto_answer=False))
    tx = drive(new(c=c))
    with pytest.raises(StaffActionInvalid, match="NotOnShelf") as err:
        m.staff(tx, m.Reject(reason="ItemGone"), ctx=c)
    assert list(err.value.problems) == ["reason"]
    result = m.staff(tx, m.Reject(reason="notonshelf", note="Not found on shelf"), ctx=c)
    msg = only(result)
    assert msg.message_info.reason_unfilled.value == "NotOnShelf"
    assert msg.message_info.reason_for_message is ReasonForMessage.REQUEST_RESPONSE
    assert msg.message_info.note == "Not found on shelf"


def test_retry_possible_by_staff():
    c = ctx(policy=Policy(auto_answer=False))
    tx = drive(new(c=c))
    result = m.staff(tx, m.OfferRetry(reason="AtBindery", retry_after=date(2026, 4, 1)), ctx=c)
    msg = only(result)
    assert msg.message_info.reason_retry.value == "AtBindery"
    assert msg.message_info.retry_after == datetime(2026, 4, 1, tzinfo=UTC)


def test_ship_needs_a_barcode_and_a_future_due_date():
    c = ctx(policy=Policy(auto_answer=False))
    tx = m.receive_request(request(), ctx=c, located=None).state
    with pytest.raises(StaffActionError, match="give the barcodes"):
        m.staff(tx, m.Ship(), ctx=c)
    with pytest.raises(StaffActionError, match="not in the future"):
        m.staff(tx, m.Ship(barcodes=("X",), due_date=date(2026, 1, 1)), ctx=c)
    msg = only(m.staff(tx, m.Ship(barcodes=("X",), delivery_method="courier"), ctx=c))
    assert msg.message_info.reason_for_message is ReasonForMessage.REQUEST_RESPONSE
    assert msg.delivery_info.delivery_method.value == "Courier"


# -- the clock ----------------------------------------------------------------------------


def test_overdue_tick():
    tx = _shipped()
    assert m.tick(tx, ctx=ctx(at(28))).state is tx  # due on day 28: not yet
    assert m.tick(tx, ctx=ctx(at(28))).send == ()
    result = m.tick(tx, ctx=ctx(at(29)))
    msg = only(result)
    assert result.state.state is S.OVERDUE
    assert msg.status_info.status is Status.OVERDUE
    assert msg.message_info.reason_for_message is ReasonForMessage.STATUS_CHANGE
    assert m.tick(result.state, ctx=ctx(at(30))).send == ()  # once only
    # renewing an overdue loan gives a due date in the future and Loaned again
    renewed = m.receive_action(result.state, action(Action.RENEW), ctx=ctx(at(50)))
    msg = only(renewed)
    assert msg.status_info.status is Status.LOANED
    assert msg.status_info.due_date.date() == at(50).date() + timedelta(days=14)
    # an overdue item shipped back still reports Overdue until checked in
    back = m.receive_action(result.state, action(Action.SHIPPED_RETURN), ctx=ctx(at(41)))
    assert back.state.status is Status.OVERDUE


# -- JSON ---------------------------------------------------------------------------------


def transactions_in_every_state() -> dict[S, m.LendingTransaction]:
    c = ctx()
    out: dict[S, m.LendingTransaction] = {}
    out[S.RECEIVED] = new(c=ctx(policy=Policy(auto_answer=False))).state
    out[S.NEW] = replace(out[S.RECEIVED], state=S.NEW)
    out[S.EXPECT_TO_SUPPLY] = new(c=ctx(policy=Policy(found_status="ExpectToSupply"))).state
    out[S.WILL_SUPPLY] = new().state
    out[S.CONDITIONAL] = m.staff(out[S.WILL_SUPPLY], m.AddConditions(
        conditions=("LibraryUseOnly",), cost=m.Money(amount=Decimal(10), currency="EUR")),
        ctx=c).state
    shipped = m.staff(out[S.WILL_SUPPLY], m.Ship(tracking="T1"), ctx=c).state
    shipped = m.receive_action(shipped, action(Action.NOTIFICATION, "hi"), ctx=c).state
    shipped = m.staff(shipped, m.AddNote(text="n", by="x"), ctx=c).state
    out[S.SHIPPED] = m.receive_action(
        shipped, action(Action.RENEW), ctx=ctx(policy=Policy(auto_renew=False))).state
    out[S.OVERDUE] = m.tick(shipped, ctx=ctx(at(60))).state
    out[S.RECALLED] = m.staff(shipped, m.Recall(), ctx=c).state
    out[S.RETURN_SHIPPED] = m.receive_action(shipped, action(Action.SHIPPED_RETURN), ctx=c).state
    out[S.LOAN_COMPLETED] = m.staff(out[S.RETURN_SHIPPED], m.CheckIn(), ctx=c).state
    out[S.COMPLETED_WITHOUT_RETURN] = m.staff(shipped, m.MarkLost(
        charge=m.Money(amount=Decimal("12.5"), currency="EUR")), ctx=c).state
    out[S.COPY_COMPLETED] = m.staff(new(service=ServiceType.COPY).state,
                                    m.DeliverCopy(note="Sent by e-mail"), ctx=c).state
    out[S.UNFILLED] = new(outcome="not_held").state
    out[S.RETRY_POSSIBLE] = m.receive_request(request(), ctx=c, located=located(
        "on_loan", date(2026, 4, 1))).state
    out[S.CANCELLED] = m.receive_action(out[S.WILL_SUPPLY], action(Action.CANCEL), ctx=c).state
    assert set(out) == set(S)
    assert all(tx.state is s for s, tx in out.items())
    return out


@pytest.mark.parametrize("state", list(S), ids=lambda s: s.name)
def test_json_round_trip_in_every_state(state):
    import json

    tx = transactions_in_every_state()[state]
    data = json.loads(json.dumps(tx.to_json()))  # really JSON
    back = m.LendingTransaction.from_json(data)
    assert back == tx
    assert back.to_json() == data
    summary = tx.summary()
    assert summary["status"] == state.value
    assert summary["requesting_request_id"] == "R-1"
    assert summary["title"] == "The Odyssey" and summary["patron_id"] == "P-77"


def test_from_json_errors_name_the_field():
    data = transactions_in_every_state()[S.SHIPPED].to_json()
    data["due_date"] = "31/12/2026"
    with pytest.raises(ValueError, match=r"transaction.due_date: expected a date"):
        m.LendingTransaction.from_json(data)


# -- staff actions from JSON --------------------------------------------------------------


def test_staff_action_from_json():
    action_ = m.StaffAction.from_json({"action": "ship", "by": "anna", "barcodes": ["B-1"],
                                       "due_date": "2026-05-01", "tracking": "PN1",
                                       "cost": {"amount": "25.00", "currency": "DKK"}})
    assert action_ == m.Ship(by="anna", barcodes=("B-1",), due_date=date(2026, 5, 1),
                             tracking="PN1", cost=m.Money(amount=Decimal("25.00"), currency="DKK"))
    assert m.StaffAction.from_json(action_.to_json()) == action_
    for name, cls in m.STAFF_ACTIONS.items():
        assert cls.NAME == name


@pytest.mark.parametrize("data,problems", [
    ({"action": "launch"}, {"action": "unknown staff action 'launch'"}),
    ({"by": "x"}, {"action": "unknown staff action None"}),
    ({"action": "ship", "due_date": "tomorrow"}, {"due_date": "expected a date"}),
    ({"action": "ship", "barcodes": "B-1"}, {"barcodes": "expected a list"}),
    ({"action": "reject"}, {"reason": "missing"}),
    ({"action": "renew_answer", "approve": "yes"}, {"approve": "expected true or false"}),
    ({"action": "note", "text": "x", "colour": "red"}, {"colour": "not a field of note"}),
    ({"action": "lost", "charge": {"amount": "lots", "currency": "DKK"}},
     {"charge.amount": "expected an amount"}),
    ({"action": "ship", "due_date": 5, "barcodes": "B-1", "colour": "red"},
     {"due_date": "expected a date", "barcodes": "expected a list", "colour": "not a field"}),
])
def test_staff_action_from_json_errors_name_every_field(data, problems):
    with pytest.raises(StaffActionInvalid) as err:
        m.StaffAction.from_json(data)
    assert set(err.value.problems) == set(problems)
    for field, text in problems.items():
        assert text in err.value.problems[field]
        assert text in str(err.value)


# -- with locate() in the loop ------------------------------------------------------------


def test_with_real_locate():
    records = [HoldingsRecord(record_id="rec-9", title="The Odyssey", author="Homer",
                              isbns=("9780140449136",),
                              items=(HoldingsItem(barcode="B-9", location="Annex"),))]
    c = ctx()
    result = m.receive_request(request(), ctx=c, located=locate(request(), records, c.policy))
    assert result.state.located.barcode == "B-9"
    assert result.state.state is S.WILL_SUPPLY


# -- the official schema as oracle --------------------------------------------------------


@pytest.mark.parametrize("version_name,xsd_name", [
    ("V1_2", "ISO-18626-v1_2.xsd"), ("V2021_2", "ISO-18626-2021-2.xsd"),
])
def test_every_message_validates_against_the_official_schema(version_name, xsd_name):
    writer = pytest.importorskip("node.protocol.writer")
    xmlschema = pytest.importorskip("xmlschema")
    from node.protocol.codes import Version
    from node.protocol.messages import Envelope

    xsd = Path("/work/shared/iso18626") / xsd_name
    if not xsd.exists():
        pytest.skip("official schema not available")
    schema = xmlschema.XMLSchema(str(xsd))
    transactions_in_every_state()
    test_full_loan()
    test_lost_with_charge()
    test_copy_request_follows_the_same_path_and_completes()
    test_partner_preferring_retry_gets_retry_after_the_day_after_closure()
    test_on_loan_retry_possible_with_earliest_due()
    test_overdue_tick()
    _conditional()
    assert SENT
    for msg in SENT:
        body = writer.serialise(Envelope(version=getattr(Version, version_name), message=msg))
        schema.validate(body if isinstance(body, str) else body.decode("utf-8"))
