"""The hardened parser refuses hostile input quickly, with a one-line reason."""

from __future__ import annotations

import time

import pytest

from node.protocol.codes import ErrorType
from node.protocol.errors import BadlyFormed
from node.protocol.reader import parse
from node.protocol.safe_xml import parse_xml

NS = "http://illtransactions.org/2013/iso18626"


def refused(data: bytes, **kw) -> BadlyFormed:
    with pytest.raises(BadlyFormed) as info:
        parse_xml(data, **kw)
    assert info.value.error_type is ErrorType.BADLY_FORMED_MESSAGE
    assert "\n" not in info.value.value
    return info.value


def test_plain_document_parses():
    root = parse_xml(f'<ISO18626Message xmlns="{NS}"><request/></ISO18626Message>'.encode())
    assert root.tag == f"{{{NS}}}ISO18626Message"


def test_xxe_external_entity_refused():
    data = (
        b'<?xml version="1.0"?>\n<!DOCTYPE foo [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>\n'
        b'<ISO18626Message xmlns="' + NS.encode() + b'"><request>&xxe;</request></ISO18626Message>'
    )
    error = refused(data)
    assert "DOCTYPE" in error.value
    with pytest.raises(BadlyFormed):
        parse(data)


def test_billion_laughs_refused_quickly():
    entities = ['<!ENTITY lol "lol">'] + [
        f'<!ENTITY lol{i} "{("&lol" + (str(i - 1) if i > 1 else "") + ";") * 10}">'
        for i in range(1, 10)
    ]
    data = (
        "<?xml version='1.0'?><!DOCTYPE lolz [" + "".join(entities) + "]>"
        f'<ISO18626Message xmlns="{NS}">&lol9;</ISO18626Message>'
    ).encode()
    start = time.perf_counter()
    refused(data)
    assert time.perf_counter() - start < 1.0


def test_any_doctype_refused():
    error = refused(b'<!DOCTYPE ISO18626Message><ISO18626Message xmlns="' + NS.encode() + b'"/>')
    assert "DOCTYPE" in error.value


def test_huge_body_refused_before_parsing():
    data = b"<a>" + b"x" * (100 * 1024 * 1024) + b"</a>"
    start = time.perf_counter()
    error = refused(data)
    assert time.perf_counter() - start < 1.0
    assert "over the limit" in error.value


def test_size_limit_is_a_parameter():
    data = f'<ISO18626Message xmlns="{NS}"><request/></ISO18626Message>'.encode()
    refused(data, max_bytes=10)
    assert parse_xml(data, max_bytes=len(data)) is not None


def test_depth_bomb_refused():
    deep = b"<a>" * 100 + b"</a>" * 100
    assert "deeper than 64" in refused(deep).value
    very_deep = b"<a>" * 100_000 + b"</a>" * 100_000  # libxml2's own limit stops this one
    start = time.perf_counter()
    refused(very_deep, max_bytes=10 * 1024 * 1024)
    assert time.perf_counter() - start < 1.0


def test_depth_limit_is_a_parameter():
    data = b"<a><b><c/></b></a>"
    refused(data, max_depth=2)
    assert parse_xml(data, max_depth=3) is not None


@pytest.mark.parametrize(
    "data, words",
    [
        (b"", "empty"),
        (b"   \n", "empty"),
        (b"not xml at all", "not well-formed"),
        (b"<a><b></a>", "not well-formed"),
        ("<a/>".encode("utf-16"), "UTF-8"),
    ],
)
def test_garbage_refused(data, words):
    assert words in refused(data).value
