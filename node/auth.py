"""Peer authentication: who sent an incoming ISO 18626 message, and what we
present to a partner when we send one.

Per partner and per direction (``[partners.auth.incoming]`` / ``.outgoing``):

- ``requestingAgencyAuthentication`` (accountId / securityCode), the standard's
  own field: checked on incoming Request and RequestingAgencyMessage (a
  SupplyingAgencyMessage has none to carry), filled in on outgoing ones;
- a shared-secret HTTP header (name and value);
- an Ed25519 signature of the body: ``X-ILL-Signature: ed25519 <base64>`` with
  ``X-ILL-Key-Id``; keys from ``ill-node keys generate``;
- mutual TLS: the partner's client certificate pinned by its SHA-256.

Every method configured for a partner must pass. Comparisons are constant
time. No secret is ever put in an exception message or a log line: a failure
says *which* check failed, never what was expected or received.

Pure apart from ``cryptography`` and ``ssl``: no I/O, no clock.  ``cryptography``
is imported only when a signature is made or checked (it costs start-up time,
and most partners use none).
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import functools
import hashlib
import hmac
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .config import NodeConfig, Partner
from .protocol.messages import (
    Authentication,
    BusinessMessage,
    Request,
    RequestingAgencyMessage,
)

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

SIGNATURE_HEADER = "X-ILL-Signature"
KEY_ID_HEADER = "X-ILL-Key-Id"
SIGNATURE_SCHEME = "ed25519"


class AuthenticationFailed(Exception):
    """The sender is a configured partner but did not prove it: HTTP 401.

    ``str()`` names the failed check (safe to log: it holds no secret)."""


@dataclass(frozen=True, slots=True)
class Credentials:
    """What arrived with a message besides its body."""

    headers: Mapping[str, str] = dataclasses.field(default_factory=dict)
    peer_cert: bytes | None = None  # the TLS client certificate (DER), if any


def _same(a: str | bytes | None, b: str | bytes | None) -> bool:
    if a is None or b is None:
        return False
    a = a.encode() if isinstance(a, str) else a
    b = b.encode() if isinstance(b, str) else b
    return hmac.compare_digest(a, b)


def carries_authentication(message: BusinessMessage) -> bool:
    """Request and RequestingAgencyMessage speak for the requesting agency."""
    return isinstance(message, (Request, RequestingAgencyMessage))


def cert_fingerprint(der: bytes) -> str:
    return hashlib.sha256(der).hexdigest()


def authenticate(
    partner: Partner, message: BusinessMessage, body: bytes, credentials: Credentials
) -> None:
    """Raise :class:`AuthenticationFailed` unless every incoming check of
    ``partner`` passes for this message."""
    need = partner.auth.incoming
    who = str(partner.symbol)
    if (need.account_id is not None or need.security_code is not None) and (
        carries_authentication(message)
    ):
        given = message.header.requesting_agency_authentication or Authentication()
        ok = True
        if need.account_id is not None:
            ok &= _same(need.account_id, given.account_id)
        if need.security_code is not None:
            ok &= _same(need.security_code, given.security_code)
        if not ok:
            raise AuthenticationFailed(f"{who}: requestingAgencyAuthentication does not match")
    if need.header_name is not None:
        if not _same(need.header_value, credentials.headers.get(need.header_name)):
            raise AuthenticationFailed(f"{who}: header {need.header_name} missing or wrong")
    if need.public_key is not None:
        verify_signature(need.public_key, body, credentials.headers.get(SIGNATURE_HEADER), who)
    if need.client_cert_sha256 is not None:
        if credentials.peer_cert is None:
            raise AuthenticationFailed(f"{who}: no TLS client certificate")
        if not _same(need.client_cert_sha256, cert_fingerprint(credentials.peer_cert)):
            raise AuthenticationFailed(f"{who}: TLS client certificate is not the pinned one")


def verify_signature(public_key: bytes, body: bytes, header: str | None, who: str) -> None:
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    if not header:
        raise AuthenticationFailed(f"{who}: no {SIGNATURE_HEADER} header")
    scheme, _, value = header.strip().partition(" ")
    if scheme.lower() != SIGNATURE_SCHEME:
        raise AuthenticationFailed(f"{who}: {SIGNATURE_HEADER} is not '{SIGNATURE_SCHEME} <base64>'")
    try:
        signature = base64.b64decode(value.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise AuthenticationFailed(f"{who}: {SIGNATURE_HEADER} is not base64") from None
    try:
        Ed25519PublicKey.from_public_bytes(public_key).verify(signature, body)
    except (InvalidSignature, ValueError):
        raise AuthenticationFailed(f"{who}: the body signature does not verify") from None


# -- outgoing -------------------------------------------------------------------------


def with_authentication(message: BusinessMessage, partner: Partner) -> BusinessMessage:
    """The message with ``requestingAgencyAuthentication`` set as the partner
    expects (Request and RequestingAgencyMessage only); unchanged otherwise."""
    give = partner.auth.outgoing
    if (give.account_id is None and give.security_code is None) or not (
        carries_authentication(message)
    ):
        return message
    header = dataclasses.replace(
        message.header,
        requesting_agency_authentication=Authentication(
            account_id=give.account_id, security_code=give.security_code
        ),
    )
    return dataclasses.replace(message, header=header)


@functools.lru_cache(maxsize=8)
def _private_key(pem: bytes) -> Ed25519PrivateKey:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    key = load_pem_private_key(pem, password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError("not an Ed25519 key")
    return key


def sign(pem: bytes, body: bytes) -> str:
    """The X-ILL-Signature value for ``body``."""
    signature = _private_key(pem).sign(body)
    return f"{SIGNATURE_SCHEME} {base64.b64encode(signature).decode()}"


def outgoing_headers(config: NodeConfig, peer: str, body: bytes) -> dict[str, str]:
    """HTTP headers (besides Content-Type) for a message to ``peer``, computed
    from the current configuration at send time (secrets never stored)."""
    partner = config.partner(peer)
    if partner is None:
        return {}
    give = partner.auth.outgoing
    headers: dict[str, str] = {}
    if give.header_name is not None and give.header_value is not None:
        headers[give.header_name] = give.header_value
    if give.sign and config.node.signing_key is not None:
        headers[SIGNATURE_HEADER] = sign(config.node.signing_key, body)
        headers[KEY_ID_HEADER] = config.node.signing_key_id or str(config.node.symbol)
    return headers


# -- TLS ------------------------------------------------------------------------------


def peer_certificate(transport) -> bytes | None:
    """The DER client certificate of an aiohttp request's transport, or None."""
    if transport is None:
        return None
    ssl_object = transport.get_extra_info("ssl_object")
    if ssl_object is None:
        return None
    try:
        return ssl_object.getpeercert(binary_form=True)
    except (ValueError, ssl.SSLError):
        return None
