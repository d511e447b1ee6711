"""Who may use the staff, patron and admin JSON API.

Staff accounts are ``[[staff]]`` tables in the configuration (``ill-node staff
add/list/remove``); only the SHA-256 of each token is stored. Requests carry
``Authorization: Bearer <token>``. Roles are ordered read-only < staff < admin,
and :data:`ROUTE_ROLES` (the one table) gives the least role for each route.
An account's ``sides`` limit the sides whose routes it may change (any method but
GET/HEAD under ``/api/lending/``, ``/api/borrowing/``; patron routes are borrowing);
it reads both. ``GET /api/whoami`` says who the caller is and what it may do.

Patrons hold a token signed by the node (HMAC-SHA256 of the patron id with
``[node] patron_secret``; ``ill-node patron token PATRON_ID``). A patron token
reaches only ``/api/patron/{their id}/...`` and ``POST /api/patron/requests``
for themselves, plus what every patron may read (the borrowing closure notice,
``/api/whoami``).

With no staff accounts configured the API stays open, but only to requests
from this host (loopback), as before; a warning is logged at start.

The account sets the actor written in a request's history: ``staff:<name>``
(``patron:<id>`` for patrons).
"""

from __future__ import annotations

import base64
import binascii
import fnmatch
import hashlib
import hmac
import ipaddress
import json
import logging
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from aiohttp import web

from .config import STAFF_SIDES, NodeConfig, StaffRole

log = logging.getLogger("node.staff_auth")

STAFF_TOKEN_PREFIX = "ills_"
PATRON_TOKEN_PREFIX = "illp_"

_RANK = {StaffRole.READ_ONLY: 0, StaffRole.STAFF: 1, StaffRole.ADMIN: 2}
PATRON = "patron"  # pseudo-role: a patron, on their own requests only
PATRONS = "patrons"  # pseudo-role: any patron (or read-only staff): what every patron may read
_READS = ("GET", "HEAD")

# (method, route pattern (aiohttp canonical path, fnmatch), least role). First match wins;
# a pattern's role may be PATRON: patrons (their own id) or staff of the given fallback role.
ROUTE_ROLES: tuple[tuple[str, str, StaffRole | str], ...] = (
    ("GET", "/api/whoami", PATRONS),
    ("GET", "/api/patron/closure", PATRONS),
    ("PUT", "/api/{role}/closure", StaffRole.ADMIN),
    ("*", "/api/admin/*", StaffRole.ADMIN),
    ("*", "/api/partners*", StaffRole.ADMIN),
    ("GET", "/api/patron/{patron_id}/*", PATRON),
    ("POST", "/api/patron/requests", PATRON),
    ("*", "/api/patron/*", PATRON),
    ("GET", "/api/*", StaffRole.READ_ONLY),
    ("HEAD", "/api/*", StaffRole.READ_ONLY),
    ("*", "/api/*", StaffRole.STAFF),  # actions, creating requests
)
# What staff need on a patron route (in place of PATRON, PATRONS).
PATRON_ROUTE_STAFF = {"GET": StaffRole.READ_ONLY, "HEAD": StaffRole.READ_ONLY}


def least_role(method: str, route: str) -> StaffRole | str:
    for m, pattern, role in ROUTE_ROLES:
        if (m == "*" or m == method) and fnmatch.fnmatchcase(route, pattern):
            return role
    return StaffRole.ADMIN  # not reached for /api/ routes; deny by default


# -- tokens ------------------------------------------------------------------------------


def new_staff_token() -> str:
    return STAFF_TOKEN_PREFIX + secrets.token_urlsafe(32)


def token_sha256(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def patron_token(secret: str, patron_id: str) -> str:
    """``illp_<base64 id>.<base64 HMAC-SHA256(secret, id)>``."""
    mac = hmac.new(secret.encode(), b"patron:" + patron_id.encode(), hashlib.sha256).digest()
    return f"{PATRON_TOKEN_PREFIX}{_b64(patron_id.encode())}.{_b64(mac)}"


def patron_of(secret: str | None, token: str) -> str | None:
    """The patron id a patron token was made for, or None if it is not valid."""
    if secret is None or not token.startswith(PATRON_TOKEN_PREFIX):
        return None
    body, _, mac = token[len(PATRON_TOKEN_PREFIX):].partition(".")
    try:
        patron_id = _unb64(body).decode()
        given = _unb64(mac)
    except (binascii.Error, ValueError, UnicodeDecodeError):
        return None
    expected = patron_token(secret, patron_id).partition(".")[2]
    if not patron_id or not hmac.compare_digest(_unb64(expected), given):
        return None
    return patron_id


@dataclass(frozen=True, slots=True)
class Identity:
    """Who is calling: a staff account (role), a patron, or the open local mode."""

    actor: str  # "staff:<name>", "patron:<id>"
    role: StaffRole | None = None  # staff accounts (and the open mode: admin)
    patron_id: str | None = None
    sides: tuple[str, ...] = STAFF_SIDES  # a staff account's [[staff]] sides
    open_mode: bool = False  # no staff accounts configured: loopback callers act as admin

    def acts_on(self) -> tuple[str, ...]:
        """The sides this identity may change (patrons: none through staff routes)."""
        if self.role is None or self.role == StaffRole.READ_ONLY:
            return ()
        return self.sides

    def describe(self) -> dict:
        """``GET /api/whoami``: who is calling and what the console should offer them."""
        if self.patron_id is not None:
            return {"actor": self.actor, "name": self.patron_id, "role": PATRON,
                    "patron_id": self.patron_id, "acts_on": [], "admin": False, "open": False}
        assert self.role is not None
        return {"actor": self.actor, "name": self.actor.partition(":")[2], "role": self.role.value,
                "patron_id": None, "acts_on": list(self.acts_on()),
                "admin": self.role == StaffRole.ADMIN, "open": self.open_mode}


def side_of(request: web.Request) -> str | None:
    """The side a route belongs to: lending, borrowing (patron routes too), or None."""
    role = request.match_info.get("role")
    if role in STAFF_SIDES:
        return role
    section = request.path.split("/")[2:3]
    if section and section[0] in STAFF_SIDES:
        return section[0]
    return "borrowing" if section == ["patron"] else None


IDENTITY = web.RequestKey("identity", Identity)


def actor(request: web.Request) -> str:
    """The history actor of an API request (set by :func:`middleware`)."""
    identity = request.get(IDENTITY)
    if identity is not None:
        return identity.actor
    return "staff:" + request.headers.get("X-Staff-User", "staff")


def resolve(config: NodeConfig, authorization: str | None) -> Identity | None:
    """The identity a ``Authorization`` header proves, or None."""
    if not authorization:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        return None
    if token.startswith(PATRON_TOKEN_PREFIX):
        patron_id = patron_of(config.node.patron_secret, token)
        return Identity(actor=f"patron:{patron_id}", patron_id=patron_id) if patron_id else None
    digest = token_sha256(token)
    found = None
    for account in config.staff:  # compare every one: constant time over the list
        if account.token_sha256 is not None and hmac.compare_digest(account.token_sha256, digest):
            found = account
    if found is None:
        return None
    return Identity(actor=f"staff:{found.name}", role=found.role, sides=found.sides)


def _is_loopback(remote: str | None) -> bool:
    if not remote:
        return False
    try:
        return ipaddress.ip_address(remote.split("%")[0]).is_loopback
    except ValueError:
        return False


def _deny(status: int, message: str) -> web.Response:
    headers = {"WWW-Authenticate": 'Bearer realm="ill-node"'} if status == 401 else None
    return web.json_response({"error": message}, status=status, headers=headers)


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _config(request: web.Request) -> NodeConfig:
    from .http import NODE

    return request.app[NODE].config


@web.middleware
async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Authenticate and authorise every ``/api/`` request (see ROUTE_ROLES)."""
    if not request.path.startswith("/api/"):
        return await handler(request)
    config = _config(request)
    resource = request.match_info.route.resource
    if resource is None:  # no route: let aiohttp answer 404/405
        return await handler(request)
    route = resource.canonical
    need = least_role(request.method, route)

    if not config.staff:
        # Open mode: as before issue 7, but only from this host.
        if not _is_loopback(request.remote):
            return _deny(401, "no staff accounts are configured: the API answers only "
                              "requests from this host")
        identity = resolve(config, request.headers.get("Authorization"))
        if identity is None:
            identity = Identity(actor="staff:" + request.headers.get("X-Staff-User", "staff"),
                                role=StaffRole.ADMIN, open_mode=True)
        request[IDENTITY] = identity
        return await handler(request)

    identity = resolve(config, request.headers.get("Authorization"))
    if identity is None:
        return _deny(401, "authentication required: Authorization: Bearer <token>")
    request[IDENTITY] = identity

    if identity.patron_id is not None:
        if need == PATRONS:
            return await handler(request)
        if need != PATRON:
            return _deny(403, "a patron token reaches only the patron's own requests")
        denial = await _patron_owns(request, identity.patron_id)
        if denial is not None:
            return denial
        return await handler(request)

    if need in (PATRON, PATRONS):
        need = PATRON_ROUTE_STAFF.get(request.method, StaffRole.STAFF)
    assert identity.role is not None
    if _RANK[identity.role] < _RANK[need]:
        return _deny(403, f"this needs the {need.value} role "
                          f"({identity.actor} is {identity.role.value})")
    side = side_of(request)
    if request.method not in _READS and side is not None and side not in identity.sides:
        return _deny(403, f"{identity.actor} may act only on {' and '.join(identity.sides)}, "
                          f"not on {side}")
    return await handler(request)


async def _patron_owns(request: web.Request, patron_id: str) -> web.Response | None:
    """A patron may only name themselves: in the path, or in the request form."""
    in_path = request.match_info.get("patron_id")
    if in_path is not None:
        return None if in_path == patron_id else _deny(403, "not your request")
    if request.method == "POST":
        try:
            data = json.loads(await request.read() or b"{}")
        except (ValueError, UnicodeDecodeError):
            return None  # the handler answers 400
        if isinstance(data, dict) and str(data.get("patron_id") or "") != patron_id:
            return _deny(403, "a patron may only place requests for themselves")
        return None
    return _deny(403, "not your request")


def open_mode_warning(config: NodeConfig) -> None:
    if not config.staff:
        log.warning("no [[staff]] accounts configured: the staff API is open to requests from "
                    "this host only (add one: ill-node staff add NAME --role admin --config FILE)")
