"""``ill-node borrowing``: the borrowing desk on the command line.

Works on the node's database through the service object (no server needed):
messages it creates go to the outbox, and the running node's outbox worker
sends them (it polls).  Every command takes ``--config FILE``; bad input is one
line on stderr and exit code 1, never a traceback.

    ill-node borrowing create --config F title="Moby Dick" patron_id=P-1 pickup_location=MAIN
    ill-node borrowing list --config F [--status on_loan] [--q moby]
    ill-node borrowing show --config F B-7K3M9Q2X
    ill-node borrowing act --config F B-7K3M9Q2X renew due_date=2027-01-31
    ill-node borrowing receive --config F B-7K3M9Q2X TMP-1 TMP-2   (or --lender-id L-123)
    ill-node borrowing return --config F TMP-1
    ill-node borrowing closure --config F --on --start 2026-12-20 --end 2027-01-05 --note Inventory
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from . import closure_cli
from .serve_cli import load_or_report

PROG = "ill-node borrowing"

# staff action fields that take a list, a yes/no or a number on the command line
_LIST_FIELDS = {"barcodes", "partners"}
_BOOL_FIELDS = {"accept", "notify_patron", "in_transit"}
_INT_FIELDS = {"position"}
_TRUE = {"true", "yes", "y", "1", "on"}
_FALSE = {"false", "no", "n", "0", "off"}


class CliError(Exception):
    """A one-line problem to report."""


class _Parser(argparse.ArgumentParser):
    """Usage mistakes are bad input too: one line and exit code 1."""

    def error(self, message: str):  # type: ignore[override]
        print(f"{self.prog}: {message}", file=sys.stderr)
        raise SystemExit(1)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("borrowing", help="borrowing requests (the borrowing desk)",
                                   description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="borrowing_command", metavar="ACTION", required=True,
                                parser_class=_Parser)

    def command(name: str, help: str, func: Callable) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help)
        p.add_argument("--config", required=True, type=Path, metavar="FILE",
                       help="node configuration (TOML)")
        p.add_argument("--by", "--user", dest="user", default="cli",
                       help="staff name for the history (default cli)")
        p.set_defaults(func=lambda args: _run(args, func))
        return p

    p = command("create", "create a request from form fields", _create)
    p.add_argument("fields", nargs="*", metavar="FIELD=VALUE",
                   help="form fields: title, author, isbn, issn, oclc, patron_id, "
                        "pickup_location, format (physical|digital), needed_by, max_fee, "
                        "currency, copyright_agreed, service_level, note, partners (a,b), "
                        "rota, ...")
    p = command("list", "list and search requests", _list)
    p.add_argument("--status", help="only requests in this status (e.g. on_loan)")
    p.add_argument("--q", help="title words, patron id, our id or the lender's id")
    p.add_argument("--partner", help="only requests with this lender")
    p.add_argument("--attention", action="store_true", help="only requests needing attention")
    p.add_argument("--limit", type=int, default=50)
    p.add_argument("--json", action="store_true", help="print JSON")
    p = command("show", "show one request: rota, history, messages", _show)
    p.add_argument("id")
    p.add_argument("--json", action="store_true", help="print JSON")
    p = command("act", "run a staff action on a request", _act)
    p.add_argument("id")
    p.add_argument("action", help="receive, on_hold, loan_to_patron, patron_return, "
                                  "return_to_partner, renew, cancel, cancel_partner, "
                                  "condition_answer, message, note, lost, rerequest, rota_move, "
                                  "rota_add, rota_remove, status_request, mark_read")
    p.add_argument("fields", nargs="*", metavar="FIELD=VALUE")
    p = command("receive", "receive the item(s): one temporary barcode per volume", _receive)
    p.add_argument("id", help="our request id (or the lender's, with --lender-id)")
    p.add_argument("barcodes", nargs="+", metavar="BARCODE")
    p.add_argument("--lender-id", action="store_true",
                   help="ID is the lender's request id (the external identifier)")
    p.add_argument("--in-transit", action="store_true",
                   help="the item goes to the pickup location first (not on hold yet)")
    p = command("return", "scan a temporary barcode: send the item back to its lender",
                _return)
    p.add_argument("barcode")
    p = command("closure", "show or set 'temporarily inactive for borrowing'", _closure)
    closure_cli.add_arguments(p, "borrowing")


# -- running a command --------------------------------------------------------------


def _run(args: argparse.Namespace, func: Callable[..., Awaitable[int]]) -> int:
    from .borrower.form import FormError
    from .machine import StaffActionError

    config = load_or_report(args.config)
    if config is None:
        return 1
    try:
        return asyncio.run(_with_node(config, args, func))
    except FormError as exc:
        for name, message in exc.problems.items():
            print(f"{name}: {message}", file=sys.stderr)
        return 1
    except (CliError, StaffActionError, ValueError, KeyError) as exc:
        print(f"{PROG}: {_one_line(exc)}", file=sys.stderr)
        return 1
    except Exception as exc:  # noqa: BLE001 - NotFound, NotMigrated, database down: one line
        name = type(exc).__name__
        text = _one_line(exc)
        print(f"{PROG}: {text}" if name in ("NotFound", "NotMigrated") else
              f"{PROG}: {name}: {text}", file=sys.stderr)
        return 1


def _one_line(exc: BaseException) -> str:
    text = str(exc.args[0]) if isinstance(exc, KeyError) and exc.args else str(exc)
    return " ".join(text.split()) or type(exc).__name__


async def _with_node(config, args, func) -> int:
    from .service import Node
    from .store import db

    node = Node(config)
    node.engine = db.create_engine(config.node.database_url)
    try:
        await db.check_migrated(node.engine)
        return await func(node, args, f"staff:{args.user}")
    finally:
        await node.engine.dispose()


def _pairs(items: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise CliError(f"{item!r}: expected FIELD=VALUE")
        if key in out:
            raise CliError(f"{key} is given twice")
        out[key] = value
    return out


def _split(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


# -- commands ---------------------------------------------------------------------------


async def _create(node, args, actor: str) -> int:
    data: dict[str, Any] = dict(_pairs(args.fields))
    if "identifiers" in data:
        pairs = []
        for item in _split(data["identifiers"]):
            code, sep, value = item.partition(":")
            if not sep:
                raise CliError(f"identifiers: {item!r} should be CODE:VALUE, e.g. LCCN:2001012345")
            pairs.append({"code": code, "value": value})
        data["identifiers"] = pairs
    view = await node.create_borrowing(data, actor=actor)
    print(view["id"])
    for h in view["history"]:
        if h["event"] == "possible_duplicate":
            print(f"warning: {h.get('summary')}", file=sys.stderr)
    print(f"{view['status']}" + (f" with {view['partner']}" if view.get("partner") else ""),
          file=sys.stderr)
    return 0


async def _list(node, args, actor: str) -> int:
    from .store import repo

    async with node.engine.connect() as conn:
        found = await repo.search(conn, "borrowing", status=args.status, q=args.q,
                                  partner=args.partner,
                                  needs_attention=True if args.attention else None,
                                  limit=max(1, min(args.limit, 500)))
    if args.json:
        print(json.dumps(found, default=str, indent=2))
        return 0
    for r in found["requests"]:
        flag = "!" if r["needs_attention"] else " "
        print(f"{flag} {r['id']:<12} {r['status']:<20} {r['partner'] or '-':<22} "
              f"{r['patron_id'] or '-':<12} {r['title'] or ''}")
    facets = ", ".join(f"{k} {v}" for k, v in sorted(found["facets"].items()))
    print(f"{found['total']} request(s)" + (f" ({facets})" if facets else ""))
    return 0


async def _show(node, args, actor: str) -> int:
    from .service import NotFound
    from .store import repo

    async with node.engine.connect() as conn:
        view = await repo.view_by_public_id(conn, "borrowing", args.id)
    if view is None:
        raise NotFound(f"no borrowing request {args.id}")
    if args.json:
        print(json.dumps(view, default=str, indent=2))
        return 0
    _print_view(view)
    return 0


def _print_view(view: dict[str, Any]) -> None:
    state = view.get("state") or {}
    print(f"{view['id']}  {view['status']}" + ("  (needs attention)" if view["needs_attention"]
                                              else ""))
    print(f"  title:   {view.get('title') or '-'}")
    print(f"  patron:  {view.get('patron_id') or '-'}")
    print(f"  lender:  {view.get('partner') or '-'}"
          + (f" (their id {view['supplying_request_id']})" if view.get("supplying_request_id")
             else ""))
    if state.get("due_date"):
        print(f"  due:     {state['due_date'][:10]}")
    if state.get("barcodes"):
        print(f"  items:   {', '.join(state['barcodes'])}")
    if state.get("end_reason"):
        print(f"  ended:   {state['end_reason']}")
    if state.get("rota"):
        print("  rota:")
        for i, e in enumerate(state["rota"], 1):
            note = f" - {e['note']}" if e.get("note") else ""
            print(f"    {i}. {e['symbol']} [{e['state']}]{note}")
    print("  history:")
    for h in view.get("history", []):
        print(f"    {h['at'][:19]} {h['actor']}: {h.get('summary') or h['event']}")


async def _act(node, args, actor: str) -> int:
    action: dict[str, Any] = {"action": args.action}
    for key, value in _pairs(args.fields).items():
        if key in _LIST_FIELDS:
            action[key] = _split(value)
        elif key in _BOOL_FIELDS:
            if value.strip().casefold() not in _TRUE | _FALSE:
                raise CliError(f"{key} must be yes or no, not {value!r}")
            action[key] = value.strip().casefold() in _TRUE
        elif key in _INT_FIELDS:
            try:
                action[key] = int(value)
            except ValueError:
                raise CliError(f"{key} must be a whole number, not {value!r}") from None
        else:
            action[key] = value
    view = await node.staff_action("borrowing", args.id, action, actor=actor)
    print(f"{view['id']} {view['status']}" + (f" with {view['partner']}"
                                              if view.get("partner") else ""))
    return 0


async def _receive(node, args, actor: str) -> int:
    from . import borrowing_ops

    ids = {"lender_request_id": args.id} if args.lender_id else {"request_id": args.id}
    view = await borrowing_ops.receive(node, barcodes=args.barcodes, actor=actor,
                                       in_transit=args.in_transit, **ids)
    print(f"{view['id']} {view['status']}: received {', '.join(view['state']['barcodes'])}")
    return 0


async def _return(node, args, actor: str) -> int:
    from . import borrowing_ops

    view = await borrowing_ops.return_by_barcode(node, args.barcode, actor=actor)
    dest = view["destination"]
    name = f" ({dest['name']})" if dest.get("name") else ""
    print(f"{view['id']} {view['status']}: the item's destination is {dest['symbol']}{name}")
    return 0


async def _closure(node, args, actor: str) -> int:
    return await closure_cli.run(node, "borrowing", args, actor=actor)
