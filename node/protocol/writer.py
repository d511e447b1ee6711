""":class:`~node.protocol.messages.Envelope` -> ISO 18626 bytes, strictly.

The output is valid against the schema of ``envelope.version``: root
``<ISO18626Message xmlns=NS xmlns:ill=NS ill:version="...">``, prefixed
``ill:scheme`` attributes, UTF-8 with an XML declaration, timestamps as
``YYYY-MM-DDThh:mm:ssZ`` in UTC (microseconds dropped), decimals written
plainly, elements in schema order.  The markup is written as text from
per-version tables (wire name, model field, encoder), compiled once at
import: byte for byte what lxml writes for the same tree (``&``, ``<``, ``>``
and CR escaped in text; text holding a character XML 1.0 cannot carry is a
``ValueError``), at a quarter of the cost of building the tree first.

What each version cannot carry is dropped, silently:

v1.2 drops the 2021-only fields
    ``Header.consortial_id``; ``BibliographicInfo.author_id``;
    ``PublicationInfo.publisher_id``; ``ServiceInfo.preferred_edition`` and
    ``.loan_condition``; ``RequestedDeliveryInfo.delivery_method`` and
    ``.courier_name``; ``SupplyingAgencyMessage.retry_info`` (the offered
    alternatives; ``MessageInfo.offered_costs/retry_after/retry_before`` are
    written in ``messageInfo``) and ``.shipping_info``; ``DeliveryInfo.url``,
    ``.address``, ``.service_type`` and ``.payment_method``.  Tuples that v1.2
    allows only once are written as their first value (``volume``,
    ``itemId``, ``deliveryInfo/loanCondition``, ``deliveryCosts``,
    ``offeredCosts``, ``errorData``); ``requestSubType`` keeps its first three.
    A confirmation echoing a 2021-only action drops the echo.  A business
    message needing a 2021-only value (action HoldReturn/Lost, status
    HoldReturn/ReleaseHoldReturn) or missing ``supplyingAgencyId`` cannot be
    written as v1.2: ``ValueError``.

2021-2 drops what that version removed
    ``multipleItemRequestId`` from SAM, RAM and confirmation headers;
    ``supplyingAgencyRequestId`` from the request header; ``consortialId`` and
    ``requestingAgencyAuthentication`` from the SAM header; the scheme of
    ``physicalAddress/region`` (a plain string now).  A request without
    ``serviceInfo`` cannot be written as 2021-2: ``ValueError``.

``StatusInfo.status`` None (read from an Alma Notification) cannot be written
in either version: ``ValueError``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from operator import attrgetter
from typing import Any

from lxml import etree

from . import messages as m
from .codes import NAMESPACE, Action, Status, Version

__all__ = ["format_datetime", "serialise", "to_tree"]

_ROOT = "ISO18626Message"
# The root declares the namespace as the default (for elements) and as ``ill``
# (for the ``ill:version`` and ``ill:scheme`` attributes).
_START = ('<?xml version="1.0" encoding="UTF-8"?>\n'
          f'<{_ROOT} xmlns="{NAMESPACE}" xmlns:ill="{NAMESPACE}" ill:version="{{}}">')
_END = f"</{_ROOT}>"

V12, V21 = Version.V1_2, Version.V2021_2
BOTH = (V12, V21)
_V21_ONLY_VALUES = frozenset({Action.HOLD_RETURN, Action.LOST, Status.HOLD_RETURN,
                              Status.RELEASE_HOLD_RETURN})


# -- text ------------------------------------------------------------------------

# Characters XML 1.0 cannot carry, even escaped.
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")
_SPECIAL = re.compile(f"[&<>\r{_NOT_XML.pattern[1:-1]}]")
_SPECIAL_IN_ATTRIBUTE = re.compile(f"[&<>\"\t\n\r{_NOT_XML.pattern[1:-1]}]")
_TEXT_ESCAPES = str.maketrans({"&": "&amp;", "<": "&lt;", ">": "&gt;", "\r": "&#13;"})
_ATTRIBUTE_ESCAPES = str.maketrans({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;",
                                    "\t": "&#9;", "\n": "&#10;", "\r": "&#13;"})


def _escaped(text: str, special: re.Pattern, escapes: dict) -> str:
    if special.search(text) is None:  # nearly always: no copy
        return text
    bad = _NOT_XML.search(text)
    if bad is not None:
        raise ValueError(f"{text[:60]!r} holds {bad.group()!r}, which XML cannot carry")
    return text.translate(escapes)


def _escape(text: str) -> str:
    return _escaped(text, _SPECIAL, _TEXT_ESCAPES)


def _escape_attribute(text: str) -> str:
    return _escaped(text, _SPECIAL_IN_ATTRIBUTE, _ATTRIBUTE_ESCAPES)


# -- scalar encoders: (out, name, value, version), appending markup to out ------


def format_datetime(value: datetime) -> str:
    """``YYYY-MM-DDThh:mm:ssZ`` in UTC; naive datetimes are taken as UTC."""
    if value.tzinfo is not None and value.utcoffset():
        value = value.astimezone(UTC)
    return (f"{value.year:04d}-{value.month:02d}-{value.day:02d}"
            f"T{value.hour:02d}:{value.minute:02d}:{value.second:02d}Z")


def format_decimal(value: Decimal) -> str:
    if not isinstance(value, Decimal):
        value = Decimal(str(value))
    if not value.is_finite():
        raise ValueError(f"cannot write {value} as an xs:decimal")
    return format(value, "f")


def _leaf(to_text: Callable[[Any], str]) -> Callable:
    """An encoder writing ``to_text(value)`` as the element's text (markup-safe)."""
    def encode(out, name, value, version):
        out.append(f"<{name}>{to_text(value)}</{name}>")
    return encode


_text = _leaf(_escape)
_plain_code = _leaf(lambda code: _escape(code.value))
_datetime = _leaf(format_datetime)
_int = _leaf(lambda value: str(int(value)))
_decimal = _leaf(format_decimal)
_bool = _leaf(lambda value: "true" if value else "false")


def _code(out, name, value, version):
    if value.scheme:
        out.append(f'<{name} ill:scheme="{_escape_attribute(value.scheme)}">'
                   f"{_escape(value.value)}</{name}>")
    else:
        out.append(f"<{name}>{_escape(value.value)}</{name}>")


def _enum(out, name, value, version):
    if version is V12 and value in _V21_ONLY_VALUES:
        raise ValueError(f"{value.value!r} does not exist in ISO 18626 v1.2")
    out.append(f"<{name}>{value.value}</{name}>")  # the standard's own spelling


def _enum_echo(out, name, value, version):
    """A confirmation's echo: dropped if the version cannot carry the value."""
    if version is V12 and value in _V21_ONLY_VALUES:
        return
    out.append(f"<{name}>{value.value}</{name}>")


def _status(out, name, value, version):
    if value is None:
        raise ValueError("statusInfo/status is empty: only a peer's Notification may be")
    _enum(out, name, value, version)


def _always_text(out, name, value, version):
    """v1.2's mandatory multipleItemRequestId: written empty when None."""
    _text(out, name, value or "", version)


# -- tables ---------------------------------------------------------------------

ALL = "all"  # write every value of a tuple
FIRST = "first"  # write only the first value of a tuple


class W:
    """One child element: model field ``attr`` written as ``wire`` by ``enc``.

    ``versions``: where the element exists; ``repeat``: for tuple fields, per
    version ALL / FIRST / an int (at most that many); ``always``: write even
    when None; ``required``: None is an error in these versions.
    """

    __slots__ = ("always", "attr", "enc", "repeat", "required", "versions", "wire")

    def __init__(self, wire, attr, enc, versions=BOTH, repeat=None, always=(), required=()):
        self.wire = wire
        self.attr = attr
        self.enc = enc
        self.versions = versions
        self.repeat = repeat or {}
        self.always = always
        self.required = required


class Table:
    """A complex element: ordered fields compiled per version."""

    def __init__(self, name: str, fields: list[W]):
        self.name = name
        self.rows: dict[Version, tuple] = {}
        self.getters: dict[Version, Callable] = {}
        for version in BOTH:
            rows = []
            for w in fields:
                if version not in w.versions:
                    continue
                repeat = w.repeat.get(version)
                limit = None if repeat in (None, ALL) else (1 if repeat == FIRST else repeat)
                rows.append((w.wire, w.attr, w.enc, repeat is not None, limit,
                             version in w.always, version in w.required, w.wire))
            self.rows[version] = tuple(rows)
            attrs = [row[1] for row in rows]
            # attrgetter of one name returns a bare value: wrap it in a tuple
            getter = attrgetter(*attrs) if len(attrs) > 1 else (
                (lambda obj, a=attrs[0]: (getattr(obj, a),)) if attrs else (lambda obj: ()))
            self.getters[version] = getter

    def fill(self, out, obj, version):
        for row, value in zip(self.rows[version], self.getters[version](obj)):
            if value is None:  # most fields of most messages: as little work as can be
                if row[5]:  # always
                    row[2](out, row[0], value, version)
                elif row[6]:  # required
                    raise ValueError(
                        f"{self.name}/{row[7]} is mandatory in ISO 18626 {version.value}"
                    )
            elif row[3]:  # a tuple
                name, enc, limit = row[0], row[2], row[4]
                for item in value if limit is None else value[:limit]:
                    enc(out, name, item, version)
            else:
                row[2](out, row[0], value, version)

    def __call__(self, out, name, obj, version):
        _element(out, name, self.fill, obj, version)


def _element(out, name, fill, value, version):
    """``<name>``, what ``fill(out, value, version)`` writes, ``</name>``; ``<name/>``
    if it writes nothing (as lxml writes an element without text or children)."""
    out.append(f"<{name}>")
    start = len(out)
    fill(out, value, version)
    if len(out) == start:
        out[-1] = f"<{name}/>"
    else:
        out.append(f"</{name}>")


def _rep(v12, v21=ALL):
    return {V12: v12, V21: v21}


AGENCY_ID = Table("agencyId", [W("agencyIdType", "type", _code),
                               W("agencyIdValue", "value", _text)])
COSTS = Table("costs", [W("currencyCode", "currency_code", _code),
                        W("monetaryValue", "monetary_value", _decimal)])
ELECTRONIC_ADDRESS = Table("electronicAddress", [
    W("electronicAddressType", "electronic_address_type", _code),
    W("electronicAddressData", "electronic_address_data", _text),
])


def _region(parent, q, value, version):
    (_code if version is V12 else _plain_code)(parent, q, value, version)


PHYSICAL_ADDRESS = Table("physicalAddress", [
    W("line1", "line1", _text), W("line2", "line2", _text), W("locality", "locality", _text),
    W("postalCode", "postal_code", _text), W("region", "region", _region),
    W("country", "country", _code),
])


def _address_choice(out, value, version):
    if isinstance(value, m.ElectronicAddress):
        ELECTRONIC_ADDRESS(out, "electronicAddress", value, version)
    else:
        PHYSICAL_ADDRESS(out, "physicalAddress", value, version)


def _address(out, name, value, version):
    _element(out, name, _address_choice, value, version)


AUTHENTICATION = Table("requestingAgencyAuthentication", [
    W("accountId", "account_id", _text), W("securityCode", "security_code", _text),
])


def _header(kind: str) -> Table:
    request = kind == "request"
    sam = kind == "supplyingAgencyMessage"
    return Table(f"{kind}/header", [
        W("supplyingAgencyId", "supplying_agency_id", AGENCY_ID,
          required=(V12,) if request else BOTH),
        W("requestingAgencyId", "requesting_agency_id", AGENCY_ID),
        W("consortialId", "consortial_id", AGENCY_ID, versions=() if sam else (V21,)),
        W("multipleItemRequestId", "multiple_item_request_id", _always_text,
          versions=BOTH if request else (V12,), always=(V12,)),
        W("timestamp", "timestamp", _datetime),
        W("requestingAgencyRequestId", "requesting_agency_request_id", _text),
        W("supplyingAgencyRequestId", "supplying_agency_request_id", _text,
          versions=(V12,) if request else BOTH),
        W("requestingAgencyAuthentication", "requesting_agency_authentication",
          AUTHENTICATION, versions=(V12,) if sam else BOTH),
    ])


def _bib_item_id_fields(out, value, version):
    if version is V12:
        _text(out, "bibliographicItemIdentifier", value.identifier, version)
        _code(out, "bibliographicItemIdentifierCode", value.code, version)
    else:
        _code(out, "bibliographicItemIdentifierCode", value.code, version)
        _text(out, "bibliographicItemIdentifier", value.identifier, version)


def _bib_item_id(out, name, value, version):
    _element(out, name, _bib_item_id_fields, value, version)


BIB_RECORD_ID = Table("bibliographicRecordId", [
    W("bibliographicRecordIdentifierCode", "code", _code),
    W("bibliographicRecordIdentifier", "identifier", _text),
])
BIBLIOGRAPHIC_INFO = Table("bibliographicInfo", [
    W("supplierUniqueRecordId", "supplier_unique_record_id", _text),
    W("title", "title", _text),
    W("author", "author", _text),
    W("authorId", "author_id", _text, versions=(V21,)),
    W("subtitle", "subtitle", _text),
    W("seriesTitle", "series_title", _text),
    W("edition", "edition", _text),
    W("titleOfComponent", "title_of_component", _text),
    W("authorOfComponent", "author_of_component", _text),
    W("volume", "volume", _text, repeat=_rep(FIRST)),
    W("issue", "issue", _text),
    W("pagesRequested", "pages_requested", _text),
    W("estimatedNoPages", "estimated_no_pages", _text),
    W("bibliographicItemId", "bibliographic_item_id", _bib_item_id, repeat=_rep(ALL)),
    W("sponsor", "sponsor", _text),
    W("informationSource", "information_source", _text),
    W("bibliographicRecordId", "bibliographic_record_id", BIB_RECORD_ID, repeat=_rep(ALL)),
])
PUBLICATION_INFO = Table("publicationInfo", [
    W("publisher", "publisher", _text),
    W("publisherId", "publisher_id", _text, versions=(V21,)),
    W("publicationType", "publication_type", _code),
    W("publicationDate", "publication_date", _text),
    W("placeOfPublication", "place_of_publication", _text),
])
SERVICE_INFO = Table("serviceInfo", [
    W("requestType", "request_type", _enum),
    W("requestSubType", "request_sub_type", _enum, repeat=_rep(3)),
    W("requestingAgencyPreviousRequestId", "requesting_agency_previous_request_id", _text),
    W("serviceType", "service_type", _enum),
    W("serviceLevel", "service_level", _code),
    W("preferredFormat", "item_format", _code, versions=(V12,)),
    W("itemFormat", "item_format", _code, versions=(V21,)),
    W("needBeforeDate", "need_before_date", _datetime),
    W("copyrightCompliance", "copyright_compliance", _code),
    W("anyEdition", "any_edition", _enum),
    W("preferredEdition", "preferred_edition", _enum, versions=(V21,)),
    W("loanCondition", "loan_condition", _code, versions=(V21,), repeat=_rep(ALL)),
    W("startDate", "start_date", _datetime),
    W("endDate", "end_date", _datetime),
    W("note", "note", _text),
])
SUPPLIER_INFO = Table("supplierInfo", [
    W("sortOrder", "sort_order", _int),
    W("supplierCode", "supplier_code", AGENCY_ID),
    W("supplierDescription", "supplier_description", _text),
    W("bibliographicRecordId", "bibliographic_record_id", BIB_RECORD_ID),
    W("callNumber", "call_number", _text),
    W("summaryHoldings", "summary_holdings", _text),
    W("availabilityNote", "availability_note", _text),
])
REQUESTED_DELIVERY_INFO = Table("requestedDeliveryInfo", [
    W("sortOrder", "sort_order", _int),
    W("address", "address", _address),
    W("deliveryMethod", "delivery_method", _code, versions=(V21,)),
    W("courierName", "courier_name", _code, versions=(V21,)),
])
REQUESTING_AGENCY_INFO = Table("requestingAgencyInfo", [
    W("name", "name", _text), W("contactName", "contact_name", _text),
    W("address", "address", _address, repeat=_rep(ALL)),
])
PATRON_INFO = Table("patronInfo", [
    W("patronId", "patron_id", _text),
    W("surname", "surname", _text),
    W("givenName", "given_name", _text),
    W("patronType", "patron_type", _code),
    W("sendToPatron", "send_to_patron", _enum),
    W("address", "address", _address, repeat=_rep(ALL)),
])
BILLING_INFO = Table("billingInfo", [
    W("paymentMethod", "payment_method", _code),
    W("maximumCosts", "maximum_costs", COSTS),
    W("billingMethod", "billing_method", _code),
    W("billingName", "billing_name", _text),
    W("address", "address", _address),
])
REQUEST = Table("request", [
    W("header", "header", _header("request")),
    W("bibliographicInfo", "bibliographic_info", BIBLIOGRAPHIC_INFO),
    W("publicationInfo", "publication_info", PUBLICATION_INFO),
    W("serviceInfo", "service_info", SERVICE_INFO, required=(V21,)),
    W("supplierInfo", "supplier_info", SUPPLIER_INFO, repeat=_rep(ALL)),
    W("requestedDeliveryInfo", "requested_delivery_info", REQUESTED_DELIVERY_INFO,
      repeat=_rep(ALL)),
    W("requestingAgencyInfo", "requesting_agency_info", REQUESTING_AGENCY_INFO),
    W("patronInfo", "patron_info", PATRON_INFO),
    W("billingInfo", "billing_info", BILLING_INFO),
])

MESSAGE_INFO = Table("messageInfo", [
    W("reasonForMessage", "reason_for_message", _enum),
    W("answerYesNo", "answer_yes_no", _enum),
    W("note", "note", _text),
    W("reasonUnfilled", "reason_unfilled", _code),
    W("reasonRetry", "reason_retry", _code),
    # v1.2 only: 2021 moved these to retryInfo (see _retry_info)
    W("offeredCosts", "offered_costs", COSTS, versions=(V12,), repeat={V12: FIRST}),
    W("retryAfter", "retry_after", _datetime, versions=(V12,)),
    W("retryBefore", "retry_before", _datetime, versions=(V12,)),
])
STATUS_INFO = Table("statusInfo", [
    W("status", "status", _status, always=BOTH),
    W("expectedDeliveryDate", "expected_delivery_date", _datetime),
    W("dueDate", "due_date", _datetime),
    W("lastChange", "last_change", _datetime),
])
_RETRY_ALTERNATIVES = Table("retryInfo", [
    W("loanCondition", "loan_condition", _code, repeat=_rep(ALL)),
    W("edition", "edition", _text, repeat=_rep(ALL)),
    W("itemFormat", "item_format", _code, repeat=_rep(ALL)),
    W("volume", "volume", _text, repeat=_rep(ALL)),
    W("serviceType", "service_type", _enum),
    W("serviceLevel", "service_level", _code, repeat=_rep(ALL)),
    W("deliveryMethod", "delivery_method", _code, repeat=_rep(ALL)),
    W("courierName", "courier_name", _code, repeat=_rep(ALL)),
])
_RETRY_PAYMENT = Table("retryInfo", [
    W("paymentMethod", "payment_method", _code, repeat=_rep(ALL)),
])
_EMPTY_RETRY = m.RetryInfo()


def _retry_info(out, message: m.SupplyingAgencyMessage, version):
    """2021 ``retryInfo``: the alternatives plus messageInfo's retry fields."""
    info = message.message_info
    retry = message.retry_info
    if retry is None:
        if not (info.offered_costs or info.retry_after or info.retry_before):
            return
        retry = _EMPTY_RETRY
    elif retry == _EMPTY_RETRY and not (
        info.offered_costs or info.retry_after or info.retry_before
    ):
        return
    _element(out, "retryInfo", _retry_info_fields, (retry, info), version)


def _retry_info_fields(out, value: tuple[m.RetryInfo, m.MessageInfo], version):
    retry, info = value
    _RETRY_ALTERNATIVES.fill(out, retry, version)
    for costs in info.offered_costs:
        COSTS(out, "offeredCosts", costs, version)
    _RETRY_PAYMENT.fill(out, retry, version)
    if info.retry_before is not None:
        _datetime(out, "retryBefore", info.retry_before, version)
    if info.retry_after is not None:
        _datetime(out, "retryAfter", info.retry_after, version)


DELIVERY_INFO = Table("deliveryInfo", [
    W("dateSent", "date_sent", _datetime),
    W("itemId", "item_id", _text, repeat=_rep(FIRST)),
    W("URL", "url", _text, versions=(V21,)),
    W("sentVia", "delivery_method", _code, versions=(V12,)),
    W("deliveryMethod", "delivery_method", _code, versions=(V21,)),
    W("address", "address", _address, versions=(V21,)),
    W("sentToPatron", "sent_to_patron", _bool),
    W("loanCondition", "loan_condition", _code, repeat=_rep(FIRST)),
    W("deliveredFormat", "item_format", _code, versions=(V12,)),
    W("itemFormat", "item_format", _code, versions=(V21,)),
    W("serviceType", "service_type", _enum, versions=(V21,)),
    W("deliveryCosts", "delivery_costs", COSTS, repeat=_rep(FIRST)),
    W("paymentMethod", "payment_method", _code, versions=(V21,)),
])
SHIPPING_INFO = Table("shippingInfo", [
    W("courierName", "courier_name", _code),
    W("trackingId", "tracking_id", _text, repeat=_rep(ALL)),
    W("insurance", "insurance", _enum),
    W("insuranceThirdParty", "insurance_third_party", _enum),
    W("thirdPartyName", "third_party_name", _text),
    W("insuranceCosts", "insurance_costs", COSTS, repeat=_rep(ALL)),
])
RETURN_INFO = Table("returnInfo", [
    W("returnAgencyId", "return_agency_id", AGENCY_ID),
    W("name", "name", _text),
    W("physicalAddress", "physical_address", PHYSICAL_ADDRESS),
])
_SAM_HEAD = Table("supplyingAgencyMessage", [
    W("header", "header", _header("supplyingAgencyMessage")),
    W("messageInfo", "message_info", MESSAGE_INFO),
    W("statusInfo", "status_info", STATUS_INFO),
])
_SAM_TAIL = Table("supplyingAgencyMessage", [
    W("deliveryInfo", "delivery_info", DELIVERY_INFO),
    W("shippingInfo", "shipping_info", SHIPPING_INFO, versions=(V21,)),
    W("returnInfo", "return_info", RETURN_INFO),
])


def _supplying_agency_message_fields(out, message, version):
    _SAM_HEAD.fill(out, message, version)
    if version is V21:
        _retry_info(out, message, version)
    _SAM_TAIL.fill(out, message, version)


def _supplying_agency_message(out, name, message, version):
    _element(out, name, _supplying_agency_message_fields, message, version)


REQUESTING_AGENCY_MESSAGE = Table("requestingAgencyMessage", [
    W("header", "header", _header("requestingAgencyMessage")),
    W("action", "action", _enum),
    W("note", "note", _text),
])

CONFIRMATION_HEADER = Table("confirmationHeader", [
    W("supplyingAgencyId", "supplying_agency_id", AGENCY_ID),
    W("requestingAgencyId", "requesting_agency_id", AGENCY_ID),
    W("timestamp", "timestamp", _datetime),
    W("requestingAgencyRequestId", "requesting_agency_request_id", _text),
    W("multipleItemRequestId", "multiple_item_request_id", _text, versions=(V12,)),
    W("timestampReceived", "timestamp_received", _datetime),
    W("messageStatus", "message_status", _enum),
])
ERROR_DATA = Table("errorData", [W("errorType", "error_type", _enum),
                                 W("errorValue", "error_value", _text)])
_CONF_HEADER = W("confirmationHeader", "confirmation_header", CONFIRMATION_HEADER)
_ERROR_DATA = W("errorData", "error_data", ERROR_DATA, repeat=_rep(FIRST))
REQUEST_CONFIRMATION = Table("requestConfirmation", [_CONF_HEADER, _ERROR_DATA])
SUPPLYING_AGENCY_MESSAGE_CONFIRMATION = Table("supplyingAgencyMessageConfirmation", [
    _CONF_HEADER, W("reasonForMessage", "reason_for_message", _enum), _ERROR_DATA,
])
REQUESTING_AGENCY_MESSAGE_CONFIRMATION = Table("requestingAgencyMessageConfirmation", [
    _CONF_HEADER, W("action", "action", _enum_echo), _ERROR_DATA,
])

WRITERS: dict[type, tuple[str, Any]] = {
    m.Request: ("request", REQUEST),
    m.SupplyingAgencyMessage: ("supplyingAgencyMessage", _supplying_agency_message),
    m.RequestingAgencyMessage: ("requestingAgencyMessage", REQUESTING_AGENCY_MESSAGE),
    m.RequestConfirmation: ("requestConfirmation", REQUEST_CONFIRMATION),
    m.SupplyingAgencyMessageConfirmation: (
        "supplyingAgencyMessageConfirmation", SUPPLYING_AGENCY_MESSAGE_CONFIRMATION),
    m.RequestingAgencyMessageConfirmation: (
        "requestingAgencyMessageConfirmation", REQUESTING_AGENCY_MESSAGE_CONFIRMATION),
}


# -- entry points -----------------------------------------------------------------


def serialise(envelope: m.Envelope, *, validate: bool = False) -> bytes:
    """UTF-8 bytes of ``envelope``; ``validate=True`` checks them against our schema.

    Raises ``ValueError`` when the message cannot be written validly in its
    version (see the module docstring), or, with ``validate``, when our own
    schema rejects the result (a bug in this module).
    """
    version = envelope.version
    try:
        name, table = WRITERS[type(envelope.message)]
    except KeyError:
        raise TypeError(f"not an ISO 18626 message: {type(envelope.message).__name__}") from None
    out = [_START.format(version.value)]
    table(out, name, envelope.message, version)
    out.append(_END)
    data = "".join(out).encode()
    if validate:
        from .schema import validation_errors

        errors = validation_errors(etree.fromstring(data), version)
        if errors:
            raise ValueError(
                f"serialised {envelope.kind} is not valid ISO 18626 "
                f"{version.value}: {errors[0]}"
            )
    return data


def to_tree(envelope: m.Envelope) -> etree._Element:
    """The ``ISO18626Message`` element for ``envelope`` in ``envelope.version``: the
    written message read back, for a caller that changes it further."""
    return etree.fromstring(serialise(envelope))
