"""Borrowing staff API beyond the common request routes in node/api.py.

- ``POST /api/borrowing/receive`` ``{"request_id" | "lender_request_id", "barcodes": [...],
  "in_transit"?, "note"?}``: Alma's "Receiving Items" by the external identifier,
  one temporary barcode per volume.
- ``POST /api/borrowing/return`` ``{"barcode", "note"?}``: scan the temporary barcode;
  the item goes back to its lender (``ShippedReturn``); the answer names the destination.
- ``GET /api/borrowing/requests/{id}/notices``: what the patron was told, and when.
- ``GET /api/borrowing/partners``: the partners, with the lending closures we learned.

Errors are the common ones (node/api.py): 400 bad input, 404 unknown request,
409 not allowed now, each as ``{"error": "..."}``.
"""

from __future__ import annotations

from aiohttp import web

from . import borrowing_ops


def _api():
    from . import api

    return api


async def receive(request: web.Request) -> web.Response:
    api = _api()
    data = await api._body(request)
    unknown = sorted(set(data) - {"request_id", "lender_request_id", "barcodes", "in_transit",
                                  "note"})
    if unknown:
        raise ValueError(f"unknown field(s): {', '.join(unknown)}")
    view = await borrowing_ops.receive(
        api._node(request), barcodes=data.get("barcodes"), actor=api._actor(request),
        request_id=borrowing_ops.optional_text(data.get("request_id"), "request_id"),
        lender_request_id=borrowing_ops.optional_text(data.get("lender_request_id"),
                                                      "lender_request_id"),
        in_transit=data.get("in_transit", False), note=data.get("note"),
    )
    return api._json(view)


async def return_item(request: web.Request) -> web.Response:
    api = _api()
    data = await api._body(request)
    unknown = sorted(set(data) - {"barcode", "note"})
    if unknown:
        raise ValueError(f"unknown field(s): {', '.join(unknown)}")
    view = await borrowing_ops.return_by_barcode(
        api._node(request), data.get("barcode"), actor=api._actor(request),
        note=data.get("note"))
    return api._json(view)


async def notices(request: web.Request) -> web.Response:
    api = _api()
    public_id = request.match_info["id"]
    found = await borrowing_ops.notices(api._node(request), public_id)
    return api._json({"id": public_id, "notices": found})


async def partners(request: web.Request) -> web.Response:
    api = _api()
    return api._json({"partners": await borrowing_ops.partners(api._node(request))})


def setup(app: web.Application) -> None:
    """Add the borrowing routes."""
    app.router.add_post("/api/borrowing/receive", receive)
    app.router.add_post("/api/borrowing/return", return_item)
    app.router.add_get("/api/borrowing/requests/{id}/notices", notices)
    app.router.add_get("/api/borrowing/partners", partners)
