"""The ``ill-node`` command line.

Each area of the node owns its subcommands in a module of its own that
exposes ``register(subparsers)``; this file only lists those modules, so
adding a command never means editing someone else's code.

Every command module is imported to build the parser, for ``--help`` and
for every command, ``serve`` included, so registering must be cheap: a command
module imports the standard library at its top and what a command needs when
it runs.  Arguments whose help needs an expensive import (the mock peer's
quirks, the conformance checks) are added by ``parser.fill_on_use(add)``, when
that command is parsed or its help printed.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable

# Modules contributing subcommands, each with ``register(subparsers)``.
# A registered parser sets ``func`` (taking the parsed args, returning an exit code).
COMMAND_MODULES = [
    "node.serve_cli",
    "node.holdings_cli",
    "node.lending_cli",
    "node.config_cli",
    "node.store_cli",
    "node.protocol.cli",
    "node.borrowing_cli",
    "node.mockpeer_cli",
    "node.conformance_cli",
    "node.demo_cli",
    "node.keys_cli",
    "node.staff_cli",
]


class CommandParser(argparse.ArgumentParser):
    """A command's parser; ``fill_on_use(add)`` runs ``add(parser)`` only when the
    command is parsed or its help printed."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._fill: list[Callable[[argparse.ArgumentParser], None]] = []

    def fill_on_use(self, add: Callable[[argparse.ArgumentParser], None]) -> None:
        self._fill.append(add)

    def _filled(self) -> None:
        while self._fill:
            self._fill.pop(0)(self)

    def parse_known_args(self, args=None, namespace=None):
        self._filled()
        return super().parse_known_args(args, namespace)

    def format_help(self) -> str:
        self._filled()
        return super().format_help()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ill-node",
        description="A peer-to-peer interlibrary-loan node speaking ISO 18626.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND",
                                       parser_class=CommandParser)
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
