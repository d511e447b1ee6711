"""``ill-node serve`` and ``ill-node init``: run a node, or make a new one.

At its top it imports only the standard library (see node/cli.py).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import secrets
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from aiohttp import web


def register(subparsers: argparse._SubParsersAction) -> None:
    serve = subparsers.add_parser("serve", help="run the node")
    serve.add_argument("--config", required=True, type=Path, help="the node's TOML file")
    # One of [node] processes, started by the parent (node/processes.py).
    serve.add_argument("--member", type=int, help=argparse.SUPPRESS)
    serve.set_defaults(func=cmd_serve)

    init = subparsers.add_parser("init", help="write a starter config and database in DIR")
    init.add_argument("dir", type=Path)
    init.add_argument("--symbol", default="ISIL:XX-NEW", help="our agency id, TYPE:VALUE")
    init.add_argument("--name", default="New Library")
    init.add_argument("--listen", default="127.0.0.1:8080", help="host:port")
    init.set_defaults(func=cmd_init)


def load_or_report(path: Path):
    """The config, or None after printing every problem in it."""
    from .config import ConfigError, load

    try:
        return load(path)
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return None
    except OSError as exc:
        print(f"{path}: cannot read: {exc.strerror}", file=sys.stderr)
        return None


def setup_logging(member: int | None = None) -> None:
    who = "%(name)s" if member is None else f"%(name)s[{member}]"  # which process said it
    # A line per message in and out: records carry what the format uses and no more
    # (the logging HOWTO's "Optimization"), not the caller's file and line (a walk up
    # the stack each), thread or process: 11-14 -> 9 us a line.
    logging._srcfile = None
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
    logging.basicConfig(
        level=logging.INFO, format=f"%(asctime)s %(levelname)s {who} %(message)s"
    )
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    logging.getLogger("apscheduler").setLevel(logging.WARNING)


def cmd_serve(args: argparse.Namespace) -> int:
    config = load_or_report(args.config)
    if config is None:
        return 1
    setup_logging(args.member)
    if config.node.processes > 1 and args.member is None:
        from .processes import supervise

        return supervise(args.config, config)
    from sqlalchemy.exc import DBAPIError

    from . import limits
    from .http import MEMBER, NODE, create_app
    from .service import Node
    from .store.db import NotMigrated, safe_url

    member = None
    if args.member is not None:
        from .processes import Member

        member = Member(args.member)
    worker_id = f"node{member.index}-{secrets.token_hex(4)}" if member is not None else None
    node = Node(config, worker_id=worker_id)
    app = create_app(config, node=node)
    app[MEMBER] = member

    async def on_startup(app: web.Application) -> None:
        loop = asyncio.get_running_loop()

        def reload() -> None:
            fresh = load_or_report(args.config)
            if fresh is not None:
                asyncio.ensure_future(app[NODE].reload(fresh))

        loop.add_signal_handler(signal.SIGHUP, reload)
        # Its default action would end the node.
        loop.add_signal_handler(signal.SIGUSR2, lambda: logging.getLogger("node").warning(
            "SIGUSR2 ignored: a rolling restart is for the parent process of a node "
            "with [node] processes of 2 or more"))
        quiet_garbage_collector()

    app.on_startup.append(on_startup)
    # HTTPS (and client certificates) from [node] tls_*; connection and
    # slow-client limits from [limits], re-read after a reload.
    try:
        limits.run(app, host=config.node.listen_host, port=config.node.listen_port,
                   ssl_context=node.server_tls.context if node.server_tls else None,
                   limits=lambda: app[NODE].config.limits,
                   print=lambda text: logging.getLogger("node").info(text),
                   reuse_port=member is not None,
                   started=member.started if member is not None else None)
    except NotMigrated as exc:
        # Node.start checks the schema before the port is opened.
        print(str(exc).replace("--config FILE", f"--config {args.config}"), file=sys.stderr)
        return 1
    except (OSError, DBAPIError) as exc:  # database unreachable, port taken, ...
        print(f"ill-node serve: cannot start: {_first_line(exc)}\n"
              f"  (database: {safe_url(config.node.database_url)}, listen: "
              f"{config.node.listen_host}:{config.node.listen_port}; config: {args.config})",
              file=sys.stderr)
        return 1
    return 0


def quiet_garbage_collector() -> None:
    """Once the node has started (cleanup_ctx runs before on_startup's later handlers):
    what exists now (modules, SQLAlchemy's compiled statements, the configuration)
    lives as long as the process, so the collector stops scanning it; and it runs
    less often.  A full collection of that heap took tens of milliseconds, the p99
    of inbound messages at 500/s (85 -> 32 ms; bench/RESULTS.md §1)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(10_000, 50, 100)


def _first_line(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", None) or exc).strip() or type(exc).__name__
    return text.splitlines()[0]


def cmd_init(args: argparse.Namespace) -> int:
    from .config import default_config_text
    from .store import db

    directory: Path = args.dir
    path = directory / "config.toml"
    if path.exists():
        print(f"{path} exists already: not overwritten", file=sys.stderr)
        return 1
    directory.mkdir(parents=True, exist_ok=True)
    host, _, port = args.listen.rpartition(":")
    path.write_text(default_config_text(
        symbol=args.symbol, name=args.name, listen=args.listen,
        public_url=f"http://{host}:{port}/iso18626",
    ))
    config = load_or_report(path)
    if config is None:
        return 1
    db.migrate(config.node.database_url)
    print(f"wrote {path} and its database; start the node with:")
    print(f"  ill-node serve --config {path}")
    return 0
