"""Asking the transcode service for a rendered frame (PS3.18 8.3.5, 9.5).

Like :class:`~tessera.retrieve.transcoding.Transcoder`: the rendering's key
(:func:`~tessera.shared.storage.rendered_key`) is checked in storage first; only when it
is missing is the task sent, by name, and waited for in a thread, off the event loop
(:func:`~tessera.retrieve.transcoding._run_task`, which also maps the failures: the queue
down or no result in time is 503, a rendering the workers refuse is 406, a stored object
they cannot find and anything else is 500). Identical requests in this process share
one task.

Contract with the workers: task ``tessera.transcode.render`` on queue ``transcode``, args
``(storage_key, frame_number, RenderParams.to_dict())``, result the rendered key.
"""

from __future__ import annotations

import celery

from tessera.retrieve.derived import DerivedObjects
from tessera.retrieve.transcoding import _run_task
from tessera.shared.rendering import RenderParams
from tessera.shared.settings import Settings
from tessera.shared.storage import ObjectStore, rendered_key

TASK_NAME = "tessera.transcode.render"


class Renderer:
    """Rendered keys for a retrieve app: storage cache first, one task per key in flight."""

    def __init__(self, settings: Settings, celery_app: celery.Celery, store: ObjectStore) -> None:
        self.settings = settings
        self.celery_app = celery_app
        self.store = store
        self._derived = DerivedObjects(store)

    @staticmethod
    def key(storage_key: str, frame_number: int, params: RenderParams) -> str:
        """Where the rendering is (or will be) stored."""
        return rendered_key(storage_key, frame_number, params.digest(), params.extension)

    async def key_for(self, storage_key: str, frame_number: int, params: RenderParams) -> str:
        """The key of the rendered frame, rendering it first if it is not stored yet."""
        key = self.key(storage_key, frame_number, params)
        args = (storage_key, frame_number, params.to_dict())
        what = f"rendering frame {frame_number} as {params.media_type}"
        return await self._derived.get(
            key, lambda: _run_task(self.settings, self.celery_app, TASK_NAME, args, what)
        )
