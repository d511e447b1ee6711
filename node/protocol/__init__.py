"""ISO 18626 protocol layer: model, codec, confirmations. No I/O.

``parse(bytes) -> Envelope`` reads leniently, ``serialise(Envelope) -> bytes``
writes strictly for ``Envelope.version``; every refusal is a
:class:`ProtocolError` carrying the ErrorType and errorValue of the ERROR
confirmation that answers it (see :mod:`node.protocol.confirm`).
"""

from .codes import (
    Action,
    Code,
    ErrorType,
    MessageStatus,
    ReasonForMessage,
    ServiceType,
    Status,
    Version,
    YesNo,
)
from .confirm import (
    classify,
    classify_schema_errors,
    confirmation_for,
    error_confirmation_from_bytes,
)
from .errors import BadlyFormed, ProtocolError, UnrecognisedValue
from .messages import (
    BusinessMessage,
    Confirmation,
    Envelope,
    Message,
    Request,
    RequestConfirmation,
    RequestingAgencyMessage,
    RequestingAgencyMessageConfirmation,
    SupplyingAgencyMessage,
    SupplyingAgencyMessageConfirmation,
)
from .reader import check_ids, parse, parse_element
from .safe_xml import parse_xml
from .writer import serialise, to_tree

__all__ = [
    "Action",
    "BadlyFormed",
    "BusinessMessage",
    "Code",
    "Confirmation",
    "Envelope",
    "ErrorType",
    "Message",
    "MessageStatus",
    "ProtocolError",
    "ReasonForMessage",
    "Request",
    "RequestConfirmation",
    "RequestingAgencyMessage",
    "RequestingAgencyMessageConfirmation",
    "ServiceType",
    "Status",
    "SupplyingAgencyMessage",
    "SupplyingAgencyMessageConfirmation",
    "UnrecognisedValue",
    "Version",
    "YesNo",
    "check_ids",
    "classify",
    "classify_schema_errors",
    "confirmation_for",
    "error_confirmation_from_bytes",
    "parse",
    "parse_element",
    "parse_xml",
    "serialise",
    "to_tree",
]
