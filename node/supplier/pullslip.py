"""Pull slips: a printable HTML page per lending request (Alma's "Print Slip").

Pure: takes the stored :class:`~.machine.LendingTransaction` (and the
partner's display name) and returns HTML text.  The request id and the item
barcode are drawn as Code 128 (code set B) barcodes in inline SVG, so a
scanner at the shipping desk or at check-in reads them; all text is escaped.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from html import escape

from .machine import LendingTransaction

# Code 128 bar/space widths (in modules) for values 0..106; 106 is the stop
# pattern (with its final 2-module bar).  Start B is 104.
_PATTERNS = (
    "212222", "222122", "222221", "121223", "121322", "131222", "122213", "122312", "132212",
    "221213", "221312", "231212", "112232", "122132", "122231", "113222", "123122", "123221",
    "223211", "221132", "221231", "213212", "223112", "312131", "311222", "321122", "321221",
    "312212", "322112", "322211", "212123", "212321", "232121", "111323", "131123", "131321",
    "112313", "132113", "132311", "211313", "231113", "231311", "112133", "112331", "132131",
    "113123", "113321", "133121", "313121", "211331", "231131", "213113", "213311", "213131",
    "311123", "311321", "331121", "312113", "312311", "332111", "314111", "221411", "431111",
    "111224", "111422", "121124", "121421", "141122", "141221", "112214", "112412", "122114",
    "122411", "142112", "142211", "241211", "221114", "413111", "241112", "134111", "111242",
    "121142", "121241", "114212", "124112", "124211", "411212", "421112", "421211", "212141",
    "214121", "412121", "111143", "111341", "131141", "114113", "114311", "411113", "411311",
    "113141", "114131", "311141", "411131", "211412", "211214", "211232", "2331112",
)
_START_B = 104
_STOP = 106


class BarcodeError(ValueError):
    """The text cannot be drawn as Code 128 B (printable ASCII only)."""


def code128_values(text: str) -> list[int]:
    """The symbol values of ``text`` in code set B: start, data, check, stop."""
    if not text:
        raise BarcodeError("nothing to encode")
    data = []
    for ch in text:
        code = ord(ch)
        if not 32 <= code <= 126:
            raise BarcodeError(f"{ch!r} cannot be encoded in Code 128 B")
        data.append(code - 32)
    check = (_START_B + sum(i * v for i, v in enumerate(data, start=1))) % 103
    return [_START_B, *data, check, _STOP]


def code128_modules(text: str) -> list[tuple[bool, int]]:
    """(is_bar, width) runs, quiet zones excluded."""
    runs: list[tuple[bool, int]] = []
    for value in code128_values(text):
        for i, width in enumerate(_PATTERNS[value]):
            runs.append((i % 2 == 0, int(width)))
    return runs


def code128_svg(text: str, *, module: float = 1.5, height: int = 50) -> str:
    """An inline SVG of ``text`` as Code 128 B, with quiet zones and the text below."""
    quiet = 10
    x = quiet
    bars = []
    for is_bar, width in code128_modules(text):
        if is_bar:
            bars.append(f'<rect x="{x * module:g}" y="0" width="{width * module:g}" '
                        f'height="{height}"/>')
        x += width
    total = (x + quiet) * module
    label = escape(text)
    return (
        f'<svg class="barcode" xmlns="http://www.w3.org/2000/svg" role="img" '
        f'aria-label="Code 128 barcode: {label}" width="{total:g}" height="{height + 16}" '
        f'viewBox="0 0 {total:g} {height + 16}">'
        f'<rect width="100%" height="100%" fill="#fff"/><g fill="#000">{"".join(bars)}</g>'
        f'<text x="{total / 2:g}" y="{height + 13}" text-anchor="middle" '
        f'font-family="monospace" font-size="12">{label}</text></svg>'
    )


def _barcode_or_text(text: str | None) -> str:
    if not text:
        return '<span class="missing">(none)</span>'
    try:
        return code128_svg(text)
    except BarcodeError:
        return f'<span class="code">{escape(text)}</span>'


_STYLE = """
body { font-family: sans-serif; margin: 0; }
.slip { padding: 1.5em; break-after: page; page-break-after: always; }
.slip:last-child { break-after: auto; page-break-after: auto; }
h1 { font-size: 1.3em; margin: 0 0 .6em; }
table { border-collapse: collapse; margin: .8em 0; }
th { text-align: left; padding: .2em 1em .2em 0; vertical-align: top; white-space: nowrap; }
td { padding: .2em 0; }
.codes { display: flex; gap: 3em; flex-wrap: wrap; }
.codes h2 { font-size: .9em; margin: .3em 0; }
.missing { color: #777; }
@media print { .noprint { display: none; } }
"""


def slip_fields(tx: LendingTransaction, partner_name: str | None = None) -> list[tuple[str, str]]:
    """The labelled lines of a slip (unescaped)."""
    r = tx.request
    located = tx.located
    barcode = item_barcode(tx)
    partner = tx.partner + (f" ({partner_name})" if partner_name else "")
    rows = [
        ("Request", tx.supplying_request_id),
        ("Their request id", tx.requesting_request_id),
        ("Service", r.service_type),
        ("Title", r.title or ""),
        ("Author", r.author or ""),
        ("Volume", r.volume or ""),
        ("Article / chapter", _join(r.title_of_component, r.author_of_component,
                                    f"pp. {r.pages_requested}" if r.pages_requested else None)),
        ("Call number", (located.call_number if located else None) or ""),
        ("Location", (located.location if located else None) or ""),
        ("Item barcode", barcode or ""),
        ("Partner", partner),
        ("Needed by", r.need_before.date().isoformat() if r.need_before else ""),
        ("Ship to", r.delivery_address or ""),
        ("Status", tx.state.value),
    ]
    return [(k, v) for k, v in rows if v or k in ("Title", "Call number", "Location",
                                                    "Item barcode", "Needed by")]


def item_barcode(tx: LendingTransaction) -> str | None:
    if tx.shipped_barcodes:
        return tx.shipped_barcodes[0]
    return tx.located.barcode if tx.located else None


def _join(*parts: str | None) -> str:
    return " ".join(p for p in parts if p)


def slip_html(tx: LendingTransaction, partner_name: str | None = None) -> str:
    """One slip as an HTML fragment (a ``<section>``)."""
    rows = "".join(
        f"<tr><th>{escape(label)}</th><td>{escape(value)}</td></tr>"
        for label, value in slip_fields(tx, partner_name)
    )
    barcodes = (
        f'<div><h2>Request {escape(tx.supplying_request_id)}</h2>'
        f'{_barcode_or_text(tx.supplying_request_id)}</div>'
        f'<div><h2>Item</h2>{_barcode_or_text(item_barcode(tx))}</div>'
    )
    title = escape(tx.request.title or "(no title)")
    return (f'<section class="slip"><h1>Pull slip: {title}</h1>'
            f'<div class="codes">{barcodes}</div><table>{rows}</table></section>')


def page(slips: Sequence[str] | Iterable[str], title: str = "Pull slips") -> str:
    """A whole printable page around slip fragments (one per printed page)."""
    body = "".join(slips) or '<p class="missing">Nothing is waiting to be pulled.</p>'
    return (
        "<!DOCTYPE html>\n"
        f'<html lang="en"><head><meta charset="utf-8"><title>{escape(title)}</title>'
        f"<style>{_STYLE}</style></head><body>{body}</body></html>\n"
    )
