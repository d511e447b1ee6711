"""Deterministic mutations of ISO 18626 documents.

Used by the differential schema tests (our XSDs against the official ones) and
meant to be reused by reader/fuzz tests: every mutant is a fresh lxml tree
derived from one valid document by one small, named change, such as deleting
an element, swapping two siblings, or putting a bad value in a typed field.

    for m in mutants(root, "request-maximal"):
        m.id       # "request-maximal|delete|request/header/timestamp"
        m.root     # the mutated document (a new tree, the caller's to keep)
        m.target   # local name of the element the change was made on

No randomness: the same input always gives the same mutants in the same
order, so a failure names a reproducible case.
"""

from __future__ import annotations

import copy
import enum
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from lxml import etree

from node.protocol import codes

NS = codes.NAMESPACE
XSI = "http://www.w3.org/2001/XMLSchema-instance"
XS = "http://www.w3.org/2001/XMLSchema"
OTHER_NS = "urn:example:not-iso18626"

VERSION = f"{{{NS}}}version"
SCHEME = f"{{{NS}}}scheme"

# --- what kind of value each leaf holds, by element name (both editions) ---

DATETIME_ELEMENTS = frozenset(
    {
        "timestamp",
        "timestampReceived",
        "needBeforeDate",
        "startDate",
        "endDate",
        "dateSent",
        "retryAfter",
        "retryBefore",
        "expectedDeliveryDate",
        "dueDate",
        "lastChange",
    }
)
INTEGER_ELEMENTS = frozenset({"sortOrder"})
DECIMAL_ELEMENTS = frozenset({"monetaryValue"})
BOOLEAN_ELEMENTS = frozenset({"sentToPatron"})  # xs:boolean, not Y/N

CLOSED_ELEMENTS: dict[str, type[enum.Enum]] = {
    "action": codes.Action,
    "status": codes.Status,
    "reasonForMessage": codes.ReasonForMessage,
    "messageStatus": codes.MessageStatus,
    "errorType": codes.ErrorType,
    "requestType": codes.RequestType,
    "requestSubType": codes.RequestSubType,
    "serviceType": codes.ServiceType,
    "preferredEdition": codes.PreferredEdition,
    "answerYesNo": codes.YesNo,
    "anyEdition": codes.YesNo,
    "sendToPatron": codes.YesNo,
    "insurance": codes.YesNo,
    "insuranceThirdParty": codes.YesNo,
}

BAD_DATETIMES = (
    "2026-13-40T00:00:00Z",  # no such month/day
    "2026-01-01T00:00:00+0000",  # offset without colon (mod-rs)
    "2026-01-01",  # a date, not a dateTime
    "2026-01-01T00:00:00",  # no zone: still valid xs:dateTime
    "2026-01-01T24:00:01Z",
    "2025-02-29T12:00:00Z",  # not a leap year
    "2024-02-29T12:00:00Z",  # leap year: valid
    "2026-01-01T00:00:00.123456789+01:00",  # valid
    " 2026-01-01T00:00:00Z ",  # whitespace collapses: valid
    "2026-1-1T00:00:00Z",
    "abc",
)
BAD_INTEGERS = ("-1", "0", "+7", "007", "-0", "1.0", "1e3", " 3 ", "abc", "99999999999999999999999")
BAD_DECIMALS = ("abc", "1,50", "1.5e3", "-0.5", ".5", "5.", "+1.0", " 2.00 ", "INF", "NaN")
BAD_BOOLEANS = ("true", "false", "1", "0", "TRUE", "yes", "Y", " true ")
EMPTY_VALUES = ("", "  ")


@dataclass(frozen=True)
class Mutant:
    id: str
    root: etree._Element
    target: str  # local name of the element changed ("" for none)

    def tobytes(self) -> bytes:
        return etree.tostring(self.root, xml_declaration=True, encoding="UTF-8")


def local(el: etree._Element) -> str:
    return etree.QName(el).localname


def elements(root: etree._Element) -> list[etree._Element]:
    """Elements of the tree in document order (no comments or PIs)."""
    return list(root.iter(etree.Element))


def is_leaf(el: etree._Element) -> bool:
    return next(el.iterchildren(etree.Element), None) is None


def path_of(el: etree._Element) -> str:
    """A readable path of local names, with [n] where siblings share a name."""
    parts = []
    while el is not None:
        name = local(el)
        parent = el.getparent()
        if parent is not None:
            same = [c for c in parent.iterchildren(etree.Element) if c.tag == el.tag]
            if len(same) > 1:
                name += f"[{same.index(el) + 1}]"
        parts.append(name)
        el = parent
    return "/".join(reversed(parts[:-1])) or parts[-1]


def shape(root: etree._Element) -> tuple:
    """The structure of a document, ignoring text: equal shapes mutate alike."""
    return tuple(
        (
            path_of(el),
            tuple(sorted(el.attrib)),
            el.text.strip() if local(el) in CLOSED_ELEMENTS and el.text else None,
        )
        for el in elements(root)
    )


def leaf_values(el: etree._Element) -> tuple[str, ...]:
    """Replacement texts worth trying for leaf ``el`` (valid and invalid)."""
    name = local(el)
    current = (el.text or "").strip()
    if name in DATETIME_ELEMENTS:
        return BAD_DATETIMES + EMPTY_VALUES
    if name in INTEGER_ELEMENTS:
        return BAD_INTEGERS + EMPTY_VALUES
    if name in DECIMAL_ELEMENTS:
        return BAD_DECIMALS + EMPTY_VALUES
    if name in BOOLEAN_ELEMENTS:
        return BAD_BOOLEANS + EMPTY_VALUES
    if name in CLOSED_ELEMENTS:
        # every value either edition knows, then near misses of the current one
        values = [m.value for m in CLOSED_ELEMENTS[name]]
        values += ["Foo", current.lower(), current.upper(), f" {current}", f"{current} "]
        if name == "errorType":
            values.append("UnrecognizedDataValue")  # the 2021 text's spelling
        return tuple(dict.fromkeys(v for v in values if v != current)) + EMPTY_VALUES
    return EMPTY_VALUES


def mutants(root: etree._Element, name: str) -> Iterator[Mutant]:
    """All single-step mutants of the document ``root`` (which is not modified)."""
    base = elements(root)

    def make(kind: str, index: int | None, change) -> Mutant:
        doc = copy.deepcopy(root)
        target = elements(doc)[index] if index is not None else doc
        new_root = change(doc, target)
        where = path_of(base[index]) if index is not None else "/"
        return Mutant(
            id=f"{name}|{kind}|{where}",
            root=doc if new_root is None else new_root,
            target=local(base[index]) if index is not None else "",
        )

    # -- the envelope's attributes --
    yield from _attribute_mutants(root, name)

    for i, el in enumerate(base):
        top = i == 0
        leaf = is_leaf(el)

        if not top:
            yield make("delete", i, lambda d, t: t.getparent().remove(t))
            yield make("duplicate", i, lambda d, t: t.addnext(copy.deepcopy(t)))
            nxt = el.getnext()
            while nxt is not None and not isinstance(nxt.tag, str):
                nxt = nxt.getnext()
            if nxt is not None and nxt.tag != el.tag:
                yield make("swap-with-next", i, _swap_with_next)
            # the whole subtree as a document of its own
            yield make("as-root", i, lambda d, t: copy.deepcopy(t))

        yield _unqualified(root, i, f"{name}|unqualified|{path_of(el)}", local(el))
        yield make(
            "other-namespace", i, lambda d, t: _rename(t, etree.QName(OTHER_NS, local(t)).text)
        )
        yield make("unknown-attribute", i, lambda d, t: t.set(f"{{{NS}}}frobnicate", "1"))

        if leaf:
            for value in leaf_values(el):
                yield make(f"text={value!r}", i, _set_text(value))
            yield make("scheme-added", i, lambda d, t: t.set(SCHEME, "http://example.org/list"))
            yield make("xsi:type=xs:string", i, _set_xsi_type)
            yield make("xsi:nil", i, _set_xsi_nil)
            if SCHEME in el.attrib:
                yield make("scheme-unprefixed", i, _unprefix_scheme)
                yield make("scheme-not-a-uri", i, lambda d, t: t.set(SCHEME, "http://exa mple/%zz"))
        else:
            yield make("children-removed", i, _remove_children)
            yield make("text-in-complex", i, lambda d, t: setattr(t, "text", "stray text"))
            yield make("unknown-first-child", i, _insert_unknown(first=True))
            yield make("unknown-last-child", i, _insert_unknown(first=False))


def _attribute_mutants(root: etree._Element, name: str) -> Iterator[Mutant]:
    def variant(kind: str, change) -> Mutant:
        doc = copy.deepcopy(root)
        change(doc)
        return Mutant(id=f"{name}|{kind}|{local(root)}", root=doc, target=local(root))

    version = root.get(VERSION)

    def unprefix(d):
        d.attrib.pop(VERSION, None)
        d.set("version", version or "1.2")

    def both(d):
        d.set("version", version or "1.2")

    yield variant("version-unprefixed", unprefix)
    yield variant("version-dropped", lambda d: d.attrib.pop(VERSION, None))
    yield variant("version-and-unprefixed-version", both)
    yield variant("version-empty", lambda d: d.set(VERSION, ""))
    yield variant(
        "version-other-edition", lambda d: d.set(VERSION, "2021-2" if version == "1.2" else "1.2")
    )
    yield variant("comment-and-pi-added", _add_comment_and_pi)


def _swap_with_next(doc, target):
    nxt = target.getnext()
    while not isinstance(nxt.tag, str):
        nxt = nxt.getnext()
    nxt.addnext(target)  # moves target after its next element sibling


def _rename(el: etree._Element, tag: str) -> None:
    el.tag = tag


def _unqualified(root: etree._Element, index: int, mutant_id: str, target: str) -> Mutant:
    """Element ``index`` moved to no namespace.

    libxml2 does not write the ``xmlns=""`` such an element needs under a
    default namespace, so the serialised mutant would silently be the
    original again. The copy is therefore rebuilt with a prefix for the
    ISO namespace and no default namespace at all.
    """
    nsmap = {p: uri for p, uri in root.nsmap.items() if p is not None and uri != NS}
    nsmap["ill"] = NS

    def rebuild(el: etree._Element, parent: etree._Element | None) -> etree._Element:
        if parent is None:
            new = etree.Element(el.tag, attrib=dict(el.attrib), nsmap=nsmap)
        else:
            new = etree.SubElement(parent, el.tag, attrib=dict(el.attrib))
        new.text, new.tail = el.text, el.tail
        for child in el.iterchildren(etree.Element):
            rebuild(child, new)
        return new

    doc = rebuild(root, None)
    elements(doc)[index].tag = target
    return Mutant(id=mutant_id, root=doc, target=target)


def _set_text(value: str):
    def change(doc, target):
        target.text = value

    return change


def _set_xsi_type(doc, target):
    # A prefix for XML Schema must be in scope for the QName value: declare it
    # on a wrapper-free copy by rebuilding the element with an extended nsmap.
    nsmap = dict(target.nsmap)
    nsmap.setdefault("xs", XS)
    prefix = next(p for p, uri in nsmap.items() if uri == XS)
    replacement = etree.Element(target.tag, attrib=dict(target.attrib), nsmap=nsmap)
    replacement.text = target.text
    replacement.tail = target.tail
    replacement.set(f"{{{XSI}}}type", f"{prefix}:string")
    parent = target.getparent()
    if parent is None:
        return replacement
    parent.replace(target, replacement)
    return None


def _set_xsi_nil(doc, target):
    target.text = None
    target.set(f"{{{XSI}}}nil", "true")


def _unprefix_scheme(doc, target):
    value = target.attrib.pop(SCHEME)
    target.set("scheme", value)


def _remove_children(doc, target):
    for child in list(target):
        target.remove(child)


def _insert_unknown(first: bool):
    def change(doc, target):
        extra = etree.Element(f"{{{NS}}}frobnicate")
        extra.text = "x"
        if first:
            target.insert(0, extra)
        else:
            target.append(extra)

    return change


def _add_comment_and_pi(doc):
    doc.insert(0, etree.Comment(" a comment "))
    doc.append(etree.ProcessingInstruction("ill-node", "test"))


def unique(items: Iterable[Mutant]) -> list[Mutant]:
    """Drop mutants whose serialised document equals an earlier one."""
    seen: set[bytes] = set()
    out = []
    for m in items:
        key = etree.tostring(m.root)
        if key not in seen:
            seen.add(key)
            out.append(m)
    return out
