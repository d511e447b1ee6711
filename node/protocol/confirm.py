"""Confirmations, and turning any failure into the ProtocolError they carry.

* :func:`confirmation_for` answers a message we could read: OK, or ERROR with
  the :class:`ProtocolError` the service raised.
* :func:`error_confirmation_from_bytes` answers input we could not read: it
  recovers what it can (the message kind, the header ids, the version) from
  the raw bytes, without trusting them.
* :func:`classify` maps any exception (lxml syntax or schema errors,
  ValueError, KeyError, ...) to a :class:`ProtocolError`, so a caller can
  always build a confirmation.
"""

from __future__ import annotations

import re
from datetime import datetime

from lxml import etree

from . import messages as m
from .codes import NAMESPACE, Action, ErrorType, MessageStatus, ReasonForMessage, Version
from .errors import BadlyFormed, ProtocolError
from .safe_xml import parse_xml

__all__ = [
    "classify",
    "classify_schema_errors",
    "confirmation_for",
    "error_confirmation_from_bytes",
]

_Q = "{" + NAMESPACE + "}"


def _error_data(error: ProtocolError | None) -> tuple[m.ErrorData, ...]:
    if error is None:
        return ()
    return (m.ErrorData(error_type=error.error_type, error_value=error.value),)


def confirmation_for(
    message: m.BusinessMessage, *, now: datetime, error: ProtocolError | None = None
) -> m.Confirmation:
    """The confirmation answering ``message``: OK, or ERROR carrying ``error``."""
    if not isinstance(message, (m.Request, m.SupplyingAgencyMessage, m.RequestingAgencyMessage)):
        raise TypeError(f"no confirmation answers a {type(message).__name__}")
    header = message.header
    confirmation_header = m.ConfirmationHeader(
        supplying_agency_id=header.supplying_agency_id,
        requesting_agency_id=header.requesting_agency_id,
        timestamp=now,
        requesting_agency_request_id=header.requesting_agency_request_id,
        multiple_item_request_id=header.multiple_item_request_id,
        timestamp_received=now,
        message_status=MessageStatus.OK if error is None else MessageStatus.ERROR,
    )
    errors = _error_data(error)
    if isinstance(message, m.Request):
        return m.RequestConfirmation(confirmation_header=confirmation_header, error_data=errors)
    if isinstance(message, m.SupplyingAgencyMessage):
        return m.SupplyingAgencyMessageConfirmation(
            confirmation_header=confirmation_header,
            reason_for_message=message.message_info.reason_for_message,
            error_data=errors,
        )
    return m.RequestingAgencyMessageConfirmation(
        confirmation_header=confirmation_header, action=message.action, error_data=errors
    )


# -- best effort for input that failed to parse ---------------------------------


def _local(tag) -> str:
    return tag.rpartition("}")[2] if isinstance(tag, str) else ""


def _child(el, name: str):
    if el is None:
        return None
    for child in el.iterchildren(etree.Element):
        if _local(child.tag) == name:
            return child
    return None


def _text(el) -> str | None:
    if el is None or el.text is None:
        return None
    return el.text.strip()


def _agency(el) -> m.AgencyId | None:
    kind, value = _text(_child(el, "agencyIdType")), _text(_child(el, "agencyIdValue"))
    if kind is None or value is None:
        return None
    return m.AgencyId(type=m.Code(kind), value=value)


def _lookup(enum_cls, text: str | None):
    if not text:
        return None
    try:
        return enum_cls.lookup(text)
    except ValueError:
        return None


def error_confirmation_from_bytes(
    data: bytes, error: ProtocolError, *, now: datetime
) -> m.Envelope:
    """An ERROR confirmation for bytes :func:`~node.protocol.reader.parse` refused.

    The kind of confirmation matches the message if the root's child is a
    request, SAM or RAM (else ``requestConfirmation``); header ids, the echoed
    reason or action, and the declared version are copied when present.
    """
    root = None
    try:
        root = parse_xml(data)
    except ProtocolError:
        pass
    kind, header, body = "request", None, None
    version = Version.V1_2
    if root is not None and _local(root.tag) == "ISO18626Message":
        declared = root.get(_Q + "version") or root.get("version")
        if declared:
            try:
                version = Version.parse(declared)
            except ValueError:
                pass
        children = list(root.iterchildren(etree.Element))
        if children:
            body = children[0]
            if _local(body.tag) in ("request", "supplyingAgencyMessage",
                                    "requestingAgencyMessage"):
                kind = _local(body.tag)
            header = _child(body, "header")
    confirmation_header = m.ConfirmationHeader(
        supplying_agency_id=_agency(_child(header, "supplyingAgencyId")),
        requesting_agency_id=_agency(_child(header, "requestingAgencyId")),
        timestamp=now,
        requesting_agency_request_id=_text(_child(header, "requestingAgencyRequestId")),
        multiple_item_request_id=_text(_child(header, "multipleItemRequestId")) or None,
        timestamp_received=now,
        message_status=MessageStatus.ERROR,
    )
    errors = _error_data(error)
    message: m.Confirmation
    if kind == "supplyingAgencyMessage":
        reason = _text(_child(_child(body, "messageInfo"), "reasonForMessage"))
        message = m.SupplyingAgencyMessageConfirmation(
            confirmation_header=confirmation_header,
            reason_for_message=_lookup(ReasonForMessage, reason),
            error_data=errors,
        )
    elif kind == "requestingAgencyMessage":
        message = m.RequestingAgencyMessageConfirmation(
            confirmation_header=confirmation_header,
            action=_lookup(Action, _text(_child(body, "action"))),
            error_data=errors,
        )
    else:
        message = m.RequestConfirmation(confirmation_header=confirmation_header,
                                        error_data=errors)
    return m.Envelope(version=version, message=message)


# -- classify -----------------------------------------------------------------------

_VALUE_KINDS = ("ENUMERATION", "DATATYPE", "FACET", "INCLUSIVE", "EXCLUSIVE", "PATTERN",
                "LENGTH", "DIGITS", "VALUE_CONSTRAINT", "CVC_TYPE_3_1_2")
_CLARK = re.compile(r"\{[^}'\s]*\}")  # '{namespace}' (not an enumeration set)
_ENUM_MESSAGE = re.compile(
    r"Element '(?P<el>[^']*)': \[facet 'enumeration'\] The value '(?P<value>[^']*)' "
    r"is not an element of the set \{(?P<set>[^}]*)\}\.?"
)
_ELEMENT = re.compile(r"^Element '([^']*)'")


def _schema_value_kind(type_name: str) -> bool:
    return any(kind in type_name for kind in _VALUE_KINDS)


def _schema_message(entry) -> str:
    text = _CLARK.sub("", " ".join(str(entry.message).split()))
    match = _ENUM_MESSAGE.match(text)
    if match:
        allowed = ", ".join(v.strip().strip("'") for v in match["set"].split(","))
        text = f"element '{match['el']}': '{match['value']}' is not one of {allowed}"
    else:
        text = _ELEMENT.sub(lambda mt: f"element '{mt[1]}'", text).rstrip(".")
    where = f"line {entry.line}" if entry.line and entry.line > 0 else (entry.path or "?")
    return f"{where}: {text}"


def classify_schema_errors(error_log) -> ProtocolError:
    """The ProtocolError for the first entry of an lxml schema error log."""
    entries = list(error_log)
    if not entries:
        return BadlyFormed("schema validation failed")
    entry = entries[0]
    type_name = str(getattr(entry, "type_name", ""))
    value = _schema_message(entry)
    if type_name.endswith("CVC_ELT_1"):  # no declaration for the root: not ISO 18626
        return BadlyFormed(value)
    if _schema_value_kind(type_name):
        element = _ELEMENT.match(_CLARK.sub("", str(entry.message)))
        name = element[1] if element else ""
        if "ENUMERATION" in type_name and name == "action":
            return ProtocolError(ErrorType.UNSUPPORTED_ACTION_TYPE, value)
        if "ENUMERATION" in type_name and name == "reasonForMessage":
            return ProtocolError(ErrorType.UNSUPPORTED_REASON_FOR_MESSAGE_TYPE, value)
        return ProtocolError(ErrorType.UNRECOGNISED_DATA_VALUE, value)
    return ProtocolError(ErrorType.UNRECOGNISED_DATA_ELEMENT, value)


def classify(exc: BaseException) -> ProtocolError:
    """Any failure while handling a message, as the ProtocolError to answer with."""
    if isinstance(exc, ProtocolError):
        return exc
    if isinstance(exc, etree.DocumentInvalid):
        return classify_schema_errors(exc.error_log)
    if isinstance(exc, etree.XMLSyntaxError):
        return BadlyFormed(f"not well-formed XML: {' '.join(str(exc).split())}")
    if isinstance(exc, (UnicodeError, etree.ParserError)):
        return BadlyFormed(f"cannot read the message: {' '.join(str(exc).split())}")
    if isinstance(exc, KeyError):
        name = exc.args[0] if exc.args else "?"
        return ProtocolError(ErrorType.UNRECOGNISED_DATA_ELEMENT,
                             f"missing or unexpected element {name!r}")
    if isinstance(exc, (ValueError, ArithmeticError)):
        return ProtocolError(ErrorType.UNRECOGNISED_DATA_VALUE,
                             " ".join(str(exc).split()) or type(exc).__name__)
    return BadlyFormed(f"cannot process the message ({type(exc).__name__}: "
                       f"{' '.join(str(exc).split())})")
