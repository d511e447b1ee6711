"""Holdings matching: identifiers, keys and the choice of item."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from node.protocol.codes import Code, ServiceType
from node.protocol.messages import (
    AgencyId,
    BibliographicInfo,
    BibliographicItemId,
    BibliographicRecordId,
    Header,
    Request,
    ServiceInfo,
    SupplierInfo,
)
from node.supplier.locate import (
    HoldingsItem,
    HoldingsRecord,
    author_key,
    identifiers_of,
    isbn10_of,
    isbn_forms,
    locate,
    normalise_isbn,
    normalise_issn,
    normalise_lccn,
    normalise_oclc,
    title_key,
)

US = AgencyId.parse("ISIL:DK-820010")


@dataclass(frozen=True)
class Policy:
    location_preference: tuple[str, ...] = ("Main", "Annex")
    non_lendable_locations: tuple[str, ...] = ("Reference",)


def request(*, title="The Odyssey", author="Homer", items=(), records=(), sur=None,
            supplier_info=()) -> Request:
    return Request(
        header=Header(supplying_agency_id=US, requesting_agency_id=AgencyId.parse("ISIL:X"),
                      timestamp=datetime(2026, 1, 1, tzinfo=UTC),
                      requesting_agency_request_id="R"),
        bibliographic_info=BibliographicInfo(
            title=title, author=author, supplier_unique_record_id=sur,
            bibliographic_item_id=tuple(BibliographicItemId(identifier=v, code=Code(c))
                                        for c, v in items),
            bibliographic_record_id=tuple(BibliographicRecordId(identifier=v, code=Code(c))
                                          for c, v in records),
        ),
        service_info=ServiceInfo(service_type=ServiceType.LOAN),
        supplier_info=supplier_info,
    )


# -- normalisation ---------------------------------------------------------------------


@pytest.mark.parametrize("text,expected", [
    ("9780140449136", "9780140449136"),
    ("978-0-14-044913-6", "9780140449136"),
    ("0-14-044913-2", "9780140449136"),
    ("0 14 044913 2 (pbk.)", "9780140449136"),
    ("ISBN 0140449132", "9780140449136"),
    ("080442957x", "9780804429573"),
    ("9780140449137", None),  # bad check digit
    ("0140449133", None),
    ("12345", None),
    ("", None),
    (None, None),
])
def test_normalise_isbn(text, expected):
    assert normalise_isbn(text) == expected


def test_isbn_forms():
    assert isbn_forms("0-14-044913-2") == ("9780140449136", "0140449132")
    assert isbn_forms("979-10-90636-07-1") == ("9791090636071",)  # 979: no ISBN-10
    assert isbn10_of("9780804429573") == "080442957X"


@given(st.lists(st.integers(0, 9), min_size=9, max_size=9))
def test_isbn10_and_13_agree(digits):
    body = "978" + "".join(map(str, digits))
    total = sum(int(c) * (1 if i % 2 == 0 else 3) for i, c in enumerate(body))
    isbn13 = body + str((10 - total % 10) % 10)
    isbn10 = isbn10_of(isbn13)
    assert normalise_isbn(isbn10) == isbn13
    assert normalise_isbn("-".join([isbn10[:1], isbn10[1:5], isbn10[5:]])) == isbn13


@pytest.mark.parametrize("text,expected", [
    ("0028-792X", "0028792X"), ("0028-792x", "0028792X"), ("0317-8471", "03178471"),
    ("0317-8472", None), ("1234", None),
])
def test_normalise_issn(text, expected):
    assert normalise_issn(text) == expected


def test_normalise_record_ids():
    assert normalise_oclc("(OCoLC)ocm00012345") == "12345"
    assert normalise_oclc("ocn987654321") == "987654321"
    assert normalise_oclc("(DE-599)123") is None
    assert normalise_lccn("n 78-890351") == "n78890351"
    assert normalise_lccn("85-2 ") == "85000002"
    assert normalise_lccn("2001-000002") == "2001000002"


@pytest.mark.parametrize("a,b", [
    ("The Odyssey", "odyssey"),
    ("The Odyssey / Homer ; translated by E.V. Rieu.", "odyssey"),
    ("Les Misérables : roman", "miserables"),
    ("Ærø: an island", "aero"),
    ("L'Étranger", "etranger"),
    ("A", "a"),  # a lone article is the title
])
def test_title_key(a, b):
    assert title_key(a) == b


@pytest.mark.parametrize("a,b", [
    ("Homer", "homer"), ("Homer.", "homer"), ("Tolstoy, Leo, 1828-1910", "tolstoy"),
    ("Leo Tolstoy", "tolstoy"), ("Brontë, Charlotte", "bronte"), ("", None),
])
def test_author_key(a, b):
    assert author_key(a) == b


def test_identifiers_of():
    req = request(
        items=[("isbn", "0-14-044913-2"), ("ISSN", "0028-792x"), ("ISBN", "garbage")],
        records=[("OCLC", "(OCoLC)ocm0042"), ("LCCN", "n 78-890351"), ("FAUST", "2345")],
        sur="991234",
        supplier_info=(SupplierInfo(supplier_code=US, bibliographic_record_id=BibliographicRecordId(
            identifier="loc-7", code=Code("LA"))),),
    )
    keys = identifiers_of(req, US)
    assert keys.supplier_unique_record_id == "991234"
    assert keys.isbns == ("9780140449136", "0140449132")
    assert keys.issns == ("0028792X",)
    assert keys.record_ids == (("oclc", "42"), ("lccn", "n78890351"), ("local", "2345"),
                               ("local", "loc-7"))
    assert (keys.title_key, keys.author_key) == ("odyssey", "homer")
    assert not keys.is_empty()
    assert identifiers_of(request(title=None, author=None)).is_empty()


# -- matching ----------------------------------------------------------------------------

ODYSSEY = HoldingsRecord(
    record_id="rec-1", title="The Odyssey", author="Homer", isbns=("9780140449136",),
    oclc=("42",),
    items=(
        HoldingsItem(barcode="B-3", location="Annex", call_number="883 HOM"),
        HoldingsItem(barcode="B-2", location="Reference"),
        HoldingsItem(barcode="B-1", location="Main", call_number="883 HOM c.1"),
    ),
)
OTHER = HoldingsRecord(record_id="rec-2", title="The Odyssey", author="Homer",
                       items=(HoldingsItem(barcode="C-1", location="Main"),))


def test_match_order_supplier_unique_record_id_first():
    req = request(items=[("ISBN", "9780140449136")], sur="rec-2")
    result = locate(req, [ODYSSEY, OTHER], Policy())
    assert (result.record_id, result.matched_on) == ("rec-2", "supplierUniqueRecordId rec-2")


def test_match_by_record_id_then_isbn_then_title():
    assert locate(request(records=[("OCLC", "ocm42")]), [OTHER, ODYSSEY],
                  Policy()).matched_on == "OCLC 42"
    result = locate(request(items=[("ISBN", "0140449132")]), [OTHER, ODYSSEY], Policy())
    assert result.matched_on == "ISBN 9780140449136" and result.record_id == "rec-1"
    assert "rec-1" in result.reason and "ISBN 9780140449136" in result.reason
    by_title = locate(request(title="ODYSSEY.", author="Homer"), [OTHER], Policy())
    assert by_title.outcome == "available"
    assert by_title.matched_on.startswith("title and author")


def test_title_without_author_only_when_unambiguous():
    assert locate(request(author=None), [OTHER], Policy()).outcome == "available"
    assert locate(request(author=None), [OTHER, ODYSSEY], Policy()).outcome == "not_held"


def test_picks_by_location_preference_and_skips_non_lendable():
    result = locate(request(items=[("ISBN", "9780140449136")]), [ODYSSEY], Policy())
    assert result.outcome == "available"
    assert result.item.barcode == "B-1"  # Main before Annex
    result = locate(request(items=[("ISBN", "9780140449136")]), [ODYSSEY],
                    Policy(location_preference=("Annex",)))
    assert result.item.barcode == "B-3"


def test_on_loan_reports_the_earliest_due_date():
    record = HoldingsRecord(record_id="r", title="X", isbns=("9780140449136",), items=(
        HoldingsItem(barcode="1", status="on_loan", due_date=date(2026, 5, 1)),
        HoldingsItem(barcode="2", status="on_loan", due_date=date(2026, 4, 1)),
        HoldingsItem(barcode="3", location="Reference"),
    ))
    result = locate(request(items=[("ISBN", "9780140449136")]), [record], Policy())
    assert result.outcome == "on_loan"
    assert result.earliest_due == date(2026, 4, 1)
    assert result.item is None
    assert "2026-04-01" in result.reason


@pytest.mark.parametrize("statuses,outcome", [
    (("non_circulating",), "non_circulating"),
    (("missing",), "missing"),
    (("missing", "non_circulating"), "non_circulating"),
    ((), "not_held"),
])
def test_other_outcomes(statuses, outcome):
    record = HoldingsRecord(record_id="r", title="X", isbns=("9780140449136",), items=tuple(
        HoldingsItem(barcode=str(i), status=s) for i, s in enumerate(statuses)))
    result = locate(request(items=[("ISBN", "9780140449136")]), [record], Policy())
    assert result.outcome == outcome
    assert result.reason


def test_not_held():
    result = locate(request(title="Ulysses", author="Joyce"), [ODYSSEY], Policy())
    assert result.outcome == "not_held"
    assert result.record_id is None and result.matched_on == ""
    assert "title 'ulysses'" in result.reason
    assert result.to_json()["outcome"] == "not_held"
