"""The borrowing desk: staff operations shared by the HTTP API and the CLI.

Each operation finds the request first (by our id, by the lender's id, by a
temporary barcode) and then runs ONE staff action through the service
(:meth:`node.service.Node.staff_action`), so the machine decides and the
history records it.  Input problems raise ``ValueError`` (HTTP 400), an
unknown request :class:`~node.service.NotFound` (404), an action that is not
allowed now :class:`~node.machine.StaffActionError` (409).
"""

from __future__ import annotations

from typing import Any

from .borrower.machine import BorrowingState
from .machine import StaffActionError
from .service import NotFound
from .store import borrowing_repo, repo

S = BorrowingState

# Where the lender has agreed to supply, so the item may arrive.
RECEIVABLE = (S.SHIPPED.value, S.EXPECT_TO_SUPPLY.value, S.WILL_SUPPLY.value)
# Where a temporary barcode is on an item we hold (or the patron does).
HOLDING_ITEM = (S.RECEIVED.value, S.ON_HOLD.value, S.ON_LOAN.value, S.RETURNED_BY_PATRON.value,
                S.OVERDUE.value, S.RECALLED.value, S.RENEW_REQUESTED.value)


def text_list(value: Any, name: str) -> list[str]:
    """A non-empty list of non-empty strings (a lone string counts as a list of one)."""
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, (list, tuple)) or not value:
        raise ValueError(f"{name} must be a non-empty list of text")
    out = []
    for item in value:
        if not isinstance(item, str) or not item.strip():
            raise ValueError(f"{name} must be a non-empty list of text")
        out.append(item.strip())
    return out


def optional_text(value: Any, name: str) -> str | None:
    if value in (None, ""):
        return None
    if not isinstance(value, str):
        raise ValueError(f"{name} must be text")
    return value.strip() or None


async def find_for_receive(node, *, request_id: str | None = None,
                           lender_request_id: str | None = None) -> str:
    """Our public id of the request to receive: given, or found by the lender's id."""
    if bool(request_id) == bool(lender_request_id):
        raise ValueError("give request_id (ours) or lender_request_id (the lender's), not both")
    if request_id:
        return request_id
    assert lender_request_id is not None
    async with node.read_engine.connect() as conn:
        found = await borrowing_repo.by_lender_request_id(conn, lender_request_id)
    if not found:
        raise NotFound(f"no borrowing request known to its lender as {lender_request_id}")
    waiting = [public_id for public_id, status in found if status in RECEIVABLE]
    if len(waiting) > 1:
        raise StaffActionError(
            f"{len(waiting)} requests are known to their lenders as {lender_request_id} "
            f"({', '.join(waiting)}): receive by our request id instead")
    return waiting[0] if waiting else found[0][0]


async def receive(node, *, barcodes: Any, actor: str, request_id: str | None = None,
                  lender_request_id: str | None = None, in_transit: Any = False,
                  note: Any = None) -> dict[str, Any]:
    """Receive the item(s): one temporary barcode per volume; sends ``Received``."""
    codes = text_list(barcodes, "barcodes")
    duplicates = sorted({c for c in codes if codes.count(c) > 1})
    if duplicates:
        raise ValueError(f"barcodes lists {', '.join(duplicates)} twice (one per volume)")
    if not isinstance(in_transit, bool):
        raise ValueError("in_transit must be true or false")
    public_id = await find_for_receive(node, request_id=request_id,
                                       lender_request_id=lender_request_id)
    action: dict[str, Any] = {"action": "receive", "barcodes": codes}
    if in_transit:
        action["in_transit"] = True
    if text := optional_text(note, "note"):
        action["note"] = text
    return await node.staff_action("borrowing", public_id, action, actor=actor)


async def return_by_barcode(node, barcode: Any, *, actor: str,
                            note: Any = None) -> dict[str, Any]:
    """Scan a temporary barcode: the item goes back to its lender (``ShippedReturn``).

    Like Alma's "Return Items": a loan to the patron is discharged on the way;
    the answer names the item's destination.
    """
    if not isinstance(barcode, str) or not barcode.strip():
        raise ValueError("barcode must be the temporary barcode of a received item")
    async with node.read_engine.connect() as conn:
        holding = await borrowing_repo.with_barcode(conn, barcode, statuses=HOLDING_ITEM)
        anywhere = holding or await borrowing_repo.with_barcode(
            conn, barcode, statuses=tuple(s.value for s in S))
    if not anywhere:
        raise NotFound(f"no borrowing request has an item with barcode {barcode.strip()}")
    if not holding:
        public_id, status = anywhere[0]
        raise StaffActionError(
            f"{barcode.strip()} belongs to request {public_id}, which is "
            f"{S(status).label}: there is nothing to return")
    if len(holding) > 1:
        raise StaffActionError(
            f"{barcode.strip()} is on {len(holding)} requests ({', '.join(p for p, _ in holding)})"
            ": return from the request instead")
    public_id, _status = holding[0]
    action: dict[str, Any] = {"action": "return_to_partner"}
    if text := optional_text(note, "note"):
        action["note"] = text
    view = await node.staff_action("borrowing", public_id, action, actor=actor)
    partner = node.config.partner(view["partner"]) if view.get("partner") else None
    view["destination"] = {"symbol": view.get("partner"),
                           "name": partner.name if partner is not None else None}
    return view


async def patron_renew(node, patron_id: str, public_id: str,
                       data: dict[str, Any]) -> dict[str, Any]:
    """A patron asks to renew their own loan: the same ``renew`` action staff run
    (``Renew`` to the lender; fields ``note``, ``due_date``), recorded as
    ``patron:<id>``.  Someone else's request is "not found", so a patron learns
    nothing about it."""
    async with node.read_engine.connect() as conn:
        view = await repo.view_by_public_id(conn, "borrowing", public_id)
    if view is None or view["patron_id"] != patron_id:
        raise NotFound(f"patron {patron_id} has no request {public_id}")
    actor = f"patron:{patron_id}"
    view = await node.staff_action("borrowing", public_id,
                                   {**data, "action": "renew", "actor": actor}, actor=actor)
    return patron_view(view)


def patron_view(view: dict[str, Any]) -> dict[str, Any]:
    """What a patron sees of their request: no internal notes, no protocol log."""
    state = view["state"]
    return {
        "id": view["id"], "title": view["title"], "status": view["status"],
        "status_label": S(view["status"]).label, "due_date": state.get("due_date"),
        "renewal_requested": state.get("pending_renew") is not None,
    }


async def notices(node, public_id: str) -> list[dict[str, Any]]:
    async with node.read_engine.connect() as conn:
        found = await borrowing_repo.patron_notices(conn, public_id)
    if found is None:
        raise NotFound(f"no borrowing request {public_id}")
    return found


async def partners(node) -> list[dict[str, Any]]:
    """The configured partners with what we learned of their lending closures."""
    today = node.clock().date()
    async with node.read_engine.connect() as conn:
        closures = await borrowing_repo.known_partner_closures(conn)
    by_symbol = {k.casefold(): v for k, v in closures.items()}
    out = []
    for p in node.config.partners:
        symbol = str(p.symbol)
        closure = by_symbol.get(symbol.casefold())
        out.append({
            "symbol": symbol, "name": p.name, "url": p.url,
            "iso18626_version": str(getattr(p.iso18626_version, "value", p.iso18626_version)),
            "borrow_from": p.borrow_from, "lend_to": p.lend_to,
            "closure": None if closure is None else {
                "start": _iso(closure["start"]), "end": _iso(closure["end"]),
                "note": closure["note"], "learned_at": _iso(closure["learned_at"]),
                "in_effect": borrowing_repo.closure_in_effect(closure, today),
            },
        })
    return out


def _iso(value: Any) -> str | None:
    return value.isoformat() if value is not None else None
