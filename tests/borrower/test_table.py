"""Hypothesis over the whole table: every (state, input) pair either moves to a
valid state or raises the one illegal-transition error (h2's
test_state_machines.py, applied to the borrowing side)."""

from __future__ import annotations

import importlib.util
import json
import sys
from datetime import timedelta
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from node.borrower.machine import (
    TRANSITIONS,
    BorrowingInput,
    BorrowingRequest,
    BorrowingState,
    StaffAction,
    apply,
)
from node.borrower.rota import EntryState
from node.machine import StaffActionError
from node.protocol.codes import ReasonForMessage, Status, YesNo
from node.protocol.errors import ProtocolError
from node.protocol.messages import DeliveryInfo


def _load_helpers():
    path = Path(__file__).with_name("test_machine.py")
    spec = importlib.util.spec_from_file_location("_borrower_story_helpers", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


H = _load_helpers()
STATES = H.reach_all()
I = BorrowingInput  # noqa: E741  (short name for the table rows)

_RECV = {
    I.RECV_REQUEST_RECEIVED: (Status.REQUEST_RECEIVED, ReasonForMessage.REQUEST_RESPONSE, None),
    I.RECV_EXPECT_TO_SUPPLY: (Status.EXPECT_TO_SUPPLY, ReasonForMessage.STATUS_CHANGE, None),
    I.RECV_WILL_SUPPLY: (Status.WILL_SUPPLY, ReasonForMessage.STATUS_CHANGE, None),
    I.RECV_LOANED: (Status.LOANED, ReasonForMessage.STATUS_CHANGE, None),
    I.RECV_OVERDUE: (Status.OVERDUE, ReasonForMessage.STATUS_CHANGE, None),
    I.RECV_RECALLED: (Status.RECALLED, ReasonForMessage.STATUS_CHANGE, None),
    I.RECV_RETRY_POSSIBLE: (Status.RETRY_POSSIBLE, ReasonForMessage.STATUS_CHANGE, None),
    I.RECV_UNFILLED: (Status.UNFILLED, ReasonForMessage.STATUS_CHANGE, None),
    I.RECV_COPY_COMPLETED: (Status.COPY_COMPLETED, ReasonForMessage.STATUS_CHANGE, None),
    I.RECV_LOAN_COMPLETED: (Status.LOAN_COMPLETED, ReasonForMessage.STATUS_CHANGE, None),
    I.RECV_COMPLETED_WITHOUT_RETURN: (
        Status.COMPLETED_WITHOUT_RETURN, ReasonForMessage.STATUS_CHANGE, None),
    I.RECV_CANCELLED: (Status.CANCELLED, ReasonForMessage.STATUS_CHANGE, None),
    I.RECV_RENEW_RESPONSE_YES: (Status.LOANED, ReasonForMessage.RENEW_RESPONSE, YesNo.Y),
    I.RECV_RENEW_RESPONSE_NO: (Status.LOANED, ReasonForMessage.RENEW_RESPONSE, YesNo.N),
    I.RECV_CANCEL_RESPONSE_YES: (Status.CANCELLED, ReasonForMessage.CANCEL_RESPONSE, YesNo.Y),
    I.RECV_CANCEL_RESPONSE_NO: (Status.WILL_SUPPLY, ReasonForMessage.CANCEL_RESPONSE, YesNo.N),
    I.RECV_NOTIFICATION: (Status.WILL_SUPPLY, ReasonForMessage.NOTIFICATION, None),
    I.RECV_STATUS_REQUEST_RESPONSE: (
        Status.WILL_SUPPLY, ReasonForMessage.STATUS_REQUEST_RESPONSE, None),
}


def _staff_fields(inp: BorrowingInput, req: BorrowingRequest) -> dict:
    pending = [e.symbol for e in req.rota if e.state is EntryState.PENDING]
    return {
        I.STAFF_RECEIVE: {"barcodes": ["T-1", "T-2"]},
        I.STAFF_RENEW: {"note": "exam"},
        I.STAFF_CANCEL: {"reason": "not needed", "notify_patron": True},
        I.STAFF_CONDITION_ANSWER: {"accept": True},
        I.STAFF_MESSAGE: {"note": "hello"},
        I.STAFF_NOTE: {"note": "called the patron"},
        I.STAFF_REREQUEST: {"partners": [H.D]},
        I.STAFF_ROTA_MOVE: {"symbol": pending[0] if pending else H.A, "position": 0},
        I.STAFF_ROTA_ADD: {"symbol": H.D},
        I.STAFF_ROTA_REMOVE: {"symbol": pending[0] if pending else H.A},
    }.get(inp, {})


def event_for(inp: BorrowingInput, req: BorrowingRequest):
    if inp in _RECV:
        status, reason, answer = _RECV[inp]
        delivery = DeliveryInfo(date_sent=H.T0, url="https://x.example/1") \
            if inp is I.RECV_COPY_COMPLETED else None
        return H.sam(req, status, reason=reason, answer=answer, due=H.DUE, delivery=delivery,
                     rari=req.requesting_request_id or "BR7-1", sender=req.partner or H.A,
                     reason_retry="OnLoan", retry_after=H.T0 + timedelta(days=2))
    if inp.name.startswith("STAFF_"):
        name = inp.value.removeprefix("staff_")
        return StaffAction.from_json({"action": name, **_staff_fields(inp, req)})
    return None


def test_every_input_has_a_row_and_every_state_an_exit_or_is_final():
    used_inputs = {inp for _s, inp in TRANSITIONS}
    assert used_inputs == set(BorrowingInput)
    for (_state, _inp), (handler, next_state) in TRANSITIONS.items():
        assert callable(handler)
        assert next_state is None or isinstance(next_state, BorrowingState)


@settings(max_examples=600, deadline=None)
@given(state=st.sampled_from(BorrowingState), inp=st.sampled_from(BorrowingInput))
def test_every_pair_moves_to_a_valid_state_or_raises(state, inp):
    req, ctx = STATES[state]
    event = event_for(inp, req)
    expected_error = ProtocolError if inp.name.startswith("RECV_") else StaffActionError
    try:
        result = apply(req, inp, event, ctx=ctx)
    except (ProtocolError, StaffActionError) as exc:
        assert isinstance(exc, expected_error), exc
        assert str(exc)
        return
    assert (state, inp) in TRANSITIONS
    new = result.state
    assert isinstance(new.state, BorrowingState)
    assert result.history, "every transition leaves a line in the history"
    _handler, next_state = TRANSITIONS[(state, inp)]
    if next_state is not None:
        assert new.state is next_state
    assert BorrowingRequest.from_json(json.loads(json.dumps(new.to_json()))) == new
    if new.active is not None:
        assert 0 <= new.active < len(new.rota)


def test_missing_pairs_raise_the_illegal_transition_error():
    for state, (req, ctx) in STATES.items():
        for inp in BorrowingInput:
            if (state, inp) in TRANSITIONS:
                continue
            expected = ProtocolError if inp.name.startswith("RECV_") else StaffActionError
            try:
                apply(req, inp, event_for(inp, req), ctx=ctx)
            except expected as exc:
                assert "now" in str(exc)
            else:  # pragma: no cover
                raise AssertionError(f"{state} x {inp} should be illegal")
