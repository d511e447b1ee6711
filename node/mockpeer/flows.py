"""The mock peer's log of every message in and out, grouped like illmock's flows.

A flow is one request seen from one role: ``(role, requester, supplier, id)``
where ``id`` is the requestingAgencyRequestId and requester/supplier are
agency id values.  Message kinds, as illmock names them:
``incoming-request`` (a business message we received), ``outgoing-response``
(the confirmation we answered with), ``outgoing-request`` (a business message
we sent), ``incoming-response`` (the confirmation, or HTTP error, we got back).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from datetime import datetime

from lxml import etree

from node.protocol.safe_xml import parse_xml

KINDS = ("incoming-request", "outgoing-response", "outgoing-request", "incoming-response")


@dataclass
class FlowMessage:
    kind: str
    at: datetime
    body: bytes
    http_status: int | None = None
    url: str | None = None


@dataclass
class Flow:
    id: str
    role: str  # "supplier" | "requester"
    requester: str
    supplier: str
    messages: list[FlowMessage] = field(default_factory=list)


class FlowLog:
    """Thread-safe, in memory (like illmock)."""

    def __init__(self, limit: int = 10000):
        self._flows: dict[tuple[str, str, str, str], Flow] = {}
        self._lock = threading.Lock()
        self.limit = limit

    def add(self, *, role: str, requester: str, supplier: str, id: str, kind: str,
            body: bytes, at: datetime, http_status: int | None = None,
            url: str | None = None) -> None:
        key = (role, requester, supplier, id)
        with self._lock:
            flow = self._flows.get(key)
            if flow is None:
                if len(self._flows) >= self.limit:  # drop the oldest
                    self._flows.pop(next(iter(self._flows)))
                flow = self._flows[key] = Flow(id=id, role=role, requester=requester,
                                               supplier=supplier)
            flow.messages.append(FlowMessage(kind=kind, at=at, body=body,
                                             http_status=http_status, url=url))

    def find(self, *, id: str | None = None, role: str | None = None,
             requester: str | None = None, supplier: str | None = None) -> list[Flow]:
        with self._lock:
            flows = list(self._flows.values())
        return [f for f in flows
                if (not id or f.id == id) and (not role or f.role == role)
                and (not requester or f.requester == requester)
                and (not supplier or f.supplier == supplier)]

    # -- rendering ---------------------------------------------------------------

    @staticmethod
    def to_xml(flows: list[Flow]) -> bytes:
        root = etree.Element("flows")
        for flow in flows:
            fel = etree.SubElement(root, "flow", id=flow.id, role=flow.role,
                                   requester=flow.requester, supplier=flow.supplier)
            for msg in flow.messages:
                mel = etree.SubElement(fel, "message", kind=msg.kind,
                                       timestamp=msg.at.isoformat())
                if msg.http_status is not None:
                    mel.set("httpStatus", str(msg.http_status))
                if msg.url:
                    mel.set("url", msg.url)
                try:
                    mel.append(parse_xml(msg.body))
                except Exception:  # noqa: BLE001 - not XML: keep the text
                    mel.text = msg.body.decode("utf-8", "replace")
        return etree.tostring(root, xml_declaration=True, encoding="UTF-8", pretty_print=True)

    @staticmethod
    def to_json(flows: list[Flow]) -> list[dict]:
        return [{
            "id": f.id, "role": f.role, "requester": f.requester, "supplier": f.supplier,
            "messages": [{"kind": m.kind, "at": m.at.isoformat(), "http_status": m.http_status,
                          "url": m.url, "xml": m.body.decode("utf-8", "replace")}
                         for m in f.messages],
        } for f in flows]
