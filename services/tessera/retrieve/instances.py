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

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tessera.retrieve.caching import cache_headers, entity_tag, matches, not_modified
from tessera.retrieve.context import context
from tessera.retrieve.negotiation import PartNegotiation, accept_ranges
from tessera.retrieve.queries import StoredInstance, stored_instances, target_of
from tessera.retrieve.streaming import OpenedPart, PartPipeline, open_part
from tessera.retrieve.transcoding import can_transcode
from tessera.shared.errors import ObjectNotFound, TesseraError
from tessera.shared.multipart import multipart_content_type, new_boundary

PART_TYPE = "application/dicom"


async def retrieve_instances(request: Request) -> Response:
    """Retrieve Study / Series / Instance, by the route's path parameters."""
    ctx = context(request)
    target = target_of(request.path_params)
    negotiation = PartNegotiation(accept_ranges(request), PART_TYPE)
    if not negotiation.wanted:
        raise negotiation.not_acceptable(())
    instances = await stored_instances(ctx.pool, target)
    plan: dict[str, str] = {}  # stored Transfer Syntax -> the one to send
    refused: list[str] = []
    for stored in sorted({i.transfer_syntax_uid for i in instances}):
        chosen = negotiation.choose(stored, can_transcode)
        if chosen is None:
            refused.append(stored)
        else:
            plan[stored] = chosen
    if refused:
        raise negotiation.not_acceptable(refused)
    base = ctx.base_url(request)
    parts = [(i.sha256, plan[i.transfer_syntax_uid]) for i in instances]
    headers = cache_headers(ctx.settings, target, entity_tag("instances", parts, base))
    if matches(request, headers["ETag"]):
        return not_modified(headers)

    async def open_one(inst: StoredInstance) -> OpenedPart:
        ts = plan[inst.transfer_syntax_uid]
        key = await ctx.transcoder.key_for(inst.storage_key, inst.transfer_syntax_uid, ts)
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
    await pipeline.start()
    boundary = new_boundary()
    response = pipeline.response(multipart_content_type(PART_TYPE, boundary), boundary)
    response.headers.update(headers)
    return response


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
