"""The named conformance checks.

Each check is ``async def check(ctx) -> str`` (the PASS detail); it raises
:class:`CheckFailed` or :class:`CheckSkipped`.  ``role`` is the kit's role:
"requester" (the kit borrows from the peer) or "supplier" (the kit lends to
the peer).  Names are stable: CI and ``--only`` use them.
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
    YesNo,
)
from node.protocol.messages import (
    BillingInfo,
    DeliveryInfo,
    Envelope,
    Request,
    SupplyingAgencyMessage,
)

from .kit import CheckFailed, CheckSkipped, Ctx, due_in, replace_element_text, utcnow
from .rules import LOAN_GROUP, RequesterActions, SupplierLifecycle, describe


@dataclass(frozen=True)
class Check:
    name: str
    role: str  # requester | supplier (the kit's role)
    summary: str
    run: Callable[[Ctx], Awaitable[str]]


CHECKS: dict[str, Check] = {}


def check(name: str, role: str, summary: str):
    def register(fn):
        CHECKS[name] = Check(name=name, role=role, summary=summary, run=fn)
        return fn
    return register


# -- helpers -------------------------------------------------------------------------------------


async def feed(ctx: Ctx, life: SupplierLifecycle, rari: str, what: str) -> SupplyingAgencyMessage:
    """The peer's next message about ``rari``, checked against the lifecycle rules."""
    sam = await ctx.next_sam(rari, what=what)
    problems = life.feed(sam)
    ctx.log.note(f"peer sent {describe(sam)}; path so far: {life.path}")
    if problems:
        raise CheckFailed(problems[0])
    return sam


async def settle(ctx: Ctx, life: SupplierLifecycle, rari: str) -> None:
    """After a terminal status: nothing more may come (but a Notification repeating it)."""
    while True:
        sam = await ctx.stray("supplyingAgencyMessage", rari)
        if sam is None:
            break
        problems = life.feed(sam)
        ctx.log.note(f"peer sent {describe(sam)} after the end; path: {life.path}")
        if problems:
            raise CheckFailed(problems[0])
    ctx.warnings.extend(life.warnings)


async def start_request(ctx: Ctx, check_name: str, *, scenario: str, hint_required: bool,
                        service_type: ServiceType = ServiceType.LOAN
                        ) -> tuple[str, Request, SupplierLifecycle]:
    hints = ctx.hints_for(check_name, required=hint_required)
    rari = ctx.new_id(check_name)
    request = ctx.request(check_name, rari, scenario=scenario, hints=hints,
                          service_type=service_type)
    life = SupplierLifecycle(service_type=request.service_info.service_type)
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
        raise CheckFailed(f"the peer did not lend: {life.path} (for a peer that is not a mock, "
                          f"check the [{check_name}] --scenario-hints: an item it holds and lends)")


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
    good = writer.serialise(Envelope(version=ctx.config.version, message=ctx.request(
        "error-on-bad-xml", ctx.new_id("badxml"), scenario="UNFILLED", hints={})))
    cases = [
        ("truncated XML", good[: len(good) // 2]),
        ("not ISO 18626 (another root element)",
         b'<?xml version="1.0" encoding="UTF-8"?>\n<hello><request/></hello>'),
        ("an ISO18626Message holding nothing",
         (b'<ISO18626Message xmlns="http://illtransactions.org/2013/iso18626" '
         b'xmlns:ill="http://illtransactions.org/2013/iso18626" ill:version="1.2"/>')),
    ]
    seen = []
    for label, body in cases:
        ex = await ctx.post(body, f"bad input: {label}")
        if ex.error:
            raise CheckFailed(ex.error)
        if 400 <= ex.http_status < 500:
            seen.append(f"{label}: HTTP {ex.http_status}")
            continue
        if not 200 <= ex.http_status < 300:
            raise CheckFailed(f"{label}: HTTP {ex.http_status}; a peer must answer bad input "
                              "with an ERROR confirmation (or 400), not a server error")
        from .kit import check_confirmation

        check_confirmation(ex, None, None)
        if ex.problems:
            raise CheckFailed(f"{label}: " + "; ".join(ex.problems))
        if ex.status is not MessageStatus.ERROR:
            raise CheckFailed(f"{label}: answered {ex.summary()}; bad input must get ERROR")
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
    ex = await ctx.send(ctx.action(rari, Action.RECEIVED), expect=MessageStatus.ERROR,
                        title=f"Received about {rari}, which the peer never saw")
    out = [f"RAM: ERROR {', '.join(ex.error_types)}"]
    if ErrorType.UNRECOGNISED_DATA_VALUE.value not in ex.error_types:
        ctx.warnings.append("RAM: errorType UnrecognisedDataValue expected")
    request = ctx.request("error-on-unknown-request-id", rari, scenario="", hints={})
    sam = ctx.sam_for(request, reason=ReasonForMessage.REQUEST_RESPONSE, status=Status.WILL_SUPPLY)
    sam = replace(sam, header=replace(sam.header, supplying_agency_id=ctx.us,
                                      requesting_agency_id=ctx.peer))
    ex = await ctx.send(sam, expect=MessageStatus.ERROR,
                        title=f"WillSupply about {rari}, which the peer never requested")
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
                        title="action BorrowForever (not an Action)")
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
                        title=f"a different request reusing {rari}")
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
    return life.path


@check("copy", "requester", "a copy: ... -> CopyCompleted, no loan statuses")
async def copy(ctx: Ctx) -> str:
    rari, _request, life = await start_request(ctx, "copy", scenario="COMPLETED",
                                               hint_required=True, service_type=ServiceType.COPY)
    nudged = False
    while not life.terminal:
        sam = await feed(ctx, life, rari, "CopyCompleted")
        if sam.status_info.status in PRE_LOAN and not nudged:
            nudged = await ctx.nudge_lending(rari, {
                "action": "deliver_copy", "url": "https://example.org/conformance-copy.pdf"})
    if life.status is not Status.COPY_COMPLETED:
        raise CheckFailed(f"the copy was not delivered: {life.path}")
    await settle(ctx, life, rari)
    return life.path


@check("unfilled", "requester", "a request the peer cannot fill ends Unfilled, and stays so")
async def unfilled(ctx: Ctx) -> str:
    rari, _request, life = await start_request(ctx, "unfilled", scenario="UNFILLED",
                                               hint_required=True)
    while not life.terminal:
        sam = await feed(ctx, life, rari, "Unfilled")
        if sam.status_info.status in PRE_LOAN and ctx.driver is not None:
            await ctx.nudge_lending(rari, {"action": "reject", "reason": "NotHeld"})
    if life.status is not Status.UNFILLED:
        raise CheckFailed(f"expected Unfilled (check the [unfilled] hints: an item the peer "
                          f"does not hold): {life.path}")
    await settle(ctx, life, rari)
    return life.path


@check("retry", "requester",
       "RetryPossible with reasonRetry, then a Retry request (requestingAgencyPreviousRequestId) "
       "is accepted and answered afresh")
async def retry(ctx: Ctx) -> str:
    rari, request, life = await start_request(ctx, "retry", scenario="RETRY:COST_LOANED",
                                               hint_required=True)
    nudged = False
    while not life.terminal:
        sam = await feed(ctx, life, rari, "RetryPossible")
        if sam.status_info.status in PRE_LOAN and not nudged:
            nudged = await ctx.nudge_lending(rari, {"action": "retry_possible",
                                                    "reason": "OnLoan"})
    if life.status is not Status.RETRY_POSSIBLE:
        raise CheckFailed(f"expected RetryPossible (check the [retry] hints: e.g. an item "
                          f"that is on loan): {life.path}")
    info = sam.message_info
    await settle(ctx, life, rari)
    rari2 = ctx.new_id("retry2")
    billing = request.billing_info
    if info.offered_costs:
        billing = BillingInfo(maximum_costs=info.offered_costs[0])
    retry_request = replace(
        request, header=ctx.header(rari2), billing_info=billing,
        service_info=replace(request.service_info, request_type=RequestType.RETRY,
                             requesting_agency_previous_request_id=rari))
    await ctx.send(retry_request, title=f"Retry request {rari2} (previous {rari})")
    life2 = SupplierLifecycle(service_type=request.service_info.service_type)
    await feed(ctx, life2, rari2, "an answer to the Retry request")
    ctx.warnings.extend(life.warnings + life2.warnings)
    return (f"{life.path} ({info.reason_retry.value}); retry {rari2}: {life2.path}")


@check("cancel", "requester",
       "Cancel before shipping gets CancelResponse with answerYesNo (Y: Cancelled)")
async def cancel(ctx: Ctx) -> str:
    rari, _request, life = await start_request(ctx, "cancel", scenario="WILLSUPPLY",
                                               hint_required=True)
    sam = await feed(ctx, life, rari, "a first answer")
    if life.terminal or sam.status_info.status in LOAN_GROUP:
        raise CheckFailed(f"the peer's first answer {life.path} leaves nothing to cancel "
                          "(check the [cancel] hints: an item the peer will supply)")
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
                        title="status BorrowedForever (not a Status)")
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
            raise CheckFailed(problems[0])
        if ram.action is Action.RECEIVED:
            await ctx.nudge_borrowing(rari, {"action": "return_to_partner"},
                                      {"action": "loan_to_patron"})
            await ctx.nudge_borrowing(rari, {"action": "patron_return"})
            await ctx.nudge_borrowing(rari, {"action": "return_to_partner"})
    await ctx.send(ctx.sam_for(request, reason=ReasonForMessage.STATUS_CHANGE,
                               status=Status.LOAN_COMPLETED))
    extra = await ctx.stray("requestingAgencyMessage", rari)
    if extra is not None and extra.action not in (Action.NOTIFICATION, Action.STATUS_REQUEST):
        raise CheckFailed(f"the peer sent {extra.action.value} after LoanCompleted")
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
        raise CheckFailed(problems[0])
    if ram.action is not Action.CANCEL:
        raise CheckFailed(f"expected Cancel, the peer sent {ram.action.value}")
    await ctx.send(ctx.sam_for(request, reason=ReasonForMessage.CANCEL_RESPONSE,
                               status=Status.CANCELLED, answer=YesNo.Y))
    actions.supplier_sent(Status.CANCELLED)
    extra = await ctx.stray("requestingAgencyMessage", rari)
    if extra is not None:
        problems = actions.feed(extra.action)
        if problems:
            raise CheckFailed(problems[0])
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
