"""One hardened XML parser for everything that comes off the wire.

Peers are not trusted: a body may be huge, carry a DOCTYPE (XXE, "billion
laughs"), or nest thousands of levels deep.  :func:`parse_xml` refuses all
of these with :class:`~node.protocol.errors.BadlyFormed`, whose value is one
line saying why:

* size: checked on the raw bytes *before* parsing (default 1 MiB);
* DOCTYPE / ENTITY declarations: refused outright, found by a byte scan
  before parsing and again from the parsed document's docinfo;
* the parser itself never loads a DTD, resolves entities or touches the
  network, and keeps libxml2's own limits (``huge_tree=False``);
* depth: checked after parsing (default 64 levels, root = level 1).

Only UTF-8 (or another ASCII-compatible encoding it declares) is read:
ISO 18626 clause 5.2 mandates UTF-8, and UTF-16/32 would hide a DOCTYPE from
the byte scan.
"""

from __future__ import annotations

import threading
from functools import lru_cache

from lxml import etree

from .errors import BadlyFormed

DEFAULT_MAX_BYTES = 1024 * 1024
DEFAULT_MAX_DEPTH = 64

_local = threading.local()


def _parser() -> etree.XMLParser:
    """One parser per thread (lxml parsers must not be shared across threads)."""
    parser = getattr(_local, "parser", None)
    if parser is None:
        parser = etree.XMLParser(
            resolve_entities=False,
            no_network=True,
            huge_tree=False,
            load_dtd=False,
            dtd_validation=False,
            attribute_defaults=False,
            remove_comments=True,
            remove_pis=True,
            collect_ids=False,
        )
        _local.parser = parser
    return parser


@lru_cache(maxsize=8)
def _too_deep(max_depth: int) -> etree.XPath:
    # True if any element sits at level max_depth + 1 (evaluated in C).
    return etree.XPath("boolean(/*" + "/*" * max_depth + ")")


_BOMS = (b"\xfe\xff", b"\xff\xfe", b"\x00\x00\xfe\xff", b"\xff\xfe\x00\x00")


def parse_xml(
    data: bytes,
    *,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_depth: int = DEFAULT_MAX_DEPTH,
) -> etree._Element:
    """Parse untrusted bytes into an lxml element, or raise :class:`BadlyFormed`."""
    if isinstance(data, str):
        data = data.encode("utf-8")
    elif not isinstance(data, bytes):
        data = bytes(data)
    size = len(data)
    if size > max_bytes:
        raise BadlyFormed(f"message is {size} bytes, over the limit of {max_bytes} bytes")
    if not data.strip():
        raise BadlyFormed("empty message: expected an ISO18626Message XML document")
    if data.startswith(_BOMS) or b"\x00" in data:
        raise BadlyFormed("message is not UTF-8 (ISO 18626 messages are UTF-8 XML)")
    if b"<!DOCTYPE" in data or b"<!ENTITY" in data:
        raise BadlyFormed("DOCTYPE and ENTITY declarations are not allowed")
    try:
        root = etree.fromstring(data, _parser())
    except etree.XMLSyntaxError as exc:
        raise BadlyFormed(f"not well-formed XML: {_one_line(str(exc))}") from None
    except ValueError as exc:  # e.g. an unsupported encoding declaration
        raise BadlyFormed(f"not well-formed XML: {_one_line(str(exc))}") from None
    if root is None:
        raise BadlyFormed("empty message: expected an ISO18626Message XML document")
    docinfo = root.getroottree().docinfo
    if docinfo.doctype or docinfo.internalDTD is not None:
        raise BadlyFormed("DOCTYPE and ENTITY declarations are not allowed")
    if _too_deep(max_depth)(root):
        raise BadlyFormed(f"message nests deeper than {max_depth} elements")
    return root


def _one_line(text: str) -> str:
    return " ".join(text.split())
