"""The strict writer: every kind, both versions, valid against the OFFICIAL schemas.

The official XSDs in /work/shared/iso18626/ are a test oracle only.
"""

from __future__ import annotations

import re
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from functools import cache

import pytest
from lxml import etree

from node.protocol import messages as m
from node.protocol.codes import (
    NAMESPACE,
    Action,
    Code,
    ErrorType,
    MessageStatus,
    PreferredEdition,
    ReasonForMessage,
    RequestSubType,
    RequestType,
    ServiceType,
    Status,
    Version,
    YesNo,
)
from node.protocol.reader import parse
from node.protocol.writer import format_datetime, serialise, to_tree

OFFICIAL = {
    Version.V1_2: "/work/shared/iso18626/ISO-18626-v1_2.xsd",
    Version.V2021_2: "/work/shared/iso18626/ISO-18626-2021-2.xsd",
}
Q = "{" + NAMESPACE + "}"
T0 = datetime(2026, 3, 1, 10, 0, 0, tzinfo=UTC)


@cache
def official(version: Version) -> etree.XMLSchema:
    return etree.XMLSchema(etree.parse(OFFICIAL[version]))


def assert_officially_valid(data: bytes, version: Version) -> None:
    schema = official(version)
    doc = etree.fromstring(data)
    assert schema.validate(doc), f"{schema.error_log.last_error}\n{data.decode()}"


def agency(value: str, kind: str = "ISIL") -> m.AgencyId:
    return m.AgencyId(type=Code(kind), value=value)


def costs(value: str, currency: str = "EUR") -> m.Costs:
    return m.Costs(currency_code=Code(currency, "urn:iso:std:iso:4217"),
                   monetary_value=Decimal(value))


def physical(n: int = 1) -> m.PhysicalAddress:
    return m.PhysicalAddress(line1=f"Line {n}", line2="c/o ILL", locality="Aarhus",
                             postal_code="8000", region=Code("DK-82"), country=Code("DK"))


def electronic() -> m.ElectronicAddress:
    return m.ElectronicAddress(electronic_address_type=Code("Email"),
                               electronic_address_data="ill@example.org")


def header(kind: str, *, full: bool = True, v21: bool = True) -> m.Header:
    if not full:
        return m.Header(supplying_agency_id=agency("SUP"), requesting_agency_id=agency("REQ"),
                        timestamp=T0, requesting_agency_request_id="r-1")
    return m.Header(
        supplying_agency_id=agency("SUP"),
        requesting_agency_id=agency("REQ"),
        timestamp=T0,
        requesting_agency_request_id="r-1",
        multiple_item_request_id="multi-1" if kind == "request" or not v21 else None,
        supplying_agency_request_id=("s-1" if kind != "request" or not v21 else None),
        requesting_agency_authentication=(
            m.Authentication(account_id="acct", security_code="secret")
            if kind != "supplyingAgencyMessage" or not v21 else None),
        consortial_id=agency("CONS") if v21 and kind != "supplyingAgencyMessage" else None,
    )


def maximal_request(v21: bool) -> m.Request:
    two = 2 if v21 else 1
    return m.Request(
        header=header("request", v21=v21),
        bibliographic_info=m.BibliographicInfo(
            supplier_unique_record_id="rec-1", title="Title", author="Author",
            author_id="0000-0001-2345-6789" if v21 else None, subtitle="Sub",
            series_title="Series", edition="2nd", title_of_component="Chapter 3",
            author_of_component="C. Author", volume=("1", "2")[:two], issue="4",
            pages_requested="10-20", estimated_no_pages="11",
            bibliographic_item_id=(
                m.BibliographicItemId(identifier="9780000000001", code=Code("ISBN")),
                m.BibliographicItemId(identifier="1234-5678", code=Code("ISSN", "urn:s")),
            ),
            sponsor="Sponsor", information_source="Source",
            bibliographic_record_id=(
                m.BibliographicRecordId(identifier="ocm1", code=Code("OCLC")),
                m.BibliographicRecordId(identifier="n1", code=Code("LCCN")),
            ),
        ),
        publication_info=m.PublicationInfo(
            publisher="Pub", publisher_id="isni-1" if v21 else None,
            publication_type=Code("Book"), publication_date="1954",
            place_of_publication="London"),
        service_info=m.ServiceInfo(
            service_type=ServiceType.COPY_OR_LOAN, request_type=RequestType.RETRY,
            request_sub_type=(RequestSubType.PATRON_REQUEST, RequestSubType.BOOKING_REQUEST),
            requesting_agency_previous_request_id="r-0", service_level=Code("Rush"),
            item_format=Code("PDF"), need_before_date=T0 + timedelta(days=30),
            copyright_compliance=Code("US-CCG"), any_edition=YesNo.N,
            preferred_edition=PreferredEdition.THIS_EDITION if v21 else None,
            loan_condition=(Code("LibraryUseOnly"), Code("NoReproduction")) if v21 else (),
            start_date=T0 + timedelta(days=1), end_date=T0 + timedelta(days=2), note="Note"),
        supplier_info=(
            m.SupplierInfo(sort_order=1, supplier_code=agency("SUP"),
                           supplier_description="First", bibliographic_record_id=m.
                           BibliographicRecordId(identifier="x1", code=Code("LA")),
                           call_number="QA76", summary_holdings="v.1-", availability_note="ok"),
            m.SupplierInfo(sort_order=2, supplier_code=agency("SUP2")),
        ),
        requested_delivery_info=(
            m.RequestedDeliveryInfo(
                sort_order=1, address=electronic(),
                delivery_method=Code("Email") if v21 else None,
                courier_name=Code("DHL") if v21 else None),
            m.RequestedDeliveryInfo(sort_order=2, address=physical()),
        ),
        requesting_agency_info=m.RequestingAgencyInfo(
            name="Req Library", contact_name="Ann", address=(electronic(), physical(2))),
        patron_info=m.PatronInfo(patron_id="p1", surname="Doe", given_name="Jo",
                                 patron_type=Code("Student"), send_to_patron=YesNo.Y,
                                 address=(physical(3),)),
        billing_info=m.BillingInfo(payment_method=Code("IFM"), maximum_costs=costs("25.00"),
                                   billing_method=Code("Account"), billing_name="Req Library",
                                   address=physical(4)),
    )


def maximal_sam(v21: bool) -> m.SupplyingAgencyMessage:
    two = 2 if v21 else 1
    return m.SupplyingAgencyMessage(
        header=header("supplyingAgencyMessage", v21=v21),
        message_info=m.MessageInfo(
            reason_for_message=ReasonForMessage.STATUS_CHANGE, answer_yes_no=YesNo.Y,
            note="A note", reason_unfilled=Code("NotHeld"), reason_retry=Code("OnLoan"),
            offered_costs=(costs("35"), costs("40.5", "USD"))[:two],
            retry_after=T0 + timedelta(days=5), retry_before=T0 + timedelta(days=50)),
        status_info=m.StatusInfo(status=Status.LOANED, last_change=T0,
                                 expected_delivery_date=T0 + timedelta(days=3),
                                 due_date=T0 + timedelta(days=30)),
        retry_info=m.RetryInfo(
            loan_condition=(Code("LibraryUseOnly"), Code("NoReproduction")),
            edition=("1st", "2nd"), item_format=(Code("PDF"), Code("Printed")),
            volume=("1", "2"), service_type=ServiceType.COPY,
            service_level=(Code("Normal"), Code("Rush")),
            delivery_method=(Code("Mail"), Code("Courier")),
            courier_name=(Code("DHL"), Code("UPS")),
            payment_method=(Code("IFM"), Code("Paypal"))) if v21 else None,
        delivery_info=m.DeliveryInfo(
            date_sent=T0, item_id=("item-1", "item-2")[:two],
            url="https://example.org/doc.pdf" if v21 else None,
            delivery_method=Code("Mail"), address=physical(5) if v21 else None,
            sent_to_patron=False,
            loan_condition=(Code("LibraryUseOnly"), Code("SignatureRequired"))[:two],
            item_format=Code("Printed"), service_type=ServiceType.LOAN if v21 else None,
            delivery_costs=(costs("5.00"), costs("1.25"))[:two],
            payment_method=Code("IFM") if v21 else None),
        shipping_info=m.ShippingInfo(
            courier_name=Code("DHL"), tracking_id=("t1", "t2"), insurance=YesNo.Y,
            insurance_third_party=YesNo.N, third_party_name="Insurer",
            insurance_costs=(costs("2.00"), costs("3.00"))) if v21 else None,
        return_info=m.ReturnInfo(return_agency_id=agency("RET"), name="Returns desk",
                                 physical_address=physical(6)),
    )


def maximal_ram(v21: bool) -> m.RequestingAgencyMessage:
    return m.RequestingAgencyMessage(header=header("requestingAgencyMessage", v21=v21),
                                     action=Action.LOST if v21 else Action.RENEW, note="Note")


def confirmation_header(v21: bool, status=MessageStatus.ERROR) -> m.ConfirmationHeader:
    return m.ConfirmationHeader(
        timestamp=T0, timestamp_received=T0 - timedelta(seconds=1), message_status=status,
        supplying_agency_id=agency("SUP"), requesting_agency_id=agency("REQ"),
        requesting_agency_request_id="r-1",
        multiple_item_request_id=None if v21 else "multi-1")


def errors(v21: bool) -> tuple[m.ErrorData, ...]:
    data = (m.ErrorData(error_type=ErrorType.UNRECOGNISED_DATA_VALUE, error_value="bad id"),
            m.ErrorData(error_type=ErrorType.BADLY_FORMED_MESSAGE, error_value="and more"))
    return data if v21 else data[:1]


def maximal(kind: str, version: Version) -> m.Message:
    v21 = version is Version.V2021_2
    if kind == "request":
        return maximal_request(v21)
    if kind == "supplyingAgencyMessage":
        return maximal_sam(v21)
    if kind == "requestingAgencyMessage":
        return maximal_ram(v21)
    if kind == "requestConfirmation":
        return m.RequestConfirmation(confirmation_header=confirmation_header(v21),
                                     error_data=errors(v21))
    if kind == "supplyingAgencyMessageConfirmation":
        return m.SupplyingAgencyMessageConfirmation(
            confirmation_header=confirmation_header(v21),
            reason_for_message=ReasonForMessage.RENEW_RESPONSE, error_data=errors(v21))
    return m.RequestingAgencyMessageConfirmation(
        confirmation_header=confirmation_header(v21),
        action=Action.HOLD_RETURN if v21 else Action.CANCEL, error_data=errors(v21))


def minimal(kind: str, version: Version) -> m.Message:
    v21 = version is Version.V2021_2
    ch = m.ConfirmationHeader(timestamp=T0, timestamp_received=T0,
                              message_status=MessageStatus.OK)
    if kind == "request":
        return m.Request(
            header=header("request", full=False),
            bibliographic_info=m.BibliographicInfo(),
            service_info=m.ServiceInfo(service_type=ServiceType.LOAN) if v21 else None)
    if kind == "supplyingAgencyMessage":
        return m.SupplyingAgencyMessage(
            header=header(kind, full=False),
            message_info=m.MessageInfo(reason_for_message=ReasonForMessage.REQUEST_RESPONSE),
            status_info=m.StatusInfo(status=Status.WILL_SUPPLY, last_change=T0))
    if kind == "requestingAgencyMessage":
        return m.RequestingAgencyMessage(header=header(kind, full=False),
                                         action=Action.STATUS_REQUEST)
    return m.MESSAGE_TYPES[kind](confirmation_header=ch)


KINDS = list(m.MESSAGE_TYPES)
CASES = [(kind, version) for kind in KINDS for version in Version]
IDS = [f"{kind}-{version.value}" for kind, version in CASES]


@pytest.mark.parametrize("kind, version", CASES, ids=IDS)
@pytest.mark.parametrize("build", [maximal, minimal])
def test_every_kind_validates_against_the_official_schema(kind, version, build):
    data = serialise(m.Envelope(version=version, message=build(kind, version)))
    assert_officially_valid(data, version)


@pytest.mark.parametrize("kind, version", CASES, ids=IDS)
@pytest.mark.parametrize("build", [maximal, minimal])
def test_validate_flag_uses_our_schema(kind, version, build):
    envelope = m.Envelope(version=version, message=build(kind, version))
    assert serialise(envelope, validate=True) == serialise(envelope)


@pytest.mark.parametrize("kind", KINDS)
def test_2021_maximal_written_as_v12_drops_what_v12_lacks(kind):
    data = serialise(m.Envelope(version=Version.V1_2,
                                message=_v12_writable(maximal(kind, Version.V2021_2))))
    assert_officially_valid(data, Version.V1_2)
    for name in (b"consortialId", b"authorId", b"publisherId", b"preferredEdition",
                 b"retryInfo", b"shippingInfo", b"URL", b"courierName", b"itemFormat",
                 b"deliveryMethod", b"<serviceType>Loan"):
        assert name not in data


def _v12_writable(message):
    if isinstance(message, m.RequestingAgencyMessage):
        return replace(message, action=Action.RENEW)
    return message


def test_envelope_framing():
    data = serialise(m.Envelope(version=Version.V1_2, message=minimal("request", Version.V1_2)))
    assert data.startswith(b'<?xml version="1.0" encoding="UTF-8"?>\n<ISO18626Message '
                           b'xmlns="http://illtransactions.org/2013/iso18626" '
                           b'xmlns:ill="http://illtransactions.org/2013/iso18626" '
                           b'ill:version="1.2"><request><header>')
    assert b"<multipleItemRequestId></multipleItemRequestId>" in data


def test_scheme_is_prefixed():
    data = serialise(m.Envelope(version=Version.V1_2, message=maximal_request(False)))
    assert b'<bibliographicItemIdentifierCode ill:scheme="urn:s">ISSN<' in data
    assert b' scheme=' not in data


def test_v12_element_order_and_names():
    root = to_tree(m.Envelope(version=Version.V1_2, message=maximal_sam(False)))
    delivery = root.find(f"{Q}supplyingAgencyMessage/{Q}deliveryInfo")
    assert [etree.QName(c).localname for c in delivery] == [
        "dateSent", "itemId", "sentVia", "sentToPatron", "loanCondition", "deliveredFormat",
        "deliveryCosts"]
    info = root.find(f"{Q}supplyingAgencyMessage/{Q}messageInfo")
    assert [etree.QName(c).localname for c in info][-3:] == [
        "offeredCosts", "retryAfter", "retryBefore"]


def test_2021_element_order_and_names():
    root = to_tree(m.Envelope(version=Version.V2021_2, message=maximal_sam(True)))
    sam = root.find(f"{Q}supplyingAgencyMessage")
    assert [etree.QName(c).localname for c in sam] == [
        "header", "messageInfo", "statusInfo", "retryInfo", "deliveryInfo", "shippingInfo",
        "returnInfo"]
    assert [etree.QName(c).localname for c in sam.find(f"{Q}header")] == [
        "supplyingAgencyId", "requestingAgencyId", "timestamp", "requestingAgencyRequestId",
        "supplyingAgencyRequestId"]
    retry = [etree.QName(c).localname for c in sam.find(f"{Q}retryInfo")]
    assert retry[-4:] == ["paymentMethod", "paymentMethod", "retryBefore", "retryAfter"]
    request = to_tree(m.Envelope(version=Version.V2021_2, message=maximal_request(True)))
    item_id = request.find(f".//{Q}bibliographicItemId")
    assert [etree.QName(c).localname for c in item_id] == [
        "bibliographicItemIdentifierCode", "bibliographicItemIdentifier"]
    region = request.find(f".//{Q}region")
    assert region.text == "DK-82" and not region.attrib


def test_2021_omits_multiple_item_request_id_where_removed():
    sam = replace(minimal("supplyingAgencyMessage", Version.V2021_2),
                  header=replace(header("supplyingAgencyMessage", full=False),
                                 multiple_item_request_id="x"))
    data = serialise(m.Envelope(version=Version.V2021_2, message=sam))
    assert b"multipleItemRequestId" not in data
    assert_officially_valid(data, Version.V2021_2)


@pytest.mark.parametrize(
    "value, text",
    [
        (datetime(2026, 3, 1, 10, 0, 0, 999999, tzinfo=UTC), "2026-03-01T10:00:00Z"),
        (datetime(2026, 3, 1, 11, 0, 0, tzinfo=timezone(timedelta(hours=1))),
         "2026-03-01T10:00:00Z"),
        (datetime(2026, 3, 1, 10, 0, 0), "2026-03-01T10:00:00Z"),
        (datetime(1, 1, 1, tzinfo=UTC), "0001-01-01T00:00:00Z"),
    ],
)
def test_timestamps_are_utc_z_without_fractions(value, text):
    assert format_datetime(value) == text


@pytest.mark.parametrize("value, text", [("1E+2", "100"), ("35.00", "35.00"), ("-0.5", "-0.5"),
                                         ("1E-7", "0.0000001")])
def test_decimals_written_plainly(value, text):
    sam = replace(minimal("supplyingAgencyMessage", Version.V1_2),
                  message_info=m.MessageInfo(reason_for_message=ReasonForMessage.NOTIFICATION,
                                             offered_costs=(costs(value),)))
    data = serialise(m.Envelope(version=Version.V1_2, message=sam))
    assert f"<monetaryValue>{text}</monetaryValue>".encode() in data


def test_v12_cannot_carry_2021_only_values_in_business_messages():
    with pytest.raises(ValueError, match="v1.2|1.2"):
        serialise(m.Envelope(version=Version.V1_2, message=maximal_ram(True)))
    sam = replace(minimal("supplyingAgencyMessage", Version.V1_2),
                  status_info=m.StatusInfo(status=Status.HOLD_RETURN, last_change=T0))
    with pytest.raises(ValueError):
        serialise(m.Envelope(version=Version.V1_2, message=sam))


def test_v12_confirmation_drops_2021_only_action_echo():
    confirmation = maximal("requestingAgencyMessageConfirmation", Version.V2021_2)
    data = serialise(m.Envelope(version=Version.V1_2, message=confirmation))
    assert b"<action>" not in data
    assert_officially_valid(data, Version.V1_2)


def test_unwritable_messages():
    request = minimal("request", Version.V1_2)
    with pytest.raises(ValueError, match="serviceInfo is mandatory"):
        serialise(m.Envelope(version=Version.V2021_2, message=request))
    no_supplier = replace(request, header=replace(request.header, supplying_agency_id=None))
    with pytest.raises(ValueError, match="supplyingAgencyId is mandatory"):
        serialise(m.Envelope(version=Version.V1_2, message=no_supplier))
    patron = replace(minimal("request", Version.V2021_2), header=no_supplier.header)
    assert_officially_valid(serialise(m.Envelope(version=Version.V2021_2, message=patron)),
                            Version.V2021_2)
    alma = replace(minimal("supplyingAgencyMessage", Version.V1_2),
                   status_info=m.StatusInfo(status=None, last_change=T0))
    with pytest.raises(ValueError, match="status"):
        serialise(m.Envelope(version=Version.V1_2, message=alma))


def test_reads_back_as_the_written_version():
    for kind, version in CASES:
        data = serialise(m.Envelope(version=version, message=maximal(kind, version)))
        assert parse(data).version is version, (kind, version)


def assert_lxml_markup(data: bytes) -> None:
    """``data`` is the markup lxml writes for the tree it reads from it (an empty text
    element reads back without text, so both forms compare as ``<x/>``)."""
    declaration, _, document = data.partition(b"\n")
    assert declaration == b'<?xml version="1.0" encoding="UTF-8"?>'
    again = etree.tostring(etree.fromstring(data), encoding="UTF-8")
    assert _EMPTY.sub(rb"<\1\2/>", document) == again


# An element with no content: its name, then its attributes if any (after a space).
_EMPTY = re.compile(rb"<(\w+)(\s[^<>]*)?></\1>")


@pytest.mark.parametrize(("kind", "version"), CASES)
def test_markup_is_what_lxml_writes_for_the_same_tree(kind, version):
    for build in (maximal, minimal):
        data = serialise(m.Envelope(version=version, message=build(kind, version)))
        assert_lxml_markup(data)


AWKWARD = ["a & b < c > d", 'say "no"', "it's", "line\nbreak\ttab", "carriage\rreturn",
           "]]>", "ÆØÅ \u2028 \x85 \x7f 😀", "&amp;"]


@pytest.mark.parametrize("text", AWKWARD)
def test_awkward_text_is_escaped_and_reads_back(text):
    sam = maximal_sam(True)
    sam = replace(sam, message_info=replace(sam.message_info, note=text),
                  header=replace(sam.header, requesting_agency_id=agency(text)))
    for version in Version:
        data = serialise(m.Envelope(version=version, message=sam))
        assert_lxml_markup(data)
        assert_officially_valid(data, version)
        back = parse(data).message
        assert back.message_info.note == text.strip()
        assert back.header.requesting_agency_id.value == text.strip()


@pytest.mark.parametrize("text", AWKWARD)
def test_awkward_attribute_is_escaped_and_reads_back(text):
    """A scheme is an xs:anyURI, so not every text is valid there: only the escaping
    and the reading back are tested."""
    sam = maximal_sam(True)
    sam = replace(sam, header=replace(sam.header, requesting_agency_id=m.AgencyId(
        type=Code("ISIL", scheme=text), value="X")))
    for version in Version:
        data = serialise(m.Envelope(version=version, message=sam))
        assert_lxml_markup(data)
        assert parse(data).message.header.requesting_agency_id.type.scheme == text


@pytest.mark.parametrize("bad", ["\x00", "\x0b", "\x1f", "\ud800", "\ufffe", "\uffff"])
@pytest.mark.parametrize("where", ["text", "attribute"])
def test_characters_xml_cannot_carry_are_refused(bad, where):
    sam = maximal_sam(True)
    if where == "text":
        sam = replace(sam, message_info=replace(sam.message_info, note=f"a{bad}b"))
    else:
        sam = replace(sam, header=replace(sam.header, requesting_agency_id=m.AgencyId(
            type=Code("ISIL", scheme=f"a{bad}b"), value="X")))
    with pytest.raises(ValueError, match="which XML cannot carry"):
        serialise(m.Envelope(version=Version.V2021_2, message=sam))
