"""Building the rota and the staff edits (Alma's Rota tab)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date

import pytest

from node.borrower.form import BorrowingForm
from node.borrower.rota import (
    EntryState,
    RotaEntry,
    add_partner,
    build_rota,
    closed_note,
    move_entry,
    next_pending,
    remove_entry,
    reorder_pending,
)
from node.machine import StaffActionError

A, B, C, D, X = "ISIL:XX-1", "ISIL:XX-2", "ISIL:XX-3", "ISIL:XX-4", "ISIL:XX-9"
TODAY = date(2026, 12, 22)


@dataclass(frozen=True)
class Partner:
    symbol: str
    name: str = "lib"
    url: str = "https://example.org"
    iso18626_version: str = "1.2"
    lend_to: bool = True
    borrow_from: bool = True
    closure_reply: str = "unfilled"


@dataclass(frozen=True)
class Rota:
    name: str
    service_types: tuple[str, ...] = ()
    formats: tuple[str, ...] = ()
    partners: tuple[str, ...] = ()


PARTNERS = {A: Partner(A), B: Partner(B), C: Partner(C), D: Partner(D),
            X: Partner(X, borrow_from=False)}
ROTAS = (
    Rota("copies", service_types=("Copy",), partners=(C, D)),
    Rota("dvds", service_types=("Loan",), formats=("DVD",), partners=(D,)),
    Rota("books", service_types=("Loan",), partners=(A, X, B, A)),
)


def form(**kw) -> BorrowingForm:
    return BorrowingForm(patron_id="P1", pickup_location="Main", title="T", **kw)


def build(f, closed=None):
    return build_rota(f, rotas=ROTAS, partners=PARTNERS, closed_partners=closed or {},
                      today=TODAY)


def symbols(entries):
    return [e.symbol for e in entries]


def test_explicit_partners_win():
    assert symbols(build(form(partners=(D, "isil:xx-1")))) == [D, A]


def test_named_rota():
    assert symbols(build(form(rota="copies"))) == [C, D]


def test_first_rota_serving_the_service_type_and_format():
    # only borrow_from partners, each once
    assert symbols(build(form())) == [A, B]
    assert symbols(build(form(format="digital", copyright_agreed=True))) == [C, D]
    assert symbols(build(form(requested_media="DVD"))) == [D]


def test_no_rota_serves_it():
    rotas = (Rota("copies", service_types=("Copy",), partners=(C,)),)
    assert build_rota(form(), rotas=rotas, partners=PARTNERS, closed_partners={},
                      today=TODAY) == []


def test_closed_partner_is_kept_but_skipped_with_a_note():
    closed = {A: (date(2026, 12, 20), date(2027, 1, 5), "holidays"), B: (None, None, None)}
    entries = build(form(), closed)
    assert [e.state for e in entries] == [EntryState.SKIPPED, EntryState.SKIPPED]
    assert entries[0].note == "closed for lending until 2027-01-05"
    assert entries[1].note == "closed for lending until further notice"
    assert next_pending(entries) is None
    # the closure is over (or not begun): asked as usual
    assert closed_note(A, closed, date(2027, 1, 6)) is None
    assert closed_note(A, closed, date(2026, 12, 19)) is None


def rota(*states):
    return [RotaEntry(symbol=s, state=st) for s, st in states]


P, ACT, UNF = EntryState.PENDING, EntryState.ACTIVE, EntryState.UNFILLED


def test_move_reorders_pending_entries_only():
    r = rota((A, UNF), (B, ACT), (C, P), (D, P))
    moved = move_entry(r, D, 0)
    assert symbols(moved) == [A, B, D, C]
    assert symbols(reorder_pending(r, [D, C])) == [A, B, D, C]
    with pytest.raises(StaffActionError, match="active partner"):
        move_entry(r, B, 0)
    with pytest.raises(StaffActionError, match="no longer pending"):
        move_entry(r, A, 0)
    with pytest.raises(StaffActionError, match="out of range"):
        move_entry(r, C, 2)
    with pytest.raises(StaffActionError, match="every pending partner exactly once"):
        reorder_pending(r, [D])
    with pytest.raises(StaffActionError, match="not in the rota"):
        move_entry(r, X, 0)


def test_add_partner():
    r = rota((A, ACT), (B, P))
    assert symbols(add_partner(r, C, partners=PARTNERS)) == [A, B, C]
    # Positions count pending partners, as move_entry's do: 0 is asked next.
    assert symbols(add_partner(r, C, partners=PARTNERS, position=0)) == [A, C, B]
    assert symbols(add_partner(r, C, partners=PARTNERS, position=1)) == [A, B, C]
    assert symbols(add_partner(rota((A, UNF), (B, ACT)), C, partners=PARTNERS,
                               position=0)) == [A, B, C]  # no pending partner: last
    closed = {C: (None, date(2027, 1, 5), None)}
    added = add_partner(r, C, partners=PARTNERS, closed_partners=closed, today=TODAY)
    assert added[-1].state is EntryState.SKIPPED
    with pytest.raises(StaffActionError, match="already in the rota"):
        add_partner(r, B, partners=PARTNERS)
    with pytest.raises(StaffActionError, match="not a configured partner"):
        add_partner(r, "ISIL:QQ-1", partners=PARTNERS)
    with pytest.raises(StaffActionError, match="do not borrow from"):
        add_partner(r, X, partners=PARTNERS)
    with pytest.raises(StaffActionError, match="out of range"):
        add_partner(r, C, partners=PARTNERS, position=2)
    # a partner that was unfilled earlier may be asked again
    assert symbols(add_partner(rota((A, UNF)), A, partners=PARTNERS)) == [A, A]


def test_remove_pending_but_not_active():
    r = rota((A, ACT), (B, P))
    removed = remove_entry(r, B)
    assert removed[1].state is EntryState.REMOVED and removed[1].note == "removed by staff"
    assert next_pending(removed) is None
    with pytest.raises(StaffActionError, match="Cancel partner"):
        remove_entry(r, A)


def test_entry_json_round_trip():
    from datetime import datetime
    e = RotaEntry(symbol=A, state=EntryState.TIMED_OUT, note="n", attempt_request_id="X-1",
                  sent_at=datetime(2026, 1, 1, tzinfo=UTC))
    assert RotaEntry.from_json(e.to_json()) == e
    assert e.state == "timed_out"
