"""Validation against the project's own ISO 18626 schemas (``xsd/``).

The writer validates what it produces with these, so that we never send a
peer a message its XSD would reject. The schemas are read from the ``xsd/``
directory at the repository root, compiled once per version on first use and
cached. Nothing here does I/O except reading those two files.
"""

from __future__ import annotations

import re
import threading
from pathlib import Path

from lxml import etree

from node.protocol.codes import NAMESPACE, Version

XSD_DIR = Path(__file__).resolve().parents[2] / "xsd"

_FILES: dict[Version, str] = {
    Version.V1_2: "iso18626-v1_2.xsd",
    Version.V2021_2: "iso18626-2021-2.xsd",
}

_cache: dict[Version, etree.XMLSchema] = {}
_lock = threading.Lock()

# libxml2 names elements as '{namespace}local'; ours are all in one namespace.
_CLARK = re.compile(r"\{" + re.escape(NAMESPACE) + r"\}")


def schema_path(version: Version) -> Path:
    """The XSD file for ``version``."""
    return XSD_DIR / _FILES[version]


def schema_for(version: Version) -> etree.XMLSchema:
    """The compiled schema for ``version`` (loaded on first call, then cached)."""
    schema = _cache.get(version)
    if schema is None:
        with _lock:
            schema = _cache.get(version)
            if schema is None:
                parser = etree.XMLParser(resolve_entities=False, no_network=True)
                doc = etree.parse(str(schema_path(version)), parser)
                schema = etree.XMLSchema(doc)
                _cache[version] = schema
    return schema


def validation_errors(root: etree._Element | etree._ElementTree, version: Version) -> list[str]:
    """Why ``root`` is not a valid ISO 18626 document of ``version``; [] if it is.

    One short line per problem: ``"line 12: Element 'status': ..."``, or the
    node's path instead of a line number for a tree built in memory.
    """
    schema = schema_for(version)
    with _lock:  # the error log belongs to the (shared) schema object
        if schema.validate(root):
            return []
        entries = list(schema.error_log)
    lines = []
    for entry in entries:
        where = f"line {entry.line}" if entry.line and entry.line > 0 else (entry.path or "?")
        message = _CLARK.sub("", entry.message).strip()
        lines.append(f"{where}: {message}")
    return lines
