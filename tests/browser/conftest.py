"""The OHIF viewer on Tessera in a real browser: Debian's Chromium driven by Playwright.

Playwright's Python package (a dev extra) drives the *system* Chromium
(``executable_path=/usr/bin/chromium``): nothing is downloaded at test time, and
``playwright install`` is never needed. Without Chromium (and no way to install it:
not root, or no apt-get) every test here is skipped, with the reason in the summary.

Session fixtures:
    ohif_cluster    a cluster of its own (own database, Redis DB, objects folder) whose
                    router serves the fetched OHIF build at /viewer/ (thumbnails: wadors)
    stored_studies  Brainix and Knee stored in it: patient name -> StudyInstanceUID
    viewer_origin   the same viewer served from another origin, pointing at the API
                    (thumbnails: thumbnailDirect, i.e. cross-origin <img>)
    browser         one Chromium for the session
Per test:
    page            a fresh context and page with the storage OHIF checks pre-set; a
                    :class:`~tests.support.ohif.Watch` on it as ``page.watch``
"""

from __future__ import annotations

import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pydicom
import pytest
from playwright.async_api import Browser, Error, async_playwright, expect

from tests.support import browser as servers
from tests.support.cluster import Cluster, migrated_database
from tests.support.dicomgen import multipart
from tests.support.ohif import CHROMIUM_ARGS, INIT_SCRIPT, Watch, WatchedPage, screenshot
from tests.support.servers import RedisDatabases

CORPUS = Path(__file__).resolve().parents[1] / "data" / "corpus"
SERIES_FOLDERS = ["Brainix/Flair", "Brainix/Epi", "Knee/T1", "Knee/T2"]
# OHIF boots in 3-5 s here (a 17 MB bundle, WebGL on SwiftShader); CI machines are slower
expect.set_options(timeout=30_000)


@pytest.fixture(scope="session")
def chromium_path() -> str:
    try:
        return servers.chromium()
    except servers.Unavailable as exc:
        pytest.skip(f"NO BROWSER, OHIF NOT TESTED: {exc}")


@pytest.fixture(scope="session")
def viewer_dir() -> Path:
    return servers.viewer_dist()


@pytest.fixture(scope="session")
async def ohif_database(postgres_dsn: str) -> AsyncIterator[str]:
    async with migrated_database(postgres_dsn, "ohif") as dsn:
        yield dsn


@pytest.fixture(scope="session")
def ohif_cluster(
    chromium_path: str, viewer_dir: Path, ohif_database: str, redis_databases: RedisDatabases
) -> Iterator[Cluster]:
    workdir = Path(tempfile.mkdtemp(prefix="tessera-ohif-"))
    with redis_databases.lease() as redis:  # our transcode worker serves only our retrieve
        # thumbnails decoded by OHIF here; the other origin uses the server's /thumbnail
        cluster = servers.start_cluster(
            ohif_database, redis, viewer_dir, workdir, viewer_thumbnail_rendering="wadors"
        )
        try:
            yield cluster
        finally:
            cluster.stop_all()


@pytest.fixture(scope="session")
def stored_studies(ohif_cluster: Cluster) -> dict[str, str]:
    """Brainix and Knee, one STOW-RS request per series: patient name -> study UID."""
    studies: dict[str, str] = {}
    with httpx.Client(base_url=ohif_cluster.base_url, timeout=60) as client:
        for folder in SERIES_FOLDERS:
            files = sorted((CORPUS / folder).glob("*.dcm"))
            body, content_type = multipart(f.read_bytes() for f in files)
            r = client.post(
                "/studies",
                content=body,
                headers={"Content-Type": content_type, "Accept": "application/dicom+json"},
            )
            assert r.status_code == 200, r.text
            ds = pydicom.dcmread(files[0], stop_before_pixels=True)
            studies[str(ds.PatientName)] = ds.StudyInstanceUID
    assert len(studies) == 2, studies
    return studies


@pytest.fixture(scope="session")
def viewer_origin(ohif_cluster: Cluster) -> Iterator[str]:
    origin = servers.start_viewer_origin(ohif_cluster)
    try:
        yield origin.url
    finally:
        origin.stop()


@pytest.fixture(scope="session")
async def browser(chromium_path: str) -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=chromium_path, args=CHROMIUM_ARGS, headless=True
        )
        try:
            yield browser
        finally:
            await browser.close()


@pytest.fixture
async def page(
    browser: Browser, ohif_cluster: Cluster, request: pytest.FixtureRequest
) -> AsyncIterator[WatchedPage]:
    context = await browser.new_context(viewport={"width": 1400, "height": 900})
    await context.add_init_script(INIT_SCRIPT)
    context.set_default_timeout(30_000)
    p = await context.new_page()
    watched = WatchedPage(p, Watch(ohif_cluster.base_url))
    watched.watch.attach(p)
    try:
        yield watched
    finally:
        try:
            await screenshot(p, f"{request.node.name}-end")
        except Error:  # the page is gone: the test's own failure says why
            pass
        await context.close()
