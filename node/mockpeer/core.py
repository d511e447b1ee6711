"""The mock peer's logic, sans I/O: bytes in, (bytes out, messages to send later).

:class:`MockPeer` plays both roles, for any agency symbol, as CrossLink's
illmock does (NOTES.md section 7):

* a Request without ``requestSubType=PatronRequest`` makes it the supplier of
  that request; it answers OK and then sends the scenario's statuses;
* a PatronRequest makes it the requester: it forwards a normal Request to
  ``supplierInfo/supplierDescription`` (if http) or the peer URL, and then
  answers the supplier's messages (Received, ShippedReturn, Retry, ...).

The edge (``server.py``) does the HTTP and the waiting.  It calls
:meth:`MockPeer.receive` for every POST, and for each :class:`Send` it gets
back it sleeps ``delay * send.factor``, calls :meth:`MockPeer.build` (None:
nothing to send any more), POSTs the bytes, and reports the answer to
:meth:`MockPeer.answered`, which may return more sends: the next status goes
out only after the previous one was confirmed.

Differences from illmock, on purpose: a RequestingAgencyMessage about an
unknown request gets an ERROR confirmation (illmock answers OK); a
StatusRequest gets a StatusRequestResponse; Loaned carries ``dateSent``; a
RenewResponse carries the new due date; with ``#RENEW#`` the requester also
renews right after Received (illmock waits for Overdue); the PatronRequest is
forwarded after it is confirmed, not during; its state is kept after the end
(a late message is still recognised), but a Retry may reuse a finished id.

``breaks`` switch on deliberate misbehaviours (see :data:`BREAKS`) so that
tests can show each conformance check failing.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from decimal import Decimal

from lxml import etree

from node.protocol import confirm, reader, writer
from node.protocol.codes import (
    NAMESPACE,
    TERMINAL_STATUSES,
    Action,
    Code,
    ErrorType,
    MessageStatus,
    ReasonForMessage,
    RequestSubType,
    RequestType,
    ServiceType,
    Status,
    Version,
    YesNo,
)
from node.protocol.errors import ProtocolError
from node.protocol.messages import (
    AgencyId,
    BillingInfo,
    Costs,
    DeliveryInfo,
    ElectronicAddress,
    Envelope,
    Header,
    MessageInfo,
    Request,
    RequestConfirmation,
    RequestingAgencyMessage,
    RetryInfo,
    StatusInfo,
    SupplyingAgencyMessage,
)
from node.protocol.schema import validation_errors

from .flows import FlowLog
from .scenario import Plan, plan_for

_Q = "{" + NAMESPACE + "}"

QUIRKS = ("unprefixed-version", "offset-0000", "empty-notification-status")

# Deliberate misbehaviour -> the conformance check that must catch it.
BREAKS: dict[str, str] = {
    "invalid-confirmation": "confirmation-wellformed-valid",
    "wrong-confirmation-kind": "confirmation-wellformed-valid",
    "ok-on-bad-xml": "error-on-bad-xml",
    "ok-on-unknown-id": "error-on-unknown-request-id",
    "ok-on-invalid-action": "error-on-invalid-action",
    "ok-on-invalid-status": "error-on-invalid-status",
    "accept-duplicate": "error-on-duplicate-request-id",
    "loaned-without-due-date": "loan",
    "request-response-twice": "loan",
    "copy-as-loan": "copy",
    "unfilled-twice": "unfilled",
    "retry-without-reason": "retry",
    "cancel-without-answer": "cancel",
    "renew-without-due-date": "renew",
    "return-without-received": "requester-loan",
    "ignore-cancel-answer": "requester-cancel",
    # Loaned names its deliveryMethod as the other edition does (2021-2: sentVia)
    "other-edition-delivery-method": "loan",
    "lost-as-loan-completed": "lost",
    "refuse-hold-return": "hold-return",
}

LOAN_DAYS = 14
XML_TYPES = ("application/xml", "text/xml")


@dataclass(frozen=True, slots=True)
class Send:
    """A message to send later: ``kind`` says what, ``key`` which transaction."""

    kind: str  # status|overdue|recalled|renew|cancel|completed|lost|status-response|request|retry|action
    role: str  # supplier | requester
    key: tuple[str, ...]
    factor: float = 1.0  # of the configured delay
    action: Action | None = None
    url: str | None = None  # filled in by build()


@dataclass
class Reply:
    status: int
    body: bytes
    content_type: str = "application/xml"
    headers: dict[str, str] = field(default_factory=dict)
    sends: list[Send] = field(default_factory=list)


@dataclass
class SupplierTx:
    request: Request
    version: Version
    plan: Plan
    requester_url: str
    supplying_request_id: str
    pending: list = field(default_factory=list)  # Status, or "NOTIFY"
    first: bool = True
    loaned: bool = False
    overdue: bool = False
    recalled: bool = False
    status: Status | None = None
    due: datetime | None = None
    done: bool = False


@dataclass
class RequesterTx:
    request: Request  # the request we sent (updated on retry)
    version: Version
    supplier_url: str
    cancel: bool = False
    renew: bool = False
    recall: bool = False
    retry_keep_id: bool = False
    received: bool = False
    status: Status | None = None
    last_sam: SupplyingAgencyMessage | None = None
    previous_id: str | None = None
    done: bool = False


def _value(agency: AgencyId | None) -> str:
    return agency.value if agency is not None else ""


def _is_http(text: str | None) -> bool:
    return bool(text) and (text.startswith(("http://", "https://")))


def _flow_ids(header: Header) -> tuple[str, str, str]:
    return (_value(header.requesting_agency_id), _value(header.supplying_agency_id),
            header.requesting_agency_request_id)


class MockPeer:
    def __init__(self, *, peer_url: str, quirks: frozenset[str] | set[str] = frozenset(),
                 breaks: frozenset[str] | set[str] = frozenset(), validate: bool = True,
                 version: Version | None = None):
        unknown = set(quirks) - set(QUIRKS)
        if unknown:
            raise ValueError(f"unknown quirk(s): {', '.join(sorted(unknown))}; "
                             f"known: {', '.join(QUIRKS)}")
        unknown = set(breaks) - set(BREAKS)
        if unknown:
            raise ValueError(f"unknown breakage(s): {', '.join(sorted(unknown))}")
        self.peer_url = peer_url
        self.version = version  # None: each exchange in the version it was begun in
        self.quirks = frozenset(quirks)
        self.breaks = frozenset(breaks)
        self.validate = validate and not self.quirks and not self.breaks
        self.suppliers: dict[tuple[str, ...], SupplierTx] = {}
        self.requesters: dict[tuple[str, ...], RequesterTx] = {}
        self.flows = FlowLog()

    # -- encoding ---------------------------------------------------------------------

    def encode(self, envelope: Envelope) -> bytes:
        """Serialise, then apply the quirks asked for (and breakages)."""
        root = writer.to_tree(envelope)
        if self.validate:
            errors = validation_errors(root, envelope.version)
            if errors:  # a bug in the mock: say so loudly
                raise ValueError(f"mock peer built an invalid {envelope.kind}: {errors[0]}")
        if "unprefixed-version" in self.quirks:
            version = root.attrib.pop(_Q + "version")
            root.set("version", version)
        if "offset-0000" in self.quirks:
            for el in root.iter():
                if el.text and _DATETIME_Z.fullmatch(el.text):
                    el.text = el.text[:-1] + "+0000"
        msg = envelope.message
        if ("empty-notification-status" in self.quirks
                and isinstance(msg, SupplyingAgencyMessage)
                and msg.message_info.reason_for_message is ReasonForMessage.NOTIFICATION):
            for el in root.iter(_Q + "status"):
                el.text = None
        if "other-edition-delivery-method" in self.breaks:
            wrong = "sentVia" if envelope.version is Version.V2021_2 else "deliveryMethod"
            for el in root.iter(_Q + "deliveryMethod", _Q + "sentVia"):
                el.tag = _Q + wrong
        if "invalid-confirmation" in self.breaks and envelope.kind.endswith("Confirmation"):
            header = next(root.iter(_Q + "confirmationHeader"))
            etree.SubElement(header, _Q + "mockBogusElement").text = "not in the schema"
        return b'<?xml version="1.0" encoding="UTF-8"?>\n' + etree.tostring(root, encoding="UTF-8")

    def _confirm(self, message, version, now, error: ProtocolError | None = None) -> bytes:
        conf = confirm.confirmation_for(message, now=now, error=error)
        version = self.version or version
        if ("wrong-confirmation-kind" in self.breaks
                and not isinstance(message, Request)):
            conf = RequestConfirmation(confirmation_header=conf.confirmation_header,
                                       error_data=conf.error_data)
        return self.encode(Envelope(version=version, message=conf))

    def _reply(self, role, header, message, version, now, error=None, **kw) -> Reply:
        body = self._confirm(message, version, now, error)
        self._log(role, header, "outgoing-response", body, now, http_status=200)
        return Reply(status=200, body=body, **kw)

    def _log(self, role, header, kind, body, now, **kw) -> None:
        requester, supplier, rid = _flow_ids(header)
        self.flows.add(role=role, requester=requester, supplier=supplier, id=rid, kind=kind,
                       body=body, at=now, **kw)

    # -- incoming ----------------------------------------------------------------------

    def receive(self, body: bytes, now: datetime, content_type: str = "application/xml") -> Reply:
        if content_type not in XML_TYPES:
            return Reply(status=415, body=f"Content-Type must be application/xml or text/xml, "
                         f"not {content_type!r}".encode(), content_type="text/plain")
        try:
            envelope = reader.parse(body)
        except ProtocolError as exc:
            return self._unreadable(body, exc, now)
        msg = envelope.message
        if isinstance(msg, Request):
            subtypes = msg.service_info.request_sub_type if msg.service_info else ()
            if RequestSubType.PATRON_REQUEST in subtypes:
                return self._patron_request(msg, envelope, body, now)
            return self._supplier_request(msg, envelope, body, now)
        if isinstance(msg, RequestingAgencyMessage):
            return self._supplier_action(msg, envelope, body, now)
        if isinstance(msg, SupplyingAgencyMessage):
            return self._requester_sam(msg, envelope, body, now)
        return Reply(status=400, body=f"{msg.KIND} is a confirmation: it travels in an HTTP "
                     "response, not a request".encode(), content_type="text/plain")

    def _unreadable(self, body: bytes, exc: ProtocolError, now: datetime) -> Reply:
        answer = confirm.error_confirmation_from_bytes(body, exc, now=now)
        if self.version is not None:
            answer = replace(answer, version=self.version)
        ok = (("ok-on-invalid-action" in self.breaks
               and exc.error_type is ErrorType.UNSUPPORTED_ACTION_TYPE)
              or ("ok-on-invalid-status" in self.breaks and "status" in exc.value)
              or ("ok-on-bad-xml" in self.breaks))
        if ok:
            header = replace(answer.message.confirmation_header,
                             message_status=MessageStatus.OK)
            answer = replace(answer, message=replace(answer.message, confirmation_header=header,
                                                     error_data=()))
        data = self.encode(answer)
        self.flows.add(role="unknown", requester="", supplier="", id="", kind="incoming-request",
                       body=body, at=now)
        self.flows.add(role="unknown", requester="", supplier="", id="",
                       kind="outgoing-response", body=data, at=now, http_status=200)
        return Reply(status=200, body=data)

    @staticmethod
    def _check_ids(header: Header) -> ProtocolError | None:
        if not header.requesting_agency_request_id:
            return ProtocolError(ErrorType.UNRECOGNISED_DATA_VALUE,
                                 "requestingAgencyRequestId cannot be empty")
        if not _value(header.requesting_agency_id):
            return ProtocolError(ErrorType.UNRECOGNISED_DATA_VALUE,
                                 "requestingAgencyId cannot be empty")
        if not _value(header.supplying_agency_id):
            return ProtocolError(ErrorType.UNRECOGNISED_DATA_VALUE,
                                 "supplyingAgencyId cannot be empty")
        return None

    @staticmethod
    def _skey(header: Header) -> tuple[str, ...]:
        return (_value(header.supplying_agency_id), _value(header.requesting_agency_id),
                header.requesting_agency_request_id)

    @staticmethod
    def _rkey(header: Header) -> tuple[str, ...]:
        return (_value(header.requesting_agency_id), header.requesting_agency_request_id)

    # -- supplier role -------------------------------------------------------------------

    def _supplier_request(self, msg: Request, envelope, body, now) -> Reply:
        header = msg.header
        self._log("supplier", header, "incoming-request", body, now)
        error = self._check_ids(header)
        if error:
            return self._reply("supplier", header, msg, envelope.version, now, error)
        key = self._skey(header)
        existing = self.suppliers.get(key)
        is_retry = (msg.service_info is not None
                    and msg.service_info.request_type is RequestType.RETRY)
        if (existing is not None and not (existing.done and is_retry)
                and "accept-duplicate" not in self.breaks):
            return self._reply("supplier", header, msg, envelope.version, now, ProtocolError(
                ErrorType.UNRECOGNISED_DATA_VALUE, "RequestingAgencyRequestId already exists"))
        plan = plan_for(msg)
        if plan.error:
            return self._reply("supplier", header, msg, envelope.version, now,
                               ProtocolError(ErrorType.UNRECOGNISED_DATA_VALUE, plan.error))
        if plan.http_status:
            text = f"MOCK {plan.scenario}".encode()
            self._log("supplier", header, "outgoing-response", text, now,
                      http_status=plan.http_status)
            return Reply(status=plan.http_status, body=text, content_type="text/plain")
        url = self.peer_url
        if msg.requesting_agency_info is not None:
            for address in msg.requesting_agency_info.address:
                if (isinstance(address, ElectronicAddress)
                        and _is_http(address.electronic_address_data)):
                    url = address.electronic_address_data
                    break
        pending: list = list(plan.statuses)
        if "empty-notification-status" in self.quirks and pending:
            pending.insert(1, "NOTIFY")
        if "unfilled-twice" in self.breaks and Status.UNFILLED in pending:
            pending.append(Status.UNFILLED)
        if "copy-as-loan" in self.breaks:
            pending = [Status.LOAN_COMPLETED if s is Status.COPY_COMPLETED else s
                       for s in pending]
        tx = SupplierTx(request=msg, version=self.version or envelope.version, plan=plan,
                        requester_url=url,
                        supplying_request_id=str(uuid.uuid4()), pending=pending,
                        overdue=plan.overdue, recalled=plan.recalled)
        self.suppliers[key] = tx
        sends = [Send(kind="status", role="supplier", key=key)] if pending else []
        if not pending:
            tx.done = True
        return self._reply("supplier", header, msg, envelope.version, now, sends=sends)

    def _supplier_action(self, msg: RequestingAgencyMessage, envelope, body, now) -> Reply:
        header = msg.header
        self._log("supplier", header, "incoming-request", body, now)
        error = self._check_ids(header)
        if error:
            return self._reply("supplier", header, msg, envelope.version, now, error)
        key = self._skey(header)
        tx = self.suppliers.get(key)
        if tx is None:
            if "ok-on-unknown-id" in self.breaks:
                return self._reply("supplier", header, msg, envelope.version, now)
            return self._reply("supplier", header, msg, envelope.version, now, ProtocolError(
                ErrorType.UNRECOGNISED_DATA_VALUE, "non-existing RequestingAgencyRequestId"))
        sends: list[Send] = []
        action = msg.action
        if action is Action.CANCEL:
            sends.append(Send(kind="cancel", role="supplier", key=key, factor=0.5))
        elif action is Action.RENEW:
            sends.append(Send(kind="renew", role="supplier", key=key, factor=0.33))
        elif action is Action.RECEIVED:
            if tx.overdue:
                tx.overdue = False
                sends.append(Send(kind="overdue", role="supplier", key=key, factor=0.33))
            if tx.recalled:
                tx.recalled = False
                sends.append(Send(kind="recalled", role="supplier", key=key, factor=0.33))
        elif action is Action.SHIPPED_RETURN:
            sends.append(Send(kind="completed", role="supplier", key=key))
        elif action is Action.STATUS_REQUEST:
            sends.append(Send(kind="status-response", role="supplier", key=key, factor=0.1))
        elif action is Action.LOST:
            sends.append(Send(kind="lost", role="supplier", key=key))
        elif action is Action.HOLD_RETURN and "refuse-hold-return" in self.breaks:
            return self._reply("supplier", header, msg, envelope.version, now, ProtocolError(
                ErrorType.UNSUPPORTED_ACTION_TYPE, "HoldReturn"))
        # HoldReturn (2021): the borrower cannot return yet; a confirmation is all it needs
        return self._reply("supplier", header, msg, envelope.version, now, sends=sends)

    def _sam(self, tx: SupplierTx, now: datetime, *, reason: ReasonForMessage, status: Status,
             answer: YesNo | None = None, due: datetime | None = None,
             delivery: DeliveryInfo | None = None, retry_info: RetryInfo | None = None,
             **info) -> SupplyingAgencyMessage:
        h = tx.request.header
        header = Header(
            supplying_agency_id=h.supplying_agency_id,
            requesting_agency_id=h.requesting_agency_id,
            timestamp=now, requesting_agency_request_id=h.requesting_agency_request_id,
            multiple_item_request_id=h.multiple_item_request_id,
            supplying_agency_request_id=tx.supplying_request_id,
        )
        tx.status = status
        if status in TERMINAL_STATUSES:
            tx.done = True
        return SupplyingAgencyMessage(
            header=header,
            message_info=MessageInfo(reason_for_message=reason, answer_yes_no=answer, **info),
            status_info=StatusInfo(status=status, last_change=now, due_date=due),
            retry_info=retry_info, delivery_info=delivery,
        )

    def _first_reason(self, tx: SupplierTx) -> ReasonForMessage:
        if tx.first or "request-response-twice" in self.breaks:
            tx.first = False
            return ReasonForMessage.REQUEST_RESPONSE
        return ReasonForMessage.STATUS_CHANGE

    def _delivery(self, tx: SupplierTx, now: datetime) -> DeliveryInfo:
        """Like illmock: sentVia from requestedDeliveryInfo (URL when none)."""
        method = "URL"
        best = None
        for info in tx.request.requested_delivery_info:
            order = info.sort_order if info.sort_order is not None else 1 << 62
            if best is not None and order >= best:
                continue
            address = info.address
            if address is None:
                continue
            if isinstance(address, ElectronicAddress):
                kind = address.electronic_address_type.value.lower()
                if kind in ("email", "ftp"):
                    method, best = ("Email" if kind == "email" else "FTP"), order
            elif getattr(address, "line1", None):
                method, best = "Mail", order
        copy = (tx.request.service_info is not None
                and tx.request.service_info.service_type is ServiceType.COPY)
        item, fmt = {
            "Email": ("123456789", "PDF"),
            "FTP": ("ftp://ftp.example.com/1234567889", "PDF"),
            "Mail": ("123456789", "PaperCopy" if copy else "Printed"),
            "URL": ("http://example.com/123456789", "PDF"),
        }[method]
        return DeliveryInfo(date_sent=now, item_id=(item,), delivery_method=Code(method),
                            item_format=Code(fmt))

    def _build_supplier(self, send: Send, now: datetime) -> SupplyingAgencyMessage | None:
        tx = self.suppliers.get(send.key)
        if tx is None:
            return None
        if send.kind == "status":
            if not tx.pending:
                return None
            status = tx.pending.pop(0)
            if status == "NOTIFY":
                return self._sam(tx, now, reason=ReasonForMessage.NOTIFICATION,
                                 status=tx.status or Status.REQUEST_RECEIVED,
                                 note="mock peer: a Notification (Alma sends <status/>)",
                                 due=tx.due)
            reason = self._first_reason(tx)
            info: dict = {}
            delivery = retry_info = None
            due = None
            if status is Status.RETRY_POSSIBLE:
                retry = tx.plan.reason_retry
                if "retry-without-reason" not in self.breaks:
                    info["reason_retry"] = Code(retry)
                if retry == "CostExceedsMaxCost":
                    info["reason_unfilled"] = Code(retry)  # as illmock does
                    info["offered_costs"] = (Costs(currency_code=Code("USD"),
                                                   monetary_value=Decimal(35)),)
                elif retry == "OnLoan":
                    info["retry_after"] = now
                elif retry == "LoanCondition" and tx.version is Version.V2021_2:
                    # 2021-2 has a code and a place for it; v1.2 only illmock's way below
                    if "retry-without-reason" not in self.breaks:
                        info["reason_retry"] = Code("MustMeetLoanCondition")
                    retry_info = RetryInfo(loan_condition=(Code("NoReproduction"),))
                elif retry == "LoanCondition":
                    delivery = DeliveryInfo(date_sent=now, loan_condition=(Code("NoReproduction"),))
            elif status is Status.LOANED:
                tx.loaned = True
                due = tx.due = now + timedelta(days=LOAN_DAYS)
                if "loaned-without-due-date" in self.breaks:
                    due = None
                delivery = self._delivery(tx, now)
            elif status is Status.COPY_COMPLETED:
                delivery = self._delivery(tx, now)
            elif status is Status.LOAN_COMPLETED and tx.plan.scenario == "COMPLETED":
                pass
            return self._sam(tx, now, reason=reason, status=status, due=due,
                             delivery=delivery, retry_info=retry_info, **info)
        if send.kind in ("overdue", "recalled"):
            status = Status.OVERDUE if send.kind == "overdue" else Status.RECALLED
            return self._sam(tx, now, reason=ReasonForMessage.STATUS_CHANGE, status=status,
                             due=tx.due)
        if send.kind == "renew":
            if tx.loaned and tx.status in (Status.LOANED, Status.OVERDUE, Status.RECALLED):
                tx.due = max(tx.due or now, now) + timedelta(days=LOAN_DAYS)
                due = None if "renew-without-due-date" in self.breaks else tx.due
                return self._sam(tx, now, reason=ReasonForMessage.RENEW_RESPONSE,
                                 status=Status.LOANED, answer=YesNo.Y, due=due)
            return self._sam(tx, now, reason=ReasonForMessage.RENEW_RESPONSE,
                             status=tx.status or Status.REQUEST_RECEIVED, answer=YesNo.N,
                             due=tx.due)
        if send.kind == "cancel":
            answer = None if "cancel-without-answer" in self.breaks else YesNo.N
            if tx.loaned or tx.done:
                return self._sam(tx, now, reason=ReasonForMessage.CANCEL_RESPONSE,
                                 status=tx.status or Status.LOANED, answer=answer, due=tx.due)
            tx.pending.clear()
            return self._sam(tx, now, reason=ReasonForMessage.CANCEL_RESPONSE,
                             status=Status.CANCELLED,
                             answer=None if answer is None else YesNo.Y)
        if send.kind == "completed":
            if not tx.loaned or tx.status is Status.LOAN_COMPLETED:
                return None
            return self._sam(tx, now, reason=ReasonForMessage.STATUS_CHANGE,
                             status=Status.LOAN_COMPLETED)
        if send.kind == "lost":  # 2021: Lost -> CompletedWithoutReturn
            if not tx.loaned or tx.status in TERMINAL_STATUSES:
                return None
            lost = (Status.LOAN_COMPLETED if "lost-as-loan-completed" in self.breaks
                    else Status.COMPLETED_WITHOUT_RETURN)
            return self._sam(tx, now, reason=ReasonForMessage.STATUS_CHANGE, status=lost,
                             note="mock peer: recorded as lost")
        if send.kind == "status-response":
            return self._sam(tx, now, reason=ReasonForMessage.STATUS_REQUEST_RESPONSE,
                             status=tx.status or Status.REQUEST_RECEIVED, due=tx.due)
        return None

    # -- requester role ------------------------------------------------------------------

    def _patron_request(self, msg: Request, envelope, body, now) -> Reply:
        header = msg.header
        rid = header.requesting_agency_request_id or str(uuid.uuid4())
        header = replace(
            header, requesting_agency_request_id=rid, timestamp=now,
            requesting_agency_id=(header.requesting_agency_id
                                  if _value(header.requesting_agency_id)
                                  else AgencyId.parse("MOCK:REQ")),
            supplying_agency_id=(header.supplying_agency_id
                                 if _value(header.supplying_agency_id)
                                 else AgencyId.parse("MOCK:SUP")),
        )
        self._log("requester", header, "incoming-request", body, now)
        service = msg.service_info
        note = service.note if service else None
        url = self.peer_url
        for info in msg.supplier_info:
            if _is_http(info.supplier_description):
                url = info.supplier_description
                break
        forwarded = replace(
            msg, header=header, supplier_info=(),
            service_info=replace(service, request_sub_type=()) if service else None,
        )
        key = self._rkey(header)
        if key in self.requesters and not self.requesters[key].done:
            return self._reply("requester", header, msg, envelope.version, now, ProtocolError(
                ErrorType.UNRECOGNISED_DATA_VALUE, "RequestingAgencyRequestId already exists"))
        self.requesters[key] = RequesterTx(
            request=forwarded, version=self.version or envelope.version, supplier_url=url,
            cancel=note == "#CANCEL#", renew=note == "#RENEW#", recall=note == "#RECALL#",
            retry_keep_id=bool(note and "#RETRYKEEPID#" in note),
        )
        reply_msg = replace(msg, header=header)
        return self._reply("requester", header, reply_msg, envelope.version, now,
                           headers={"X-Request-ID": rid},
                           sends=[Send(kind="request", role="requester", key=key, factor=0.0)])

    def _requester_sam(self, msg: SupplyingAgencyMessage, envelope, body, now) -> Reply:
        header = msg.header
        self._log("requester", header, "incoming-request", body, now)
        error = self._check_ids(header)
        if error:
            return self._reply("requester", header, msg, envelope.version, now, error)
        key = self._rkey(header)
        tx = self.requesters.get(key)
        if tx is None:
            if "ok-on-unknown-id" in self.breaks:
                return self._reply("requester", header, msg, envelope.version, now)
            return self._reply("requester", header, msg, envelope.version, now, ProtocolError(
                ErrorType.UNRECOGNISED_DATA_VALUE, "non-existing RequestingAgencyRequestId"))
        sends: list[Send] = []
        status = msg.status_info.status
        tx.last_sam = msg
        reason = msg.message_info.reason_for_message

        def act(action: Action, factor: float = 0.1) -> None:
            sends.append(Send(kind="action", role="requester", key=key, factor=factor,
                              action=action))

        if tx.cancel:
            tx.cancel = False
            act(Action.CANCEL)
        elif status is Status.LOANED and not tx.received:
            tx.received = True
            if "return-without-received" in self.breaks:
                act(Action.SHIPPED_RETURN)
            else:
                act(Action.RECEIVED)
        elif status is Status.OVERDUE and tx.renew:
            tx.renew = False
            act(Action.RENEW)
        elif status is Status.RECALLED:
            tx.recall = False
            act(Action.SHIPPED_RETURN, 1.0)
        elif status is Status.RETRY_POSSIBLE:
            sends.append(Send(kind="retry", role="requester", key=key, factor=0.1))
        elif status is Status.CANCELLED and "ignore-cancel-answer" in self.breaks:
            act(Action.RECEIVED)
        if status in (Status.COPY_COMPLETED, Status.LOAN_COMPLETED, Status.COMPLETED_WITHOUT_RETURN,
                      Status.CANCELLED) or (
                status is Status.UNFILLED and reason is not ReasonForMessage.NOTIFICATION):
            tx.done = True
        if status is not None:
            tx.status = status
        return self._reply("requester", header, msg, envelope.version, now, sends=sends)

    def _build_requester(self, send: Send, now: datetime):
        tx = self.requesters.get(send.key)
        if tx is None:
            return None
        if send.kind == "request":
            tx.request = replace(tx.request, header=replace(tx.request.header, timestamp=now))
            return tx.request
        if send.kind == "retry":
            sam = tx.last_sam
            old = tx.request
            prev = old.header.requesting_agency_request_id
            new_id = prev if tx.retry_keep_id else str(uuid.uuid4())
            service = old.service_info
            service = replace(service, request_type=RequestType.RETRY,
                              requesting_agency_previous_request_id=prev)
            if sam is not None and sam.retry_info is not None and sam.retry_info.loan_condition:
                service = replace(service, loan_condition=sam.retry_info.loan_condition)
            billing = old.billing_info
            if (sam is not None and sam.message_info.reason_retry is not None
                    and sam.message_info.reason_retry.value == "CostExceedsMaxCost"
                    and sam.message_info.offered_costs):
                billing = replace(billing or BillingInfo(),
                                  maximum_costs=sam.message_info.offered_costs[0])
            request = replace(old, header=replace(old.header, timestamp=now,
                                                  requesting_agency_request_id=new_id),
                              service_info=service, billing_info=billing)
            if new_id != prev:
                self.requesters.pop(send.key, None)
                new_key = self._rkey(request.header)
                self.requesters[new_key] = replace(tx, request=request, received=False,
                                                   status=None, last_sam=None, previous_id=prev,
                                                   done=False)
            else:
                tx.request = request
                tx.done = False
            return request
        if send.kind == "action":
            h = tx.request.header
            return RequestingAgencyMessage(
                header=replace(h, timestamp=now, supplying_agency_request_id=(
                    tx.last_sam.header.supplying_agency_request_id if tx.last_sam else None)),
                action=send.action)
        return None

    # -- outgoing ---------------------------------------------------------------------

    def build(self, send: Send, now: datetime) -> tuple[str, bytes] | None:
        """The URL and bytes for ``send`` now, or None when there is nothing to send."""
        if send.role == "supplier":
            message = self._build_supplier(send, now)
            tx = self.suppliers.get(send.key)
        else:
            message = self._build_requester(send, now)
            tx = None
            if message is not None:
                tx = self.requesters.get(self._rkey(message.header))
        if message is None or tx is None:
            return None
        url = tx.requester_url if send.role == "supplier" else tx.supplier_url
        body = self.encode(Envelope(version=tx.version, message=message))
        self._log(send.role, message.header, "outgoing-request", body, now, url=url)
        return url, body

    def answered(self, send: Send, sent: bytes, http_status: int | None, content_type: str,
                 body: bytes, now: datetime) -> list[Send]:
        """The peer answered ``sent`` (http_status None: no answer); what next?"""
        try:
            message = reader.parse(sent).message
        except ProtocolError:
            return []
        self._log(send.role, message.header, "incoming-response", body, now,
                  http_status=http_status)
        if http_status != 200 or content_type not in XML_TYPES:
            return []
        try:
            conf = reader.parse(body).message
        except ProtocolError:
            conf = None
        if send.role == "supplier":
            if conf is None or conf.KIND != "supplyingAgencyMessageConfirmation":
                return []
            tx = self.suppliers.get(send.key)
            if send.kind == "status" and tx is not None and tx.pending:
                return [Send(kind="status", role="supplier", key=send.key)]
            return []
        # requester: continue only on the confirmation echoing our action (as illmock)
        key = self._rkey(message.header)
        tx = self.requesters.get(key)
        if tx is None or conf is None:
            return []
        if send.kind == "request" and (
                conf.confirmation_header.message_status is not MessageStatus.OK):
            tx.done = True
            return []
        if send.kind != "action":
            return []
        if getattr(conf, "action", None) is not send.action:
            return []
        if send.action is Action.RECEIVED:
            if tx.renew:
                tx.renew = False
                return [Send(kind="action", role="requester", key=key, factor=0.1,
                             action=Action.RENEW)]
            if not tx.recall:
                return [Send(kind="action", role="requester", key=key,
                             action=Action.SHIPPED_RETURN)]
        if send.action is Action.RENEW:
            return [Send(kind="action", role="requester", key=key,
                         action=Action.SHIPPED_RETURN)]
        return []


_DATETIME_Z = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z")
