"""``ill-node validate``: check ISO 18626 files the way the node reads them.

Each file is read with the lenient reader, then validated against our own
schema (``node.protocol.schema``) of the version given with ``--version``, or
else of the version the reader detected.  One line per file::

    FILE: valid
    FILE: invalid: <errorValue>

The exit code is 1 if any file is invalid (or unreadable), else 0.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from .codes import Version


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "validate",
        help="check ISO 18626 XML files (reader + schema)",
        description=__doc__.split("\n\n")[0],
    )
    parser.add_argument(
        "--version",
        choices=[v.value for v in Version],
        help="validate against this schema version (default: the detected one)",
    )
    parser.add_argument("files", nargs="+", metavar="FILE", type=Path)
    parser.set_defaults(func=run)


def check(data: bytes, version: Version | None = None) -> str | None:
    """None if ``data`` is a valid message, else the one-line reason."""
    # The codec (lxml, the schemas) only when a file is checked, not to build the CLI.
    from .confirm import classify
    from .errors import ProtocolError
    from .reader import parse_element
    from .safe_xml import parse_xml
    from .schema import validation_errors

    try:
        root = parse_xml(data)
        envelope = parse_element(root)
        errors = validation_errors(root, version or envelope.version)
    except ProtocolError as exc:
        return exc.value
    except Exception as exc:  # noqa: BLE001 - anything else becomes a reason too
        return classify(exc).value
    return errors[0] if errors else None


def run(args: argparse.Namespace) -> int:
    version = Version(args.version) if args.version else None
    status = 0
    for path in args.files:
        try:
            data = path.read_bytes()
        except OSError as exc:
            print(f"{path}: invalid: cannot read: {exc.strerror or exc}")
            status = 1
            continue
        reason = check(data, version)
        if reason is None:
            print(f"{path}: valid")
        else:
            print(f"{path}: invalid: {reason}")
            status = 1
    return status
