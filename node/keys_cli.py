"""``ill-node keys generate --out DIR``: an Ed25519 key pair for signing messages.

Writes ``DIR/node.key`` (private key, PEM, mode 0600: set ``[node] signing_key``
to it) and ``DIR/node.pub`` (public key, PEM: give it to partners), and prints
the public key as one base64 line, which partners may paste into
``[partners.auth.incoming] public_key``.
"""

from __future__ import annotations

import argparse
import base64
import os
import sys
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    keys = subparsers.add_parser("keys", help="signing keys for partners (Ed25519)")
    sub = keys.add_subparsers(dest="keys_command", metavar="ACTION")
    gen = sub.add_parser("generate", help="make a key pair: DIR/NAME.key (0600) and DIR/NAME.pub")
    gen.add_argument("--out", required=True, type=Path, help="directory to write the keys in")
    gen.add_argument("--name", default="node", help="file name stem (default: node)")
    gen.add_argument("--force", action="store_true", help="overwrite existing files")
    gen.set_defaults(func=cmd_generate)


def generate(out: Path, name: str = "node", force: bool = False) -> tuple[Path, Path, str]:
    """Write the pair; return (private path, public path, public key base64)."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import (
        Encoding,
        NoEncryption,
        PrivateFormat,
        PublicFormat,
    )

    out.mkdir(parents=True, exist_ok=True)
    private, public = out / f"{name}.key", out / f"{name}.pub"
    for path in (private, public):
        if path.exists() and not force:
            raise FileExistsError(f"{path} exists already (use --force to replace it)")
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
    if force and private.exists():
        private.unlink()
    # Created 0600 from the start: the key is never readable by others, even briefly.
    fd = os.open(private, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    public.write_bytes(key.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo))
    raw = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    return private, public, base64.b64encode(raw).decode()


def cmd_generate(args: argparse.Namespace) -> int:
    try:
        private, public, line = generate(args.out, args.name, args.force)
    except (FileExistsError, OSError) as exc:
        print(str(exc), file=sys.stderr)
        return 1
    print(f"wrote {private} (private, mode 0600) and {public} (public)")
    print("in your config:   [node] signing_key = " + f'"{private}"')
    print("for each partner that checks signatures: [partners.auth.outgoing] sign = true")
    print("give partners this public key (their [partners.auth.incoming] public_key):")
    print(f"  {line}")
    return 0
