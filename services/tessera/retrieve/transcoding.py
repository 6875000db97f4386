"""Asking the transcode service for an instance or a frame in another Transfer Syntax.

WADO-RS returns an instance in the Transfer Syntax the client accepts (PS3.18 8.7.3.5);
when that is not the stored one, the transcode workers convert it and cache the result
in storage under :func:`~tessera.shared.storage.derived_key`. Retrieve checks that key
first and asks the workers (:class:`~tessera.shared.transcode.client.TranscodeClient`,
the contract in :mod:`tessera.shared.transcode`) only when it is missing. A frame
(PS3.18 10.4.1.1.x) likewise, under :func:`~tessera.shared.storage.derived_frame_key`.
"""

from __future__ import annotations

from tessera.retrieve.derived import DerivedObjects
from tessera.shared.errors import NotAcceptable
from tessera.shared.storage import ObjectStore, derived_frame_key, derived_key
from tessera.shared.transcode import (
    FRAME_TARGETS,
    FrameLocation,
    FrameRequest,
    TranscodeRequest,
    can_transcode,
)
from tessera.shared.transcode.client import TranscodeClient


class Transcoder:
    """Derived keys for a retrieve app: storage cache first, one task per key in flight."""

    def __init__(self, client: TranscodeClient, store: ObjectStore) -> None:
        self.client = client
        self.store = store
        self._derived = DerivedObjects(store)

    async def key_for(self, storage_key: str, stored_ts: str, target_ts: str) -> str:
        """The key of the object to send for ``target_ts`` (the stored one if it matches)."""
        if target_ts == stored_ts:
            return storage_key
        if not can_transcode(stored_ts, target_ts):
            raise NotAcceptable(
                f"cannot convert transfer syntax {stored_ts} (stored) to {target_ts}"
            )
        request = TranscodeRequest(storage_key, target_ts)
        key = derived_key(storage_key, target_ts)
        return await self._derived.get(key, lambda: self.client.key_of(request))

    async def frame_key_for(
        self,
        storage_key: str,
        frame_number: int,
        target_ts: str,
        location: FrameLocation | None = None,
    ) -> str:
        """The key of frame ``frame_number`` decoded to ``target_ts`` by transcode, asked
        only if not stored yet. ``location`` (Pixel Data value offset and the frame's
        range, from the index) lets the worker read just the attributes and that frame
        instead of the whole object."""
        if target_ts not in FRAME_TARGETS:
            raise NotAcceptable(
                f"frames are not converted to {target_ts}; they are made in"
                f" {', '.join(sorted(FRAME_TARGETS))}"
            )
        request = FrameRequest(storage_key, frame_number, target_ts, location)
        key = derived_frame_key(storage_key, frame_number, target_ts)
        return await self._derived.get(key, lambda: self.client.key_of(request))
