"""Store Instances (STOW-RS), PS3.18 10.5.

``POST /studies`` and ``POST /studies/{StudyInstanceUID}`` with a
``multipart/related; type="application/dicom"`` body. Parts are read one at a time
(spooled to disk past a threshold), each parsed without its pixel data, validated and
written to storage under its content hash; the stored ones go to the index several to a
job (:mod:`tessera.ingest.to_index`). The
response is built only after the index has committed the instances it was sent
(read-your-writes): an instance the index did not confirm in ``index_timeout`` seconds
is reported failed, and re-sending it later succeeds.

One bad part never fails its neighbours: it becomes a FailedSOPSequence item with a
PS3.18 Table I.2-2 Failure Reason. Status per Table 10.5.3-1: 200 all stored, 202 some
stored or warnings, 409 none stored, 400 bad syntax, 415 wrong media type.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import uuid
from contextlib import aclosing
from dataclasses import dataclass
from typing import IO, Any

from starlette.requests import Request
from starlette.responses import Response

from tessera.ingest.to_index import Stored, ToIndex
from tessera.shared import metrics
from tessera.shared.accept import requested_accept
from tessera.shared.auth.internal import principal_of
from tessera.shared.auth.labels import stored_labels
from tessera.shared.changefeed import is_move
from tessera.shared.dicomfile import ParsedInstance, parse_instance
from tessera.shared.errors import (
    InvalidInstance,
    MultipartError,
    NotAcceptable,
)
from tessera.shared.http import DicomJSONResponse, public_base_url
from tessera.shared.mediatypes import parse_accept
from tessera.shared.messages import IndexInstance, InstanceOutcome
from tessera.shared.multipart import Part
from tessera.shared.queue import IndexQueue, reply_key
from tessera.shared.refs import check_uid
from tessera.shared.settings import Settings
from tessera.shared.status import FailureReason, WarningReason
from tessera.shared.storage import ObjectStore, instance_key
from tessera.shared.storage.guard import ObjectGuard
from tessera.shared.stow import (
    DICOM,
    check_content_type,
    damaged_body_warning,
    failed_item,
    read_stow_parts,
    response_status,
)

log = logging.getLogger(__name__)


@dataclass
class _Failed:
    sop_class_uid: str | None
    sop_instance_uid: str | None
    reason: int
    message: str

    @classmethod
    def out_of_resources(cls, sop_class_uid: str, sop_instance_uid: str, why: str) -> _Failed:
        """Out of Resources (PS3.4 B.2.3, 0xA700) for the instance named: stored or queued
        nothing lasting, so the sender is told to send it again (issue 15)."""
        message = f"{why}; re-send the instance"
        return cls(sop_class_uid, sop_instance_uid, FailureReason.REFUSED_OUT_OF_RESOURCES, message)


class StoreInstances:
    """The handler; one per ingest app, holding its storage, queue and settings."""

    def __init__(
        self, settings: Settings, store: ObjectStore, queue: IndexQueue, guard: ObjectGuard
    ) -> None:
        self.settings = settings
        self.store = store
        self.queue = queue
        self.guard = guard

    async def handle(self, request: Request) -> Response:
        study_uid = request.path_params.get("study")
        if study_uid is not None:
            check_uid(study_uid, "StudyInstanceUID")
        _check_accept(requested_accept(request))
        content_type = request.headers.get("content-type", "")
        check_content_type(content_type)
        labels, visible = stored_labels(
            principal_of(request), request.query_params.getlist("label")
        )
        moved = is_move(request)  # a rebalance's copy: "move-in" in the change feed

        reply_to = reply_key(self.settings.shard, uuid.uuid4().hex)
        failed: list[_Failed] = []

        def refused(stored: Stored, error: Exception) -> None:
            inst = stored.instance
            why = f"could not queue it for the index now ({type(error).__name__})"
            failed.append(_Failed.out_of_resources(inst.sop_class_uid, inst.sop_instance_uid, why))

        to_index = ToIndex(self.queue, reply_to, self.settings.duplicate_policy, refused)
        body_error: str | None = None
        parts = read_stow_parts(request.stream(), content_type, self.settings)
        try:
            async with aclosing(parts):
                async for part in parts:
                    stored = await self._one(part, study_uid, failed, labels, visible, moved)
                    if stored is not None:
                        to_index.add(stored)
        except MultipartError as e:
            if not to_index.count and not failed:
                raise
            body_error = e.reason  # parts before the damage are still answered for
        except BaseException:
            to_index.abandon()
            raise

        sent = await to_index.close()
        outcomes = await self._wait_for_index(reply_to, len(sent))
        return await self._response(request, study_uid, sent, outcomes, failed, body_error)

    async def _one(
        self,
        part: Part,
        study_uid: str | None,
        failed: list[_Failed],
        labels: tuple[str, ...] = (),
        visible: tuple[str, ...] | None = None,
        moved: bool = False,
    ) -> Stored | None:
        """Store ``part`` (pinned) and return it for the index, or append its failure."""
        if part.content_type is not None and part.content_type.essence != DICOM:
            failed.append(
                _Failed(
                    None,
                    None,
                    FailureReason.CANNOT_UNDERSTAND,
                    f"part media type {part.content_type.essence} is not supported; "
                    "send application/dicom (PS3.10 files)",
                )
            )
            return None
        known: ParsedInstance | None = None  # once parsed
        try:
            parsed, sha256 = await asyncio.to_thread(_parse_and_hash, part.file)
            known = parsed
            if study_uid is not None and parsed.study_instance_uid != study_uid:
                raise InvalidInstance(
                    FailureReason.DATA_SET_DOES_NOT_MATCH_SOP_CLASS,
                    f"StudyInstanceUID {parsed.study_instance_uid} does not match the "
                    f"study in the request URL ({study_uid})",
                    parsed.sop_class_uid,
                    parsed.sop_instance_uid,
                )
            key = instance_key(sha256)
            # the same bytes may be stored already: pinned first, so that no sweeper or
            # delete removes them under this STOW, and touched, so that the sweeper's
            # grace period counts from now (tessera.shared.storage.guard)
            await self.guard.pin(key)
            part.file.seek(0)
            written_now = await self.store.put_file_unless_present(key, part.file, part.size)
            if written_now:
                metrics.INGEST_STORED_BYTES.inc(part.size)
        except InvalidInstance as e:
            failed.append(_Failed(e.sop_class_uid, e.sop_instance_uid, e.failure_reason, e.message))
            return None
        except Exception as e:  # this part fails, not the request
            if known is None:  # a parser failure: ours, the data set is not understood
                log.exception("parsing a STOW part failed")
                failed.append(
                    _Failed(None, None, FailureReason.PROCESSING_FAILURE, f"could not parse: {e}")
                )
                return None
            # parsed, then storage or Redis down, a disk full, an object being removed:
            # Out of Resources (PS3.4 B.2.3, 0xA700), which tells the sender to send it
            # again, for the instance it names (issue 15)
            log.warning("storing a STOW part failed: %s: %s", type(e).__name__, e)
            why = f"could not store it now ({type(e).__name__})"
            failed.append(
                _Failed.out_of_resources(known.sop_class_uid, known.sop_instance_uid, why)
            )
            return None
        inst = IndexInstance(
            study_instance_uid=parsed.study_instance_uid,
            series_instance_uid=parsed.series_instance_uid,
            sop_instance_uid=parsed.sop_instance_uid,
            sop_class_uid=parsed.sop_class_uid,
            transfer_syntax_uid=parsed.transfer_syntax_uid,
            storage_key=key,
            size=part.size,
            sha256=sha256,
            metadata=parsed.metadata,
            number_of_frames=parsed.number_of_frames,
            rows=parsed.rows,
            columns=parsed.columns,
            pixel_data=parsed.pixel_data_json(),
            labels=labels,
            visible=visible,
            moved=moved,
        )
        warning = WarningReason.ELEMENTS_DISCARDED if parsed.discarded_tags else None
        return Stored(inst, written_now, warning)

    async def _wait_for_index(
        self, reply_to: str, count: int
    ) -> dict[str, tuple[InstanceOutcome, ...]]:
        """Each job's outcomes (one per instance, in order) by job id, for the ``count``
        jobs answered on ``reply_to`` within ``index_timeout``."""
        if count == 0:
            return {}
        replies = await self.queue.wait_replies(reply_to, count, self.settings.index_timeout)
        return {r.job_id: r.outcomes for r in replies}

    async def _response(
        self,
        request: Request,
        study_uid: str | None,
        sent: dict[str, list[Stored]],
        outcomes: dict[str, tuple[InstanceOutcome, ...]],
        failed: list[_Failed],
        body_error: str | None,
    ) -> Response:
        base = public_base_url(request, self.settings.dicomweb_prefix)
        referenced: list[dict[str, Any]] = []
        for job_id, group in sent.items():
            answered = outcomes.get(job_id, ())
            for i, stored in enumerate(group):
                outcome = answered[i] if i < len(answered) else None
                await self._account(stored, outcome, base, referenced, failed)
        return self._answer(study_uid, base, referenced, failed, body_error)

    async def _account(
        self,
        stored: Stored,
        outcome: InstanceOutcome | None,
        base: str,
        referenced: list[dict[str, Any]],
        failed: list[_Failed],
    ) -> None:
        """``stored``'s entry in the answer: referenced, or failed with its reason."""
        inst = stored.instance
        # committed or refused: the worker unpinned it with its answer (IndexJob.unpin);
        # no answer in time: the pin expires by itself
        if outcome is None:
            why = f"the index did not commit within {self.settings.index_timeout:g} s"
            failed.append(_Failed.out_of_resources(inst.sop_class_uid, inst.sop_instance_uid, why))
        elif outcome.outcome in ("stored", "unchanged", "replaced"):
            metrics.count_stored(outcome.outcome)
            url = f"{base}/studies/{inst.study_instance_uid}/series/"
            url += f"{inst.series_instance_uid}/instances/{inst.sop_instance_uid}"
            referenced.append(_referenced(inst, url, stored.warning))
        else:
            reason = {
                "conflict": FailureReason.DUPLICATE_SOP_INSTANCE,
                "refused": FailureReason.NOT_AUTHORIZED,
            }.get(outcome.outcome, FailureReason.PROCESSING_FAILURE)
            failed.append(
                _Failed(inst.sop_class_uid, inst.sop_instance_uid, reason, outcome.reason)
            )
            if stored.written_now and outcome.outcome in ("conflict", "refused"):
                # our bytes are referenced by no row: do not leave them behind,
                # unless another STOW of the same bytes pinned them meanwhile
                if await self.guard.claim(inst.storage_key):
                    try:
                        await self.store.delete(inst.storage_key)
                    finally:
                        await self.guard.release(inst.storage_key)

    def _answer(
        self,
        study_uid: str | None,
        base: str,
        referenced: list[dict[str, Any]],
        failed: list[_Failed],
        body_error: str | None,
    ) -> Response:
        studies = {r["_study"] for r in referenced}
        study_url = study_uid or (next(iter(studies)) if len(studies) == 1 else None)
        body: dict[str, Any] = {
            "00081190": {"vr": "UR", "Value": [f"{base}/studies/{study_url}"]}
            if study_url
            else {"vr": "UR"}
        }
        if failed:
            body["00081198"] = {
                "vr": "SQ",
                "Value": [
                    failed_item(f.sop_class_uid, f.sop_instance_uid, f.reason, f.message)
                    for f in failed
                ],
            }
        if referenced:
            for r in referenced:
                del r["_study"]
            body["00081199"] = {"vr": "SQ", "Value": referenced}

        status = response_status(referenced, bool(failed), body_error)
        for f in failed:
            metrics.count_stow_failure(f.reason)
            log.info("STOW failure %04X for %s: %s", f.reason, f.sop_instance_uid, f.message)
        headers = {}
        if body_error:
            headers["Warning"] = damaged_body_warning(body_error)
        return DicomJSONResponse(body, status_code=status, headers=headers)


def _parse_and_hash(fp: IO[bytes]) -> tuple[ParsedInstance, str]:
    digest = hashlib.sha256()
    fp.seek(0)
    while block := fp.read(1024 * 1024):
        digest.update(block)
    fp.seek(0)
    return parse_instance(fp), digest.hexdigest()


def _referenced(inst: IndexInstance, url: str, warning: int | None) -> dict[str, Any]:
    item: dict[str, Any] = {
        "00081150": {"vr": "UI", "Value": [inst.sop_class_uid]},
        "00081155": {"vr": "UI", "Value": [inst.sop_instance_uid]},
        "00081190": {"vr": "UR", "Value": [url]},
        "_study": inst.study_instance_uid,
    }
    if warning is not None:
        item["00081196"] = {"vr": "US", "Value": [int(warning)]}
    return item


def _check_accept(header: str | None) -> None:
    for r in parse_accept(header):
        if r.q > 0 and r.essence in (
            "application/dicom+json",
            "application/json",
            "*/*",
            "application/*",
        ):
            return
    raise NotAcceptable("STOW-RS responses are application/dicom+json only")
