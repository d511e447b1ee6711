"""Node._as_configured: an outbox row as its partner's configuration says it goes at
send time (no sockets: the worker calls it before each send)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from node.config import loads
from node.protocol import reader, writer
from node.protocol.codes import Version
from node.service import Node
from node.store.outbox_repo import OutboxRow
from tests import builders

T0 = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)
CONFIG = """\
[node]
symbol = "ISIL:XX-ME"
name = "Me"

[[partners]]
symbol = "ISIL:XX-PEER"
url = "http://127.0.0.1:9/new"
iso18626_version = "2021-2"
"""


def queued(body: bytes, *, at: datetime, peer: str = "ISIL:XX-PEER") -> OutboxRow:
    return OutboxRow(
        id=1, transaction_id=None, peer=peer, url="http://127.0.0.1:9/old", kind="request",
        body=body, state="pending", attempts=1, maybe_delivered=False, next_attempt_at=at,
        last_error=None, last_http_status=None, last_attempt_at=None, locked_by=None,
        locked_until=None, created_at=at, sent_at=None, confirmation=None)


def node() -> Node:
    return Node(loads(CONFIG), clock=lambda: T0)


def request_in(version: Version) -> bytes:
    return writer.serialise(builders.request("ISIL:XX-ME", "ISIL:XX-PEER", "req-1",
                                             version=version))


def test_a_row_queued_before_the_configuration_is_written_for_the_partner_now():
    row = node()._as_configured(queued(request_in(Version.V1_2), at=T0 - timedelta(hours=1)))
    assert row.url == "http://127.0.0.1:9/new"
    assert reader.parse(row.body).version is Version.V2021_2


def test_a_row_queued_under_this_configuration_is_sent_as_queued():
    body = request_in(Version.V1_2)  # as if the partner's version had been 1.2 then
    row = node()._as_configured(queued(body, at=T0))
    assert row.body is body and row.url == "http://127.0.0.1:9/new"


def test_a_body_that_cannot_be_rewritten_is_sent_as_queued(caplog):
    row = node()._as_configured(queued(b"<not-iso18626/>", at=T0 - timedelta(hours=1)))
    assert row.body == b"<not-iso18626/>"
    assert "not rewritten for ISIL:XX-PEER" in caplog.text


def test_a_row_for_a_partner_no_longer_configured_is_left_as_it_is():
    original = queued(request_in(Version.V1_2), at=T0 - timedelta(hours=1), peer="ISIL:XX-GONE")
    assert node()._as_configured(original) is original
