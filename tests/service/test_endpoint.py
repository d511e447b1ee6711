"""The ISO 18626 endpoint over real HTTP: refusals, errors, durability, idempotency, outbox."""

from __future__ import annotations

import asyncio
import io
import sqlite3
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select

from node.protocol import reader
from node.protocol.codes import ErrorType, MessageStatus
from node.store import tables as t
from tests import builders
from tests.harness import XML
from tests.peer import Peer

SAMPLES = Path(__file__).resolve().parents[3] / "shared" / "iso18626" / "samples"
PEER = "ISIL:XX-PEER"


async def counts(lib) -> dict[str, int]:
    async with lib.node.engine.connect() as conn:
        return {
            table.name: (await conn.execute(select(func.count()).select_from(table))).scalar_one()
            for table in (t.transactions, t.messages, t.outbox, t.history, t.attempts)
        }


def confirmation(body: bytes):
    return reader.parse(body).message


async def test_health_and_http_refusals(net):
    lib = net.add("alpha")
    await net.start()
    status, health = await lib.api("GET", "/healthz")
    assert status == 200 and health["status"] == "ok" and health["symbol"] == lib.symbol

    async with lib.http.post(lib.endpoint, data=b"<x/>",
                             headers={"Content-Type": "application/json"}) as resp:
        assert resp.status == 415
    async with lib.http.post(lib.endpoint, data=b"hello, not xml", headers=XML) as resp:
        assert resp.status == 400
        assert "not XML" in await resp.text()
    big = b"<" + b"a" * (lib.config.limits.max_body_bytes + 10)
    async with lib.http.post(lib.endpoint, data=io.BytesIO(big), headers=XML) as resp:
        assert resp.status == 413
    async with lib.http.get(lib.endpoint) as resp:
        assert resp.status == 405
    assert await counts(lib) == {n: 0 for n in await counts(lib)}


BAD_INPUTS = {
    "not ISO 18626": (b"<html><body>hi</body></html>", ErrorType.BADLY_FORMED_MESSAGE),
    "broken XML": (b"<ISO18626Message><request>", ErrorType.BADLY_FORMED_MESSAGE),
    "XXE": (
        b'<?xml version="1.0"?><!DOCTYPE r [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
        b'<ISO18626Message xmlns="http://illtransactions.org/2013/iso18626">&x;</ISO18626Message>',
        ErrorType.BADLY_FORMED_MESSAGE,
    ),
    "billion laughs": (
        b'<?xml version="1.0"?><!DOCTYPE l [<!ENTITY a "aaaaaaaaaa">'
        b'<!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;"><!ENTITY c "&b;&b;&b;&b;&b;&b;&b;&b;">]>'
        b"<l>&c;</l>",
        ErrorType.BADLY_FORMED_MESSAGE,
    ),
    "deep nesting": (b"<a>" * 5000 + b"</a>" * 5000, ErrorType.BADLY_FORMED_MESSAGE),
}


@pytest.mark.parametrize("name", BAD_INPUTS)
async def test_malformed_input_gets_error_confirmation_and_no_change(net, name):
    lib = net.add("alpha")
    await net.start()
    before = await counts(lib)
    body, error_type = BAD_INPUTS[name]
    status, answer = await lib.post_xml(body)
    assert status == 200
    conf = confirmation(answer)
    assert conf.confirmation_header.message_status is MessageStatus.ERROR
    assert conf.error_data[0].error_type is error_type
    assert conf.error_data[0].error_value
    assert await counts(lib) == before


@pytest.mark.parametrize("sample", [
    "broker_test_testdata_supmsg-invalid-status.xml",
    "broker_test_testdata_reqmsg-invalid-action.xml",
    "broker_test_testdata_request-no-reqid.xml",
    "broker_test_testdata_msg-invalid.xml",
    "broker_test_testdata_request-loaned.xml",  # valid, but not addressed to us
    "broker_test_testdata_reqmsg-ok.xml",  # valid, unknown request
])
async def test_invalid_or_foreign_samples_get_error_and_no_change(net, sample):
    lib = net.add("alpha")
    await net.start()
    before = await counts(lib)
    status, answer = await lib.post_xml((SAMPLES / sample).read_bytes())
    assert status == 200
    conf = confirmation(answer)
    assert conf.confirmation_header.message_status is MessageStatus.ERROR, answer
    assert await counts(lib) == before


async def test_unknown_sender_is_named_in_the_error(net):
    lib = net.add("alpha")
    await net.start()
    env = builders.request("ISIL:XX-STRANGER", lib.symbol, "r-1")
    status, answer = await Peer("ISIL:XX-STRANGER").send(lib.endpoint, env)
    conf = confirmation(answer)
    assert conf.confirmation_header.message_status is MessageStatus.ERROR
    assert conf.error_data[0].error_type is ErrorType.UNRECOGNISED_DATA_VALUE
    assert "ISIL:XX-STRANGER" in conf.error_data[0].error_value


async def test_over_long_request_id_gets_a_clear_error_and_no_change(net):
    # Found by the fuzz test: PostgreSQL refused the row (ids live in VARCHAR(255)
    # columns) and the partner got a 503 instead of an answer.
    lib = net.add("alpha")
    net.add_peer(PEER, "http://127.0.0.1:9/unused")
    await net.start()
    before = await counts(lib)
    env = builders.request(PEER, lib.symbol, "A" * 300)
    status, answer = await Peer(PEER).send(lib.endpoint, env)
    assert status == 200
    conf = confirmation(answer)
    assert conf.confirmation_header.message_status is MessageStatus.ERROR
    assert conf.error_data[0].error_type is ErrorType.UNRECOGNISED_DATA_VALUE
    assert "requestingAgencyRequestId: 300 characters" in conf.error_data[0].error_value
    assert await counts(lib) == before


async def test_message_is_stored_before_it_is_confirmed(net):
    lib = net.add("alpha")
    peer = Peer(PEER)
    net.add_peer(PEER, peer.endpoint)
    await peer.start()
    await net.start()
    env = builders.request(PEER, lib.symbol, "req-stored")
    status, answer = await peer.send(lib.endpoint, env)
    assert confirmation(answer).confirmation_header.message_status is MessageStatus.OK
    # The moment the confirmation is in our hands, the message and the request are durable.
    async with lib.node.engine.connect() as conn:
        stored = (await conn.execute(select(t.messages).where(
            t.messages.c.direction == "in", t.messages.c.requesting_request_id == "req-stored"
        ))).one()
        assert stored.kind == "request" and stored.confirmation
        tx = (await conn.execute(select(t.transactions))).one()
        assert tx.requesting_request_id == "req-stored" and tx.role == "lending"
    await peer.stop()


async def test_nothing_is_confirmed_when_it_cannot_be_stored(net, tmp_path):
    lib = net.add("alpha")
    net.add_peer(PEER, "http://127.0.0.1:9/iso18626")
    await net.start()
    if not lib.db_url.startswith("sqlite"):
        pytest.skip("the write lock is taken through SQLite here")
    path = lib.db_url.split("///", 1)[1]
    blocker = sqlite3.connect(path, timeout=0)
    for _ in range(10000):  # the node's workers take the lock briefly and often
        try:
            blocker.execute("BEGIN EXCLUSIVE")
            break
        except sqlite3.OperationalError:
            await asyncio.sleep(0.001)
    try:
        status, answer = await asyncio.wait_for(
            Peer(PEER).send(lib.endpoint, builders.request(PEER, lib.symbol, "req-locked")), 30)
    finally:
        blocker.rollback()
        blocker.close()
    assert status == 503 or confirmation(answer).confirmation_header.message_status is (
        MessageStatus.ERROR)
    assert (await counts(lib))["messages"] == 0


async def test_same_message_twice_changes_nothing(net):
    lib = net.add("alpha")
    peer = Peer(PEER)
    net.add_peer(PEER, peer.endpoint)
    await peer.start()
    await net.start()
    env = builders.request(PEER, lib.symbol, "req-dup", isbn="9780140449136")
    status, first = await peer.send(lib.endpoint, env)
    await peer.wait_for(1)  # our answer to the request
    after_first = await counts(lib)
    status, second = await peer.send(lib.endpoint, env)
    assert second == first
    await asyncio.sleep(0.3)
    assert await counts(lib) == after_first
    assert len(peer.received) == 1
    # The same request sent again by a requester that retries (a new timestamp, so a new
    # message): confirmed OK, nothing changes, and nothing is answered twice.
    resent = replace(env, message=replace(env.message, header=replace(
        env.message.header, timestamp=env.message.header.timestamp + timedelta(seconds=30))))
    status, third = await peer.send(lib.endpoint, resent)
    conf = confirmation(third)
    assert status == 200 and conf.confirmation_header.message_status is MessageStatus.OK
    again = await counts(lib)
    assert again == {**after_first, "messages": after_first["messages"] + 1,
                     "history": after_first["history"] + 1}
    lid = (await lib.only_request("lending"))["id"]
    view = await lib.request("lending", lid)
    assert view["status"] == "UNFILLED"  # as answered the first time (no holdings here)
    assert view["history"][-1]["event"] == "received_request_again"
    await asyncio.sleep(0.3)
    assert len(peer.received) == 1
    # A different message with the same request id is not a duplicate: it is refused.
    other = builders.request(PEER, lib.symbol, "req-dup", title="Another book")
    status, fourth = await peer.send(lib.endpoint, other)
    conf = confirmation(fourth)
    assert conf.confirmation_header.message_status is MessageStatus.ERROR
    assert "already exists" in conf.error_data[0].error_value
    await peer.stop()


async def test_outbox_reaches_a_peer_that_was_down(net):
    lib = net.add("alpha")
    peer = Peer(PEER)  # its port is chosen, but nothing listens there yet
    net.add_peer(PEER, peer.endpoint)
    await net.start()
    status, answer = await peer.send(lib.endpoint, builders.request(PEER, lib.symbol, "req-down"))
    assert confirmation(answer).confirmation_header.message_status is MessageStatus.OK
    for _ in range(100):
        async with lib.node.engine.connect() as conn:  # the SQLite pool has one connection
            row = (await conn.execute(select(t.outbox))).one()
        if row.attempts >= 2:
            break
        await asyncio.sleep(0.05)
    assert row.state == "pending" and row.attempts >= 2 and row.last_error
    await peer.start()
    [answer_env] = await peer.wait_for(1)
    assert answer_env.message.header.requesting_agency_request_id == "req-down"
    await asyncio.sleep(0.5)
    assert len(peer.received) == 1  # delivered once, not again
    async with lib.node.engine.connect() as conn:
        row = (await conn.execute(select(t.outbox))).one()
    assert row.state == "sent"
    await peer.stop()


async def test_a_partner_s_answer_to_our_message_is_read_leniently(net):
    """What the outbox got with a 2xx: a plain OK (the quick look), anything unreadable
    (delivered is all we know), an OK the quick look leaves to the full read, and an
    ERROR, which alone is a refusal."""
    from datetime import UTC, datetime
    from types import SimpleNamespace

    from node.protocol import confirm, writer
    from node.protocol.codes import Version
    from node.protocol.errors import ProtocolError
    from node.protocol.messages import Envelope

    lib = net.add("alpha")
    await net.start()
    message = builders.request(PEER, lib.symbol, "R-1").message
    now = datetime.now(UTC)

    def answer(error: ProtocolError | None = None) -> bytes:
        return writer.serialise(Envelope(version=Version.V1_2, message=confirm.confirmation_for(
            message, now=now, error=error)))

    row = SimpleNamespace(transaction_id=None, peer=PEER, kind="request")
    plain_ok = answer()
    for body in (plain_ok, b"thanks", b"<html><body>OK</body></html>",
                 plain_ok.replace(b">OK<", b">ok<")):
        assert await lib.node._on_delivered(None, row, 200, body) is None, body
    verdict = await lib.node._on_delivered(None, row, 200, answer(
        ProtocolError(ErrorType.UNRECOGNISED_DATA_VALUE, "no such item")))
    assert not verdict.ok
    assert verdict.error == f"{PEER} answered ERROR: UnrecognisedDataValue: no such item"
