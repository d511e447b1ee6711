"""parse -> serialise -> parse keeps the meaning, in both versions and across them.

The writer drops sub-second precision (UTC ``...ssZ``), so a read message is
compared with its re-read self modulo microseconds.  Hypothesis builds model
objects, writes them in each version, checks the OFFICIAL schema accepts them,
and reads them back equal to what that version can carry (:func:`project`).
"""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from node.protocol import messages as m
from node.protocol.codes import (
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
from node.protocol.writer import serialise
from tests.protocol.test_writer import (
    KINDS,
    assert_lxml_markup,
    assert_officially_valid,
    maximal,
    minimal,
)

SAMPLES = Path("/work/shared/iso18626/samples")
DATA = Path(__file__).parent / "data"
INVALID = {"broker_test_testdata_msg-invalid.xml", "broker_test_testdata_reqmsg-invalid-action.xml",
           "broker_test_testdata_supmsg-invalid-reason.xml",
           "broker_test_testdata_supmsg-invalid-status.xml"}
VALID_FILES = [p for p in sorted(SAMPLES.glob("*.xml")) if p.name not in INVALID] + sorted(
    DATA.glob("*/*.xml"))


def _map(value, fn):
    """Apply ``fn`` to every dataclass in ``value``, bottom-up."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        changes = {f.name: _map(getattr(value, f.name), fn) for f in dataclasses.fields(value)}
        return fn(dataclasses.replace(value, **changes))
    if isinstance(value, tuple):
        return tuple(_map(v, fn) for v in value)
    if isinstance(value, datetime):
        return value.replace(microsecond=0)
    return value


def whole_seconds(value):
    return _map(value, lambda obj: obj)


@pytest.mark.parametrize("path", VALID_FILES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_file_round_trip(path):
    first = parse(path.read_bytes())
    data = serialise(first)
    assert_officially_valid(data, first.version)
    second = parse(data)
    assert second == whole_seconds(first)
    assert serialise(second) == data


@pytest.mark.parametrize("version", list(Version), ids=lambda v: v.value)
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("build", [maximal, minimal])
def test_model_round_trip(kind, version, build):
    envelope = m.Envelope(version=version, message=build(kind, version))
    assert parse(serialise(envelope)) == envelope


@pytest.mark.parametrize("path", [p for p in VALID_FILES if p.parent.name != "2021-2"],
                         ids=lambda p: p.name)
def test_v12_written_as_2021_keeps_shared_meaning(path):
    first = parse(path.read_bytes())
    envelope = m.Envelope(version=Version.V2021_2, message=first.message)
    if isinstance(first.message, m.Request) and first.message.service_info is None:
        with pytest.raises(ValueError, match="serviceInfo is mandatory"):
            serialise(envelope)  # optional in v1.2, mandatory in 2021-2
        return
    data = serialise(envelope)
    assert_officially_valid(data, Version.V2021_2)
    second = parse(data)
    assert second.version is Version.V2021_2
    assert second.message == project(whole_seconds(first.message), Version.V2021_2)


# -- what survives a trip through one version ------------------------------------------

_V21_ONLY_ENUMS = {Action.HOLD_RETURN, Action.LOST, Status.HOLD_RETURN,
                   Status.RELEASE_HOLD_RETURN}


def project(message, version: Version):
    """The message as it reads back after being written in ``version``."""
    v12 = version is Version.V1_2
    kind = message.KIND

    def fix(obj):
        r = dataclasses.replace
        if isinstance(obj, m.Header):
            obj = r(obj, multiple_item_request_id=obj.multiple_item_request_id or None)
            if v12:
                return r(obj, consortial_id=None)
            if kind == "request":
                return r(obj, supplying_agency_request_id=None)
            if kind == "supplyingAgencyMessage":
                return r(obj, multiple_item_request_id=None, consortial_id=None,
                         requesting_agency_authentication=None)
            return r(obj, multiple_item_request_id=None)
        if isinstance(obj, m.ConfirmationHeader):
            return r(obj, multiple_item_request_id=None if not v12
                     else obj.multiple_item_request_id or None)
        if isinstance(obj, m.PhysicalAddress) and not v12 and obj.region is not None:
            return r(obj, region=Code(obj.region.value))
        if isinstance(obj, m.SupplyingAgencyMessage):
            retry = None if v12 or obj.retry_info == m.RetryInfo() else obj.retry_info
            return r(obj, retry_info=retry, shipping_info=None if v12 else obj.shipping_info)
        if not v12:
            return obj
        if isinstance(obj, m.BibliographicInfo):
            return r(obj, author_id=None, volume=obj.volume[:1])
        if isinstance(obj, m.PublicationInfo):
            return r(obj, publisher_id=None)
        if isinstance(obj, m.ServiceInfo):
            return r(obj, preferred_edition=None, loan_condition=(),
                     request_sub_type=obj.request_sub_type[:3])
        if isinstance(obj, m.RequestedDeliveryInfo):
            return r(obj, delivery_method=None, courier_name=None)
        if isinstance(obj, m.MessageInfo):
            return r(obj, offered_costs=obj.offered_costs[:1])
        if isinstance(obj, m.DeliveryInfo):
            return r(obj, url=None, address=None, service_type=None, payment_method=None,
                     item_id=obj.item_id[:1], loan_condition=obj.loan_condition[:1],
                     delivery_costs=obj.delivery_costs[:1])
        if isinstance(obj, (m.RequestConfirmation, m.SupplyingAgencyMessageConfirmation,
                            m.RequestingAgencyMessageConfirmation)):
            obj = r(obj, error_data=obj.error_data[:1])
            if isinstance(obj, m.RequestingAgencyMessageConfirmation) and (
                    obj.action in _V21_ONLY_ENUMS):
                obj = r(obj, action=None)
            return obj
        return obj

    return _map(message, fix)


# -- Hypothesis strategies for the model ---------------------------------------------------

text = st.text(
    alphabet=st.characters(codec="utf-8", categories=("L", "N", "P", "S", "Zs")),
    max_size=12,
).filter(lambda s: s == s.strip())
words = st.sampled_from(["", "a", "x-1", "Tolkien", "ÆØÅ æøå", "a < b & c", "]]>"])
some_text = st.one_of(words, text)
opt_text = st.none() | some_text
nonempty_text = some_text.filter(bool)
code_values = st.sampled_from(["ISIL", "ISBN", "Mail", "PDF", "Loan-X", "local code", "US-CCG",
                               "EUR", "DK"])
schemes = st.none() | st.sampled_from(["http://example.org/scheme", "urn:x:y"])
codes = st.builds(Code, code_values, schemes)
opt_code = st.none() | codes
datetimes = st.datetimes(min_value=datetime(1900, 1, 1), max_value=datetime(2100, 1, 1),
                         timezones=st.just(UTC)).map(lambda d: d.replace(microsecond=0))
opt_dt = st.none() | datetimes
decimals = st.decimals(min_value=Decimal(-1000), max_value=Decimal(100000), places=2,
                       allow_nan=False, allow_infinity=False)
sort_orders = st.none() | st.integers(min_value=0, max_value=10_000)


def tup(strategy, max_size=2):
    return st.lists(strategy, max_size=max_size).map(tuple)


def opt(strategy):
    return st.none() | strategy


agency_ids = st.builds(m.AgencyId, type=codes, value=some_text)
costs = st.builds(m.Costs, currency_code=codes, monetary_value=decimals)
physical = st.builds(m.PhysicalAddress, line1=opt_text, line2=opt_text, locality=opt_text,
                     postal_code=opt_text, region=opt_code, country=opt_code)
addresses = physical | st.builds(m.ElectronicAddress, electronic_address_type=codes,
                                 electronic_address_data=some_text)
enum = st.sampled_from


def headers(kind):
    return st.builds(
        m.Header, supplying_agency_id=agency_ids, requesting_agency_id=agency_ids,
        timestamp=datetimes, requesting_agency_request_id=some_text,
        multiple_item_request_id=opt_text, supplying_agency_request_id=opt_text,
        requesting_agency_authentication=opt(st.builds(m.Authentication, account_id=opt_text,
                                                       security_code=opt_text)),
        consortial_id=opt(agency_ids))


requests = st.builds(
    m.Request,
    header=headers("request"),
    bibliographic_info=st.builds(
        m.BibliographicInfo, supplier_unique_record_id=opt_text, title=opt_text,
        author=opt_text, author_id=opt_text, subtitle=opt_text, edition=opt_text,
        volume=tup(some_text, 3), issue=opt_text,
        bibliographic_item_id=tup(st.builds(m.BibliographicItemId, identifier=some_text,
                                            code=codes)),
        bibliographic_record_id=tup(st.builds(m.BibliographicRecordId, identifier=some_text,
                                              code=codes))),
    publication_info=opt(st.builds(m.PublicationInfo, publisher=opt_text,
                                   publisher_id=opt_text, publication_type=opt_code,
                                   publication_date=opt_text)),
    service_info=st.builds(
        m.ServiceInfo, service_type=enum(list(ServiceType)),
        request_type=opt(enum(list(RequestType))),
        request_sub_type=tup(enum(list(RequestSubType)), 4),
        requesting_agency_previous_request_id=opt_text, service_level=opt_code,
        item_format=opt_code, need_before_date=opt_dt, copyright_compliance=opt_code,
        any_edition=opt(enum(list(YesNo))), preferred_edition=opt(enum(list(PreferredEdition))),
        loan_condition=tup(codes), start_date=opt_dt, end_date=opt_dt, note=opt_text),
    supplier_info=tup(st.builds(
        m.SupplierInfo, sort_order=sort_orders, supplier_code=opt(agency_ids),
        supplier_description=opt_text,
        bibliographic_record_id=opt(st.builds(m.BibliographicRecordId, identifier=some_text,
                                              code=codes)),
        call_number=opt_text)),
    requested_delivery_info=tup(st.builds(
        m.RequestedDeliveryInfo, sort_order=sort_orders, address=opt(addresses),
        delivery_method=opt_code, courier_name=opt_code)),
    requesting_agency_info=opt(st.builds(m.RequestingAgencyInfo, name=opt_text,
                                         address=tup(addresses))),
    patron_info=opt(st.builds(m.PatronInfo, patron_id=opt_text, patron_type=opt_code,
                              send_to_patron=opt(enum(list(YesNo))), address=tup(addresses))),
    billing_info=opt(st.builds(m.BillingInfo, payment_method=opt_code,
                               maximum_costs=opt(costs), billing_name=opt_text,
                               address=opt(addresses))),
)
sams = st.builds(
    m.SupplyingAgencyMessage,
    header=headers("supplyingAgencyMessage"),
    message_info=st.builds(
        m.MessageInfo, reason_for_message=enum(list(ReasonForMessage)),
        answer_yes_no=opt(enum(list(YesNo))), note=opt_text, reason_unfilled=opt_code,
        reason_retry=opt_code, offered_costs=tup(costs), retry_after=opt_dt,
        retry_before=opt_dt),
    status_info=st.builds(m.StatusInfo, status=enum(list(Status)), last_change=datetimes,
                          expected_delivery_date=opt_dt, due_date=opt_dt),
    retry_info=opt(st.builds(
        m.RetryInfo, loan_condition=tup(codes), edition=tup(some_text),
        item_format=tup(codes), service_type=opt(enum(list(ServiceType))),
        payment_method=tup(codes))),
    delivery_info=opt(st.builds(
        m.DeliveryInfo, date_sent=datetimes, item_id=tup(some_text), url=opt_text,
        delivery_method=opt_code, address=opt(addresses), sent_to_patron=opt(st.booleans()),
        loan_condition=tup(codes), item_format=opt_code,
        service_type=opt(enum(list(ServiceType))), delivery_costs=tup(costs),
        payment_method=opt_code)),
    shipping_info=opt(st.builds(m.ShippingInfo, courier_name=opt_code,
                                tracking_id=tup(some_text), insurance=opt(enum(list(YesNo))),
                                insurance_costs=tup(costs))),
    return_info=opt(st.builds(m.ReturnInfo, return_agency_id=opt(agency_ids), name=opt_text,
                              physical_address=opt(physical))),
)
rams = st.builds(m.RequestingAgencyMessage, header=headers("requestingAgencyMessage"),
                 action=enum(list(Action)), note=opt_text)
confirmation_headers = st.builds(
    m.ConfirmationHeader, timestamp=datetimes, timestamp_received=datetimes,
    message_status=enum(list(MessageStatus)), supplying_agency_id=opt(agency_ids),
    requesting_agency_id=opt(agency_ids), requesting_agency_request_id=opt_text,
    multiple_item_request_id=opt_text)
error_data = tup(st.builds(m.ErrorData, error_type=enum(list(ErrorType)), error_value=opt_text))
confirmations = st.one_of(
    st.builds(m.RequestConfirmation, confirmation_header=confirmation_headers,
              error_data=error_data),
    st.builds(m.SupplyingAgencyMessageConfirmation, confirmation_header=confirmation_headers,
              reason_for_message=opt(enum(list(ReasonForMessage))), error_data=error_data),
    st.builds(m.RequestingAgencyMessageConfirmation, confirmation_header=confirmation_headers,
              action=opt(enum(list(Action))), error_data=error_data),
)
any_message = st.one_of(requests, sams, rams, confirmations)


def needs_2021(message) -> bool:
    return (isinstance(message, m.RequestingAgencyMessage) and message.action in _V21_ONLY_ENUMS
            ) or (isinstance(message, m.SupplyingAgencyMessage)
                  and message.status_info.status in _V21_ONLY_ENUMS)


@pytest.mark.parametrize("version", list(Version), ids=lambda v: v.value)
@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(message=any_message)
def test_hypothesis_round_trip(version, message):
    envelope = m.Envelope(version=version, message=message)
    if version is Version.V1_2 and needs_2021(message):
        with pytest.raises(ValueError):
            serialise(envelope)
        return
    data = serialise(envelope)
    assert_officially_valid(data, version)
    assert_lxml_markup(data)
    back = parse(data)
    assert back.version is version
    assert back.message == project(message, version)
