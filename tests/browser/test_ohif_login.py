"""OHIF with access control (issue 10): the viewer logs the user in at the real OpenID
provider's login page (authorization code + PKCE) and opens a study with the token; the
same study opened without logging in shows nothing.

The cluster here has authentication on, the provider is node-oidc-provider with a user
who may read, and the generated app-config.js carries the ``oidc`` block.
"""

from __future__ import annotations

import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pydicom
import pytest
from playwright.async_api import Browser, Page, expect

from tessera.local import free_port
from tests.support import browser as servers
from tests.support.cluster import Cluster, migrated_database
from tests.support.dicomgen import multipart
from tests.support.identity import Provider, machine
from tests.support.ohif import INIT_SCRIPT, Watch, screenshot, wait_for_pixels
from tests.support.servers import RedisDatabases, admin_sql, with_database

CORPUS = Path(__file__).resolve().parents[1] / "data" / "corpus"
USER, PASSWORD = "doctor", "correct horse battery staple"
SECRET = "internal-secret-of-the-login-test-0123456789"


@dataclass
class Secured:
    cluster: Cluster
    provider: Provider
    study: str

    @property
    def viewer(self) -> str:
        return f"http://127.0.0.1:{self.cluster.settings.router_port}/viewer/"


@pytest.fixture(scope="module")
async def login_databases(postgres_dsn: str) -> AsyncIterator[tuple[str, str]]:
    auth = f"ohif_auth_{uuid.uuid4().hex[:8]}"
    await admin_sql(postgres_dsn, f'CREATE DATABASE "{auth}"')
    async with migrated_database(postgres_dsn, "ohif_login") as shard:
        yield shard, with_database(postgres_dsn, auth)
    await admin_sql(postgres_dsn, f'DROP DATABASE IF EXISTS "{auth}" WITH (FORCE)')


@pytest.fixture(scope="module")
def secured(
    chromium_path: str,
    viewer_dir: Path,
    login_databases: tuple[str, str],
    redis_databases: RedisDatabases,
) -> Iterator[Secured]:
    workdir = Path(tempfile.mkdtemp(prefix="tessera-ohif-login-"))
    router_port = free_port()
    origin = f"http://127.0.0.1:{router_port}"
    viewer_client = {
        "client_id": "ohif",
        "token_endpoint_auth_method": "none",
        "grant_types": ["authorization_code", "refresh_token"],
        "response_types": ["code"],
        "redirect_uris": [f"{origin}/viewer/callback"],
    }
    provider = Provider(
        workdir,
        [viewer_client, machine("uploader", "tessera:write")],
        accounts={USER: {"password": PASSWORD, "claims": {"groups": ["tessera:read"]}}},
    ).start()
    shard_db, auth_db = login_databases
    try:
        with redis_databases.lease() as redis:
            cluster = servers.start_cluster(
                shard_db,
                redis,
                viewer_dir,
                workdir,
                router_port=router_port,
                internal_secret=SECRET,
                auth="on",
                auth_issuer=provider.issuer,
                auth_database_url=auth_db,
                viewer_oidc_authority=provider.issuer,
                viewer_oidc_client_id="ohif",
            )
            try:
                files = sorted((CORPUS / "Brainix" / "Flair").glob("*.dcm"))
                body, ctype = multipart(f.read_bytes() for f in files)
                token = provider.token("uploader", "uploader-secret", "tessera:write")
                r = httpx.post(
                    f"{cluster.base_url}/studies",
                    content=body,
                    headers={"Content-Type": ctype, "Authorization": f"Bearer {token}"},
                    timeout=120,
                )
                assert r.status_code == 200, r.text
                study = pydicom.dcmread(files[0], stop_before_pixels=True).StudyInstanceUID
                yield Secured(cluster, provider, study)
            finally:
                cluster.stop_all()
    finally:
        provider.stop()


async def _page(browser: Browser, secured: Secured) -> tuple[Page, Watch]:
    context = await browser.new_context(viewport={"width": 1400, "height": 900})
    await context.add_init_script(INIT_SCRIPT)
    context.set_default_timeout(30_000)
    page = await context.new_page()
    watch = Watch(secured.cluster.base_url)
    watch.attach(page)
    return page, watch


async def _log_in(page: Page, secured: Secured) -> None:
    """On the provider's own pages: the login form, then the consent prompt."""
    await expect(page.locator("input[name=login]")).to_be_visible()
    assert page.url.startswith(f"{secured.provider.issuer}/interaction/"), page.url
    await page.fill("input[name=login]", USER)
    await page.fill("input[name=password]", PASSWORD)
    await page.click("button[type=submit]")
    consent = page.locator("button[type=submit]")
    if page.url.startswith(secured.provider.issuer) and await consent.count():
        await consent.first.click()


async def test_ohif_logs_in_at_the_provider_and_opens_a_study(
    browser: Browser, secured: Secured
) -> None:
    page, watch = await _page(browser, secured)
    await page.goto(secured.viewer)
    await _log_in(page, secured)
    row = page.locator("tr", has=page.get_by_text("BRAINIX", exact=True))
    await expect(row).to_be_visible()
    await screenshot(page, "login-study-list")
    await row.dblclick()
    try:
        await wait_for_pixels(page)
    except AssertionError:
        await screenshot(page, "login-study-blank")
        raise AssertionError(f"{page.url}: {watch.problems[:10]}") from None
    await screenshot(page, "login-study-open")
    frames = [r for r in watch.responses if "/frames/" in r.url]
    assert frames and all(r.status == 200 for r in frames)
    sent = await frames[0].request.header_value("authorization")
    assert sent is not None and sent.startswith("Bearer ")
    await page.context.close()


async def test_without_logging_in_the_study_shows_nothing(
    browser: Browser, secured: Secured
) -> None:
    page, watch = await _page(browser, secured)
    await page.goto(f"{secured.viewer}viewer?StudyInstanceUIDs={secured.study}")
    await expect(page.locator("input[name=login]")).to_be_visible()
    assert page.url.startswith(secured.provider.issuer)  # sent to log in first
    assert not [r for r in watch.responses if r.status == 200 and "/dicom-web/" in r.url]
    await page.context.close()
    async with httpx.AsyncClient() as client:
        r = await client.get(f"{secured.cluster.base_url}/studies/{secured.study}/metadata")
    assert r.status_code == 401 and "BRAINIX" not in r.text
