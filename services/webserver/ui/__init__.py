"""The web UI: static files (ES modules, vendored libraries) served at ``/ui/``.

No build step: the browser loads the modules as they are in ``static/``, and an
import map in ``index.html`` resolves the vendored CodeMirror packages. Any path
under ``/ui/`` that is not a file is a page of the single-page app, so it gets
``index.html`` and the app's router draws it.
"""

from __future__ import annotations

from pathlib import Path

from starlette.requests import Request
from starlette.responses import FileResponse, RedirectResponse, Response
from starlette.routing import Route

STATIC = Path(__file__).parent / "static"
_INDEX = STATIC / "index.html"
# The vendored libraries change only with a release of runtime; the app's own files
# are revalidated on every load so an upgrade shows at once.
_VENDOR_CACHE = "public, max-age=86400"
_APP_CACHE = "no-cache"
_ASSET_FOLDERS = ("js/", "vendor/")
_ASSET_SUFFIXES = {".js", ".css", ".map", ".png", ".svg", ".ico", ".html", ".json"}


async def _home(request: Request) -> Response:
    return RedirectResponse(request.url.replace(path="/ui/", query=""), status_code=302)


async def _asset(request: Request) -> Response:
    relative = request.path_params.get("path", "")
    target = (STATIC / relative).resolve()
    if not target.is_relative_to(STATIC):
        return Response(f"no such file in the UI: /ui/{relative}\n", 404)
    # A page of the app is the app itself: its router draws the page.
    if not relative or not target.is_file():
        # A missing module or stylesheet is a 404 (the browser reports it); a path like
        # /ui/namespaces/company.team is a page, dot or not.
        if relative.startswith(_ASSET_FOLDERS) or Path(relative).suffix in _ASSET_SUFFIXES:
            return Response(f"no such file in the UI: /ui/{relative}\n", 404)
        return FileResponse(_INDEX, headers={"cache-control": _APP_CACHE})
    cache = _VENDOR_CACHE if relative.startswith("vendor/") else _APP_CACHE
    media = "text/javascript" if target.suffix == ".js" else None
    return FileResponse(target, media_type=media, headers={"cache-control": cache})


routes = [
    Route("/", _home, methods=["GET"]),
    Route("/ui", _home, methods=["GET"]),
    Route("/ui/{path:path}", _asset, methods=["GET"]),
]
