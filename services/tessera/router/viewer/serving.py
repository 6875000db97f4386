"""The OHIF viewer beside the DICOMweb API: a built OHIF served by the router at ``/viewer/``.

``settings.viewer_dir`` is the ``dist/`` folder of a built OHIF (``make viewer`` fetches
npm's ``@ohif/app``, whose tarball ships one); empty, ``/viewer/`` answers 404 with a page
saying how to get it.

OHIF's published build assumes it is served at ``/``: its ``index.html`` names its assets
``/app.bundle.<hash>.js`` and sets ``window.PUBLIC_URL = "/"`` (which also becomes
the React router's basename), its stylesheets load a font from ``url(/...)``, and
webpack's runtime in the bundles (the app and each web worker) loads chunks, workers
and WebAssembly from ``__webpack_require__.p = "/"``.
Rather than rebuilding OHIF, the router rewrites those few strings as it serves them
(:data:`REWRITES`), for the path the browser sees (an ingress prefix ``root_path``, then
``/viewer/``); the folder stays as fetched, and a build already made for ``/viewer/``
goes out unchanged. The patched files are kept in memory (8 bundles of OHIF 3.13).

Also served here:

* ``app-config.js``, generated from the settings (:mod:`tessera.router.viewer.ohif`), never the
  file of the build;
* ``index.html`` for every client-side route (``/viewer/viewer?StudyInstanceUIDs=...``),
  i.e. any path without a file extension, or asked for as ``text/html``;
* explicit media types (``.js`` as ``text/javascript``, ``.wasm`` as ``application/wasm``
  for streaming compilation, ``.json``), long-lived caching for content-hashed names;
* cross-origin isolation (``Cross-Origin-Opener-Policy: same-origin`` and
  ``Cross-Origin-Embedder-Policy: require-corp``), so ``SharedArrayBuffer`` exists for
  Cornerstone's volume loading and web-worker decoders (OHIF shows a warning without it).
  Under ``require-corp`` every subresource must be same-origin, CORS or carry
  ``Cross-Origin-Resource-Policy``; the router adds the latter to retrieve responses.
"""

from __future__ import annotations

import hashlib
import html
import logging
import os
import re
import stat
from collections.abc import Awaitable, Callable
from pathlib import Path, PurePosixPath

import anyio.to_thread
from starlette.datastructures import URL, Headers
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import NotModifiedResponse, StaticFiles
from starlette.types import Scope

from tessera.router.viewer.ohif import ViewerConfig, render
from tessera.shared.settings import Settings

log = logging.getLogger(__name__)

MOUNT = "/viewer"
INDEX = "index.html"
CONFIG = "app-config.js"

ISOLATION_HEADERS = {
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Embedder-Policy": "require-corp",
    "X-Content-Type-Options": "nosniff",
}
IMMUTABLE = "public, max-age=31536000, immutable"
REVALIDATE = "no-cache"
# webpack names: 1602.bundle.94f12cceab7c2762.js, 0ddf166f7a343eda.wasm, a34f...f3315.woff2
HASHED = re.compile(r"(^|[./])[0-9a-f]{16}\.(js|wasm|woff2?|css)$")

MEDIA_TYPES = {
    ".js": "text/javascript",
    ".mjs": "text/javascript",
    ".wasm": "application/wasm",
    ".json": "application/json",
    ".map": "application/json",
    ".css": "text/css",
    ".html": "text/html",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
    ".woff2": "font/woff2",
    ".woff": "font/woff",
    ".xml": "application/xml",
    ".txt": "text/plain",
}

Rewrite = Callable[[str, str], str]  # (text, base such as "/viewer/") -> text


def _rewrite_index(text: str, base: str) -> str:
    """index.html: PUBLIC_URL, and every root-absolute src/href/content attribute."""
    own = re.escape(base.lstrip("/"))
    text = re.sub(r"""window\.PUBLIC_URL\s*=\s*(["'])/\1""", f'window.PUBLIC_URL="{base}"', text)
    return re.sub(rf'\b(src|href|content)="/(?!/|{own})', rf'\1="{base}', text)


def _rewrite_webpack(text: str, base: str) -> str:
    """A bundle with webpack's runtime: the public path chunks are loaded from."""
    return text.replace('__webpack_require__.p = "/";', f'__webpack_require__.p = "{base}";')


def _rewrite_manifest(text: str, base: str) -> str:
    """manifest.json: icon sources and start_url."""
    own = re.escape(base.lstrip("/"))
    return re.sub(rf'(":\s*")/(?!/|{own})', rf"\1{base}", text)


def _rewrite_css(text: str, base: str) -> str:
    """A stylesheet: root-absolute ``url(/...)`` (the app's font)."""
    own = re.escape(base.lstrip("/"))
    return re.sub(rf"""url\((["']?)/(?!/|{own})""", rf"url(\1{base}", text)


WEBPACK_RUNTIME = b'__webpack_require__.p = "/";'
REWRITES: dict[str, Rewrite] = {INDEX: _rewrite_index, "manifest.json": _rewrite_manifest}


def viewer_base(scope: Scope) -> str:
    """The viewer's path as the browser sees it, e.g. ``/viewer/`` or ``/pacs/viewer/``
    (inside the mount, ``root_path`` is the ingress prefix plus :data:`MOUNT`)."""
    return scope.get("root_path", "").rstrip("/") + "/"


def media_type(path: str) -> str | None:
    return MEDIA_TYPES.get(PurePosixPath(path).suffix.lower())


def _is_client_route(path: str, scope: Scope) -> bool:
    """A path the single-page app routes itself (``viewer``, ``segmentation/x``)."""
    if "." not in PurePosixPath(path).name:
        return True
    return "text/html" in Headers(scope=scope).get("accept", "")


class ViewerFiles(StaticFiles):
    """The files of a built OHIF, rewritten for their path, with an SPA fallback."""

    def __init__(self, directory: Path, settings: Settings) -> None:
        super().__init__(directory=directory, html=False, check_dir=True)
        self.settings = settings
        self._webpack: set[str] | None = None  # files holding webpack's runtime
        self._patched: dict[tuple[str, str], tuple[bytes, str]] = {}

    async def get_response(self, path: str, scope: Scope) -> Response:
        if scope["method"] not in ("GET", "HEAD"):
            raise HTTPException(status_code=405, headers={"Allow": "GET, HEAD"})
        base = viewer_base(scope)
        path = "" if path == "." else path
        if path == CONFIG:
            return self._config(scope, base)
        full_path, found = await anyio.to_thread.run_sync(self.lookup_path, path or INDEX)
        if found is None or not stat.S_ISREG(found.st_mode):
            if not _is_client_route(path, scope):
                raise HTTPException(status_code=404)
            path = INDEX
            full_path, found = await anyio.to_thread.run_sync(self.lookup_path, INDEX)
            if found is None:
                raise HTTPException(status_code=404)
        name = path or INDEX
        rewrite = await self._rewrite_for(name)
        if rewrite is not None:
            return await self._rewritten(name, full_path, base, rewrite, scope)
        return _headers(self.file_response(full_path, found, scope), name)

    def file_response(
        self,
        full_path: os.PathLike[str] | str,
        stat_result: os.stat_result,
        scope: Scope,
        status_code: int = 200,
    ) -> Response:
        """StaticFiles' answer (ETag, 304, ranges) with our media types."""
        response = super().file_response(full_path, stat_result, scope, status_code)
        kind = media_type(os.fspath(full_path))
        if kind is not None and not isinstance(response, NotModifiedResponse):
            response.media_type = kind
            response.headers["content-type"] = (
                f"{kind}; charset=utf-8" if kind.startswith("text/") else kind
            )
        return response

    def _config(self, scope: Scope, base: str) -> Response:
        root_path = base.rstrip("/").removesuffix(MOUNT)
        config = ViewerConfig.from_settings(
            self.settings, router_basename=base, root_path=root_path
        )
        response = Response(render(config), media_type="text/javascript")
        return _headers(response, CONFIG)

    async def _rewrite_for(self, name: str) -> Rewrite | None:
        if name in REWRITES:
            return REWRITES[name]
        if name.endswith(".css"):
            return _rewrite_css
        if not name.endswith(".js"):
            return None
        if self._webpack is None:
            self._webpack = await anyio.to_thread.run_sync(self._find_webpack_runtimes)
        return _rewrite_webpack if name in self._webpack else None

    def _find_webpack_runtimes(self) -> set[str]:
        """The ``.js`` files (relative names) whose webpack runtime loads from ``/``."""
        root = Path(str(self.directory))
        found = set()
        for path in root.rglob("*.js"):
            with open(path, "rb") as f:
                if WEBPACK_RUNTIME in f.read():
                    found.add(path.relative_to(root).as_posix())
        log.info("viewer: %d bundles load chunks from /; served rewritten", len(found))
        return found

    async def _rewritten(
        self, name: str, full_path: str, base: str, rewrite: Rewrite, scope: Scope
    ) -> Response:
        key = (name, base)
        if key not in self._patched:
            text = await anyio.to_thread.run_sync(Path(full_path).read_text, "utf-8")
            body = rewrite(text, base).encode()
            self._patched[key] = (body, f'"{hashlib.md5(body).hexdigest()}"')
        body, etag = self._patched[key]
        headers = {"ETag": etag}
        if etag in Headers(scope=scope).get("if-none-match", ""):
            return _headers(NotModifiedResponse(Headers(headers=headers)), name)
        response = Response(body, media_type=media_type(name), headers=headers)
        return _headers(response, name)


def _headers(response: Response, name: str) -> Response:
    response.headers.update(ISOLATION_HEADERS)
    response.headers["Cache-Control"] = IMMUTABLE if HASHED.search(name) else REVALIDATE
    return response


def _not_installed(reason: str) -> Callable[[Request], Awaitable[Response]]:
    page = f"""<!doctype html><html lang="en"><head><meta charset="utf-8">
<title>Tessera: no viewer</title></head><body style="font-family: sans-serif">
<h1>The OHIF viewer is not served here</h1><p>{html.escape(reason)}</p>
<p><code>make run</code> fetches it (<code>make viewer</code>: npm's <code>@ohif/app</code>)
and sets <code>TESSERA_VIEWER_DIR</code>; or set <code>TESSERA_VIEWER_DIR</code> to the
<code>dist/</code> folder of any OHIF v3 build and restart the router.
The DICOMweb API is unaffected.</p></body></html>
"""

    async def endpoint(request: Request) -> Response:
        return HTMLResponse(page, status_code=404)

    return endpoint


def _problem(folder: str) -> str:
    """Why ``folder`` cannot be served as OHIF; empty if it can."""
    if not folder:
        return "TESSERA_VIEWER_DIR is empty."
    if not (Path(folder) / INDEX).is_file():
        return f"TESSERA_VIEWER_DIR={folder} has no {INDEX}: it is not a built OHIF (dist/)."
    return ""


async def _add_slash(request: Request) -> Response:
    return RedirectResponse(URL(scope=request.scope).replace(path=request.url.path + "/"))


def routes(settings: Settings) -> list[BaseRoute]:
    """``/viewer`` (to ``/viewer/``) and everything under ``/viewer/``."""
    redirect = Route(MOUNT, _add_slash, methods=["GET"])
    problem = _problem(settings.viewer_dir)
    if problem:
        if settings.viewer_dir:
            log.error("viewer not served: %s", problem)
        endpoint = _not_installed(problem)
        return [redirect, Route(MOUNT + "/{path:path}", endpoint, methods=["GET"])]
    files = ViewerFiles(Path(settings.viewer_dir).absolute(), settings)
    return [redirect, Mount(MOUNT, app=files)]
