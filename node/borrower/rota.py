"""The rota: the ordered list of partners a borrowing request is sent to.

Pure functions over a list of :class:`RotaEntry`.  ``build_rota`` makes the
list when a request is created; the staff edits (Alma's Rota tab: move a
partner up or down, add a partner, remove a pending one) return a new list
or raise :class:`StaffActionError` saying why not.

A partner known to be closed for lending (learned from its Unfilled notes,
see ``partner_closures``) stays in the list, marked ``skipped`` with a note,
so staff see why it was not asked.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from ..machine import StaffActionError, evolve


class EntryState(str, enum.Enum):
    """Where one rota entry stands.  Compares equal to its string value."""

    PENDING = "pending"  # not asked yet
    ACTIVE = "active"  # the request is with this partner now
    UNFILLED = "unfilled"  # the partner could not supply
    SKIPPED = "skipped"  # not asked: closed for lending, or no longer a partner
    CANCELLED = "cancelled"  # we cancelled it there (or the partner cancelled)
    RETRY = "retry"  # RetryPossible: we will send a Retry request later
    TIMED_OUT = "timed_out"  # no answer in time; we sent Cancel and moved on
    REFUSED = "refused"  # we refused the partner's conditions
    SUPPLIED = "supplied"  # the partner lent the item or delivered the copy
    REMOVED = "removed"  # staff took it out of the rota

    def __str__(self) -> str:
        return self.value


# Entries that may still be asked.
OPEN_ENTRY_STATES = frozenset({EntryState.PENDING})


@dataclass(frozen=True, kw_only=True, slots=True)
class RotaEntry:
    symbol: str
    state: EntryState = EntryState.PENDING
    note: str | None = None
    attempt_request_id: str | None = None  # the RARI of the latest attempt with this partner
    sent_at: datetime | None = None
    answered_at: datetime | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "symbol": self.symbol,
            "state": self.state.value,
            "note": self.note,
            "attempt_request_id": self.attempt_request_id,
            "sent_at": _dt_out(self.sent_at),
            "answered_at": _dt_out(self.answered_at),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> RotaEntry:
        return cls(
            symbol=data["symbol"],
            state=EntryState(data["state"]),
            note=data.get("note"),
            attempt_request_id=data.get("attempt_request_id"),
            sent_at=_dt_in(data.get("sent_at")),
            answered_at=_dt_in(data.get("answered_at")),
        )


def _dt_out(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _dt_in(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value is not None else None


# -- closures -------------------------------------------------------------------

ClosedPartners = Mapping[str, tuple[date | None, date | None, str | None]]


def closed_note(symbol: str, closed_partners: ClosedPartners, today: date) -> str | None:
    """"closed for lending until 2027-01-05" if ``symbol`` is closed today, else None."""
    entry = _lookup(closed_partners, symbol)
    if entry is None:
        return None
    start, end, _note = entry
    if start is not None and today < start:
        return None
    if end is not None and today > end:
        return None
    if end is None:
        return "closed for lending until further notice"
    return f"closed for lending until {end.isoformat()}"


def _lookup(mapping: Mapping[str, Any], symbol: str) -> Any:
    if symbol in mapping:
        return mapping[symbol]
    folded = symbol.casefold()
    for key, value in mapping.items():
        if key.casefold() == folded:
            return value
    return None


def find_partner(partners: Mapping[str, Any], symbol: Any) -> Any:
    """The configured partner for ``symbol`` (symbols compare case-insensitively)."""
    symbol = str(symbol)
    found = _lookup(partners, symbol)
    if found is not None:
        return found
    for partner in partners.values():
        if str(getattr(partner, "symbol", "")).casefold() == symbol.casefold():
            return partner
    return None


def _rota_list(rotas: Any) -> list[Any]:
    if isinstance(rotas, Mapping):
        return list(rotas.values())
    return list(rotas or ())


def find_rota(rotas: Any, name: str) -> Any:
    for rota in _rota_list(rotas):
        if str(rota.name).casefold() == name.casefold():
            return rota
    return None


# -- building -------------------------------------------------------------------


def build_rota(
    form: Any,
    *,
    rotas: Any,
    partners: Mapping[str, Any],
    closed_partners: ClosedPartners,
    today: date,
) -> list[RotaEntry]:
    """The rota for a new request.

    Partners come from, in order of preference: the form's explicit partner
    list; the rota the form names; the first configured rota serving the
    request's service type (and format, when the rota lists formats).  Only
    partners we borrow from are kept, each once.  One closed for lending today
    is kept but ``skipped`` with a note.
    """
    symbols: Sequence[str]
    if getattr(form, "partners", ()):
        symbols = form.partners
    elif getattr(form, "rota", None):
        rota = find_rota(rotas, form.rota)
        symbols = rota.partners if rota is not None else ()
    else:
        rota = _default_rota(form, rotas)
        symbols = rota.partners if rota is not None else ()
    return entries_for(symbols, partners=partners, closed_partners=closed_partners, today=today)


def _value(code: Any) -> str:
    """An enum's value, or the text itself (config may hold either)."""
    return str(getattr(code, "value", code))


def _default_rota(form: Any, rotas: Any) -> Any:
    service = form.service_type.value.casefold()
    wanted_formats = {
        str(v).casefold()
        for v in (getattr(form, "format", None), getattr(form, "requested_media", None))
        if v
    }
    for rota in _rota_list(rotas):
        services = {_value(s).casefold() for s in rota.service_types}
        if services and service not in services and "copyorloan" not in services:
            continue
        formats = {str(f).casefold() for f in rota.formats}
        if formats and not (formats & wanted_formats):
            continue
        return rota
    return None


def entries_for(
    symbols: Iterable[str],
    *,
    partners: Mapping[str, Any],
    closed_partners: ClosedPartners,
    today: date,
) -> list[RotaEntry]:
    """Pending entries for ``symbols``: partners we borrow from, each once, closed ones skipped."""
    out: list[RotaEntry] = []
    seen: set[str] = set()
    for symbol in map(str, symbols):
        partner = find_partner(partners, symbol)
        if partner is None or not getattr(partner, "borrow_from", False):
            continue
        symbol = str(partner.symbol)
        if symbol.casefold() in seen:
            continue
        seen.add(symbol.casefold())
        note = closed_note(symbol, closed_partners, today)
        if note is not None:
            out.append(RotaEntry(symbol=symbol, state=EntryState.SKIPPED, note=note))
        else:
            out.append(RotaEntry(symbol=symbol))
    return out


# -- staff edits ------------------------------------------------------------------


def _pending_index(rota: Sequence[RotaEntry], symbol: str) -> int:
    for i, entry in enumerate(rota):
        if entry.symbol.casefold() == symbol.casefold() and entry.state is EntryState.PENDING:
            return i
    for entry in rota:
        if entry.symbol.casefold() == symbol.casefold():
            if entry.state is EntryState.ACTIVE:
                raise StaffActionError(
                    f"{entry.symbol} is the active partner: the request is with it now, "
                    "so it cannot be moved or removed; use Cancel partner first"
                )
            raise StaffActionError(
                f"{entry.symbol} is no longer pending in the rota ({entry.state.value}"
                + (f": {entry.note}" if entry.note else "")
                + "); only pending partners can be moved or removed"
            )
    raise StaffActionError(f"{symbol} is not in the rota")


def move_entry(rota: Sequence[RotaEntry], symbol: str, position: int) -> list[RotaEntry]:
    """Move the pending entry for ``symbol`` to ``position`` among the pending entries.

    ``position`` counts pending entries only, from 0 (asked next); entries
    already asked keep their place in the list.
    """
    index = _pending_index(rota, symbol)
    pending_slots = [i for i, e in enumerate(rota) if e.state is EntryState.PENDING]
    if not 0 <= position < len(pending_slots):
        raise StaffActionError(
            f"position {position} is out of range: there are {len(pending_slots)} pending "
            "partners (positions start at 0)"
        )
    order = [rota[i] for i in pending_slots]
    entry = rota[index]
    order.remove(entry)
    order.insert(position, entry)
    return _refill(rota, pending_slots, order)


def reorder_pending(rota: Sequence[RotaEntry], symbols: Sequence[str]) -> list[RotaEntry]:
    """Put the pending entries in the order of ``symbols`` (all of them, each once)."""
    pending_slots = [i for i, e in enumerate(rota) if e.state is EntryState.PENDING]
    pending = {rota[i].symbol.casefold(): rota[i] for i in pending_slots}
    wanted = [s.casefold() for s in symbols]
    if sorted(wanted) != sorted(pending) or len(set(wanted)) != len(wanted):
        names = ", ".join(rota[i].symbol for i in pending_slots) or "none"
        raise StaffActionError(
            f"the new order must list every pending partner exactly once (pending: {names})"
        )
    return _refill(rota, pending_slots, [pending[s] for s in wanted])


def _refill(
    rota: Sequence[RotaEntry], slots: Sequence[int], order: Sequence[RotaEntry]
) -> list[RotaEntry]:
    out = list(rota)
    for slot, entry in zip(slots, order, strict=True):
        out[slot] = entry
    return out


def add_partner(
    rota: Sequence[RotaEntry],
    symbol: str,
    *,
    partners: Mapping[str, Any],
    position: int | None = None,
    closed_partners: ClosedPartners | None = None,
    today: date | None = None,
) -> list[RotaEntry]:
    """Add a partner at ``position`` among the pending entries, as :func:`move_entry`
    counts them (0: asked next), or at the end.

    It must be a configured partner we borrow from and not already pending or
    active.  One closed for lending today is added as ``skipped``.
    """
    partner = find_partner(partners, symbol)
    if partner is None:
        raise StaffActionError(f"{symbol} is not a configured partner")
    if not getattr(partner, "borrow_from", False):
        raise StaffActionError(f"{partner.symbol} is a partner we do not borrow from")
    symbol = str(partner.symbol)
    for entry in rota:
        if entry.symbol.casefold() == symbol.casefold() and entry.state in (
            EntryState.PENDING,
            EntryState.ACTIVE,
            EntryState.RETRY,
        ):
            raise StaffActionError(f"{symbol} is already in the rota ({entry.state.value})")
    note = None
    if closed_partners is not None and today is not None:
        note = closed_note(symbol, closed_partners, today)
    entry = RotaEntry(
        symbol=symbol,
        state=EntryState.SKIPPED if note else EntryState.PENDING,
        note=note,
    )
    out = list(rota)
    pending_slots = [i for i, e in enumerate(rota) if e.state is EntryState.PENDING]
    if position is None or position == len(pending_slots):
        out.append(entry)
    elif 0 <= position < len(pending_slots):
        out.insert(pending_slots[position], entry)
    else:
        raise StaffActionError(
            f"position {position} is out of range: there are {len(pending_slots)} pending "
            f"partners (positions start at 0; {len(pending_slots)} adds it last)"
        )
    return out


def remove_entry(
    rota: Sequence[RotaEntry], symbol: str, note: str | None = None
) -> list[RotaEntry]:
    """Take a pending partner out of the rota (kept in the list as ``removed``).

    The active partner cannot be removed: cancel it first (Cancel partner).
    """
    index = _pending_index(rota, symbol)
    out = list(rota)
    out[index] = evolve(out[index], state=EntryState.REMOVED, note=note or "removed by staff")
    return out


def next_pending(rota: Sequence[RotaEntry]) -> int | None:
    """Index of the entry to ask next, or None at the end of the rota."""
    for i, entry in enumerate(rota):
        if entry.state is EntryState.PENDING:
            return i
    return None
