"""What every retrieve handler needs, built once by the app's lifespan."""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg
from starlette.requests import Request

from tessera.retrieve.renderer import Renderer
from tessera.retrieve.transcoding import Transcoder
from tessera.shared.http import public_base_url
from tessera.shared.settings import Settings
from tessera.shared.storage import ObjectStore


@dataclass(frozen=True)
class Context:
    settings: Settings
    pool: asyncpg.Pool
    store: ObjectStore
    transcoder: Transcoder
    renderer: Renderer

    def base_url(self, request: Request) -> str:
        """The public DICOMweb base URL, as the client sees it (no trailing slash)."""
        return public_base_url(request, self.settings.dicomweb_prefix)


def context(request: Request) -> Context:
    ctx: Context = request.app.state.retrieve
    return ctx
