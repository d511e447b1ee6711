"""The borrowing request form: one clear message per bad field."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from decimal import Decimal

import pytest

from node.borrower.form import BorrowingForm, FormError, duplicate_key, parse_form
from node.protocol.codes import ServiceType

A, X = "ISIL:XX-1", "ISIL:XX-9"


@dataclass(frozen=True)
class Policy:
    answer_timeout_hours: int = 48
    retry_policy: str = "retry"
    auto_accept_costs: bool = False
    pickup_locations: tuple[str, ...] = ("Main desk", "Branch")
    closure: object = None


@dataclass(frozen=True)
class Partner:
    symbol: str
    borrow_from: bool = True


@dataclass(frozen=True)
class Rota:
    name: str
    service_types: tuple[str, ...] = ()
    formats: tuple[str, ...] = ()
    partners: tuple[str, ...] = ()


PARTNERS = {A: Partner(A), X: Partner(X, borrow_from=False)}
ROTAS = (Rota("books", ("Loan",), (), (A,)),)


def parse(data, policy=Policy(), **kw):
    return parse_form(data, policy=policy, partners=PARTNERS, rotas=ROTAS, **kw)


def problems(data, **kw) -> dict[str, str]:
    with pytest.raises(FormError) as err:
        parse(data, **kw)
    return err.value.problems


GOOD = {"patron_id": "P-1", "pickup_location": "main desk", "title": "Moby Dick"}


def test_a_minimal_form():
    f = parse(GOOD)
    assert f.pickup_location == "Main desk"  # the configured spelling
    assert f.format == "physical" and f.service_type is ServiceType.LOAN
    assert f.partners == () and f.rota is None


def test_a_full_form_is_normalised():
    f = parse({
        **GOOD, "author": " Melville ", "isbn": "0-306-40615-2", "issn": "0378-5955",
        "oclc": "(OCoLC)ocm00012345", "identifiers": [{"code": "LCCN", "value": "2001012345"}],
        "publisher": "Harper", "publication_date": "1851", "volume": "2", "format": "digital",
        "pages": "1-10", "title_of_component": "Chapter 1", "copyright_agreed": True,
        "requested_media": "PDF", "allow_other_format": "yes", "language": "en",
        "needed_by": "2027-02-01", "reading_room_only": False, "max_fee": "12.50",
        "currency": "eur", "service_level": "rush", "preferred_delivery_method": "email",
        "note": "thanks", "partners": [A],
    }, today=date(2026, 11, 1))
    assert f.isbn == "0306406152" and f.issn == "0378-5955" and f.oclc == "12345"
    assert f.identifiers == (("LCCN", "2001012345"),)
    assert f.service_type is ServiceType.COPY
    assert f.willing_to_pay and f.max_fee == Decimal("12.50") and f.currency == "EUR"
    assert f.service_level == "Rush" and f.preferred_delivery_method == "Email"
    assert f.needed_by == date(2027, 2, 1) and f.allow_other_format
    assert f.partners == (A,)
    assert BorrowingForm.from_json(f.to_json()) == f


def test_every_problem_is_reported_at_once_with_one_message_each():
    found = problems({
        "title": "", "isbn": "978-0-00-000000-1", "issn": "1234", "oclc": "abc",
        "format": "microfilm", "needed_by": "next week", "max_fee": "lots",
        "willing_to_pay": "maybe", "service_level": "yesterday", "pickup_location": "Moon",
        "partners": [X, "ISIL:QQ-1"], "colour": "blue", "currency": "euro",
    })
    assert set(found) == {
        "patron_id", "isbn", "issn", "oclc", "format", "needed_by", "max_fee", "willing_to_pay",
        "service_level", "pickup_location", "partners", "colour", "currency",
    }
    assert found["patron_id"] == "required: the patron the request is for"
    assert "check digit" in found["isbn"]
    assert found["pickup_location"] == ("'Moon' is not a pickup location; choose one of: "
                                        "Main desk, Branch")
    assert "ISIL:XX-9 is a partner we do not borrow from" in found["partners"]
    assert "ISIL:QQ-1 is not a configured partner" in found["partners"]
    assert found["colour"] == "not a field of the borrowing request form"
    assert all(isinstance(m, str) and m for m in found.values())


def test_title_or_identifier_required():
    found = problems({"patron_id": "P", "pickup_location": "Branch"})
    assert found == {"title": "required: give a title or an identifier (ISBN, ISSN, "
                              "OCLC number)"}
    assert parse({"patron_id": "P", "pickup_location": "Branch", "isbn": "9780306406157"})


def test_copies_need_copyright_agreement():
    found = problems({**GOOD, "format": "digital"})
    assert found == {"copyright_agreed": "a copy can only be requested once the patron "
                                         "agrees to the copyright terms"}
    assert parse({**GOOD, "format": "digital", "copyright_agreed": "true"}).copyright_agreed


def test_pickup_required():
    found = problems({"patron_id": "P", "title": "T"})
    assert found == {"pickup_location": "required: where the patron collects the item "
                                        "(one of: Main desk, Branch)"}
    # any pickup location when none are configured
    assert parse({**GOOD, "pickup_location": "Anywhere"},
                 policy=Policy(pickup_locations=())).pickup_location == "Anywhere"


def test_fee_rules():
    assert problems({**GOOD, "max_fee": "10"}) == {
        "currency": "required with a maximum fee: the ISO 4217 code, e.g. EUR"}
    assert "willing to pay" in problems(
        {**GOOD, "max_fee": "10", "currency": "EUR", "willing_to_pay": False})["willing_to_pay"]
    assert "zero or more" in problems({**GOOD, "max_fee": "-1", "currency": "EUR"})["max_fee"]


def test_partners_or_rota():
    assert parse({**GOOD, "rota": "BOOKS"}).rota == "books"
    assert problems({**GOOD, "rota": "films"}) == {"rota": "'films' is not a configured rota"}
    assert problems({**GOOD, "rota": "books", "partners": [A]}) == {
        "rota": "give either partners or a rota, not both"}


def test_needed_by_in_the_past():
    assert problems({**GOOD, "needed_by": "2020-01-01"}, today=date(2026, 1, 1)) == {
        "needed_by": "2020-01-01 is in the past"}


def test_duplicate_key():
    one = parse({**GOOD, "isbn": "0-306-40615-2", "title": "Moby-Dick"})
    same = parse({**GOOD, "patron_id": " p-1 ", "isbn": "9780306406157", "title": "Other"})
    assert duplicate_key(one) == duplicate_key(same)
    other_patron = parse({**GOOD, "patron_id": "P-2", "isbn": "0306406152"})
    assert duplicate_key(one) != duplicate_key(other_patron)
    by_title = parse({**GOOD, "title": "The  Moby Dick!"})
    assert duplicate_key(by_title) == duplicate_key(parse({**GOOD, "title": "moby dick"}))
    v2 = parse({**GOOD, "title": "moby dick", "volume": "2"})
    assert duplicate_key(v2) != duplicate_key(by_title)
    art1 = parse({**GOOD, "issn": "0378-5955", "format": "digital", "copyright_agreed": True,
                  "title_of_component": "On whales", "pages": "1-10"})
    art2 = parse({**GOOD, "issn": "0378-5955", "format": "digital", "copyright_agreed": True,
                  "title_of_component": "On ships", "pages": "11-20"})
    assert duplicate_key(art1) != duplicate_key(art2)
