"""Asking the transcode service for an instance in another Transfer Syntax.

WADO-RS returns an instance in the Transfer Syntax the client accepts (PS3.18 8.7.3.5);
when that is not the stored one, the transcode workers (Celery) convert it and cache the
result in storage under :func:`~tessera.shared.storage.derived_key`. Retrieve checks that
key first, sends the task by name only when it is missing (retrieve never imports the
transcode service) and waits for it in a thread, off the event loop.

Contract with the workers: task ``tessera.transcode.to_transfer_syntax`` on queue
``transcode``, args ``(storage_key, target_ts)``, result the derived key; for one frame
(PS3.18 10.4.1.1.x), task ``tessera.transcode.frame_to_transfer_syntax``, args
``(storage_key, frame_number, target_ts[, location])`` (``location``: where the frame
and the attributes before Pixel Data are, so the worker reads only those), result the
:func:`~tessera.shared.storage.derived_frame_key`. Failures map
onto the error tree: the queue down or a result not in time is 503 (try again), a
conversion the workers refuse (:class:`UnsupportedTransferSyntax`, carried back by
Celery as itself) is 406, a frame the object does not have 404, anything else the
workers raise is 500.
"""

from __future__ import annotations

import asyncio

import celery
import celery.exceptions
import kombu.exceptions
import redis.exceptions

from tessera.retrieve.derived import DerivedObjects
from tessera.shared.errors import (
    NotAcceptable,
    NotFound,
    ObjectNotFound,
    ServiceUnavailable,
    TesseraError,
)
from tessera.shared.settings import Settings
from tessera.shared.storage import ObjectStore, derived_frame_key, derived_key

TASK_NAME = "tessera.transcode.to_transfer_syntax"
FRAME_TASK_NAME = "tessera.transcode.frame_to_transfer_syntax"
QUEUE = "transcode"

IMPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2"
EXPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2.1"
DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2.1.99"
EXPLICIT_VR_BIG_ENDIAN = "1.2.840.10008.1.2.2"

# What the transcode workers decode: pydicom 3 with the pylibjpeg plugins (libjpeg,
# openjpeg, rle) installed in their image. PS3.5 Annex A transfer syntaxes.
DECODABLE: frozenset[str] = frozenset(
    {
        IMPLICIT_VR_LITTLE_ENDIAN,
        EXPLICIT_VR_LITTLE_ENDIAN,
        DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN,
        EXPLICIT_VR_BIG_ENDIAN,
        "1.2.840.10008.1.2.4.50",  # JPEG Baseline
        "1.2.840.10008.1.2.4.51",  # JPEG Extended
        "1.2.840.10008.1.2.4.57",  # JPEG Lossless
        "1.2.840.10008.1.2.4.70",  # JPEG Lossless SV1
        "1.2.840.10008.1.2.4.80",  # JPEG-LS Lossless
        "1.2.840.10008.1.2.4.81",  # JPEG-LS Near-Lossless
        "1.2.840.10008.1.2.4.90",  # JPEG 2000 Lossless
        "1.2.840.10008.1.2.4.91",  # JPEG 2000
        "1.2.840.10008.1.2.4.201",  # HTJ2K Lossless
        "1.2.840.10008.1.2.4.202",  # HTJ2K Lossless RPCL
        "1.2.840.10008.1.2.4.203",  # HTJ2K
        "1.2.840.10008.1.2.5",  # RLE Lossless
    }
)

RLE_LOSSLESS = "1.2.840.10008.1.2.5"

# The compressed Transfer Syntaxes the workers encode (tessera.transcode.codecs.CODECS;
# a unit test keeps the two lists equal). Whether a given instance fits one (8-bit for
# JPEG Baseline, unsigned for the DCT JPEG processes...) only the worker knows: a target
# it cannot hold the pixels in is refused by the worker and answered 406.
COMPRESSED_TARGETS: frozenset[str] = frozenset(
    {
        "1.2.840.10008.1.2.4.50",  # JPEG Baseline (8-bit, lossy)
        "1.2.840.10008.1.2.4.51",  # JPEG Extended (12-bit, lossy)
        "1.2.840.10008.1.2.4.57",  # JPEG Lossless
        "1.2.840.10008.1.2.4.70",  # JPEG Lossless SV1
        "1.2.840.10008.1.2.4.80",  # JPEG-LS Lossless
        "1.2.840.10008.1.2.4.81",  # JPEG-LS Near-Lossless
        "1.2.840.10008.1.2.4.90",  # JPEG 2000 Lossless
        "1.2.840.10008.1.2.4.91",  # JPEG 2000 (lossy)
        "1.2.840.10008.1.2.4.201",  # HTJ2K Lossless
        "1.2.840.10008.1.2.4.202",  # HTJ2K Lossless RPCL
        "1.2.840.10008.1.2.4.203",  # HTJ2K (lossy)
        RLE_LOSSLESS,
    }
)

# What retrieve asks the workers to produce: the DICOMweb default (PS3.18 Table 8.7.3-2)
# and the compressed ones. The workers also make Implicit VR Little Endian, which PS3.18
# 8.7.3 says shall not be used with web services, so it is never asked for.
TARGETS: frozenset[str] = frozenset({EXPLICIT_VR_LITTLE_ENDIAN}) | COMPRESSED_TARGETS


def can_transcode(source_ts: str, target_ts: str) -> bool:
    """True if an instance stored in ``source_ts`` can be converted to ``target_ts``."""
    return source_ts != target_ts and source_ts in DECODABLE and target_ts in TARGETS


# What the frame task produces: a frame's native pixel data (PS3.18 Table 8.7.3-4) or its
# bitstream in a compressed Transfer Syntax (Table 8.7.3-5).
FRAME_TARGETS: frozenset[str] = frozenset({EXPLICIT_VR_LITTLE_ENDIAN}) | COMPRESSED_TARGETS


def can_transcode_frame(source_ts: str, target_ts: str) -> bool:
    """True if the frame task makes a frame stored in ``source_ts`` in ``target_ts``; for
    a compressed ``target_ts`` that is the stored one it cuts the frame's bitstream out of
    the object (the frames the index has no range for)."""
    if source_ts not in DECODABLE or target_ts not in FRAME_TARGETS:
        return False
    return source_ts != target_ts or target_ts in COMPRESSED_TARGETS


# A Redis that is down must give a prompt 503, not a request held for Celery's default
# ~20 reconnection attempts: few retries, short connect timeouts (seconds).
_RETRY = {"max_retries": 2, "interval_start": 0, "interval_step": 0.2, "interval_max": 0.5}


def celery_client(settings: Settings) -> celery.Celery:
    """The Celery app retrieve sends transcode tasks with (a client: it runs no tasks)."""
    app = celery.Celery("tessera", broker=settings.redis_url, backend=settings.redis_url)
    app.conf.update(
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        task_publish_retry_policy=_RETRY,
        broker_connection_timeout=2.0,
        redis_socket_connect_timeout=2.0,
        result_backend_transport_options={"retry_policy": _RETRY},
    )
    return app


def _unreachable(exc: BaseException) -> bool:
    """A connection failure to Redis, as the publisher or the result consumer report it
    (the Redis result consumer wraps it in a RuntimeError "must be restarted")."""
    errors = (kombu.exceptions.OperationalError, redis.exceptions.ConnectionError, OSError)
    if isinstance(exc, RuntimeError) and isinstance(exc.__cause__, errors):
        return True
    return isinstance(exc, errors)


async def transcoded_key(
    settings: Settings, celery_app: celery.Celery, storage_key: str, target_ts: str
) -> str:
    """Run the transcode task for ``storage_key`` and return the derived object's key.

    Sends ``tessera.transcode.to_transfer_syntax(storage_key, target_ts)`` by name and
    waits up to ``settings.transcode_timeout`` seconds in a worker thread.
    """
    return await _run_task(
        settings, celery_app, TASK_NAME, (storage_key, target_ts), f"transcode to {target_ts}"
    )


async def _run_task(
    settings: Settings, celery_app: celery.Celery, name: str, args: tuple[object, ...], what: str
) -> str:
    """Send task ``name`` with ``args`` and wait for the key it answers, errors mapped."""
    timeout = settings.transcode_timeout

    def run() -> object:
        result = celery_app.send_task(name, args=args, queue=QUEUE)
        value = result.get(timeout=timeout)
        result.forget()
        return value

    try:
        value = await asyncio.to_thread(run)
    except celery.exceptions.TimeoutError:
        raise ServiceUnavailable(
            f"{what} did not finish within {timeout:g}s", retry_after=5
        ) from None
    except ObjectNotFound:  # indexed, yet not in storage: ours to fix, not the client's
        raise TesseraError(f"{what}: the stored object {args[0]} is missing") from None
    except (NotAcceptable, NotFound):
        raise
    except Exception as e:
        if _unreachable(e):
            cause = e.__cause__ if isinstance(e, RuntimeError) else e
            raise ServiceUnavailable(
                f"transcode queue unreachable: {cause}", retry_after=5
            ) from None
        raise TesseraError(f"{what} of {args[0]} failed: {type(e).__name__}: {e}") from None
    if not isinstance(value, str) or not value:
        raise TesseraError(f"{what} returned no object key ({value!r})")
    return value


class Transcoder:
    """Derived keys for a retrieve app: storage cache first, one task per key in flight."""

    def __init__(self, settings: Settings, celery_app: celery.Celery, store: ObjectStore) -> None:
        self.settings = settings
        self.celery_app = celery_app
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
        key = derived_key(storage_key, target_ts)
        return await self._derived.get(
            key, lambda: transcoded_key(self.settings, self.celery_app, storage_key, target_ts)
        )

    async def frame_key_for(
        self,
        storage_key: str,
        frame_number: int,
        target_ts: str,
        location: dict[str, int] | None = None,
    ) -> str:
        """The key of frame ``frame_number`` decoded to ``target_ts`` by transcode (task
        ``tessera.transcode.frame_to_transfer_syntax``), asked only if not stored yet.
        ``location`` (Pixel Data value offset and the frame's range, from the index) lets
        the task read just the attributes and that frame instead of the whole object."""
        if target_ts not in FRAME_TARGETS:
            raise NotAcceptable(
                f"frames are not converted to {target_ts}; they are made in"
                f" {', '.join(sorted(FRAME_TARGETS))}"
            )
        key = derived_frame_key(storage_key, frame_number, target_ts)
        args: tuple[object, ...] = (storage_key, frame_number, target_ts)
        if location is not None:
            args += (location,)
        what = f"converting frame {frame_number} to {target_ts}"
        return await self._derived.get(
            key, lambda: _run_task(self.settings, self.celery_app, FRAME_TASK_NAME, args, what)
        )

    def close(self) -> None:
        self.celery_app.close()
