"""``ill-node holdings import``: load the library's holdings from CSV or MARCXML."""

from __future__ import annotations

import argparse
import asyncio
import sys
from datetime import datetime, timezone
from pathlib import Path

from .serve_cli import load_or_report


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("holdings", help="the library's holdings")
    sub = parser.add_subparsers(dest="holdings_command", metavar="ACTION", required=True)
    imp = sub.add_parser("import", help="load holdings from a CSV or MARCXML file")
    imp.add_argument("file", type=Path)
    imp.add_argument("--config", required=True, type=Path)
    imp.add_argument("--format", choices=("csv", "marcxml"),
                     help="default: from the file name (.csv, .xml/.marcxml)")
    mode = imp.add_mutually_exclusive_group()
    mode.add_argument("--replace", action="store_true",
                      help="the file is the whole catalogue: drop what is not in it")
    mode.add_argument("--merge", action="store_true",
                      help="add and update the records in the file, keep the rest (default)")
    imp.add_argument("--max-remove", type=_percent, default=20.0, metavar="PERCENT",
                     help="with --replace: refuse, changing nothing, when the file would "
                          "remove more than this share of the stored records, as a broken "
                          "or partial export would (default 20)")
    imp.set_defaults(func=cmd_import)


def _percent(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value <= 100:
        raise argparse.ArgumentTypeError(f"{text!r} is not a percentage from 0 to 100")
    return value


def cmd_import(args: argparse.Namespace) -> int:
    from .store import holdings_repo
    from .supplier import holdings

    config = load_or_report(args.config)
    if config is None:
        return 1
    try:
        data = args.file.read_bytes()
    except OSError as exc:
        print(f"{args.file}: cannot read: {exc.strerror}", file=sys.stderr)
        return 1
    fmt = args.format or ("csv" if args.file.suffix.lower() == ".csv" else "marcxml")
    if fmt == "csv":
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            print(f"{args.file}: not UTF-8 text ({exc})", file=sys.stderr)
            return 1
        report = holdings.parse_csv(text, config.holdings.csv_columns or None)
    else:
        report = holdings.parse_marcxml(data, config.holdings.marc_mapping or None)
    where = "line" if fmt == "csv" else "record"
    for position, reason in report.problems:
        print(f"{args.file}: {where} {position}: {reason}", file=sys.stderr)
    if not report.records:
        print(f"{args.file}: nothing to import", file=sys.stderr)
        return 1
    total, shown = len(report.records), [0]

    def progress(done: int) -> None:  # every tenth of a big file, for whoever watches
        if total >= 10 * holdings_repo.IMPORT_STEP and done * 10 // total > shown[0]:
            shown[0] = done * 10 // total
            print(f"{args.file}: {done} of {total} records", file=sys.stderr, flush=True)

    try:
        counts = asyncio.run(_store(config.node.database_url, report.records, args.replace,
                                    progress, args.max_remove / 100))
    except holdings_repo.TooManyRemoved as exc:
        print(f"{args.file}: not imported, nothing changed: {exc}. If the file is the whole "
              f"catalogue, run again with --max-remove "
              f"{min(100, int(100 * exc.removed / exc.stored) + 1)}.", file=sys.stderr)
        return 1
    removed = f", {counts['removed']} removed" if args.replace else ""
    print(f"{args.file}: imported {counts['records']} records with {counts['items']} items"
          f" ({'replacing' if args.replace else 'merged into'} the holdings:"
          f" {counts['written']} new or changed, {counts['records'] - counts['written']}"
          f" unchanged{removed}); {len(report.problems)} skipped")
    return 0


async def _store(url: str, records, replace: bool, progress, max_removed: float
                 ) -> dict[str, int]:
    from .store import db, holdings_repo

    engine = db.create_engine(url)
    try:
        await db.check_migrated(engine)
        # In steps, so that a node serving from the same SQLite file goes on meanwhile.
        counts = await holdings_repo.import_in_steps(
            engine, records, replace=replace, now=datetime.now(timezone.utc),
            progress=progress, max_removed=max_removed)
        # After the import's commits, so that a failing ANALYZE cannot undo them.
        async with engine.begin() as conn:
            await holdings_repo.analyze(conn)
        return counts
    finally:
        await engine.dispose()
