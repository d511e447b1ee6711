"""Our node borrowing from a peer that sends what real peers send (NOTES §6).

The mock peer plays a lender with the quirks switched on: an unprefixed
``version`` attribute, ``+0000`` timestamps, and an Alma-style Notification
with an empty ``<status/>``.  Our node must take all of it and follow the loan.
"""

from __future__ import annotations

import pytest

from node.mockpeer.server import RunningMock
from tests.harness import Network, free_port
from tests.peer import Peer

MOCK = "ISIL:XX-MOCK"
QUIRKS = frozenset({"unprefixed-version", "offset-0000", "empty-notification-status"})


@pytest.fixture
async def network(tmp_path, database_factory):
    net = Network(tmp_path, database_factory)
    yield net
    await net.stop()


@pytest.mark.parametrize("quirks", [frozenset(), QUIRKS], ids=["strict", "quirky"])
async def test_loan_from_a_quirky_peer(network, quirks):
    alpha = network.add("alpha")
    mock = RunningMock(port=free_port(), peer_url=None, quirks=quirks)
    network.add_peer(MOCK, mock.endpoint)
    mock._peer_url = alpha.endpoint  # the mock sends its answers to us
    await mock.start()
    try:
        await network.start()
        status, created = await alpha.api("POST", "/api/borrowing/requests", json={
            "title": "Moby Dick", "patron_id": "P1", "pickup_location": "MAIN",
            "note": "MOCK:XX-MOCK:LOANED",
        })
        assert status == 201, created
        view = await alpha.wait_for("borrowing", created["id"], "shipped")
        assert view["partner"] == MOCK
        events = [h["event"] for h in view["history"]]
        assert not any("error" in e for e in events), events
        incoming = [m for m in view["messages"] if m["direction"] == "in"]
        assert incoming, view["messages"]
        if quirks:
            assert any("+0000" in m["raw"] for m in incoming)
            assert any('version="1.2"' in m["raw"] and "ill:version" not in m["raw"]
                       for m in incoming)
    finally:
        await mock.stop()


async def test_a_peer_that_answers_error_with_http_400_refuses_at_once(network):
    """Koha answers an ERROR confirmation with HTTP 400 (NOTES §6.6): our request is
    refused there, and the next lender is asked at once, instead of the request being
    sent again and again as if the network had failed."""
    koha = Peer("ISIL:XX-KOHA")
    koha.answer = lambda env: "error400"
    network.add_peer(koha.symbol, koha.endpoint)
    alpha = network.add("alpha", rota=[koha.symbol, "beta"])
    network.add("beta")
    await koha.start()
    try:
        await network.start()
        status, created = await alpha.api("POST", "/api/borrowing/requests", json={
            "title": "Moby Dick", "patron_id": "P1", "pickup_location": "MAIN"})
        assert status == 201, created
        # Beta holds nothing, and answers Unfilled at once: the end of the rota.
        view = await alpha.wait_for("borrowing", created["id"], "unfilled")
        [unfilled] = [h for h in view["history"] if h["event"] == "received_unfilled"]
        assert network["beta"].symbol in unfilled["summary"]
        [failed] = [h for h in view["history"] if h["event"] == "delivery_failed"]
        assert "scripted ERROR" in failed["summary"]
        assert len(koha.received) == 1
    finally:
        await koha.stop()
