"""The conformance kit's machinery: its own ISO 18626 endpoint, the per-check
message log, sending to the peer, and the optional drivers that make a peer
do things (ill-node's staff API, or a mock peer's PatronRequest).

The kit plays the peer's partner library, one symbol (``--our-symbol``,
default ``ISIL:XX-CONFORMANCE``), reachable at ``--public-url``.  The peer
under test must know that symbol as a partner with that URL.
"""

from __future__ import annotations

import asyncio
import re
import secrets
import tomllib
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from node.protocol import confirm, reader, writer
from node.protocol.codes import (
    Action,
    Code,
    ErrorType,
    MessageStatus,
    ReasonForMessage,
    RequestSubType,
    ServiceType,
    Status,
    Version,
    YesNo,
)
from node.protocol.errors import ProtocolError
from node.protocol.messages import (
    AgencyId,
    BibliographicInfo,
    BibliographicItemId,
    BibliographicRecordId,
    DeliveryInfo,
    ElectronicAddress,
    Envelope,
    Header,
    MessageInfo,
    Request,
    RequestingAgencyInfo,
    RequestingAgencyMessage,
    ServiceInfo,
    StatusInfo,
    SupplierInfo,
    SupplyingAgencyMessage,
)
from node.protocol.safe_xml import parse_xml
from node.protocol.schema import validation_errors

XML_HEADERS = {"Content-Type": "application/xml; charset=utf-8"}
EXPECTED_CONFIRMATION = {
    "request": "requestConfirmation",
    "supplyingAgencyMessage": "supplyingAgencyMessageConfirmation",
    "requestingAgencyMessage": "requestingAgencyMessageConfirmation",
}


class CheckFailed(Exception):
    """A check failed.  The message is the headline; ``sent``, ``got`` and
    ``expected`` say what the kit sent, what came back, and what ISO 18626
    expects, for the person reading the report."""

    def __init__(self, problem: str, *, sent: str | None = None, got: str | None = None,
                 expected: str | None = None):
        super().__init__(problem)
        self.sent, self.got, self.expected = sent, got, expected


class PeerUnreachable(CheckFailed):
    """No connection to the peer at all (refused, no route, an unknown host): the check
    has no verdict on the peer's conformance, and is reported as an ERROR."""


class CheckSkipped(Exception):
    pass


def utcnow() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


# -- configuration -------------------------------------------------------------------------


HINT_FIELDS = {"title", "author", "isbn", "issn", "oclc", "supplier_unique_record_id", "note",
               "service_type", "scenario", "patron_id", "pickup_location", "barcode"}


def load_hints(path: Path) -> tuple[dict[str, dict[str, Any]], Version | None]:
    """``--scenario-hints FILE``: a TOML table per check (see docs/conformance.md), and
    the peer's ``iso18626_version`` if the file gives one (the ``--version`` default)."""
    with path.open("rb") as fh:
        data = tomllib.load(fh)
    version = None
    if "iso18626_version" in data:
        try:
            version = Version(str(data.pop("iso18626_version")))
        except ValueError:
            raise ValueError(f"{path}: iso18626_version must be one of "
                             f"{', '.join(v.value for v in Version)}") from None
    hints: dict[str, dict[str, Any]] = {}
    for name, table in data.items():
        if not isinstance(table, dict):
            raise ValueError(f"{path}: [{name}] must be a table (the only top-level key is "
                             "iso18626_version)")
        unknown = set(table) - HINT_FIELDS
        if unknown:
            raise ValueError(f"{path}: [{name}] has unknown key(s) {', '.join(sorted(unknown))}; "
                             f"known: {', '.join(sorted(HINT_FIELDS))}")
        hints[name] = dict(table)
    return hints, version


@dataclass
class KitConfig:
    peer_url: str
    peer_symbol: str
    our_symbol: str = "ISIL:XX-CONFORMANCE"
    public_url: str = ""
    peer_api: str | None = None
    peer_kind: str = "auto"  # auto | mock | ill-node | other
    hints: dict[str, dict[str, Any]] | None = None  # None: no hints file (MOCK tokens only)
    timeout: float = 15.0  # waiting for one message from the peer
    settle: float = 1.0  # after a terminal status: time for stray messages to show up
    version: Version = Version.V1_2  # what the kit sends, and what it expects back
    api_user: str = "conformance"


# -- the per-check log ------------------------------------------------------------------------


@dataclass
class LogEntry:
    at: datetime
    direction: str  # "out", "in", "note"
    title: str
    body: str = ""


@dataclass
class CheckLog:
    name: str
    entries: list[LogEntry] = field(default_factory=list)

    def add(self, direction: str, title: str, body: bytes | str = b"") -> None:
        text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
        self.entries.append(LogEntry(at=datetime.now(UTC), direction=direction,
                                     title=title, body=text))

    def note(self, text: str) -> None:
        self.add("note", text)

    def render(self) -> str:
        arrows = {"out": ">>>", "in": "<<<", "note": "---"}
        lines = [f"# check {self.name}"]
        for e in self.entries:
            lines.append(f"{e.at.isoformat(timespec='milliseconds')} {arrows[e.direction]} "
                         f"{e.title}")
            if e.body:
                lines.append(e.body.rstrip())
        return "\n".join(lines) + "\n"


# -- one HTTP exchange with the peer --------------------------------------------------------------


@dataclass
class Exchange:
    http_status: int | None
    content_type: str
    body: bytes
    envelope: Envelope | None = None
    # about the confirmation itself: (what is wrong, the evidence or "")
    problems: list[tuple[str, str]] = field(default_factory=list)
    error: str | None = None  # transport failure

    @property
    def message(self):
        return self.envelope.message if self.envelope is not None else None

    @property
    def status(self) -> MessageStatus | None:
        msg = self.message
        header = getattr(msg, "confirmation_header", None)
        return header.message_status if header is not None else None

    @property
    def error_types(self) -> list[str]:
        return [e.error_type.value for e in getattr(self.message, "error_data", ())]

    def summary(self) -> str:
        if self.error:
            return self.error
        text = f"HTTP {self.http_status}"
        if self.message is not None:
            text += f" {self.message.KIND} {self.status.value if self.status else '?'}"
            errors = getattr(self.message, "error_data", ())
            if errors:
                text += " " + "; ".join(
                    f"{e.error_type.value}: {e.error_value or ''}" for e in errors)
        return text


# Elements one edition renamed, moved or lacks: the usual reason a peer's message fails
# the schema of the version it was configured for, said the way a librarian can act on.
_EDITION_ADVICE = {
    Version.V2021_2: {
        "sentVia": "2021-2 renamed deliveryInfo/sentVia to deliveryMethod",
        "deliveredFormat": "2021-2 renamed deliveryInfo/deliveredFormat to itemFormat",
        "preferredFormat": "2021-2 renamed serviceInfo/preferredFormat to itemFormat",
        "anyEdition": "2021-2 replaced serviceInfo/anyEdition with preferredEdition",
        "offeredCosts": "2021-2 moved offeredCosts, retryAfter and retryBefore from "
                        "messageInfo into retryInfo",
        "retryAfter": "2021-2 moved offeredCosts, retryAfter and retryBefore from "
                      "messageInfo into retryInfo",
        "retryBefore": "2021-2 moved offeredCosts, retryAfter and retryBefore from "
                       "messageInfo into retryInfo",
        "multipleItemRequestId": "2021-2 has no multipleItemRequestId in this header",
        "bibliographicItemIdentifier": "2021-2 puts bibliographicItemIdentifierCode before "
                                       "bibliographicItemIdentifier",
    },
    Version.V1_2: {
        "deliveryMethod": "deliveryMethod is 2021-2's name; v1.2 says sentVia",
        "itemFormat": "itemFormat is 2021-2's name; v1.2 says preferredFormat (request) "
                      "or deliveredFormat (deliveryInfo)",
        "retryInfo": "retryInfo is 2021-2; v1.2 puts offeredCosts, retryAfter and "
                     "retryBefore in messageInfo",
        "shippingInfo": "shippingInfo is 2021-2 only",
        "preferredEdition": "preferredEdition is 2021-2; v1.2 says anyEdition",
        "consortialId": "consortialId is 2021-2 only",
        "bibliographicItemIdentifierCode": "v1.2 puts bibliographicItemIdentifier before "
                                           "bibliographicItemIdentifierCode",
    },
}


def version_problems(root, envelope: Envelope, version: Version, what: str
                     ) -> list[tuple[str, str]]:
    """Is ``root`` (read as ``envelope``) valid ISO 18626 of the version the kit speaks?

    Each problem is (what is wrong, the evidence).  The reader is lenient and
    guesses the version from the element shapes, so a 2021-2 peer sending
    v1.2's ``sentVia`` would otherwise pass as v1.2: the kit validates against
    ``version``, the one the peer is configured for.
    """
    found = []
    declared = envelope.declared
    try:
        declared_version = Version.parse(declared) if declared else None
    except ValueError:
        declared_version = None
    if declared_version is not version:
        found.append((f"{what} is not in ISO 18626 {version.value}, the version the kit speaks",
                      f"version={declared!r} on ISO18626Message (check which version the "
                      f"peer is configured to use with the kit's symbol; it must be "
                      f"{version.value}, or run the kit with that version)"))
    errors = validation_errors(root, version)
    if errors:
        text = errors[0] + (f" (and {len(errors) - 1} more)" if len(errors) > 1 else "")
        advice = sorted({hint for name, hint in _EDITION_ADVICE[version].items()
                         if any(f"'{name}'" in e for e in errors)})
        if advice:
            text += " [" + "; ".join(advice) + "]"
        found.append((f"{what} is not valid ISO 18626 {version.value}", text))
    return found


def check_confirmation(ex: Exchange, sent_kind: str | None, rari: str | None,
                       version: Version | None, action: Action | None = None) -> None:
    """Fill ``ex.envelope`` and ``ex.problems``: is this a readable, valid confirmation?

    ``version`` None: valid in the version it declares (the answer to input too broken
    to say which version it was in).
    """
    if ex.http_status is None or not 200 <= ex.http_status < 300:
        return
    try:
        root = parse_xml(ex.body)
        ex.envelope = reader.parse_element(root)
    except ProtocolError as exc:
        ex.problems.append(("the confirmation cannot be read", exc.value))
        return
    msg = ex.envelope.message
    wanted = EXPECTED_CONFIRMATION.get(sent_kind or "")
    if wanted and msg.KIND != wanted:
        ex.problems.append((f"a {sent_kind} must be answered with a {wanted}, "
                            f"not a {msg.KIND}", ""))
    if not msg.KIND.endswith("Confirmation"):
        ex.problems.append((f"the answer is a {msg.KIND}, not a confirmation", ""))
        return
    ex.problems.extend(version_problems(root, ex.envelope, version or ex.envelope.version,
                                        "the confirmation"))
    header = msg.confirmation_header
    if rari and header.requesting_agency_request_id not in (None, "", rari):
        ex.problems.append(("the confirmation echoes another requestingAgencyRequestId",
                            f"{header.requesting_agency_request_id!r}, not {rari!r}"))
    if action is not None and getattr(msg, "action", None) not in (None, action):
        ex.problems.append(("the confirmation echoes another action",
                            f"{msg.action.value}, not {action.value}"))
    if header.message_status is MessageStatus.ERROR and not msg.error_data:
        ex.problems.append(("an ERROR confirmation without errorData", ""))


# -- the kit's own endpoint -------------------------------------------------------------------------


@dataclass
class Arrival:
    kind: str
    rari: str
    envelope: Envelope
    raw: bytes
    consumed: bool = False


class KitServer:
    """Receives the peer's messages, confirms them, and hands them to the running check."""

    def __init__(self, config: KitConfig):
        self.config = config
        self.arrivals: list[Arrival] = []
        self._event = asyncio.Event()
        self.log: CheckLog | None = None
        # about messages the peer sent us, for the running check: (what is wrong, evidence)
        self.problems: list[tuple[str, str]] = []
        self.own_requests: set[str] = set()  # rari we sent as requester
        self.lent: set[str] = set()  # rari of requests the peer sent us
        self.runner: web.AppRunner | None = None

    def begin(self, log: CheckLog) -> None:
        self.log = log
        self.problems = []

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        now = utcnow()
        log = self.log
        if log is not None:
            log.add("in", f"POST {request.path} from the peer", body)
        try:
            root = parse_xml(body)
            envelope = reader.parse_element(root)
        except ProtocolError as exc:
            self.problems.append(("the peer sent a message the kit cannot read", exc.value))
            answer = writer.serialise(replace(
                confirm.error_confirmation_from_bytes(body, exc, now=now),
                version=self.config.version))
            if log is not None:
                log.add("out", "our answer: ERROR confirmation", answer)
            return web.Response(body=answer, content_type="application/xml", charset="utf-8")
        msg = envelope.message
        self.problems.extend(version_problems(root, envelope, self.config.version,
                                              f"the peer's {msg.KIND}"))
        error = None
        rari = getattr(getattr(msg, "header", None), "requesting_agency_request_id", "")
        if isinstance(msg, SupplyingAgencyMessage):
            if rari not in self.own_requests:
                error = ProtocolError(ErrorType.UNRECOGNISED_DATA_VALUE,
                                      f"requestingAgencyRequestId {rari!r} is not ours")
        elif isinstance(msg, RequestingAgencyMessage):
            if rari not in self.lent:
                error = ProtocolError(ErrorType.UNRECOGNISED_DATA_VALUE,
                                      f"no request {rari!r} from you")
        elif isinstance(msg, Request):
            if rari in self.lent:
                error = ProtocolError(ErrorType.UNRECOGNISED_DATA_VALUE,
                                      "requestingAgencyRequestId already exists")
            else:
                self.lent.add(rari)
        else:
            self.problems.append((f"the peer POSTed a {msg.KIND}",
                                  "confirmations travel in the HTTP response to the message "
                                  "they confirm, not in a request of their own"))
            return web.Response(status=400, text="not a business message")
        conf = confirm.confirmation_for(msg, now=now, error=error)
        answer = writer.serialise(Envelope(version=self.config.version, message=conf))
        if log is not None:
            log.add("out", f"our answer: {conf.KIND} {'ERROR' if error else 'OK'}", answer)
        if error is None:
            self.arrivals.append(Arrival(kind=msg.KIND, rari=rari, envelope=envelope, raw=body))
            self._event.set()
        return web.Response(body=answer, content_type="application/xml", charset="utf-8")

    async def wait(self, kind: str, rari: str | None, timeout: float,
                   match=None) -> Arrival | None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            for a in self.arrivals:
                if (not a.consumed and a.kind == kind and (rari is None or a.rari == rari)
                        and (match is None or match(a))):
                    a.consumed = True
                    return a
            remaining = deadline - loop.time()
            if remaining <= 0:
                return None
            self._event.clear()
            try:
                await asyncio.wait_for(self._event.wait(), remaining)
            except TimeoutError:
                pass

    async def start(self, host: str, port: int) -> None:
        app = web.Application(client_max_size=2 * 1024 * 1024)
        app.router.add_post("/iso18626", self.handle)
        app.router.add_get("/healthz", _healthz)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        await web.TCPSite(self.runner, host, port).start()

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None


async def _healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


# -- drivers: making the peer act ---------------------------------------------------------------


class NodeApiDriver:
    """ill-node's staff API (``--peer-api``): staff actions the kit cannot send over ISO 18626."""

    def __init__(self, base: str, http: aiohttp.ClientSession, user: str = "conformance"):
        self.base = base.rstrip("/")
        self.http = http
        self.user = user

    async def _call(self, log: CheckLog, method: str, path: str, json: Any = None):
        log.add("out", f"peer API {method} {path}", "" if json is None else repr(json))
        async with self.http.request(method, self.base + path, json=json,
                                     headers={"X-Staff-User": self.user}) as resp:
            data = await resp.json(content_type=None)
            log.add("in", f"peer API HTTP {resp.status}", repr(data)[:2000])
            return resp.status, data

    async def find(self, log: CheckLog, role: str, rari: str, timeout: float = 10.0) -> str:
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            status, data = await self._call(log, "GET", f"/api/{role}/requests?q={rari}")
            if status == 200 and data.get("requests"):
                return data["requests"][0]["id"]
            if asyncio.get_running_loop().time() > deadline:
                raise CheckFailed(f"the peer's API shows no {role} request {rari!r}")
            await asyncio.sleep(0.1)

    async def act(self, log: CheckLog, role: str, rari: str, action: dict) -> bool:
        public_id = await self.find(log, role, rari)
        status, _data = await self._call(log, "POST", f"/api/{role}/requests/{public_id}/actions",
                                        action)
        return status == 200

    async def create_borrowing(self, log: CheckLog, form: dict) -> dict:
        status, data = await self._call(log, "POST", "/api/borrowing/requests", form)
        if status != 201:
            raise CheckFailed(f"the peer's API refused the borrowing request: {data}")
        return data


# -- the context each check runs in ---------------------------------------------------------------


class Ctx:
    def __init__(self, config: KitConfig, kit: KitServer, http: aiohttp.ClientSession,
                 log: CheckLog, driver: NodeApiDriver | None, peer_kind: str):
        self.config = config
        self.kit = kit
        self.http = http
        self.log = log
        self.driver = driver
        self.peer_kind = peer_kind  # mock | ill-node | other
        self.notes: list[str] = []  # shown after PASS
        self.warnings: list[str] = []
        self.last_sent: str | None = None  # for the report: what the peer was answering

    # -- ids and messages ----------------------------------------------------------

    @property
    def us(self) -> AgencyId:
        return AgencyId.parse(self.config.our_symbol)

    @property
    def peer(self) -> AgencyId:
        return AgencyId.parse(self.config.peer_symbol)

    def new_id(self, check: str) -> str:
        return f"conf-{check[:20]}-{secrets.token_hex(4)}"

    def hints_for(self, check: str, *, required: bool) -> dict[str, Any]:
        """The request fields for ``check``; skip when the peer needs hints and has none."""
        if self.config.hints is None:
            if required and self.peer_kind != "mock":
                raise CheckSkipped(
                    f"needs --scenario-hints with a [{check}] table to drive a "
                    f"{self.peer_kind} peer (MOCK: note tokens only script mock peers)")
            return {}
        if check in self.config.hints:
            return dict(self.config.hints[check])
        if required and self.peer_kind != "mock":  # a mock peer goes by the MOCK: token
            raise CheckSkipped(f"no [{check}] table in --scenario-hints")
        return dict(self.config.hints.get("default", {}))

    def header(self, rari: str, **extra) -> Header:
        return Header(supplying_agency_id=self.peer, requesting_agency_id=self.us,
                      timestamp=utcnow(), requesting_agency_request_id=rari, **extra)

    def request(self, check: str, rari: str, *, scenario: str, hints: dict[str, Any],
                service_type: ServiceType = ServiceType.LOAN, **service) -> Request:
        """A Request scripted for a mock peer (MOCK: token) and filled from the hints."""
        scenario = hints.get("scenario", scenario)
        items = []
        if hints.get("isbn"):
            items.append(BibliographicItemId(identifier=str(hints["isbn"]), code=Code("ISBN")))
        if hints.get("issn"):
            items.append(BibliographicItemId(identifier=str(hints["issn"]), code=Code("ISSN")))
        records = ()
        if hints.get("oclc"):
            records = (BibliographicRecordId(identifier=str(hints["oclc"]), code=Code("OCLC")),)
        token = f"MOCK:{self.peer.value}:{scenario}" if scenario else ""
        note = " ".join(p for p in (token, hints.get("note"), f"conformance check {check}") if p)
        if "service_type" in hints:
            service_type = ServiceType.lookup(str(hints["service_type"]))
        return Request(
            header=self.header(rari),
            bibliographic_info=BibliographicInfo(
                title=hints.get("title", f"Conformance check {check}"),
                author=hints.get("author"),
                supplier_unique_record_id=hints.get("supplier_unique_record_id"),
                bibliographic_item_id=tuple(items), bibliographic_record_id=records),
            service_info=ServiceInfo(service_type=service_type, note=note, **service),
            requesting_agency_info=RequestingAgencyInfo(
                name="ill-node conformance kit",
                address=(ElectronicAddress(electronic_address_type=Code("URL"),
                                           electronic_address_data=self.config.public_url),)),
        )

    def action(self, rari: str, action: Action, note: str | None = None) -> RequestingAgencyMessage:
        return RequestingAgencyMessage(header=self.header(rari), action=action, note=note)

    # -- talking to the peer --------------------------------------------------------------

    async def post(self, body: bytes, title: str, *, content_type: str | None = None,
                   broken: bool = False) -> Exchange:
        """POST ``body`` to the peer; ``broken``: invalid on purpose (said so in the log)."""
        headers = {"Content-Type": content_type} if content_type else XML_HEADERS
        self.last_sent = title
        self.log.add("out", f"POST {self.config.peer_url}: {title}"
                     + (" (invalid on purpose)" if broken else ""), body)
        try:
            async with self.http.post(self.config.peer_url, data=body, headers=headers,
                                      timeout=aiohttp.ClientTimeout(total=self.config.timeout)
                                      ) as resp:
                ex = Exchange(http_status=resp.status, content_type=resp.content_type,
                              body=await resp.read())
        except aiohttp.ClientConnectorError as exc:  # nothing was sent
            problem = f"cannot connect to the peer at {self.config.peer_url}: {exc}"
            self.log.add("in", problem)
            raise PeerUnreachable(problem, sent=title, got="no connection",
                                  expected="the peer listening at its ISO 18626 URL") from None
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            ex = Exchange(http_status=None, content_type="", body=b"",
                          error=f"cannot reach the peer at {self.config.peer_url}: "
                          f"{type(exc).__name__}: {exc}")
            self.log.add("in", ex.error)
            return ex
        self.log.add("in", f"HTTP {ex.http_status} {ex.content_type}", ex.body)
        return ex

    async def send(self, message, *, expect: MessageStatus | None = MessageStatus.OK,
                   title: str | None = None, raw: bytes | None = None,
                   standard: str | None = None) -> Exchange:
        """Send a business message; the confirmation must be readable and valid.

        ``expect`` OK/ERROR fails the check if the status differs; None takes either.
        ``raw`` sends those bytes instead of the serialised ``message`` (broken input).
        ``standard`` is what ISO 18626 expects, for the report when ``expect`` is not met.
        """
        version = self.config.version
        envelope = Envelope(version=version, message=message)
        body = raw if raw is not None else writer.serialise(envelope, validate=True)
        if isinstance(message, Request):
            self.kit.own_requests.add(message.header.requesting_agency_request_id)
        label = title or describe_out(message)
        ex = await self.post(body, label, broken=raw is not None)
        wanted = EXPECTED_CONFIRMATION[message.KIND]
        if ex.error:
            raise CheckFailed(ex.error, sent=label, got="no answer",
                              expected=f"an HTTP 200 response holding a {wanted}")
        if not 200 <= ex.http_status < 300:
            raise CheckFailed(
                f"the peer answered HTTP {ex.http_status}, not a confirmation", sent=label,
                got=f"HTTP {ex.http_status} "
                f"{ex.body[:200].decode('utf-8', 'replace').strip()!r}",
                expected=f"HTTP 200 with a {wanted} (OK, or ERROR with errorData); ISO 18626 "
                "answers every message with a confirmation in the HTTP response (5.2)")
        check_confirmation(ex, message.KIND, message.header.requesting_agency_request_id,
                           version, getattr(message, "action", None))
        if ex.problems:
            problem, evidence = ex.problems[0]
            got = ex.summary() if ex.envelope is not None else (
                f"HTTP {ex.http_status} with a body that is not a readable ISO 18626 message "
                "(in full in the log)")
            raise CheckFailed(problem, sent=label,
                              got=got + (f": {evidence}" if evidence else ""),
                              expected=f"a {wanted} valid against the ISO 18626 "
                              f"{version.value} schema, echoing the request id"
                              + (" and action" if isinstance(message, RequestingAgencyMessage)
                                 else ""))
        if expect is not None and ex.status is not expect:
            raise CheckFailed(
                f"the peer answered messageStatus "
                f"{ex.status.value if ex.status else 'nothing'}, not {expect.value}",
                sent=label, got=ex.summary(),
                expected=standard or (f"{wanted} with messageStatus {expect.value}"))
        return ex

    async def next_sam(self, rari: str, *, what: str = "a supplyingAgencyMessage",
                       timeout: float | None = None) -> SupplyingAgencyMessage:
        arrival = await self.kit.wait("supplyingAgencyMessage", rari,
                                      timeout or self.config.timeout)
        self.raise_peer_problems()
        if arrival is None:
            self.waited_in_vain(what, rari, timeout)
        return arrival.envelope.message

    def waited_in_vain(self, what: str, rari: str, timeout: float | None) -> None:
        seconds = timeout or self.config.timeout
        raise CheckFailed(f"waited {seconds:g} s for {what} about {rari}; none came",
                          sent=self.last_sent, got=f"nothing within {seconds:g} s",
                          expected=f"{what} from the peer, POSTed to the kit at "
                          f"{self.config.public_url} (is {self.config.our_symbol} a partner "
                          "with that URL?)")

    async def stray(self, kind: str, rari: str, timeout: float | None = None):
        """A further message within the settle time (None: none, as it should be)."""
        arrival = await self.kit.wait(kind, rari,
                                      self.config.settle if timeout is None else timeout)
        self.raise_peer_problems()
        return arrival.envelope.message if arrival is not None else None

    async def next_ram(self, rari: str, *, what: str, timeout: float | None = None
                       ) -> RequestingAgencyMessage:
        arrival = await self.kit.wait("requestingAgencyMessage", rari,
                                      timeout or self.config.timeout)
        self.raise_peer_problems()
        if arrival is None:
            self.waited_in_vain(what, rari, timeout)
        return arrival.envelope.message

    def raise_peer_problems(self) -> None:
        if self.kit.problems:
            problem, evidence = self.kit.problems[0]
            raise CheckFailed(problem, sent=self.last_sent, got=evidence,
                              expected=f"every message valid ISO 18626 "
                              f"{self.config.version.value} (the message is in the log)")

    # -- driving the peer ---------------------------------------------------------------------

    async def nudge_lending(self, rari: str, action: dict) -> bool:
        """Ask the peer's staff API to act on its lending request (no-op without a driver)."""
        if self.driver is None:
            return False
        ok = await self.driver.act(self.log, "lending", rari, action)
        if not ok:
            self.log.note(f"the peer's API refused {action}")
        return ok

    async def nudge_borrowing(self, rari: str, *actions: dict) -> bool:
        """Try the borrowing staff actions in order until one is accepted."""
        if self.driver is None:
            return False
        for action in actions:
            if await self.driver.act(self.log, "borrowing", rari, action):
                return True
        return False

    async def make_peer_request(self, check: str, note: str | None = None) -> Request:
        """Make the peer send US a request (kit as supplier); skip if we have no way to."""
        nonce = secrets.token_hex(4)
        title = f"Conformance {check} {nonce}"
        hints = self.hints_for(check, required=False) if self.config.hints is not None else {}
        if self.peer_kind == "mock":
            rari = self.new_id(check)
            patron = Request(
                header=Header(supplying_agency_id=self.us, requesting_agency_id=self.peer,
                              timestamp=utcnow(), requesting_agency_request_id=rari),
                bibliographic_info=BibliographicInfo(title=title),
                service_info=ServiceInfo(service_type=ServiceType.LOAN, note=note,
                                         request_sub_type=(RequestSubType.PATRON_REQUEST,)),
                supplier_info=(SupplierInfo(supplier_code=self.us,
                                            supplier_description=self.config.public_url),),
            )
            await self.send(patron, title="PatronRequest (the mock peer forwards it to us)")
        elif self.driver is not None:
            await self.driver.create_borrowing(self.log, {
                "patron_id": hints.get("patron_id", "conformance"),
                "pickup_location": hints.get("pickup_location", "MAIN"),
                "title": title, "partners": [self.config.our_symbol],
            })
        else:
            raise CheckSkipped("needs the peer to send us a request: give --peer-api (ill-node's "
                               "staff API) or test a mock peer (PatronRequest)")
        arrival = await self.kit.wait(
            "request", None, self.config.timeout,
            match=lambda a: (a.envelope.message.bibliographic_info.title or "") == title)
        self.raise_peer_problems()
        if arrival is None:
            raise CheckFailed(f"waited {self.config.timeout:g} s for the peer's request "
                              f"{title!r}; none came (is {self.config.our_symbol} a partner "
                              f"with url {self.config.public_url}?)")
        return arrival.envelope.message

    def sam_for(self, request: Request, *, reason: ReasonForMessage, status: Status,
                answer: YesNo | None = None, due: datetime | None = None,
                delivery: DeliveryInfo | None = None, note: str | None = None
                ) -> SupplyingAgencyMessage:
        """Our (the kit as supplier) message about the peer's request."""
        h = request.header
        return SupplyingAgencyMessage(
            header=Header(supplying_agency_id=h.supplying_agency_id or self.us,
                          requesting_agency_id=h.requesting_agency_id, timestamp=utcnow(),
                          requesting_agency_request_id=h.requesting_agency_request_id,
                          supplying_agency_request_id="kit-" + h.requesting_agency_request_id),
            message_info=MessageInfo(reason_for_message=reason, answer_yes_no=answer, note=note),
            status_info=StatusInfo(status=status, last_change=utcnow(), due_date=due),
            delivery_info=delivery,
        )


def describe_out(message) -> str:
    if isinstance(message, Request):
        service = message.service_info
        kind = " ".join(v.value for v in (service.request_type, service.service_type) if v
                        ) if service else ""
        return (f"request {message.header.requesting_agency_request_id} ({kind}, "
                f"{message.bibliographic_info.title!r})")
    if isinstance(message, RequestingAgencyMessage):
        return f"requestingAgencyMessage {message.action.value} " \
               f"{message.header.requesting_agency_request_id}"
    if isinstance(message, SupplyingAgencyMessage):
        st = message.status_info.status
        return (f"supplyingAgencyMessage {message.message_info.reason_for_message.value}/"
                f"{st.value if st else '-'} {message.header.requesting_agency_request_id}")
    return message.KIND


def replace_element_text(body: bytes, local: str, new: str) -> bytes:
    """``<local>old</local>`` -> ``<local>new</local>`` in serialised bytes (broken input)."""
    pattern = re.compile(rb"(<(?:\w+:)?" + local.encode() + rb">)[^<]*(</)")
    out, n = pattern.subn(lambda m: m.group(1) + new.encode() + m.group(2), body, count=1)
    if not n:
        raise ValueError(f"no <{local}> in the message")
    return out


def due_in(days: int) -> datetime:
    return datetime.combine(date.today() + timedelta(days=days), datetime.min.time(),
                            tzinfo=UTC).replace(hour=23, minute=59, second=59)


__all__ = ["CheckFailed", "CheckSkipped", "Ctx", "KitConfig", "KitServer", "NodeApiDriver",
           "load_hints", "replace", "replace_element_text"]
