"""``ill-node staff add/list/remove`` and ``ill-node patron token``.

Staff accounts live in the configuration file as ``[[staff]]`` tables; only the
SHA-256 of a token is written there. ``staff add`` prints the token once.
A running node picks changes up on SIGHUP or ``POST /api/admin/reload``.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

_HEADER = re.compile(r"^\s*\[\[?\s*([A-Za-z0-9_.\"' -]+?)\s*\]\]?\s*(#.*)?$")


def register(subparsers: argparse._SubParsersAction) -> None:
    staff = subparsers.add_parser("staff", help="staff accounts and their API tokens")
    staff.fill_on_use(_add_staff_actions)  # --role lists the roles of node.config

    patron = subparsers.add_parser("patron", help="patron access to the patron API")
    psub = patron.add_subparsers(dest="patron_command", metavar="ACTION")
    tok = psub.add_parser("token", help="print the token of a patron (needs [node] patron_secret)")
    tok.add_argument("patron_id")
    tok.add_argument("--config", required=True, type=Path)
    tok.set_defaults(func=cmd_patron_token)


def _add_staff_actions(staff: argparse.ArgumentParser) -> None:
    from .config import STAFF_SIDES, StaffRole

    sub = staff.add_subparsers(dest="staff_command", metavar="ACTION")
    add = sub.add_parser("add", help="add an account; prints its token once")
    add.add_argument("name")
    add.add_argument("--role", required=True, choices=[r.value for r in StaffRole])
    add.add_argument("--sides", nargs="+", choices=STAFF_SIDES, metavar="SIDE",
                     help=f"the sides it may act on ({' and/or '.join(STAFF_SIDES)}; "
                     "default: both); it reads both")
    add.add_argument("--config", required=True, type=Path)
    add.set_defaults(func=cmd_add)
    lst = sub.add_parser("list", help="list the accounts")
    lst.add_argument("--config", required=True, type=Path)
    lst.set_defaults(func=cmd_list)
    rm = sub.add_parser("remove", help="remove an account (its token stops working on reload)")
    rm.add_argument("name")
    rm.add_argument("--config", required=True, type=Path)
    rm.set_defaults(func=cmd_remove)


def _load(path: Path):
    from .config import ConfigError, load

    try:
        return load(path)
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return None


def _staff_blocks(lines: list[str]) -> list[tuple[int, int]]:
    """(start, end) line ranges of the [[staff]] tables (end exclusive)."""
    blocks, start = [], None
    for i, line in enumerate(lines):
        m = _HEADER.match(line)
        if m is None:
            continue
        if start is not None:
            blocks.append((start, i))
            start = None
        if line.strip().startswith("[[") and m.group(1).strip() == "staff":
            start = i
    if start is not None:
        blocks.append((start, len(lines)))
    return blocks


def _write_checked(path: Path, text: str) -> bool:
    """Write ``text`` only if it still parses; keep the file's mode."""
    from .config import ConfigError, loads

    try:
        loads(text, source_path=path)
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        print(f"{path} not changed", file=sys.stderr)
        return False
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.chmod(path.stat().st_mode & 0o777)
    tmp.replace(path)
    return True


def cmd_add(args: argparse.Namespace) -> int:
    config = _load(args.config)
    if config is None:
        return 1
    if any(a.name.casefold() == args.name.strip().casefold() for a in config.staff):
        print(f"there is already a staff account named {args.name!r}", file=sys.stderr)
        return 1
    from .staff_auth import new_staff_token, token_sha256  # (it imports aiohttp)

    token = new_staff_token()
    sides = list(dict.fromkeys(args.sides or ()))
    text = args.config.read_text()
    if not text.endswith("\n"):
        text += "\n"
    text += (
        f"\n[[staff]]\nname = {json.dumps(args.name.strip())}  # added by ill-node staff add\n"
        f'role = "{args.role}"  # admin, staff or read-only\n'
        f'token_sha256 = "{token_sha256(token)}"  # SHA-256 of the token (the token is not stored)\n'
    )
    if sides:
        text += f"sides = {json.dumps(sides)}  # the sides it may act on (it reads both)\n"
    if not _write_checked(args.config, text):
        return 1
    only = f" (acting on {' and '.join(sides)} only)" if sides else ""
    print(f"added {args.role} account {args.name!r} to {args.config}{only}")
    print("its API token (shown only now; send it as 'Authorization: Bearer <token>'):")
    print(token)
    print("a running node picks it up on SIGHUP or POST /api/admin/reload")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    config = _load(args.config)
    if config is None:
        return 1
    if not config.staff:
        print("no staff accounts (the API answers only requests from this host)")
    for account in config.staff:
        state = "token set" if account.token_sha256 else "no token"
        print(f"{account.name}\t{account.role.value}\t{state}\t{', '.join(account.sides)}")
    return 0


def cmd_remove(args: argparse.Namespace) -> int:
    config = _load(args.config)
    if config is None:
        return 1
    lines = args.config.read_text().splitlines(keepends=True)
    blocks = _staff_blocks(lines)
    if len(blocks) != len(config.staff):
        print("cannot find the [[staff]] tables in the file; edit it by hand", file=sys.stderr)
        return 1
    for (start, end), account in zip(blocks, config.staff):
        if account.name.casefold() == args.name.strip().casefold():
            kept = lines[:start] + lines[end:]
            if not _write_checked(args.config, "".join(kept)):
                return 1
            print(f"removed staff account {account.name!r} from {args.config}")
            return 0
    print(f"no staff account named {args.name!r}", file=sys.stderr)
    return 1


def cmd_patron_token(args: argparse.Namespace) -> int:
    config = _load(args.config)
    if config is None:
        return 1
    if config.node.patron_secret is None:
        print("set [node] patron_secret (e.g. \"${ILL_PATRON_SECRET}\") first", file=sys.stderr)
        return 1
    from .staff_auth import patron_token

    print(patron_token(config.node.patron_secret, args.patron_id))
    return 0
