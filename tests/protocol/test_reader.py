"""The lenient reader: every real sample, and each quirk real peers send."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from node.protocol import messages as m
from node.protocol.codes import (
    Action,
    Code,
    ErrorType,
    ReasonForMessage,
    RequestSubType,
    ServiceType,
    Status,
    Version,
    YesNo,
)
from node.protocol.errors import ProtocolError
from node.protocol.reader import check_ids, is_ok_confirmation, parse
from node.protocol.safe_xml import parse_xml

SAMPLES = Path("/work/shared/iso18626/samples")
DATA = Path(__file__).parent / "data"
NS = "http://illtransactions.org/2013/iso18626"

# The deliberately invalid samples and the error each must give.
INVALID_SAMPLES = {
    "broker_test_testdata_msg-invalid.xml": ErrorType.BADLY_FORMED_MESSAGE,
    "broker_test_testdata_reqmsg-invalid-action.xml": ErrorType.UNSUPPORTED_ACTION_TYPE,
    "broker_test_testdata_supmsg-invalid-reason.xml":
        ErrorType.UNSUPPORTED_REASON_FOR_MESSAGE_TYPE,
    "broker_test_testdata_supmsg-invalid-status.xml": ErrorType.UNRECOGNISED_DATA_VALUE,
}
ALL_SAMPLES = sorted(p.name for p in SAMPLES.glob("*.xml"))
VALID_SAMPLES = [name for name in ALL_SAMPLES if name not in INVALID_SAMPLES]
DATA_FILES = sorted(str(p.relative_to(DATA)) for p in DATA.glob("*/*.xml"))


def read(data: str | bytes) -> m.Envelope:
    return parse(data.encode() if isinstance(data, str) else data)


def refused(data: str | bytes, error_type: ErrorType) -> ProtocolError:
    with pytest.raises(ProtocolError) as info:
        read(data)
    assert info.value.error_type is error_type, info.value
    assert "\n" not in info.value.value
    return info.value


# -- samples -------------------------------------------------------------------


def test_sample_lists_are_complete():
    assert len(ALL_SAMPLES) >= 30
    assert set(INVALID_SAMPLES) <= set(ALL_SAMPLES)


@pytest.mark.parametrize("name", VALID_SAMPLES)
def test_valid_sample_parses(name):
    envelope = parse((SAMPLES / name).read_bytes())
    assert envelope.version is Version.V1_2
    assert envelope.declared == "1.2"
    assert envelope.kind in ("request", "supplyingAgencyMessage", "requestingAgencyMessage")
    header = envelope.message.header
    assert header.timestamp.tzinfo is UTC
    assert header.multiple_item_request_id is None


@pytest.mark.parametrize("name", sorted(INVALID_SAMPLES))
def test_invalid_sample_gives_the_right_error(name):
    with pytest.raises(ProtocolError) as info:
        parse((SAMPLES / name).read_bytes())
    assert info.value.error_type is INVALID_SAMPLES[name]


def test_invalid_sample_messages_say_what_and_where():
    def value(name):
        with pytest.raises(ProtocolError) as info:
            parse((SAMPLES / name).read_bytes())
        return info.value.value

    assert value("broker_test_testdata_msg-invalid.xml") == "ISO18626Message holds no message"
    assert value("broker_test_testdata_reqmsg-invalid-action.xml").startswith(
        "requestingAgencyMessage/action: 'WeCancelThisMessage' is not an ISO 18626 action "
        "(expected one of StatusRequest, Received, Cancel"
    )
    assert value("broker_test_testdata_supmsg-invalid-status.xml").startswith(
        "supplyingAgencyMessage/statusInfo/status: 'WeCouldLoan' is not an ISO 18626 status"
    )
    assert "messageInfo/reasonForMessage: 'NoGoodReason'" in value(
        "broker_test_testdata_supmsg-invalid-reason.xml"
    )


@pytest.mark.parametrize(
    "name",
    ["broker_test_testdata_reqmsg-no-reqid.xml", "broker_test_testdata_request-no-reqid.xml",
     "broker_test_testdata_supmsg-no-reqid.xml"],
)
def test_no_reqid_samples_read_as_empty_and_check_ids_refuses_them(name):
    envelope = parse((SAMPLES / name).read_bytes())
    assert envelope.message.header.requesting_agency_request_id == ""
    with pytest.raises(ProtocolError) as info:
        check_ids(envelope.message)
    assert info.value.error_type is ErrorType.UNRECOGNISED_DATA_VALUE
    assert "requestingAgencyRequestId" in info.value.value


def test_check_ids_accepts_a_normal_message():
    check_ids(parse((SAMPLES / "broker_test_testdata_supmsg-ok.xml").read_bytes()).message)


def test_request_sample_content():
    envelope = parse((SAMPLES / "broker_test_testdata_request-loaned.xml").read_bytes())
    request = envelope.message
    assert isinstance(request, m.Request)
    assert request.header.supplying_agency_id == m.AgencyId(type=Code("ISIL"), value="BROKER")
    assert request.header.timestamp == datetime(2024, 11, 28, 10, 25, 11, 136000, tzinfo=UTC)
    assert request.bibliographic_info.title == "Lord of the Rings"
    assert request.bibliographic_info.bibliographic_item_id == (
        m.BibliographicItemId(identifier="1983", code=Code("ISBN")),
    )
    assert request.service_info.service_type is ServiceType.LOAN
    assert request.service_info.request_sub_type == (RequestSubType.PATRON_REQUEST,)
    assert request.supplier_info == (m.SupplierInfo(),)
    assert request.requested_delivery_info[0].address == m.PhysicalAddress(
        line1="The Prancing Pony Inn, Bree"
    )
    assert request.patron_info.patron_id == "123"


def test_sam_sample_content():
    sam = parse((SAMPLES / "broker_test_testdata_supmsg-ok.xml").read_bytes()).message
    assert sam.message_info.reason_for_message is ReasonForMessage.STATUS_CHANGE
    assert sam.status_info.status is Status.LOANED
    assert sam.status_info.last_change.microsecond == 629710  # nanoseconds truncated
    assert sam.delivery_info.item_id == ("12345",)


def test_comments_and_region_scheme_in_reqform_sample():
    request = parse((SAMPLES / "illmock_reqform_example.xml").read_bytes()).message
    address = request.requested_delivery_info[1].address
    assert address.region == Code("IL")  # empty ill:scheme reads as None
    assert request.requested_delivery_info[0].address.electronic_address_type == Code("Email")
    assert request.header.timestamp == datetime(1, 1, 1, tzinfo=UTC)


@pytest.mark.parametrize("name", DATA_FILES)
def test_project_test_data_parses_with_its_version(name):
    envelope = parse((DATA / name).read_bytes())
    assert envelope.version.value == name.split("/")[0]


# -- leniency --------------------------------------------------------------------


def ram(*, root_attrs=f'xmlns="{NS}" xmlns:ill="{NS}" ill:version="1.2"', action="Received",
        timestamp="2026-03-01T10:00:00Z", header_extra="", agency_type="ISIL",
        mirid="<multipleItemRequestId/>", note=""):
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<ISO18626Message {root_attrs}>
  <requestingAgencyMessage>
    <header>
      <supplyingAgencyId><agencyIdType>{agency_type}</agencyIdType><agencyIdValue>SUP</agencyIdValue></supplyingAgencyId>
      <requestingAgencyId><agencyIdType>ISIL</agencyIdType><agencyIdValue>REQ</agencyIdValue></requestingAgencyId>
      {mirid}
      <timestamp>{timestamp}</timestamp>
      <requestingAgencyRequestId>  r-1  </requestingAgencyRequestId>
      {header_extra}
    </header>
    <action>{action}</action>{note}
  </requestingAgencyMessage>
</ISO18626Message>"""


def sam(*, status="<status>Loaned</status>", reason="StatusChange", last_change=True,
        message_info_extra="", extra="", mirid="<multipleItemRequestId></multipleItemRequestId>",
        version="1.2"):
    lc = "<lastChange>2026-03-01T09:00:00Z</lastChange>" if last_change else ""
    return f"""<ISO18626Message xmlns="{NS}" xmlns:ill="{NS}" ill:version="{version}">
  <supplyingAgencyMessage>
    <header>
      <supplyingAgencyId><agencyIdType>ISIL</agencyIdType><agencyIdValue>SUP</agencyIdValue></supplyingAgencyId>
      <requestingAgencyId><agencyIdType>ISIL</agencyIdType><agencyIdValue>REQ</agencyIdValue></requestingAgencyId>
      {mirid}
      <timestamp>2026-03-01T10:00:00Z</timestamp>
      <requestingAgencyRequestId>r-1</requestingAgencyRequestId>
    </header>
    <messageInfo><reasonForMessage>{reason}</reasonForMessage>{message_info_extra}</messageInfo>
    <statusInfo>{status}{lc}</statusInfo>
    {extra}
  </supplyingAgencyMessage>
</ISO18626Message>"""


def test_baseline_ram():
    envelope = read(ram())
    assert envelope.version is Version.V1_2
    assert envelope.message.action is Action.RECEIVED
    assert envelope.message.header.requesting_agency_request_id == "r-1"  # trimmed


def test_unprefixed_version_attribute():
    envelope = read(ram(root_attrs=f'xmlns="{NS}" version="1.2"'))
    assert envelope.declared == "1.2"
    assert envelope.version is Version.V1_2


def test_other_prefix_tag0():
    data = ram(root_attrs=f'xmlns:tag0="{NS}" tag0:version="1.2"')
    data = data.replace("<", "<tag0:").replace("<tag0:/", "</tag0:").replace("<tag0:?", "<?")
    assert read(data).message.action is Action.RECEIVED


def test_no_namespace_at_all():
    envelope = read(ram(root_attrs='version="1.2"'))
    assert envelope.message.action is Action.RECEIVED
    assert envelope.declared == "1.2"


def test_missing_version_is_inferred():
    assert read(ram(root_attrs=f'xmlns="{NS}"')).version is Version.V1_2
    assert read(ram(root_attrs=f'xmlns="{NS}"', mirid="", action="Lost")).version is (
        Version.V2021_2
    )


def test_unprefixed_and_prefixed_scheme():
    plain = read(ram(agency_type='<![CDATA[ISIL]]>')).message.header.supplying_agency_id
    assert plain.type == Code("ISIL")
    data = ram().replace("<agencyIdType>ISIL</agencyIdType><agencyIdValue>SUP",
                         '<agencyIdType scheme="urn:x">isil</agencyIdType><agencyIdValue>SUP')
    assert read(data).message.header.supplying_agency_id.type == Code("ISIL", "urn:x")
    data = ram().replace("<agencyIdType>ISIL</agencyIdType><agencyIdValue>SUP",
                         '<agencyIdType ill:scheme="urn:y">ISIL</agencyIdType><agencyIdValue>SUP')
    assert read(data).message.header.supplying_agency_id.type == Code("ISIL", "urn:y")


@pytest.mark.parametrize(
    "text, expected",
    [
        ("2026-03-01T10:00:00Z", datetime(2026, 3, 1, 10, tzinfo=UTC)),
        ("2026-03-01T10:00:00+00:00", datetime(2026, 3, 1, 10, tzinfo=UTC)),
        ("2026-03-01T10:00:00+0000", datetime(2026, 3, 1, 10, tzinfo=UTC)),
        ("2026-03-01T11:00:00+01:00", datetime(2026, 3, 1, 10, tzinfo=UTC)),
        ("2026-03-01T10:00:00.5Z", datetime(2026, 3, 1, 10, 0, 0, 500000, tzinfo=UTC)),
        ("2026-03-01T10:00:00.123456789Z", datetime(2026, 3, 1, 10, 0, 0, 123456, tzinfo=UTC)),
        ("2026-03-01T10:00:00", datetime(2026, 3, 1, 10, tzinfo=UTC)),
        (" 2026-03-01T10:00:00Z\n", datetime(2026, 3, 1, 10, tzinfo=UTC)),
    ],
)
def test_timestamp_forms(text, expected):
    timestamp = read(ram(timestamp=text)).message.header.timestamp
    assert timestamp == expected
    assert timestamp.utcoffset() == timedelta(0)


@pytest.mark.parametrize("text", ["2026-13-40", "yesterday", "", "2026-03-01T25:00:00Z"])
def test_bad_timestamp(text):
    error = refused(ram(timestamp=text), ErrorType.UNRECOGNISED_DATA_VALUE)
    assert error.value == f"requestingAgencyMessage/header/timestamp: {text!r} is not a date-time"


def test_v11_header_without_multiple_item_request_id():
    envelope = read(ram(mirid="", root_attrs=f'xmlns="{NS}" xmlns:ill="{NS}" ill:version="1.1"'))
    assert envelope.version is Version.V1_2
    assert envelope.declared == "1.1"
    assert envelope.message.header.multiple_item_request_id is None


def test_multiple_item_request_id_kept_when_set():
    header = read(ram(mirid="<multipleItemRequestId> m-7 </multipleItemRequestId>")).message.header
    assert header.multiple_item_request_id == "m-7"


def test_alma_empty_status_on_notification():
    envelope = read(sam(status="<status/>", reason="Notification"))
    assert envelope.message.status_info.status is None


def test_empty_status_refused_unless_notification():
    error = refused(sam(status="<status></status>"), ErrorType.UNRECOGNISED_DATA_VALUE)
    assert "statusInfo/status" in error.value and "Notification" in error.value


def test_missing_status_is_a_missing_element():
    error = refused(sam(status=""), ErrorType.UNRECOGNISED_DATA_ELEMENT)
    assert error.value == (
        "missing mandatory element 'status' in supplyingAgencyMessage/statusInfo"
    )


def test_missing_last_change_uses_header_timestamp():
    status_info = read(sam(last_change=False)).message.status_info
    assert status_info.last_change == datetime(2026, 3, 1, 10, tzinfo=UTC)


def test_missing_date_sent_uses_header_timestamp():
    delivery = read(sam(extra="<deliveryInfo><itemId>i1</itemId></deliveryInfo>")).message
    assert delivery.delivery_info.date_sent == datetime(2026, 3, 1, 10, tzinfo=UTC)


def test_american_error_type_spelling():
    data = f"""<ISO18626Message xmlns="{NS}" version="1.2"><requestConfirmation>
      <confirmationHeader><timestamp>2026-03-01T10:00:00Z</timestamp>
      <timestampReceived>2026-03-01T10:00:00Z</timestampReceived>
      <messageStatus>error</messageStatus></confirmationHeader>
      <errorData><errorType>UnrecognizedDataValue</errorType><errorValue>x</errorValue></errorData>
    </requestConfirmation></ISO18626Message>"""
    confirmation = read(data).message
    assert confirmation.error_data == (
        m.ErrorData(error_type=ErrorType.UNRECOGNISED_DATA_VALUE, error_value="x"),
    )


def test_closed_codes_in_any_case():
    assert read(ram(action="shippedreturn")).message.action is Action.SHIPPED_RETURN
    assert read(sam(status="<status>LOANED</status>", reason="statuschange")).message \
        .status_info.status is Status.LOANED


def test_open_codes_get_canonical_case_and_keep_scheme():
    extra = """<deliveryInfo><dateSent>2026-03-01T10:00:00Z</dateSent>
      <sentVia scheme="urn:s">mail</sentVia><loanCondition>libraryuseonly</loanCondition>
      <deliveredFormat>pdf</deliveredFormat>
      <deliveryCosts><currencyCode>EUR</currencyCode><monetaryValue>12.50</monetaryValue></deliveryCosts>
      </deliveryInfo>"""
    info = read(sam(extra=extra, message_info_extra="<reasonUnfilled>notheld</reasonUnfilled>"
                    "<reasonRetry>SomethingElse</reasonRetry>")).message
    assert info.delivery_info.delivery_method == Code("Mail", "urn:s")
    assert info.delivery_info.loan_condition == (Code("LibraryUseOnly"),)
    assert info.delivery_info.item_format == Code("PDF")
    assert info.delivery_info.delivery_costs == (
        m.Costs(currency_code=Code("EUR"), monetary_value=Decimal("12.50")),
    )
    assert info.message_info.reason_unfilled == Code("NotHeld")
    assert info.message_info.reason_retry == Code("SomethingElse")  # unknown: kept as sent


def test_elements_in_any_order():
    data = ram().replace("<timestamp>2026-03-01T10:00:00Z</timestamp>", "").replace(
        "<header>", "<header><timestamp>2026-03-01T10:00:00Z</timestamp>")
    assert read(data).message.header.timestamp == datetime(2026, 3, 1, 10, tzinfo=UTC)


# -- 2021-2 shapes ------------------------------------------------------------------


def test_2021_sam_with_retry_info_and_shipping_info():
    extra = """
    <retryInfo><loanCondition>NoReproduction</loanCondition><edition>2nd</edition>
      <serviceType>Copy</serviceType>
      <offeredCosts><currencyCode>USD</currencyCode><monetaryValue>35</monetaryValue></offeredCosts>
      <retryBefore>2026-04-01T00:00:00Z</retryBefore><retryAfter>2026-03-15T00:00:00Z</retryAfter>
    </retryInfo>
    <deliveryInfo><dateSent>2026-03-01T10:00:00Z</dateSent><itemId>a</itemId><itemId>b</itemId>
      <URL>https://x.example/a</URL><deliveryMethod>Courier</deliveryMethod>
      <address><physicalAddress><region>Hovedstaden</region></physicalAddress></address>
      <itemFormat>PDF</itemFormat><serviceType>Loan</serviceType><paymentMethod>IFM</paymentMethod>
    </deliveryInfo>
    <shippingInfo><courierName>DHL</courierName><trackingId>t1</trackingId><insurance>Y</insurance></shippingInfo>"""
    envelope = read(sam(extra=extra, mirid="", version="2021-2",
                        status="<status>RetryPossible</status>"))
    assert envelope.version is Version.V2021_2
    message = envelope.message
    assert message.message_info.offered_costs == (
        m.Costs(currency_code=Code("USD"), monetary_value=Decimal(35)),
    )
    assert message.message_info.retry_after == datetime(2026, 3, 15, tzinfo=UTC)
    assert message.message_info.retry_before == datetime(2026, 4, 1, tzinfo=UTC)
    assert message.retry_info == m.RetryInfo(
        loan_condition=(Code("NoReproduction"),), edition=("2nd",), service_type=ServiceType.COPY
    )
    delivery = message.delivery_info
    assert delivery.item_id == ("a", "b")
    assert delivery.url == "https://x.example/a"
    assert delivery.delivery_method == Code("Courier")
    assert delivery.address == m.PhysicalAddress(region=Code("Hovedstaden"))
    assert delivery.item_format == Code("PDF")
    assert delivery.service_type is ServiceType.LOAN
    assert message.shipping_info == m.ShippingInfo(
        courier_name=Code("DHL"), tracking_id=("t1",), insurance=YesNo.Y
    )


def test_shapes_win_over_the_declared_version():
    # declared 1.2, but retryInfo exists only in 2021 (and nothing v1.2-only is present)
    data = sam(mirid="", extra="<retryInfo><edition>2</edition></retryInfo>")
    assert read(data).version is Version.V2021_2
    # declared 2021-2, but sentVia and a SAM multipleItemRequestId are v1.2 shapes
    data = sam(version="2021-2", extra="<deliveryInfo><dateSent>2026-03-01T10:00:00Z</dateSent>"
               "<sentVia>Mail</sentVia></deliveryInfo>")
    assert read(data).version is Version.V1_2
    # mixed evidence: the declaration decides
    data = sam(version="2021-2", extra="<retryInfo><edition>2</edition></retryInfo>")
    assert read(data).version is Version.V2021_2


@pytest.mark.parametrize("name", ["2021-2/request-maximal.xml", "2021-2/sam-retry.xml",
                                  "2021-2/ram-lost.xml", "2021-2/request-confirmation-errors.xml",
                                  "2021-2/sam-confirmation.xml", "2021-2/ram-confirmation.xml"])
def test_2021_message_of_each_kind(name):
    envelope = parse((DATA / name).read_bytes())
    assert envelope.version is Version.V2021_2


def test_2021_request_with_code_first_item_id_and_no_supplier():
    data = f"""<ISO18626Message xmlns="{NS}" xmlns:ill="{NS}" ill:version="2021-2"><request>
      <header><requestingAgencyId><agencyIdType>ISIL</agencyIdType><agencyIdValue>REQ</agencyIdValue></requestingAgencyId>
      <consortialId><agencyIdType>ISIL</agencyIdType><agencyIdValue>C</agencyIdValue></consortialId>
      <timestamp>2026-03-01T10:00:00Z</timestamp><requestingAgencyRequestId>r</requestingAgencyRequestId></header>
      <bibliographicInfo><authorId>0000-0001</authorId><volume>1</volume><volume>2</volume>
        <bibliographicItemId><bibliographicItemIdentifierCode>doi</bibliographicItemIdentifierCode>
        <bibliographicItemIdentifier>10.1/x</bibliographicItemIdentifier></bibliographicItemId></bibliographicInfo>
      <serviceInfo><serviceType>Copy</serviceType><itemFormat>PDF</itemFormat>
        <preferredEdition>ThisEdition</preferredEdition><loanCondition>NoReproduction</loanCondition></serviceInfo>
      <requestedDeliveryInfo><deliveryMethod>Email</deliveryMethod><courierName>UPS</courierName></requestedDeliveryInfo>
    </request></ISO18626Message>"""
    envelope = read(data)
    assert envelope.version is Version.V2021_2
    request = envelope.message
    assert request.header.supplying_agency_id is None
    assert request.header.consortial_id.value == "C"
    assert request.bibliographic_info.volume == ("1", "2")
    assert request.bibliographic_info.bibliographic_item_id[0].code == Code("DOI")
    assert request.service_info.item_format == Code("PDF")
    assert request.requested_delivery_info[0].courier_name == Code("UPS")


# -- refusals -----------------------------------------------------------------------


def test_unknown_element_is_unrecognised_data_element():
    error = refused(sam(message_info_extra="<foo>1</foo>"), ErrorType.UNRECOGNISED_DATA_ELEMENT)
    assert error.value == "unexpected element 'foo' in supplyingAgencyMessage/messageInfo"


def test_element_in_foreign_namespace_is_unrecognised():
    data = ram(note='<x:note xmlns:x="urn:other">hi</x:note>')
    error = refused(data, ErrorType.UNRECOGNISED_DATA_ELEMENT)
    assert "unexpected element '{urn:other}note' in requestingAgencyMessage" in error.value


@pytest.mark.parametrize(
    "needle, element, where",
    [
        ("<requestingAgencyRequestId>  r-1  </requestingAgencyRequestId>",
         "requestingAgencyRequestId", "requestingAgencyMessage/header"),
        ("<action>Received</action>", "action", "requestingAgencyMessage"),
        ("<agencyIdValue>REQ</agencyIdValue>", "agencyIdValue",
         "requestingAgencyMessage/header/requestingAgencyId"),
    ],
)
def test_missing_mandatory_element(needle, element, where):
    error = refused(ram().replace(needle, ""), ErrorType.UNRECOGNISED_DATA_ELEMENT)
    assert error.value == f"missing mandatory element '{element}' in {where}"


def test_repeated_single_element():
    error = refused(ram(note="<note>a</note><note>b</note>"), ErrorType.UNRECOGNISED_DATA_ELEMENT)
    assert error.value == "element 'note' repeated in requestingAgencyMessage"


def test_unknown_action_and_reason():
    refused(ram(action="Foo"), ErrorType.UNSUPPORTED_ACTION_TYPE)
    refused(ram(action=""), ErrorType.UNSUPPORTED_ACTION_TYPE)
    refused(sam(reason="Whatever"), ErrorType.UNSUPPORTED_REASON_FOR_MESSAGE_TYPE)


@pytest.mark.parametrize(
    "extra, words",
    [
        ("<deliveryInfo><dateSent>x</dateSent></deliveryInfo>", "is not a date-time"),
        (("<deliveryInfo><dateSent>2026-03-01T10:00:00Z</dateSent><sentToPatron>maybe"
          "</sentToPatron></deliveryInfo>"), "is not a boolean"),
        (("<deliveryInfo><dateSent>2026-03-01T10:00:00Z</dateSent><deliveryCosts><currencyCode>"
          "EUR</currencyCode><monetaryValue>lots</monetaryValue></deliveryCosts></deliveryInfo>"),
         "is not a decimal number"),
    ],
)
def test_bad_typed_values(extra, words):
    assert words in refused(sam(extra=extra), ErrorType.UNRECOGNISED_DATA_VALUE).value


def test_bad_closed_value_in_optional_field():
    error = refused(sam(message_info_extra="<answerYesNo>maybe</answerYesNo>"),
                    ErrorType.UNRECOGNISED_DATA_VALUE)
    assert error.value.startswith("supplyingAgencyMessage/messageInfo/answerYesNo: 'maybe'")


@pytest.mark.parametrize(
    "data, words",
    [
        (f'<foo xmlns="{NS}"/>', "root element 'foo' is not ISO18626Message"),
        (f'<ISO18626Message xmlns="{NS}"/>', "ISO18626Message holds no message"),
        (f'<ISO18626Message xmlns="{NS}"><bar/></ISO18626Message>',
         "'bar' is not an ISO 18626 message"),
        (f'<ISO18626Message xmlns="{NS}"><request/><request/></ISO18626Message>',
         "holds 2 elements"),
        ('<ISO18626Message xmlns="urn:other"><request/></ISO18626Message>',
         "is not ISO18626Message"),
        ("{}", "not well-formed XML"),
    ],
)
def test_not_iso18626(data, words):
    assert words in refused(data, ErrorType.BADLY_FORMED_MESSAGE).value


def test_text_element_with_children_refused():
    error = refused(ram(note="<note><b>x</b></note>"), ErrorType.UNRECOGNISED_DATA_ELEMENT)
    assert "unexpected element 'b' in requestingAgencyMessage/note" in error.value


# -- the outbox's quick look at a confirmation -------------------------------------


def _ok_quickly(data: str | bytes) -> bool:
    return is_ok_confirmation(parse_xml(data.encode() if isinstance(data, str) else data))


@pytest.mark.parametrize("name", ALL_SAMPLES + DATA_FILES)
def test_quick_ok_agrees_with_the_full_read(name):
    """Every sample: the quick look says OK only of a confirmation the full read says
    is OK; and it says so of every plain OK confirmation among them."""
    data = (SAMPLES / name if name in ALL_SAMPLES else DATA / name).read_bytes()
    try:
        message = read(data).message
    except ProtocolError:
        message = None
    header = getattr(message, "confirmation_header", None)
    full_ok = header is not None and header.message_status.value == "OK"
    assert _ok_quickly(data) is full_ok


@pytest.mark.parametrize("wrapper", [
    '<ISO18626Message xmlns="{ns}" version="1.2">{body}</ISO18626Message>',
    '<ill:ISO18626Message xmlns:ill="{ns}"><ill:x>{body}</ill:x></ill:ISO18626Message>',
    "<ISO18626Message>{body}</ISO18626Message>",
])
@pytest.mark.parametrize("status, ok", [("OK", True), (" OK\n", True), ("ERROR", False),
                                        ("ok", False), ("", False)])
def test_quick_ok_reads_only_a_plain_status(wrapper, status, ok):
    body = (f"<requestConfirmation><confirmationHeader><timestamp>2026-01-01T00:00:00Z"
            f"</timestamp><messageStatus>{status}</messageStatus></confirmationHeader>"
            f"</requestConfirmation>")
    nested = "<ill:x>" in wrapper  # not a confirmation directly under the root
    assert _ok_quickly(wrapper.format(ns=NS, body=body)) is (ok and not nested)


@pytest.mark.parametrize("data", [
    f'<ISO18626Message xmlns="{NS}"><requestConfirmation><confirmationHeader/>'
    "</requestConfirmation><request/></ISO18626Message>",  # two messages
    f'<ISO18626Message xmlns="{NS}"><request><header><messageStatus>OK</messageStatus>'
    "</header></request></ISO18626Message>",  # not a confirmation
    f'<ISO18626Message xmlns="{NS}"><requestConfirmation><messageStatus>OK</messageStatus>'
    "</requestConfirmation></ISO18626Message>",  # not in the header
    f'<other xmlns="{NS}"><requestConfirmation><confirmationHeader><messageStatus>OK'
    "</messageStatus></confirmationHeader></requestConfirmation></other>",
])
def test_quick_ok_leaves_anything_else_to_the_full_read(data):
    assert _ok_quickly(data) is False
