"""confirm.ok_confirmation: the OK confirmation every partner's message gets, filled in
from a template of the writer's own bytes, must be exactly what the writer writes."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from node.protocol import confirm, writer
from node.protocol import messages as m
from node.protocol.codes import Action, Code, ReasonForMessage, Status, Version

NOW = datetime(2026, 12, 7, 1, 2, 3, tzinfo=UTC)

# Any text, & < > quotes, non-ASCII, CR and other control characters included (the
# writer refuses some, and writes CR as a reference: the template must do the same).
texts = st.text(st.characters(exclude_categories=("Cs",)), max_size=12)
agencies = st.builds(lambda kind, value, scheme: m.AgencyId(type=Code(kind, scheme), value=value),
                     texts, texts, st.none() | st.just("http://example.org/agency&types"))


def message_of(kind: str, header: m.Header, reason: ReasonForMessage,
               action: Action) -> m.BusinessMessage:
    if kind == "request":
        return m.Request(header=header, bibliographic_info=m.BibliographicInfo(title="T"))
    if kind == "sam":
        return m.SupplyingAgencyMessage(
            header=header, message_info=m.MessageInfo(reason_for_message=reason),
            status_info=m.StatusInfo(status=Status.WILL_SUPPLY, last_change=NOW))
    return m.RequestingAgencyMessage(header=header, action=action)


def by_the_writer(message: m.BusinessMessage, version: Version) -> bytes:
    return writer.serialise(m.Envelope(version=version,
                                       message=confirm.confirmation_for(message, now=NOW)))


@settings(max_examples=400, deadline=None)
@given(kind=st.sampled_from(["request", "sam", "ram"]), version=st.sampled_from(Version),
       supplying=st.none() | agencies, requesting=st.none() | agencies,
       request_id=st.none() | texts, multiple=st.none() | texts,
       reason=st.sampled_from(ReasonForMessage), action=st.sampled_from(Action))
def test_the_writer_s_bytes_exactly(kind, version, supplying, requesting, request_id, multiple,
                                    reason, action):
    message = message_of(kind, m.Header(
        supplying_agency_id=supplying, requesting_agency_id=requesting, timestamp=NOW,
        requesting_agency_request_id=request_id, multiple_item_request_id=multiple),
        reason, action)
    try:
        expected = by_the_writer(message, version)
    except ValueError as exc:  # text XML cannot hold
        with pytest.raises(type(exc)):
            confirm.ok_confirmation(message, now=NOW, version=version)
        return
    assert confirm.ok_confirmation(message, now=NOW, version=version) == expected


def test_a_plain_message_is_answered_from_the_template(monkeypatch):
    """Only a shape's first confirmation is written by the writer."""
    def ram(supplying: str, requesting: str, request_id: str) -> m.RequestingAgencyMessage:
        return message_of("ram", m.Header(
            supplying_agency_id=m.AgencyId.parse(supplying),
            requesting_agency_id=m.AgencyId.parse(requesting), timestamp=NOW,
            requesting_agency_request_id=request_id), ReasonForMessage.NOTIFICATION,
            Action.RECEIVED)

    confirm.ok_confirmation(ram("ISIL:XX-US", "ISIL:XX-PEER", "first"), now=NOW,
                            version=Version.V2021_2)
    written = []
    monkeypatch.setattr(confirm, "serialise", lambda *a, **k: written.append(a) or b"")
    for n, text in enumerate(["R-1", "a & b < c > d", "ünïcödé 😀", "tab\tand\nnewline"]):
        message = ram(f"ISIL:XX-{n}", "DNUCNI:" + text, text)
        assert confirm.ok_confirmation(message, now=NOW, version=Version.V2021_2) == (
            by_the_writer(message, Version.V2021_2))
    assert written == []


def test_only_business_messages_are_confirmed():
    conf = confirm.confirmation_for(
        message_of("request", m.Header(supplying_agency_id=None, requesting_agency_id=None,
                                       timestamp=NOW, requesting_agency_request_id="x"),
                   ReasonForMessage.NOTIFICATION, Action.RECEIVED), now=NOW)
    with pytest.raises(TypeError):
        confirm.ok_confirmation(conf, now=NOW, version=Version.V1_2)
