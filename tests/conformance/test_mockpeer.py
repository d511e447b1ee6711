"""The mock peer: scenario language (pure), replies, quirks, and over HTTP."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import UTC, datetime

import aiohttp
import pytest
from lxml import etree

from node.conformance import KitConfig, run_checks
from node.mockpeer import MockPeer, RunningMock, note_token, plan_for, scenario_for
from node.protocol import reader, writer
from node.protocol.codes import (
    Action,
    MessageStatus,
    ReasonForMessage,
    RequestSubType,
    RequestType,
    ServiceType,
    Status,
    Version,
    YesNo,
)
from node.protocol.messages import Envelope
from node.protocol.safe_xml import parse_xml
from node.protocol.schema import validation_errors
from tests import builders
from tests.harness import XML, free_port
from tests.peer import Peer
from tests.protocol.test_writer import assert_officially_valid

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def req(note=None, record=None, rari="r1", supplier="ISIL:SUP", service=ServiceType.LOAN,
        **service_extra):
    env = builders.request("ISIL:REQ", supplier, rari, service_type=service)
    msg = env.message
    msg = replace(msg, service_info=replace(msg.service_info, note=note, **service_extra),
                  bibliographic_info=replace(msg.bibliographic_info,
                                             supplier_unique_record_id=record))
    return replace(env, message=msg)


# -- the scenario language (pure) ------------------------------------------------------


def test_note_token_ends_at_separators_and_picks_our_supplier():
    note = "MOCK:A:UNFILLED#MOCK:SUP:LOANED;rest"
    assert note_token(note, "SUP") == "LOANED"
    assert note_token(note, "A") == "UNFILLED"
    assert note_token(note, "B") == ""
    assert note_token("x MOCK:SUP:WILLSUPPLY_LOANED\tmore", "SUP") == "WILLSUPPLY_LOANED"


def test_scenario_from_note_then_record_id_else_unfilled():
    assert scenario_for(req("MOCK:SUP:LOANED", "UNFILLED").message) == "LOANED"
    assert scenario_for(req(None, "WILLSUPPLY").message) == "WILLSUPPLY"
    assert scenario_for(req(None, None).message) == "UNFILLED"
    assert plan_for(req(None, "NONSENSE").message).statuses == (Status.UNFILLED,)


def test_retry_runs_next_only_on_a_retry_request():
    first = plan_for(req(None, "RETRY:COST_LOANED").message)
    assert first.statuses == (Status.RETRY_POSSIBLE,) and first.reason_retry == "CostExceedsMaxCost"
    again = plan_for(req(None, "RETRY:COST_LOANED", request_type=RequestType.RETRY).message)
    assert again.statuses == (Status.LOANED,)
    nothing = plan_for(req(None, "RETRY:ONLOAN", request_type=RequestType.RETRY).message)
    assert nothing.statuses == ()


def test_completed_is_copy_or_loan_completed():
    assert plan_for(req(None, "COMPLETED", service=ServiceType.COPY).message).statuses == (
        Status.COPY_COMPLETED,)
    assert plan_for(req(None, "COMPLETED").message).statuses == (Status.LOAN_COMPLETED,)


def body(env):
    return writer.serialise(env)


def sam_of(core, send):
    url, data = core.build(send, NOW)
    return url, reader.parse(data).message


def test_supplier_core_loaned_then_received_and_shipped_return():
    core = MockPeer(peer_url="http://peer/iso18626")
    reply = core.receive(body(req("MOCK:SUP:LOANED_OVERDUE")), NOW)
    assert reply.status == 200
    assert reader.parse(reply.body).message.confirmation_header.message_status is MessageStatus.OK
    [send] = reply.sends
    url, sam = sam_of(core, send)
    assert url == "http://peer/iso18626"
    assert sam.message_info.reason_for_message is ReasonForMessage.REQUEST_RESPONSE
    assert sam.status_info.status is Status.LOANED and sam.status_info.due_date is not None
    # Received -> Overdue; ShippedReturn -> LoanCompleted
    received = core.receive(body(builders.action("ISIL:REQ", "ISIL:SUP", "r1", Action.RECEIVED)),
                            NOW)
    [overdue] = received.sends
    assert sam_of(core, overdue)[1].status_info.status is Status.OVERDUE
    returned = core.receive(body(builders.action("ISIL:REQ", "ISIL:SUP", "r1",
                                                 Action.SHIPPED_RETURN)), NOW)
    [done] = returned.sends
    _, completed = sam_of(core, done)
    assert completed.status_info.status is Status.LOAN_COMPLETED
    assert completed.message_info.reason_for_message is ReasonForMessage.STATUS_CHANGE


def test_cancel_before_loan_is_yes_after_loan_is_no():
    core = MockPeer(peer_url="http://peer/iso18626")
    core.receive(body(req("MOCK:SUP:WILLSUPPLY", rari="a")), NOW)
    [cancel] = core.receive(body(builders.action("ISIL:REQ", "ISIL:SUP", "a", Action.CANCEL)),
                            NOW).sends
    _, sam = sam_of(core, cancel)
    assert (sam.message_info.answer_yes_no, sam.status_info.status) == (YesNo.Y, Status.CANCELLED)
    reply = core.receive(body(req("MOCK:SUP:LOANED", rari="b")), NOW)
    sam_of(core, reply.sends[0])
    [cancel] = core.receive(body(builders.action("ISIL:REQ", "ISIL:SUP", "b", Action.CANCEL)),
                            NOW).sends
    _, sam = sam_of(core, cancel)
    assert (sam.message_info.answer_yes_no, sam.status_info.status) == (YesNo.N, Status.LOANED)
    [renew] = core.receive(body(builders.action("ISIL:REQ", "ISIL:SUP", "b", Action.RENEW)),
                           NOW).sends
    _, sam = sam_of(core, renew)
    assert sam.message_info.reason_for_message is ReasonForMessage.RENEW_RESPONSE
    assert (sam.message_info.answer_yes_no, sam.status_info.status) == (YesNo.Y, Status.LOANED)
    assert sam.status_info.due_date is not None


def test_checks_empty_ids_duplicates_errors_and_http_errors():
    core = MockPeer(peer_url="http://peer/iso18626")

    def conf(env):
        return reader.parse(core.receive(body(env), NOW).body).message

    empty = conf(req("MOCK:SUP:LOANED", rari=""))
    assert empty.confirmation_header.message_status is MessageStatus.ERROR
    assert empty.error_data[0].error_type.value == "UnrecognisedDataValue"
    assert conf(req("MOCK:SUP:WILLSUPPLY", rari="d")).confirmation_header.message_status is (
        MessageStatus.OK)
    dup = conf(req("MOCK:SUP:WILLSUPPLY", rari="d"))
    assert dup.error_data[0].error_value == "RequestingAgencyRequestId already exists"
    assert conf(req("MOCK:SUP:ERROR", rari="e")).error_data[0].error_value == "MOCK ERROR"
    assert core.receive(body(req("MOCK:SUP:HTTP-ERROR-500", rari="f")), NOW).status == 500
    unknown = conf(builders.action("ISIL:REQ", "ISIL:SUP", "nope", Action.RECEIVED))
    assert unknown.confirmation_header.message_status is MessageStatus.ERROR


def test_everything_sent_validates_without_quirks():
    core = MockPeer(peer_url="http://peer/iso18626")
    for n, scenario in enumerate(["LOANED", "WILLSUPPLY_LOANED", "RETRY:COST", "RETRY:COND",
                                  "RETRY:ONLOAN", "UNFILLED", "COMPLETED"]):
        reply = core.receive(body(req(f"MOCK:SUP:{scenario}", rari=f"v{n}")), NOW)
        assert validation_errors(parse_xml(reply.body), reply_version := env_version(reply)) == []
        for send in reply.sends:
            _, data = core.build(send, NOW)
            assert validation_errors(parse_xml(data), reply_version) == [], scenario


def env_version(reply):
    return reader.parse(reply.body).version


@pytest.mark.parametrize("version", [Version.V1_2, Version.V2021_2], ids=str)
def test_a_configured_version_is_what_it_writes_whatever_it_is_sent(version):
    """``--version``: spoken to in the other version, the mock still answers and sends
    in its own, valid against the official schema."""
    other = Version.V2021_2 if version is Version.V1_2 else Version.V1_2
    core = MockPeer(peer_url="http://peer/iso18626", version=version)
    for n, scenario in enumerate(["WILLSUPPLY_LOANED", "RETRY:COST", "RETRY:COND",
                                  "RETRY:ONLOAN", "UNFILLED", "COMPLETED"]):
        reply = core.receive(body(replace(req(f"MOCK:SUP:{scenario}", rari=f"c{n}"),
                                          version=other)), NOW)
        assert_officially_valid(reply.body, version)
        for send in reply.sends:
            _, data = core.build(send, NOW)
            assert_officially_valid(data, version)
            assert reader.parse(data).version is version
    unreadable = core.receive(b"<ISO18626Message", NOW)
    assert_officially_valid(unreadable.body, version)


def test_2021_retry_cond_offers_the_condition_in_retry_info():
    core = MockPeer(peer_url="http://peer/iso18626", version=Version.V2021_2)
    [send] = core.receive(body(req("MOCK:SUP:RETRY:COND")), NOW).sends
    _, sam = sam_of(core, send)
    assert sam.message_info.reason_retry.value == "MustMeetLoanCondition"
    assert [c.value for c in sam.retry_info.loan_condition] == ["NoReproduction"]
    # v1.2 has neither: illmock's own value, and the condition in deliveryInfo
    v12 = MockPeer(peer_url="http://peer/iso18626")
    [send] = v12.receive(body(req("MOCK:SUP:RETRY:COND")), NOW).sends
    _, sam = sam_of(v12, send)
    assert sam.message_info.reason_retry.value == "LoanCondition" and sam.retry_info is None
    assert [c.value for c in sam.delivery_info.loan_condition] == ["NoReproduction"]


def test_2021_lost_ends_completed_without_return_and_hold_return_is_confirmed():
    core = MockPeer(peer_url="http://peer/iso18626")

    def v21(env):
        return body(replace(env, version=Version.V2021_2))

    sam_of(core, core.receive(v21(req("MOCK:SUP:LOANED", rari="h")), NOW).sends[0])
    hold = core.receive(v21(builders.action("ISIL:REQ", "ISIL:SUP", "h", Action.HOLD_RETURN)),
                        NOW)
    conf = reader.parse(hold.body)
    assert conf.version is Version.V2021_2 and hold.sends == []
    assert conf.message.confirmation_header.message_status is MessageStatus.OK
    [lost] = core.receive(v21(builders.action("ISIL:REQ", "ISIL:SUP", "h", Action.LOST)),
                          NOW).sends
    _, sam = sam_of(core, lost)
    assert sam.status_info.status is Status.COMPLETED_WITHOUT_RETURN
    assert sam.message_info.reason_for_message is ReasonForMessage.STATUS_CHANGE


def test_quirks_produce_what_they_say():
    core = MockPeer(peer_url="http://peer/iso18626",
                    quirks={"unprefixed-version", "offset-0000", "empty-notification-status"})
    reply = core.receive(body(req("MOCK:SUP:WILLSUPPLY_LOANED")), NOW)
    root = etree.fromstring(reply.body)
    assert root.get("version") == "1.2"
    assert not any(k.startswith("{") for k in root.attrib)
    assert b"+0000</timestamp>" in reply.body and b"Z</timestamp>" not in reply.body
    [send] = reply.sends
    _, first = core.build(send, NOW)
    # the notification comes second, with an empty status
    [nxt] = core.answered(send, first, 200, "application/xml", confirm_ok(first), NOW)
    _, notification = core.build(nxt, NOW)
    assert b"<status/>" in notification and b"Notification" in notification
    assert reader.parse(notification).message.status_info.status is None  # our reader is lenient
    assert validation_errors(parse_xml(notification), reader.parse(notification).version)


def confirm_ok(sent: bytes) -> bytes:
    from node.protocol import confirm

    env = reader.parse(sent)
    return writer.serialise(Envelope(version=env.version, message=confirm.confirmation_for(
        env.message, now=NOW)))


def test_unknown_quirk_or_breakage_is_refused():
    with pytest.raises(ValueError, match="quirk"):
        MockPeer(peer_url="x", quirks={"sloppy"})


# -- over HTTP ------------------------------------------------------------------------------


async def post(url: str, env) -> tuple[int, bytes, dict]:
    async with aiohttp.ClientSession() as http:
        async with http.post(url, data=writer.serialise(env), headers=XML) as resp:
            return resp.status, await resp.read(), dict(resp.headers)


async def statuses(peer: Peer, count: int):
    got = await peer.wait_for(count, timeout=5)
    return [(e.message.message_info.reason_for_message, e.message.status_info.status)
            for e in got if e.kind == "supplyingAgencyMessage"]


@pytest.fixture
async def requester():
    peer = Peer("ISIL:REQ")
    await peer.start()
    yield peer
    await peer.stop()


async def test_http_loaned_and_unfilled(requester):
    async with RunningMock(delay=0.01, peer_url=requester.endpoint) as mock:
        status, _data, _ = await post(mock.endpoint, req("MOCK:SUP:WILLSUPPLY_LOANED", rari="h1"))
        assert status == 200
        assert await statuses(requester, 2) == [
            (ReasonForMessage.REQUEST_RESPONSE, Status.WILL_SUPPLY),
            (ReasonForMessage.STATUS_CHANGE, Status.LOANED)]
        await post(mock.endpoint, req(None, "UNFILLED", rari="h2"))
        got = await statuses(requester, 3)
        assert got[-1] == (ReasonForMessage.REQUEST_RESPONSE, Status.UNFILLED)
        # the flows log, XML and JSON
        async with aiohttp.ClientSession() as http:
            async with http.get(mock.url + "/api/flows?id=h1&role=supplier") as resp:
                flows = etree.fromstring(await resp.read())
            async with http.get(mock.url + "/api/flows.json?supplier=SUP") as resp:
                js = await resp.json()
            async with http.get(mock.url + "/iso18626/error500") as resp:
                assert resp.status == 500
            async with http.get(mock.url + "/healthz") as resp:
                assert resp.status == 200
        [flow] = flows.findall("flow")
        assert (flow.get("id"), flow.get("role"), flow.get("requester"), flow.get("supplier")) == (
            "h1", "supplier", "REQ", "SUP")
        kinds = [m.get("kind") for m in flow.findall("message")]
        assert kinds == ["incoming-request", "outgoing-response", "outgoing-request",
                         "incoming-response", "outgoing-request", "incoming-response"]
        assert flow.find("message").find("{*}ISO18626Message") is not None
        assert {f["id"] for f in js["flows"]} == {"h1", "h2"}


async def test_http_retry_cost_next_as_requester_and_supplier():
    """One mock plays both: a PatronRequest makes it the requester of its own supplier."""
    async with RunningMock(delay=0.01) as mock:
        patron = req("MOCK:SUP:RETRY:COST_LOANED", rari="p1",
                     request_sub_type=(RequestSubType.PATRON_REQUEST,))
        status, _data, headers = await post(mock.endpoint, patron)
        assert status == 200 and headers["X-Request-ID"] == "p1"
        for _ in range(200):
            await asyncio.sleep(0.02)
            sup = mock.server.core.flows.find(role="supplier")
            if sum(1 for f in sup for m in f.messages if m.kind == "outgoing-request") >= 3:
                break
        sent = [reader.parse(m.body).message for f in mock.server.core.flows.find(role="supplier")
                for m in f.messages if m.kind == "outgoing-request"]
        requests = [reader.parse(m.body).message for f in mock.server.core.flows.find(
            role="requester") for m in f.messages if m.kind == "outgoing-request"
            and b"<request>" in m.body]
    first = sent[0]
    assert first.status_info.status is Status.RETRY_POSSIBLE
    assert first.message_info.reason_retry.value == "CostExceedsMaxCost"
    assert first.message_info.offered_costs[0].monetary_value == 35
    retry = next(r for r in requests if r.service_info.request_type is RequestType.RETRY)
    assert retry.service_info.requesting_agency_previous_request_id == "p1"
    assert retry.billing_info.maximum_costs.monetary_value == 35
    assert not retry.service_info.request_sub_type
    assert any(s.status_info.status is Status.LOANED for s in sent[1:])


async def test_quirky_mock_fails_the_schema_check():
    kit_port = free_port()
    async with RunningMock(delay=0.01, quirks={"unprefixed-version"}) as mock:
        [result] = await run_checks(KitConfig(
            peer_url=mock.endpoint, peer_symbol="ISIL:SUP", our_symbol="ISIL:KIT",
            public_url=f"http://127.0.0.1:{kit_port}/iso18626", timeout=4, settle=0.2),
            listen=("127.0.0.1", kit_port), only=["confirmation-wellformed-valid"])
    assert result.outcome == "FAIL" and "not valid ISO 18626 1.2" in result.detail
