"""WADO-RS Retrieve Study, Series and Instance (PS3.18 10.4.1.1; response 8.7.5).

``GET /studies/{study}[/series/{series}[/instances/{instance}]]`` answers
``multipart/related; type="application/dicom"``, one part per instance in retrieval order,
each ``Content-Type: application/dicom; transfer-syntax=<UID>`` with the instance's URL
as ``Content-Location``. An instance whose stored Transfer Syntax is acceptable is sent
byte for byte as stored; otherwise transcode converts it (see :mod:`.negotiation` for the
Accept rules). Nothing is refused half-way on Accept grounds: every instance's
representation is decided before the first byte, and a 406 names what was asked and
what is stored. ETag and Cache-Control: :mod:`.caching` (a 304 opens nothing).
"""

from __future__ import annotations

import asyncio
import logging

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tessera.retrieve.caching import cache_headers, entity_tag, matches, not_modified
from tessera.retrieve.context import context
from tessera.retrieve.negotiation import PartNegotiation
from tessera.retrieve.queries import StoredInstance, stored_instances, target_of
from tessera.retrieve.streaming import OpenedPart, PartPipeline, missing_objects, open_part
from tessera.shared.accept import accept_ranges
from tessera.shared.auth.internal import principal_of
from tessera.shared.errors import NotAcceptable, ObjectNotFound, TesseraError
from tessera.shared.multipart import multipart_content_type, new_boundary
from tessera.shared.storage import ObjectStore
from tessera.shared.transcode import can_transcode

PART_TYPE = "application/dicom"

log = logging.getLogger(__name__)


async def retrieve_instances(request: Request) -> Response:
    """Retrieve Study / Series / Instance, by the route's path parameters."""
    ctx = context(request)
    target = target_of(request.path_params)
    negotiation = PartNegotiation(accept_ranges(request), PART_TYPE)
    if not negotiation.wanted:
        raise negotiation.not_acceptable(())
    instances = await stored_instances(ctx.pool, target, principal_of(request).labels)
    # stored Transfer Syntax -> the ones to send, best first: a conversion the worker
    # refuses for an instance's pixels (406) falls back to the next (PS3.18 8.7.5)
    plan: dict[str, list[str]] = {}
    refused: list[str] = []
    for stored in sorted({i.transfer_syntax_uid for i in instances}):
        ranked = [ts for _, ts in negotiation.ranked(stored, can_transcode)]
        if not ranked:
            refused.append(stored)
        else:
            plan[stored] = ranked
    if refused:
        raise negotiation.not_acceptable(refused)
    base = ctx.base_url(request)
    parts = [(i.sha256, plan[i.transfer_syntax_uid]) for i in instances]
    headers = cache_headers(ctx.settings, target, entity_tag("instances", parts, base))
    if matches(request, headers["ETag"]):
        return not_modified(headers)

    async def converted(inst: StoredInstance) -> tuple[str, str]:
        """The Transfer Syntax to send ``inst`` in and the key of that object."""
        *others, last = plan[inst.transfer_syntax_uid]
        for ts in others:
            try:
                return ts, await ctx.transcoder.key_for(
                    inst.storage_key, inst.transfer_syntax_uid, ts
                )
            except NotAcceptable as e:  # the pixels do not fit ts: the next acceptable
                log.info("%s: not sent as %s: %s", inst.ref.sop_instance_uid, ts, e.reason)
        return last, await ctx.transcoder.key_for(inst.storage_key, inst.transfer_syntax_uid, last)

    async def open_one(inst: StoredInstance) -> OpenedPart:
        ts, key = await converted(inst)
        try:
            return await open_part(
                ctx.store,
                key,
                content_type=f"{PART_TYPE}; transfer-syntax={ts}",
                content_location=base + inst.ref.path,
            )
        except ObjectNotFound:
            raise TesseraError(
                f"the stored object of instance {inst.ref.sop_instance_uid} ({key}) is missing"
            ) from None

    pipeline = PartPipeline(instances, open_one)
    await start_checked(ctx.store, pipeline, instances)
    boundary = new_boundary()
    answer_type = multipart_content_type(PART_TYPE, boundary)
    if len(instances) == 1:  # one instance: whole, with its length, if it is small
        response: Response = await pipeline.small_response(answer_type, boundary)
    else:  # a series, a study: streamed from its first byte
        response = pipeline.response(answer_type, boundary)
    response.headers.update(headers)
    return response


async def start_checked(
    store: ObjectStore, pipeline: PartPipeline[StoredInstance], instances: list[StoredInstance]
) -> None:
    """Open the first part and, meanwhile, check every instance's object exists
    (:func:`~tessera.retrieve.streaming.missing_objects`, bounded), so that a missing
    one is a 500 with its name before the status, not an aborted stream after it."""
    if len(instances) == 1:  # the first part is the only one
        await pipeline.start()
        return
    check = asyncio.create_task(missing_objects(store, [i.storage_key for i in instances]))
    try:
        await pipeline.start()
        missing = await check
    except BaseException:
        check.cancel()
        await pipeline.aclose()
        raise
    if missing:
        await pipeline.aclose()
        gone = set(missing)
        names = [i.ref.sop_instance_uid for i in instances if i.storage_key in gone]
        log.error("retrieve refused: %d stored objects missing: %s", len(missing), missing)
        raise TesseraError(
            f"the stored objects of {len(missing)} instance(s) are missing:"
            f" {', '.join(names[:10])}{' ...' if len(names) > 10 else ''}"
        )


_INSTANCE = "/studies/{study}/series/{series}/instances/{instance}"

routes = [
    Route("/studies/{study}", retrieve_instances, methods=["GET"], name="retrieve_study"),
    Route(
        "/studies/{study}/series/{series}",
        retrieve_instances,
        methods=["GET"],
        name="retrieve_series",
    ),
    Route(_INSTANCE, retrieve_instances, methods=["GET"], name="retrieve_instance"),
]
