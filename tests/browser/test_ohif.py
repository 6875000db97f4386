"""The OHIF viewer works on Tessera, proven in a real browser (Chromium, headless).

Brainix (2 MR series of 22 slices) and Knee (2 series of 24 and 26) are stored; then,
in OHIF 3.13 served by the router at /viewer/:

* the study list finds both patients, and a lowercase partial name filters on the
  server (``PatientName=*brai*&fuzzymatching=true``);
* a study opens from the list, the viewport shows non-blank pixels, and scrolling draws
  other slices (each slice fetched from ``.../frames/1``);
* the same with the viewer on another origin (``localhost`` vs the API's ``127.0.0.1``),
  with server-rendered thumbnails as cross-origin ``<img>``: CORS (the frames requests'
  quoted Accept makes the browser preflight them), Cross-Origin-Resource-Policy and
  cross-origin isolation hold;
* files chosen in OHIF's upload dialog are stored (one STOW-RS request each) and show in
  the list.

Every test fails on a console error, an uncaught exception, a failed request or a
DICOMweb answer >= 400. Screenshots go to tests/artifacts/browser/.
"""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from playwright.async_api import Locator, Page, Response, expect

from tests.support.cluster import Cluster
from tests.support.dicomgen import make_instance
from tests.support.ohif import WatchedPage, screenshot, wait_for_pixels

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

PIXELS_TIMEOUT = 45.0  # seconds: OHIF on a software rasteriser, on 2 shared cores
SCROLL_STEPS = 6
SLICE_LABEL = re.compile(r"I:\s*\d+\s*\((\d+)/(\d+)\)")  # also a JS regex: no named groups


def _row(page: Page, patient: str) -> Locator:
    """The study list's row of ``patient``."""
    return page.locator("tr", has=page.get_by_text(patient, exact=True))


async def _eventually(
    collect: Callable[[], list[Response]], count: int, within: float = 10.0
) -> list[Response]:
    """What ``collect`` returns once it has ``count`` items (events arrive after the UI)."""
    deadline = time.monotonic() + within
    found = collect()
    while len(found) < count and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
        found = collect()
    return found


async def _open_study_list(page: Page, url: str) -> None:
    await page.goto(url)
    await expect(page.get_by_role("button", name="Upload")).to_be_visible()


async def _scroll_slices(page: Page, steps: int) -> set[int]:
    """Scroll the stack ``steps`` slices down with the wheel; the pictures drawn."""
    box = await page.locator("canvas.cornerstone-canvas").first.bounding_box()
    assert box is not None
    await page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    drawn = set()
    for _ in range(steps):
        await page.mouse.wheel(0, 120)
        await page.wait_for_timeout(150)
        shown = await wait_for_pixels(page)
        drawn.add(shown["hash"])
    return drawn


async def _slice_shown(page: Page) -> tuple[int, int]:
    """The viewport overlay's image index: ``I:7 (7/22)`` -> (7, 22)."""
    text = await page.get_by_text(SLICE_LABEL).first.inner_text()
    found = SLICE_LABEL.search(text)
    assert found, text
    return int(found[1]), int(found[2])


async def _check_viewer(page: WatchedPage, cluster: Cluster, name: str) -> None:
    """In an opened study: pixels, then slices scrolled, all from the frames endpoint."""
    first = await wait_for_pixels(page.page)
    await expect(page.page.get_by_text(SLICE_LABEL).first).to_be_visible()
    start, total = await _slice_shown(page.page)
    await screenshot(page.page, f"{name}-first-image")
    drawn = await _scroll_slices(page.page, SCROLL_STEPS)
    drawn.add(first["hash"])
    await expect(page.page.get_by_text(f"({start + SCROLL_STEPS}/{total})")).to_be_visible()
    await screenshot(page.page, f"{name}-scrolled")
    assert len(drawn) >= SCROLL_STEPS // 2, f"scrolling drew {len(drawn)} different pictures"

    frames = [r for r in page.watch.responses if "/frames/" in r.url]
    assert len(frames) >= SCROLL_STEPS, [r.url for r in frames]
    for response in frames:
        assert response.url.startswith(f"{cluster.base_url}/studies/")
        assert response.status == 200
        # omitQuotationForMultipartRequest: false in the generated app-config.js
        accept = await response.request.header_value("accept")
        assert accept and 'type="application/octet-stream"' in accept, accept


# --- the study list ---------------------------------------------------------------------


async def test_study_list_finds_both_patients(
    page: WatchedPage, ohif_cluster: Cluster, stored_studies: dict[str, str]
) -> None:
    p = page.page
    await _open_study_list(p, f"http://127.0.0.1:{ohif_cluster.settings.router_port}/viewer/")
    await expect(_row(p, "BRAINIX")).to_be_visible()
    await expect(_row(p, "KNEE")).to_be_visible()
    await expect(_row(p, "KNEE")).to_contain_text("IRM DU GENOU")
    await screenshot(p, "study-list")
    assert await p.evaluate("window.crossOriginIsolated"), "COOP/COEP did not isolate the page"

    # typed in lowercase, sent as a wildcard: PatientName=*brai*&fuzzymatching=true
    async with p.expect_request(lambda r: "PatientName=" in r.url) as search:
        await p.locator("table input").first.fill("brai")
    assert "PatientName=*brai*" in (await search.value).url
    assert "fuzzymatching=true" in (await search.value).url
    await expect(_row(p, "KNEE")).to_have_count(0)
    await expect(_row(p, "BRAINIX")).to_be_visible()
    await p.wait_for_load_state("networkidle")
    await screenshot(p, "study-list-filtered")
    assert any("includefield=" in s for s in page.watch.requests)
    page.watch.check()


# --- a study in the viewport ------------------------------------------------------------


async def test_study_opens_and_scrolls(
    page: WatchedPage, ohif_cluster: Cluster, stored_studies: dict[str, str]
) -> None:
    p = page.page
    await _open_study_list(p, f"http://127.0.0.1:{ohif_cluster.settings.router_port}/viewer/")
    await _row(p, "BRAINIX").dblclick()
    await expect(p).to_have_url(re.compile(r"/viewer/viewer\?StudyInstanceUIDs="))
    await _check_viewer(page, ohif_cluster, "brainix")
    assert page.watch.dicomweb_paths("/metadata"), "OHIF read no series metadata"
    assert not page.watch.dicomweb_paths("/thumbnail"), "wadors thumbnails are decoded frames"
    page.watch.check()


async def test_viewer_on_another_origin(
    page: WatchedPage, ohif_cluster: Cluster, viewer_origin: str, stored_studies: dict[str, str]
) -> None:
    p = page.page
    await _open_study_list(p, f"{viewer_origin}/viewer/")
    await expect(_row(p, "BRAINIX")).to_be_visible()
    await expect(_row(p, "KNEE")).to_be_visible()
    await screenshot(p, "other-origin-study-list")
    assert await p.evaluate("window.crossOriginIsolated")
    assert page.watch.requests, "no DICOMweb request went to the API's origin"
    allowed = {r.headers.get("access-control-allow-origin") for r in page.watch.responses}
    assert allowed <= {"*", viewer_origin}, allowed
    await _row(p, "KNEE").dblclick()
    await _check_viewer(page, ohif_cluster, "other-origin-knee")
    # thumbnailDirect: cross-origin <img>, allowed under COEP by the router's CORP header
    thumbnails = [r for r in page.watch.responses if "/thumbnail" in r.url]
    assert len(thumbnails) >= 2, [r.url for r in thumbnails]
    for response in thumbnails:
        assert response.status == 200
        assert await response.header_value("cross-origin-resource-policy") == "cross-origin"
        assert (await response.header_value("content-type") or "").startswith("image/jpeg")
    page.watch.check()


# --- upload -----------------------------------------------------------------------------


async def test_upload_through_ohif_lands_in_tessera(
    page: WatchedPage, ohif_cluster: Cluster, stored_studies: dict[str, str], tmp_path: Path
) -> None:
    patient = f"UPLOAD^{uuid.uuid4().hex[:6].upper()}"
    study, series = (f"1.2.826.0.1.3680043.8.498.{uuid.uuid4().int}"[:64] for _ in range(2))
    files = []
    for n in (1, 2):
        path = tmp_path / f"upload-{n}.dcm"
        path.write_bytes(
            make_instance(
                study, series, patient_name=patient, patient_id="UPL-1", instance_number=n
            )
        )
        files.append(path)
    p = page.page
    await _open_study_list(p, f"http://127.0.0.1:{ohif_cluster.settings.router_port}/viewer/")
    await p.get_by_role("button", name="Upload").click()
    async with p.expect_file_chooser() as chooser:
        await p.get_by_text("Add files", exact=True).click()
    await (await chooser.value).set_files(files)
    dialog = p.get_by_role("dialog", name="Upload files")
    await expect(dialog.get_by_text("2 files completed.")).to_be_visible(timeout=30_000)
    await screenshot(p, "upload-done")
    # OHIF's uploader: one STOW-RS request per file, each answered 200 (no failed part)
    stows = await _eventually(
        lambda: [r for r in page.watch.responses if r.request.method == "POST"], 2
    )
    assert len(stows) == 2, [r.url for r in stows]
    assert all(r.url == f"{ohif_cluster.base_url}/studies" and r.status == 200 for r in stows)

    async with httpx.AsyncClient(base_url=ohif_cluster.base_url, timeout=30) as client:
        found = (await client.get("/studies", params={"StudyInstanceUID": study})).json()
    assert found and found[0]["00100010"]["Value"][0]["Alphabetic"] == patient
    assert found[0]["00201208"]["Value"] == [2]  # NumberOfStudyRelatedInstances

    await dialog.get_by_role("button", name="Close").first.click()  # OHIF searches again
    await expect(_row(p, patient.replace("^", ", "))).to_be_visible()
    await screenshot(p, "upload-in-list")
    page.watch.check()
