"""Finding a requested item in the library's holdings. Pure: no I/O.

The service asks :func:`identifiers_of` what to look up, fetches the
candidate :class:`HoldingsRecord` rows itself, and hands them to
:func:`locate`, which decides which record matches (ISO 18626 clause 8.3
``bibliographicInfo``: the supplier's own record id first, then record ids,
then item ids, then title and author) and which item to pull.

Normalised forms (also what ``holdings_identifiers.value`` stores):

* ISBN: the 13-digit form, digits only (``9780140449136``); ISBN-10s are
  converted, check digits are verified.  :attr:`LookupKeys.isbns` carries
  both forms so that either stored form is found.
* ISSN: eight characters, no hyphen, upper-case ``X`` (``0028792X``).
* OCLC: digits without prefixes (``(OCoLC)ocm00012345`` -> ``12345``).
* LCCN: the Library of Congress normalisation (``n 78-890351`` -> ``n78890351``).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any

from ..protocol.messages import AgencyId, Request

ITEM_STATUSES = ("available", "on_loan", "missing", "non_circulating")
OUTCOMES = ("available", "on_loan", "missing", "non_circulating", "not_held")

frozen = dataclass(frozen=True, kw_only=True, slots=True)


@frozen
class HoldingsItem:
    barcode: str
    call_number: str | None = None
    location: str | None = None
    status: str = "available"  # one of ITEM_STATUSES
    due_date: date | None = None


@frozen
class HoldingsRecord:
    record_id: str
    title: str | None = None
    author: str | None = None
    isbns: tuple[str, ...] = ()
    issns: tuple[str, ...] = ()
    oclc: tuple[str, ...] = ()
    lccn: tuple[str, ...] = ()
    items: tuple[HoldingsItem, ...] = ()


@frozen
class LookupKeys:
    """What the service should query ``holdings_*`` for.

    ``record_ids`` are ``(kind, value)`` pairs with kind ``oclc``, ``lccn`` or
    ``local`` (a ``holdings_records.record_id``); ``isbns``/``issns`` are
    normalised (see the module docstring).
    """

    supplier_unique_record_id: str | None = None
    record_ids: tuple[tuple[str, str], ...] = ()
    isbns: tuple[str, ...] = ()
    issns: tuple[str, ...] = ()
    title_key: str | None = None
    author_key: str | None = None

    def is_empty(self) -> bool:
        return not (
            self.supplier_unique_record_id
            or self.record_ids
            or self.isbns
            or self.issns
            or self.title_key
        )


@frozen
class LocateResult:
    outcome: str  # one of OUTCOMES
    record_id: str | None = None
    item: HoldingsItem | None = None
    matched_on: str = ""  # e.g. "ISBN 9780140449136"; "" when nothing matched
    earliest_due: date | None = None
    reason: str = ""  # one sentence for the history

    def to_json(self) -> dict[str, Any]:
        item = self.item
        return {
            "outcome": self.outcome,
            "record_id": self.record_id,
            "item": None
            if item is None
            else {
                "barcode": item.barcode,
                "call_number": item.call_number,
                "location": item.location,
                "status": item.status,
                "due_date": item.due_date.isoformat() if item.due_date else None,
            },
            "matched_on": self.matched_on,
            "earliest_due": self.earliest_due.isoformat() if self.earliest_due else None,
            "reason": self.reason,
        }


# -- identifiers --------------------------------------------------------------

_ISBN_RE = re.compile(r"(?<![0-9X])(97[89][0-9]{10}|[0-9]{9}[0-9X])(?![0-9X])")
_ISSN_RE = re.compile(r"(?<![0-9X])([0-9]{7}[0-9X])(?![0-9X])")


def _compact(text: str) -> str:
    return re.sub(r"[\s\-\u2010-\u2015.]", "", text).upper()


def _isbn10_ok(s: str) -> bool:
    total = sum((10 - i) * (10 if c == "X" else int(c)) for i, c in enumerate(s))
    return "X" not in s[:9] and total % 11 == 0


def _isbn13_check(first12: str) -> str:
    total = sum(int(c) * (1 if i % 2 == 0 else 3) for i, c in enumerate(first12))
    return str((10 - total % 10) % 10)


def normalise_isbn(text: str | None) -> str | None:
    """The ISBN-13 form of an ISBN-10 or -13 (hyphens, spaces and qualifiers
    such as ``(pbk.)`` ignored), or ``None`` when it is not a valid ISBN."""
    if not text:
        return None
    match = _ISBN_RE.search(_compact(text))
    if not match:
        return None
    s = match.group(1)
    if len(s) == 13:
        return s if _isbn13_check(s[:12]) == s[12] else None
    if not _isbn10_ok(s):
        return None
    body = "978" + s[:9]
    return body + _isbn13_check(body)


def isbn10_of(isbn13: str) -> str | None:
    """The ISBN-10 form of a ``978`` ISBN-13 (``979`` ones have none)."""
    if len(isbn13) != 13 or not isbn13.startswith("978"):
        return None
    body = isbn13[3:12]
    total = sum((10 - i) * int(c) for i, c in enumerate(body))
    check = (11 - total % 11) % 11
    return body + ("X" if check == 10 else str(check))


def isbn_forms(text: str | None) -> tuple[str, ...]:
    """Both forms of an ISBN: ``(isbn13, isbn10)``, or ``(isbn13,)``, or ``()``."""
    isbn13 = normalise_isbn(text)
    if isbn13 is None:
        return ()
    isbn10 = isbn10_of(isbn13)
    return (isbn13, isbn10) if isbn10 else (isbn13,)


def normalise_issn(text: str | None) -> str | None:
    """``0028-792x`` -> ``0028792X``; ``None`` unless the check digit is right."""
    if not text:
        return None
    match = _ISSN_RE.search(_compact(text))
    if not match:
        return None
    s = match.group(1)
    if "X" in s[:7]:
        return None
    total = sum((8 - i) * int(c) for i, c in enumerate(s[:7]))
    check = (11 - total % 11) % 11
    expected = "X" if check == 10 else str(check)
    return s if s[7] == expected else None


def normalise_oclc(text: str | None) -> str | None:
    """``(OCoLC)ocm00012345`` / ``ocn12345`` / ``on12345`` / ``12345`` -> ``12345``."""
    if not text:
        return None
    s = re.sub(r"^\(OCoLC\)", "", text.strip(), flags=re.IGNORECASE).strip()
    s = re.sub(r"^(ocm|ocn|on)", "", s, flags=re.IGNORECASE).strip()
    if not s.isdigit():
        return None
    return s.lstrip("0") or "0"


def normalise_lccn(text: str | None) -> str | None:
    """The LC normalisation: no blanks, prefix kept, serial zero-padded to 6."""
    if not text:
        return None
    s = re.sub(r"\s", "", text).split("/")[0].lower()
    if "-" in s:
        head, _, tail = s.partition("-")
        if not tail.isdigit():
            return None
        s = head + tail.zfill(6)
    if not s or not re.fullmatch(r"[a-z]{0,3}[0-9]{8,10}", s):
        return None
    return s


# -- title and author keys -------------------------------------------------------

_ARTICLES = frozenset({
    "the", "a", "an", "le", "la", "les", "l", "der", "die", "das", "den", "det", "el", "los",
    "las", "il", "lo", "gli", "i", "un", "une", "de", "het", "een", "ein", "eine",
})


def _fold(text: str) -> str:
    """Casefold, strip diacritics, turn punctuation into spaces, squeeze blanks."""
    decomposed = unicodedata.normalize("NFKD", text.casefold())
    bare = "".join(c for c in decomposed if not unicodedata.combining(c))
    bare = bare.replace("ß", "ss").replace("æ", "ae").replace("ø", "o").replace("œ", "oe")
    bare = re.sub(r"['\u2019]", " ", bare)
    words = re.sub(r"[^\w\s]|_", " ", bare).split()
    return " ".join(words)


def title_key(title: str | None) -> str | None:
    """The matching key of a title: its main part (before ``:``, ``;``, ``=``
    or `` / ``), folded, without a leading article. ``None`` if nothing is left."""
    if not title:
        return None
    main = re.split(r"\s*[:;=]\s*|\s+/\s*", title.strip(), maxsplit=1)[0]
    words = _fold(main).split()
    if len(words) > 1 and words[0] in _ARTICLES:
        words = words[1:]
    key = " ".join(words)[:255]
    return key or None


def author_key(author: str | None) -> str | None:
    """The matching key of an author: the folded surname.

    ``Tolstoy, Leo, 1828-1910`` and ``Leo Tolstoy`` both give ``tolstoy``.
    """
    if not author:
        return None
    text = author.strip()
    if "," in text:
        text = text.split(",", 1)[0]
        words = _fold(text).split()
    else:
        words = [w for w in _fold(text).split() if not w.isdigit()]
        words = words[-1:]
    words = [w for w in words if not w.isdigit()]
    key = " ".join(words)[:255]
    return key or None


# -- what to look up ---------------------------------------------------------------


def _record_id_kind(code: str) -> str:
    code = code.strip().upper()
    if code in ("OCLC", "OCOLC"):
        return "oclc"
    if code == "LCCN":
        return "lccn"
    return "local"


def _normalise_record_id(kind: str, value: str) -> str | None:
    if kind == "oclc":
        return normalise_oclc(value)
    if kind == "lccn":
        return normalise_lccn(value)
    return value.strip() or None


def _unique(values: Iterable[Any]) -> tuple[Any, ...]:
    return tuple(dict.fromkeys(v for v in values if v))


def identifiers_of(request: Request, our_symbol: AgencyId | None = None) -> LookupKeys:
    """The keys to look the request up by (see :class:`LookupKeys`).

    ``supplierInfo`` entries naming us (``our_symbol``) contribute their
    ``bibliographicRecordId`` as a local record id.
    """
    bib = request.bibliographic_info
    record_ids: list[tuple[str, str]] = []
    for rid in bib.bibliographic_record_id:
        kind = _record_id_kind(rid.code.value)
        value = _normalise_record_id(kind, rid.identifier)
        if value:
            record_ids.append((kind, value))
    if our_symbol is not None:
        for info in request.supplier_info:
            if info.bibliographic_record_id and our_symbol.same_agency(info.supplier_code):
                value = info.bibliographic_record_id.identifier.strip()
                if value:
                    record_ids.append(("local", value))
    isbns: list[str] = []
    issns: list[str] = []
    for iid in bib.bibliographic_item_id:
        code = iid.code.value.strip().upper()
        if code == "ISBN":
            isbns.extend(isbn_forms(iid.identifier))
        elif code == "ISSN":
            issn = normalise_issn(iid.identifier)
            if issn:
                issns.append(issn)
    sur = (bib.supplier_unique_record_id or "").strip() or None
    return LookupKeys(
        supplier_unique_record_id=sur,
        record_ids=_unique(record_ids),
        isbns=_unique(isbns),
        issns=_unique(issns),
        title_key=title_key(bib.title),
        author_key=author_key(bib.author),
    )


# -- matching -------------------------------------------------------------------


def _record_isbns(record: HoldingsRecord) -> set[str]:
    return {n for n in (normalise_isbn(i) for i in record.isbns) if n}


def _record_issns(record: HoldingsRecord) -> set[str]:
    return {n for n in (normalise_issn(i) for i in record.issns) if n}


def _match(
    keys: LookupKeys, candidates: Sequence[HoldingsRecord]
) -> tuple[list[HoldingsRecord], str]:
    """The records of the first tier that matches, and what they matched on."""
    if keys.supplier_unique_record_id:
        hits = [r for r in candidates if r.record_id == keys.supplier_unique_record_id]
        if hits:
            return hits, f"supplierUniqueRecordId {keys.supplier_unique_record_id}"
    for kind, value in keys.record_ids:
        if kind == "oclc":
            hits = [r for r in candidates if value in {normalise_oclc(o) for o in r.oclc}]
            label = f"OCLC {value}"
        elif kind == "lccn":
            hits = [r for r in candidates if value in {normalise_lccn(x) for x in r.lccn}]
            label = f"LCCN {value}"
        else:
            hits = [r for r in candidates if r.record_id == value]
            label = f"record id {value}"
        if hits:
            return hits, label
    for isbn in keys.isbns:
        hits = [r for r in candidates if isbn in _record_isbns(r)]
        if hits:
            return hits, f"ISBN {isbn}"
    for issn in keys.issns:
        hits = [r for r in candidates if issn in _record_issns(r)]
        if hits:
            return hits, f"ISSN {issn}"
    if keys.title_key:
        same_title = [r for r in candidates if title_key(r.title) == keys.title_key]
        if keys.author_key:
            hits = [r for r in same_title if author_key(r.author) == keys.author_key]
            if hits:
                return hits, f"title and author '{keys.title_key}' / '{keys.author_key}'"
        elif len(same_title) == 1:
            return same_title, f"title '{keys.title_key}' (no author in the request)"
    return [], ""


def _location_rank(location: str | None, preference: Sequence[str]) -> int:
    folded = [p.casefold() for p in preference]
    loc = (location or "").casefold()
    return folded.index(loc) if loc in folded else len(folded)


def _describe_keys(keys: LookupKeys) -> str:
    parts: list[str] = []
    if keys.supplier_unique_record_id:
        parts.append(f"supplierUniqueRecordId {keys.supplier_unique_record_id}")
    parts += [f"{k.upper() if k != 'local' else 'record id'} {v}" for k, v in keys.record_ids]
    parts += [f"ISBN {i}" for i in keys.isbns if len(i) == 13]
    parts += [f"ISSN {i}" for i in keys.issns]
    if keys.title_key:
        parts.append(f"title '{keys.title_key}'")
    if keys.author_key:
        parts.append(f"author '{keys.author_key}'")
    return ", ".join(parts) or "nothing to match on"


def locate(
    request: Request,
    candidates: Sequence[HoldingsRecord],
    policy: Any,
    *,
    our_symbol: AgencyId | None = None,
    keys: LookupKeys | None = None,
) -> LocateResult:
    """Match the request against ``candidates`` and pick an item to lend (``keys``: its
    :func:`identifiers_of`, when the caller has them already).

    Order: supplierUniqueRecordId, record ids (OCLC, LCCN, local), ISBN/ISSN,
    title+author; the first tier with a hit decides.  Among its records'
    items, those in ``policy.non_lendable_locations`` count as
    non-circulating; an available item is chosen by
    ``policy.location_preference`` (unlisted locations last), then barcode.
    """
    if keys is None:
        keys = identifiers_of(request, our_symbol)
    records, matched_on = _match(keys, candidates)
    if not records:
        return LocateResult(
            outcome="not_held",
            reason=f"No holdings match the request ({_describe_keys(keys)}).",
        )
    non_lendable = {loc.casefold() for loc in getattr(policy, "non_lendable_locations", ())}
    preference = tuple(getattr(policy, "location_preference", ()))
    available: list[tuple[HoldingsRecord, HoldingsItem]] = []
    on_loan: list[tuple[HoldingsRecord, HoldingsItem]] = []
    restricted: list[tuple[HoldingsRecord, HoldingsItem]] = []
    missing: list[tuple[HoldingsRecord, HoldingsItem]] = []
    for record in records:
        for item in record.items:
            if (item.location or "").casefold() in non_lendable or item.status == "non_circulating":
                restricted.append((record, item))
            elif item.status == "available":
                available.append((record, item))
            elif item.status == "on_loan":
                on_loan.append((record, item))
            else:
                missing.append((record, item))
    ids = ", ".join(r.record_id for r in records)
    if available:
        record, item = min(
            available,
            key=lambda ri: (_location_rank(ri[1].location, preference), ri[1].barcode),
        )
        where = ", ".join(x for x in (item.location, item.call_number) if x)
        return LocateResult(
            outcome="available",
            record_id=record.record_id,
            item=item,
            matched_on=matched_on,
            reason=(
                f"Matched record {record.record_id} on {matched_on}; item {item.barcode}"
                + (f" ({where})" if where else "")
                + " is available."
            ),
        )
    if on_loan:
        dues = [i.due_date for _, i in on_loan if i.due_date is not None]
        earliest = min(dues) if dues else None
        record = on_loan[0][0]
        return LocateResult(
            outcome="on_loan",
            record_id=record.record_id,
            matched_on=matched_on,
            earliest_due=earliest,
            reason=(
                f"Matched record {ids} on {matched_on}; all {len(on_loan)} lendable "
                f"item(s) are on loan"
                + (f", the first due back {earliest.isoformat()}." if earliest else ".")
            ),
        )
    if restricted:
        record = restricted[0][0]
        return LocateResult(
            outcome="non_circulating",
            record_id=record.record_id,
            matched_on=matched_on,
            reason=(
                f"Matched record {ids} on {matched_on}; every item is non-circulating "
                f"or in a non-lendable location."
            ),
        )
    if missing:
        return LocateResult(
            outcome="missing",
            record_id=missing[0][0].record_id,
            matched_on=matched_on,
            reason=f"Matched record {ids} on {matched_on}; every item is missing.",
        )
    return LocateResult(
        outcome="not_held",
        record_id=records[0].record_id,
        matched_on=matched_on,
        reason=f"Matched record {ids} on {matched_on}, but it has no items.",
    )
