"""Small builders for ISO 18626 messages in tests (what a partner would send)."""

from __future__ import annotations

from datetime import datetime, timezone

from node.protocol.codes import Action, Code, ServiceType, Version
from node.protocol.messages import (
    AgencyId,
    BibliographicInfo,
    BibliographicItemId,
    Envelope,
    Header,
    Request,
    RequestingAgencyMessage,
    ServiceInfo,
)


def header(requester: str, supplier: str, rari: str, **extra) -> Header:
    return Header(
        requesting_agency_id=AgencyId.parse(requester),
        supplying_agency_id=AgencyId.parse(supplier),
        timestamp=extra.pop("timestamp", datetime.now(timezone.utc).replace(microsecond=0)),
        requesting_agency_request_id=rari,
        **extra,
    )


def request(requester: str, supplier: str, rari: str, *, title: str = "Moby Dick",
            isbn: str | None = None, service_type: ServiceType = ServiceType.LOAN,
            version: Version = Version.V1_2, **extra) -> Envelope:
    items = (BibliographicItemId(identifier=isbn, code=Code("ISBN")),) if isbn else ()
    return Envelope(version=version, message=Request(
        header=header(requester, supplier, rari),
        bibliographic_info=BibliographicInfo(title=title, bibliographic_item_id=items, **extra),
        service_info=ServiceInfo(service_type=service_type),
    ))


def action(requester: str, supplier: str, rari: str, act: Action, note: str | None = None,
           version: Version = Version.V1_2) -> Envelope:
    return Envelope(version=version, message=RequestingAgencyMessage(
        header=header(requester, supplier, rari), action=act, note=note))
