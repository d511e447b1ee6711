"""What we send carries the credentials the partner expects: two of our nodes,
configured with each method, exchange a real request (issue 7)."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from node.store import tables as t
from tests.security.support import BOOK, PKI, keypair, load_holdings

METHODS = ["security_code", "header", "signature", "mutual_tls"]


def configure(net, tmp_path, method: str, *, lender_expects: str = "s3cret"):
    borrower = net.add("borrower", rota=["lender"])
    lender = net.add("lender")
    if method == "security_code":  # in the message: Request/RAM only (SAMs have no such field)
        borrower.partner_auth["lender"] = (
            '[partners.auth.outgoing]\naccount_id = "borrower"\nsecurity_code = "s3cret"\n')
        lender.partner_auth["borrower"] = (
            f'[partners.auth.incoming]\naccount_id = "borrower"\n'
            f'security_code = "{lender_expects}"\n')
    elif method == "header":
        for me, them, secret in ((borrower, lender, "s3cret"), (lender, borrower, "t0ken")):
            expects = lender_expects if me is lender else "s3cret"
            me.partner_auth[them.name] = (
                f'[partners.auth.outgoing]\nheader_name = "X-ILL-Secret"\nheader_value = "{secret}"\n'
                f'[partners.auth.incoming]\nheader_name = "X-ILL-Secret"\n'
                f'header_value = "{expects if me is lender else "t0ken"}"\n')
    elif method == "signature":
        keys = {lib.name: keypair(tmp_path / "keys", lib.name) for lib in (borrower, lender)}
        for me, them in ((borrower, lender), (lender, borrower)):
            me.sections = f'signing_key = "{keys[me.name].private}"\n'
            me.partner_auth[them.name] = (
                f'[partners.auth.outgoing]\nsign = true\n'
                f'[partners.auth.incoming]\npublic_key = "{keys[them.name].line}"\n')
    else:
        pki = PKI(tmp_path / "pki")
        certs = {lib.name: (pki.issue(f"{lib.name}-server", server=True), pki.issue(lib.name))
                 for lib in (borrower, lender)}
        for me, them in ((borrower, lender), (lender, borrower)):
            server, client = certs[me.name]
            me.scheme = "https"
            me.client_ssl = pki.client_context()
            me.sections = (f'tls_cert = "{server.cert}"\ntls_key = "{server.key}"\n'
                           f'tls_client_ca = "{pki.ca_file}"\ntls_ca = "{pki.ca_file}"\n'
                           f'client_cert = "{client.cert}"\nclient_key = "{client.key}"\n')
            me.partner_auth[them.name] = (
                f'[partners.auth.incoming]\nclient_cert_sha256 = "{certs[them.name][1].sha256}"\n')
    return borrower, lender


@pytest.mark.parametrize("method", METHODS)
async def test_two_nodes_exchange_a_request(net, tmp_path, method):
    borrower, lender = configure(net, tmp_path, method)
    await net.start()
    await load_holdings(lender)
    code, view = await borrower.api("POST", "/api/borrowing/requests", json=BOOK)
    assert code == 201, view
    # The lender accepted our Request (checked), and we accepted its answer.
    view = await borrower.wait_for("borrowing", view["id"], "will_supply")
    assert view["partner"] == lender.symbol
    lending = await lender.only_request("lending")
    assert lending["partner"] == borrower.symbol
    if method == "header":  # secrets are computed at send time, never stored
        async with borrower.node.engine.connect() as conn:
            rows = (await conn.execute(select(t.outbox))).all()
        assert rows and all(b"s3cret" not in bytes(r.body) for r in rows)
        assert all("s3cret" not in str(r) for r in rows)


@pytest.mark.parametrize("method", ["security_code", "header"])
async def test_wrong_credentials_are_refused_and_retried(net, tmp_path, method):
    borrower, lender = configure(net, tmp_path, method, lender_expects="something-else")
    await net.start()
    code, view = await borrower.api("POST", "/api/borrowing/requests", json=BOOK)
    assert code == 201, view
    import asyncio

    for _ in range(100):
        async with borrower.node.engine.connect() as conn:
            rows = (await conn.execute(select(t.outbox))).all()
        if rows and rows[0].last_error:
            break
        await asyncio.sleep(0.05)
    assert "HTTP 401" in rows[0].last_error and rows[0].state == "pending"
    status, found = await lender.api("GET", "/api/lending/requests")
    assert found["requests"] == []
