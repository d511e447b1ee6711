"""A fast stand-in peer for the benchmarks (a separate process on loopback).

Modes:

- ``--mode ok`` (default): every POST to /iso18626 gets an OK confirmation of
  the right kind at once (a canned template with the request id filled in: no
  full parse, so the peer costs little CPU on the shared cores).  It records
  the kind, the requestingAgencyRequestId and the status of each message.
- ``--mode bare``: the ceiling of the inbound benchmark: ``await request.read()``
  and a canned 700-byte requestConfirmation, nothing else.
- ``--mode unfilled --reply-to URL``: a lender (any supplying agency id) that
  confirms a Request OK and then sends a supplyingAgencyMessage Unfilled for it
  to URL.

GET /stats gives the counts as JSON; GET /received?kind=..&status=.. the ids.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import sys
import time
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path

from aiohttp import web

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from node.protocol import messages as m  # noqa: E402
from node.protocol import writer  # noqa: E402
from node.protocol.codes import (  # noqa: E402
    Action,
    Code,
    MessageStatus,
    ReasonForMessage,
    Status,
    Version,
)

_KIND = re.compile(rb"<(?:\w+:)?(request|supplyingAgencyMessage|requestingAgencyMessage)[\s>]")
_RARI = re.compile(rb"requestingAgencyRequestId>([^<]*)<")
_STATUS = re.compile(rb"<(?:\w+:)?status>([^<]*)<")
_SUPPLIER = re.compile(
    rb"supplyingAgencyId>\s*<(?:\w+:)?agencyIdType>([^<]*)</(?:\w+:)?agencyIdType>\s*"
    rb"<(?:\w+:)?agencyIdValue>([^<]*)<")
_REQUESTER = re.compile(
    rb"requestingAgencyId>\s*<(?:\w+:)?agencyIdType>([^<]*)</(?:\w+:)?agencyIdType>\s*"
    rb"<(?:\w+:)?agencyIdValue>([^<]*)<")
PLACEHOLDER = "RARI-PLACEHOLDER-0000"


def _templates() -> dict[bytes, bytes]:
    now = datetime.now(timezone.utc).replace(microsecond=0)
    ch = m.ConfirmationHeader(
        supplying_agency_id=m.AgencyId.parse("ISIL:XX-PEER"),
        requesting_agency_id=m.AgencyId.parse("ISIL:XX-NODE"),
        timestamp=now, timestamp_received=now, requesting_agency_request_id=PLACEHOLDER,
        message_status=MessageStatus.OK)
    confs = {
        b"request": m.RequestConfirmation(confirmation_header=ch),
        b"supplyingAgencyMessage": m.SupplyingAgencyMessageConfirmation(
            confirmation_header=ch, reason_for_message=ReasonForMessage.REQUEST_RESPONSE),
        b"requestingAgencyMessage": m.RequestingAgencyMessageConfirmation(
            confirmation_header=ch, action=Action.RECEIVED),
    }
    return {k: writer.serialise(m.Envelope(version=Version.V1_2, message=c))
            for k, c in confs.items()}


TEMPLATES = _templates()
BARE = TEMPLATES[b"request"]


class Recorder:
    def __init__(self, mode: str, reply_to: str | None, delay: float):
        self.mode = mode
        self.reply_to = reply_to
        self.delay = delay
        self.kinds: Counter[str] = Counter()
        self.statuses: Counter[str] = Counter()
        self.ids: dict[str, list[str]] = {}
        self.first_at: float | None = None
        self.last_at: float | None = None
        self.sent = 0
        self.send_errors = 0
        self.refused = 0
        self.last_refusal = ""
        self.last_answer_at = None
        self.session = None
        self.tasks: set[asyncio.Task] = set()

    async def bare(self, request: web.Request) -> web.Response:
        await request.read()
        return web.Response(body=BARE, content_type="application/xml", charset="utf-8")

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        now = time.perf_counter()
        self.first_at = self.first_at or now
        self.last_at = now
        km = _KIND.search(body)
        kind = km.group(1) if km else b"request"
        rm = _RARI.search(body)
        rari = rm.group(1) if rm else b""
        status = ""
        if kind == b"supplyingAgencyMessage":
            sm = _STATUS.search(body)
            status = sm.group(1).decode() if sm else ""
        key = kind.decode() + (":" + status if status else "")
        self.kinds[kind.decode()] += 1
        self.statuses[key] += 1
        self.ids.setdefault(key, []).append(rari.decode())
        if self.mode == "unfilled" and kind == b"request":
            task = asyncio.create_task(self.send_unfilled(body))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)
        return web.Response(body=TEMPLATES[kind].replace(PLACEHOLDER.encode(), rari),
                            content_type="application/xml", charset="utf-8")

    async def send_unfilled(self, body: bytes) -> None:
        import aiohttp

        if self.delay:
            await asyncio.sleep(self.delay)
        sup = _SUPPLIER.search(body)
        req = _REQUESTER.search(body)
        rari = _RARI.search(body).group(1).decode()
        now = datetime.now(timezone.utc).replace(microsecond=0)
        msg = m.SupplyingAgencyMessage(
            header=m.Header(
                supplying_agency_id=m.AgencyId(type=Code(sup.group(1).decode()),
                                               value=sup.group(2).decode()),
                requesting_agency_id=m.AgencyId(type=Code(req.group(1).decode()),
                                                value=req.group(2).decode()),
                timestamp=now, requesting_agency_request_id=rari),
            message_info=m.MessageInfo(reason_for_message=ReasonForMessage.REQUEST_RESPONSE,
                                       reason_unfilled=Code("NotHeld")),
            status_info=m.StatusInfo(status=Status.UNFILLED, last_change=now),
        )
        data = writer.serialise(m.Envelope(version=Version.V1_2, message=msg))
        if self.session is None:
            self.session = aiohttp.ClientSession()
        for _ in range(50):
            try:
                async with self.session.post(
                        self.reply_to, data=data,
                        headers={"Content-Type": "application/xml; charset=utf-8"}) as resp:
                    answer = await resp.read()
                    if resp.status == 200 and b"messageStatus>OK<" in answer:
                        self.sent += 1
                        self.last_answer_at = time.time()
                        return
                    if resp.status == 200:  # an ERROR confirmation: a business answer
                        self.refused += 1
                        self.last_answer_at = time.time()
                        self.last_refusal = answer.decode("utf-8", "replace")
                        return
            except Exception:
                pass
            self.send_errors += 1
            await asyncio.sleep(0.05)

    async def stats(self, request: web.Request) -> web.Response:
        return web.json_response({
            "kinds": dict(self.kinds), "statuses": dict(self.statuses),
            "unique": {k: len(set(v)) for k, v in self.ids.items()},
            "first_at": self.first_at, "last_at": self.last_at,
            "sent": self.sent, "send_errors": self.send_errors, "refused": self.refused,
            "last_refusal": self.last_refusal, "last_answer_at": self.last_answer_at,
        })

    async def received(self, request: web.Request) -> web.Response:
        key = request.query.get("key", "")
        return web.json_response(self.ids.get(key, []))

    async def reset(self, request: web.Request) -> web.Response:
        self.kinds.clear()
        self.statuses.clear()
        self.ids.clear()
        self.first_at = self.last_at = None
        self.sent = self.send_errors = 0
        return web.json_response({"reset": True})


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--mode", choices=("ok", "bare", "unfilled"), default="ok")
    ap.add_argument("--reply-to", help="unfilled mode: the borrower's /iso18626")
    ap.add_argument("--delay", type=float, default=0.0, help="unfilled: wait before answering")
    args = ap.parse_args()
    rec = Recorder(args.mode, args.reply_to, args.delay)
    app = web.Application()
    app.router.add_post("/iso18626", rec.bare if args.mode == "bare" else rec.handle)
    app.router.add_get("/stats", rec.stats)
    app.router.add_get("/received", rec.received)
    app.router.add_post("/reset", rec.reset)
    web.run_app(app, host="127.0.0.1", port=args.port, access_log=None, print=None)


if __name__ == "__main__":
    main()
