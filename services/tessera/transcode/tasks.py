"""``tessera.transcode.to_transfer_syntax``: an instance in another Transfer Syntax.

The result is stored under :func:`~tessera.shared.storage.derived_key` and the task
returns that key; retrieve streams it from storage like any stored object. A derived
object that exists is returned without decoding anything (the cache). Identical tasks
that arrive together decode once: the work runs under a Redis lock named after the
derived key, and whoever gets the lock second finds the object made
(:mod:`tessera.transcode.cache`).

A target :mod:`~tessera.transcode.convert` does not produce, or a source it cannot
decode, raises :class:`~tessera.shared.errors.UnsupportedTransferSyntax`, which Celery
returns to the caller as itself (retrieve answers 406); a missing source raises
:class:`~tessera.shared.errors.ObjectNotFound` (404).

The task body is synchronous (Celery prefork); the async object store and Redis client
are used inside one ``asyncio.run`` per task, opened and closed there, so no client is
shared across event loops or forked processes.
"""

from __future__ import annotations

import logging
from typing import Any

from celery import shared_task

from tessera.shared.settings import Settings
from tessera.shared.storage import ObjectStore, derived_key
from tessera.shared.transcode import TRANSCODE_TASK, TranscodeRequest
from tessera.transcode import convert
from tessera.transcode.bad_data import refused_as
from tessera.transcode.cache import produce_once, run
from tessera.transcode.celery_app import settings_of

log = logging.getLogger(__name__)


@shared_task(name=TRANSCODE_TASK, bind=True)
def to_transfer_syntax(self: Any, request: dict[str, Any]) -> str:
    """Key of the object of a :class:`~tessera.shared.transcode.TranscodeRequest`,
    converted to its target."""
    settings = settings_of(self.app)
    req = TranscodeRequest.from_json(request)
    convert.check_target(req.target_ts)  # refuse before any I/O
    return run(settings, transcode_object(settings, req.storage_key, req.target_ts))


async def transcode_object(settings: Settings, storage_key: str, target_ts: str) -> str:
    """Convert (or find converted) the stored object; the key of the result."""

    async def make(store: ObjectStore) -> bytes | str:
        data = await store.get_bytes(storage_key)
        with refused_as(f"converting to {target_ts}"):
            ds = convert.read(data)
            source_ts = convert.source_syntax(ds)
            if source_ts == target_ts:
                return storage_key
            converted = convert.encode(ds, target_ts)
        log.info("%s: converted %s -> %s", storage_key, source_ts, target_ts)
        return converted

    return await produce_once(settings, derived_key(storage_key, target_ts), make)
