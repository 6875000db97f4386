"""The router serving an OHIF build at /viewer/ (tessera.router.viewer), on a miniature
build with the shapes of OHIF 3.13's dist/: root-absolute URLs in index.html, webpack's
runtime loading chunks from "/", a stylesheet with url(/font), a manifest."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette

from tessera.router.app import create_app
from tessera.router.viewer.serving import HASHED
from tessera.shared.settings import Settings

APP_BUNDLE = "app.bundle.0f6159c501addfe9.js"
INDEX = (
    '<!doctype html><html><head><script>window.PUBLIC_URL="/"</script>'
    '<link rel="manifest" href="/manifest.json">'
    '<meta name="msapplication-TileImage" content="/assets/tile.png">'
    '<script src="/app-config.js"></script><script src="https://cdn.example/x.js"></script>'
    '<script defer src="/app.bundle.0f6159c501addfe9.js"></script>'
    '<link href="/app.bundle.css" rel="stylesheet"></head><body><div id="root"></div></body></html>'
)
RUNTIME = '(() => {\n__webpack_require__.p = "/";\n})();\n'


@pytest.fixture
def dist(tmp_path: Path) -> Path:
    (tmp_path / "index.html").write_text(INDEX)
    (tmp_path / APP_BUNDLE).write_text("console.log(1);" + RUNTIME)
    (tmp_path / "1602.bundle.94f12cceab7c2762.js").write_text("console.log('chunk');")
    (tmp_path / "0ddf166f7a343eda.wasm").write_bytes(b"\0asm\1\0\0\0")
    (tmp_path / "app.bundle.css").write_text("@font-face{src:url(/a34f9d1faa5f3315.woff2)}")
    (tmp_path / "manifest.json").write_text(
        '{"start_url": "/", "icons": [{"src": "/assets/a.png"}]}'
    )
    (tmp_path / "app-config.js").write_text("window.config = {from: 'the build'};")
    (tmp_path / "workers").mkdir()
    (tmp_path / "workers" / "decode.worker.js").write_text(RUNTIME)
    return tmp_path


def _app(**settings: object) -> Starlette:
    return create_app(Settings(**settings))  # type: ignore[arg-type]


@pytest.fixture
async def viewer(dist: Path) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=_app(viewer_dir=str(dist)))
    async with httpx.AsyncClient(transport=transport, base_url="http://tessera") as client:
        yield client


async def test_index_is_rewritten_for_the_viewer_path(viewer: httpx.AsyncClient) -> None:
    r = await viewer.get("/viewer/")
    assert r.status_code == 200
    assert r.headers["content-type"] == "text/html; charset=utf-8"
    assert 'window.PUBLIC_URL="/viewer/"' in r.text
    assert 'src="/viewer/app.bundle.0f6159c501addfe9.js"' in r.text
    assert 'href="/viewer/app.bundle.css"' in r.text
    assert 'href="/viewer/manifest.json"' in r.text
    assert 'content="/viewer/assets/tile.png"' in r.text
    assert 'src="https://cdn.example/x.js"' in r.text  # not ours: untouched
    assert r.headers["cache-control"] == "no-cache"
    again = await viewer.get("/viewer/", headers={"If-None-Match": r.headers["etag"]})
    assert again.status_code == 304


async def test_viewer_without_slash_redirects(viewer: httpx.AsyncClient) -> None:
    r = await viewer.get("/viewer?x=1")
    assert r.status_code == 307
    assert r.headers["location"].endswith("/viewer/?x=1")


async def test_client_side_routes_get_the_index(viewer: httpx.AsyncClient) -> None:
    for path in ("/viewer/viewer?StudyInstanceUIDs=1.2.3", "/viewer/segmentation/dicomweb"):
        r = await viewer.get(path)
        assert r.status_code == 200, path
        assert 'window.PUBLIC_URL="/viewer/"' in r.text
    assert (await viewer.get("/viewer/missing.js")).status_code == 404
    page = await viewer.get("/viewer/study.1.2", headers={"Accept": "text/html"})
    assert page.status_code == 200


async def test_webpack_runtimes_load_chunks_from_the_viewer_path(
    viewer: httpx.AsyncClient,
) -> None:
    for path in (f"/viewer/{APP_BUNDLE}", "/viewer/workers/decode.worker.js"):
        r = await viewer.get(path)
        assert r.status_code == 200
        assert r.headers["content-type"] == "text/javascript; charset=utf-8"
        assert '__webpack_require__.p = "/viewer/";' in r.text
    chunk = await viewer.get("/viewer/1602.bundle.94f12cceab7c2762.js")
    assert chunk.text == "console.log('chunk');"
    assert chunk.headers["cache-control"] == "public, max-age=31536000, immutable"


async def test_stylesheets_and_manifest_are_rewritten(viewer: httpx.AsyncClient) -> None:
    css = await viewer.get("/viewer/app.bundle.css")
    assert css.text == "@font-face{src:url(/viewer/a34f9d1faa5f3315.woff2)}"
    assert css.headers["content-type"] == "text/css; charset=utf-8"
    manifest = (await viewer.get("/viewer/manifest.json")).json()
    assert manifest == {"start_url": "/viewer/", "icons": [{"src": "/viewer/assets/a.png"}]}


async def test_media_types_and_isolation_headers(viewer: httpx.AsyncClient) -> None:
    wasm = await viewer.get("/viewer/0ddf166f7a343eda.wasm")
    assert wasm.headers["content-type"] == "application/wasm"
    assert wasm.content == b"\0asm\1\0\0\0"
    for r in (wasm, await viewer.get("/viewer/"), await viewer.get("/viewer/app-config.js")):
        assert r.headers["cross-origin-opener-policy"] == "same-origin"
        assert r.headers["cross-origin-embedder-policy"] == "require-corp"
        assert r.headers["x-content-type-options"] == "nosniff"


async def test_app_config_is_generated_not_the_builds(viewer: httpx.AsyncClient) -> None:
    r = await viewer.get("/viewer/app-config.js")
    assert r.headers["content-type"] == "text/javascript; charset=utf-8"
    assert r.headers["cache-control"] == "no-cache"
    assert "the build" not in r.text
    assert '"routerBasename": "/viewer/"' in r.text
    assert '"qidoRoot": "/dicom-web"' in r.text


async def test_behind_an_ingress_prefix(dist: Path) -> None:
    transport = httpx.ASGITransport(app=_app(viewer_dir=str(dist)), root_path="/pacs")
    async with httpx.AsyncClient(transport=transport, base_url="http://tessera") as client:
        index = await client.get("/pacs/viewer/")
        config = await client.get("/pacs/viewer/app-config.js")
    assert 'window.PUBLIC_URL="/pacs/viewer/"' in index.text
    assert 'src="/pacs/viewer/app.bundle.0f6159c501addfe9.js"' in index.text
    assert '"qidoRoot": "/pacs/dicom-web"' in config.text
    assert '"routerBasename": "/pacs/viewer/"' in config.text


async def test_a_build_made_for_the_viewer_path_is_served_unchanged(tmp_path: Path) -> None:
    built = INDEX.replace('"/', '"/viewer/')  # PUBLIC_URL too: a build for /viewer/
    (tmp_path / "index.html").write_text(built)
    transport = httpx.ASGITransport(app=_app(viewer_dir=str(tmp_path)))
    async with httpx.AsyncClient(transport=transport, base_url="http://tessera") as client:
        r = await client.get("/viewer/")
    assert "/viewer/viewer/" not in r.text
    assert 'src="/viewer/app.bundle.0f6159c501addfe9.js"' in r.text


@pytest.mark.parametrize("folder", ["", "missing"])
async def test_no_viewer_is_a_page_saying_how_to_get_one(folder: str, tmp_path: Path) -> None:
    viewer_dir = str(tmp_path / folder) if folder else ""
    transport = httpx.ASGITransport(app=_app(viewer_dir=viewer_dir))
    async with httpx.AsyncClient(transport=transport, base_url="http://tessera") as client:
        r = await client.get("/viewer/")
        deep = await client.get("/viewer/viewer?StudyInstanceUIDs=1")
    assert r.status_code == deep.status_code == 404
    assert r.headers["content-type"].startswith("text/html")
    assert "make viewer" in r.text and "TESSERA_VIEWER_DIR" in r.text


async def test_only_get_and_head(viewer: httpx.AsyncClient) -> None:
    assert (await viewer.post("/viewer/index.html")).status_code == 405
    assert (await viewer.head("/viewer/")).status_code == 200


def test_hashed_names() -> None:
    assert HASHED.search("app.bundle.0f6159c501addfe9.js")
    assert HASHED.search("0ddf166f7a343eda.wasm")
    assert HASHED.search("a34f9d1faa5f3315.woff2")
    assert not HASHED.search("app-config.js")
    assert not HASHED.search("1602.css")
    assert not HASHED.search("index.html")
