"""Driving OHIF in a page: what every test watches, and how it reads the viewport.

:class:`Watch` records, for one page, every console error, uncaught exception, failed
request and DICOMweb response with status >= 400; :meth:`Watch.check` fails the test
with all of them. The viewport is read back from its canvas (Cornerstone draws each
viewport into a 2D ``canvas.cornerstone-canvas``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from playwright.async_api import ConsoleMessage, Page, Request, Response

ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts" / "browser"

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",  # we are root
    "--disable-gpu",  # WebGL still works, on SwiftShader
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

# Before any of OHIF's code: no onboarding tour, no "investigational use" banner over the
# viewport (both remembered in storage once dismissed), a resource timing buffer that
# holds every frame request of a long series.
INIT_SCRIPT = """
localStorage.setItem('shownTours', JSON.stringify(['basicViewerTour']));
sessionStorage.setItem('investigationalUseDialog', 'hidden');
performance.setResourceTimingBufferSize(100000);
"""

VIEWPORT_CANVAS = "canvas.cornerstone-canvas"

# Statistics of the first viewport's pixels: how many are not black, and a fingerprint
# that changes when another slice is drawn.
_READ_CANVAS = """(selector) => {
  const canvas = document.querySelector(selector);
  if (!canvas || !canvas.width || !canvas.height) return null;
  const copy = document.createElement('canvas');
  copy.width = canvas.width; copy.height = canvas.height;
  const ctx = copy.getContext('2d');
  ctx.drawImage(canvas, 0, 0);
  const data = ctx.getImageData(0, 0, copy.width, copy.height).data;
  let lit = 0, hash = 0;
  for (let i = 0; i < data.length; i += 4) {
    const v = data[i] + data[i + 1] + data[i + 2];
    if (v > 24) lit++;
    hash = (Math.imul(hash, 31) + v) | 0;
  }
  return {width: copy.width, height: copy.height, lit, hash};
}"""


@dataclass
class Watch:
    """Problems seen by one page, and the DICOMweb requests it made."""

    dicomweb: str  # the API's base URL, e.g. http://127.0.0.1:8042/dicom-web
    problems: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)
    responses: list[Response] = field(default_factory=list)

    def attach(self, page: Page) -> None:
        page.on("console", self._console)
        page.on("pageerror", lambda exc: self.problems.append(f"uncaught: {exc}"))
        page.on("request", self._request)
        page.on("response", self._response)
        page.on("requestfailed", self._failed)

    def _console(self, message: ConsoleMessage) -> None:
        if message.type == "error":
            self.problems.append(f"console error: {message.text[:500]}")

    def _request(self, request: Request) -> None:
        if request.url.startswith(self.dicomweb):
            self.requests.append(f"{request.method} {request.url}")

    def _response(self, response: Response) -> None:
        if response.url.startswith(self.dicomweb):
            self.responses.append(response)
        if response.status >= 400:
            self.problems.append(
                f"HTTP {response.status}: {response.request.method} {response.url}"
            )

    def _failed(self, request: Request) -> None:
        self.problems.append(f"request failed ({request.failure}): {request.url}")

    def check(self) -> None:
        assert not self.problems, "the page saw problems:\n" + "\n".join(self.problems)

    def dicomweb_paths(self, part: str) -> list[str]:
        return [r for r in self.requests if part in r]


async def read_viewport(page: Page) -> dict[str, int] | None:
    result: dict[str, int] | None = await page.evaluate(_READ_CANVAS, VIEWPORT_CANVAS)
    return result


async def screenshot(page: Page, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    await page.screenshot(path=path)
    return path


class WatchedPage:
    """A page and what it saw (``Page`` itself takes no new attributes)."""

    def __init__(self, page: Page, watch: Watch) -> None:
        self.page = page
        self.watch = watch


async def wait_for_pixels(page: Page, within: float = 45.0) -> dict[str, int]:
    """The viewport's statistics once it shows an image (a tenth of it lit at least)."""
    deadline = time.monotonic() + within
    seen = None
    while time.monotonic() < deadline:
        seen = await read_viewport(page)
        if seen and seen["lit"] > seen["width"] * seen["height"] // 10:
            return seen
        await page.wait_for_timeout(250)
    raise AssertionError(f"the viewport stayed blank for {within}s: {seen}")
