"""The borrowing side end to end: our nodes on loopback HTTP, real databases.

Each test runs a borrowing library ("borrower") and one or more lending
libraries of our own (or a stand-in foreign peer) through one of the
borrowing workflows of the seeds (Alma staff workflows): create, rota,
receive, renew, return, conditions, cancel, closures.  Every message our
nodes write is checked against the official ISO 18626 schema of its version.
"""

from __future__ import annotations

import asyncio
import textwrap
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from lxml import etree
from sqlalchemy import select

from node import staff_auth
from node.protocol import reader
from node.protocol.codes import (
    Code,
    MessageStatus,
    ReasonForMessage,
    RequestType,
    Status,
)
from node.protocol.messages import (
    AgencyId,
    Envelope,
    Header,
    MessageInfo,
    Request,
    RequestingAgencyMessage,
    StatusInfo,
    SupplyingAgencyMessage,
)
from node.store import holdings_repo
from node.store import tables as t
from node.supplier.holdings import parse_csv
from tests.harness import Network
from tests.peer import Peer

OFFICIAL = Path(__file__).resolve().parents[3] / "shared" / "iso18626"
SCHEMA_FILES = {"1.2": "ISO-18626-v1_2.xsd", "2021-2": "ISO-18626-2021-2.xsd"}
NS = "{http://illtransactions.org/2013/iso18626}"
_schemas: dict[str, etree.XMLSchema] = {}

HOLDINGS = textwrap.dedent("""\
    record_id,title,author,isbn,barcode,call_number,location,status
    r1,The Brothers Karamazov,"Dostoyevsky, Fyodor",0-14-044924-8,LEND-B1,PG3326,MAIN,available
    r2,Moby Dick,"Melville, Herman",9780142437247,LEND-M1,PS2384,MAIN,available
    r2,Moby Dick,"Melville, Herman",9780142437247,LEND-M2,PS2384,MAIN,available
    """)

BOOK = {"title": "The Brothers Karamazov", "author": "Dostoyevsky, Fyodor",
        "isbn": "9780140449242", "patron_id": "P-100", "pickup_location": "MAIN"}
WHALE = {"title": "Moby Dick", "author": "Melville, Herman", "isbn": "9780142437247",
         "patron_id": "P-200", "pickup_location": "MAIN"}

BORROWING = """
[borrowing]
answer_timeout_hours = 48
pickup_locations = ["MAIN", "BRANCH"]
"""


def official_schema(version: str = "1.2") -> etree.XMLSchema:
    if version not in _schemas:
        parser = etree.XMLParser(resolve_entities=False, no_network=True)
        _schemas[version] = etree.XMLSchema(
            etree.parse(str(OFFICIAL / SCHEMA_FILES[version]), parser))
    return _schemas[version]


def assert_valid(raw: bytes | str, what: str = "message") -> None:
    """Valid against the official schema of the version the message says it is (v1.2,
    or 2021-2 to a partner configured to read it)."""
    if isinstance(raw, str):
        raw = raw.encode("utf-8")
    doc = etree.fromstring(raw, etree.XMLParser(resolve_entities=False, no_network=True))
    version = doc.get(NS + "version", "1.2")
    schema = official_schema(version)
    assert schema.validate(doc), (
        f"{what} is not valid {version}: {schema.error_log}\n{raw.decode()}")


@pytest.fixture
async def net(tmp_path, database_factory):
    network = Network(tmp_path, database_factory)
    yield network
    for lib in network.libraries.values():
        if lib.node is not None and lib.node.engine is not None:
            await assert_all_sent_valid(lib)
    await network.stop()


async def assert_all_sent_valid(lib) -> None:
    """Every message this node wrote (and every confirmation it answered with) is valid."""
    async with lib.node.engine.connect() as conn:
        rows = (await conn.execute(select(t.messages))).all()
    for row in rows:
        if row.direction == "out":
            assert_valid(row.raw, f"{lib.name}'s {row.kind}")
        elif row.confirmation:
            assert_valid(row.confirmation, f"{lib.name}'s confirmation of {row.kind}")


async def load_holdings(lib, csv: str = HOLDINGS) -> None:
    async with lib.node.engine.begin() as conn:
        await holdings_repo.import_records(conn, parse_csv(csv).records, replace=True,
                                           now=lib.node.clock())


async def create(lib, form: dict, status: int = 201) -> dict:
    code, view = await lib.api("POST", "/api/borrowing/requests", json=form)
    assert code == status, view
    return view


async def lending_request(lib, borrowing_view: dict | None = None, timeout: float = 10.0) -> dict:
    """The lender's request for a borrowing request (found by its RARI), once it exists."""
    deadline = asyncio.get_running_loop().time() + timeout
    while asyncio.get_running_loop().time() < deadline:
        code, found = await lib.api("GET", "/api/lending/requests")
        if borrowing_view is None and found["requests"]:
            return found["requests"][0]
        for r in found["requests"]:
            if borrowing_view is not None and r["requesting_request_id"] == (
                    borrowing_view["requesting_request_id"]):
                return r
        await asyncio.sleep(0.05)
    raise AssertionError(f"{lib.name} has no lending request for {borrowing_view}")


def events(view: dict) -> list[str]:
    return [h["event"] for h in view["history"]]


def summaries(view: dict) -> str:
    return "\n".join(h.get("summary", "") for h in view["history"])


async def settle(*libs, seconds: float = 0.3) -> None:
    """Let the outboxes drain."""
    await asyncio.sleep(seconds)


# -- a loan from creation to completion -------------------------------------------


async def test_loan_from_creation_to_completion(net):
    borrower = net.add("borrower", sections=BORROWING)
    lender = net.add("lender")
    await net.start()
    await load_holdings(lender)

    created = await create(borrower, BOOK)
    bid = created["id"]
    assert created["status"] in ("sent", "will_supply")
    assert created["state"]["rota"][0]["symbol"] == lender.symbol

    view = await borrower.wait_for("borrowing", bid, "will_supply")
    lend = await lending_request(lender, view)
    lid = lend["id"]
    assert lend["status"] == "WILL_SUPPLY"

    await lender.act("lending", lid, action="ship", barcodes=["LEND-B1"])
    view = await borrower.wait_for("borrowing", bid, "shipped")
    assert view["supplying_request_id"] == lid
    due = view["state"]["due_date"]
    assert due

    view = await borrower.act("borrowing", bid, action="receive", barcodes=["TMP-1"],
                              in_transit=True)
    assert view["status"] == "received"
    view = await borrower.act("borrowing", bid, action="on_hold")
    assert view["status"] == "on_hold"
    assert any(h["event"] == "patron_notice" for h in view["history"]), "\n".join(events(view))
    view = await borrower.act("borrowing", bid, action="loan_to_patron")
    assert view["status"] == "on_loan"

    view = await borrower.act("borrowing", bid, action="renew")
    assert view["status"] == "renew_requested"
    view = await borrower.wait_for("borrowing", bid, "on_loan")
    assert view["state"]["due_date"] > due
    assert view["state"]["renewals"][0]["answer"] == "Y"
    assert "renewed" in events(view)

    view = await borrower.act("borrowing", bid, action="patron_return")
    assert view["status"] == "returned_by_patron"
    view = await borrower.act("borrowing", bid, action="return_to_partner")
    assert view["status"] == "returned_to_partner"

    await lender.wait_for("lending", lid, "RETURN_SHIPPED")
    await lender.act("lending", lid, action="check_in")
    view = await borrower.wait_for("borrowing", bid, "complete")
    assert view["state"]["end_reason"] == "loan completed"
    kinds = [(m["direction"], m["kind"], m["action"] or m["status"]) for m in view["messages"]]
    assert ("out", "requestingAgencyMessage", "Received") in kinds
    assert ("out", "requestingAgencyMessage", "ShippedReturn") in kinds
    assert ("in", "supplyingAgencyMessage", "LoanCompleted") in kinds


# -- helpers for a foreign peer -------------------------------------------------------

PEER = "ISIL:XX-PEER"


def peer_sam(peer: str, borrower_symbol: str, rari: str, status: Status, *,
             reason: ReasonForMessage = ReasonForMessage.REQUEST_RESPONSE,
             note: str | None = None, supplier_request_id: str = "P-1", version=None,
             **info) -> Envelope:
    from node.protocol.codes import Version

    now = datetime.now(timezone.utc).replace(microsecond=0)
    return Envelope(version=version or Version.V1_2, message=SupplyingAgencyMessage(
        header=Header(supplying_agency_id=AgencyId.parse(peer),
                      requesting_agency_id=AgencyId.parse(borrower_symbol),
                      timestamp=now, requesting_agency_request_id=rari,
                      supplying_agency_request_id=supplier_request_id),
        message_info=MessageInfo(reason_for_message=reason, note=note, **info),
        status_info=StatusInfo(status=status, last_change=now),
    ))


def requests_to(peer: Peer) -> list[Request]:
    return [e.message for e in peer.received if isinstance(e.message, Request)]


def actions_to(peer: Peer) -> list[RequestingAgencyMessage]:
    return [e.message for e in peer.received if isinstance(e.message, RequestingAgencyMessage)]


async def history_count(lib, bid: str) -> int:
    return len((await lib.request("borrowing", bid))["history"])


def today(net) -> str:
    return net.clock().date().isoformat()


def days_from_now(net, days: int) -> str:
    return (net.clock() + timedelta(days=days)).date().isoformat()


# -- the rota ------------------------------------------------------------------------


async def test_rota_skips_a_lender_closed_for_lending(net):
    borrower = net.add("borrower", sections=BORROWING, rota=["closed", "open"])
    closed = net.add("closed")
    opened = net.add("open")
    await net.start()
    await load_holdings(closed)
    await load_holdings(opened)
    start, end = today(net), days_from_now(net, 10)
    code, closure = await closed.api("PUT", "/api/lending/closure", json={
        "active": True, "start": start, "end": end, "note": "stocktaking"})
    assert code == 200 and closure["in_effect"], closure

    bid = (await create(borrower, BOOK))["id"]
    view = await borrower.wait_for("borrowing", bid, "will_supply")
    rota = view["state"]["rota"]
    assert [e["symbol"] for e in rota] == [closed.symbol, opened.symbol]
    assert rota[0]["state"] == "unfilled" and end in rota[0]["note"]
    assert view["partner"] == opened.symbol
    assert "partner_closure" in events(view)

    code, found = await borrower.api("GET", "/api/borrowing/partners")
    assert code == 200
    known = {p["symbol"]: p for p in found["partners"]}
    assert known[closed.symbol]["closure"]["end"] == end
    assert known[closed.symbol]["closure"]["in_effect"] is True
    assert known[opened.symbol]["closure"] is None

    # A new request does not ask the closed lender again: skipped, with a note.
    second = await create(borrower, WHALE)
    first_entry = second["state"]["rota"][0]
    assert first_entry["symbol"] == closed.symbol and first_entry["state"] == "skipped"
    assert end in first_entry["note"]
    assert second["partner"] == opened.symbol
    await borrower.wait_for("borrowing", second["id"], "will_supply")
    code, lent = await closed.api("GET", "/api/lending/requests")
    assert lent["total"] == 1  # only the first request reached it


async def test_no_answer_within_the_timeout_moves_on(net):
    peer = Peer(PEER)
    net.add_peer(PEER, peer.endpoint)
    borrower = net.add("borrower", sections=BORROWING, rota=[PEER, "lender"])
    lender = net.add("lender")
    await peer.start()
    try:
        await net.start()
        await load_holdings(lender)
        bid = (await create(borrower, BOOK))["id"]
        await peer.wait_for(1)  # confirmed, and then silence
        assert (await borrower.request("borrowing", bid))["status"] == "sent"
        net.clock.advance(hours=49)
        view = await borrower.wait_for("borrowing", bid, "will_supply")
        await peer.wait_for(2)
        [first] = requests_to(peer)
        [cancel] = actions_to(peer)
        assert cancel.action.value == "Cancel"
        assert cancel.header.requesting_agency_request_id == first.header.requesting_agency_request_id
        assert "48 hours" in (cancel.note or "")
        rota = view["state"]["rota"]
        assert rota[0]["state"] == "timed_out" and view["partner"] == lender.symbol
        assert "timed_out" in events(view)
        for raw in peer.raw:
            assert_valid(raw, "a message to the peer")
    finally:
        await peer.stop()


LENDER_BY_HAND = """
[lending]
auto_answer = false
"""


async def test_retry_possible_retries_the_same_lender(net):
    borrower = net.add("borrower", sections=BORROWING)
    lender = net.add("lender", sections=LENDER_BY_HAND)
    await net.start()
    bid = (await create(borrower, {**BOOK, "needed_by": days_from_now(net, 30)}))["id"]
    first = await lending_request(lender)
    after = days_from_now(net, 3)
    await lender.act("lending", first["id"], action="retry_possible", reason="OnLoan",
                     retry_after=after, note="out on loan")
    view = await borrower.wait_for("borrowing", bid, "retry_wait")
    assert view["state"]["retry"]["at"].startswith(after)
    assert "retry_planned" in events(view)

    net.clock.advance(days=3, hours=1)
    view = await borrower.wait_for("borrowing", bid, "sent")
    attempts = view["state"]["attempts"]
    assert len(attempts) == 2 and attempts[1]["partner"] == lender.symbol
    assert attempts[1]["previous_request_id"] == attempts[0]["request_id"]
    retry = None
    for _ in range(100):
        code, found = await lender.api("GET", "/api/lending/requests")
        retry = next((r for r in found["requests"]
                      if r["requesting_request_id"] == attempts[1]["request_id"]), None)
        if retry:
            break
        await asyncio.sleep(0.05)
    assert retry is not None
    shown = await lender.request("lending", retry["id"])
    raw = next(m["raw"] for m in shown["messages"] if m["kind"] == "request")
    parsed = reader.parse(raw.encode()).message
    assert parsed.service_info.request_type is RequestType.RETRY
    assert parsed.service_info.requesting_agency_previous_request_id == attempts[0]["request_id"]
    await lender.act("lending", retry["id"], action="will_supply")
    await borrower.wait_for("borrowing", bid, "will_supply")


async def test_retry_possible_after_the_needed_by_date_moves_on(net):
    borrower = net.add("borrower", sections=BORROWING, rota=["lender", "second"])
    lender = net.add("lender", sections=LENDER_BY_HAND)
    second = net.add("second")
    await net.start()
    await load_holdings(second)
    bid = (await create(borrower, {**BOOK, "needed_by": days_from_now(net, 2)}))["id"]
    first = await lending_request(lender)
    await lender.act("lending", first["id"], action="retry_possible", reason="OnLoan",
                     retry_after=days_from_now(net, 10))
    view = await borrower.wait_for("borrowing", bid, "will_supply")
    assert view["partner"] == second.symbol
    rota = view["state"]["rota"]
    assert rota[0]["state"] == "unfilled" and "needed-by" in rota[0]["note"]


# -- conditions -----------------------------------------------------------------------


async def test_conditions_accepted_then_shipped(net):
    borrower = net.add("borrower", sections=BORROWING)
    lender = net.add("lender", sections=LENDER_BY_HAND)
    await net.start()
    await load_holdings(lender)
    bid = (await create(borrower, BOOK))["id"]
    lid = (await lending_request(lender))["id"]
    await lender.act("lending", lid, action="add_conditions", conditions=["LibraryUseOnly"],
                     note="reading room only")
    view = await borrower.wait_for("borrowing", bid, "conditional")
    assert view["needs_attention"]
    assert view["state"]["conditions"][0]["loan_conditions"] == ["LibraryUseOnly"]
    code, found = await borrower.api("GET", "/api/borrowing/requests?status=conditional")
    assert [r["id"] for r in found["requests"]] == [bid]

    view = await borrower.act("borrowing", bid, action="condition_answer", accept=True,
                              note="fine")
    assert view["status"] in ("will_supply", "expect_to_supply", "sent")
    await lender.wait_for("lending", lid, {"WILL_SUPPLY"})
    await lender.act("lending", lid, action="ship", barcodes=["LEND-B1"])
    view = await borrower.wait_for("borrowing", bid, "shipped")
    assert view["state"]["conditions"][0]["answer"] == "accepted"


async def test_conditions_refused_moves_to_the_next_lender(net):
    borrower = net.add("borrower", sections=BORROWING, rota=["lender", "second"])
    lender = net.add("lender", sections=LENDER_BY_HAND)
    second = net.add("second")
    await net.start()
    await load_holdings(lender)
    await load_holdings(second)
    bid = (await create(borrower, BOOK))["id"]
    lid = (await lending_request(lender))["id"]
    await lender.act("lending", lid, action="add_conditions", conditions=["LibraryUseOnly"])
    await borrower.wait_for("borrowing", bid, "conditional")
    view = await borrower.act("borrowing", bid, action="condition_answer", accept=False,
                              note="patron needs it at home")
    view = await borrower.wait_for("borrowing", bid, "will_supply")
    assert view["partner"] == second.symbol
    assert view["state"]["rota"][0]["state"] == "refused"
    await lender.wait_for("lending", lid, "CANCELLED")
    await asyncio.sleep(0.3)  # the first lender's answer to our Cancel is accepted quietly
    view = await borrower.request("borrowing", bid)
    assert view["status"] == "will_supply" and view["partner"] == second.symbol


# -- renew ---------------------------------------------------------------------------


async def shipped_and_on_loan(borrower, lender, form=BOOK, barcode="LEND-B1"):
    bid = (await create(borrower, form))["id"]
    view = await borrower.wait_for("borrowing", bid, {"will_supply", "sent"})
    lid = (await lending_request(lender, view))["id"]
    await lender.wait_for("lending", lid, "WILL_SUPPLY")
    await lender.act("lending", lid, action="ship", barcodes=[barcode])
    await borrower.wait_for("borrowing", bid, "shipped")
    await borrower.act("borrowing", bid, action="receive", barcodes=["TMP-" + barcode])
    view = await borrower.act("borrowing", bid, action="loan_to_patron")
    assert view["status"] == "on_loan"
    return bid, lid, view


async def test_renew_refused_keeps_the_due_date(net):
    borrower = net.add("borrower", sections=BORROWING)
    lender = net.add("lender", sections="[lending]\nauto_renew = false\n")
    await net.start()
    await load_holdings(lender)
    bid, lid, view = await shipped_and_on_loan(borrower, lender)
    due = view["state"]["due_date"]
    await borrower.act("borrowing", bid, action="renew", due_date=days_from_now(net, 60))
    await lender.wait_for("lending", lid, "SHIPPED")
    for _ in range(100):
        if (await lender.request("lending", lid))["state"].get("pending_renew"):
            break
        await asyncio.sleep(0.05)
    await lender.act("lending", lid, action="renew_answer", approve=False, note="on reserve")
    view = await borrower.wait_for("borrowing", bid, "on_loan")
    assert view["state"]["due_date"] == due
    assert view["state"]["renewals"][-1]["answer"] == "N"
    assert "renew_refused" in events(view)
    code, notices = await borrower.api("GET", f"/api/borrowing/requests/{bid}/notices")
    assert code == 200
    assert any(n["notice"] == "renew_refused" and "did not renew" in n["text"]
               for n in notices["notices"])


async def test_renew_approved_by_lender_staff(net):
    borrower = net.add("borrower", sections=BORROWING)
    lender = net.add("lender", sections="[lending]\nauto_renew = false\n")
    await net.start()
    await load_holdings(lender)
    bid, lid, view = await shipped_and_on_loan(borrower, lender)
    due = view["state"]["due_date"]
    await borrower.act("borrowing", bid, action="renew")
    for _ in range(100):
        if (await lender.request("lending", lid))["state"].get("pending_renew"):
            break
        await asyncio.sleep(0.05)
    new_due = days_from_now(net, 90)
    await lender.act("lending", lid, action="renew_answer", approve=True, due_date=new_due)
    view = await borrower.wait_for("borrowing", bid, "on_loan")
    assert view["state"]["due_date"] != due and view["state"]["due_date"].startswith(new_due)
    code, notices = await borrower.api("GET", f"/api/borrowing/requests/{bid}/notices")
    assert any(n["notice"] == "renewed" and new_due in n["text"] for n in notices["notices"])


# -- cancel --------------------------------------------------------------------------


async def test_cancel_before_shipping_is_accepted(net):
    borrower = net.add("borrower", sections=BORROWING)
    lender = net.add("lender")
    await net.start()
    await load_holdings(lender)
    bid = (await create(borrower, BOOK))["id"]
    view = await borrower.wait_for("borrowing", bid, "will_supply")
    lid = (await lending_request(lender, view))["id"]
    view = await borrower.act("borrowing", bid, action="cancel", reason="patron no longer needs it",
                              notify_patron=True)
    assert view["status"] == "cancel_requested"
    view = await borrower.wait_for("borrowing", bid, "cancelled")
    await lender.wait_for("lending", lid, "CANCELLED")
    code, notices = await borrower.api("GET", f"/api/borrowing/requests/{bid}/notices")
    assert [n["notice"] for n in notices["notices"]] == ["cancelled"]


async def test_cancel_refused_by_lender_staff_keeps_the_request(net):
    borrower = net.add("borrower", sections=BORROWING)
    lender = net.add("lender", sections="[lending]\nauto_cancel = false\n")
    await net.start()
    await load_holdings(lender)
    bid = (await create(borrower, BOOK))["id"]
    view = await borrower.wait_for("borrowing", bid, "will_supply")
    lid = (await lending_request(lender, view))["id"]
    await borrower.act("borrowing", bid, action="cancel", reason="found elsewhere")
    for _ in range(100):
        if (await lender.request("lending", lid))["state"].get("pending_cancel"):
            break
        await asyncio.sleep(0.05)
    await lender.act("lending", lid, action="cancel_answer", approve=False, note="already packed")
    view = await borrower.wait_for("borrowing", bid, "will_supply")
    assert "cancel_refused" in events(view)
    assert any("already packed" in m["text"] for m in view["state"]["messages"])


async def test_cancel_refused_after_shipping(net):
    borrower = net.add("borrower", sections=BORROWING)
    lender = net.add("lender")
    await net.start()
    await load_holdings(lender)
    bid = (await create(borrower, BOOK))["id"]
    view = await borrower.wait_for("borrowing", bid, "will_supply")
    lid = (await lending_request(lender, view))["id"]
    # The lender ships while its Loaned is still in its outbox when our Cancel arrives.
    outbox = lender.node.outbox
    await outbox.stop()
    await lender.node._outbox_task
    try:
        await lender.act("lending", lid, action="ship", barcodes=["LEND-B1"])
        await borrower.act("borrowing", bid, action="cancel", reason="found elsewhere")
        await lender.wait_for("lending", lid, "SHIPPED")
        for _ in range(100):
            shown = await lender.request("lending", lid)
            if any(h["event"] == "cancel_requested" for h in shown["history"]):
                break
            await asyncio.sleep(0.05)
    finally:
        lender.node._outbox_task = asyncio.create_task(outbox.run())
    view = await borrower.wait_for("borrowing", bid, "shipped")
    await asyncio.sleep(0.5)  # the CancelResponse N follows the Loaned
    view = await borrower.request("borrowing", bid)
    assert view["status"] == "shipped", events(view)
    incoming = [m for m in view["messages"] if m["direction"] == "in"]
    assert any(m["reason"] == "CancelResponse" for m in incoming), incoming
    assert all(m["raw"] for m in incoming)
    await borrower.act("borrowing", bid, action="receive", barcodes=["TMP-1"])


# -- copies --------------------------------------------------------------------------


async def test_a_copy_is_delivered(net):
    borrower = net.add("borrower", sections=BORROWING)
    lender = net.add("lender")
    await net.start()
    await load_holdings(lender)
    form = {**BOOK, "format": "digital", "copyright_agreed": True,
            "title_of_component": "The Grand Inquisitor", "pages": "229-254"}
    bid = (await create(borrower, form))["id"]
    view = await borrower.wait_for("borrowing", bid, {"will_supply", "expect_to_supply"})
    lid = (await lending_request(lender, view))["id"]
    await lender.wait_for("lending", lid, {"WILL_SUPPLY", "EXPECT_TO_SUPPLY"})
    await lender.act("lending", lid, action="deliver_copy", url="https://files.example/1.pdf",
                     note="PDF by link")
    view = await borrower.wait_for("borrowing", bid, "copy_delivered")
    delivery = view["state"]["delivery"]
    assert "https://files.example/1.pdf" in (delivery["url"] or delivery["note"] or ""), delivery
    code, notices = await borrower.api("GET", f"/api/borrowing/requests/{bid}/notices")
    assert notices["notices"][-1]["notice"] == "copy_delivered"
    assert "files.example/1.pdf" in notices["notices"][-1]["text"]


# -- closures, late messages, end of the rota ------------------------------------------


async def test_borrowing_closure_refuses_new_requests_with_its_dates(net):
    borrower = net.add("borrower", sections=BORROWING)
    lender = net.add("lender")
    await net.start()
    await load_holdings(lender)
    in_progress = (await create(borrower, BOOK))["id"]
    start, end = today(net), days_from_now(net, 7)
    code, closure = await borrower.api("PUT", "/api/borrowing/closure", json={
        "active": True, "start": start, "end": end, "note": "inventory"})
    assert code == 200 and closure["in_effect"]
    code, answer = await borrower.api("POST", "/api/borrowing/requests", json=WHALE)
    assert code == 409 and start in answer["error"] and end in answer["error"], answer
    assert "suspended" in answer["error"].lower()
    code, answer = await borrower.api("POST", "/api/patron/requests", json=WHALE)
    assert code == 409 and end in answer["error"], answer
    code, found = await borrower.api("GET", "/api/borrowing/requests")
    assert found["total"] == 1
    # requests in progress go on
    await borrower.wait_for("borrowing", in_progress, "will_supply")
    # after the closure, patrons can ask again
    net.clock.advance(days=8)
    code, answer = await borrower.api("POST", "/api/patron/requests", json=WHALE)
    assert code == 201, answer


async def test_late_message_from_an_earlier_lender_gets_an_error(net):
    peer = Peer(PEER)
    net.add_peer(PEER, peer.endpoint)
    borrower = net.add("borrower", sections=BORROWING, rota=[PEER, "lender"])
    lender = net.add("lender")
    await peer.start()
    try:
        await net.start()
        await load_holdings(lender)
        bid = (await create(borrower, BOOK))["id"]
        [env] = await peer.wait_for(1)
        rari = env.message.header.requesting_agency_request_id
        code, body = await peer.send(borrower.endpoint, peer_sam(
            PEER, borrower.symbol, rari, Status.UNFILLED, reason_unfilled=Code("NotHeld")))
        assert reader.parse(body).message.confirmation_header.message_status is MessageStatus.OK
        await borrower.wait_for("borrowing", bid, "will_supply")
        before = await borrower.request("borrowing", bid)

        code, body = await peer.send(borrower.endpoint, peer_sam(
            PEER, borrower.symbol, rari, Status.WILL_SUPPLY,
            reason=ReasonForMessage.STATUS_CHANGE, note="found it after all"))
        assert code == 200
        assert_valid(body, "the ERROR confirmation")
        conf = reader.parse(body).message
        assert conf.confirmation_header.message_status is MessageStatus.ERROR
        assert "earlier attempt" in conf.error_data[0].error_value
        after = await borrower.request("borrowing", bid)
        assert after["status"] == "will_supply" and after["partner"] == lender.symbol
        assert after["history"] == before["history"] and after["state"] == before["state"]
    finally:
        await peer.stop()


async def test_error_confirmation_to_our_request_moves_on(net):
    peer = Peer(PEER)
    peer.answer = lambda env: "error" if isinstance(env.message, Request) else None
    net.add_peer(PEER, peer.endpoint)
    borrower = net.add("borrower", sections=BORROWING, rota=[PEER, "lender"])
    lender = net.add("lender")
    await peer.start()
    try:
        await net.start()
        await load_holdings(lender)
        bid = (await create(borrower, BOOK))["id"]
        view = await borrower.wait_for("borrowing", bid, "will_supply")
        assert view["partner"] == lender.symbol
        assert view["state"]["rota"][0]["state"] == "unfilled"
        assert "scripted ERROR" in view["state"]["rota"][0]["note"]
    finally:
        await peer.stop()


async def test_a_lender_never_reached_is_given_up_and_the_rota_moves_on(net):
    dead = "ISIL:XX-DEAD"
    net.add_peer(dead, "http://127.0.0.1:9/iso18626")  # nothing listens on port 9
    borrower = net.add("borrower", sections=BORROWING, rota=[dead, "lender"])
    lender = net.add("lender")
    await net.start()
    borrower.node.outbox.max_attempts = 2  # give up quickly (the harness allows 50)
    await load_holdings(lender)
    bid = (await create(borrower, BOOK))["id"]
    view = await borrower.wait_for("borrowing", bid, "will_supply")
    assert view["partner"] == lender.symbol
    first = view["state"]["rota"][0]
    assert first["state"] == "unfilled" and "request not accepted" in first["note"]
    assert {"send_failed", "delivery_failed"} <= set(events(view))


async def test_end_of_rota_then_rerequest_with_new_partners(net):
    borrower = net.add("borrower", rota=["empty"], sections=BORROWING + """
        [[rotas]]
        name = "fallback"
        formats = ["microfilm"]  # never chosen for books by itself
        partners = ["ISIL:XX-FULL"]
        """)
    empty = net.add("empty")
    full = net.add("full")
    await net.start()
    await load_holdings(full)
    await load_holdings(empty, "record_id,title,barcode\nr9,Another book,E1\n")  # not held
    bid = (await create(borrower, BOOK))["id"]
    view = await borrower.wait_for("borrowing", bid, "unfilled")
    assert view["needs_attention"]
    assert view["state"]["end_reason"] == "unfilled — end of rota"
    code, answer = await borrower.api("POST", f"/api/borrowing/requests/{bid}/actions",
                                      json={"action": "rerequest", "partners": ["ISIL:XX-NOBODY"]})
    assert code == 409 and "not a configured partner" in answer["error"]
    code, answer = await borrower.api("POST", f"/api/borrowing/requests/{bid}/actions",
                                      json={"action": "rerequest", "rota": "nosuch"})
    assert code == 409 and "not a configured rota" in answer["error"]
    view = await borrower.act("borrowing", bid, action="rerequest", rota="fallback",
                              note="try the fallback rota")
    assert view["status"] == "sent"
    view = await borrower.wait_for("borrowing", bid, "will_supply")
    assert view["partner"] == full.symbol
    assert [e["symbol"] for e in view["state"]["rota"]] == [empty.symbol, full.symbol]


# -- the form ------------------------------------------------------------------------


async def test_form_problems_get_one_message_per_field(net):
    borrower = net.add("borrower", sections=BORROWING)
    net.add("lender")
    await net.start()
    code, answer = await borrower.api("POST", "/api/borrowing/requests", json={
        "isbn": "978-0-14-044924-3", "pickup_location": "ATTIC", "format": "vinyl",
        "needed_by": "someday", "max_fee": "lots", "colour": "blue"})
    assert code == 400, answer
    errors = answer["errors"]
    assert set(errors) == {"isbn", "pickup_location", "format", "needed_by", "max_fee",
                           "colour", "patron_id"}, errors
    assert "MAIN" in errors["pickup_location"]
    code, answer = await borrower.api("POST", "/api/patron/requests", json={
        "title": "Copy please", "patron_id": "P-1", "pickup_location": "MAIN",
        "format": "digital"})
    assert code == 400 and set(answer["errors"]) == {"copyright_agreed"}, answer
    code, answer = await borrower.api("POST", "/api/borrowing/requests", json={
        **BOOK, "needed_by": (net.clock() - timedelta(days=1)).date().isoformat()})
    assert code == 400 and set(answer["errors"]) == {"needed_by"}, answer
    assert "in the past" in answer["errors"]["needed_by"]
    code, answer = await borrower.api("POST", "/api/borrowing/requests", json=["not", "a", "form"])
    assert code == 400
    code, found = await borrower.api("GET", "/api/borrowing/requests")
    assert found["total"] == 0


async def test_possible_duplicate_is_flagged(net):
    borrower = net.add("borrower", sections=BORROWING)
    lender = net.add("lender")
    await net.start()
    await load_holdings(lender)
    first = await create(borrower, BOOK)
    # the same book by its ISBN-10, for the same patron
    second = await create(borrower, {**BOOK, "isbn": "0-14-044924-8", "title": "Brothers K."})
    assert "possible_duplicate" not in events(first)
    flagged = [h for h in second["history"] if h["event"] == "possible_duplicate"]
    assert flagged and flagged[0]["duplicate_of"] == first["id"]
    other_patron = await create(borrower, {**BOOK, "patron_id": "P-999"})
    assert "possible_duplicate" not in events(other_patron)
    other_case = await create(borrower, {**BOOK, "patron_id": "p-100"})  # someone else too
    code, mine = await borrower.api("GET", "/api/patron/P-100/requests")
    assert {r["id"] for r in mine["requests"]} == {first["id"], second["id"]}
    code, theirs = await borrower.api("GET", "/api/patron/p-100/requests")
    assert [r["id"] for r in theirs["requests"]] == [other_case["id"]]
    # Staff find all three by the patron id typed in any case.
    code, found = await borrower.api("GET", "/api/borrowing/requests?q=p-100")
    assert {r["id"] for r in found["requests"]} == {first["id"], second["id"], other_case["id"]}


# -- the borrowing desk: receive by the lender's id, return by barcode --------------------


async def test_receive_multi_volume_by_lender_id_and_return_by_barcode(net):
    borrower = net.add("borrower", sections=BORROWING)
    lender = net.add("lender")
    await net.start()
    await load_holdings(lender)
    bid = (await create(borrower, WHALE))["id"]
    view = await borrower.wait_for("borrowing", bid, "will_supply")
    lid = (await lending_request(lender, view))["id"]
    await lender.act("lending", lid, action="ship", barcodes=["LEND-M1", "LEND-M2"])
    await borrower.wait_for("borrowing", bid, "shipped")

    code, answer = await borrower.api("POST", "/api/borrowing/receive", json={
        "lender_request_id": lid, "barcodes": ["TMP-V1", "TMP-V1"]})
    assert code == 400 and "twice" in answer["error"]
    code, answer = await borrower.api("POST", "/api/borrowing/receive", json={
        "lender_request_id": "L-NOSUCH", "barcodes": ["TMP-V1"]})
    assert code == 404, answer
    code, answer = await borrower.api("POST", "/api/borrowing/receive", json={
        "barcodes": ["TMP-V1"]})
    assert code == 400, answer
    code, view = await borrower.api("POST", "/api/borrowing/receive", json={
        "lender_request_id": lid, "barcodes": ["TMP-V1", "TMP-V2"]})
    assert code == 200, view
    assert view["status"] == "on_hold" and view["state"]["barcodes"] == ["TMP-V1", "TMP-V2"]
    code, answer = await borrower.api("POST", "/api/borrowing/receive", json={
        "request_id": bid, "barcodes": ["TMP-V3"]})
    assert code == 409, answer  # already received
    code, notices = await borrower.api("GET", f"/api/borrowing/requests/{bid}/notices")
    assert [n["notice"] for n in notices["notices"]] == ["on_hold"]
    assert "MAIN" in notices["notices"][0]["text"] and notices["notices"][0]["patron_id"] == "P-200"
    code, _ = await borrower.api("GET", "/api/borrowing/requests/B-NOSUCH/notices")
    assert code == 404

    await borrower.act("borrowing", bid, action="loan_to_patron")
    code, answer = await borrower.api("POST", "/api/borrowing/return", json={"barcode": "NOPE"})
    assert code == 404, answer
    code, answer = await borrower.api("POST", "/api/borrowing/return", json={})
    assert code == 400, answer
    code, view = await borrower.api("POST", "/api/borrowing/return", json={"barcode": "tmp-v2"})
    assert code == 200, view
    assert view["status"] == "returned_to_partner"
    assert view["destination"] == {"symbol": lender.symbol, "name": "lender"}
    code, answer = await borrower.api("POST", "/api/borrowing/return", json={"barcode": "TMP-V1"})
    assert code == 409 and "nothing to return" in answer["error"], answer
    await lender.wait_for("lending", lid, "RETURN_SHIPPED")
    await lender.act("lending", lid, action="check_in")
    await borrower.wait_for("borrowing", bid, "complete")


# -- rota edits, status request, overdue, lost, costs, patron renewal, bad actions -----------


async def rota_states(lib, bid: str) -> list[tuple[str, str]]:
    view = await lib.request("borrowing", bid)
    return [(e["symbol"], e["state"]) for e in view["state"]["rota"]]


async def test_staff_edit_the_rota_and_cancel_the_active_partner(net):
    borrower = net.add("borrower", sections=BORROWING, rota=["first", "second"])
    first = net.add("first", sections=LENDER_BY_HAND)
    second = net.add("second")
    third = net.add("third")
    await net.start()
    for lib in (first, second, third):
        await load_holdings(lib)
    bid = (await create(borrower, BOOK))["id"]
    lid = (await lending_request(first))["id"]
    assert (await borrower.request("borrowing", bid))["status"] == "sent"

    view = await borrower.act("borrowing", bid, action="rota_add", symbol=third.symbol)
    assert "rota_add" in events(view)
    view = await borrower.act("borrowing", bid, action="rota_move", symbol=third.symbol,
                              position=0)
    assert await rota_states(borrower, bid) == [
        (first.symbol, "active"), (third.symbol, "pending"), (second.symbol, "pending")]
    await borrower.act("borrowing", bid, action="rota_remove", symbol=second.symbol,
                       note="slow to ship lately")
    assert await rota_states(borrower, bid) == [
        (first.symbol, "active"), (third.symbol, "pending"), (second.symbol, "removed")]

    # Not allowed now (409) vs malformed (400).
    code, err = await borrower.api("POST", f"/api/borrowing/requests/{bid}/actions",
                                   json={"action": "rota_remove", "symbol": first.symbol})
    assert code == 409 and "active partner" in err["error"]
    code, err = await borrower.api("POST", f"/api/borrowing/requests/{bid}/actions",
                                   json={"action": "rota_add", "symbol": "ISIL:XX-NOBODY"})
    assert code == 409 and "not a configured partner" in err["error"]
    code, err = await borrower.api("POST", f"/api/borrowing/requests/{bid}/actions",
                                   json={"action": "rota_move", "symbol": third.symbol})
    assert code == 400 and err["errors"] == {"position": "is required"}

    # Cancel the active partner: Cancel goes out, and the rota moves on once it is confirmed.
    view = await borrower.act("borrowing", bid, action="cancel_partner", note="too slow")
    assert view["status"] == "cancel_requested" and view["partner"] == first.symbol
    await first.wait_for("lending", lid, "CANCELLED")
    view = await borrower.wait_for("borrowing", bid, "will_supply")
    assert view["partner"] == third.symbol
    assert await rota_states(borrower, bid) == [
        (first.symbol, "cancelled"), (third.symbol, "active"), (second.symbol, "removed")]
    kinds = [(m["direction"], m["action"] or m["reason"]) for m in view["messages"]]
    assert ("out", "Cancel") in kinds and ("in", "CancelResponse") in kinds
    code, found = await second.api("GET", "/api/lending/requests")
    assert found["requests"] == []  # removed before it was asked


async def test_status_request_to_the_lender(net):
    borrower = net.add("borrower", sections=BORROWING)
    lender = net.add("lender")
    await net.start()
    await load_holdings(lender)
    bid = (await create(borrower, BOOK))["id"]
    view = await borrower.wait_for("borrowing", bid, "will_supply")
    lid = (await lending_request(lender, view))["id"]

    view = await borrower.act("borrowing", bid, action="status_request")
    assert view["status"] == "will_supply" and "status_request" in events(view)
    await lender.wait_for("lending", lid, "WILL_SUPPLY")

    async def answers() -> list[str]:
        view = await borrower.request("borrowing", bid)
        return [m["status"] for m in view["messages"]
                if m["direction"] == "in" and m["reason"] == "StatusRequestResponse"]

    for _ in range(200):
        if await answers():
            break
        await asyncio.sleep(0.05)
    assert await answers() == ["WillSupply"]
    lending = await lender.request("lending", lid)
    assert "status_request" in events(lending)

    await lender.act("lending", lid, action="ship", barcodes=["LEND-B1"])
    await borrower.wait_for("borrowing", bid, "shipped")
    # Timestamps are whole seconds: the same ask within one second is the same message
    # (a duplicate, answered once).
    net.clock.advance(seconds=2)
    await borrower.act("borrowing", bid, action="status_request")
    for _ in range(200):
        if len(await answers()) == 2:
            break
        await asyncio.sleep(0.05)
    assert await answers() == ["WillSupply", "Loaned"]
    assert (await borrower.request("borrowing", bid))["status"] == "shipped"


async def test_overdue_from_the_due_date_by_the_daily_job(net):
    peer = Peer(PEER)
    net.add_peer(PEER, peer.endpoint)
    borrower = net.add("borrower", sections=BORROWING, rota=[PEER])
    await peer.start()
    try:
        await net.start()
        bid = (await create(borrower, BOOK))["id"]
        [request] = [e.message for e in await peer.wait_for(1)]
        rari = request.header.requesting_agency_request_id
        due = (net.clock() + timedelta(days=3)).replace(microsecond=0)
        loaned = peer_sam(PEER, borrower.symbol, rari, Status.LOANED,
                          reason=ReasonForMessage.STATUS_CHANGE)
        loaned = Envelope(version=loaned.version, message=replace(
            loaned.message, status_info=replace(loaned.message.status_info, due_date=due)))
        status, body = await peer.send(borrower.endpoint, loaned)
        assert status == 200 and b"OK" in body
        await borrower.wait_for("borrowing", bid, "shipped")
        await borrower.act("borrowing", bid, action="receive", barcodes=["TMP-9"])
        await borrower.act("borrowing", bid, action="loan_to_patron")

        assert await borrower.node.run_due_timers() == 0  # not due yet
        assert (await borrower.request("borrowing", bid))["status"] == "on_loan"
        net.clock.advance(days=4)
        await borrower.node.run_due_timers()
        view = await borrower.wait_for("borrowing", bid, "overdue")
        assert "overdue" in events(view)
        code, notices = await borrower.api("GET", f"/api/borrowing/requests/{bid}/notices")
        [notice] = [n for n in notices["notices"] if n["notice"] == "overdue"]
        assert due.date().isoformat() in notice["text"]
        code, found = await borrower.api("GET", "/api/borrowing/requests?status=overdue")
        assert [r["id"] for r in found["requests"]] == [bid]
        await borrower.node.run_due_timers()
        view = await borrower.request("borrowing", bid)
        assert events(view).count("overdue") == 1  # flagged once
        assert len(peer.received) == 2  # Request, Received; the job tells the lender nothing

        # Overdue loans can still be returned to the lender.
        view = await borrower.act("borrowing", bid, action="return_to_partner")
        assert view["status"] == "returned_to_partner"
    finally:
        await peer.stop()


async def test_lost_by_the_patron_with_the_lenders_charges(net):
    borrower = net.add("borrower", sections=BORROWING)
    lender = net.add("lender")
    await net.start()
    await load_holdings(lender)
    bid, lid, view = await shipped_and_on_loan(borrower, lender)

    view = await borrower.act("borrowing", bid, action="lost", note="left on a train")
    assert view["status"] == "lost"
    lending = await _until(lambda: lender.request("lending", lid),
                           lambda v: v["state"]["unread"])
    assert lending["status"] == "SHIPPED" and lending["needs_attention"]
    assert "left on a train" in lending["state"]["unread"][-1]["note"]
    assert "charges" in lending["state"]["unread"][-1]["note"]

    await lender.act("lending", lid, action="lost", charge={"amount": "45.50", "currency": "EUR"},
                     note="replacement and processing")
    view = await borrower.wait_for("borrowing", bid, "complete")
    [charge] = view["state"]["charges"]
    assert (charge["amount"], charge["currency"], charge["partner"]) == (
        "45.50", "EUR", lender.symbol)
    assert "charge" in events(view)
    assert view["state"]["end_reason"].startswith("completed without return")


async def _until(fetch, ok, timeout: float = 10.0):
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        value = await fetch()
        if ok(value):
            return value
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"condition not reached: {value}")
        await asyncio.sleep(0.05)


async def test_costs_within_the_patrons_maximum_are_accepted_automatically(net):
    borrower = net.add("borrower", sections=BORROWING, rota=["lender"])
    strict = net.add("strict", sections=BORROWING + "auto_accept_costs = false\n",
                     rota=["lender"])
    lender = net.add("lender", sections=LENDER_BY_HAND)
    await net.start()
    await load_holdings(lender)
    paying = {**BOOK, "willing_to_pay": True, "max_fee": "20", "currency": "EUR"}

    async def offered(lib, form, amount: str) -> tuple[str, str]:
        bid = (await create(lib, form))["id"]
        view = await lib.wait_for("borrowing", bid, "sent")
        lid = (await lending_request(lender, view))["id"]
        await lender.act("lending", lid, action="add_conditions",
                         cost={"amount": amount, "currency": "EUR"})
        return bid, lid

    within, lid = await offered(borrower, paying, "15")
    view = await borrower.wait_for("borrowing", within, "will_supply")
    [offer] = view["state"]["conditions"]
    assert (offer["answer"], offer["answered_by"]) == ("accepted", "system")
    assert "accepted_conditions" in events(view)
    lending = await lender.wait_for("lending", lid, "WILL_SUPPLY")
    assert lending["state"]["conditions_accepted"] is True

    over, lid = await offered(borrower, {**paying, "isbn": "9780142437247",
                                         "title": "Moby Dick"}, "25")
    view = await borrower.wait_for("borrowing", over, "conditional")
    assert view["needs_attention"] and view["state"]["conditions"][0]["answer"] is None
    assert (await lender.request("lending", lid))["status"] == "CONDITIONAL"

    held, lid = await offered(strict, {**paying, "patron_id": "P-300"}, "5")
    view = await strict.wait_for("borrowing", held, "conditional")
    assert view["state"]["conditions"][0]["answer"] is None
    await asyncio.sleep(0.3)
    assert (await lender.request("lending", lid))["status"] == "CONDITIONAL"


async def test_malformed_action_bodies_answer_400_per_field(net):
    borrower = net.add("borrower", sections=BORROWING)
    lender = net.add("lender", sections=LENDER_BY_HAND)
    await net.start()
    bid = (await create(borrower, BOOK))["id"]
    await lending_request(lender)
    path = f"/api/borrowing/requests/{bid}/actions"
    before = await history_count(borrower, bid)
    for body, problems in [
        ({"action": "fly"}, {"action": "unknown action 'fly'"}),
        ({"note": "x"}, {"action": "unknown action None"}),
        ({"action": {"name": "cancel"}}, {"action": "unknown action"}),
        ({"action": "cancel", "notify_patron": "yes", "colour": "red"},
         {"reason": "is required", "notify_patron": "must be true or false",
          "colour": "not a field of 'cancel'"}),
        ({"action": "rota_move", "symbol": lender.symbol, "position": -1},
         {"position": "must be a whole number"}),
        ({"action": "renew", "due_date": "soon"}, {"due_date": "must be a date"}),
        ({"action": "receive", "barcodes": ["A", "A"]}, {"barcodes": "twice"}),
    ]:
        code, err = await borrower.api("POST", path, json=body)
        assert code == 400, (body, err)
        assert set(err["errors"]) == set(problems), (body, err)
        for field, text in problems.items():
            assert text in err["errors"][field], (body, err)
            assert text in err["error"]
    async with borrower.http.post(borrower.url + path, data=b"not json") as resp:
        assert resp.status == 400 and "JSON object" in (await resp.json())["error"]
    code, err = await borrower.api("POST", path, json={"action": "renew"})
    assert code == 409 and "renewal" in err["error"]  # well formed, not now
    assert await history_count(borrower, bid) == before


PATRON_SECRET = "a-patron-secret-for-the-tests"
STAFF_TOKEN = "ills_desk-token"


async def as_patron(lib, patron_id: str, method: str, path: str, json=None) -> tuple[int, dict]:
    token = staff_auth.patron_token(PATRON_SECRET, patron_id)
    async with lib.http.request(method, lib.url + path, json=json,
                                headers={"Authorization": f"Bearer {token}"}) as resp:
        return resp.status, await resp.json()


async def test_patron_asks_to_renew_their_own_loan(net):
    borrower = net.add("borrower", sections=(
        f'patron_secret = "{PATRON_SECRET}"\n{BORROWING}\n[[staff]]\nname = "desk"\n'
        f'role = "staff"\ntoken_sha256 = "{staff_auth.token_sha256(STAFF_TOKEN)}"\n'))
    borrower.token = STAFF_TOKEN
    lender = net.add("lender")
    await net.start()
    await load_holdings(lender)
    bid, lid, view = await shipped_and_on_loan(borrower, lender)
    due = view["state"]["due_date"]
    other = (await create(borrower, {**WHALE, "patron_id": "P-200"}))["id"]
    mine = f"/api/patron/P-100/requests/{bid}/renew"

    # Only the patron themselves; another patron's request is not found.
    code, err = await as_patron(borrower, "P-200", "POST", mine)
    assert code == 403
    code, err = await as_patron(borrower, "P-100", "POST",
                                f"/api/patron/P-100/requests/{other}/renew")
    assert code == 404 and other in err["error"]
    code, err = await as_patron(borrower, "P-100", "POST", mine,
                                json={"due_date": "soon", "colour": "red"})
    assert code == 400 and set(err["errors"]) == {"due_date", "colour"}
    code, err = await as_patron(borrower, "P-200", "POST",
                                f"/api/patron/P-200/requests/{other}/renew")
    assert code == 409 and "renewal" in err["error"]  # not on loan yet

    code, view = await as_patron(borrower, "P-100", "POST", mine,
                                 json={"note": "exam week"})
    assert code == 200, view
    assert view == {"id": bid, "title": BOOK["title"], "status": "renew_requested",
                    "status_label": view["status_label"], "due_date": due,
                    "renewal_requested": True}
    view = await borrower.wait_for("borrowing", bid, "on_loan")
    assert view["state"]["due_date"] > due
    assert any(h["event"] == "renew_requested" and h["actor"] == "patron:P-100"
               for h in view["history"]), view["history"]
    lending = await lender.request("lending", lid)
    renew = [m for m in lending["messages"] if m["direction"] == "in" and m["action"] == "Renew"]
    assert renew and "exam week" in renew[0]["raw"]
    code, notices = await borrower.api("GET", f"/api/borrowing/requests/{bid}/notices")
    assert any(n["notice"] == "renewed" for n in notices["notices"])

    # Staff may use the patron route too (the desk on the patron's behalf).
    code, view = await borrower.api("POST", mine)
    assert code == 200 and view["renewal_requested"]


async def test_lost_reported_to_a_2021_lender_then_its_charge(net):
    borrower = net.add("borrower", sections=BORROWING)
    lender = net.add("lender")
    borrower.partner_auth["lender"] = 'iso18626_version = "2021-2"'
    await net.start()
    await load_holdings(lender)
    bid, lid, view = await shipped_and_on_loan(borrower, lender)

    await borrower.act("borrowing", bid, action="lost", note="left on a train")
    # ISO 18626:2021 Lost: the lender closes the loan at once, without a charge yet.
    view = await borrower.wait_for("borrowing", bid, "complete")
    assert view["state"]["charges"] == []
    lending = await lender.wait_for("lending", lid, "COMPLETED_WITHOUT_RETURN")
    assert "partner_lost" in events(lending)
    raw = [m["raw"] for m in view["messages"] if m["direction"] == "out" and m["action"] == "Lost"]
    assert raw and 'version="2021-2"' in raw[0]

    # The lender's staff bill it afterwards; the borrower records the charge.
    await lender.act("lending", lid, action="lost", charge={"amount": "30", "currency": "EUR"})
    view = await _until(lambda: borrower.request("borrowing", bid),
                        lambda v: v["state"]["charges"])
    assert view["status"] == "complete"
    assert [(c["amount"], c["currency"]) for c in view["state"]["charges"]] == [("30", "EUR")]
    code, err = await lender.api("POST", f"/api/lending/requests/{lid}/actions",
                                 json={"action": "lost", "charge": {"amount": "5",
                                                                    "currency": "EUR"}})
    assert code == 409 and "already recorded" in err["error"]


async def test_messages_and_notes_between_our_nodes(net):
    borrower = net.add("borrower", sections=BORROWING)
    lender = net.add("lender", sections=LENDER_BY_HAND)
    await net.start()
    bid = (await create(borrower, BOOK))["id"]
    lid = (await lending_request(lender))["id"]

    view = await borrower.act("borrowing", bid, action="note", note="patron prefers BRANCH")
    assert view["state"]["notes"][0]["text"] == "patron prefers BRANCH"
    view = await borrower.act("borrowing", bid, action="message", note="Is a loan possible?")
    assert not view["needs_attention"]
    lending = await _until(lambda: lender.request("lending", lid),
                           lambda v: v["state"]["unread"])
    assert lending["state"]["unread"][0]["note"] == "Is a loan possible?"
    assert "patron prefers BRANCH" not in str(lending)  # internal notes stay home

    await lender.act("lending", lid, action="message", note="Yes, checking the shelf")
    view = await _until(lambda: borrower.request("borrowing", bid),
                        lambda v: v["needs_attention"])
    assert [(m["direction"], m["text"]) for m in view["state"]["messages"]] == [
        ("out", "Is a loan possible?"), ("in", "Yes, checking the shelf")]
    assert view["status"] == "sent"
    view = await borrower.act("borrowing", bid, action="mark_read")
    assert not view["needs_attention"]
