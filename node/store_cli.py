"""``ill-node migrate``: bring the database schema up to date."""

from __future__ import annotations

import argparse
import sys


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "migrate",
        help="create or upgrade the database schema",
        description="Run the database migrations up to the newest revision.",
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--config", metavar="FILE", help="node configuration (TOML)")
    source.add_argument(
        "--database",
        metavar="URL",
        help="database URL instead of a config file, e.g. sqlite+aiosqlite:///node.db",
    )
    parser.add_argument(
        "--revision", default="head", help=argparse.SUPPRESS
    )  # for development: migrate to a given revision
    parser.set_defaults(func=run_migrate)


def _database_url(args) -> str:
    if args.database:
        return args.database
    from node import config

    return config.load(args.config).node.database_url


def run_migrate(args) -> int:
    from node.store.db import migrate, safe_url

    try:
        url = _database_url(args)
    except Exception as exc:  # noqa: BLE001 - ConfigError and friends: a message, no traceback
        print(f"ill-node migrate: {exc}", file=sys.stderr)
        return 2
    try:
        revision = migrate(url, args.revision)
    except Exception as exc:  # noqa: BLE001 - reported on stderr with the exit code
        print(f"ill-node migrate: {safe_url(url)}: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    print(f"database at {safe_url(url)} is at revision {revision}")
    return 0
