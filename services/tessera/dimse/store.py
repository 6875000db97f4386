"""C-STORE SCP (PS3.4 Annex B): each instance through the same path as STOW-RS.

pynetdicom writes the received data set straight to a temporary Part 10 file
(``STORE_RECV_CHUNKED_DATASET``, set by :mod:`tessera.dimse.server`): nothing is decoded
and no instance is held whole in memory. That file is streamed to the router as a
one-instance STOW-RS; the answer comes after the index commit, so a C-FIND right after
the C-STORE response finds the instance. The STOW answer's Failure / Warning Reason is
the C-STORE status, as PS3.18 and PS3.4 share the codes (A700 out of resources, A900
data set does not match the SOP class, C000 cannot understand, B000 / B006 / B007
warnings, 0111 duplicate, 0124 not authorized), with its reason as Error Comment.
"""

from __future__ import annotations

import logging
from pathlib import Path

from pydicom.dataset import Dataset
from pynetdicom.events import Event

from tessera.dimse import metrics
from tessera.dimse.archive import Unavailable
from tessera.dimse.context import NOT_AUTHORIZED, Gateway
from tessera.shared.status import FailureReason

log = logging.getLogger(__name__)


def handle_store(gateway: Gateway, event: Event) -> Dataset:
    path = Path(event.dataset_path)
    try:
        status, comment = _store(gateway, event, path)
    finally:
        path.unlink(missing_ok=True)
    metrics.OPERATIONS.labels("C-STORE", metrics.status_class(status)).inc()
    answer = Dataset()
    answer.Status = status
    if comment and status != 0:
        answer.ErrorComment = comment[:64]
    return answer


def _store(gateway: Gateway, event: Event, path: Path) -> tuple[int, str]:
    node = gateway.node_of(event)
    if node is None or not node.may("store"):
        return NOT_AUTHORIZED, "this AE may not store"
    try:
        metrics.BYTES.labels("received").inc(path.stat().st_size)
        result = gateway.archive.store(path, node.principal)
    except Unavailable as e:
        log.warning("C-STORE from %s: %s", node.ae_title, e)
        return FailureReason.REFUSED_OUT_OF_RESOURCES, "the archive is unavailable; retry"
    except OSError as e:
        log.error("C-STORE from %s: %s", node.ae_title, e)
        return FailureReason.REFUSED_OUT_OF_RESOURCES, "could not read the received data"
    if result.status not in (0, FailureReason.REFUSED_OUT_OF_RESOURCES):
        log.info("C-STORE from %s: 0x%04X %s", node.ae_title, result.status, result.comment)
    return result.status, result.comment
