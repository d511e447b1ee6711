"""HTTPS: the node's server context, its client contexts for partners, and the checks
of their files.

Certificates and keys are PEM files named in ``[node]``. The configuration checks
them when it is read (:func:`holds_certificates`, :func:`key_problem`), so a file
TLS cannot use is said with its line at check-config and on a reload.
"""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .config import NodeSection


class Encrypted(Exception):
    """A key file encrypted with a passphrase."""


def _no_password() -> bytes:
    # Without a callback OpenSSL would prompt on the terminal, and the node wait for it.
    raise Encrypted


def holds_certificates(path: Path) -> bool:
    """Whether ``path`` holds at least one PEM certificate."""
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_verify_locations(cafile=str(path))
    except ssl.SSLError:
        return False
    return True


def key_problem(cert: Path, key: Path) -> str | None:
    """What keeps ``key`` from serving with the certificate chain in ``cert``, or None."""
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(cert, key, password=_no_password)
    except Encrypted:
        return ("is encrypted with a passphrase, which the node cannot ask for: "
                "keep it unencrypted, readable only by the node's user")
    except ssl.SSLError as exc:
        if exc.reason == "KEY_VALUES_MISMATCH":
            return f"is not the key of the certificate in {cert}"
        return "holds no PEM private key"
    return None


class ServerTLS:
    """HTTPS for the node when [node] tls_cert/tls_key are set. With tls_client_ca,
    client certificates are asked for (optional at the TLS level: partners pinned by
    fingerprint are checked per message).

    The listener keeps this one context for its life; :meth:`reload` loads renewed
    files into it, so new connections get a renewed certificate without a restart
    (those open keep theirs).
    """

    def __init__(self, node: NodeSection) -> None:
        self.context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.context.minimum_version = ssl.TLSVersion.TLSv1_2
        self._load(node)

    @classmethod
    def of(cls, node: NodeSection) -> ServerTLS | None:
        return cls(node) if node.tls_cert is not None and node.tls_key is not None else None

    def _load(self, node: NodeSection) -> None:
        self.context.load_cert_chain(node.tls_cert, node.tls_key, password=_no_password)
        if node.tls_client_ca is not None:
            self.context.load_verify_locations(cafile=str(node.tls_client_ca))
            self.context.verify_mode = ssl.CERT_OPTIONAL

    def reload(self, node: NodeSection) -> str | None:
        """Load the files again. Returns what was not done (the context keeps what it
        had), or None. Certificates in tls_client_ca are added to those trusted: one
        taken out stays trusted until a restart, as HTTPS stays on once served."""
        if node.tls_cert is None or node.tls_key is None:
            return "tls_cert and tls_key removed: HTTPS stays on until the node is restarted"
        # The configuration checked the files when it was read. Checked again, since a
        # key that failed to load after its certificate had would leave the context
        # with that certificate and the old key.
        if problem := key_problem(node.tls_cert, node.tls_key):
            return f"TLS not reloaded: {node.tls_key}: {problem}"
        try:
            self._load(node)
        except (OSError, Encrypted) as exc:  # a file changed again since
            return f"TLS not reloaded: {exc}"
        return None


def client_context(node: NodeSection) -> ssl.SSLContext | None:
    """For HTTPS partners: verify them against tls_ca (or the system's CAs) and present
    our client certificate. None when nothing is configured."""
    if node.tls_ca is None and node.client_cert is None:
        return None
    ctx = ssl.create_default_context(cafile=str(node.tls_ca) if node.tls_ca is not None else None)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if node.client_cert is not None and node.client_key is not None:
        ctx.load_cert_chain(node.client_cert, node.client_key, password=_no_password)
    return ctx
