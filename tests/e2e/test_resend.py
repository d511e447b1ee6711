"""Sending again what may not have arrived (NOTES §6.10: delivery is not guaranteed).

A request sent again after an attempt whose outcome is unknown: the first lender is
the mock peer, which, like CrossLink, answers ERROR to a requestingAgencyRequestId it
already holds. Its confirmation of our request comes too late (our outbox gives up
waiting after 1 s), so the outbox sends the request again, and gets that ERROR. The
lender has the request, and will lend: asking the next lender too could make both
ship. Our node stays with the first lender, says why, and follows the loan when the
lender's answers come.

The same when the node is killed while the lender holds its answer: started again, it
sends the request once more (SQLite releases a killed process's leases at start,
PostgreSQL's liveness sweep those of a worker gone), and stays with the lender.

And a request waiting for another attempt at a partner that moved, or upgraded, goes
to its new address, in its new version, once the configuration is reloaded.
"""

from __future__ import annotations

import asyncio
import contextlib

import aiohttp
from aiohttp import web

from node.config import load
from node.mockpeer.server import RunningMock
from node.protocol.messages import Version
from node.store import db
from tests.harness import free_port
from tests.peer import Peer
from tests.protocol.test_writer import assert_officially_valid
from tests.service.test_processes import NodeProcess

MOCK = "ISIL:XX-MOCK"
OUTBOX = """
[outbox]
timeout_seconds = 1
max_attempts = 5
initial_backoff_seconds = 0.05
max_backoff_seconds = 0.5
poll_seconds = 0.05
"""


class LateFirstAnswer:
    """In front of the mock: passes every message on, and holds the answer to the
    first one longer than our outbox waits (a slow network, or a busy peer), at most
    ``hold`` seconds, and no longer than until it stops."""

    def __init__(self, target: str, hold: float):
        self.target, self.hold = target, hold
        self.port = free_port()
        self.forwarded = 0
        self.released = asyncio.Event()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}/iso18626"

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.forwarded += 1
        first = self.forwarded == 1
        async with aiohttp.ClientSession() as http, http.post(
                self.target, data=body, headers={"Content-Type": request.content_type}) as resp:
            answer, status = await resp.read(), resp.status
        if first:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.released.wait(), self.hold)
        return web.Response(status=status, body=answer, content_type="application/xml")

    async def __aenter__(self):
        app = web.Application()
        app.router.add_post("/iso18626", self.handle)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()
        return self

    async def __aexit__(self, *exc):
        self.released.set()
        await self.runner.cleanup()


async def test_an_error_to_a_request_sent_again_does_not_ask_the_next_lender(net):
    # The mock's answers come 4 s after our request: well after the ERROR to the resend
    # (about 1.1 s after it).
    mock = RunningMock(port=free_port(), delay=4.0)
    alpha = net.add("alpha", sections=OUTBOX, rota=[MOCK, "beta"])
    beta = net.add("beta")
    mock._peer_url = alpha.endpoint
    async with mock, LateFirstAnswer(mock.endpoint, hold=1.5) as proxy:
        net.add_peer(MOCK, proxy.endpoint)
        await net.start()
        status, created = await alpha.api("POST", "/api/borrowing/requests", json={
            "title": "Moby Dick", "patron_id": "P1", "pickup_location": "MAIN",
            "note": "MOCK:XX-MOCK:WILLSUPPLY_LOANED",
        })
        assert status == 201, created
        public_id = created["id"]

        view = await _wait_for_event(alpha, public_id, "delivery_uncertain")
        assert view["status"] == "sent" and view["partner"] == MOCK
        assert view["needs_attention"]
        [uncertain] = [h for h in view["history"] if h["event"] == "delivery_uncertain"]
        assert "already exists" in uncertain["summary"]
        assert "may hold the request" in uncertain["summary"]
        assert proxy.forwarded == 2  # the request, then the same request again

        # The lender had it, and lends: the loan goes on with it alone.
        view = await alpha.wait_for("borrowing", public_id, "shipped", timeout=20)
        assert view["partner"] == MOCK
        events = [h["event"] for h in view["history"]]
        assert "delivery_failed" not in events
        code, found = await beta.api("GET", "/api/lending/requests")
        assert code == 200 and found["requests"] == []


async def _wait_for_event(lib, public_id: str, event: str, timeout: float = 10.0) -> dict:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        view = await lib.request("borrowing", public_id)
        if any(h["event"] == event for h in view["history"]):
            return view
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("\n".join(f"{h['event']}: {h.get('summary')}"
                                           for h in view["history"]))
        await asyncio.sleep(0.05)


async def test_queued_messages_follow_a_partner_that_moved(net):
    """A partner's address changes while our request to it waits for another attempt
    (its old address answers nothing): once the configuration is reloaded, the queued
    request goes to the new address, not to the old one until it is given up."""
    moved = Peer("ISIL:XX-PEER")
    net.add_peer(moved.symbol, f"http://127.0.0.1:{free_port()}/iso18626")  # the old one
    alpha = net.add("alpha", rota=[moved.symbol])
    await net.start()
    await _a_request_waiting_for_its_lender(alpha)

    await moved.start()
    try:
        old_url = net.peers[0][1]
        await _reload_with(alpha, old_url, moved.endpoint)
        [env] = await moved.wait_for(1)
        assert env.message.bibliographic_info.title == "Moby Dick"
        row = await _wait_for_outbox(alpha, lambda row: row["state"] == "sent")
        assert row["url"] == old_url  # as queued; sent where the partner is now
    finally:
        await moved.stop()


async def test_queued_messages_follow_a_partner_that_upgraded(net):
    """A partner upgrades to ISO 18626 2021, and new credentials, while our request waits
    for it (it is down): once the configuration says so and is reloaded, the queued
    request goes in 2021 with the new credentials, not as it was queued."""
    upgraded = Peer("ISIL:XX-PEER")  # not started yet: down for its upgrade
    net.add_peer(upgraded.symbol, upgraded.endpoint)
    alpha = net.add("alpha", rota=[upgraded.symbol])
    alpha.partner_auth[upgraded.symbol] = OLD_PARTNER_SETTINGS
    await net.start()
    await _a_request_waiting_for_its_lender(alpha)

    await upgraded.start()
    try:
        await _reload_with(alpha, OLD_PARTNER_SETTINGS, NEW_PARTNER_SETTINGS)
        [env] = await upgraded.wait_for(1)
        assert env.version is Version.V2021_2
        assert_officially_valid(upgraded.raw[0], Version.V2021_2)
        auth = env.message.header.requesting_agency_authentication
        assert (auth.account_id, auth.security_code) == ("alpha-2", "new-code")
        await _wait_for_outbox(alpha, lambda row: row["state"] == "sent")
    finally:
        await upgraded.stop()


OLD_PARTNER_SETTINGS = """iso18626_version = "1.2"
[partners.auth.outgoing]
account_id = "alpha-1"
security_code = "old-code"
"""
NEW_PARTNER_SETTINGS = """iso18626_version = "2021-2"
[partners.auth.outgoing]
account_id = "alpha-2"
security_code = "new-code"
"""


async def _a_request_waiting_for_its_lender(lib) -> None:
    """A new request, sent at least twice to a lender that is down."""
    status, created = await lib.api("POST", "/api/borrowing/requests", json={
        "title": "Moby Dick", "patron_id": "P1", "pickup_location": "MAIN"})
    assert status == 201, created
    await _wait_for_outbox(lib, lambda row: row["attempts"] >= 2)


async def _reload_with(lib, old: str, new: str) -> None:
    """``lib``'s configuration file with ``old`` replaced by ``new``, reloaded."""
    path = lib.config.source_path
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new))
    assert (await lib.api("POST", "/api/admin/reload"))[0] == 200


async def _wait_for_outbox(lib, predicate, timeout: float = 10.0) -> dict:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        status, found = await lib.api("GET", "/api/admin/outbox")
        assert status == 200, found
        rows = found["outbox"]
        if rows and predicate(rows[0]):
            return rows[0]
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(rows)
        await asyncio.sleep(0.05)


async def test_a_node_killed_while_sending_a_request_stays_with_that_lender(net, tmp_path):
    """The node is killed (SIGKILL) while its request is with the first lender, which has
    stored it but not yet answered. Started again, the node sends the request once more,
    the lender answers ERROR 'already exists', and the request stays with that lender,
    which lends it. The next lender is never asked."""
    other = Peer("ISIL:XX-OTHER")
    lib = net.add("alpha", sections=OUTBOX.replace("timeout_seconds = 1", "timeout_seconds = 30"),
                  rota=[MOCK, other.symbol])
    port = lib.port
    mock = RunningMock(port=free_port(), delay=4.0, peer_url=lib.endpoint)
    async with mock, LateFirstAnswer(mock.endpoint, hold=60) as proxy, other:
        net.add_peer(MOCK, proxy.endpoint)
        net.add_peer(other.symbol, other.endpoint)
        config = tmp_path / "node.toml"
        config.write_text(net.config_text(lib))  # run as a process of its own, not in ours
        await db.migrate_async(load(config).node.database_url)
        node = NodeProcess(config, port, tmp_path / "node.log")
        await node.start()
        try:
            async with aiohttp.ClientSession(headers={"X-Staff-User": "alice"}) as http:
                api = f"http://127.0.0.1:{port}/api/borrowing/requests"
                async with http.post(api, json={
                    "title": "Moby Dick", "patron_id": "P1", "pickup_location": "MAIN",
                    "note": "MOCK:XX-MOCK:WILLSUPPLY_LOANED"}) as resp:
                    assert resp.status == 201, await resp.text()
                    public_id = (await resp.json())["id"]
                for _ in range(200):  # the lender has it; its answer is held
                    if proxy.forwarded:
                        break
                    await asyncio.sleep(0.02)
                assert proxy.forwarded == 1
                node.kill()
                await node.start()

                deadline = asyncio.get_running_loop().time() + 20
                while True:
                    async with http.get(f"{api}/{public_id}") as resp:
                        view = await resp.json()
                    if view["status"] == "shipped":
                        break
                    assert asyncio.get_running_loop().time() < deadline, view["history"]
                    await asyncio.sleep(0.1)
        finally:
            node.stop()
    events = [h["event"] for h in view["history"]]
    assert "delivery_uncertain" in events and "delivery_failed" not in events
    assert view["partner"] == MOCK and proxy.forwarded == 2
    assert other.received == []
