"""Staff, patron and admin JSON API.

Handlers only translate between HTTP and the service: parse the query or
JSON body, call one service method, map its exceptions to status codes.

- 400: the input is wrong (``{"error": ..., "errors": {field: message}}``): a request
  form with problems, or a malformed action body (``StaffActionInvalid``: unknown
  action, a field missing or of the wrong type; one message per field)
- 404: no such request
- 409: the action is well formed but not allowed now (``StaffActionError``: the text says
  why), or a reload while the configuration file has problems (each with its line)
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from datetime import date
from typing import Any

from aiohttp import web

from . import borrowing_ops, reachability
from .borrower.form import FormError
from .config import Closure
from .machine import StaffActionError, StaffActionInvalid
from .service import NotFound
from .store import borrowing_repo, holdings_repo, outbox_repo, repo

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _node(request: web.Request):
    from .http import NODE

    return request.app[NODE]


def _actor(request: web.Request) -> str:
    # "staff:<name>" of the authenticated account (node/staff_auth.py middleware).
    from .staff_auth import actor

    return actor(request)


def _json(data: Any, status: int = 200) -> web.Response:
    return web.json_response(data, status=status, dumps=lambda o: json.dumps(o, default=str))


def _error(status: int, message: str, **extra: Any) -> web.Response:
    return _json({"error": message, **extra}, status=status)


@web.middleware
async def api_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Turn the service's exceptions into clear JSON answers, never a 500 for bad input."""
    if not request.path.startswith("/api/"):
        return await handler(request)
    try:
        return await handler(request)
    except FormError as exc:
        return _error(400, "the request form has problems", errors=exc.problems)
    except StaffActionInvalid as exc:
        return _error(400, f"the action has problems: {exc}", errors=exc.problems)
    except StaffActionError as exc:
        return _error(409, str(exc))
    except NotFound as exc:
        return _error(404, str(exc))
    except (ValueError, KeyError) as exc:
        return _error(400, f"bad input: {exc}")


async def _body(request: web.Request) -> dict[str, Any]:
    try:
        data = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise ValueError("the body must be a JSON object") from None
    if not isinstance(data, dict):
        raise ValueError("the body must be a JSON object")
    return data


def _int(request: web.Request, name: str, default: int, maximum: int = 500) -> int:
    raw = request.query.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"query parameter {name} must be a whole number") from None
    return max(0, min(value, maximum))


# -- both sides -------------------------------------------------------------------


def _role(request: web.Request) -> str:
    return request.match_info["role"]


# A side's own list filters (set by api_lending/api_borrowing): role -> fn(request) ->
# extra WHERE clauses for repo.search; raise ValueError for a bad parameter.
LIST_FILTERS: dict[str, Callable[[web.Request], list]] = {}


async def list_requests(request: web.Request) -> web.Response:
    node = _node(request)
    q = request.query
    attention = q.get("attention")
    side_filters = LIST_FILTERS.get(_role(request))
    async with node.read_engine.connect() as conn:
        found = await repo.search(
            conn, _role(request), status=q.get("status"), partner=q.get("partner"),
            q=q.get("q"), needs_attention=None if attention is None else attention in ("1", "true"),
            limit=_int(request, "limit", 50), offset=_int(request, "offset", 0, 10**9),
            cursor=q.get("cursor") or None, extra=side_filters(request) if side_filters else (),
        )
    return _json(found)


async def show_request(request: web.Request) -> web.Response:
    node = _node(request)
    # ?brief=1: without the messages' XML and the outbox, for a client that polls the status.
    full = request.query.get("brief") not in ("1", "true")
    async with node.read_engine.connect() as conn:
        view = await repo.view_by_public_id(conn, _role(request), request.match_info["id"],
                                            full=full)
    if view is None:
        raise NotFound(f"no {_role(request)} request {request.match_info['id']}")
    return _json(view)


async def request_action(request: web.Request) -> web.Response:
    data = await _body(request)
    data.pop("actor", None)  # who acts is the authenticated account, not what the body says
    view = await _node(request).staff_action(
        _role(request), request.match_info["id"], data, actor=_actor(request)
    )
    return _json(view)


async def get_closure(request: web.Request) -> web.Response:
    node = _node(request)
    kind = _role(request)
    async with node.read_engine.connect() as conn:
        closure = await repo.closure(conn, kind, node.config)
    today = node.clock().date()
    return _json(_closure_view(kind, closure, today))


async def patron_closure(request: web.Request) -> web.Response:
    """The borrowing closure as patrons may read it: the patron page shows it as a notice."""
    node = _node(request)
    async with node.read_engine.connect() as conn:
        closure = await repo.closure(conn, "borrowing", node.config)
    return _json(_closure_view("borrowing", closure, node.clock().date()))


def _closure_view(kind: str, closure, today: date) -> dict[str, Any]:
    return {
        "kind": kind, "active": closure.active,
        "start": closure.start.isoformat() if closure.start else None,
        "end": closure.end.isoformat() if closure.end else None,
        "note": closure.note, "in_effect": closure.applies_on(today),
        "description": closure.describe(kind.capitalize()),
    }


async def put_closure(request: web.Request) -> web.Response:
    """Admin: set or clear "temporarily inactive for lending/borrowing"."""
    node = _node(request)
    kind = _role(request)
    data = await _body(request)
    active = data.get("active")
    if not isinstance(active, bool):
        raise ValueError("active must be true or false")
    start, end = _date(data, "start"), _date(data, "end")
    if problem := Closure(active=active, start=start, end=end).range_problem():
        raise ValueError(problem)
    note = data.get("note") or ""
    async with node.engine.begin() as conn:
        await repo.set_closure(conn, kind, active=active, start=start, end=end, note=str(note),
                               actor=_actor(request), now=node.clock())
        closure = await repo.closure(conn, kind, node.config)
    return _json(_closure_view(kind, closure, node.clock().date()))


def _date(data: dict[str, Any], key: str) -> date | None:
    value = data.get(key)
    if value in (None, ""):
        return None
    try:
        return date.fromisoformat(str(value))
    except ValueError:
        raise ValueError(f"{key} must be a date like 2026-12-20, not {value!r}") from None


# -- borrowing -------------------------------------------------------------------------


async def create_borrowing(request: web.Request) -> web.Response:
    view = await _node(request).create_borrowing(await _body(request), actor=_actor(request))
    return _json(view, status=201)


async def patron_create(request: web.Request) -> web.Response:
    data = await _body(request)
    patron = str(data.get("patron_id") or "")
    view = await _node(request).create_borrowing(data, actor=f"patron:{patron}")
    return _json(view, status=201)


async def patron_requests(request: web.Request) -> web.Response:
    node = _node(request)
    patron = request.match_info["patron_id"]
    async with node.read_engine.connect() as conn:
        found = await repo.search(conn, "borrowing", limit=_int(request, "limit", 50),
                                  extra=[borrowing_repo.patron_filter(patron)])
        due = await borrowing_repo.due_dates(conn, [r["id"] for r in found["requests"]])
    return _json({"requests": [{**r, "due_date": due.get(r["id"])} for r in found["requests"]]})


async def whoami(request: web.Request) -> web.Response:
    """The signed-in account: name, role, the sides it may act on (node/staff_auth.py)."""
    from .staff_auth import IDENTITY

    return _json(request[IDENTITY].describe())


async def patron_renew(request: web.Request) -> web.Response:
    """``POST /api/patron/{patron_id}/requests/{id}/renew`` ``{"note"?, "due_date"?}``:
    the patron asks to renew their loan (``Renew`` to the lender).  A patron token
    reaches only its own patron id; a request of another patron is 404.  Answers the
    request as the patron sees it (``renewal_requested`` true); 409 when a renewal
    cannot be asked now (not on loan, recalled, already asked)."""
    data = await _body(request) if request.can_read_body else {}
    view = await borrowing_ops.patron_renew(
        _node(request), request.match_info["patron_id"], request.match_info["id"], data)
    return _json(view)


# -- admin -----------------------------------------------------------------------------


async def admin_partners(request: web.Request) -> web.Response:
    return _json({"partners": await reachability.partners(_node(request))})


async def admin_holdings(request: web.Request) -> web.Response:
    """``GET /api/admin/holdings``: what auto-locate has to go on (records, items per status,
    when the last import changed something)."""
    async with _node(request).read_engine.connect() as conn:
        return _json(await holdings_repo.summary(conn))


async def check_partner(request: web.Request) -> web.Response:
    return _json(await reachability.check(_node(request), request.match_info["symbol"]))


async def reload_config(request: web.Request) -> web.Response:
    from .config import ConfigError, load
    from .http import MEMBER

    node = _node(request)
    path = node.config.source_path
    if path is None:
        return _error(409, "this node was not started from a configuration file")
    try:
        config = load(path)
    except ConfigError as exc:  # a file that cannot be read too
        return _error(409, f"{path} has problems: nothing reloaded",
                      problems=[str(p) for p in exc.problems])
    notes = await node.reload(config)
    if (member := request.app.get(MEMBER)) is not None:
        member.reload_others()  # the node's other processes, through their parent
    return _json({"reloaded": str(path), "notes": notes})


async def list_outbox(request: web.Request) -> web.Response:
    node = _node(request)
    async with node.read_engine.connect() as conn:
        rows = await outbox_repo.list_rows(conn, state=request.query.get("state"),
                                           limit=_int(request, "limit", 100))
    return _json({"outbox": rows})


async def retry_outbox(request: web.Request) -> web.Response:
    node = _node(request)
    async with node.engine.begin() as conn:
        found = await outbox_repo.retry_now(conn, int(request.match_info["id"]), now=node.clock())
    if not found:
        raise NotFound(f"no outbox message {request.match_info['id']}")
    node._wake_outbox()
    return _json({"retrying": int(request.match_info["id"])})


def setup_api(app: web.Application) -> None:
    app.middlewares.append(api_errors)
    sides = "{role:lending|borrowing}"
    app.router.add_get(f"/api/{sides}/requests", list_requests)
    app.router.add_get(f"/api/{sides}/requests/{{id}}", show_request)
    app.router.add_post(f"/api/{sides}/requests/{{id}}/actions", request_action)
    app.router.add_get(f"/api/{sides}/closure", get_closure)
    app.router.add_put(f"/api/{sides}/closure", put_closure)
    app.router.add_post("/api/borrowing/requests", create_borrowing)
    app.router.add_post("/api/patron/requests", patron_create)
    app.router.add_get("/api/patron/{patron_id}/requests", patron_requests)
    app.router.add_post("/api/patron/{patron_id}/requests/{id}/renew", patron_renew)
    app.router.add_get("/api/patron/closure", patron_closure)
    app.router.add_get("/api/whoami", whoami)
    app.router.add_post("/api/admin/reload", reload_config)
    app.router.add_get("/api/admin/outbox", list_outbox)
    app.router.add_post("/api/admin/outbox/{id}/retry", retry_outbox)
    app.router.add_get("/api/admin/partners", admin_partners)
    app.router.add_get("/api/admin/holdings", admin_holdings)
    app.router.add_post("/api/admin/partners/{symbol}/check", check_partner)
    from . import api_borrowing, api_lending

    api_lending.setup(app)
    api_borrowing.setup(app)
