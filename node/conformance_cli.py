"""``ill-node conformance``: run the ISO 18626 conformance checks against a peer."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("conformance",
                              help="run ISO 18626 conformance checks against a peer")
    p.fill_on_use(_add_arguments)  # the help lists the checks: imported when used
    p.set_defaults(func=cmd_conformance)


def _add_arguments(p: argparse.ArgumentParser) -> None:
    from .conformance.checks import CHECKS
    from .protocol.codes import Version

    p.description = (
        "Plays a partner library toward the peer under test and runs named checks. "
        "The peer must list --our-symbol as a partner at --public-url. Checks: "
        + ", ".join(CHECKS) + ". See docs/conformance.md."
    )
    p.add_argument("--peer-url", required=True, help="the peer's ISO 18626 endpoint")
    p.add_argument("--peer-symbol", required=True, help="the peer's agency id, TYPE:VALUE")
    p.add_argument("--our-symbol", default="ISIL:XX-CONFORMANCE",
                   help="the kit's agency id (default %(default)s)")
    p.add_argument("--listen", default="127.0.0.1:8099",
                   help="host:port of the kit's own endpoint (default %(default)s)")
    p.add_argument("--public-url", default=None,
                   help="how the peer reaches the kit (default http://LISTEN/iso18626)")
    p.add_argument("--peer-api", default=None,
                   help="ill-node staff API base URL (e.g. http://127.0.0.1:8080): lets the kit "
                   "ship, check in, and create borrowing requests on the peer")
    p.add_argument("--peer-kind", choices=("auto", "mock", "ill-node", "other"), default="auto",
                   help="how to drive the peer (default: detect)")
    p.add_argument("--scenario-hints", type=Path, default=None,
                   help="TOML: per-check request fields (e.g. an ISBN the peer holds), and "
                   "optionally iso18626_version, the default for --version")
    p.add_argument("--version", choices=[v.value for v in Version], default=None,
                   help="the ISO 18626 version the peer is configured to speak with the kit: "
                   "every message is sent in it and every answer must be in it (default: the "
                   "hints file's iso18626_version, else 1.2)")
    p.add_argument("--junit", type=Path, default=None, help="write JUnit XML here")
    p.add_argument("--json", type=Path, default=None, help="write the JSON report here")
    p.add_argument("--log-dir", type=Path, default=None,
                   help="write DIR/<check>.log with every message in and out")
    p.add_argument("--only", default=None, help="comma-separated check names")
    p.add_argument("--role", choices=("requester", "supplier", "both"), default="both",
                   help="the kit's role: requester (we borrow), supplier (we lend), or both")
    p.add_argument("--timeout", type=float, default=15.0,
                   help="seconds to wait for each message from the peer (default %(default)s)")
    p.add_argument("--settle", type=float, default=1.0,
                   help="seconds to watch for stray messages after an end (default %(default)s)")


def cmd_conformance(args: argparse.Namespace) -> int:
    from .conformance import KitConfig, json_report, junit_xml, load_hints, run_checks, write_logs
    from .protocol.codes import Version

    host, _, port = args.listen.rpartition(":")
    host = host.strip("[]") or "127.0.0.1"
    try:
        port_number = int(port)
    except ValueError:
        print(f"--listen must be HOST:PORT, not {args.listen!r}", file=sys.stderr)
        return 2
    hints, hinted_version = None, None
    if args.scenario_hints is not None:
        try:
            hints, hinted_version = load_hints(args.scenario_hints)
        except (OSError, ValueError) as exc:
            print(f"--scenario-hints: {exc}", file=sys.stderr)
            return 2
    version = Version(args.version) if args.version else hinted_version or Version.V1_2
    config = KitConfig(
        peer_url=args.peer_url, peer_symbol=args.peer_symbol, our_symbol=args.our_symbol,
        public_url=args.public_url or f"http://{host}:{port_number}/iso18626",
        peer_api=args.peer_api, peer_kind=args.peer_kind, hints=hints, timeout=args.timeout,
        settle=args.settle, version=version,
    )
    only = [n.strip() for n in args.only.split(",") if n.strip()] if args.only else None
    try:
        results = asyncio.run(run_checks(config, listen=(host, port_number), only=only,
                                         role=args.role, out=sys.stdout))
    except ValueError as exc:
        print(exc, file=sys.stderr)
        return 2
    if args.junit:
        args.junit.parent.mkdir(parents=True, exist_ok=True)
        args.junit.write_bytes(junit_xml(results, suite=f"iso18626-conformance {version.value}"))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_bytes(json_report(results, config))
    if args.log_dir:
        write_logs(results, args.log_dir)
        print(f"every message in and out: {args.log_dir}/<check>.log")
    return 1 if any(r.outcome in ("FAIL", "ERROR") for r in results) else 0
