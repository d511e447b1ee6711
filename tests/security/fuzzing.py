"""Hostile input for a real node: valid ISO 18626 messages, mutated (hypothesis).

Shared by tests/security/test_fuzz.py (short, in CI) and bench/fuzz.py (long).
A :class:`LiveNode` runs one node (a tests.harness Network) in an event loop
on its own thread, so hypothesis can drive it from plain synchronous code.
"""

from __future__ import annotations

import asyncio
import threading
import urllib.error
import urllib.request
from datetime import datetime, timezone
from pathlib import Path

from hypothesis import strategies as st
from lxml import etree

from node.protocol import reader
from node.protocol.codes import Action, MessageStatus, ReasonForMessage, Status, Version
from node.protocol.messages import (
    Envelope,
    MessageInfo,
    StatusInfo,
    SupplyingAgencyMessage,
)
from tests import builders
from tests.harness import Network
from tests.security.support import counts, load_holdings, serialise

PEER = "ISIL:XX-PEER"
SECRET = "fuzz-secret"
GOOD = {"Content-Type": "application/xml; charset=utf-8", "X-ILL-Secret": SECRET}
ALLOWED = {200, 400, 401, 408, 413, 415, 429}


class LiveNode:
    """One node on loopback, in a background event loop."""

    def __init__(self, directory: Path, database_urls):
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.net = Network(directory, database_urls)
        self.lib = self.net.add("target", sections=(
            "[limits]\npartner_requests_per_minute = 1000000\n"
            # No retries: the outbox's back-off jitter would use the random module
            # while hypothesis draws (its replay checks would call that flaky).
            "[outbox]\nmax_attempts = 1\npoll_seconds = 0.05\ntimeout_seconds = 2\n"))
        # A real peer answering OK: the outbox empties quietly, without
        # background history rows that would blur the before/after counts.
        from tests.peer import Peer

        self.peer = Peer(PEER)
        self.call(self.peer.start())
        self.net.add_peer(PEER, self.peer.endpoint)
        self.lib.partner_auth[PEER] = ('[partners.auth.incoming]\nheader_name = "X-ILL-Secret"\n'
                                       f'header_value = "{SECRET}"\n')
        self.call(self.net.start())
        self.call(load_holdings(self.lib))

    def call(self, coro, timeout: float = 60):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def counts(self) -> dict[str, int]:
        return self.call(counts(self.lib))

    def post(self, body: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
        req = urllib.request.Request(self.lib.endpoint, data=body, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                return resp.status, resp.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    def close(self) -> None:
        try:
            self.call(self.net.stop())
            self.call(self.peer.stop())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)


# -- valid messages -------------------------------------------------------------------------


def bases(symbol: str) -> list[bytes]:
    now = datetime.now(timezone.utc).replace(microsecond=0)
    out = []
    for version in (Version.V1_2, Version.V2021_2):
        out.append(serialise(builders.request(PEER, symbol, "FUZZ-1", title="The Brothers Karamazov",
                                              isbn="9780140449242", version=version)))
        out.append(serialise(builders.action(PEER, symbol, "FUZZ-1", Action.STATUS_REQUEST,
                                             note="hello", version=version)))
        out.append(serialise(Envelope(version=version, message=SupplyingAgencyMessage(
            header=builders.header(symbol, PEER, "B-NOPE-1"),
            message_info=MessageInfo(reason_for_message=ReasonForMessage.STATUS_CHANGE),
            status_info=StatusInfo(status=Status.LOANED, last_change=now)))))
    return out


# -- mutations --------------------------------------------------------------------------------

NASTY_TEXT = st.one_of(
    st.text(max_size=40),
    st.sampled_from(["", " ", "\x00", "]]>", "&amp;", "&unknown;", "<x/>", "ISIL:", ":", "9" * 400,
                     "2026-13-45T99:99:99Z", "-1", "NaN", "ISIL:XX-PEER", "ISIL:XX-TARGET",
                     "\ud7ff\ue000", "A" * 5000]),
)


def _elements(root) -> list:
    return [e for e in root.iter() if isinstance(e.tag, str)]


@st.composite
def mutated(draw, base: bytes) -> tuple[str, bytes]:
    kind = draw(st.sampled_from(["flip", "drop", "duplicate", "value", "encoding", "truncate",
                                 "insert", "none"]))
    if kind == "flip":
        data = bytearray(base)
        for _ in range(draw(st.integers(1, 8))):
            i = draw(st.integers(0, len(data) - 1))
            data[i] = draw(st.integers(0, 255))
        return kind, bytes(data)
    if kind == "truncate":
        return kind, base[: draw(st.integers(0, len(base) - 1))]
    if kind == "insert":
        i = draw(st.integers(0, len(base)))
        junk = draw(st.sampled_from([b"<", b"<!DOCTYPE x [<!ENTITY a 'b'>]>", b"&a;", b"\xff\xfe",
                                     b"<a>" * 100, b"\x00", b"]]>"]))
        return kind, base[:i] + junk + base[i:]
    if kind == "none":
        return kind, base
    root = etree.fromstring(base)
    elements = _elements(root)
    target = elements[draw(st.integers(0, len(elements) - 1))]
    if kind == "drop" and target is not root:
        target.getparent().remove(target)
    elif kind == "duplicate" and target is not root:
        target.addnext(etree.fromstring(etree.tostring(target)))
    elif kind == "value":
        text = draw(NASTY_TEXT)
        try:
            target.text = text
        except ValueError:  # not XML-compatible: put it in as raw bytes instead
            raw = etree.tostring(root)
            return kind, raw.replace(b"FUZZ-1", text.encode("utf-8", "surrogatepass"), 1)
    elif kind == "encoding":
        encoding = draw(st.sampled_from(["utf-16", "utf-16-le", "latin-1", "utf-32", "cp1252"]))
        declare = draw(st.booleans())
        try:
            return kind, etree.tostring(root, encoding=encoding, xml_declaration=declare)
        except (LookupError, ValueError):
            return kind, etree.tostring(root)
    return kind, etree.tostring(root, xml_declaration=True, encoding="UTF-8")


def headers_strategy():
    return st.sampled_from([
        GOOD, GOOD, GOOD, GOOD,
        {"Content-Type": "text/xml", "X-ILL-Secret": SECRET},
        {"Content-Type": "application/xml"},  # no secret: 401
        {"Content-Type": "application/xml", "X-ILL-Secret": SECRET + "x"},
        {"Content-Type": "application/json", "X-ILL-Secret": SECRET},
    ])


def check(node: LiveNode, body: bytes, headers: dict[str, str]) -> None:
    """Post one message; the node must answer sanely and a refusal must change nothing."""
    before = node.counts()
    status, answer = node.post(body, headers)
    assert status in ALLOWED, (status, answer[:300])
    after = node.counts()
    refused = status != 200
    if status == 200:
        conf = reader.parse(answer).message  # always a confirmation we can read
        refused = conf.confirmation_header.message_status is MessageStatus.ERROR
    if refused:
        assert after == before, (status, answer[:300], before, after)
    if headers.get("X-ILL-Secret") != SECRET and headers.get("Content-Type", "").endswith("xml"):
        assert status in (400, 401, 413) or (
            status == 200 and conf.confirmation_header.message_status is MessageStatus.ERROR
        ), (status, answer[:300])
