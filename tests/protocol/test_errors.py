"""Errors as the standard wants them, and the confirmations that carry them."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import InvalidOperation
from pathlib import Path

import pytest
from lxml import etree

from node.protocol import messages as m
from node.protocol.codes import Action, ErrorType, MessageStatus, ReasonForMessage, Version
from node.protocol.confirm import (
    classify,
    classify_schema_errors,
    confirmation_for,
    error_confirmation_from_bytes,
)
from node.protocol.errors import BadlyFormed, ProtocolError, UnrecognisedValue
from node.protocol.reader import parse
from node.protocol.schema import schema_for
from node.protocol.writer import serialise
from tests.protocol.test_writer import assert_officially_valid

NOW = datetime(2026, 3, 2, 12, 0, 0, tzinfo=UTC)
SAMPLES = Path("/work/shared/iso18626/samples")
NS = "http://illtransactions.org/2013/iso18626"


def sample(name: str) -> bytes:
    return (SAMPLES / f"broker_test_testdata_{name}.xml").read_bytes()


def error_of(data: bytes) -> ProtocolError:
    with pytest.raises(ProtocolError) as info:
        parse(data)
    return info.value


# -- every ErrorType is reachable with a realistic input ----------------------------


def test_unsupported_action_type():
    error = error_of(sample("reqmsg-invalid-action"))
    assert error.error_type is ErrorType.UNSUPPORTED_ACTION_TYPE
    assert "'WeCancelThisMessage' is not an ISO 18626 action" in error.value


def test_unsupported_reason_for_message_type():
    error = error_of(sample("supmsg-invalid-reason"))
    assert error.error_type is ErrorType.UNSUPPORTED_REASON_FOR_MESSAGE_TYPE
    assert "'NoGoodReason' is not an ISO 18626 reason for message" in error.value


def test_unrecognised_data_element():
    data = sample("supmsg-ok").replace(b"<itemId>", b"<itemIdentifier>x</itemIdentifier><itemId>")
    error = error_of(data)
    assert error.error_type is ErrorType.UNRECOGNISED_DATA_ELEMENT
    assert error.value == (
        "unexpected element 'itemIdentifier' in supplyingAgencyMessage/deliveryInfo")


def test_unrecognised_data_value():
    error = error_of(sample("supmsg-invalid-status"))
    assert error.error_type is ErrorType.UNRECOGNISED_DATA_VALUE


def test_badly_formed_message():
    assert error_of(b"<ISO18626Message").error_type is ErrorType.BADLY_FORMED_MESSAGE
    assert error_of(sample("msg-invalid")).error_type is ErrorType.BADLY_FORMED_MESSAGE


def test_error_classes():
    assert BadlyFormed("x").error_type is ErrorType.BADLY_FORMED_MESSAGE
    assert UnrecognisedValue("x").error_type is ErrorType.UNRECOGNISED_DATA_VALUE
    assert str(BadlyFormed("x")) == "BadlyFormedMessage: x"


# -- confirmation_for -----------------------------------------------------------------


@pytest.mark.parametrize("name, cls", [
    ("request-loaned", m.RequestConfirmation),
    ("supmsg-ok", m.SupplyingAgencyMessageConfirmation),
    ("reqmsg-ok", m.RequestingAgencyMessageConfirmation),
])
@pytest.mark.parametrize("error", [None, UnrecognisedValue("unknown requestingAgencyRequestId")])
@pytest.mark.parametrize("version", list(Version), ids=lambda v: v.value)
def test_confirmation_for(name, cls, error, version):
    message = parse(sample(name)).message
    confirmation = confirmation_for(message, now=NOW, error=error)
    assert isinstance(confirmation, cls)
    header = confirmation.confirmation_header
    assert header.timestamp == header.timestamp_received == NOW
    assert header.requesting_agency_request_id == message.header.requesting_agency_request_id
    assert header.requesting_agency_id == message.header.requesting_agency_id
    assert header.supplying_agency_id == message.header.supplying_agency_id
    if error is None:
        assert header.message_status is MessageStatus.OK
        assert confirmation.error_data == ()
    else:
        assert header.message_status is MessageStatus.ERROR
        assert confirmation.error_data == (
            m.ErrorData(error_type=ErrorType.UNRECOGNISED_DATA_VALUE,
                        error_value="unknown requestingAgencyRequestId"),)
    if cls is m.SupplyingAgencyMessageConfirmation:
        assert confirmation.reason_for_message is ReasonForMessage.STATUS_CHANGE
    if cls is m.RequestingAgencyMessageConfirmation:
        assert confirmation.action is message.action
    data = serialise(m.Envelope(version=version, message=confirmation))
    assert_officially_valid(data, version)
    assert parse(data).message.confirmation_header.message_status is header.message_status


def test_confirmation_for_refuses_a_confirmation():
    confirmation = confirmation_for(parse(sample("reqmsg-ok")).message, now=NOW)
    with pytest.raises(TypeError):
        confirmation_for(confirmation, now=NOW)


# -- error_confirmation_from_bytes ---------------------------------------------------------


def _written(envelope: m.Envelope) -> bytes:
    data = serialise(envelope)
    assert_officially_valid(data, envelope.version)
    return data


@pytest.mark.parametrize("data", [b"", b"garbage", b"\x00\xff\xfe", b"<a><b></a>",
                                  b"<" * 2_000_000])
def test_error_confirmation_for_garbage(data):
    error = BadlyFormed("not well-formed XML")
    envelope = error_confirmation_from_bytes(data, error, now=NOW)
    assert envelope.version is Version.V1_2
    confirmation = envelope.message
    assert isinstance(confirmation, m.RequestConfirmation)
    assert confirmation.confirmation_header.message_status is MessageStatus.ERROR
    assert confirmation.confirmation_header.requesting_agency_request_id is None
    assert confirmation.error_data[0].error_type is ErrorType.BADLY_FORMED_MESSAGE
    _written(envelope)


def test_error_confirmation_for_non_iso_xml():
    envelope = error_confirmation_from_bytes(
        b"<html><body>hi</body></html>", BadlyFormed("root element 'html' is not ..."), now=NOW)
    assert isinstance(envelope.message, m.RequestConfirmation)
    _written(envelope)


def test_error_confirmation_for_half_valid_request_echoes_ids():
    data = sample("request-loaned").replace(b"<serviceType>Loan</serviceType>",
                                            b"<serviceType>Borrow</serviceType>")
    error = error_of(data)
    assert error.error_type is ErrorType.UNRECOGNISED_DATA_VALUE
    envelope = error_confirmation_from_bytes(data, error, now=NOW)
    header = envelope.message.confirmation_header
    assert isinstance(envelope.message, m.RequestConfirmation)
    assert header.requesting_agency_request_id == "5636c993-c41c-48f4-a285-470545f6f343"
    assert str(header.requesting_agency_id) == "ISIL:REQ"
    assert str(header.supplying_agency_id) == "ISIL:BROKER"
    assert header.timestamp == NOW
    assert envelope.message.error_data[0].error_value == error.value
    _written(envelope)


def test_error_confirmation_for_bad_ram_echoes_kind_and_ids():
    data = sample("reqmsg-invalid-action")
    envelope = error_confirmation_from_bytes(data, error_of(data), now=NOW)
    confirmation = envelope.message
    assert isinstance(confirmation, m.RequestingAgencyMessageConfirmation)
    assert confirmation.action is None  # the action was not one we know
    assert confirmation.confirmation_header.requesting_agency_request_id == "reqid"
    assert confirmation.error_data[0].error_type is ErrorType.UNSUPPORTED_ACTION_TYPE
    _written(envelope)


def test_error_confirmation_for_bad_sam_echoes_reason():
    data = sample("supmsg-invalid-status")
    envelope = error_confirmation_from_bytes(data, error_of(data), now=NOW)
    assert isinstance(envelope.message, m.SupplyingAgencyMessageConfirmation)
    assert envelope.message.reason_for_message is ReasonForMessage.STATUS_CHANGE
    _written(envelope)


def test_error_confirmation_answers_in_the_declared_version():
    data = f"""<ISO18626Message xmlns="{NS}" version="2021-2"><requestingAgencyMessage>
      <header><requestingAgencyRequestId>r9</requestingAgencyRequestId></header>
      <action>Lost</action></requestingAgencyMessage></ISO18626Message>""".encode()
    envelope = error_confirmation_from_bytes(data, error_of(data), now=NOW)
    assert envelope.version is Version.V2021_2
    assert envelope.message.action is Action.LOST
    assert envelope.message.confirmation_header.requesting_agency_request_id == "r9"
    _written(envelope)


# -- classify ---------------------------------------------------------------------------


def test_classify_passes_protocol_errors_through():
    error = UnrecognisedValue("x")
    assert classify(error) is error


def test_classify_lxml_syntax_error():
    with pytest.raises(etree.XMLSyntaxError) as info:
        etree.fromstring(b"<a>")
    error = classify(info.value)
    assert error.error_type is ErrorType.BADLY_FORMED_MESSAGE
    assert error.value.startswith("not well-formed XML:")


@pytest.mark.parametrize("exc, error_type", [
    (ValueError("bad\nvalue"), ErrorType.UNRECOGNISED_DATA_VALUE),
    (InvalidOperation(), ErrorType.UNRECOGNISED_DATA_VALUE),
    (KeyError("header"), ErrorType.UNRECOGNISED_DATA_ELEMENT),
    (UnicodeDecodeError("utf-8", b"\xff", 0, 1, "invalid start byte"),
     ErrorType.BADLY_FORMED_MESSAGE),
    (RuntimeError("boom"), ErrorType.BADLY_FORMED_MESSAGE),
])
def test_classify_other_exceptions(exc, error_type):
    error = classify(exc)
    assert error.error_type is error_type
    assert "\n" not in error.value


def _schema_error(data: bytes, version=Version.V1_2) -> ProtocolError:
    schema = schema_for(version)
    doc = etree.fromstring(data)
    with pytest.raises(etree.DocumentInvalid) as info:
        schema.assertValid(doc)
    return classify(info.value)


def test_classify_schema_enumeration_error():
    error = _schema_error(sample("supmsg-invalid-status"))
    assert error.error_type is ErrorType.UNRECOGNISED_DATA_VALUE
    assert error.value.startswith(
        "line 27: element 'status': 'WeCouldLoan' is not one of RequestReceived, ExpectToSupply")


def test_classify_schema_action_and_reason():
    assert _schema_error(sample("reqmsg-invalid-action")).error_type is (
        ErrorType.UNSUPPORTED_ACTION_TYPE)
    assert _schema_error(sample("supmsg-invalid-reason")).error_type is (
        ErrorType.UNSUPPORTED_REASON_FOR_MESSAGE_TYPE)


def test_classify_schema_datatype_error():
    data = sample("supmsg-ok").replace(b"<dateSent>2024-12-12T20:12:00.629725783Z",
                                       b"<dateSent>soon")
    error = _schema_error(data)
    assert error.error_type is ErrorType.UNRECOGNISED_DATA_VALUE
    assert "element 'dateSent'" in error.value


def test_classify_schema_element_errors():
    unexpected = sample("supmsg-ok").replace(b"<itemId>", b"<foo/><itemId>")
    error = _schema_error(unexpected)
    assert error.error_type is ErrorType.UNRECOGNISED_DATA_ELEMENT
    assert error.value.startswith("line ") and "element 'foo'" in error.value
    missing = sample("supmsg-ok").replace(b"<status>Loaned</status>", b"")
    assert _schema_error(missing).error_type is ErrorType.UNRECOGNISED_DATA_ELEMENT


def test_classify_schema_wrong_root_is_badly_formed():
    assert _schema_error(b"<html/>").error_type is ErrorType.BADLY_FORMED_MESSAGE


def test_classify_schema_errors_with_empty_log():
    assert classify_schema_errors([]).error_type is ErrorType.BADLY_FORMED_MESSAGE
