"""``ill-node mock-peer``: a scriptable ISO 18626 peer (illmock's scenario language)."""

from __future__ import annotations

import argparse
import logging


def _split(text: str | None) -> frozenset[str]:
    return frozenset(p.strip() for p in (text or "").split(",") if p.strip())


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "mock-peer", help="run a scriptable ISO 18626 test peer (illmock scenarios)",
        description="A test peer that plays supplier or requester for any agency symbol. "
        "As supplier the scenario comes from a MOCK:<supplier>:<SCENARIO> token in "
        "serviceInfo/note or from supplierUniqueRecordId (LOANED, UNFILLED, WILLSUPPLY_LOANED, "
        "RETRY:COST_LOANED, ...); a PatronRequest makes it the requester (notes #CANCEL#, "
        "#RENEW#, #RECALL#). Every message is logged at GET /api/flows. See docs/conformance.md.",
    )
    p.fill_on_use(_add_arguments)  # the help lists the mock's quirks: imported when used
    p.set_defaults(func=cmd_mock_peer)


def _add_arguments(p: argparse.ArgumentParser) -> None:
    from .mockpeer.core import BREAKS, QUIRKS
    from .protocol.codes import Version

    p.add_argument("--listen", default="127.0.0.1:8081", help="host:port (default %(default)s)")
    p.add_argument("--peer-url", default=None,
                   help="where to send messages when the request names no http address "
                   "(default: this mock's own /iso18626)")
    p.add_argument("--delay", type=float, default=0.1,
                   help="seconds before each status/answer is sent (default %(default)s)")
    p.add_argument("--version", choices=["auto", *(v.value for v in Version)], default="auto",
                   help="the ISO 18626 version it writes: auto (default) answers each exchange "
                   "in the version it was begun in; 1.2 or 2021-2 always that one")
    p.add_argument("--quirks", default="",
                   help=f"comma-separated real-peer quirks to send: {', '.join(QUIRKS)}")
    p.add_argument("--break", dest="breaks", default="",
                   help="TEST ONLY: comma-separated deliberate misbehaviours, to see "
                   "conformance checks fail: " + ", ".join(BREAKS))


def cmd_mock_peer(args: argparse.Namespace) -> int:
    from aiohttp import web

    from .mockpeer.core import MockPeer
    from .mockpeer.server import MockServer
    from .protocol.codes import Version

    host, _, port = args.listen.rpartition(":")
    host = host.strip("[]") or "127.0.0.1"
    try:
        port_number = int(port)
    except ValueError:
        print(f"--listen must be HOST:PORT, not {args.listen!r}")
        return 2
    peer_url = args.peer_url or f"http://{host}:{port_number}/iso18626"
    try:
        core = MockPeer(peer_url=peer_url, quirks=_split(args.quirks), breaks=_split(args.breaks),
                        version=None if args.version == "auto" else Version(args.version))
    except ValueError as exc:
        print(exc)
        return 2
    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")
    server = MockServer(core, delay=args.delay)
    web.run_app(server.app(), host=host, port=port_number, access_log=None,
                print=lambda text: logging.getLogger("node.mockpeer").info(
                    "mock peer on http://%s:%s/iso18626 (peer URL %s); %s",
                    host, port_number, peer_url, text.strip().splitlines()[0] if text else ""))
    return 0
