"""ISO 18626 protocol layer: model, codec, confirmations. No I/O.

``parse(bytes) -> Envelope`` reads leniently, ``serialise(Envelope) -> bytes``
writes strictly for ``Envelope.version``; every refusal is a
:class:`ProtocolError` carrying the ErrorType and errorValue of the ERROR
confirmation that answers it (see :mod:`node.protocol.confirm`).
"""

from importlib import import_module

# The public names, each from its submodule, imported on first use (PEP 562):
# ``node.config`` needs only ``codes``, and must not pull lxml in with it.
_EXPORTS = {
    "codes": ("Action", "Code", "ErrorType", "MessageStatus", "ReasonForMessage",
              "ServiceType", "Status", "Version", "YesNo"),
    "confirm": ("classify", "classify_schema_errors", "confirmation_for",
                "error_confirmation_from_bytes"),
    "errors": ("BadlyFormed", "ProtocolError", "UnrecognisedValue"),
    "messages": ("BusinessMessage", "Confirmation", "Envelope", "Message", "Request",
                 "RequestConfirmation", "RequestingAgencyMessage",
                 "RequestingAgencyMessageConfirmation", "SupplyingAgencyMessage",
                 "SupplyingAgencyMessageConfirmation"),
    "reader": ("check_ids", "parse", "parse_element"),
    "safe_xml": ("parse_xml",),
    "writer": ("serialise", "to_tree"),
}
_MODULE_OF = {name: module for module, names in _EXPORTS.items() for name in names}


def __getattr__(name: str):
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


__all__ = sorted(_MODULE_OF)
