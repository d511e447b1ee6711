"""The ISO 18626 message model.

One model covers v1.2 (2017) and 2021-2: it is the union of both, with the
2021 names where the editions renamed things.  The reader maps either wire
form onto it and the writer maps it back onto the chosen version, so the
rest of the node never branches on the version.

Mappings (v1.2 wire name -> model field):

* ``sentVia``            -> ``DeliveryInfo.delivery_method``
* ``deliveredFormat``    -> ``DeliveryInfo.item_format``
* ``preferredFormat``    -> ``ServiceInfo.item_format``
* ``messageInfo/offeredCosts, retryAfter, retryBefore`` stay on
  :class:`MessageInfo`; 2021's ``retryInfo`` carries them on the wire and the
  codec moves them.  :class:`RetryInfo` holds only the alternatives 2021 adds.
* fields single in v1.2 and repeatable in 2021 (``volume``, ``itemId``,
  ``loanCondition``, ``deliveryCosts``, ``errorData``) are tuples; the v1.2
  writer writes the first.
* an empty ``multipleItemRequestId`` reads as ``None``.

All classes are frozen and keyword-only; timestamps are timezone-aware.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import ClassVar, Union

from .codes import (
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

frozen = dataclass(frozen=True, kw_only=True, slots=True)


# -- building blocks ---------------------------------------------------------


@frozen
class AgencyId:
    """``agencyIdType`` (open list, e.g. ISIL) + ``agencyIdValue``."""

    type: Code
    value: str

    @classmethod
    def parse(cls, symbol: str) -> "AgencyId":
        """``"ISIL:DK-710100"`` -> AgencyId. The type defaults to ISIL."""
        kind, sep, value = symbol.partition(":")
        if not sep:
            return cls(type=Code("ISIL"), value=symbol)
        return cls(type=Code(kind), value=value)

    def __str__(self) -> str:
        return f"{self.type.value}:{self.value}"

    def same_agency(self, other: "AgencyId | None") -> bool:
        """Agency ids compare case-insensitively; schemes don't matter."""
        return other is not None and str(self).casefold() == str(other).casefold()


@frozen
class Costs:
    currency_code: Code
    monetary_value: Decimal


@frozen
class ElectronicAddress:
    electronic_address_type: Code
    electronic_address_data: str


@frozen
class PhysicalAddress:
    line1: str | None = None
    line2: str | None = None
    locality: str | None = None
    postal_code: str | None = None
    region: Code | None = None  # a scheme/value pair in v1.2, a plain string in 2021
    country: Code | None = None


Address = Union[ElectronicAddress, PhysicalAddress]


@frozen
class Authentication:
    account_id: str | None = None
    security_code: str | None = None


@frozen
class Header:
    """The header of the three business messages.

    ``supplying_agency_id`` may be absent on a 2021 PatronRequest; the
    confirmations use :class:`ConfirmationHeader`.
    """

    supplying_agency_id: AgencyId | None
    requesting_agency_id: AgencyId
    timestamp: datetime
    requesting_agency_request_id: str
    multiple_item_request_id: str | None = None
    supplying_agency_request_id: str | None = None
    requesting_agency_authentication: Authentication | None = None
    consortial_id: AgencyId | None = None  # 2021


@frozen
class ConfirmationHeader:
    timestamp: datetime
    timestamp_received: datetime
    message_status: MessageStatus
    supplying_agency_id: AgencyId | None = None
    requesting_agency_id: AgencyId | None = None
    requesting_agency_request_id: str | None = None
    multiple_item_request_id: str | None = None  # v1.2 only


@frozen
class ErrorData:
    error_type: ErrorType
    error_value: str | None = None


# -- request -----------------------------------------------------------------


@frozen
class BibliographicItemId:
    """An item identifier such as an ISBN or ISSN."""

    identifier: str
    code: Code


@frozen
class BibliographicRecordId:
    """A record identifier such as an OCLC number or LCCN."""

    identifier: str
    code: Code


@frozen
class BibliographicInfo:
    supplier_unique_record_id: str | None = None
    title: str | None = None
    author: str | None = None
    author_id: str | None = None  # 2021
    subtitle: str | None = None
    series_title: str | None = None
    edition: str | None = None
    title_of_component: str | None = None
    author_of_component: str | None = None
    volume: tuple[str, ...] = ()
    issue: str | None = None
    pages_requested: str | None = None
    estimated_no_pages: str | None = None
    bibliographic_item_id: tuple[BibliographicItemId, ...] = ()
    sponsor: str | None = None
    information_source: str | None = None
    bibliographic_record_id: tuple[BibliographicRecordId, ...] = ()


@frozen
class PublicationInfo:
    publisher: str | None = None
    publisher_id: str | None = None  # 2021
    publication_type: Code | None = None
    publication_date: str | None = None
    place_of_publication: str | None = None


@frozen
class ServiceInfo:
    service_type: ServiceType
    request_type: RequestType | None = None
    request_sub_type: tuple[RequestSubType, ...] = ()
    requesting_agency_previous_request_id: str | None = None
    service_level: Code | None = None
    item_format: Code | None = None  # v1.2 preferredFormat
    need_before_date: datetime | None = None
    copyright_compliance: Code | None = None
    any_edition: YesNo | None = None
    preferred_edition: PreferredEdition | None = None  # 2021
    loan_condition: tuple[Code, ...] = ()  # 2021
    start_date: datetime | None = None
    end_date: datetime | None = None
    note: str | None = None


@frozen
class SupplierInfo:
    sort_order: int | None = None
    supplier_code: AgencyId | None = None
    supplier_description: str | None = None
    bibliographic_record_id: BibliographicRecordId | None = None
    call_number: str | None = None
    summary_holdings: str | None = None
    availability_note: str | None = None


@frozen
class RequestedDeliveryInfo:
    sort_order: int | None = None
    address: Address | None = None
    delivery_method: Code | None = None  # 2021
    courier_name: Code | None = None  # 2021


@frozen
class RequestingAgencyInfo:
    name: str | None = None
    contact_name: str | None = None
    address: tuple[Address, ...] = ()


@frozen
class PatronInfo:
    patron_id: str | None = None
    surname: str | None = None
    given_name: str | None = None
    patron_type: Code | None = None
    send_to_patron: YesNo | None = None
    address: tuple[Address, ...] = ()


@frozen
class BillingInfo:
    payment_method: Code | None = None
    maximum_costs: Costs | None = None
    billing_method: Code | None = None
    billing_name: str | None = None
    address: Address | None = None


@frozen
class Request:
    KIND: ClassVar[str] = "request"

    header: Header
    bibliographic_info: BibliographicInfo
    service_info: ServiceInfo | None = None
    publication_info: PublicationInfo | None = None
    supplier_info: tuple[SupplierInfo, ...] = ()
    requested_delivery_info: tuple[RequestedDeliveryInfo, ...] = ()
    requesting_agency_info: RequestingAgencyInfo | None = None
    patron_info: PatronInfo | None = None
    billing_info: BillingInfo | None = None


# -- supplying agency message -------------------------------------------------


@frozen
class MessageInfo:
    reason_for_message: ReasonForMessage
    answer_yes_no: YesNo | None = None
    note: str | None = None
    reason_unfilled: Code | None = None
    reason_retry: Code | None = None
    offered_costs: tuple[Costs, ...] = ()
    retry_after: datetime | None = None
    retry_before: datetime | None = None


@frozen
class StatusInfo:
    status: Status | None  # None only when read from a peer that sent <status/> (Alma)
    last_change: datetime
    expected_delivery_date: datetime | None = None
    due_date: datetime | None = None


@frozen
class RetryInfo:
    """2021 ``retryInfo``: the alternatives a supplier offers with RetryPossible."""

    loan_condition: tuple[Code, ...] = ()
    edition: tuple[str, ...] = ()
    item_format: tuple[Code, ...] = ()
    volume: tuple[str, ...] = ()
    service_type: ServiceType | None = None
    service_level: tuple[Code, ...] = ()
    delivery_method: tuple[Code, ...] = ()
    courier_name: tuple[Code, ...] = ()
    payment_method: tuple[Code, ...] = ()


@frozen
class DeliveryInfo:
    date_sent: datetime
    item_id: tuple[str, ...] = ()
    url: str | None = None  # 2021
    delivery_method: Code | None = None  # v1.2 sentVia
    address: Address | None = None  # 2021
    sent_to_patron: bool | None = None
    loan_condition: tuple[Code, ...] = ()
    item_format: Code | None = None  # v1.2 deliveredFormat
    service_type: ServiceType | None = None  # 2021
    delivery_costs: tuple[Costs, ...] = ()
    payment_method: Code | None = None  # 2021


@frozen
class ShippingInfo:
    """2021 ``shippingInfo``."""

    courier_name: Code | None = None
    tracking_id: tuple[str, ...] = ()
    insurance: YesNo | None = None
    insurance_third_party: YesNo | None = None
    third_party_name: str | None = None
    insurance_costs: tuple[Costs, ...] = ()


@frozen
class ReturnInfo:
    return_agency_id: AgencyId | None = None
    name: str | None = None
    physical_address: PhysicalAddress | None = None


@frozen
class SupplyingAgencyMessage:
    KIND: ClassVar[str] = "supplyingAgencyMessage"

    header: Header
    message_info: MessageInfo
    status_info: StatusInfo
    retry_info: RetryInfo | None = None  # 2021
    delivery_info: DeliveryInfo | None = None
    shipping_info: ShippingInfo | None = None  # 2021
    return_info: ReturnInfo | None = None


# -- requesting agency message ----------------------------------------------


@frozen
class RequestingAgencyMessage:
    KIND: ClassVar[str] = "requestingAgencyMessage"

    header: Header
    action: Action
    note: str | None = None


# -- confirmations -------------------------------------------------------------


@frozen
class RequestConfirmation:
    KIND: ClassVar[str] = "requestConfirmation"

    confirmation_header: ConfirmationHeader
    error_data: tuple[ErrorData, ...] = ()


@frozen
class SupplyingAgencyMessageConfirmation:
    KIND: ClassVar[str] = "supplyingAgencyMessageConfirmation"

    confirmation_header: ConfirmationHeader
    reason_for_message: ReasonForMessage | None = None
    error_data: tuple[ErrorData, ...] = ()


@frozen
class RequestingAgencyMessageConfirmation:
    KIND: ClassVar[str] = "requestingAgencyMessageConfirmation"

    confirmation_header: ConfirmationHeader
    action: Action | None = None
    error_data: tuple[ErrorData, ...] = ()


BusinessMessage = Union[Request, SupplyingAgencyMessage, RequestingAgencyMessage]
Confirmation = Union[
    RequestConfirmation, SupplyingAgencyMessageConfirmation, RequestingAgencyMessageConfirmation
]
Message = Union[BusinessMessage, Confirmation]

MESSAGE_TYPES: dict[str, type] = {
    cls.KIND: cls
    for cls in (
        Request,
        RequestConfirmation,
        SupplyingAgencyMessage,
        SupplyingAgencyMessageConfirmation,
        RequestingAgencyMessage,
        RequestingAgencyMessageConfirmation,
    )
}

# Which confirmation answers which business message.
CONFIRMATION_FOR: dict[type, type] = {
    Request: RequestConfirmation,
    SupplyingAgencyMessage: SupplyingAgencyMessageConfirmation,
    RequestingAgencyMessage: RequestingAgencyMessageConfirmation,
}


@frozen
class Envelope:
    """A whole ``ISO18626Message``: one message and the version it is in.

    ``version`` is what the reader detected (from ``@version`` and the
    element shapes), or what the writer is to produce.  ``declared`` is the
    ``version`` attribute as sent; it takes no part in equality.
    """

    version: Version
    message: Message
    declared: str | None = field(default=None, compare=False)

    @property
    def kind(self) -> str:
        return self.message.KIND
