"""The lending transition table itself (h2 test_state_machines style)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from node.machine import StaffActionError, StaffActionInvalid
from node.protocol.codes import (
    TERMINAL_STATUSES,
    Action,
    ReasonForMessage,
    RequestType,
    ServiceType,
)
from node.protocol.errors import ProtocolError
from node.protocol.messages import (
    AgencyId,
    BibliographicInfo,
    Header,
    Request,
    RequestingAgencyMessage,
    ServiceInfo,
    SupplyingAgencyMessage,
)
from node.supplier import machine as m
from node.supplier.locate import HoldingsItem, LocateResult
from node.supplier.machine import ISO_STATUS, TRANSITIONS
from node.supplier.machine import LendingInput as In
from node.supplier.machine import LendingState as S

NOW = datetime(2026, 3, 2, 9, 30, tzinfo=UTC)
US = AgencyId.parse("ISIL:DK-820010")
THEM = AgencyId.parse("ISIL:DK-710100")


@dataclass(frozen=True)
class Closure:
    active: bool = False
    start: date | None = None
    end: date | None = None
    note: str = ""

    def applies_on(self, day: date) -> bool:
        return self.active and not (self.start and day < self.start) and not (
            self.end and day > self.end)

    def describe(self, kind: str) -> str:
        return f"{kind} suspended until further notice"

    def reopens(self) -> date | None:
        return None


@dataclass(frozen=True)
class Policy:
    auto_answer: bool = True
    found_status: str = "WillSupply"
    when_on_loan: str = "RetryPossible"
    loan_period_days: int = 28
    auto_renew: bool = True
    renew_period_days: int = 14
    auto_cancel: bool = True
    location_preference: tuple[str, ...] = ()
    non_lendable_locations: tuple[str, ...] = ()
    closure: Closure = Closure()


@dataclass(frozen=True)
class Partner:
    symbol: str = "ISIL:DK-710100"
    name: str = "B"
    url: str = "http://b.example/"
    iso18626_version: str = "1.2"
    lend_to: bool = True
    borrow_from: bool = True
    closure_reply: str = "Unfilled"


def context(policy: Policy, now: datetime = NOW) -> m.LendingContext:
    return m.LendingContext(our_symbol=US, policy=policy, closure=policy.closure,
                            partner=Partner(), now=now)


def a_request(service: ServiceType, request_type: RequestType) -> Request:
    return Request(
        header=Header(supplying_agency_id=US, requesting_agency_id=THEM, timestamp=NOW,
                      requesting_agency_request_id="R-1"),
        bibliographic_info=BibliographicInfo(title="T", author="A"),
        service_info=ServiceInfo(service_type=service, request_type=request_type),
    )


def a_transaction(state: S, service: ServiceType, *, shipped: bool, answered: bool,
                  pending_renew: bool, pending_cancel: bool) -> m.LendingTransaction:
    base = m.LendingTransaction(
        requesting_agency_id=str(THEM), supplying_agency_id=str(US), requesting_request_id="R-1",
        supplying_request_id="L-1", partner=str(THEM),
        request=m.RequestDetails(title="T", service_type=service.value),
        located=m.LocatedItem(outcome="available", record_id="r", barcode="B-1"),
        state=state, answered=answered, reported_status=ISO_STATUS[state] if answered else None,
        status_changed_at=NOW - timedelta(days=5), created_at=NOW - timedelta(days=9),
        updated_at=NOW - timedelta(days=5),
    )
    if shipped:
        base = replace(base, shipped_at=NOW - timedelta(days=5), shipped_barcodes=("B-1",),
                       due_date=NOW.date() - timedelta(days=1))
    if pending_renew:
        base = replace(base, pending_renew=m.Pending(at=NOW))
    if pending_cancel:
        base = replace(base, pending_cancel=m.Pending(at=NOW))
    if state is S.CONDITIONAL:
        base = replace(base, conditions=("LibraryUseOnly",))
    return base


def peer(act: Action, note: str | None = None) -> RequestingAgencyMessage:
    return RequestingAgencyMessage(
        header=Header(supplying_agency_id=US, requesting_agency_id=THEM, timestamp=NOW,
                      requesting_agency_request_id="R-1"),
        action=act, note=note)


STAFF_SAMPLES = {
    In.STAFF_WILL_SUPPLY: [m.WillSupply()],
    In.STAFF_EXPECT_TO_SUPPLY: [m.ExpectToSupply(expected_delivery=date(2026, 3, 9))],
    In.STAFF_ADD_CONDITIONS: [m.AddConditions(conditions=("LibraryUseOnly",)),
                             m.AddConditions(conditions=())],
    In.STAFF_REJECT: [m.Reject(reason="NotHeld"), m.Reject(reason="Bogus")],
    In.STAFF_RETRY_POSSIBLE: [m.OfferRetry(reason="OnLoan", retry_after=date(2026, 4, 1))],
    In.STAFF_SHIP: [m.Ship(), m.Ship(barcodes=("B-2",), due_date=date(2026, 1, 1))],
    In.STAFF_DELIVER_COPY: [m.DeliverCopy(url="https://x.example/a.pdf"), m.DeliverCopy()],
    In.STAFF_RENEW_ANSWER: [m.AnswerRenew(approve=True), m.AnswerRenew(approve=False)],
    In.STAFF_CANCEL_ANSWER: [m.AnswerCancel(approve=True), m.AnswerCancel(approve=False)],
    In.STAFF_CHECK_IN: [m.CheckIn()],
    In.STAFF_LOST: [m.MarkLost(charge=m.Money(amount=Decimal("9.99"), currency="EUR")),
                   m.MarkLost(damaged=True)],
    In.STAFF_RECALL: [m.Recall(due_date=date(2026, 3, 20))],
    In.STAFF_MESSAGE: [m.SendMessage(note="hello")],
    In.STAFF_NOTE: [m.AddNote(text="internal")],
    In.STAFF_MARK_READ: [m.MarkRead()],
}
RECV_SAMPLES = {
    In.RECV_STATUS_REQUEST: [peer(Action.STATUS_REQUEST)],
    In.RECV_RECEIVED: [peer(Action.RECEIVED)],
    In.RECV_CANCEL: [peer(Action.CANCEL, "please")],
    In.RECV_RENEW: [peer(Action.RENEW)],
    In.RECV_SHIPPED_RETURN: [peer(Action.SHIPPED_RETURN)],
    In.RECV_SHIPPED_FORWARD: [peer(Action.SHIPPED_FORWARD)],
    In.RECV_NOTIFICATION: [peer(Action.NOTIFICATION, "a note")],
    In.RECV_HOLD_RETURN: [peer(Action.HOLD_RETURN)],
    In.RECV_LOST: [peer(Action.LOST)],
    In.RECV_CONDITIONS_ACCEPTED: [peer(Action.NOTIFICATION, "ACCEPT")],
    In.RECV_CONDITIONS_REJECTED: [peer(Action.NOTIFICATION, "REJECT")],
}
AVAILABLE = LocateResult(outcome="available", record_id="r", item=HoldingsItem(barcode="B-1"),
                         matched_on="ISBN 9780140449136", reason="found")


def test_every_input_has_a_sample():
    assert set(STAFF_SAMPLES) | set(RECV_SAMPLES) | {
        In.RECV_REQUEST, In.RECV_REQUEST_AGAIN, In.TIMER_OVERDUE} == set(In)
    for input_, samples in STAFF_SAMPLES.items():
        assert all(s.INPUT is input_ for s in samples)


def test_every_table_entry_names_real_states_and_a_handler():
    for (state, input_), (handler, target) in TRANSITIONS.items():
        assert isinstance(state, S) and isinstance(input_, In)
        assert callable(handler)
        assert target is None or isinstance(target, S)
        assert target is not S.NEW


def test_every_state_has_an_iso_status_and_is_reachable_in_the_table():
    assert set(ISO_STATUS) == set(S)
    targets = {t for _, t in TRANSITIONS.values() if t is not None}
    # states only handlers choose: UNFILLED etc. are also explicit targets
    assert targets | {S.NEW, S.RECEIVED} == set(S)


def test_terminal_states_accept_nothing_but_notifications_and_notes():
    allowed = {In.RECV_NOTIFICATION, In.RECV_STATUS_REQUEST, In.STAFF_MESSAGE, In.STAFF_NOTE,
               In.STAFF_MARK_READ, In.RECV_REQUEST_AGAIN}
    assert {ISO_STATUS[s] for s in m.TERMINAL_STATES} == set(TERMINAL_STATUSES)
    for state in m.TERMINAL_STATES:
        accepted = {i for (s, i) in TRANSITIONS if s is state}
        extra = {In.RECV_REQUEST} if state is S.RETRY_POSSIBLE else set()  # a Retry reusing the id
        if state is S.COMPLETED_WITHOUT_RETURN:
            extra = {In.STAFF_LOST}  # the charge, after the borrower reported the item lost
        # The requester's action that ended it, sent again: confirmed, no change.
        again = {S.CANCELLED: {In.RECV_CANCEL}, S.LOAN_COMPLETED: {In.RECV_SHIPPED_RETURN},
                 S.COMPLETED_WITHOUT_RETURN: {In.RECV_LOST}}.get(state, set())
        assert accepted == allowed | extra | again, state
        for input_ in again:
            assert TRANSITIONS[(state, input_)] == (m._on_action_again, state)
        for input_ in allowed:
            _, target = TRANSITIONS[(state, input_)]
            assert target is state


def test_new_accepts_only_the_request():
    assert {i for (s, i) in TRANSITIONS if s is S.NEW} == {In.RECV_REQUEST}


@settings(max_examples=1500, deadline=None)
@given(
    state=st.sampled_from(S),
    input_=st.sampled_from(In),
    service=st.sampled_from(ServiceType),
    shipped=st.booleans(),
    answered=st.booleans(),
    pending_renew=st.booleans(),
    pending_cancel=st.booleans(),
    policy=st.builds(Policy, auto_answer=st.booleans(), auto_renew=st.booleans(),
                     auto_cancel=st.booleans(),
                     found_status=st.sampled_from(["WillSupply", "ExpectToSupply"])),
    request_type=st.sampled_from(RequestType),
    pick=st.integers(min_value=0, max_value=5),
)
def test_every_pair_moves_to_a_valid_state_or_raises(
    state, input_, service, shipped, answered, pending_renew, pending_cancel, policy,
    request_type, pick,
):
    tx = a_transaction(state, service, shipped=shipped or state in m.ON_LOAN,
                       answered=answered and state is not S.NEW,
                       pending_renew=pending_renew, pending_cancel=pending_cancel)
    ctx = context(policy)
    if input_ is In.RECV_REQUEST:
        data = (a_request(service, request_type), AVAILABLE)
    elif input_ is In.RECV_REQUEST_AGAIN:
        data = a_request(service, request_type)
    elif input_ is In.TIMER_OVERDUE:
        data = None
    else:
        samples = STAFF_SAMPLES.get(input_) or RECV_SAMPLES[input_]
        data = samples[pick % len(samples)]
    entry = TRANSITIONS.get((state, input_))
    try:
        result = m.step(tx, input_, data, ctx=ctx)
    except ProtocolError:
        assert input_.name.startswith("RECV_")
        return
    except (StaffActionError, StaffActionInvalid):  # not allowed now / a malformed sample
        assert not input_.name.startswith("RECV_")
        return
    # only pairs in the table get here
    assert entry is not None
    _, target = entry
    new = result.state
    assert isinstance(new.state, S) and new.state is not S.NEW
    if target is not None:
        assert new.state is target
    assert new.updated_at == NOW
    if input_ is In.RECV_REQUEST_AGAIN:  # a resend changes nothing, answers nothing
        assert new == replace(tx, updated_at=NOW) and not result.send
    for msg in result.send:
        assert isinstance(msg, SupplyingAgencyMessage)
        assert msg.header.timestamp == NOW
        assert msg.header.requesting_agency_request_id == "R-1"
        assert msg.header.supplying_agency_request_id == "L-1"
        reason = msg.message_info.reason_for_message
        if reason is ReasonForMessage.REQUEST_RESPONSE:
            assert not tx.answered or input_ is In.RECV_REQUEST
    if result.send:
        assert result.send[-1].status_info.status is new.status
        assert new.reported_status is new.status
    # what we store can always be stored and read back
    assert m.LendingTransaction.from_json(new.to_json()) == new


@given(state=st.sampled_from(S), input_=st.sampled_from(In))
def test_missing_pairs_raise_the_one_illegal_transition_error(state, input_):
    if (state, input_) in TRANSITIONS:
        return
    tx = a_transaction(state, ServiceType.LOAN, shipped=False, answered=True,
                       pending_renew=False, pending_cancel=False)
    try:
        m.step(tx, input_, None, ctx=context(Policy()))
    except ProtocolError as exc:
        assert input_.name.startswith("RECV_")
        assert exc.error_type.value == "UnrecognisedDataValue"
    except StaffActionError:
        assert not input_.name.startswith("RECV_")
    else:
        raise AssertionError("no error")


def test_table_size():
    # 138, a resent Request in each of 14 stored states, 4 resent actions
    assert len(TRANSITIONS) == 156
