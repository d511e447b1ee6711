"""Lending staff API beyond the common request routes in node/api.py.

- ``GET /api/lending/requests?barcode=B&overdue=true`` (filters added to the
  common list: the located or shipped item barcode; loans past due)
- ``GET /api/lending/requests/{id}/pull-slip``: printable HTML slip
- ``GET /api/lending/pull-slips``: every request waiting to be pulled, one per page
- ``POST /api/lending/check-in`` ``{"barcode": "...", "note": "..."}``: scan-driven check-in

Errors are JSON (``node.api``'s middleware): 400 bad input, 404 unknown, 409 not now.
"""

from __future__ import annotations

from aiohttp import web

from . import lending_ops
from .api import LIST_FILTERS, _actor, _body, _json, _node
from .store import lending_repo

_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off", "")


def _flag(request: web.Request, name: str) -> bool:
    raw = request.query.get(name, "").strip().lower()
    if raw in _TRUE:
        return True
    if raw in _FALSE:
        return False
    raise ValueError(f"query parameter {name} must be true or false, not {raw!r}")


def list_filters(request: web.Request) -> list:
    """Extra filters of GET /api/lending/requests."""
    return lending_repo.search_filters(
        barcode=request.query.get("barcode"), overdue=_flag(request, "overdue"),
        now=_node(request).clock(),
    )


def _html(text: str) -> web.Response:
    return web.Response(text=text, content_type="text/html", charset="utf-8")


async def pull_slip(request: web.Request) -> web.Response:
    return _html(await lending_ops.pull_slip(_node(request), request.match_info["id"]))


async def pull_slips(request: web.Request) -> web.Response:
    page, _count = await lending_ops.pull_slips(_node(request))
    return _html(page)


async def check_in(request: web.Request) -> web.Response:
    data = await _body(request)
    note = data.get("note")
    if note is not None and not isinstance(note, str):
        raise ValueError("note must be text")
    view = await lending_ops.check_in_by_barcode(
        _node(request), data.get("barcode"), actor=_actor(request), note=note)
    return _json(view)


def setup(app: web.Application) -> None:
    """Add the lending routes."""
    LIST_FILTERS["lending"] = list_filters
    app.router.add_get("/api/lending/requests/{id}/pull-slip", pull_slip)
    app.router.add_get("/api/lending/pull-slips", pull_slips)
    app.router.add_post("/api/lending/check-in", check_in)
