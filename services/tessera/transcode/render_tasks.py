"""``tessera.transcode.render``: one frame of an instance as a rendered image (PS3.18 8.3.5).

The request is a :class:`~tessera.shared.transcode.RenderRequest`; the result is stored under
:func:`~tessera.shared.storage.rendered_key` and the task returns that key. As for
``to_transfer_syntax`` (:mod:`.tasks`): a rendering that exists is returned without
decoding anything, and identical tasks that arrive together render once (a Redis lock
named after the key; whoever gets it second finds the object made).

An Encapsulated PDF asked as ``application/pdf`` is its document, as stored (PS3.18
8.7.4, Text category). What cannot be rendered raises
:class:`~tessera.shared.errors.NotAcceptable` (406 at retrieve: a video, a non-image,
a PDF asked as an image, an undecodable frame); a frame number out of range raises
:class:`~tessera.shared.errors.BadRequest` (400, as PS3.18 9.5.2 has it for WADO-URI).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from celery import shared_task

from tessera.shared.dicomjson import quiet_pydicom
from tessera.shared.errors import NotAcceptable
from tessera.shared.rendering import PDF, RenderParams
from tessera.shared.settings import Settings
from tessera.shared.storage import ObjectStore, rendered_key
from tessera.shared.transcode import RENDER_TASK, RenderRequest
from tessera.transcode import convert, render, render_source
from tessera.transcode.bad_data import refused_as
from tessera.transcode.cache import produce_once, run
from tessera.transcode.celery_app import settings_of

log = logging.getLogger(__name__)


@shared_task(name=RENDER_TASK, bind=True)
def render_frame(self: Any, request: dict[str, Any]) -> str:
    """Key of the rendering a :class:`~tessera.shared.transcode.RenderRequest` asks for."""
    settings = settings_of(self.app)
    req = RenderRequest.from_json(request)  # refuse bad parameters before any I/O
    return run(settings, render_object(settings, req.storage_key, req.frame_number, req.params))


def rendition(data: bytes, frame_number: int, params: RenderParams) -> bytes:
    """The bytes of the rendered representation of the DICOM file ``data``."""
    with quiet_pydicom():
        ds = convert.read(data)
        kind = render_source.category(ds)
        if params.media_type == PDF:
            if kind != "pdf":
                raise NotAcceptable("only an Encapsulated PDF instance is rendered as a PDF")
            return render_source.encapsulated_pdf(ds)
        if kind == "pdf":
            raise NotAcceptable(
                f"an Encapsulated PDF is rendered as {PDF}, not {params.media_type}"
            )
        if kind == "video":
            raise NotAcceptable("rendering video (MPEG-2, MPEG-4, HEVC) is not supported")
        if kind != "image":
            raise NotAcceptable("the instance has no image to render (no Pixel Data)")
        frame = render_source.load_frame(ds, frame_number)
    return render.render(frame, params)


async def render_object(
    settings: Settings,
    storage_key: str,
    frame_number: int,
    params: RenderParams,
    answer: Callable[[str, bytes], None] | None = None,
) -> str:
    """Render (or find rendered) one frame of the stored object; the key of the result.

    Rendered once under the shared cache lock (:func:`~tessera.transcode.cache.produce_once`);
    ``answer(key, rendering)`` is given a rendering made now before it is stored.
    """
    key = rendered_key(storage_key, frame_number, params.digest(), params.extension)

    async def make(store: ObjectStore) -> bytes:
        data = await store.get_bytes(storage_key)
        with refused_as(f"rendering frame {frame_number}", NotAcceptable):
            out = rendition(data, frame_number, params)
        log.info("%s: frame %d rendered as %s", storage_key, frame_number, params.media_type)
        return out

    return await produce_once(settings, key, make, answer)
