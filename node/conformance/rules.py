"""The standard's rules for what a supplier sends, as a pure validator.

:class:`SupplierLifecycle` is fed every supplyingAgencyMessage a peer sends
about one request (and every action we sent it), and says what breaks the
rules of NOTES.md section 4:

* ``RequestResponse`` only on the first message, and the first message is one;
* ``RenewResponse`` / ``CancelResponse`` / ``StatusRequestResponse`` only
  answering a Renew / Cancel / StatusRequest we sent; ``answerYesNo`` on
  RenewResponse and CancelResponse; CancelResponse Y means Cancelled, N
  means the current status; RenewResponse Y needs a ``dueDate`` and a loan status;
* ``Notification`` repeats the current status;
* statuses in a legal order (CrossLink's ``IsTransitionValid``): RequestReceived
  -> [ExpectToSupply] -> WillSupply -> Loaned <-> Overdue/Recalled ->
  LoanCompleted/CompletedWithoutReturn, or ... -> CopyCompleted for a copy;
  nothing after a terminal status (Unfilled, RetryPossible, Cancelled, the
  Completed ones) but a Notification repeating it;
* ``Loaned`` carries a ``dueDate``; ``RetryPossible`` a ``reasonRetry``; no
  loan statuses for a Copy request, no CopyCompleted for a Loan request.

Problems are failures (each a rule, said as the standard's expectation);
``warnings`` are things worth a look that the standard does not forbid, such
as a ``reasonRetry`` or delivery method outside the default open code list of
the version spoken (2021-2 added e.g. MustMeetLoanCondition and Courier and
dropped LoanPossible and Ariel).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from node.protocol.codes import (
    TERMINAL_STATUSES,
    Action,
    ReasonForMessage,
    ServiceType,
    Status,
    Version,
    YesNo,
)
from node.protocol.messages import SupplyingAgencyMessage

LOAN_GROUP = frozenset({Status.LOANED, Status.OVERDUE, Status.RECALLED})
_RANK = {
    Status.REQUEST_RECEIVED: 0,
    Status.EXPECT_TO_SUPPLY: 1,
    Status.WILL_SUPPLY: 2,
    Status.LOANED: 3, Status.OVERDUE: 3, Status.RECALLED: 3,
    Status.HOLD_RETURN: 3, Status.RELEASE_HOLD_RETURN: 3,
}
# The default open code lists that changed between the editions (NOTES.md section 3).
_RETRY_BOTH = frozenset({"AtBindery", "CostExceedsMaxCost", "NotCurrentAvailableForILL",
                         "NotFoundAsCited", "OnLoan", "OnOrder", "ReqDelDateNotPossible",
                         "ReqDelMethodNotSupp"})
REASON_RETRY = {
    Version.V1_2: _RETRY_BOTH | {"LoanPossible"},
    Version.V2021_2: _RETRY_BOTH | {
        "CourierNotSupp", "MultiVolAvail", "MustMeetLoanCondition", "ReqEditionNotPossible",
        "ReqFormatNotPossible", "ReqPayMethodNotSupported", "ReqServLevelNotSupp",
        "ReqServTypeNotPossible"},
}
_METHOD_BOTH = frozenset({"ArticleExchange", "Email", "FTP", "Mail", "Odyssey", "URL"})
DELIVERY_METHOD = {
    Version.V1_2: _METHOD_BOTH | {"Ariel"},  # sentVia
    Version.V2021_2: _METHOD_BOTH | {"Courier"},  # deliveryMethod
}
_ANSWERS = {
    ReasonForMessage.RENEW_RESPONSE: Action.RENEW,
    ReasonForMessage.CANCEL_RESPONSE: Action.CANCEL,
    ReasonForMessage.STATUS_REQUEST_RESPONSE: Action.STATUS_REQUEST,
}


def describe(sam: SupplyingAgencyMessage) -> str:
    info = sam.message_info
    status = sam.status_info.status
    text = f"{info.reason_for_message.value}/{status.value if status else '<empty>'}"
    if info.answer_yes_no is not None:
        text += f"({info.answer_yes_no.value})"
    return text


@dataclass
class SupplierLifecycle:
    service_type: ServiceType = ServiceType.LOAN
    status: Status | None = None
    seen: list[str] = field(default_factory=list)
    outstanding: list[Action] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    loaned_once: bool = False
    cancel_sent: bool = False
    version: Version = Version.V1_2
    where: str = ""  # the last message fed, e.g. "message 2 (StatusChange/Loaned)"

    @property
    def path(self) -> str:
        return " -> ".join(self.seen) or "(nothing)"

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL_STATUSES

    def sent(self, action: Action) -> None:
        """We sent the peer this action (Renew, Cancel and StatusRequest await an answer)."""
        if action in (Action.RENEW, Action.CANCEL, Action.STATUS_REQUEST):
            self.outstanding.append(action)
        if action is Action.CANCEL:
            self.cancel_sent = True

    def feed(self, sam: SupplyingAgencyMessage) -> list[str]:
        """Check one message; return the rules it breaks (``problems`` keeps them with
        ``where``: which message)."""
        found: list[str] = []
        info, st = sam.message_info, sam.status_info
        reason, status = info.reason_for_message, st.status
        n = len(self.seen) + 1
        where = self.where = f"message {n} ({describe(sam)})"
        self.seen.append(describe(sam))
        previous = self.status

        if status is None:
            found.append("statusInfo/status is empty; it is mandatory and must be "
                         "one of the Status values (Alma's <status/> quirk)")
        # -- reasonForMessage ----------------------------------------------------------
        if reason is ReasonForMessage.REQUEST_RESPONSE and n > 1:
            found.append("RequestResponse is allowed only on the first message "
                         "about a request; later ones use StatusChange or Notification")
        if n == 1 and reason not in (ReasonForMessage.REQUEST_RESPONSE,) and reason not in _ANSWERS:
            found.append("the first message about a request must have "
                         "reasonForMessage RequestResponse")
        if reason in _ANSWERS:
            wanted = _ANSWERS[reason]
            if wanted in self.outstanding:
                self.outstanding.remove(wanted)
            else:
                found.append(f"{reason.value} answers a {wanted.value} action, "
                             "and none was sent")
        if reason in (ReasonForMessage.RENEW_RESPONSE, ReasonForMessage.CANCEL_RESPONSE) and (
                info.answer_yes_no is None):
            found.append(f"{reason.value} must carry messageInfo/answerYesNo")
        if reason is ReasonForMessage.CANCEL_RESPONSE and status is not None:
            if info.answer_yes_no is YesNo.Y and status is not Status.CANCELLED:
                found.append("CancelResponse Y must have status Cancelled")
            if info.answer_yes_no is YesNo.N and status is Status.CANCELLED:
                found.append("CancelResponse N must keep the current status, "
                             "not Cancelled")
        if reason is ReasonForMessage.RENEW_RESPONSE and info.answer_yes_no is YesNo.Y:
            if status not in LOAN_GROUP:
                found.append("RenewResponse Y must have status Loaned or Overdue")
            if st.due_date is None:
                found.append("RenewResponse Y must carry the new statusInfo/dueDate")
        if reason is ReasonForMessage.NOTIFICATION and previous is not None and (
                status is not None and status is not previous):
            found.append(f"a Notification must repeat the current status "
                         f"{previous.value}; a new status is a StatusChange")
        if (reason is ReasonForMessage.STATUS_CHANGE and previous is not None
                and status is previous):
            self.warnings.append(f"{where}: StatusChange without a change of status")

        # -- status order ----------------------------------------------------------------
        if status is not None:
            found.extend(self._order(previous, status, reason))
            if status is Status.LOANED and st.due_date is None:
                found.append("Loaned must carry statusInfo/dueDate")
            if status is Status.RETRY_POSSIBLE and info.reason_retry is None:
                found.append("RetryPossible must say why in messageInfo/reasonRetry")
            if status is Status.COPY_COMPLETED and sam.delivery_info is None:
                self.warnings.append(f"{where}: CopyCompleted without deliveryInfo")
            if (status is Status.LOANED and sam.delivery_info is None
                    and previous not in LOAN_GROUP):
                self.warnings.append(f"{where}: Loaned without deliveryInfo")
            if status in LOAN_GROUP:
                self.loaned_once = True
            self.status = status
        self._codes(where, sam)
        self.problems.extend(f"{where}: {p}" for p in found)
        return found

    def _codes(self, where: str, sam: SupplyingAgencyMessage) -> None:
        """Open code values outside the default list of the version spoken: worth a look
        (a receiver may reject them with UnrecognisedDataValue, Annex B), not forbidden."""
        retry = sam.message_info.reason_retry
        if retry is not None and retry.value not in REASON_RETRY[self.version]:
            self.warnings.append(f"{where}: reasonRetry {retry.value!r} is not in ISO 18626 "
                                 f"{self.version.value}'s ReasonRetry list")
        delivery = sam.delivery_info
        method = delivery.delivery_method if delivery is not None else None
        if method is not None and method.value not in DELIVERY_METHOD[self.version]:
            name = "deliveryMethod" if self.version is Version.V2021_2 else "sentVia"
            self.warnings.append(f"{where}: {name} {method.value!r} is not in ISO 18626 "
                                 f"{self.version.value}'s {name} list")

    def _order(self, previous: Status | None, status: Status,
               reason: ReasonForMessage) -> list[str]:
        out: list[str] = []
        if previous in TERMINAL_STATUSES:
            if not (reason is ReasonForMessage.NOTIFICATION and status is previous) and not (
                    reason is ReasonForMessage.CANCEL_RESPONSE and status is previous):
                out.append(f"nothing may follow the terminal status {previous.value} "
                           "but a Notification repeating it")
            return out
        copy = self.service_type is ServiceType.COPY
        if copy and status in LOAN_GROUP | {Status.LOAN_COMPLETED,
                                            Status.COMPLETED_WITHOUT_RETURN}:
            out.append(f"a Copy request gets no loan statuses such as {status.value}; it ends "
                       "CopyCompleted")
        if self.service_type is ServiceType.LOAN and status is Status.COPY_COMPLETED:
            out.append("CopyCompleted ends a Copy request only; this is a Loan request")
        if status is Status.CANCELLED and not self.cancel_sent:
            out.append("Cancelled only in answer to a Cancel from the requester, and none was sent")
        if status in (Status.LOAN_COMPLETED, Status.COMPLETED_WITHOUT_RETURN) and (
                previous not in LOAN_GROUP):
            out.append(f"{status.value} must follow Loaned/Overdue/Recalled, "
                       f"not {previous.value if previous else 'nothing'}")
        if status in (Status.OVERDUE, Status.RECALLED) and previous not in LOAN_GROUP:
            out.append(f"{status.value} must follow Loaned, "
                       f"not {previous.value if previous else 'nothing'}")
        if status in (Status.UNFILLED, Status.RETRY_POSSIBLE, Status.COPY_COMPLETED) and (
                previous in LOAN_GROUP):
            out.append(f"{status.value} cannot follow {previous.value}: "
                       "the item is on loan")
        if status in _RANK and previous in _RANK and _RANK[status] < _RANK[previous]:
            out.append(f"{status.value} cannot follow {previous.value} "
                       "(statuses only move forward)")
        return out


# -- what a requester sends --------------------------------------------------------------


@dataclass
class RequesterActions:
    """The actions a requester sends while we (the kit) lend to it."""

    loaned: bool = False
    received: bool = False
    returned: bool = False
    cancelled: bool = False
    seen: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    where: str = ""  # the last action fed, e.g. "action 1 (ShippedReturn)"

    def supplier_sent(self, status: Status) -> None:
        if status in LOAN_GROUP:
            self.loaned = True
        if status is Status.CANCELLED:
            self.cancelled = True

    def feed(self, action: Action) -> list[str]:
        found: list[str] = []
        where = self.where = f"action {len(self.seen) + 1} ({action.value})"
        self.seen.append(action.value)
        if self.cancelled and action not in (Action.NOTIFICATION, Action.STATUS_REQUEST):
            found.append("after Cancelled only a Notification or a StatusRequest may follow")
        elif action is Action.RECEIVED and not self.loaned:
            found.append("Received only after the supplier sent Loaned")
        elif action is Action.SHIPPED_RETURN:
            if not self.loaned:
                found.append("ShippedReturn only after the supplier sent Loaned")
            elif not self.received:
                found.append("ShippedReturn only after the requester sent Received")
            self.returned = True
        elif action is Action.RENEW and not self.loaned:
            found.append("Renew only during a loan (after Loaned)")
        if action is Action.RECEIVED:
            self.received = True
        self.problems.extend(f"{where}: {p}" for p in found)
        return found
