"""Asking the transcode service for a rendered frame (PS3.18 8.3.5, 9.5).

Like :class:`~tessera.retrieve.transcoding.Transcoder`: the rendering's key
(:func:`~tessera.shared.storage.rendered_key`) is checked in storage first; only when it
is missing is a :class:`~tessera.shared.transcode.RenderRequest` sent through the shared
:class:`~tessera.shared.transcode.client.TranscodeClient` (which maps the failures: the
queue down or no result in time is 503, a rendering the workers refuse is 406, a stored
object they cannot find and anything else is 500). Identical requests in this process
share one task.
"""

from __future__ import annotations

from tessera.retrieve.derived import DerivedObjects, Made
from tessera.shared.rendering import RenderParams
from tessera.shared.storage import ObjectStore, rendered_key
from tessera.shared.transcode import RenderRequest
from tessera.shared.transcode.client import TranscodeClient


class Renderer:
    """Rendered keys for a retrieve app: storage cache first, one task per key in flight."""

    def __init__(self, client: TranscodeClient, store: ObjectStore) -> None:
        self.client = client
        self.store = store
        self._derived = DerivedObjects(store)

    @staticmethod
    def key(storage_key: str, frame_number: int, params: RenderParams) -> str:
        """Where the rendering is (or will be) stored."""
        return rendered_key(storage_key, frame_number, params.digest(), params.extension)

    async def rendering_for(
        self,
        storage_key: str,
        frame_number: int,
        params: RenderParams,
        transfer_syntax: str | None = None,
    ) -> Made:
        """The key of the rendered frame, rendering it first if it is not stored yet (an
        uncompressed ``transfer_syntax``: through the render lane while it is served),
        and the rendering's bytes when the lane answered them: serve those, the worker
        writes the rendering to storage after its answer."""
        request = RenderRequest(storage_key, frame_number, params)
        key = self.key(storage_key, frame_number, params)
        return await self._derived.made(key, lambda: self.client.render(request, transfer_syntax))
