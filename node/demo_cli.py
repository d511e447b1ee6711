"""``ill-node demo``: three libraries on loopback and the stories our users live."""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="run three libraries on loopback and show a loan, a copy, a condition, "
             "a cancel and a closure",
        description="Start three libraries' nodes on 127.0.0.1 (free ports), load sample "
                    "holdings, and run the stories: a loan through a rota whose first lender "
                    "is closed, a copy, a condition accepted, a cancel and a borrowing "
                    "closure. Exits 0 only if every story ends as it should.",
    )
    parser.add_argument("--dir", type=Path, default=Path("demo-data"),
                        help="where the configs, databases and log go; recreated on each "
                             "run (default: ./demo-data)")
    parser.add_argument("--keep-running", action="store_true",
                        help="leave the nodes up afterwards, for the staff API, until Ctrl-C")
    parser.add_argument("--db", default="sqlite", metavar="sqlite|postgresql://USER@HOST/PREFIX",
                        help="sqlite (default: files in --dir) or a PostgreSQL URL whose "
                             "database name is a prefix: PREFIX_alpha, PREFIX_beta and "
                             "PREFIX_gamma are dropped and created afresh")
    parser.add_argument("--timeout", type=float, default=10.0,
                        help="seconds a step waits for a request to reach a state (default 10)")
    parser.set_defaults(func=cmd_demo)


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    try:
        return asyncio.run(run_demo(args.dir, keep_running=args.keep_running, database=args.db,
                                    timeout=args.timeout))
    except KeyboardInterrupt:
        return 130
