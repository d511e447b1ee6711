"""Parsing holdings import files (CSV and MARCXML) into :class:`HoldingsRecord`.

Pure parsing: the service or CLI writes the result to ``holdings_*``.  Bad
rows are reported with their line (CSV) or record number (MARCXML) and a
reason, and left out; good rows are kept.  An identifier that does not parse
(a wrong ISBN check digit, say) is reported and dropped, and the row is kept
if it is still usable.

CSV: a header row, one row per item, columns ``record_id, title, author,
isbn, issn, oclc, lccn, barcode, call_number, location, status`` (and
optionally ``due_date``); several identifiers in one cell are separated by
``;`` or ``|``.  Rows sharing a ``record_id`` are items of one record.

MARCXML (namespaced or not; a ``collection`` or a single ``record``): 001
record id, 020$a ISBN, 022$a ISSN, 035$a ``(OCoLC)…`` OCLC number, 010$a
LCCN, 245$a$b title, 100$a author (110/111 as a fallback); items from 852
($b location, $h$i call number, $p barcode) or, when present, 876 ($p
barcode, $a item id when there is no $p; location and call number from the
first 852).  ``mapping`` overrides any of these with ``"TAG$codes"`` specs.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date

from lxml import etree

from .locate import (
    ITEM_STATUSES,
    HoldingsItem,
    HoldingsRecord,
    normalise_isbn,
    normalise_issn,
    normalise_lccn,
    normalise_oclc,
)

CSV_COLUMNS = (
    "record_id",
    "title",
    "author",
    "isbn",
    "issn",
    "oclc",
    "lccn",
    "barcode",
    "call_number",
    "location",
    "status",
    "due_date",
)

DEFAULT_MARC_MAPPING: dict[str, str] = {
    "record_id": "001",
    "isbn": "020$a",
    "issn": "022$a",
    "oclc": "035$a",
    "lccn": "010$a",
    "title": "245$a$b",
    "author": "100$a",
    "location": "852$b",
    "call_number": "852$h$i",
    "barcode": "852$p",
    "item_barcode": "876$p",
    "item_id": "876$a",
    "status": "",  # no standard field; e.g. "876$j" with values as in the CSV status column
}

_SEPARATORS = re.compile(r"[;|]")


@dataclass(slots=True)
class ParseReport:
    records: list[HoldingsRecord] = field(default_factory=list)
    problems: list[tuple[int, str]] = field(default_factory=list)

    @property
    def item_count(self) -> int:
        return sum(len(r.items) for r in self.records)


def parse_status(text: str | None) -> str | None:
    """``"On loan"``, ``"on-loan"``, ``"ON_LOAN"`` -> ``"on_loan"``; blank ->
    ``"available"``; ``None`` when it is not a known status."""
    if text is None or not text.strip():
        return "available"
    value = re.sub(r"[\s\-]+", "_", text.strip().lower())
    aliases = {"checked_out": "on_loan", "loaned": "on_loan", "lost": "missing",
               "noncirculating": "non_circulating", "reference": "non_circulating"}
    value = aliases.get(value, value)
    return value if value in ITEM_STATUSES else None


def _split(cell: str | None) -> list[str]:
    if not cell:
        return []
    return [part.strip() for part in _SEPARATORS.split(cell) if part.strip()]


class _Builder:
    """Collects rows into records, checking barcodes and identifiers."""

    def __init__(self, report: ParseReport):
        self.report = report
        self.records: dict[str, HoldingsRecord] = {}
        self.barcodes: dict[str, int] = {}

    def problem(self, where: int, reason: str) -> None:
        self.report.problems.append((where, reason))

    def identifiers(
        self, where: int, isbns: Iterable[str], issns: Iterable[str],
        oclcs: Iterable[str], lccns: Iterable[str],
    ) -> tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...], tuple[str, ...]]:
        out: dict[str, list[str]] = {"isbn": [], "issn": [], "oclc": [], "lccn": []}
        checks = (
            ("isbn", "ISBN", isbns, normalise_isbn),
            ("issn", "ISSN", issns, normalise_issn),
            ("oclc", "OCLC number", oclcs, normalise_oclc),
            ("lccn", "LCCN", lccns, normalise_lccn),
        )
        for kind, label, values, normalise in checks:
            for raw in values:
                value = normalise(raw)
                if value is None:
                    self.problem(where, f"{label} {raw!r} is not valid; ignored")
                elif value not in out[kind]:
                    out[kind].append(value)
        return (tuple(out["isbn"]), tuple(out["issn"]), tuple(out["oclc"]), tuple(out["lccn"]))

    def add(
        self, where: int, *, record_id: str | None, title: str | None, author: str | None,
        isbns: tuple[str, ...], issns: tuple[str, ...], oclc: tuple[str, ...],
        lccn: tuple[str, ...], items: list[HoldingsItem],
    ) -> None:
        if not record_id:
            for kind, values in (("oclc", oclc), ("isbn", isbns), ("issn", issns), ("lccn", lccn)):
                if values:
                    record_id = f"{kind}:{values[0]}"
                    break
        if not title and not (isbns or issns or oclc or lccn):
            self.problem(where, "no title and no identifiers (ISBN, ISSN, OCLC, LCCN); skipped")
            return
        if not record_id:
            self.problem(where, "no record_id and no identifier to key the record by; skipped")
            return
        kept: list[HoldingsItem] = []
        for item in items:
            first = self.barcodes.get(item.barcode)
            if first is not None:
                self.problem(
                    where, f"duplicate barcode {item.barcode!r} (first seen at {first}); skipped"
                )
                continue
            self.barcodes[item.barcode] = where
            kept.append(item)
        if items and not kept:
            return
        existing = self.records.get(record_id)
        if existing is None:
            self.records[record_id] = HoldingsRecord(
                record_id=record_id, title=title or None, author=author or None,
                isbns=isbns, issns=issns, oclc=oclc, lccn=lccn, items=tuple(kept),
            )
            return

        def merged(a: tuple[str, ...], b: tuple[str, ...]) -> tuple[str, ...]:
            return tuple(dict.fromkeys(a + b))

        self.records[record_id] = HoldingsRecord(
            record_id=record_id,
            title=existing.title or title or None,
            author=existing.author or author or None,
            isbns=merged(existing.isbns, isbns),
            issns=merged(existing.issns, issns),
            oclc=merged(existing.oclc, oclc),
            lccn=merged(existing.lccn, lccn),
            items=existing.items + tuple(kept),
        )

    def finish(self) -> ParseReport:
        self.report.records = list(self.records.values())
        return self.report


# -- CSV -------------------------------------------------------------------------


def _column_map(header: list[str], columns: Mapping[str, str] | None) -> dict[str, int]:
    """Our column name -> index in the row.

    ``columns`` maps our names to the file's headers (``{"barcode": "Item
    Barcode"}``); the reverse direction is accepted too.
    """
    names = {h.strip().casefold(): i for i, h in enumerate(header)}
    rename: dict[str, str] = {}
    for key, value in (columns or {}).items():
        if key in CSV_COLUMNS:
            rename[key] = value
        elif value in CSV_COLUMNS:
            rename[value] = key
        else:
            raise ValueError(
                f"column mapping {key!r} -> {value!r}: neither is one of {', '.join(CSV_COLUMNS)}"
            )
    found: dict[str, int] = {}
    for ours in CSV_COLUMNS:
        theirs = rename.get(ours, ours).strip().casefold()
        if theirs in names:
            found[ours] = names[theirs]
    return found


def parse_csv(text: str, columns: Mapping[str, str] | None = None) -> ParseReport:
    """Parse a CSV (comma, or tab when the header has tabs and no commas)."""
    report = ParseReport()
    builder = _Builder(report)
    text = text.lstrip("\ufeff")
    first_line = text.split("\n", 1)[0]
    delimiter = "\t" if "\t" in first_line and "," not in first_line else ","
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    try:
        header = next(reader)
    except StopIteration:
        report.problems.append((1, "the file is empty"))
        return report
    cols = _column_map(header, columns)
    if "barcode" not in cols:
        report.problems.append((1, "no barcode column in the header; no items will be read"))
    if "title" not in cols and not {"isbn", "issn", "oclc", "lccn"} & cols.keys():
        report.problems.append((1, "no title or identifier column in the header"))
        return report
    start = reader.line_num
    while True:
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            report.problems.append((reader.line_num, f"unreadable CSV: {exc}"))
            break
        line = start + 1
        start = reader.line_num
        if not any(cell.strip() for cell in row):
            continue

        def cell(name: str, row: list[str] = row) -> str:
            index = cols.get(name)
            if index is None or index >= len(row):
                return ""
            return row[index].strip()

        status = parse_status(cell("status"))
        if status is None:
            report.problems.append(
                (line, (f"bad status {cell('status')!r} "
                        f"(expected one of {', '.join(ITEM_STATUSES)}); skipped"))
            )
            continue
        due: date | None = None
        if cell("due_date"):
            try:
                due = date.fromisoformat(cell("due_date"))
            except ValueError:
                report.problems.append((line, f"bad due_date {cell('due_date')!r}; skipped"))
                continue
        isbns, issns, oclc, lccn = builder.identifiers(
            line, _split(cell("isbn")), _split(cell("issn")), _split(cell("oclc")),
            _split(cell("lccn")),
        )
        items: list[HoldingsItem] = []
        if cell("barcode"):
            items.append(
                HoldingsItem(
                    barcode=cell("barcode"),
                    call_number=cell("call_number") or None,
                    location=cell("location") or None,
                    status=status,
                    due_date=due,
                )
            )
        builder.add(
            line, record_id=cell("record_id") or None, title=cell("title") or None,
            author=cell("author") or None, isbns=isbns, issns=issns, oclc=oclc, lccn=lccn,
            items=items,
        )
    return builder.finish()


# -- MARCXML --------------------------------------------------------------------


def _local(tag: object) -> str:
    return etree.QName(tag).localname if isinstance(tag, str) else ""


@dataclass(frozen=True, slots=True)
class _Spec:
    tag: str
    codes: str  # "" for control fields

    @classmethod
    def parse(cls, text: str) -> _Spec | None:
        text = text.strip()
        if not text:
            return None
        tag, _, rest = text.partition("$")
        return cls(tag=tag.strip(), codes=rest.replace("$", ""))


class _Marc:
    """One ``record`` element: fields in order, subfields as (code, text)."""

    def __init__(self, element: etree._Element):
        self.control: dict[str, list[str]] = {}
        self.data: list[tuple[str, list[tuple[str, str]]]] = []
        for child in element:
            name = _local(child.tag)
            tag = (child.get("tag") or "").strip()
            if name == "controlfield":
                self.control.setdefault(tag, []).append((child.text or "").strip())
            elif name == "datafield":
                subs = [
                    ((sf.get("code") or "").strip(), (sf.text or "").strip())
                    for sf in child
                    if _local(sf.tag) == "subfield"
                ]
                self.data.append((tag, subs))

    def fields(self, tag: str) -> list[list[tuple[str, str]]]:
        return [subs for t, subs in self.data if t == tag]

    def values(self, spec: _Spec | None) -> list[str]:
        """Each occurrence of the spec joined ($a$b of one field -> one value)."""
        if spec is None:
            return []
        if not spec.codes:
            return [v for v in self.control.get(spec.tag, []) if v]
        out = []
        for subs in self.fields(spec.tag):
            text = " ".join(v for c, v in subs if c in spec.codes and v)
            if text:
                out.append(text)
        return out

    def each_subfield(self, spec: _Spec | None) -> list[str]:
        if spec is None:
            return []
        if not spec.codes:
            return self.values(spec)
        return [v for subs in self.fields(spec.tag) for c, v in subs if c in spec.codes and v]


def _from(subs: list[tuple[str, str]], spec: _Spec | None) -> str | None:
    if spec is None:
        return None
    text = " ".join(v for c, v in subs if c in spec.codes and v)
    return text or None


def _clean_title(text: str) -> str:
    return re.sub(r"\s*[/:;,.=]\s*$", "", re.sub(r"\s+([:;/=])", r" \1", text)).strip()


def _clean_author(text: str) -> str:
    return re.sub(r"[\s,.;:]+$", "", text).strip()


def _items(
    marc: _Marc, specs: dict[str, _Spec | None], where: int, builder: _Builder
) -> list[HoldingsItem] | None:
    """Items of one record; ``None`` when one had a bad status (record skipped)."""
    barcode = specs["barcode"]
    item_barcode = specs["item_barcode"]
    loc, call, status_spec = specs["location"], specs["call_number"], specs["status"]

    def first_of(spec: _Spec | None) -> str | None:
        if spec is None:
            return None
        for subs in marc.fields(spec.tag):
            value = _from(subs, spec)
            if value:
                return value
        return None

    rows: list[tuple[str | None, str | None, str | None, str | None]] = []
    item_fields = marc.fields(item_barcode.tag) if item_barcode else []
    if item_fields and item_barcode is not None:
        item_id = specs["item_id"]
        for subs in item_fields:
            code = _from(subs, item_barcode) or (
                _from(subs, item_id) if item_id and item_id.tag == item_barcode.tag else None
            )

            def pick(spec: _Spec | None, subs: list[tuple[str, str]] = subs) -> str | None:
                if spec is not None and spec.tag == item_barcode.tag:
                    return _from(subs, spec)
                return first_of(spec)

            rows.append((code, pick(loc), pick(call), pick(status_spec)))
    elif barcode is not None:
        for subs in marc.fields(barcode.tag):
            def pick(spec: _Spec | None, subs: list[tuple[str, str]] = subs) -> str | None:
                if spec is not None and spec.tag == barcode.tag:
                    return _from(subs, spec)
                return first_of(spec)

            code = _from(subs, barcode)
            if code:
                rows.append((code, pick(loc), pick(call), pick(status_spec)))
    items: list[HoldingsItem] = []
    for code, location, call_number, status_text in rows:
        if not code:
            builder.problem(where, "an item field has no barcode; item skipped")
            continue
        status = parse_status(status_text)
        if status is None:
            builder.problem(where, f"bad status {status_text!r} for item {code}; record skipped")
            return None
        items.append(
            HoldingsItem(barcode=code, call_number=call_number, location=location, status=status)
        )
    return items


def parse_marcxml(data: bytes, mapping: Mapping[str, str] | None = None) -> ParseReport:
    """Parse MARCXML bytes; problems are numbered by record (1-based)."""
    report = ParseReport()
    builder = _Builder(report)
    unknown = set(mapping or {}) - DEFAULT_MARC_MAPPING.keys()
    if unknown:
        raise ValueError(
            f"unknown MARC mapping key(s) {', '.join(sorted(unknown))} "
            f"(known: {', '.join(DEFAULT_MARC_MAPPING)})"
        )
    specs = {k: _Spec.parse(v) for k, v in {**DEFAULT_MARC_MAPPING, **(mapping or {})}.items()}
    if mapping and "barcode" in mapping and "item_barcode" not in mapping:
        specs["item_barcode"] = None  # a custom item field replaces the 852/876 default
    parser = etree.XMLParser(
        resolve_entities=False, no_network=True, huge_tree=False, remove_comments=True
    )
    try:
        root = etree.fromstring(data, parser)
    except etree.XMLSyntaxError as exc:
        report.problems.append((0, f"not well-formed XML: {exc}"))
        return report
    records = [root] if _local(root.tag) == "record" else [
        el for el in root.iter() if _local(el.tag) == "record"
    ]
    if not records:
        report.problems.append((0, "no MARC record elements found"))
    for number, element in enumerate(records, start=1):
        marc = _Marc(element)
        record_id = next(iter(marc.values(specs["record_id"])), None)
        titles = marc.values(specs["title"])
        authors = marc.values(specs["author"]) or marc.values(_Spec("110", "a")) or marc.values(
            _Spec("111", "a")
        )
        oclc_spec = specs["oclc"]
        oclc_raw = [
            v for v in marc.each_subfield(specs["oclc"])
            if oclc_spec is None or oclc_spec.tag != "035" or v.upper().startswith("(OCOLC)")
        ]
        isbns, issns, oclc, lccn = builder.identifiers(
            number,
            marc.each_subfield(specs["isbn"]),
            marc.each_subfield(specs["issn"]),
            oclc_raw,
            marc.each_subfield(specs["lccn"]),
        )
        items = _items(marc, specs, number, builder)
        if items is None:
            continue
        builder.add(
            number,
            record_id=record_id,
            title=_clean_title(titles[0]) if titles else None,
            author=_clean_author(authors[0]) if authors else None,
            isbns=isbns, issns=issns, oclc=oclc, lccn=lccn, items=items,
        )
    return builder.finish()
