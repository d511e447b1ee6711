"""The lending side end to end: our node as lender on loopback HTTP, real databases.

Most tests drive our node from a stand-in foreign borrower (``tests.peer.Peer``)
that sends exactly the Requests and RequestingAgencyMessages a test builds and
records every SupplyingAgencyMessage our node sends; one runs two of our own
nodes.  They follow the lending parts of the seeds (Alma staff workflows):
auto-locate and automatic answers, "temporarily inactive for lending", pull,
ship, renew, cancel, check-in, lost, conditions, overdue.  Every message our
node sends is validated against the official ISO 18626 schema of its version
(v1.2; 2021-2 for a partner configured to read it).
"""

from __future__ import annotations

import asyncio
import re
import sys
import textwrap
import threading
import time
import urllib.request
from dataclasses import replace
from datetime import date, datetime, timedelta
from pathlib import Path

import pytest
from lxml import etree
from sqlalchemy import func, select

from node.protocol import reader, writer
from node.protocol.codes import (
    Action,
    MessageStatus,
    ReasonForMessage,
    RequestType,
    ServiceType,
    Status,
    Version,
    YesNo,
)
from node.protocol.messages import ServiceInfo
from node.store import holdings_repo, repo
from node.store import tables as t
from node.supplier.holdings import parse_csv
from tests import builders
from tests.harness import Network
from tests.peer import Peer

OFFICIAL = Path(__file__).resolve().parents[3] / "shared" / "iso18626"
SCHEMA_FILES = {"1.2": "ISO-18626-v1_2.xsd", "2021-2": "ISO-18626-2021-2.xsd"}
NS = "{http://illtransactions.org/2013/iso18626}"
_schemas: dict[str, etree.XMLSchema] = {}

PEER = "ISIL:XX-BORROWER"
US = "ISIL:XX-LENDER"

MOBY = "9780142437247"  # available, STACKS
CRIME = "9780140449136"  # reference copy only
PRIDE = "9780141439518"  # both copies on loan
KARAMAZOV = "9780140449242"  # available (copies)
NOT_HELD = "9780143105954"
TITLES = {MOBY: "Moby Dick", CRIME: "Crime and Punishment", PRIDE: "Pride and Prejudice",
          KARAMAZOV: "The Brothers Karamazov"}


def holdings_csv(today: date) -> str:
    first_due = today + timedelta(days=10)
    return textwrap.dedent(f"""\
        record_id,title,author,isbn,barcode,call_number,location,status,due_date
        r1,Moby Dick,"Melville, Herman",{MOBY},B-MOBY-1,PS2384 .M6,STACKS,available,
        r2,Crime and Punishment,"Dostoyevsky, Fyodor",{CRIME},B-CP-REF,PG3326 .P7,REF,non-circulating,
        r3,Pride and Prejudice,"Austen, Jane",{PRIDE},B-PP-1,PR4034 .P7,STACKS,on loan,{first_due + timedelta(days=5)}
        r3,Pride and Prejudice,"Austen, Jane",{PRIDE},B-PP-2,PR4034 .P7,STACKS,on loan,{first_due}
        r4,The Brothers Karamazov,"Dostoyevsky, Fyodor",{KARAMAZOV},B-BK-1,PG3326 .B7,MAIN,available,
        """)


# -- the schema oracle ----------------------------------------------------------------


def official_schema(version: str = "1.2") -> etree.XMLSchema:
    if version not in _schemas:
        parser = etree.XMLParser(resolve_entities=False, no_network=True)
        _schemas[version] = etree.XMLSchema(
            etree.parse(str(OFFICIAL / SCHEMA_FILES[version]), parser))
    return _schemas[version]


def assert_valid(raw: bytes | str, what: str = "message") -> None:
    """Valid against the official schema of the version the message says it is (v1.2,
    or 2021-2 for partners configured to read it)."""
    if isinstance(raw, str):
        raw = raw.encode("utf-8")
    doc = etree.fromstring(raw, etree.XMLParser(resolve_entities=False, no_network=True))
    version = doc.get(NS + "version", "1.2")
    schema = official_schema(version)
    assert schema.validate(doc), (
        f"{what} is not valid {version}: {schema.error_log}\n{raw.decode()}")


# -- fixtures and helpers -----------------------------------------------------------------


class LendingNetwork(Network):
    """The harness network, with per-peer partner options (e.g. closure_reply)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.peer_options: dict[str, str] = {}
        self.test_peers: list[Peer] = []

    def config_text(self, lib) -> str:
        text = super().config_text(lib)
        for symbol, options in self.peer_options.items():
            marker = f'symbol = "{symbol}"\nname = "peer"\n'
            text = text.replace(marker, marker + textwrap.dedent(options).strip() + "\n")
        return text


@pytest.fixture
async def net(tmp_path, database_factory):
    network = LendingNetwork(tmp_path, database_factory)
    yield network
    for lib in network.libraries.values():
        if lib.node is not None and lib.node.engine is not None:
            await assert_all_sent_valid(lib)
    await network.stop()
    for peer in network.test_peers:
        await peer.stop()


async def assert_all_sent_valid(lib) -> None:
    """Everything this node wrote (messages and confirmations) is valid for its version."""
    async with lib.node.engine.connect() as conn:
        rows = (await conn.execute(select(t.messages))).all()
    for row in rows:
        if row.direction == "out":
            assert_valid(row.raw, f"{lib.name}'s {row.kind}")
        elif row.confirmation:
            assert_valid(row.confirmation, f"{lib.name}'s confirmation of {row.kind}")


class Borrower:
    """The stand-in foreign borrower and what it received from us."""

    def __init__(self, peer: Peer, lender):
        self.peer = peer
        self.lender = lender

    async def send(self, envelope, ok: bool = True):
        status, body = await self.peer.send(self.lender.endpoint, envelope)
        assert status == 200
        assert_valid(body, "our confirmation")
        conf = reader.parse(body).message
        expected = MessageStatus.OK if ok else MessageStatus.ERROR
        assert conf.confirmation_header.message_status is expected, body.decode()
        return conf

    async def request(self, rari: str, isbn: str | None = None, **kw):
        kw.setdefault("title", TITLES.get(isbn, "A book nobody has"))
        return await self.send(builders.request(PEER, US, rari, isbn=isbn, **kw))

    async def action(self, rari: str, act: Action, note: str | None = None, ok: bool = True,
                     version: Version = Version.V1_2):
        return await self.send(builders.action(PEER, US, rari, act, note=note, version=version),
                               ok=ok)

    async def sams(self, count: int):
        """Wait for ``count`` messages in all; every one must be valid."""
        envelopes = await self.peer.wait_for(count)
        for raw in self.peer.raw:
            assert_valid(raw, "a SupplyingAgencyMessage we sent")
        return [e.message for e in envelopes]

    async def last(self, count: int):
        """The ``count``-th message (1-based), once it has arrived."""
        return (await self.sams(count))[count - 1]

    async def quiet(self, count: int, seconds: float = 0.4) -> None:
        """Nothing more than ``count`` messages arrives."""
        await asyncio.sleep(seconds)
        assert len(self.peer.received) == count, [
            (m.message.status_info.status, m.message.message_info.reason_for_message)
            for m in self.peer.received]


async def start(net: LendingNetwork, sections: str = "", peer_options: str = ""):
    peer = Peer(PEER)
    net.test_peers.append(peer)
    net.add_peer(PEER, peer.endpoint)
    if peer_options:
        net.peer_options[PEER] = peer_options
    lender = net.add("lender", symbol=US, sections=sections)
    await peer.start()
    await net.start()
    await load_holdings(lender)
    return lender, Borrower(peer, lender)


async def load_holdings(lib, csv: str | None = None, replace: bool = True) -> None:
    async with lib.node.engine.begin() as conn:
        await holdings_repo.import_records(
            conn, parse_csv(csv or holdings_csv(lib.node.clock().date())).records,
            replace=replace, now=lib.node.clock())


async def item_status(lib, barcode: str) -> tuple[str, date | None]:
    async with lib.node.engine.connect() as conn:
        row = (await conn.execute(select(t.holdings_items).where(
            t.holdings_items.c.barcode == barcode))).one()
    return row.status, row.due_date


async def lending_id(lib, rari: str) -> str:
    code, found = await lib.api("GET", f"/api/lending/requests?q={rari}")
    assert code == 200 and found["total"] == 1, found
    return found["requests"][0]["id"]


async def counts(lib) -> dict[str, int]:
    async with lib.node.engine.connect() as conn:
        return {
            table.name: (await conn.execute(select(func.count()).select_from(table))).scalar_one()
            for table in (t.transactions, t.messages, t.outbox, t.history, t.attempts,
                          t.holdings_items)
        }


async def snapshot(lib) -> list[tuple]:
    async with lib.node.engine.connect() as conn:
        return [tuple(r) for r in await conn.execute(
            select(t.transactions.c.id, t.transactions.c.status, t.transactions.c.version,
                   t.transactions.c.state).order_by(t.transactions.c.id))]


def events(view: dict) -> list[str]:
    return [h["event"] for h in view["history"]]


def day(dt: datetime | None) -> date | None:
    return dt.date() if dt is not None else None


# -- automatic answers ---------------------------------------------------------------------


async def test_auto_answers_from_the_holdings(net):
    lender, borrower = await start(net)
    today = lender.node.clock().date()

    await borrower.request("found-1", MOBY)
    found = await borrower.last(1)
    assert found.status_info.status is Status.WILL_SUPPLY
    assert found.message_info.reason_for_message is ReasonForMessage.REQUEST_RESPONSE
    assert found.header.requesting_agency_request_id == "found-1"
    view = await lender.request("lending", found.header.supplying_agency_request_id)
    assert view["status"] == "WILL_SUPPLY" and view["needs_attention"]
    assert view["state"]["located"]["barcode"] == "B-MOBY-1"
    located = next(h for h in view["history"] if h["event"] == "located")
    assert "9780142437247" in located["matched_on"]

    await borrower.request("nothere-1", NOT_HELD, title="A book nobody has")
    unheld = await borrower.last(2)
    assert unheld.status_info.status is Status.UNFILLED
    assert unheld.message_info.reason_unfilled.value == "NotHeld"

    await borrower.request("ref-1", CRIME)
    ref = await borrower.last(3)
    assert ref.status_info.status is Status.UNFILLED
    assert ref.message_info.reason_unfilled.value == "NotAvailableForILL"

    await borrower.request("out-1", PRIDE)
    out = await borrower.last(4)
    assert out.status_info.status is Status.RETRY_POSSIBLE
    assert out.message_info.reason_retry.value == "OnLoan"
    assert day(out.message_info.retry_after) == today + timedelta(days=10)  # the earliest due
    await borrower.quiet(4)

    # The copy came back; the borrower retries with the same request id.
    await load_holdings(lender, holdings_csv(today).replace(
        f"on loan,{today + timedelta(days=10)}", "available,"))
    retry = builders.request(PEER, US, "out-1", isbn=PRIDE)
    retry = replace(retry, message=replace(retry.message, service_info=ServiceInfo(
        service_type=ServiceType.LOAN, request_type=RequestType.RETRY,
        requesting_agency_previous_request_id="out-1")))
    await borrower.send(retry)
    again = await borrower.last(5)
    assert again.status_info.status is Status.WILL_SUPPLY
    assert again.message_info.reason_for_message is ReasonForMessage.REQUEST_RESPONSE
    lid = await lending_id(lender, "out-1")
    view = await lender.request("lending", lid)
    assert view["status"] == "WILL_SUPPLY" and view["state"]["located"]["barcode"] == "B-PP-2"

    # Anything else reusing an id is refused, and changes nothing.
    before = await counts(lender)
    conf = await borrower.send(builders.request(PEER, US, "found-1", isbn=MOBY,
                                                title="Another"), ok=False)
    assert "already exists" in conf.error_data[0].error_value
    assert await counts(lender) == before

    code, found = await lender.api("GET", "/api/lending/requests?status=UNFILLED")
    assert code == 200 and found["total"] == 2 and found["facets"]["WILL_SUPPLY"] == 2


async def test_the_node_answers_at_once_while_a_big_holdings_import_runs(net, tmp_path):
    """``holdings import`` commits a thousand records at a time, so a node serving from the
    same SQLite file is never locked out for long: in one transaction, this import held
    the write lock for seconds, and with a bigger catalogue for over the 5 s after which
    the node answers 503."""
    lender, borrower = await start(net)
    big = tmp_path / "big.csv"
    big.write_text("record_id,title,author,barcode,location,status\n" + "".join(
        f"big{n},Big catalogue book {n},Author {n % 97},BIG-{n}-{copy},MAIN,available\n"
        for n in range(60_000) for copy in (1, 2)))
    importing = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "node.cli", "holdings", "import", str(big),
        "--config", str(lender.directory / "config.toml"),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    waited = []
    while importing.returncode is None and len(waited) < 40:
        started = asyncio.get_running_loop().time()
        await borrower.request(f"during-{len(waited)}", MOBY)  # confirmed OK
        waited.append(asyncio.get_running_loop().time() - started)
        await asyncio.sleep(0.1)
    out, err = await importing.communicate()
    assert importing.returncode == 0, err.decode()
    assert "imported 60000 records with 120000 items" in out.decode()
    # a line every tenth of the file, for whoever watches a long import
    assert re.findall(r"big\.csv: (\d+) of 60000 records", err.decode()) == [
        str(n) for n in range(6000, 60001, 6000)], err.decode()
    assert len(waited) >= 5, waited  # the import took a while, and requests came meanwhile
    assert max(waited) < 1.0, waited
    assert len(await borrower.sams(len(waited))) == len(waited)  # and each was answered


async def test_a_slow_staff_search_holds_up_no_partner(net, monkeypatch):
    """Staff reads run beside the node's writing: on SQLite on connections of their own,
    off the event loop's thread (``db.create_read_engine``), so a search that takes a
    second delays no partner's message. On the writing connection, a partner's request
    waited for the whole search, and so did everything else on the loop."""
    lender, borrower = await start(net)
    searching, searched = threading.Event(), []
    real_search = repo.search

    async def slow_search(conn, *args, **kw):
        searching.set()
        begun = time.monotonic()
        await conn.exec_driver_sql(
            "WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n WHERE x < 4000000)"
            " SELECT count(*) FROM n" if conn.dialect.name == "sqlite" else "SELECT pg_sleep(1)")
        searched.append((begun, time.monotonic()))
        return await real_search(conn, *args, **kw)

    def partner_request() -> float:
        """From a thread, since the node's loop is this test's: when the answer came to
        a request sent while the search runs."""
        searching.wait(10)
        time.sleep(0.05)
        body = writer.serialise(builders.request(PEER, US, "during-search", isbn=MOBY,
                                                 title=TITLES[MOBY]))
        with urllib.request.urlopen(urllib.request.Request(
                lender.endpoint, data=body, headers={"Content-Type": "application/xml"}),
                timeout=10) as answer:
            assert b"<messageStatus>OK</messageStatus>" in answer.read()
        return time.monotonic()

    monkeypatch.setattr(repo, "search", slow_search)
    partner = asyncio.get_running_loop().run_in_executor(None, partner_request)
    code, found = await lender.api("GET", "/api/lending/requests?q=moby")
    answered = await partner
    assert code == 200, found
    (begun, ended), = searched
    assert ended - begun > 0.5, searched  # the search was slow...
    # ...and the partner's answer came while it still ran, not after. (Not a time limit:
    # on a loaded CI machine one answer took 0.7 s, still well inside the search.)
    assert answered < ended, (answered - begun, ended - begun)
    assert len(await borrower.sams(1)) == 1  # and was answered


async def test_the_admin_sees_what_auto_locate_has_to_go_on(net):
    lender, borrower = await start(net)
    code, holdings = await lender.api("GET", "/api/admin/holdings")
    assert code == 200, holdings
    assert {k: holdings[k] for k in ("records", "items", "items_by_status")} == {
        "records": 4, "items": 5,
        "items_by_status": {"available": 2, "non_circulating": 1, "on_loan": 2}}
    # the import's time (load_holdings, just now)
    changed = datetime.fromisoformat(holdings["last_changed"])
    assert abs((lender.node.clock() - changed).total_seconds()) < 60


async def test_auto_answer_off_leaves_the_answer_to_staff(net):
    lender, borrower = await start(net, sections="[lending]\nauto_answer = false\n")
    await borrower.request("staff-1", MOBY)
    await borrower.request("staff-2", NOT_HELD)
    await borrower.quiet(0)
    one, two = await lending_id(lender, "staff-1"), await lending_id(lender, "staff-2")
    view = await lender.request("lending", one)
    assert view["status"] == "RECEIVED" and view["needs_attention"]
    assert "awaiting_staff" in events(view)

    view = await lender.act("lending", one, action="will_supply", by="anna",
                            note="Pulling it today")
    assert view["status"] == "WILL_SUPPLY"
    answer = await borrower.last(1)
    assert answer.status_info.status is Status.WILL_SUPPLY
    assert answer.message_info.reason_for_message is ReasonForMessage.REQUEST_RESPONSE
    assert answer.message_info.note == "Pulling it today"
    assert any(h["actor"] == "staff:anna" for h in view["history"])

    code, err = await lender.api("POST", f"/api/lending/requests/{two}/actions",
                                 json={"action": "reject", "reason": "Sunbathing"})
    assert code == 400 and "Sunbathing" in err["errors"]["reason"]
    view = await lender.act("lending", two, action="reject", reason="notonshelf", by="anna")
    assert view["status"] == "UNFILLED"
    unfilled = await borrower.last(2)
    assert unfilled.status_info.status is Status.UNFILLED
    assert unfilled.message_info.reason_unfilled.value == "NotOnShelf"

    code, err = await lender.api("POST", f"/api/lending/requests/{two}/actions",
                                 json={"action": "ship"})
    assert code == 409 and "ship" in err["error"]
    code, err = await lender.api("POST", "/api/lending/requests/L-NOPE/actions",
                                 json={"action": "ship"})
    assert code == 404


# -- temporarily inactive for lending ------------------------------------------------------


async def test_closure_window_unfills_with_dates_and_normal_before_and_after(net):
    lender, borrower = await start(net)
    today = lender.node.clock().date()
    start_day, end_day = today + timedelta(days=2), today + timedelta(days=5)
    code, closure = await lender.api("PUT", "/api/lending/closure", json={
        "active": True, "start": start_day.isoformat(), "end": end_day.isoformat(),
        "note": "Moving the stacks."})
    assert code == 200 and closure["active"] and not closure["in_effect"]

    await borrower.request("before-1", MOBY)  # before the window: normal
    before = await borrower.last(1)
    assert before.status_info.status is Status.WILL_SUPPLY
    in_progress = await lending_id(lender, "before-1")

    net.clock.advance(days=3)  # inside the window
    code, closure = await lender.api("GET", "/api/lending/closure")
    assert closure["in_effect"]
    await borrower.request("during-1", KARAMAZOV)
    during = await borrower.last(2)
    assert during.status_info.status is Status.UNFILLED
    assert during.message_info.reason_unfilled.value == "NotAvailableForILL"
    note = during.message_info.note
    assert f"Lending suspended {start_day.isoformat()} to {end_day.isoformat()}" in note
    assert "Moving the stacks." in note
    view = await lender.request("lending", await lending_id(lender, "during-1"))
    assert "closed_for_lending" in events(view) and "located" not in events(view)

    # Requests already in progress are not affected: staff ship during the closure.
    view = await lender.act("lending", in_progress, action="ship")
    assert view["status"] == "SHIPPED"
    assert (await borrower.last(3)).status_info.status is Status.LOANED

    net.clock.advance(days=3)  # after the window
    await borrower.request("after-1", KARAMAZOV)
    after = await borrower.last(4)
    assert after.status_info.status is Status.WILL_SUPPLY

    # No dates: closed until the flag is cleared.
    code, closure = await lender.api("PUT", "/api/lending/closure",
                                     json={"active": True})
    assert closure["in_effect"]
    await borrower.request("open-ended-1", KARAMAZOV)
    open_ended = await borrower.last(5)
    assert open_ended.status_info.status is Status.UNFILLED
    assert "until further notice" in open_ended.message_info.note
    code, closure = await lender.api("PUT", "/api/lending/closure", json={"active": False})
    assert not closure["in_effect"]
    await borrower.request("reopened-1", NOT_HELD)
    reopened = await borrower.last(6)
    assert reopened.message_info.reason_unfilled.value == "NotHeld"


async def test_a_wrong_closure_is_refused_with_what_is_wrong_and_changes_nothing(net):
    lender, _ = await start(net)
    for body, expected in [
        ({"start": "2026-12-20"}, "active must be true or false"),
        ({"active": True, "start": "soon"}, "start must be a date like 2026-12-20"),
        ({"active": True, "start": "2027-01-10", "end": "2027-01-05"},
         "end 2027-01-05 is before start 2027-01-10"),
    ]:
        code, answer = await lender.api("PUT", "/api/lending/closure", json=body)
        assert code == 400 and expected in answer["error"], (body, answer)
    code, closure = await lender.api("GET", "/api/lending/closure")
    assert code == 200 and not closure["active"] and closure["start"] is None


async def test_partner_set_to_retry_possible_gets_retry_after_the_closure(net):
    lender, borrower = await start(net, peer_options='closure_reply = "RetryPossible"')
    today = lender.node.clock().date()
    end_day = today + timedelta(days=3)
    code, _ = await lender.api("PUT", "/api/lending/closure", json={
        "active": True, "start": today.isoformat(), "end": end_day.isoformat()})
    assert code == 200
    await borrower.request("closed-1", MOBY)
    answer = await borrower.last(1)
    assert answer.status_info.status is Status.RETRY_POSSIBLE
    assert answer.message_info.reason_retry.value == "NotCurrentAvailableForILL"
    assert day(answer.message_info.retry_after) == end_day + timedelta(days=1)
    assert end_day.isoformat() in answer.message_info.note
    lid = await lending_id(lender, "closed-1")
    assert (await lender.request("lending", lid))["status"] == "RETRY_POSSIBLE"


# -- a loan from request to check-in ---------------------------------------------------------


async def test_full_loan_from_request_to_check_in(net):
    lender, borrower = await start(net)
    today = lender.node.clock().date()
    await borrower.request("loan-1", MOBY, title="Moby Dick <unabridged> & \"more\"",
                           author="Melville")
    lid = (await borrower.last(1)).header.supplying_agency_request_id

    # Pull slip: escaped text, call number, location, and both barcodes as SVG.
    async with lender.http.get(f"{lender.url}/api/lending/requests/{lid}/pull-slip") as resp:
        assert resp.status == 200 and resp.content_type == "text/html"
        slip = await resp.text()
    assert "Moby Dick &lt;unabridged&gt; &amp; &quot;more&quot;" in slip
    assert "<unabridged>" not in slip
    for text in (lid, "loan-1", "PS2384 .M6", "STACKS", "B-MOBY-1", PEER, "Melville"):
        assert text in slip, text
    assert slip.count("<svg") == 2 and f"Code 128 barcode: {lid}" in slip
    async with lender.http.get(f"{lender.url}/api/lending/pull-slips") as resp:
        batch = await resp.text()
    assert batch.count('class="slip"') == 1 and "B-MOBY-1" in batch
    async with lender.http.get(f"{lender.url}/api/lending/requests/L-NOPE/pull-slip") as resp:
        assert resp.status == 404 and "L-NOPE" in (await resp.json())["error"]

    # Ship: the located item by default, the loan period from the config.
    view = await lender.act("lending", lid, action="ship", by="anna", tracking="1Z999")
    assert view["status"] == "SHIPPED"
    loaned = await borrower.last(2)
    assert loaned.status_info.status is Status.LOANED
    assert loaned.message_info.reason_for_message is ReasonForMessage.STATUS_CHANGE
    assert loaned.delivery_info.item_id == ("B-MOBY-1",)
    due = today + timedelta(days=28)
    assert day(loaned.status_info.due_date) == due
    assert "1Z999" in loaned.message_info.note
    assert await item_status(lender, "B-MOBY-1") == ("on_loan", due)
    async with lender.http.get(f"{lender.url}/api/lending/pull-slips") as resp:
        assert 'class="slip"' not in await resp.text()  # pulled and gone
    code, found = await lender.api("GET", "/api/lending/requests?barcode=B-MOBY-1")
    assert [r["id"] for r in found["requests"]] == [lid]
    code, found = await lender.api("GET", "/api/lending/requests?barcode=B-MOBY")
    assert found["total"] == 0

    await borrower.action("loan-1", Action.RECEIVED, note="Arrived, thanks")
    await borrower.action("loan-1", Action.RENEW)
    renewed = await borrower.last(3)
    assert renewed.message_info.reason_for_message is ReasonForMessage.RENEW_RESPONSE
    assert renewed.message_info.answer_yes_no is YesNo.Y
    assert renewed.status_info.status is Status.LOANED
    assert day(renewed.status_info.due_date) == due + timedelta(days=28)
    assert (await item_status(lender, "B-MOBY-1"))[1] == due + timedelta(days=28)

    await borrower.action("loan-1", Action.SHIPPED_RETURN)
    view = await lender.wait_for("lending", lid, "RETURN_SHIPPED")
    assert view["needs_attention"]
    assert [n["note"] for n in view["state"]["unread"]] == ["Arrived, thanks"]
    view = await lender.act("lending", lid, action="mark_read")
    assert view["state"]["unread"] == []

    # Scan the returned item.
    code, err = await lender.api("POST", "/api/lending/check-in", json={"barcode": ""})
    assert code == 400 and "barcode" in err["error"]
    code, err = await lender.api("POST", "/api/lending/check-in", json={"barcode": "NOPE-9"})
    assert code == 404 and "NOPE-9" in err["error"]
    code, err = await lender.api("POST", "/api/lending/check-in", json={"barcode": "B-BK-1"})
    assert code == 409 and "never shipped" in err["error"]
    code, view = await lender.api("POST", "/api/lending/check-in",
                                  json={"barcode": " B-MOBY-1 "}, user="ben")
    assert code == 200 and view["id"] == lid and view["status"] == "LOAN_COMPLETED"
    assert any(h["event"] == "checked_in" and h["actor"] == "staff:ben"
               for h in view["history"])
    completed = await borrower.last(4)
    assert completed.status_info.status is Status.LOAN_COMPLETED
    assert await item_status(lender, "B-MOBY-1") == ("available", None)
    code, err = await lender.api("POST", "/api/lending/check-in", json={"barcode": "B-MOBY-1"})
    assert code == 409 and lid in err["error"] and "LOAN_COMPLETED" in err["error"]
    await borrower.quiet(4)

    view = await lender.request("lending", lid)
    sent = [m["status"] for m in view["messages"] if m["direction"] == "out"]
    got = [m["action"] or m["kind"] for m in view["messages"] if m["direction"] == "in"]
    assert sent == ["WillSupply", "Loaned", "Loaned", "LoanCompleted"]
    assert got == ["request", "Received", "Renew", "ShippedReturn"]
    # ?brief=1 (for a client polling the status): the same request without messages and outbox.
    code, brief = await lender.api("GET", f"/api/lending/requests/{lid}?brief=1")
    assert code == 200 and "messages" not in brief and "outbox" not in brief
    assert brief == {k: v for k, v in view.items() if k not in ("messages", "outbox")}


async def test_renew_answered_by_staff_no_then_yes(net):
    lender, borrower = await start(net, sections="[lending]\nauto_renew = false\n")
    today = lender.node.clock().date()
    await borrower.request("renew-1", MOBY)
    lid = (await borrower.last(1)).header.supplying_agency_request_id
    await lender.act("lending", lid, action="ship", due_date=(today + timedelta(days=14)).isoformat())
    await borrower.last(2)

    await borrower.action("renew-1", Action.RENEW, note="Patron needs it for a thesis")
    await borrower.quiet(2)
    view = await lender.request("lending", lid)
    assert view["state"]["pending_renew"] and view["needs_attention"]
    view = await lender.act("lending", lid, action="renew_answer", approve=False,
                            note="Another patron is waiting", by="anna")
    refused = await borrower.last(3)
    assert refused.message_info.reason_for_message is ReasonForMessage.RENEW_RESPONSE
    assert refused.message_info.answer_yes_no is YesNo.N
    assert refused.status_info.status is Status.LOANED
    assert day(refused.status_info.due_date) == today + timedelta(days=14)

    code, err = await lender.api("POST", f"/api/lending/requests/{lid}/actions",
                                 json={"action": "renew_answer", "approve": True})
    assert code == 409 and "not asked" in err["error"]

    await borrower.action("renew-1", Action.RENEW)
    await borrower.quiet(3)
    new_due = today + timedelta(days=30)
    view = await lender.act("lending", lid, action="renew_answer", approve=True,
                            due_date=new_due.isoformat())
    granted = await borrower.last(4)
    assert granted.message_info.answer_yes_no is YesNo.Y
    assert day(granted.status_info.due_date) == new_due
    assert view["state"]["due_date"] == new_due.isoformat()


async def test_copy_request_delivered(net):
    lender, borrower = await start(net)
    await borrower.request("copy-1", KARAMAZOV, service_type=ServiceType.COPY,
                           title_of_component="Chapter 5", pages_requested="100-120")
    answer = await borrower.last(1)
    assert answer.status_info.status is Status.WILL_SUPPLY
    lid = answer.header.supplying_agency_request_id
    code, err = await lender.api("POST", f"/api/lending/requests/{lid}/actions",
                                 json={"action": "ship"})
    assert code == 409 and "deliver_copy" in err["error"]
    view = await lender.act("lending", lid, action="deliver_copy",
                            url="https://files.example.org/c/1.pdf")
    assert view["status"] == "COPY_COMPLETED"
    done = await borrower.last(2)
    assert done.status_info.status is Status.COPY_COMPLETED
    assert "https://files.example.org/c/1.pdf" in done.message_info.note
    assert done.delivery_info is not None
    assert await item_status(lender, "B-BK-1") == ("available", None)  # nothing left the shelf


async def test_cancel_before_shipping_yes_after_shipping_no(net):
    lender, borrower = await start(net)
    await borrower.request("cancel-1", MOBY)
    lid = (await borrower.last(1)).header.supplying_agency_request_id
    await borrower.action("cancel-1", Action.CANCEL, note="Patron found it elsewhere")
    answer = await borrower.last(2)
    assert answer.message_info.reason_for_message is ReasonForMessage.CANCEL_RESPONSE
    assert answer.message_info.answer_yes_no is YesNo.Y
    assert answer.status_info.status is Status.CANCELLED
    assert (await lender.request("lending", lid))["status"] == "CANCELLED"

    await borrower.request("cancel-2", KARAMAZOV)
    lid2 = (await borrower.last(3)).header.supplying_agency_request_id
    await lender.act("lending", lid2, action="ship")
    await borrower.last(4)
    await borrower.action("cancel-2", Action.CANCEL)
    refused = await borrower.last(5)
    assert refused.message_info.reason_for_message is ReasonForMessage.CANCEL_RESPONSE
    assert refused.message_info.answer_yes_no is YesNo.N
    assert refused.status_info.status is Status.LOANED
    assert (await lender.request("lending", lid2))["status"] == "SHIPPED"


async def test_lost_item_completed_without_return_with_costs(net):
    lender, borrower = await start(net)
    await borrower.request("lost-1", MOBY)
    lid = (await borrower.last(1)).header.supplying_agency_request_id
    await lender.act("lending", lid, action="ship")
    await borrower.last(2)
    view = await lender.act("lending", lid, action="lost",
                            charge={"amount": "45.50", "currency": "USD"},
                            note="Replacement cost", by="anna")
    assert view["status"] == "COMPLETED_WITHOUT_RETURN"
    assert view["state"]["charges"][0]["amount"] == "45.50"
    assert any(h["event"] == "charge" and h["amount"] == "45.50" for h in view["history"])
    sam = await borrower.last(3)
    assert sam.status_info.status is Status.COMPLETED_WITHOUT_RETURN
    [cost] = sam.delivery_info.delivery_costs
    assert str(cost.monetary_value) == "45.50" and cost.currency_code.value == "USD"
    assert (await item_status(lender, "B-MOBY-1"))[0] == "missing"


async def test_conditions_accepted_and_rejected(net):
    lender, borrower = await start(net, sections="[lending]\nauto_answer = false\n")
    await borrower.request("cond-1", MOBY)
    await borrower.request("cond-2", KARAMAZOV)
    one, two = await lending_id(lender, "cond-1"), await lending_id(lender, "cond-2")

    view = await lender.act("lending", one, action="add_conditions",
                            conditions=["LibraryUseOnly"], note="Fragile binding")
    assert view["status"] == "CONDITIONAL"
    offer = await borrower.last(1)
    assert offer.status_info.status is Status.WILL_SUPPLY
    assert [c.value for c in offer.delivery_info.loan_condition] == ["LibraryUseOnly"]
    assert "ACCEPT" in offer.message_info.note
    await borrower.action("cond-1", Action.NOTIFICATION, note="ACCEPT - fine with us")
    view = await lender.wait_for("lending", one, "WILL_SUPPLY")
    assert view["state"]["conditions_accepted"] is True
    await borrower.quiet(1)
    await lender.act("lending", one, action="ship")
    shipped = await borrower.last(2)
    assert [c.value for c in shipped.delivery_info.loan_condition] == ["LibraryUseOnly"]

    await lender.act("lending", two, action="add_conditions", conditions=["NoReproduction"],
                     cost={"amount": "10", "currency": "EUR"})
    offer = await borrower.last(3)
    assert offer.message_info.offered_costs[0].monetary_value == 10
    await borrower.action("cond-2", Action.NOTIFICATION, note="#seq:3#REJECT too expensive")
    cancelled = await borrower.last(4)
    assert cancelled.status_info.status is Status.CANCELLED
    view = await lender.request("lending", two)
    assert view["status"] == "CANCELLED" and view["state"]["conditions_accepted"] is False

    # With no conditions waiting, an ACCEPT is only a note.
    await borrower.action("cond-1", Action.NOTIFICATION, note="ACCEPT again")
    view = await lender.request("lending", one)
    assert view["status"] == "SHIPPED" and "partner_notification" in events(view)


async def test_overdue_when_the_clock_passes_the_due_date(net):
    lender, borrower = await start(net)
    today = lender.node.clock().date()
    await borrower.request("late-1", MOBY)
    lid = (await borrower.last(1)).header.supplying_agency_request_id
    due = today + timedelta(days=3)
    await lender.act("lending", lid, action="ship", due_date=due.isoformat())
    await borrower.last(2)
    await borrower.quiet(2, seconds=0.3)  # the timer job runs, nothing is due yet
    code, found = await lender.api("GET", "/api/lending/requests?overdue=true")
    assert found["total"] == 0

    net.clock.advance(days=4)
    view = await lender.wait_for("lending", lid, "OVERDUE")
    overdue = await borrower.last(3)
    assert overdue.status_info.status is Status.OVERDUE
    assert overdue.message_info.reason_for_message is ReasonForMessage.STATUS_CHANGE
    assert day(overdue.status_info.due_date) == due
    assert "overdue" in events(view)
    await borrower.quiet(3)  # told once
    code, found = await lender.api("GET", "/api/lending/requests?overdue=true")
    assert [r["id"] for r in found["requests"]] == [lid]
    code, err = await lender.api("GET", "/api/lending/requests?overdue=maybe")
    assert code == 400 and "overdue" in err["error"]

    # Overdue loans can still be renewed and come back.
    await borrower.action("late-1", Action.RENEW)
    renewed = await borrower.last(4)
    assert renewed.message_info.answer_yes_no is YesNo.Y
    assert (await lender.request("lending", lid))["status"] == "SHIPPED"


async def test_message_out_of_sequence_is_an_error_and_changes_nothing(net):
    lender, borrower = await start(net)
    await borrower.request("seq-1", MOBY)
    lid = (await borrower.last(1)).header.supplying_agency_request_id
    before, rows = await counts(lender), await snapshot(lender)

    conf = await borrower.action("seq-1", Action.SHIPPED_RETURN, ok=False)
    assert conf.error_data[0].error_type.value == "UnrecognisedDataValue"
    assert "never shipped" in conf.error_data[0].error_value
    conf = await borrower.action("seq-1", Action.RENEW, ok=False)
    assert "not on loan" in conf.error_data[0].error_value
    conf = await borrower.action("no-such-request", Action.RECEIVED, ok=False)
    assert "no-such-request" in conf.error_data[0].error_value

    assert await counts(lender) == before
    assert await snapshot(lender) == rows
    await borrower.quiet(1)
    assert (await lender.request("lending", lid))["status"] == "WILL_SUPPLY"


async def test_two_of_our_nodes_lend_and_borrow(net):
    borrower = net.add("borrower", sections='[borrowing]\npickup_locations = ["MAIN"]\n')
    lender = net.add("lender", symbol=US, sections="[lending]\nauto_renew = false\n")
    await net.start()
    await load_holdings(lender)

    code, created = await borrower.api("POST", "/api/borrowing/requests", json={
        "title": "Moby Dick", "isbn": MOBY, "patron_id": "P-1", "pickup_location": "MAIN"})
    assert code == 201, created
    bid = created["id"]
    await borrower.wait_for("borrowing", bid, "will_supply")
    lid = (await lender.only_request("lending"))["id"]
    async with lender.http.get(f"{lender.url}/api/lending/pull-slips") as resp:
        assert lid in await resp.text()

    await lender.act("lending", lid, action="ship")
    view = await borrower.wait_for("borrowing", bid, "shipped")
    assert view["supplying_request_id"] == lid
    await borrower.act("borrowing", bid, action="receive", barcodes=["TMP-1"])
    await borrower.act("borrowing", bid, action="renew")
    await lender.wait_for("lending", lid, "SHIPPED")
    view = await _wait(lambda: lender.request("lending", lid),
                       lambda v: v["state"]["pending_renew"] is not None)
    await lender.act("lending", lid, action="renew_answer", approve=False, note="Sorry")
    view = await _wait(lambda: borrower.request("borrowing", bid),
                       lambda v: v["state"]["renewals"] and v["state"]["renewals"][-1]["answer"]
                       == "N")
    await borrower.act("borrowing", bid, action="return_to_partner")
    await lender.wait_for("lending", lid, "RETURN_SHIPPED")
    code, view = await lender.api("POST", "/api/lending/check-in", json={"barcode": "B-MOBY-1"})
    assert code == 200 and view["status"] == "LOAN_COMPLETED"
    await borrower.wait_for("borrowing", bid, "complete")
    assert await item_status(lender, "B-MOBY-1") == ("available", None)

    # The lender closes; the borrower's next request is unfilled with the dates.
    today = lender.node.clock().date()
    await lender.api("PUT", "/api/lending/closure", json={
        "active": True, "start": today.isoformat(), "end": (today + timedelta(days=7)).isoformat()})
    code, created = await borrower.api("POST", "/api/borrowing/requests", json={
        "title": "The Brothers Karamazov", "isbn": KARAMAZOV, "patron_id": "P-2",
        "pickup_location": "MAIN"})
    assert code == 201, created
    view = await borrower.wait_for("borrowing", created["id"], "unfilled")
    text = "\n".join(str(m.get("raw")) for m in view["messages"] if m["direction"] == "in")
    assert re.search(r"Lending suspended \d{4}-\d\d-\d\d to \d{4}-\d\d-\d\d", text)


async def _wait(fetch, ok, timeout: float = 10.0):
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        value = await fetch()
        if ok(value):
            return value
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"condition not reached: {value}")
        await asyncio.sleep(0.05)



# -- status request, recall, hold return, shipped forward, lost by the borrower -------------


async def test_status_request_answered_with_our_current_status(net):
    lender, borrower = await start(net)
    due = lender.node.clock().date() + timedelta(days=14)
    await borrower.request("status-1", MOBY)
    lid = (await borrower.last(1)).header.supplying_agency_request_id

    await borrower.action("status-1", Action.STATUS_REQUEST)
    answer = await borrower.last(2)
    assert answer.message_info.reason_for_message is ReasonForMessage.STATUS_REQUEST_RESPONSE
    assert answer.status_info.status is Status.WILL_SUPPLY
    assert answer.status_info.due_date is None
    assert answer.header.supplying_agency_request_id == lid

    await lender.act("lending", lid, action="ship", due_date=due.isoformat())
    await borrower.last(3)
    await borrower.action("status-1", Action.STATUS_REQUEST, note="Has it left?")
    answer = await borrower.last(4)
    assert answer.message_info.reason_for_message is ReasonForMessage.STATUS_REQUEST_RESPONSE
    assert answer.status_info.status is Status.LOANED
    assert day(answer.status_info.due_date) == due
    await borrower.quiet(4)
    view = await lender.request("lending", lid)
    assert view["status"] == "SHIPPED"
    assert events(view).count("status_request") == 2
    assert [n["note"] for n in view["state"]["unread"]] == ["Has it left?"]


async def test_recall_refuses_renewal_and_the_item_comes_back(net):
    lender, borrower = await start(net)
    today = lender.node.clock().date()
    await borrower.request("recall-1", MOBY)
    lid = (await borrower.last(1)).header.supplying_agency_request_id
    await lender.act("lending", lid, action="ship",
                     due_date=(today + timedelta(days=28)).isoformat())
    await borrower.last(2)

    recall_due = today + timedelta(days=7)
    view = await lender.act("lending", lid, action="recall", due_date=recall_due.isoformat(),
                            note="Needed for a course reserve", by="anna")
    assert view["status"] == "RECALLED"
    assert view["state"]["due_date"] == recall_due.isoformat()
    assert any(h["event"] == "recalled" and h["actor"] == "staff:anna" for h in view["history"])
    recalled = await borrower.last(3)
    assert recalled.status_info.status is Status.RECALLED
    assert recalled.message_info.reason_for_message is ReasonForMessage.STATUS_CHANGE
    assert day(recalled.status_info.due_date) == recall_due
    assert recalled.message_info.note == "Needed for a course reserve"
    assert await item_status(lender, "B-MOBY-1") == ("on_loan", today + timedelta(days=28))

    code, err = await lender.api("POST", f"/api/lending/requests/{lid}/actions",
                                 json={"action": "recall"})
    assert code == 409 and "RECALLED" in err["error"]

    await borrower.action("recall-1", Action.RENEW)
    refused = await borrower.last(4)
    assert refused.message_info.reason_for_message is ReasonForMessage.RENEW_RESPONSE
    assert refused.message_info.answer_yes_no is YesNo.N
    assert refused.status_info.status is Status.RECALLED
    assert "recalled" in refused.message_info.note

    # Past the recall date the loan is overdue, and still not renewable.
    net.clock.advance(days=8)
    await lender.wait_for("lending", lid, "OVERDUE")
    overdue = await borrower.last(5)
    assert overdue.status_info.status is Status.OVERDUE
    assert day(overdue.status_info.due_date) == recall_due
    await borrower.action("recall-1", Action.RENEW, note="Please, one more week")
    refused = await borrower.last(6)
    assert refused.message_info.answer_yes_no is YesNo.N
    assert "recalled" in refused.message_info.note
    assert (await lender.request("lending", lid))["state"]["due_date"] == recall_due.isoformat()

    await borrower.action("recall-1", Action.SHIPPED_RETURN)
    await lender.wait_for("lending", lid, "RETURN_SHIPPED")
    code, view = await lender.api("POST", "/api/lending/check-in", json={"barcode": "B-MOBY-1"})
    assert code == 200 and view["status"] == "LOAN_COMPLETED"
    assert (await borrower.last(7)).status_info.status is Status.LOAN_COMPLETED
    assert await item_status(lender, "B-MOBY-1") == ("available", None)
    await borrower.quiet(7)


async def test_hold_return_shipped_forward_and_lost_reported_by_the_borrower(net):
    lender, borrower = await start(net, peer_options='iso18626_version = "2021-2"')
    await borrower.request("away-1", MOBY, version=Version.V2021_2)
    lid = (await borrower.last(1)).header.supplying_agency_request_id
    await lender.act("lending", lid, action="ship")
    await borrower.last(2)
    assert b'version="2021-2"' in borrower.peer.raw[1]

    # HoldReturn: the borrower cannot send it back yet.  Recorded for staff; nothing sent.
    await borrower.action("away-1", Action.HOLD_RETURN, note="Patron in hospital",
                          version=Version.V2021_2)
    view = await lender.request("lending", lid)
    assert view["status"] == "SHIPPED" and view["needs_attention"]
    assert "partner_hold_return" in events(view)
    assert [n["note"] for n in view["state"]["unread"]] == ["Patron in hospital"]

    # ShippedForward: the borrower sent it on to another library.
    await borrower.action("away-1", Action.SHIPPED_FORWARD, note="Forwarded to ISIL:XX-NEXT")
    view = await lender.request("lending", lid)
    assert view["status"] == "SHIPPED" and "partner_shipped_forward" in events(view)
    assert [n["note"] for n in view["state"]["unread"]][-1] == "Forwarded to ISIL:XX-NEXT"
    await borrower.quiet(2)

    # Lost: the loan ends without return and the item is missing.
    await borrower.action("away-1", Action.LOST, note="Lost by the patron",
                          version=Version.V2021_2)
    done = await borrower.last(3)
    assert done.status_info.status is Status.COMPLETED_WITHOUT_RETURN
    assert done.message_info.reason_for_message is ReasonForMessage.STATUS_CHANGE
    view = await lender.request("lending", lid)
    assert view["status"] == "COMPLETED_WITHOUT_RETURN" and "partner_lost" in events(view)
    assert (await item_status(lender, "B-MOBY-1"))[0] == "missing"

    # The charge for the lost item is recorded for billing afterwards.
    view = await lender.act("lending", lid, action="lost",
                            charge={"amount": "60", "currency": "EUR"}, note="Replacement")
    assert view["state"]["charges"][0]["amount"] == "60"
    charged = await borrower.last(4)
    assert charged.status_info.status is Status.COMPLETED_WITHOUT_RETURN
    assert str(charged.delivery_info.delivery_costs[0].monetary_value) == "60"

    # Closed: a late ShippedReturn is an error and changes nothing.
    rows = await snapshot(lender)
    conf = await borrower.action("away-1", Action.SHIPPED_RETURN, ok=False)
    assert conf.error_data[0].error_type.value == "UnrecognisedDataValue"
    assert await snapshot(lender) == rows
    await borrower.quiet(4)


async def test_malformed_action_bodies_answer_400_per_field(net):
    lender, borrower = await start(net)
    await borrower.request("bad-1", MOBY)
    lid = (await borrower.last(1)).header.supplying_agency_request_id
    path = f"/api/lending/requests/{lid}/actions"
    rows = await snapshot(lender)

    for body, problems in [
        ({"action": "fly"}, {"action": "unknown staff action 'fly'"}),
        ({}, {"action": "unknown staff action None"}),
        ({"action": ["ship"]}, {"action": "unknown staff action"}),
        ({"action": "ship", "due_date": "next week", "barcodes": "B-MOBY-1", "colour": "red"},
         {"due_date": "expected a date", "barcodes": "expected a list",
          "colour": "not a field of ship"}),
        ({"action": "reject"}, {"reason": "missing"}),
        ({"action": "renew_answer", "approve": "yes"}, {"approve": "expected true or false"}),
        ({"action": "lost", "charge": {"amount": "lots", "currency": "EUR"}},
         {"charge.amount": "expected an amount"}),
        ({"action": "reject", "reason": "Sunbathing"}, {"reason": "is not one of"}),
    ]:
        code, err = await lender.api("POST", path, json=body)
        assert code == 400, (body, err)
        assert set(err["errors"]) == set(problems), (body, err)
        for field, text in problems.items():
            assert text in err["errors"][field], (body, err)
            assert text in err["error"]
    async with lender.http.post(lender.url + path, data=b"[1, 2") as resp:
        assert resp.status == 400 and "JSON object" in (await resp.json())["error"]

    # Well formed but not allowed now stays 409; unknown request 404.
    code, err = await lender.api("POST", path, json={"action": "check_in"})
    assert code == 409 and "WILL_SUPPLY" in err["error"]
    code, err = await lender.api("POST", "/api/lending/requests/L-NOPE/actions",
                                 json={"action": "fly"})
    assert code == 404
    assert await snapshot(lender) == rows
    await borrower.quiet(1)


async def test_expect_to_supply_messages_notes_and_damaged(net):
    lender, borrower = await start(net, sections="[lending]\nauto_answer = false\n")
    today = lender.node.clock().date()
    await borrower.request("talk-1", MOBY)
    lid = await lending_id(lender, "talk-1")

    view = await lender.act("lending", lid, action="expect_to_supply",
                            expected_delivery=(today + timedelta(days=5)).isoformat(),
                            note="At the bindery until Friday")
    assert view["status"] == "EXPECT_TO_SUPPLY"
    expect = await borrower.last(1)
    assert expect.status_info.status is Status.EXPECT_TO_SUPPLY
    assert expect.message_info.reason_for_message is ReasonForMessage.REQUEST_RESPONSE
    assert day(expect.status_info.expected_delivery_date) == today + timedelta(days=5)

    # An internal note stays here; a message goes to the borrower with our current status.
    view = await lender.act("lending", lid, action="note", text="Ask the binder", by="anna")
    assert view["state"]["notes"][0]["text"] == "Ask the binder"
    await borrower.quiet(1)
    await lender.act("lending", lid, action="message", note="Binding repaired, shipping soon")
    said = await borrower.last(2)
    assert said.message_info.reason_for_message is ReasonForMessage.NOTIFICATION
    assert said.status_info.status is Status.EXPECT_TO_SUPPLY
    assert said.message_info.note == "Binding repaired, shipping soon"

    # The borrower's message is shown until marked read.
    await borrower.action("talk-1", Action.NOTIFICATION, note="Thanks, no rush")
    view = await lender.request("lending", lid)
    assert view["needs_attention"] and view["state"]["unread"][0]["note"] == "Thanks, no rush"
    view = await lender.act("lending", lid, action="mark_read")
    assert view["state"]["unread"] == [] and "marked_read" in events(view)

    view = await lender.act("lending", lid, action="will_supply")
    await lender.act("lending", lid, action="ship")
    assert [m.status_info.status for m in await borrower.sams(4)][2:] == [
        Status.WILL_SUPPLY, Status.LOANED]

    # Damaged on its way back: completed without return, the item kept out of circulation.
    view = await lender.act("lending", lid, action="lost", damaged=True,
                            charge={"amount": "12", "currency": "EUR"}, note="Water damage")
    assert view["status"] == "COMPLETED_WITHOUT_RETURN"
    assert view["state"]["charges"][0]["reason"] == "damaged"
    done = await borrower.last(5)
    assert done.status_info.status is Status.COMPLETED_WITHOUT_RETURN
    assert "damaged" in done.message_info.note and "Water damage" in done.message_info.note
    assert (await item_status(lender, "B-MOBY-1"))[0] == "non_circulating"
