"""The borrowing request form (what staff or a patron fill in).

The fields follow Alma's "create borrowing request" form: the item (title,
author, identifiers, publication, volume; pages and article title for
copies), the patron, the format (physical -> ISO ``Loan``, digital ->
``Copy``), delivery wishes (pickup location, needed-by date, reading room
only), payment (willing to pay, maximum fee), copyright agreement (copies),
service level, a note, and the partners or rota to ask.

``parse_form`` checks everything at once and raises :class:`FormError`
with one message per bad or missing field.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass, fields
from datetime import date
from decimal import Decimal, InvalidOperation
from typing import Any

from ..protocol.codes import OPEN_LISTS, ServiceType, normalise_open
from .rota import find_partner, find_rota

FORMATS = {"physical": ServiceType.LOAN, "digital": ServiceType.COPY}


class FormError(Exception):
    """The form has problems: ``problems`` maps each field to one message."""

    def __init__(self, problems: dict[str, str]):
        self.problems = dict(problems)
        super().__init__(
            "; ".join(f"{name}: {message}" for name, message in self.problems.items())
        )


@dataclass(frozen=True, kw_only=True, slots=True)
class BorrowingForm:
    patron_id: str
    pickup_location: str
    title: str | None = None
    author: str | None = None
    edition: str | None = None
    isbn: str | None = None  # normalised: digits (and X), no hyphens
    issn: str | None = None  # normalised: NNNN-NNNX
    oclc: str | None = None  # normalised: digits only
    identifiers: tuple[tuple[str, str], ...] = ()  # other (code, value) pairs, e.g. ("LCCN", ..)
    publisher: str | None = None
    publication_date: str | None = None
    place_of_publication: str | None = None
    volume: str | None = None
    issue: str | None = None
    pages: str | None = None  # copies
    title_of_component: str | None = None  # copies: the article or chapter
    author_of_component: str | None = None
    patron_name: str | None = None
    format: str = "physical"  # "physical" (Loan) | "digital" (Copy)
    requested_media: str | None = None
    allow_other_format: bool = False
    preferred_delivery_method: str | None = None
    language: str | None = None
    needed_by: date | None = None
    reading_room_only: bool = False
    willing_to_pay: bool = False
    max_fee: Decimal | None = None
    currency: str | None = None
    copyright_agreed: bool = False
    copyright_compliance: str | None = None  # e.g. "US-CCG"; "Other" when not given
    service_level: str | None = None
    note: str | None = None
    partners: tuple[str, ...] = ()
    rota: str | None = None

    @property
    def service_type(self) -> ServiceType:
        return FORMATS[self.format]

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, date):
                value = value.isoformat()
            elif isinstance(value, Decimal):
                value = str(value)
            elif f.name == "identifiers":
                value = [list(pair) for pair in value]
            elif isinstance(value, tuple):
                value = list(value)
            out[f.name] = value
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> BorrowingForm:
        kwargs = dict(data)
        if kwargs.get("needed_by") is not None:
            kwargs["needed_by"] = date.fromisoformat(kwargs["needed_by"])
        if kwargs.get("max_fee") is not None:
            kwargs["max_fee"] = Decimal(kwargs["max_fee"])
        kwargs["identifiers"] = tuple(tuple(p) for p in kwargs.get("identifiers", ()))
        kwargs["partners"] = tuple(kwargs.get("partners", ()))
        return cls(**kwargs)


# -- parsing -----------------------------------------------------------------------

_TEXT_FIELDS = (
    "title", "author", "edition", "publisher", "publication_date", "place_of_publication",
    "volume", "issue", "pages", "title_of_component", "author_of_component", "patron_name",
    "requested_media", "language", "note",
)
_BOOL_FIELDS = (
    "allow_other_format", "reading_room_only", "willing_to_pay", "copyright_agreed",
)
KNOWN_FIELDS = frozenset(
    _TEXT_FIELDS
    + _BOOL_FIELDS
    + (
        "patron_id", "pickup_location", "isbn", "issn", "oclc", "identifiers", "format",
        "preferred_delivery_method", "needed_by", "max_fee", "currency",
        "copyright_compliance", "service_level", "partners", "rota",
    )
)


def parse_form(
    data: Mapping[str, Any],
    *,
    policy: Any,
    partners: Mapping[str, Any],
    rotas: Any,
    today: date | None = None,
) -> BorrowingForm:
    """Check a submitted form and return it normalised, or raise :class:`FormError`.

    ``today`` (optional) lets a needed-by date in the past be refused.
    """
    problems: dict[str, str] = {}
    values: dict[str, Any] = {}

    for name in sorted(set(data) - KNOWN_FIELDS):
        problems[name] = "not a field of the borrowing request form"

    for name in _TEXT_FIELDS:
        try:
            values[name] = _text(data.get(name))
        except ValueError as exc:
            problems[name] = str(exc)
    for name in _BOOL_FIELDS:
        try:
            values[name] = _bool(data.get(name))
        except ValueError as exc:
            problems[name] = str(exc)

    # the patron and where they collect the item
    try:
        values["patron_id"] = _text(data.get("patron_id"))
        if values["patron_id"] is None:
            problems["patron_id"] = "required: the patron the request is for"
    except ValueError as exc:
        problems["patron_id"] = str(exc)
    try:
        pickup = _text(data.get("pickup_location"))
        allowed = tuple(getattr(policy, "pickup_locations", ()) or ())
        if pickup is None:
            problems["pickup_location"] = "required: where the patron collects the item" + (
                f" (one of: {', '.join(allowed)})" if allowed else ""
            )
        elif allowed:
            match = [p for p in allowed if p.casefold() == pickup.casefold()]
            if not match:
                problems["pickup_location"] = (
                    f"{pickup!r} is not a pickup location; choose one of: {', '.join(allowed)}"
                )
            else:
                pickup = match[0]
        values["pickup_location"] = pickup
    except ValueError as exc:
        problems["pickup_location"] = str(exc)

    # identifiers
    for name, check in (("isbn", _isbn), ("issn", _issn), ("oclc", _oclc)):
        try:
            raw = _text(data.get(name))
            values[name] = check(raw) if raw is not None else None
        except ValueError as exc:
            problems[name] = str(exc)
    try:
        values["identifiers"] = _identifiers(data.get("identifiers"))
    except ValueError as exc:
        problems["identifiers"] = str(exc)
    if (
        "title" not in problems
        and values.get("title") is None
        and not any(values.get(n) for n in ("isbn", "issn", "oclc", "identifiers"))
        and not any(n in problems for n in ("isbn", "issn", "oclc", "identifiers"))
    ):
        problems["title"] = "required: give a title or an identifier (ISBN, ISSN, OCLC number)"

    # format and service
    fmt = data.get("format")
    fmt = "physical" if fmt in (None, "") else str(fmt).strip().casefold()
    if fmt not in FORMATS:
        problems["format"] = "must be 'physical' (a loan) or 'digital' (a copy)"
        fmt = "physical"
    values["format"] = fmt
    try:
        level = _text(data.get("service_level"))
        if level is not None:
            code = normalise_open("ServiceLevel", level)
            if code.value not in OPEN_LISTS["ServiceLevel"]:
                raise ValueError(
                    f"{level!r} is not a service level; choose one of: "
                    + ", ".join(sorted(OPEN_LISTS["ServiceLevel"]))
                )
            level = code.value
        values["service_level"] = level
    except ValueError as exc:
        problems["service_level"] = str(exc)
    try:
        method = _text(data.get("preferred_delivery_method"))
        values["preferred_delivery_method"] = (
            normalise_open("DeliveryMethod", method).value if method else None
        )
    except ValueError as exc:
        problems["preferred_delivery_method"] = str(exc)
    try:
        needed = _date(data.get("needed_by"))
        if needed is not None and today is not None and needed < today:
            raise ValueError(f"{needed.isoformat()} is in the past")
        values["needed_by"] = needed
    except ValueError as exc:
        problems["needed_by"] = str(exc)

    # payment
    try:
        fee = _decimal(data.get("max_fee"))
        values["max_fee"] = fee
    except ValueError as exc:
        problems["max_fee"] = str(exc)
        fee = None
    if fee is not None:
        if data.get("willing_to_pay") in (None, ""):
            values["willing_to_pay"] = True
        elif values.get("willing_to_pay") is False and "willing_to_pay" not in problems:
            problems["willing_to_pay"] = (
                "a maximum fee is given but 'willing to pay' is not ticked"
            )
    try:
        currency = _text(data.get("currency"))
        if currency is not None:
            currency = currency.upper()
            if not re.fullmatch(r"[A-Z]{3}", currency):
                raise ValueError(f"{currency!r} is not an ISO 4217 currency code (e.g. EUR)")
        elif fee is not None:
            raise ValueError("required with a maximum fee: the ISO 4217 code, e.g. EUR")
        values["currency"] = currency
    except ValueError as exc:
        problems["currency"] = str(exc)

    # copyright (copies)
    try:
        values["copyright_compliance"] = _text(data.get("copyright_compliance"))
    except ValueError as exc:
        problems["copyright_compliance"] = str(exc)
    if (fmt == "digital" and not values.get("copyright_agreed")
            and "copyright_agreed" not in problems):
        problems["copyright_agreed"] = (
            "a copy can only be requested once the patron agrees to the copyright terms"
        )

    # partners or rota
    try:
        chosen = _symbols(data.get("partners"))
        bad = []
        resolved = []
        for symbol in chosen:
            partner = find_partner(partners, symbol)
            if partner is None:
                bad.append(f"{symbol} is not a configured partner")
            elif not getattr(partner, "borrow_from", False):
                bad.append(f"{partner.symbol} is a partner we do not borrow from")
            else:
                resolved.append(str(partner.symbol))
        if bad:
            raise ValueError("; ".join(bad))
        values["partners"] = tuple(dict.fromkeys(resolved))
    except ValueError as exc:
        problems["partners"] = str(exc)
    try:
        rota_name = _text(data.get("rota"))
        if rota_name is not None:
            if data.get("partners"):
                raise ValueError("give either partners or a rota, not both")
            rota = find_rota(rotas, rota_name)
            if rota is None:
                raise ValueError(f"{rota_name!r} is not a configured rota")
            rota_name = str(rota.name)
        values["rota"] = rota_name
    except ValueError as exc:
        problems["rota"] = str(exc)

    if problems:
        raise FormError(problems)
    return BorrowingForm(**{k: v for k, v in values.items() if v is not None})


# -- field parsers ----------------------------------------------------------------


def _text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str):
        raise ValueError("must be text")
    value = value.strip()
    return value or None


_TRUE = {"true", "yes", "y", "on", "1"}
_FALSE = {"false", "no", "n", "off", "0", ""}


def _bool(value: Any) -> bool:
    if value is None:
        return False
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().casefold() in _TRUE | _FALSE:
        return value.strip().casefold() in _TRUE
    raise ValueError("must be yes or no (true/false)")


def _date(value: Any) -> date | None:
    if value in (None, ""):
        return None
    if isinstance(value, date):
        return value
    try:
        return date.fromisoformat(str(value).strip()[:10])
    except ValueError:
        raise ValueError(f"{value!r} is not a date (YYYY-MM-DD)") from None


def _decimal(value: Any) -> Decimal | None:
    if value in (None, ""):
        return None
    if isinstance(value, bool):
        raise ValueError("must be an amount such as 25.00")
    try:
        amount = Decimal(str(value).strip())
    except InvalidOperation:
        raise ValueError(f"{value!r} is not an amount (such as 25.00)") from None
    if not amount.is_finite() or amount < 0:
        raise ValueError(f"{value!r} is not an amount of zero or more")
    return amount


def _isbn(raw: str) -> str:
    value = re.sub(r"[\s-]", "", raw).upper()
    if len(value) == 10 and re.fullmatch(r"\d{9}[\dX]", value):
        total = sum((10 - i) * (10 if c == "X" else int(c)) for i, c in enumerate(value))
        if total % 11 == 0:
            return value
    elif len(value) == 13 and value.isdigit():
        total = sum((1 if i % 2 == 0 else 3) * int(c) for i, c in enumerate(value))
        if total % 10 == 0:
            return value
    else:
        raise ValueError(f"{raw!r} is not an ISBN: expected 10 or 13 digits")
    raise ValueError(f"{raw!r} is not a valid ISBN: the check digit is wrong")


def _issn(raw: str) -> str:
    value = re.sub(r"[\s-]", "", raw).upper()
    if not re.fullmatch(r"\d{7}[\dX]", value):
        raise ValueError(f"{raw!r} is not an ISSN: expected 8 digits, as NNNN-NNNN")
    total = sum((8 - i) * int(c) for i, c in enumerate(value[:7]))
    check = (11 - total % 11) % 11
    if value[7] != ("X" if check == 10 else str(check)):
        raise ValueError(f"{raw!r} is not a valid ISSN: the check digit is wrong")
    return f"{value[:4]}-{value[4:]}"


def _oclc(raw: str) -> str:
    prefix = r"^(?:\(ocolc\)\s*)?(?:ocm|ocn|on)?\s*"
    value = re.sub(prefix, "", raw.strip(), flags=re.IGNORECASE)
    if not value.isdigit():
        raise ValueError(f"{raw!r} is not an OCLC number: expected digits")
    return str(int(value))


def _identifiers(value: Any) -> tuple[tuple[str, str], ...]:
    """``[{"code": "LCCN", "value": ".."}]`` or ``{"LCCN": ".."}`` -> pairs."""
    if value in (None, "", [], {}):
        return ()
    pairs: list[tuple[Any, Any]] = []
    if isinstance(value, Mapping):
        pairs = list(value.items())
    elif isinstance(value, (list, tuple)):
        for item in value:
            if isinstance(item, Mapping) and set(item) == {"code", "value"}:
                pairs.append((item["code"], item["value"]))
            elif isinstance(item, (list, tuple)) and len(item) == 2:
                pairs.append((item[0], item[1]))
            else:
                raise ValueError('each identifier must be {"code": "LCCN", "value": "..."}')
    else:
        raise ValueError('must be a list of {"code": "LCCN", "value": "..."}')
    out = []
    for code, ident in pairs:
        if not (isinstance(code, str) and code.strip() and isinstance(ident, str)
                and ident.strip()):
            raise ValueError("each identifier needs a code and a value, both text")
        out.append((code.strip(), ident.strip()))
    return tuple(out)


def _symbols(value: Any) -> tuple[str, ...]:
    if value in (None, "", []):
        return ()
    if isinstance(value, str):
        items = [v for v in re.split(r"[,\s]+", value) if v]
    elif isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
        items = [v.strip() for v in value if v.strip()]
    else:
        raise ValueError('must be a list of partner symbols, e.g. ["ISIL:DK-710100"]')
    return tuple(items)


# -- duplicates ---------------------------------------------------------------------


def _norm_title(title: str) -> str:
    text = unicodedata.normalize("NFKD", title).casefold()
    text = "".join(c for c in text if not unicodedata.combining(c))
    words = re.findall(r"[^\W_]+", text)
    if words and words[0] in {"the", "a", "an", "der", "die", "das", "le", "la", "les", "el"}:
        words = words[1:]
    return " ".join(words)


def _isbn13(isbn: str) -> str:
    if len(isbn) == 13:
        return isbn
    core = "978" + isbn[:9]
    total = sum((1 if i % 2 == 0 else 3) * int(c) for i, c in enumerate(core))
    return core + str((10 - total % 10) % 10)


def duplicate_key(form: BorrowingForm) -> str:
    """A key equal for requests that are probably the same thing for the same patron.

    Patron + the strongest identifier (ISBN as ISBN-13, ISSN, OCLC, else the
    normalised title) + the volume; for copies also the article and pages.
    """
    if form.isbn:
        item = f"isbn:{_isbn13(form.isbn)}"
    elif form.issn:
        item = f"issn:{form.issn}"
    elif form.oclc:
        item = f"oclc:{form.oclc}"
    elif form.title:
        item = f"title:{_norm_title(form.title)}"
    else:
        ids = sorted(form.identifiers)
        item = "id:" + ",".join(f"{c.casefold()}={v.casefold()}" for c, v in ids)
    parts = [form.patron_id.strip().casefold(), form.format, item]
    if form.volume:
        parts.append(f"v:{_norm_title(form.volume)}")
    if form.format == "digital":
        parts.append(f"c:{_norm_title(form.title_of_component or '')}")
        pages = re.sub(r"\s+", "", form.pages or "")
        parts.append(f"p:{pages}")
    return "|".join(parts)
