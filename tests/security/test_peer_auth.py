"""Peers prove who they are (issue 7): each method accepts the right partner and
refuses a forged one with HTTP 401 and no change; a partner cannot touch
another partner's request; an unknown sender gets an ERROR confirmation."""

from __future__ import annotations

import base64
import dataclasses

import pytest

from node import auth
from node.protocol.codes import Action, ErrorType, MessageStatus, ReasonForMessage, Status
from node.protocol.messages import (
    AgencyId,
    Authentication,
    Envelope,
    MessageInfo,
    StatusInfo,
    SupplyingAgencyMessage,
)
from tests import builders
from tests.security.support import (
    BOOK,
    PKI,
    confirmation,
    counts,
    keypair,
    post,
    serialise,
)

PEER = "ISIL:XX-PEER"
OTHER = "ISIL:XX-OTHER"


def with_auth(envelope: Envelope, account: str | None, code: str | None) -> Envelope:
    message = envelope.message
    header = dataclasses.replace(
        message.header,
        requesting_agency_authentication=Authentication(account_id=account, security_code=code))
    return dataclasses.replace(envelope, message=dataclasses.replace(message, header=header))


def request_body(lib, rari: str = "R-1", sender: str = PEER, code: str | None = None,
                 account: str | None = None) -> bytes:
    env = builders.request(sender, lib.symbol, rari, title="The Brothers Karamazov")
    if code is not None or account is not None:
        env = with_auth(env, account, code)
    return serialise(env)


async def assert_refused(lib, body: bytes, headers: dict | None = None, ssl_context=None,
                         url: str | None = None) -> None:
    before = await counts(lib)
    status, _ = await post(url or lib.endpoint, body, headers, ssl_context)
    assert status == 401
    assert await counts(lib) == before


async def assert_accepted(lib, body: bytes, headers: dict | None = None, ssl_context=None,
                          url: str | None = None) -> None:
    status, answer = await post(url or lib.endpoint, body, headers, ssl_context)
    assert status == 200, answer
    conf = confirmation(answer)
    assert conf.confirmation_header.message_status is MessageStatus.OK, conf


# -- each method, incoming -------------------------------------------------------------


async def test_security_code(net):
    lib = net.add("alpha")
    net.add_peer(PEER, "http://127.0.0.1:9/iso18626")
    lib.partner_auth[PEER] = ('[partners.auth.incoming]\naccount_id = "peer"\n'
                              'security_code = "${ILL_TEST_PEER_CODE}"\n')
    import os
    os.environ["ILL_TEST_PEER_CODE"] = "s3cret-code"
    try:
        await net.start()
    finally:
        del os.environ["ILL_TEST_PEER_CODE"]
    await assert_refused(lib, request_body(lib, "R-0"))  # none
    await assert_refused(lib, request_body(lib, "R-0", account="peer", code="s3cret-codf"))
    await assert_refused(lib, request_body(lib, "R-0", account="other", code="s3cret-code"))
    await assert_accepted(lib, request_body(lib, "R-1", account="peer", code="s3cret-code"))
    # A RequestingAgencyMessage carries it too.
    ram = serialise(builders.action(PEER, lib.symbol, "R-1", Action.STATUS_REQUEST))
    await assert_refused(lib, ram)
    await assert_accepted(lib, serialise(with_auth(
        builders.action(PEER, lib.symbol, "R-1", Action.STATUS_REQUEST), "peer", "s3cret-code")))


async def test_shared_header(net):
    lib = net.add("alpha")
    net.add_peer(PEER, "http://127.0.0.1:9/iso18626")
    lib.partner_auth[PEER] = ('[partners.auth.incoming]\nheader_name = "X-ILL-Secret"\n'
                              'header_value = "open sesame"\n')
    await net.start()
    await assert_refused(lib, request_body(lib))
    await assert_refused(lib, request_body(lib), {"X-ILL-Secret": "open sesame!"})
    await assert_refused(lib, request_body(lib), {"X-Other": "open sesame"})
    await assert_accepted(lib, request_body(lib), {"x-ill-secret": "open sesame"})


async def test_signature(net, tmp_path):
    right = keypair(tmp_path / "keys", "peer")
    wrong = keypair(tmp_path / "keys", "forger")
    lib = net.add("alpha")
    net.add_peer(PEER, "http://127.0.0.1:9/iso18626")
    lib.partner_auth[PEER] = f'[partners.auth.incoming]\npublic_key = "{right.public}"\n'
    await net.start()
    body = request_body(lib)
    right_pem, wrong_pem = right.private.read_bytes(), wrong.private.read_bytes()
    await assert_refused(lib, body)
    await assert_refused(lib, body, {auth.SIGNATURE_HEADER: auth.sign(wrong_pem, body)})
    await assert_refused(lib, body, {auth.SIGNATURE_HEADER: "ed25519 not-base64!"})
    await assert_refused(lib, body, {auth.SIGNATURE_HEADER: "rsa " + base64.b64encode(b"x").decode()})
    tampered = body.replace(b"Karamazov", b"Karamazof")
    await assert_refused(lib, tampered, {auth.SIGNATURE_HEADER: auth.sign(right_pem, body)})
    await assert_accepted(lib, body, {auth.SIGNATURE_HEADER: auth.sign(right_pem, body),
                                      auth.KEY_ID_HEADER: PEER})


async def test_mutual_tls(net, tmp_path):
    pki = PKI(tmp_path / "pki")
    rogue = PKI(tmp_path / "rogue", "Rogue CA")
    server = pki.issue("alpha-server", server=True)
    peer_cert = pki.issue("peer-client")
    other_cert = pki.issue("someone-else")  # same CA, not pinned
    forged = rogue.issue("peer-client")
    lib = net.add("alpha", sections=f'tls_cert = "{server.cert}"\ntls_key = "{server.key}"\n'
                                    f'tls_client_ca = "{pki.ca_file}"\n')
    lib.scheme = "https"
    lib.client_ssl = pki.client_context()
    net.add_peer(PEER, "http://127.0.0.1:9/iso18626")
    lib.partner_auth[PEER] = (f'[partners.auth.incoming]\n'
                              f'client_cert_sha256 = "{":".join(peer_cert.sha256[i:i+2] for i in range(0, 64, 2)).upper()}"\n')
    await net.start()
    body = request_body(lib)
    await assert_refused(lib, body, ssl_context=pki.client_context())  # no certificate
    await assert_refused(lib, body, ssl_context=pki.client_context(other_cert))
    before = await counts(lib)
    with pytest.raises(Exception):  # a certificate from another CA: no TLS at all
        await post(lib.endpoint, body, ssl_context=pki.client_context(forged))
    assert await counts(lib) == before
    await assert_accepted(lib, body, ssl_context=pki.client_context(peer_cert))
    status, _ = await lib.api("GET", "/api/lending/requests")  # the API over HTTPS too
    assert status == 200


# -- who may speak for whom ------------------------------------------------------------


async def test_unknown_sender_gets_error_naming_it(net):
    lib = net.add("alpha")
    await net.start()
    before = await counts(lib)
    status, answer = await post(lib.endpoint, request_body(lib, sender="ISIL:XX-STRANGER"))
    assert status == 200
    conf = confirmation(answer)
    assert conf.confirmation_header.message_status is MessageStatus.ERROR
    assert conf.error_data[0].error_type is ErrorType.UNRECOGNISED_DATA_VALUE
    assert "ISIL:XX-STRANGER" in conf.error_data[0].error_value
    assert await counts(lib) == before


async def test_authenticated_partner_cannot_touch_another_partners_request(net):
    """Right credentials, wrong request: OTHER answers (SAM) a borrowing attempt
    sent to PEER, and sends an action (RAM) about PEER's lending request."""
    lib = net.add("alpha", rota=[PEER])
    from tests.peer import Peer

    peer = Peer(PEER)
    await peer.start()
    net.add_peer(PEER, peer.endpoint)
    net.add_peer(OTHER, "http://127.0.0.1:9/iso18626")
    for symbol, secret in ((PEER, "peer-secret"), (OTHER, "other-secret")):
        lib.partner_auth[symbol] = (f'[partners.auth.incoming]\nheader_name = "X-ILL-Secret"\n'
                                    f'header_value = "{secret}"\n')
    try:
        await net.start()
        # A lending request from PEER ...
        await assert_accepted(lib, request_body(lib, "R-PEER"), {"X-ILL-Secret": "peer-secret"})
        # ... a borrowing request of ours, sent to PEER.
        code, view = await lib.api("POST", "/api/borrowing/requests", json=BOOK)
        assert code == 201, view
        from node.protocol.messages import Request

        await peer.wait_for(2)  # our answer to R-PEER, and our borrowing request
        (sent,) = [e for e in peer.received if isinstance(e.message, Request)]
        rari = sent.message.header.requesting_agency_request_id
        before = await counts(lib)

        sam = Envelope(version=sent.version, message=SupplyingAgencyMessage(
            header=builders.header(lib.symbol, OTHER, rari),
            message_info=MessageInfo(reason_for_message=ReasonForMessage.REQUEST_RESPONSE),
            status_info=StatusInfo(status=Status.WILL_SUPPLY,
                                   last_change=sent.message.header.timestamp),
        ))
        status, answer = await post(lib.endpoint, serialise(sam), {"X-ILL-Secret": "other-secret"})
        conf = confirmation(answer)
        assert status == 200 and conf.confirmation_header.message_status is MessageStatus.ERROR
        assert conf.error_data[0].error_type is ErrorType.UNRECOGNISED_DATA_VALUE
        # OTHER using PEER's name with its own secret: refused outright.
        await assert_refused(lib, serialise(dataclasses.replace(sam, message=dataclasses.replace(
            sam.message, header=builders.header(lib.symbol, PEER, rari)))),
            {"X-ILL-Secret": "other-secret"})
        ram = serialise(builders.action(OTHER, lib.symbol, "R-PEER", Action.CANCEL))
        status, answer = await post(lib.endpoint, ram, {"X-ILL-Secret": "other-secret"})
        conf = confirmation(answer)
        assert status == 200 and conf.confirmation_header.message_status is MessageStatus.ERROR
        assert await counts(lib) == before
        # PEER itself may answer.
        sam_ok = dataclasses.replace(sam, message=dataclasses.replace(
            sam.message, header=builders.header(lib.symbol, PEER, rari)))
        await assert_accepted(lib, serialise(sam_ok), {"X-ILL-Secret": "peer-secret"})
    finally:
        await peer.stop()


def test_failures_never_show_secrets(tmp_path):
    from node.config import loads

    config = loads(
        '[node]\nsymbol = "ISIL:XX-ME"\nname = "Me"\n'
        f'[[partners]]\nsymbol = "{PEER}"\nurl = "http://x/iso18626"\n'
        '[partners.auth.incoming]\naccount_id = "acct-SECRET1"\nsecurity_code = "code-SECRET2"\n'
        'header_name = "X-K"\nheader_value = "hdr-SECRET3"\n'
    )
    partner = config.partner(PEER)
    env = with_auth(builders.request(PEER, "ISIL:XX-ME", "R"), "wrong-SECRET4", "x")
    with pytest.raises(auth.AuthenticationFailed) as info:
        auth.authenticate(partner, env.message, b"", auth.Credentials({"X-K": "nope"}))
    text = str(info.value) + repr(partner) + repr(config)
    assert "SECRET" not in text
    assert AgencyId.parse(PEER)
