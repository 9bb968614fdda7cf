"""The web UI: static files (ES modules, vendored libraries) served at ``/ui/``.

No build step: the browser loads the modules as they are in ``static/``, and an
import map in ``index.html`` resolves the vendored CodeMirror packages. Any path
under ``/ui/`` that is not a file is a page of the single-page app, so it gets
``index.html`` and the app's router draws it.
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath

from starlette.requests import Request
from starlette.responses import FileResponse, RedirectResponse, Response
from starlette.routing import Route

STATIC = Path(__file__).resolve().parent / "static"
_INDEX = STATIC / "index.html"
# Listed once: a request is looked up here, so it touches the disk only to be served
# and can never name a file outside the folder.
_FILES = frozenset(p.relative_to(STATIC).as_posix() for p in STATIC.rglob("*") if p.is_file())
# Revalidated on every load (a 304 when unchanged): the vendored files' paths carry no
# version, so a cached copy could otherwise outlive an upgrade and mix versions.
_CACHE = "no-cache"
_ASSET_FOLDERS = ("js/", "vendor/")
_ASSET_SUFFIXES = {".js", ".css", ".map", ".png", ".svg", ".ico", ".html", ".json"}


async def _home(request: Request) -> Response:
    return RedirectResponse(request.url.replace(path="/ui/", query=""), status_code=302)


async def _asset(request: Request) -> Response:
    relative = request.path_params.get("path", "")
    if relative in _FILES:
        media = "text/javascript" if relative.endswith(".js") else None
        return FileResponse(STATIC / relative, media_type=media, headers={"cache-control": _CACHE})
    # A missing module or stylesheet is a 404 (the browser reports it); any other path
    # is a page of the app, dots or not (/ui/namespaces/company.team), drawn by its router.
    if relative.startswith(_ASSET_FOLDERS) or PurePosixPath(relative).suffix in _ASSET_SUFFIXES:
        return Response(f"no such file in the UI: /ui/{relative}\n", 404)
    if ".." in PurePosixPath(relative).parts:
        return Response(f"no such file in the UI: /ui/{relative}\n", 404)
    return FileResponse(_INDEX, headers={"cache-control": _CACHE})


routes = [
    Route("/", _home, methods=["GET"]),
    Route("/ui", _home, methods=["GET"]),
    Route("/ui/{path:path}", _asset, methods=["GET"]),
]
