"""``ill-node check-config FILE``: parse a configuration and report on it."""

from __future__ import annotations

import argparse
import sys
from datetime import date
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from node.config import NodeConfig


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "check-config",
        help="check a configuration file",
        description=(
            "Parse a configuration file. Prints 'FILE: ok' and a summary and exits 0, "
            "or prints every problem found (FILE:LINE: KEY: MESSAGE) and exits 1."
        ),
    )
    parser.add_argument("file", metavar="FILE", help="the TOML configuration file")
    parser.add_argument(
        "--on",
        metavar="YYYY-MM-DD",
        type=date.fromisoformat,
        default=None,
        help="judge closures as of this day (default: today)",
    )
    parser.set_defaults(func=check_config)


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def summary(config: NodeConfig, day: date) -> str:
    """One line: symbol, partner and rota counts, closures in effect on ``day``."""
    closures = []
    for kind, closure in (
        ("Lending", config.lending.closure),
        ("Borrowing", config.borrowing.closure),
    ):
        if closure.applies_on(day):
            closures.append(closure.describe(kind))
        elif closure.active and closure.start is not None and day < closure.start:
            closures.append(f"scheduled: {closure.describe(kind)}")
    return (
        f"{config.node.symbol} ({config.node.name}), "
        f"{_plural(len(config.partners), 'partner')}, {_plural(len(config.rotas), 'rota')}, "
        f"closures in effect: {'; '.join(closures) if closures else 'none'}"
    )


def check_config(args: argparse.Namespace) -> int:
    from node.config import ConfigError, load, security_warnings

    try:
        config = load(args.file)
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return 1
    print(f"{args.file}: ok")
    print(summary(config, args.on or date.today()))
    for warning in security_warnings(config):
        print(f"{args.file}: warning: {warning}", file=sys.stderr)
    return 0
