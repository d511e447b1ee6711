"""Certificates and keys: checked with their line when the configuration is read, and
taken again on a reload, so a renewed certificate needs no restart. The admin API's
reload of a file it cannot use says why, and reloads nothing."""

from __future__ import annotations

import asyncio
import dataclasses
import shutil

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from node.config import ConfigError, loads
from node.tls import ServerTLS
from tests.security.support import BOOK, PKI, load_holdings
from tests.security.test_outgoing import configure

NODE = '[node]\nsymbol = "ISIL:XX-ME"\nname = "Me"\n'


def problems(text: str, tmp_path) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        loads(NODE + text, source_path=tmp_path / "config.toml")
    return [str(p) for p in caught.value.problems]


def test_check_config_says_which_tls_file_cannot_be_used(tmp_path):
    pki = PKI(tmp_path / "pki")
    a, b = pki.issue("a", server=True), pki.issue("b")
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not PEM\n")
    encrypted = tmp_path / "encrypted.key"
    encrypted.write_bytes(ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"passphrase")))
    config = tmp_path / "config.toml"

    def said(text: str) -> str:
        (found,) = problems(text, tmp_path)
        return found

    assert said(f'tls_cert = "{a.cert}"\ntls_key = "{b.key}"\n') == (
        f"{config}:5: node.tls_key: {b.key}: is not the key of the certificate in {a.cert}")
    assert said(f'tls_cert = "{garbage}"\ntls_key = "{a.key}"\n') == (
        f"{config}:4: node.tls_cert: {garbage} holds no PEM certificate")
    assert said(f'tls_cert = "{a.cert}"\ntls_key = "{garbage}"\n') == (
        f"{config}:5: node.tls_key: {garbage}: holds no PEM private key")
    assert "is encrypted with a passphrase" in said(
        f'client_cert = "{b.cert}"\nclient_key = "{encrypted}"\n')
    assert said(f'tls_ca = "{a.key}"\n') == (
        f"{config}:4: node.tls_ca: {a.key} holds no PEM certificate")
    loads(NODE + f'tls_cert = "{a.cert}"\ntls_key = "{a.key}"\ntls_client_ca = "{pki.ca_file}"\n'
          f'client_cert = "{b.cert}"\nclient_key = "{b.key}"\ntls_ca = "{pki.ca_file}"\n')


async def served_certificate(lib) -> bytes:
    """The certificate a new TLS connection to ``lib`` is given (DER)."""
    _, writer = await asyncio.open_connection("127.0.0.1", lib.port, ssl=lib.client_ssl)
    try:
        return writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
    finally:
        writer.close()


def renew(old, new) -> None:
    """Put ``new``'s files where ``old``'s are, as a certificate renewal does."""
    shutil.copyfile(new.cert, old.cert)
    shutil.copyfile(new.key, old.key)


async def test_a_renewed_server_certificate_is_served_after_a_reload(net, tmp_path):
    pki = PKI(tmp_path / "pki")
    first, renewed, stranger = (pki.issue(n, server=True) for n in ("one", "two", "three"))
    lib = net.add("alpha", sections=f'tls_cert = "{first.cert}"\ntls_key = "{first.key}"\n')
    lib.scheme, lib.client_ssl = "https", pki.client_context()
    await net.start()
    assert await served_certificate(lib) == first.der
    before = first.der
    renew(first, renewed)
    assert await served_certificate(lib) == before  # read at start, until a reload
    assert await lib.api("POST", "/api/admin/reload") == (
        200, {"reloaded": str(lib.config.source_path), "notes": []})
    assert await served_certificate(lib) == renewed.der

    # A key that is not the certificate's: nothing is reloaded, the line is said, and
    # the certificate served stays the one that works.
    shutil.copyfile(stranger.key, first.key)
    status, answer = await lib.api("POST", "/api/admin/reload")
    assert status == 409 and answer["error"].endswith("has problems: nothing reloaded")
    assert [p.split(": ", 1)[1] for p in answer["problems"]] == [
        f"node.tls_key: {first.key}: is not the key of the certificate in {first.cert}"]
    assert await served_certificate(lib) == renewed.der


async def test_a_server_context_keeps_its_certificate_when_the_files_go_wrong(net, tmp_path):
    # Between the configuration's check and the load (a renewal half written): the
    # context must not be left with one file's new content and the other's old.
    pki = PKI(tmp_path / "pki")
    first, other = pki.issue("one", server=True), pki.issue("two", server=True)
    lib = net.add("alpha", sections=f'tls_cert = "{first.cert}"\ntls_key = "{first.key}"\n')
    lib.scheme, lib.client_ssl = "https", pki.client_context()
    await net.start()
    server_tls: ServerTLS = lib.node.server_tls
    torn = dataclasses.replace(lib.config.node, tls_cert=other.cert)  # first.key: not its key
    assert server_tls.reload(torn) == (
        f"TLS not reloaded: {first.key}: is not the key of the certificate in {other.cert}")
    assert await served_certificate(lib) == first.der
    no_tls = dataclasses.replace(lib.config.node, tls_cert=None, tls_key=None)
    assert "HTTPS stays on until the node is restarted" in server_tls.reload(no_tls)


async def test_a_renewed_client_certificate_is_presented_after_a_reload(net, tmp_path):
    borrower, lender = configure(net, tmp_path, "mutual_tls")
    await net.start()
    await load_holdings(lender)
    code, view = await borrower.api("POST", "/api/borrowing/requests", json=BOOK)
    assert code == 201, view
    await borrower.wait_for("borrowing", view["id"], "will_supply")

    # The borrower's client certificate is renewed, by a new CA: the lender adds that
    # CA to its bundle and pins the new certificate; both reload.
    pki = PKI(tmp_path / "new-ca", "New CA")
    renewed = pki.issue("borrower-renewed")
    bundle = lender.config.node.tls_client_ca
    bundle.write_bytes(bundle.read_bytes() + pki.ca_file.read_bytes())
    lender.partner_auth["borrower"] = (
        f'[partners.auth.incoming]\nclient_cert_sha256 = "{renewed.sha256}"\n')
    (lender.directory / "config.toml").write_text(net.config_text(lender))
    assert await lender.api("POST", "/api/admin/reload") == (
        200, {"reloaded": str(lender.config.source_path), "notes": []})
    shutil.copyfile(renewed.cert, borrower.config.node.client_cert)
    shutil.copyfile(renewed.key, borrower.config.node.client_key)
    assert (await borrower.api("POST", "/api/admin/reload"))[0] == 200

    code, view = await borrower.api("POST", "/api/borrowing/requests", json=BOOK)
    assert code == 201, view
    await borrower.wait_for("borrowing", view["id"], "will_supply")


async def test_a_reload_says_what_needs_a_restart_and_what_it_could_not_read(net, tmp_path):
    pki = PKI(tmp_path / "pki")
    cert = pki.issue("one", server=True)
    lib = net.add("alpha")
    await net.start()
    lib.sections = f'tls_cert = "{cert.cert}"\ntls_key = "{cert.key}"\n'
    config = lib.directory / "config.toml"
    config.write_text(net.config_text(lib))
    assert await lib.api("POST", "/api/admin/reload") == (200, {
        "reloaded": str(config),
        "notes": ["tls_cert and tls_key added: HTTPS is served once the node is restarted"]})

    config.rename(config.with_suffix(".gone"))
    assert await lib.api("POST", "/api/admin/reload") == (409, {
        "error": f"{config} has problems: nothing reloaded",
        "problems": [f"{config}: cannot read file: No such file or directory"]})
