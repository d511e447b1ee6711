"""The staff console (``/console/``) and the patron request page (``/patron/``).

Plain static files from ``node/console/`` (HTML, CSS and vanilla JavaScript
modules; no build step, nothing from a CDN), served with their content types
and a strict Content-Security-Policy: scripts, styles and API calls only from
the node itself, no inline script or style, no framing.  The pages drive the
JSON API in ``node/api*.py``.
"""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

STATIC = Path(__file__).resolve().parent / "console"

CONTENT_TYPES = {
    ".html": "text/html",
    ".js": "text/javascript",
    ".css": "text/css",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
}

CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'")

SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-cache",
}

# The page each prefix serves for its bare path.
PAGES = {"console": "index.html", "patron": "patron.html"}


def _file(name: str) -> Path | None:
    """A file of the console directory by plain name (no sub-paths, no dot-files)."""
    if not name or "/" in name or "\\" in name or name.startswith("."):
        return None
    path = STATIC / name
    if path.suffix not in CONTENT_TYPES or not path.is_file():
        return None
    return path


def _serve(path: Path) -> web.Response:
    charset = "utf-8" if path.suffix in (".html", ".js", ".css", ".svg") else None
    return web.Response(body=path.read_bytes(), content_type=CONTENT_TYPES[path.suffix],
                        charset=charset, headers=SECURITY_HEADERS)


async def _page(request: web.Request) -> web.StreamResponse:
    prefix = request.match_info["prefix"]
    name = request.match_info.get("name") or PAGES[prefix]
    path = _file(name)
    if path is None:
        raise web.HTTPNotFound(text=f"no such file: /{prefix}/{name}")
    return _serve(path)


async def _redirect(request: web.Request) -> web.StreamResponse:
    raise web.HTTPFound(f"/{request.match_info['prefix']}/")


def setup(app: web.Application) -> None:
    """Serve /console/ and /patron/ (and their assets) from node/console/."""
    prefixes = "{prefix:console|patron}"
    app.router.add_get(f"/{prefixes}", _redirect)
    app.router.add_get(f"/{prefixes}/", _page)
    app.router.add_get(f"/{prefixes}/{{name}}", _page)
