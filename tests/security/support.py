"""Helpers for the security tests: a throwaway PKI, keys, counting rows, sending."""

from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress
import ssl
import textwrap
from dataclasses import dataclass
from pathlib import Path

import aiohttp
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from sqlalchemy import func, select

from node.keys_cli import generate
from node.protocol import reader, writer
from node.store import holdings_repo
from node.store import tables as t
from node.supplier.holdings import parse_csv

XML = {"Content-Type": "application/xml; charset=utf-8"}

HOLDINGS = textwrap.dedent("""\
    record_id,title,author,isbn,barcode,call_number,location,status
    r1,The Brothers Karamazov,"Dostoyevsky, Fyodor",0-14-044924-8,LEND-B1,PG3326,MAIN,available
    """)
BOOK = {"title": "The Brothers Karamazov", "author": "Dostoyevsky, Fyodor",
        "isbn": "9780140449242", "patron_id": "P-100", "pickup_location": "MAIN"}


async def load_holdings(lib, csv: str = HOLDINGS) -> None:
    async with lib.node.engine.begin() as conn:
        await holdings_repo.import_records(conn, parse_csv(csv).records, replace=True,
                                           now=lib.node.clock())


async def counts(lib) -> dict[str, int]:
    async with lib.node.engine.connect() as conn:
        return {
            table.name: (await conn.execute(select(func.count()).select_from(table))).scalar_one()
            for table in (t.transactions, t.messages, t.outbox, t.history, t.attempts)
        }


def confirmation(body: bytes):
    return reader.parse(body).message


async def post(url: str, body: bytes, headers: dict | None = None, ssl_context=None):
    connector = aiohttp.TCPConnector(ssl=ssl_context) if ssl_context is not None else None
    async with aiohttp.ClientSession(connector=connector) as http:
        async with http.post(url, data=body, headers={**XML, **(headers or {})}) as resp:
            return resp.status, await resp.read()


def serialise(envelope) -> bytes:
    return writer.serialise(envelope)


# -- keys ---------------------------------------------------------------------------------


@dataclass
class KeyPair:
    private: Path
    public: Path
    line: str  # base64 raw public key


def keypair(directory: Path, name: str) -> KeyPair:
    private, public, line = generate(directory, name)
    return KeyPair(private, public, line)


# -- a PKI ----------------------------------------------------------------------------------


@dataclass
class Cert:
    cert: Path
    key: Path
    der: bytes

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.der).hexdigest()


class PKI:
    """A CA issuing server and client certificates, written as PEM files."""

    def __init__(self, directory: Path, name: str = "Test CA"):
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self.key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        now = dt.datetime.now(dt.timezone.utc)
        self.cert = (
            x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
            .public_key(self.key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                         content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False,
                                         encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(self.key.public_key()),
                           critical=False)
            .sign(self.key, hashes.SHA256())
        )
        self.ca_file = directory / f"{name.replace(' ', '_')}.pem"
        self.ca_file.write_bytes(self.cert.public_bytes(serialization.Encoding.PEM))

    def issue(self, name: str, *, server: bool = False) -> Cert:
        key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.timezone.utc)
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
            .issuer_name(self.cert.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()),
                           critical=False)
            .add_extension(x509.ExtendedKeyUsage(
                [x509.oid.ExtendedKeyUsageOID.SERVER_AUTH, x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH]),
                critical=False)
        )
        if server:
            builder = builder.add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]),
                critical=False)
        cert = builder.sign(self.key, hashes.SHA256())
        cert_file, key_file = self.directory / f"{name}.crt", self.directory / f"{name}.key"
        cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                               serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()))
        key_file.chmod(0o600)
        return Cert(cert_file, key_file, cert.public_bytes(serialization.Encoding.DER))

    def client_context(self, cert: Cert | None = None) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(self.ca_file))
        if cert is not None:
            ctx.load_cert_chain(cert.cert, cert.key)
        return ctx
