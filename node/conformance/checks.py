"""The named conformance checks.

Each check is ``async def check(ctx) -> str`` (the PASS detail); it raises
:class:`CheckFailed` or :class:`CheckSkipped`.  ``role`` is the kit's role:
"requester" (the kit borrows from the peer) or "supplier" (the kit lends to
the peer).  Names are stable: CI and ``--only`` use them.  Every check runs in
the version the kit speaks (``--version``); ``versions`` names the ones a check
means something in (``lost`` and ``hold-return`` test actions 2021-2 added,
and are skipped in v1.2).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace

from node.protocol import writer
from node.protocol.codes import (
    Action,
    Code,
    ErrorType,
    MessageStatus,
    ReasonForMessage,
    RequestType,
    ServiceType,
    Status,
    Version,
    YesNo,
)
from node.protocol.messages import (
    BillingInfo,
    DeliveryInfo,
    Envelope,
    Request,
    ServiceInfo,
    SupplyingAgencyMessage,
)

from .kit import (
    CheckFailed,
    CheckSkipped,
    Ctx,
    check_confirmation,
    due_in,
    replace_element_text,
    utcnow,
)
from .rules import LOAN_GROUP, RequesterActions, SupplierLifecycle, describe

BOTH = (Version.V1_2, Version.V2021_2)


@dataclass(frozen=True)
class Check:
    name: str
    role: str  # requester | supplier (the kit's role)
    summary: str
    run: Callable[[Ctx], Awaitable[str]]
    versions: tuple[Version, ...] = BOTH  # the ISO 18626 versions the check means something in


CHECKS: dict[str, Check] = {}


def check(name: str, role: str, summary: str, versions: tuple[Version, ...] = BOTH):
    def register(fn):
        CHECKS[name] = Check(name=name, role=role, summary=summary, run=fn, versions=versions)
        return fn
    return register


# -- helpers -------------------------------------------------------------------------------------


def broke_rule(ctx: Ctx, life: SupplierLifecycle, sam: SupplyingAgencyMessage,
               rule: str) -> CheckFailed:
    return CheckFailed(f"the peer's {life.where} breaks a rule of ISO 18626",
                       sent=ctx.last_sent,
                       got=f"{describe_sam(sam)}; all its messages so far: {life.path}",
                       expected=rule)


async def feed(ctx: Ctx, life: SupplierLifecycle, rari: str, what: str) -> SupplyingAgencyMessage:
    """The peer's next message about ``rari``, checked against the lifecycle rules."""
    sam = await ctx.next_sam(rari, what=what)
    problems = life.feed(sam)
    ctx.log.note(f"peer sent {describe(sam)}; path so far: {life.path}")
    if problems:
        raise broke_rule(ctx, life, sam, problems[0])
    return sam


def describe_sam(sam: SupplyingAgencyMessage) -> str:
    """The peer's message in a librarian's words: reason, status and what it carried."""
    info, st = sam.message_info, sam.status_info
    parts = [f"supplyingAgencyMessage {describe(sam)}"]
    if st.due_date is not None:
        parts.append(f"dueDate {st.due_date:%Y-%m-%d}")
    elif st.status in LOAN_GROUP:
        parts.append("no dueDate")
    if info.reason_retry is not None:
        parts.append(f"reasonRetry {info.reason_retry.value}")
    if info.reason_unfilled is not None:
        parts.append(f"reasonUnfilled {info.reason_unfilled.value}")
    if info.note:
        parts.append(f"note {info.note[:80]!r}")
    return ", ".join(parts)


def requester_broke_rule(ctx: Ctx, actions: RequesterActions, rule: str) -> CheckFailed:
    return CheckFailed(f"the peer's {actions.where} breaks a rule of ISO 18626",
                       sent=ctx.last_sent,
                       got=f"requestingAgencyMessage {actions.seen[-1]}; all its actions so "
                       f"far: {' -> '.join(actions.seen)}", expected=rule)


async def settle(ctx: Ctx, life: SupplierLifecycle, rari: str) -> None:
    """After a terminal status: nothing more may come (but a Notification repeating it)."""
    while True:
        sam = await ctx.stray("supplyingAgencyMessage", rari)
        if sam is None:
            break
        problems = life.feed(sam)
        ctx.log.note(f"peer sent {describe(sam)} after the end; path: {life.path}")
        if problems:
            raise broke_rule(ctx, life, sam, problems[0])
    ctx.warnings.extend(life.warnings)


async def start_request(ctx: Ctx, check_name: str, *, scenario: str, hint_required: bool,
                        service_type: ServiceType = ServiceType.LOAN, **service
                        ) -> tuple[str, Request, SupplierLifecycle]:
    hints = ctx.hints_for(check_name, required=hint_required)
    rari = ctx.new_id(check_name)
    request = ctx.request(check_name, rari, scenario=scenario, hints=hints,
                          service_type=service_type, **service)
    life = SupplierLifecycle(service_type=request.service_info.service_type,
                             version=ctx.config.version)
    await ctx.send(request)
    return rari, request, life


async def send_action(ctx: Ctx, life: SupplierLifecycle, rari: str, action: Action,
                      note: str | None = None) -> None:
    life.sent(action)
    await ctx.send(ctx.action(rari, action, note))


PRE_LOAN = (Status.REQUEST_RECEIVED, Status.EXPECT_TO_SUPPLY, Status.WILL_SUPPLY)


async def until_loaned(ctx: Ctx, life: SupplierLifecycle, rari: str, check_name: str
                       ) -> SupplyingAgencyMessage:
    """Wait for Loaned, nudging a peer with a staff API to ship."""
    nudged = False
    while True:
        sam = await feed(ctx, life, rari, "Loaned")
        status = sam.status_info.status
        if status in LOAN_GROUP:
            return sam
        if status in PRE_LOAN:
            if not nudged and await ctx.nudge_lending(rari, {"action": "ship"}):
                nudged = True
            continue
        raise CheckFailed(f"the peer did not lend (for a peer that is not a mock, check the "
                          f"[{check_name}] --scenario-hints: an item it holds and lends)",
                          sent=ctx.last_sent, got=life.path,
                          expected="WillSupply or the like, then Loaned with a dueDate")


# -- requester-role checks (the kit borrows) ----------------------------------------------------


@check("confirmation-wellformed-valid", "requester",
       "every confirmation parses, is the right kind and validates against its version's schema")
async def confirmation_wellformed_valid(ctx: Ctx) -> str:
    hints = ctx.hints_for("confirmation-wellformed-valid", required=False)
    rari = ctx.new_id("confirmation")
    request = ctx.request("confirmation-wellformed-valid", rari, scenario="WILLSUPPLY",
                          hints=hints)
    first = await ctx.send(request, expect=None)
    # a StatusRequest about it, and a Notification: both need only a confirmation
    second = await ctx.send(ctx.action(rari, Action.STATUS_REQUEST), expect=None)
    third = await ctx.send(ctx.action(rari, Action.NOTIFICATION, "conformance: a note"),
                           expect=None)
    # the peer as requester: a SAM about a request it never made still gets a valid confirmation
    sam = ctx.sam_for(request, reason=ReasonForMessage.REQUEST_RESPONSE,
                      status=Status.WILL_SUPPLY)
    sam = replace(sam, header=replace(sam.header, supplying_agency_id=ctx.us,
                                      requesting_agency_id=ctx.peer,
                                      requesting_agency_request_id=ctx.new_id("unknown")))
    fourth = await ctx.send(sam, expect=None)
    ctx.raise_peer_problems()
    versions = {e.envelope.version.value for e in (first, second, third, fourth)}
    return (f"4 confirmations valid ({', '.join(sorted(versions))}): request "
            f"{first.status.value}, StatusRequest {second.status.value}, Notification "
            f"{third.status.value}, SAM {fourth.status.value}")


@check("error-on-bad-xml", "requester",
       "input that is not (ISO 18626) XML gets an ERROR confirmation (or HTTP 400), never OK")
async def error_on_bad_xml(ctx: Ctx) -> str:
    version = ctx.config.version
    good = writer.serialise(Envelope(version=version, message=ctx.request(
        "error-on-bad-xml", ctx.new_id("badxml"), scenario="UNFILLED", hints={})))
    cases = [
        ("truncated XML (the first half of a valid request)", good[: len(good) // 2]),
        ("not ISO 18626 (another root element)",
         b'<?xml version="1.0" encoding="UTF-8"?>\n<hello><request/></hello>'),
        ("an ISO18626Message holding nothing",
         (b'<ISO18626Message xmlns="http://illtransactions.org/2013/iso18626" '
          b'xmlns:ill="http://illtransactions.org/2013/iso18626" ill:version="'
          + version.value.encode() + b'"/>')),
    ]
    expected = ("an ERROR confirmation with errorType BadlyFormedMessage (or an HTTP 4xx): "
                "ISO 18626 clause 6 answers what a receiver cannot process with an errorType")
    seen = []
    for label, body in cases:
        ex = await ctx.post(body, f"bad input: {label}", broken=True)
        if ex.error:
            raise CheckFailed(ex.error, sent=label, got="no answer", expected=expected)
        if 400 <= ex.http_status < 500:
            seen.append(f"{label}: HTTP {ex.http_status}")
            continue
        if not 200 <= ex.http_status < 300:
            raise CheckFailed(f"a server error for bad input: {label}", sent=label,
                              got=f"HTTP {ex.http_status}", expected=expected)
        check_confirmation(ex, None, None, None)  # the peer cannot tell the version
        if ex.problems:
            raise CheckFailed(f"the answer to bad input is not a proper confirmation: {label}",
                              sent=label, got="; ".join(problem + (f": {evidence}" if evidence
                                                                   else "")
                                                        for problem, evidence in ex.problems),
                              expected=expected)
        if ex.status is not MessageStatus.ERROR:
            raise CheckFailed(f"the peer accepted bad input: {label}", sent=label,
                              got=ex.summary(), expected=expected)
        types = ex.error_types
        if ErrorType.BADLY_FORMED_MESSAGE.value not in types:
            ctx.warnings.append(f"{label}: errorType {', '.join(types)} (BadlyFormedMessage "
                                "expected)")
        seen.append(f"{label}: ERROR {', '.join(types)}")
    return "; ".join(seen)


@check("error-on-unknown-request-id", "requester",
       "a RequestingAgencyMessage or SupplyingAgencyMessage about an unknown request gets ERROR")
async def error_on_unknown_request_id(ctx: Ctx) -> str:
    rari = ctx.new_id("unknown")
    unknown = ("an ERROR confirmation with errorType UnrecognisedDataValue: a message about "
               "a request id the receiver does not know cannot be processed (clause 6)")
    ex = await ctx.send(ctx.action(rari, Action.RECEIVED), expect=MessageStatus.ERROR,
                        title=f"requestingAgencyMessage Received about {rari}, which the peer "
                        "never saw", standard=unknown)
    out = [f"RAM: ERROR {', '.join(ex.error_types)}"]
    if ErrorType.UNRECOGNISED_DATA_VALUE.value not in ex.error_types:
        ctx.warnings.append("RAM: errorType UnrecognisedDataValue expected")
    request = ctx.request("error-on-unknown-request-id", rari, scenario="", hints={})
    sam = ctx.sam_for(request, reason=ReasonForMessage.REQUEST_RESPONSE, status=Status.WILL_SUPPLY)
    sam = replace(sam, header=replace(sam.header, supplying_agency_id=ctx.us,
                                      requesting_agency_id=ctx.peer))
    ex = await ctx.send(sam, expect=MessageStatus.ERROR,
                        title=f"supplyingAgencyMessage WillSupply about {rari}, which the "
                        "peer never requested", standard=unknown)
    out.append(f"SAM: ERROR {', '.join(ex.error_types)}")
    if ErrorType.UNRECOGNISED_DATA_VALUE.value not in ex.error_types:
        ctx.warnings.append("SAM: errorType UnrecognisedDataValue expected")
    return "; ".join(out)


@check("error-on-invalid-action", "requester",
       "a RequestingAgencyMessage with an action not in the code list gets ERROR")
async def error_on_invalid_action(ctx: Ctx) -> str:
    rari, _request, _life = await start_request(ctx, "error-on-invalid-action",
                                                scenario="WILLSUPPLY", hint_required=False)
    message = ctx.action(rari, Action.STATUS_REQUEST)
    body = writer.serialise(Envelope(version=ctx.config.version, message=message))
    body = replace_element_text(body, "action", "BorrowForever")
    ex = await ctx.send(message, raw=body, expect=MessageStatus.ERROR,
                        title=f"requestingAgencyMessage about {rari} with action BorrowForever "
                        "(not in the Action code list)",
                        standard="an ERROR confirmation with errorType UnsupportedActionType: "
                        "Action is a closed list (clause 6)")
    if ErrorType.UNSUPPORTED_ACTION_TYPE.value not in ex.error_types:
        ctx.warnings.append(f"errorType {', '.join(ex.error_types)} "
                            "(UnsupportedActionType expected)")
    return f"ERROR {', '.join(ex.error_types)}"


@check("error-on-duplicate-request-id", "requester",
       "a second, different Request with a requestingAgencyRequestId already used gets ERROR")
async def error_on_duplicate_request_id(ctx: Ctx) -> str:
    rari, request, _life = await start_request(ctx, "error-on-duplicate-request-id",
                                               scenario="WILLSUPPLY", hint_required=False)
    again = replace(request, header=ctx.header(rari),
                    bibliographic_info=replace(request.bibliographic_info,
                                   title="A different book with the same request id"))
    ex = await ctx.send(again, expect=MessageStatus.ERROR,
                        title=f"a second, different request reusing the id {rari}",
                        standard="an ERROR confirmation (UnrecognisedDataValue): "
                        "requestingAgencyRequestId identifies one request; an identical "
                        "resend may be answered as before, a different one may not")
    if ErrorType.UNRECOGNISED_DATA_VALUE.value not in ex.error_types:
        ctx.warnings.append("errorType UnrecognisedDataValue expected")
    return f"ERROR {', '.join(ex.error_types)}"


@check("loan", "requester",
       "a loan: statuses and reasons in a legal order, dueDate on Loaned, Received, "
       "ShippedReturn, LoanCompleted")
async def loan(ctx: Ctx) -> str:
    rari, _request, life = await start_request(ctx, "loan", scenario="WILLSUPPLY_LOANED",
                                               hint_required=True)
    await until_loaned(ctx, life, rari, "loan")
    await send_action(ctx, life, rari, Action.RECEIVED)
    await return_loan(ctx, life, rari)
    return life.path


async def return_loan(ctx: Ctx, life: SupplierLifecycle, rari: str) -> None:
    """ShippedReturn, then (checking the item in on a peer with a staff API) LoanCompleted."""
    await send_action(ctx, life, rari, Action.SHIPPED_RETURN)
    nudged = False
    while life.status is not Status.LOAN_COMPLETED:
        if not nudged:
            nudged = True
            await ctx.nudge_lending(rari, {"action": "check_in"})
        sam = await feed(ctx, life, rari, "LoanCompleted")
        if sam.status_info.status in (Status.COMPLETED_WITHOUT_RETURN,):
            break
    await settle(ctx, life, rari)


@check("copy", "requester", "a copy: ... -> CopyCompleted, no loan statuses")
async def copy(ctx: Ctx) -> str:
    # the format asked for is serviceInfo/preferredFormat in v1.2, itemFormat in 2021-2
    rari, _request, life = await start_request(ctx, "copy", scenario="COMPLETED",
                                               hint_required=True, service_type=ServiceType.COPY,
                                               item_format=Code("PDF"))
    nudged = False
    while not life.terminal:
        sam = await feed(ctx, life, rari, "CopyCompleted")
        if sam.status_info.status in PRE_LOAN and not nudged:
            nudged = await ctx.nudge_lending(rari, {
                "action": "deliver_copy", "url": "https://example.org/conformance-copy.pdf"})
    if life.status is not Status.COPY_COMPLETED:
        raise CheckFailed("the copy was not delivered", sent=ctx.last_sent, got=life.path,
                          expected="a Copy request ends CopyCompleted (check the [copy] hints)")
    delivered = sam.delivery_info.item_format if sam.delivery_info is not None else None
    if delivered is not None and delivered.value.casefold() != "pdf":
        ctx.warnings.append(f"PDF was asked for; the copy came as {delivered.value}")
    await settle(ctx, life, rari)
    return life.path + (f" ({delivered.value})" if delivered is not None else "")


@check("unfilled", "requester", "a request the peer cannot fill ends Unfilled, and stays so")
async def unfilled(ctx: Ctx) -> str:
    rari, _request, life = await start_request(ctx, "unfilled", scenario="UNFILLED",
                                               hint_required=True)
    while not life.terminal:
        sam = await feed(ctx, life, rari, "Unfilled")
        if sam.status_info.status in PRE_LOAN and ctx.driver is not None:
            await ctx.nudge_lending(rari, {"action": "reject", "reason": "NotHeld"})
    if life.status is not Status.UNFILLED:
        raise CheckFailed("the request did not end Unfilled", sent=ctx.last_sent, got=life.path,
                          expected="Unfilled for an item the peer does not hold (check the "
                          "[unfilled] hints)")
    await settle(ctx, life, rari)
    return life.path


@check("retry", "requester",
       "RetryPossible with reasonRetry, then a Retry request (requestingAgencyPreviousRequestId) "
       "is accepted and answered afresh")
async def retry(ctx: Ctx) -> str:
    # a mock peer offers a loan condition in 2021-2 (retryInfo), a cost in v1.2 (messageInfo)
    scenario = ("RETRY:COND_LOANED" if ctx.config.version is Version.V2021_2
                else "RETRY:COST_LOANED")
    rari, request, life = await start_request(ctx, "retry", scenario=scenario,
                                               hint_required=True)
    nudged = False
    while not life.terminal:
        sam = await feed(ctx, life, rari, "RetryPossible")
        if sam.status_info.status in PRE_LOAN and not nudged:
            nudged = await ctx.nudge_lending(rari, {"action": "retry_possible",
                                                    "reason": "OnLoan"})
    if life.status is not Status.RETRY_POSSIBLE:
        raise CheckFailed("the request did not end RetryPossible", sent=ctx.last_sent,
                          got=life.path, expected="RetryPossible with a reasonRetry (check the "
                          "[retry] hints: e.g. an item whose every copy is on loan)")
    info = sam.message_info
    await settle(ctx, life, rari)
    rari2 = ctx.new_id("retry2")
    billing = request.billing_info
    if info.offered_costs:
        billing = BillingInfo(maximum_costs=info.offered_costs[0])
    service, accepted = accept_offer(ctx, sam, replace(
        request.service_info, request_type=RequestType.RETRY,
        requesting_agency_previous_request_id=rari))
    retry_request = replace(request, header=ctx.header(rari2), billing_info=billing,
                            service_info=service)
    await ctx.send(retry_request, title=f"Retry request {rari2} (previous {rari})"
                   + (f" accepting {', '.join(accepted)}" if accepted else ""))
    life2 = SupplierLifecycle(service_type=service.service_type, version=ctx.config.version)
    await feed(ctx, life2, rari2, "an answer to the Retry request")
    ctx.warnings.extend(life.warnings + life2.warnings)
    return (f"{life.path} ({info.reason_retry.value}); retry {rari2}"
            + (f" accepting {', '.join(accepted)}" if accepted else "") + f": {life2.path}")


def accept_offer(ctx: Ctx, sam: SupplyingAgencyMessage, service: ServiceInfo
                 ) -> tuple[ServiceInfo, list[str]]:
    """The Retry request's serviceInfo taking up what RetryPossible offered.

    2021-2 offers the alternatives in ``retryInfo`` (loanCondition, itemFormat,
    serviceType, ...) and a Retry accepting a loan condition repeats it in
    ``serviceInfo/loanCondition``; v1.2 has neither, so its offer is only the
    costs (``billingInfo/maximumCosts``, done by the caller).
    """
    offer = sam.retry_info
    if ctx.config.version is not Version.V2021_2:
        return service, []
    if sam.message_info.reason_retry is not None and (
            sam.message_info.reason_retry.value == "MustMeetLoanCondition") and (
            offer is None or not offer.loan_condition):
        ctx.warnings.append("RetryPossible MustMeetLoanCondition without "
                            "retryInfo/loanCondition: which condition?")
    if offer is None:
        return service, []
    accepted = []
    if offer.loan_condition:
        service = replace(service, loan_condition=offer.loan_condition)
        accepted.append("loanCondition " + ", ".join(c.value for c in offer.loan_condition))
    if offer.item_format:
        service = replace(service, item_format=offer.item_format[0])
        accepted.append(f"itemFormat {offer.item_format[0].value}")
    if offer.service_type is not None:
        service = replace(service, service_type=offer.service_type)
        accepted.append(f"serviceType {offer.service_type.value}")
    return service, accepted


@check("cancel", "requester",
       "Cancel before shipping gets CancelResponse with answerYesNo (Y: Cancelled)")
async def cancel(ctx: Ctx) -> str:
    rari, _request, life = await start_request(ctx, "cancel", scenario="WILLSUPPLY",
                                               hint_required=True)
    sam = await feed(ctx, life, rari, "a first answer")
    if life.terminal or sam.status_info.status in LOAN_GROUP:
        raise CheckFailed("the peer's first answer leaves nothing to cancel",
                          sent=ctx.last_sent, got=life.path,
                          expected="WillSupply or the like, before shipping (check the "
                          "[cancel] hints: an item the peer will supply)")
    await send_action(ctx, life, rari, Action.CANCEL, "conformance: cancel please")
    while True:
        sam = await feed(ctx, life, rari, "a CancelResponse")
        if sam.message_info.reason_for_message is ReasonForMessage.CANCEL_RESPONSE:
            break
    if sam.message_info.answer_yes_no is YesNo.Y:
        await settle(ctx, life, rari)
    else:
        ctx.notes.append("the peer refused the cancel (N), which the standard allows")
    return life.path


@check("renew", "requester",
       "Renew during a loan gets RenewResponse with answerYesNo (Y: new dueDate)")
async def renew(ctx: Ctx) -> str:
    rari, _request, life = await start_request(ctx, "renew", scenario="LOANED",
                                               hint_required=True)
    loaned = await until_loaned(ctx, life, rari, "renew")
    old_due = loaned.status_info.due_date
    await send_action(ctx, life, rari, Action.RECEIVED)
    await send_action(ctx, life, rari, Action.RENEW, "conformance: renew please")
    while True:
        sam = await feed(ctx, life, rari, "a RenewResponse")
        if sam.message_info.reason_for_message is ReasonForMessage.RENEW_RESPONSE:
            break
    new_due = sam.status_info.due_date
    if sam.message_info.answer_yes_no is YesNo.Y and old_due and new_due and new_due <= old_due:
        ctx.warnings.append(f"renewed, but the dueDate {new_due:%Y-%m-%d} is not later than "
                            f"{old_due:%Y-%m-%d}")
    ctx.warnings.extend(life.warnings)
    return life.path + (f"; due {old_due:%Y-%m-%d} -> {new_due:%Y-%m-%d}"
                        if old_due and new_due else "")


# -- requester-role checks of what 2021-2 added ----------------------------------------------

ONLY_2021 = (Version.V2021_2,)


@check("lost", "requester",
       "2021-2: Lost during a loan is confirmed and answered with CompletedWithoutReturn",
       versions=ONLY_2021)
async def lost(ctx: Ctx) -> str:
    rari, _request, life = await start_request(ctx, "lost", scenario="LOANED",
                                               hint_required=True)
    await until_loaned(ctx, life, rari, "lost")
    await send_action(ctx, life, rari, Action.RECEIVED)
    await ctx.send(ctx.action(rari, Action.LOST, "conformance: the item is lost"),
                   standard="an OK requestingAgencyMessageConfirmation: Lost is in 2021-2's "
                   "Action list, which every 2021-2 application supports")
    sam = await feed(ctx, life, rari, "CompletedWithoutReturn")
    if sam.status_info.status is not Status.COMPLETED_WITHOUT_RETURN:
        raise CheckFailed("the peer did not close the lost loan", sent=ctx.last_sent,
                          got=f"{describe_sam(sam)}; all its messages so far: {life.path}",
                          expected="StatusChange CompletedWithoutReturn: the item will not "
                          "come back (ISO 18626:2021, action Lost)")
    await settle(ctx, life, rari)
    return life.path


@check("hold-return", "requester",
       "2021-2: HoldReturn during a loan is confirmed OK; the loan then ends as usual",
       versions=ONLY_2021)
async def hold_return(ctx: Ctx) -> str:
    rari, _request, life = await start_request(ctx, "hold-return", scenario="LOANED",
                                               hint_required=True)
    await until_loaned(ctx, life, rari, "hold-return")
    await send_action(ctx, life, rari, Action.RECEIVED)
    await ctx.send(ctx.action(rari, Action.HOLD_RETURN, "conformance: cannot return yet"),
                   standard="an OK requestingAgencyMessageConfirmation: HoldReturn (the "
                   "borrower cannot return the item yet) is in 2021-2's Action list, which "
                   "every 2021-2 application supports")
    while (sam := await ctx.stray("supplyingAgencyMessage", rari)) is not None:
        problems = life.feed(sam)
        ctx.log.note(f"peer sent {describe(sam)} after HoldReturn; path: {life.path}")
        if problems:
            raise broke_rule(ctx, life, sam, problems[0])
    if life.terminal:
        raise CheckFailed("the peer ended the loan on HoldReturn", sent=ctx.last_sent,
                          got=life.path, expected="the loan goes on: HoldReturn only says the "
                          "item comes back later")
    await return_loan(ctx, life, rari)
    return life.path


# -- supplier-role checks (the kit lends) -------------------------------------------------------


@check("error-on-invalid-status", "supplier",
       "a SupplyingAgencyMessage with a status not in the code list gets ERROR")
async def error_on_invalid_status(ctx: Ctx) -> str:
    request = await ctx.make_peer_request("error-on-invalid-status")
    sam = ctx.sam_for(request, reason=ReasonForMessage.REQUEST_RESPONSE,
                      status=Status.WILL_SUPPLY)
    body = writer.serialise(Envelope(version=ctx.config.version, message=sam))
    body = replace_element_text(body, "status", "BorrowedForever")
    ex = await ctx.send(sam, raw=body, expect=MessageStatus.ERROR,
                        title="supplyingAgencyMessage with status BorrowedForever (not in the "
                        "Status code list)",
                        standard="an ERROR confirmation with errorType UnrecognisedDataValue: "
                        "Status is a closed list (clause 6)")
    if ErrorType.UNRECOGNISED_DATA_VALUE.value not in ex.error_types:
        ctx.warnings.append(f"errorType {', '.join(ex.error_types)} "
                            "(UnrecognisedDataValue expected)")
    # close the request properly
    await ctx.send(ctx.sam_for(request, reason=ReasonForMessage.REQUEST_RESPONSE,
                               status=Status.UNFILLED, note="conformance check done"),
                   expect=None)
    return f"ERROR {', '.join(ex.error_types)}"


@check("requester-loan", "supplier",
       "lending to the peer: its Request validates, it confirms WillSupply/Loaned/LoanCompleted, "
       "and sends Received then ShippedReturn")
async def requester_loan(ctx: Ctx) -> str:
    request = await ctx.make_peer_request("requester-loan")
    rari = request.header.requesting_agency_request_id
    actions = RequesterActions()
    await ctx.send(ctx.sam_for(request, reason=ReasonForMessage.REQUEST_RESPONSE,
                               status=Status.WILL_SUPPLY))
    barcode = "CONF-" + rari[-8:]
    await ctx.send(ctx.sam_for(
        request, reason=ReasonForMessage.STATUS_CHANGE, status=Status.LOANED, due=due_in(28),
        delivery=DeliveryInfo(date_sent=utcnow(), item_id=(barcode,),
                              delivery_method=Code("Mail"))))
    actions.supplier_sent(Status.LOANED)
    await ctx.nudge_borrowing(rari, {"action": "receive", "barcodes": [barcode]})
    while not actions.returned:
        ram = await ctx.next_ram(rari, what="Received / ShippedReturn")
        problems = actions.feed(ram.action)
        ctx.log.note(f"peer sent {ram.action.value}; actions so far: {actions.seen}")
        if problems:
            raise requester_broke_rule(ctx, actions, problems[0])
        if ram.action is Action.RECEIVED:
            await ctx.nudge_borrowing(rari, {"action": "return_to_partner"},
                                      {"action": "loan_to_patron"})
            await ctx.nudge_borrowing(rari, {"action": "patron_return"})
            await ctx.nudge_borrowing(rari, {"action": "return_to_partner"})
    await ctx.send(ctx.sam_for(request, reason=ReasonForMessage.STATUS_CHANGE,
                               status=Status.LOAN_COMPLETED))
    extra = await ctx.stray("requestingAgencyMessage", rari)
    if extra is not None and extra.action not in (Action.NOTIFICATION, Action.STATUS_REQUEST):
        raise CheckFailed(f"the peer sent {extra.action.value} after LoanCompleted",
                          sent=ctx.last_sent, got=f"requestingAgencyMessage {extra.action.value}",
                          expected="after LoanCompleted only a Notification or a StatusRequest")
    return " -> ".join(actions.seen)


@check("requester-cancel", "supplier",
       "the peer cancels; after our CancelResponse Y + Cancelled it sends nothing more")
async def requester_cancel(ctx: Ctx) -> str:
    request = await ctx.make_peer_request("requester-cancel", note="#CANCEL#")
    rari = request.header.requesting_agency_request_id
    actions = RequesterActions()
    await ctx.send(ctx.sam_for(request, reason=ReasonForMessage.REQUEST_RESPONSE,
                               status=Status.WILL_SUPPLY))
    await ctx.nudge_borrowing(rari, {"action": "cancel", "reason": "conformance check"})
    ram = await ctx.next_ram(rari, what="Cancel")
    problems = actions.feed(ram.action)
    if problems:
        raise requester_broke_rule(ctx, actions, problems[0])
    if ram.action is not Action.CANCEL:
        raise CheckFailed(f"the peer sent {ram.action.value}, not Cancel", sent=ctx.last_sent,
                          got=f"requestingAgencyMessage {ram.action.value}",
                          expected="the requester's Cancel (its staff or patron cancelled)")
    await ctx.send(ctx.sam_for(request, reason=ReasonForMessage.CANCEL_RESPONSE,
                               status=Status.CANCELLED, answer=YesNo.Y))
    actions.supplier_sent(Status.CANCELLED)
    extra = await ctx.stray("requestingAgencyMessage", rari)
    if extra is not None:
        problems = actions.feed(extra.action)
        if problems:
            raise requester_broke_rule(ctx, actions, problems[0])
    return " -> ".join(actions.seen) + " -> CancelResponse Y/Cancelled"


def select(names: list[str] | None, role: str) -> list[Check]:
    """The checks to run, in a stable order; unknown names are a ValueError."""
    if names:
        unknown = [n for n in names if n not in CHECKS]
        if unknown:
            raise ValueError(f"unknown check(s): {', '.join(unknown)}; known: "
                             f"{', '.join(CHECKS)}")
    chosen = [c for c in CHECKS.values() if not names or c.name in names]
    if role != "both":
        chosen = [c for c in chosen if c.role == role]
    return chosen


__all__ = ["CHECKS", "Check", "CheckFailed", "CheckSkipped", "select"]
