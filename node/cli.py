"""The ``ill-node`` command line.

Each area of the node owns its subcommands in a module of its own that
exposes ``register(subparsers)``; this file only lists those modules, so
adding a command never means editing someone else's code.
"""

from __future__ import annotations

import argparse
import importlib
import sys

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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ill-node",
        description="A peer-to-peer interlibrary-loan node speaking ISO 18626.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
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
