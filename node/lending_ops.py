"""Lending staff operations shared by the HTTP API and the command line.

Each takes a :class:`node.service.Node` (its engine, config and clock) and
uses the service for anything that changes a request, so a scan-driven
check-in is the same transaction, history and outbox row as the check-in
action on the request page.
"""

from __future__ import annotations

from typing import Any

from .machine import StaffActionError
from .service import NotFound
from .store import lending_repo, repo
from .supplier import pullslip
from .supplier.machine import LendingTransaction


def _partner_name(node, symbol: str | None) -> str | None:
    partner = node.config.partner(symbol) if symbol else None
    return partner.name if partner is not None else None


async def pull_slip(node, public_id: str) -> str:
    """The printable pull slip of one lending request (HTML page)."""
    async with node.read_engine.connect() as conn:
        row = await lending_repo.row_by_public_id(conn, public_id)
    if row is None:
        raise NotFound(f"no lending request {public_id}")
    tx = LendingTransaction.from_json(row.state)
    return pullslip.page([pullslip.slip_html(tx, _partner_name(node, row.partner))],
                         title=f"Pull slip {public_id}")


async def pull_slips(node) -> tuple[str, int]:
    """Every request waiting to be pulled, one slip per printed page; and how many."""
    async with node.read_engine.connect() as conn:
        rows = await lending_repo.to_pull(conn)
    slips = [pullslip.slip_html(LendingTransaction.from_json(r.state),
                                _partner_name(node, r.partner)) for r in rows]
    return pullslip.page(slips, title=f"Pull slips ({len(slips)})"), len(slips)


class Conflict(StaffActionError):
    """The scan cannot be applied as it stands (409)."""


async def check_in_by_barcode(node, barcode: Any, *, actor: str,
                              note: str | None = None) -> dict[str, Any]:
    """Scan-driven check-in: find the shipped request holding ``barcode`` and
    check it in (LoanCompleted to the borrower, the item available again)."""
    if not isinstance(barcode, str) or not barcode.strip():
        raise ValueError("barcode must be a non-empty text")
    barcode = barcode.strip()
    async with node.read_engine.connect() as conn:
        out = await lending_repo.out_by_barcode(conn, barcode)
        if not out:
            seen = await lending_repo.any_by_barcode(conn, barcode)
            item = await lending_repo.item(conn, barcode)
    if len(out) > 1:
        ids = ", ".join(r.public_id for r in out)
        raise Conflict(f"item {barcode} is on more than one open loan ({ids}); "
                       "check in from the request instead")
    if not out:
        if seen:
            last = seen[0]
            raise Conflict(f"item {barcode} is not out on loan to a partner: its last lending "
                           f"request {last.public_id} is {last.status}")
        if item is not None:
            raise Conflict(f"item {barcode} ({item.title or 'untitled'}) was never shipped to "
                           f"a partner; its status is {item.status}")
        raise NotFound(f"no lending request has item barcode {barcode}")
    action: dict[str, Any] = {"action": "check_in", "by": actor.removeprefix("staff:")}
    if note:
        action["note"] = note
    return await node.staff_action("lending", out[0].public_id, action, actor=actor)


async def search(node, *, status: str | None = None, q: str | None = None,
                 partner: str | None = None, barcode: str | None = None,
                 overdue: bool = False, limit: int = 50, offset: int = 0) -> dict[str, Any]:
    async with node.read_engine.connect() as conn:
        return await repo.search(
            conn, "lending", status=status, q=q, partner=partner, limit=limit, offset=offset,
            extra=lending_repo.search_filters(barcode=barcode, overdue=overdue,
                                              now=node.clock()),
        )
