"""``ill-node lending``: the lending staff workflows on the command line.

Works directly on the node's database through the service (no HTTP, no
running server needed): messages an action produces are queued in the
outbox and go out when the node runs.  Bad input gets one line on stderr and
exit status 1, never a traceback.

    ill-node lending list [--status S] [--q TEXT] [--barcode B] [--overdue] --config F
    ill-node lending show ID --config F
    ill-node lending act ID ACTION [key=value ...] --config F
    ill-node lending check-in BARCODE --config F
    ill-node lending pull-slip ID --config F > slip.html
    ill-node lending pull-slips --config F > slips.html
    ill-node lending closure [--on|--off] [--start D] [--end D] [--note T] --config F
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import re
import sys
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import closure_cli
from .serve_cli import load_or_report

if TYPE_CHECKING:
    from .service import Node

# The service, the store and the machine are imported where used (see node/cli.py).


class CliError(Exception):
    """One line for the user."""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("lending", help="lending requests: list, act, check in, slips")
    parser.fill_on_use(_add_actions)  # `act` lists the lending machine's staff actions


def _add_actions(parser: argparse.ArgumentParser) -> None:
    from .supplier.machine import STAFF_ACTIONS

    sub = parser.add_subparsers(dest="lending_command", metavar="ACTION", required=True)

    def add(name: str, help_text: str, func) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text)
        p.add_argument("--config", required=True, type=Path, help="the node's TOML file")
        p.add_argument("--by", "--user", dest="by", default=None,
                       help="staff name for the history (default: login)")
        p.set_defaults(func=lambda args: _run(func, args))
        return p

    p = add("list", "list and search lending requests", _list)
    p.add_argument("--status", help="e.g. WILL_SUPPLY, SHIPPED, OVERDUE")
    p.add_argument("--q", help="title, request id or patron id")
    p.add_argument("--barcode", help="located or shipped item barcode")
    p.add_argument("--partner", help="the borrower's symbol")
    p.add_argument("--overdue", action="store_true", help="loans past their due date")
    p.add_argument("--limit", type=int, default=50)
    p.add_argument("--json", action="store_true", help="print JSON")

    p = add("show", "one request with its history and protocol log", _show)
    p.add_argument("id")
    p.add_argument("--json", action="store_true", help="print JSON")

    p = add("act", "run a staff action: " + ", ".join(STAFF_ACTIONS), _act)
    p.add_argument("id")
    p.add_argument("action", help="one of " + ", ".join(STAFF_ACTIONS))
    p.add_argument("fields", nargs="*", metavar="key=value",
                   help="e.g. barcodes=B1,B2 due_date=2026-12-01 approve=true "
                        "charge=45.00:USD note='text'")

    p = add("check-in", "check in a returned item by its barcode", _check_in)
    p.add_argument("barcode")
    p.add_argument("--note")

    p = add("pull-slip", "print one request's pull slip (HTML) to stdout", _pull_slip)
    p.add_argument("id")

    add("pull-slips", "print the slips of every request waiting to be pulled", _pull_slips)

    p = add("closure", "show or set 'temporarily inactive for lending'", _closure)
    closure_cli.add_arguments(p, "lending")

def _run(func, args: argparse.Namespace) -> int:
    from sqlalchemy.exc import SQLAlchemyError

    from .machine import StaffActionError
    from .service import NotFound
    from .store import db

    config = load_or_report(args.config)
    if config is None:
        return 1
    try:
        return asyncio.run(_with_node(func, config, args))
    except CliError as exc:
        print(f"error: {exc}", file=sys.stderr)
    except StaffActionError as exc:
        print(f"not allowed: {exc}", file=sys.stderr)
    except NotFound as exc:
        print(f"not found: {exc}", file=sys.stderr)
    except (ValueError, KeyError) as exc:
        print(f"bad input: {exc}", file=sys.stderr)
    except db.NotMigrated as exc:
        print(f"database: {exc}", file=sys.stderr)
    except (SQLAlchemyError, OSError) as exc:
        print(f"database: {str(exc).splitlines()[0]}", file=sys.stderr)
    return 1


async def _with_node(func, config, args) -> int:
    from .service import Node
    from .store import db

    node = Node(config)
    node.engine = db.create_engine(config.node.database_url)
    try:
        await db.check_migrated(node.engine)
        return await func(node, args)
    finally:
        await node.engine.dispose()


def _actor(args) -> str:
    name = args.by
    if not name:
        try:
            name = getpass.getuser()
        except Exception:  # noqa: BLE001 - no login name in some containers
            name = "cli"
    return f"staff:{name}"


def _print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, default=str))


# -- commands ----------------------------------------------------------------------


async def _list(node: Node, args) -> int:
    from . import lending_ops

    found = await lending_ops.search(
        node, status=args.status, q=args.q, partner=args.partner, barcode=args.barcode,
        overdue=args.overdue, limit=max(1, min(args.limit, 500)))
    if args.json:
        _print_json(found)
        return 0
    for r in found["requests"]:
        flag = "*" if r["needs_attention"] else " "
        print(f"{flag} {r['id']:<14} {r['status']:<26} {r['partner'] or '':<18} "
              f"{r['requesting_request_id']:<20} {r['title'] or ''}")
    facets = ", ".join(f"{k} {v}" for k, v in sorted(found["facets"].items()))
    print(f"{found['total']} request(s)" + (f" ({facets})" if facets else ""))
    return 0


async def _show(node: Node, args) -> int:
    from .service import NotFound
    from .store import repo

    async with node.engine.connect() as conn:
        view = await repo.view_by_public_id(conn, "lending", args.id)
    if view is None:
        raise NotFound(f"no lending request {args.id}")
    if args.json:
        _print_json(view)
        return 0
    state = view["state"]
    req = state.get("request", {})
    located = state.get("located") or {}
    print(f"{view['id']}  {view['status']}  from {view['partner']} "
          f"(their id {view['requesting_request_id']})")
    print(f"  {req.get('service_type', '')}: {req.get('title') or '(no title)'}"
          + (f" / {req['author']}" if req.get("author") else ""))
    if located.get("barcode"):
        print(f"  located: {located.get('barcode')} {located.get('call_number') or ''} "
              f"{located.get('location') or ''}".rstrip())
    if state.get("shipped_barcodes"):
        print(f"  shipped: {', '.join(state['shipped_barcodes'])}, due {state.get('due_date')}")
    for note in state.get("unread") or ():
        print(f"  unread from partner ({note['action']}): {note['note']}")
    print("history:")
    for h in view["history"]:
        print(f"  {h['at'][:19]}  {h['actor']:<22} {h['event']:<24} {h.get('summary', '')}")
    print("messages:")
    for m in view.get("messages", []):
        what = m["action"] or m["status"] or m["kind"]
        arrow = "<-" if m["direction"] == "in" else "->"
        print(f"  {m['at'][:19]}  {arrow} {m['peer'] or '':<18} {m['kind']:<26} {what or ''}")
    for o in view.get("outbox", []):
        if o["state"] != "sent":
            print(f"  outbox {o['id']}: {o['kind']} {o['state']} "
                  f"(attempts {o['attempts']}){': ' + o['last_error'] if o['last_error'] else ''}")
    return 0


_DATE = re.compile(r"^\d{4}-\d\d-\d\d$")
_LISTS = {"barcodes", "conditions"}
_MONEY = {"charge", "cost"}


def parse_fields(action: str, pairs: list[str]) -> dict[str, Any]:
    """``key=value`` words to the action's JSON: lists (a,b), true/false, money (12.50:USD)."""
    from .supplier.machine import STAFF_ACTIONS

    cls = STAFF_ACTIONS.get(action)
    if cls is None:
        raise CliError(f"unknown action {action!r}; expected one of {', '.join(STAFF_ACTIONS)}")
    data: dict[str, Any] = {"action": action}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key:
            raise CliError(f"{pair!r}: expected key=value")
        if key in data:
            raise CliError(f"{key} given twice")
        if key in _LISTS:
            data[key] = [v.strip() for v in value.split(",") if v.strip()]
        elif key in _MONEY:
            amount, _, currency = value.partition(":")
            if not currency:
                raise CliError(f"{key}: give amount:CURRENCY, e.g. {key}=45.00:USD")
            data[key] = {"amount": amount.strip(), "currency": currency.strip().upper()}
        elif value.lower() in ("true", "yes", "y"):
            data[key] = True
        elif value.lower() in ("false", "no", "n"):
            data[key] = False
        else:
            if _DATE.match(value):
                try:
                    date.fromisoformat(value)
                except ValueError:
                    raise CliError(f"{key}: {value} is not a date") from None
            data[key] = value
    return data


async def _act(node: Node, args) -> int:
    data = parse_fields(args.action, args.fields)
    actor = _actor(args)
    data.setdefault("by", actor.removeprefix("staff:"))
    view = await node.staff_action("lending", args.id, data, actor=actor)
    mine = [h for h in view["history"] if h["actor"] == actor] or view["history"]
    print(f"{view['id']}: {view['status']} ({mine[-1].get('summary', '')})")
    return 0


async def _check_in(node: Node, args) -> int:
    from . import lending_ops

    view = await lending_ops.check_in_by_barcode(node, args.barcode, actor=_actor(args),
                                                 note=args.note)
    print(f"{view['id']}: {view['status']}: {args.barcode.strip()} checked in; "
          "LoanCompleted queued for the borrower")
    return 0


async def _pull_slip(node: Node, args) -> int:
    from . import lending_ops

    sys.stdout.write(await lending_ops.pull_slip(node, args.id))
    return 0


async def _pull_slips(node: Node, args) -> int:
    from . import lending_ops

    page, count = await lending_ops.pull_slips(node)
    sys.stdout.write(page)
    print(f"{count} slip(s)", file=sys.stderr)
    return 0


async def _closure(node: Node, args) -> int:
    return await closure_cli.run(node, "lending", args, actor=_actor(args))
