"""The retrieve <-> transcode contract: the one place both sides take it from.

Retrieve asks the transcode workers (Celery) for what needs pixel work and waits for the
storage key of the result; the workers write the result under a derived key
(:mod:`tessera.shared.storage`) and answer with it. Neither side imports the other:

* :mod:`.syntaxes`  what the workers decode and produce (PS3.5 Annex A Transfer Syntaxes);
* :mod:`.contract`  task names, the per-shard queue, the cache lock name, and the
                    versioned request types (:class:`TranscodeRequest`,
                    :class:`FrameRequest` with its :class:`FrameLocation`,
                    :class:`RenderRequest`);
* :mod:`.client`    :class:`TranscodeClient`: sends a request, waits for its key, maps
                    failures onto the error tree (503, 406, 404, 500).
"""

from tessera.shared.transcode.contract import (
    FRAME_TASK,
    RENDER_TASK,
    TRANSCODE_TASK,
    FrameLocation,
    FrameRequest,
    RenderRequest,
    TranscodeRequest,
    lock_name,
    queue_name,
)
from tessera.shared.transcode.syntaxes import (
    COMPRESSED_TARGETS,
    DECODABLE,
    FRAME_TARGETS,
    TARGETS,
    can_transcode,
    can_transcode_frame,
)

__all__ = [
    "COMPRESSED_TARGETS",
    "DECODABLE",
    "FRAME_TARGETS",
    "FRAME_TASK",
    "RENDER_TASK",
    "TARGETS",
    "TRANSCODE_TASK",
    "FrameLocation",
    "FrameRequest",
    "RenderRequest",
    "TranscodeRequest",
    "can_transcode",
    "can_transcode_frame",
    "lock_name",
    "queue_name",
]
