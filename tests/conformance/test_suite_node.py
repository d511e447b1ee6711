"""The conformance suite against our own node (started with tests/harness.py), in both
ISO 18626 versions and on both databases."""

from __future__ import annotations

import pytest

from node.conformance import CHECKS, KitConfig, run_checks
from node.protocol.codes import Version
from node.store import db, holdings_repo
from node.supplier.locate import HoldingsItem, HoldingsRecord
from tests.conformance.test_suite_mock import assert_kit_sent_only_valid_messages
from tests.harness import Network, free_port

KIT = "ISIL:XX-KIT"
HELD = "9780140449242"  # many available copies: loan, copy, cancel, renew
ON_LOAN = "9780141439518"  # every copy out: RetryPossible (OnLoan)
NOT_HELD = "9799999999993"

HINTS = {
    "loan": {"isbn": HELD, "title": "The Brothers Karamazov"},
    "copy": {"isbn": HELD, "title": "The Brothers Karamazov"},
    "cancel": {"isbn": HELD, "title": "The Brothers Karamazov"},
    "renew": {"isbn": HELD, "title": "The Brothers Karamazov"},
    "lost": {"isbn": HELD, "title": "The Brothers Karamazov"},
    "hold-return": {"isbn": HELD, "title": "The Brothers Karamazov"},
    "retry": {"isbn": ON_LOAN, "title": "Pride and Prejudice"},
    "unfilled": {"isbn": NOT_HELD, "title": "A book nobody holds"},
}


async def load_holdings(lib) -> None:
    engine = db.create_engine(lib.config.node.database_url)
    try:
        async with engine.begin() as conn:
            await holdings_repo.import_records(conn, [
                HoldingsRecord(record_id="r1", title="The Brothers Karamazov",
                               author="Dostoyevsky, Fyodor", isbns=(HELD,),
                               items=tuple(HoldingsItem(barcode=f"B{i}", location="MAIN")
                                           for i in range(20))),
                HoldingsRecord(record_id="r2", title="Pride and Prejudice", isbns=(ON_LOAN,),
                               items=(HoldingsItem(barcode="P1", location="MAIN",
                                                   status="on_loan"),)),
            ], replace=True, now=lib.node.clock())
    finally:
        await engine.dispose()


@pytest.fixture(params=[Version.V1_2, Version.V2021_2], ids=str)
def version(request) -> Version:
    """The version the node is configured to speak with the kit (and the kit speaks)."""
    return request.param


@pytest.fixture
async def node_under_test(tmp_path, database_factory, version):
    kit_port = free_port()
    net = Network(tmp_path, database_factory)
    net.add_peer(KIT, f"http://127.0.0.1:{kit_port}/iso18626")
    lib = net.add("lender", symbol="ISIL:XX-LENDER")
    lib.partner_auth[KIT] = f'iso18626_version = "{version.value}"'
    await net.start()
    await load_holdings(lib)
    try:
        yield lib, kit_port
    finally:
        await net.stop()


async def test_suite_against_our_node(node_under_test, version, capsys):
    lib, kit_port = node_under_test
    config = KitConfig(peer_url=lib.endpoint, peer_symbol=lib.symbol, our_symbol=KIT,
                       public_url=f"http://127.0.0.1:{kit_port}/iso18626", peer_api=lib.url,
                       hints=HINTS, timeout=8, settle=0.3, version=version)
    import sys

    results = await run_checks(config, listen=("127.0.0.1", kit_port), out=sys.stdout)
    out = capsys.readouterr().out
    print(out)
    outcomes = {r.name: r.outcome for r in results}
    assert outcomes == {n: "PASS" if version in c.versions else "SKIP"
                        for n, c in CHECKS.items()}, out
    assert_kit_sent_only_valid_messages(results, version)


async def test_without_hints_or_api_checks_skip_with_reasons(node_under_test, version):
    lib, kit_port = node_under_test
    config = KitConfig(peer_url=lib.endpoint, peer_symbol=lib.symbol, our_symbol=KIT,
                       public_url=f"http://127.0.0.1:{kit_port}/iso18626", peer_kind="other",
                       timeout=8, settle=0.3, version=version)
    results = await run_checks(config, listen=("127.0.0.1", kit_port))
    outcomes = {r.name: r.outcome for r in results}
    assert "FAIL" not in outcomes.values(), [(r.name, r.detail) for r in results]
    assert outcomes["loan"] == "SKIP" and outcomes["requester-loan"] == "SKIP"
    assert outcomes["error-on-bad-xml"] == "PASS"
    reasons = {r.name: r.detail for r in results}
    assert "--scenario-hints" in reasons["loan"] and "--peer-api" in reasons["requester-loan"]
