"""``ill-node lending closure`` and ``ill-node borrowing closure``: one command, two sides.

'Temporarily inactive for lending / borrowing' (the Alma term): a flag plus an
optional date range. Options not given keep their current value, so
``--on`` alone reopens nothing and ``--note`` alone only changes the note.
"""

from __future__ import annotations

import argparse
from datetime import date


def add_arguments(parser: argparse.ArgumentParser, kind: str) -> None:
    onoff = parser.add_mutually_exclusive_group()
    onoff.add_argument("--on", dest="active", action="store_const", const=True,
                       help=f"suspend {kind}")
    onoff.add_argument("--off", dest="active", action="store_const", const=False,
                       help=f"{kind} open again (clears the dates)")
    parser.add_argument("--start", help="first closed day, YYYY-MM-DD")
    parser.add_argument("--end", help="last closed day, YYYY-MM-DD (inclusive)")
    parser.add_argument("--note", help="added to what partners and patrons are told")


def _day(value: str | None, option: str) -> date | None:
    if value in (None, ""):
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise ValueError(f"--{option} must be a date like 2026-12-20, not {value!r}") from None


async def run(node, kind: str, args: argparse.Namespace, *, actor: str) -> int:
    """Show the closure of ``kind`` ('lending' or 'borrowing'), changing it first if asked."""
    from .config import Closure
    from .store import repo

    async with node.engine.begin() as conn:
        current = await repo.closure(conn, kind, node.config)
        if args.active is not None or args.start or args.end or args.note is not None:
            active = current.active if args.active is None else args.active
            start = current.start if args.start is None else _day(args.start, "start")
            end = current.end if args.end is None else _day(args.end, "end")
            if args.active is False and args.start is None and args.end is None:
                start = end = None
            if Closure(active=active, start=start, end=end).range_problem():
                raise ValueError(f"--end {end} is before --start {start}")
            note = current.note if args.note is None else args.note
            await repo.set_closure(conn, kind, active=active, start=start, end=end,
                                   note=note, actor=actor, now=node.clock())
            current = await repo.closure(conn, kind, node.config)
    if not current.active:
        print(f"{kind}: open for {kind}")
        return 0
    state = "in effect now" if current.applies_on(node.clock().date()) else (
        "set, not in effect today")
    print(f"{kind}: {state}: {current.describe(kind.capitalize())}"
          + (f" ({current.note})" if current.note else ""))
    return 0
