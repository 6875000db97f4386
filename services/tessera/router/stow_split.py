"""STOW-RS over N shards: split a request by study, store each part on its owner.

With one shard the router streams the request through untouched (:mod:`.proxy`). With
N, ``POST /studies`` may hold instances of several studies that live on different
shards, so the body is read part by part with the shared streaming reader (big parts
spooled to disk), each part's StudyInstanceUID is read from its header only (pydicom,
stopping before the pixel data), the parts are grouped by owning shard, and each group
is sent to its shard's ingest as one multipart request, all groups at once. The shards'
PS3.18 10.5.3 responses are merged into one:

- ReferencedSOPSequence (0008,1199) and FailedSOPSequence (0008,1198) items in the order
  of the parts of the request;
- RetrieveURL (0008,1190) of the study when every stored instance is of one study;
- status per PS3.18 Table 10.5.3-1: 200 all stored, 202 some failed or warned, 409 none
  stored; a refusal of the whole request (406...) as the shard gave it.

A part whose StudyInstanceUID cannot be read (not DICOM, damaged, another media type)
goes with the first group (or to the first shard): that shard answers for it with the
failure item (0xC000, 0xA900...) it gives when it stands alone. A group whose shard
cannot be reached fails its parts with 0x0110 (PS3.18 Table I.2-2, Processing failure)
and a comment saying to re-send; every shard down is 503.

``POST /studies/{study}`` names its study: the whole body goes to that study's owner,
streamed as with one shard (parts of other studies are the shard's 0xA900 failures).

Registry rules (issue 6, :mod:`.registry`): a study whose override is ``locked`` (its
move is ending) is answered 503 + Retry-After; during a transition a study whose hashed
shard changes and that has no override is first pinned to its current shard.

The requests to the shards go through the router's aiohttp session
(:func:`tessera.router.proxy.open_session`), as the proxy's and the QIDO-RS fan-out's
do: one HTTP client in the router. Each body is written from the spooled parts as it
is sent (chunked), never held whole; the session does not decompress, so a shard is
asked for ``Accept-Encoding: identity``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import IO, Any
from urllib.parse import urlsplit

import aiohttp
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from yarl import URL

from tessera.router.proxy import RETRY_AFTER, upstream_headers
from tessera.router.shards import Service, Shard, ShardMap
from tessera.shared import metrics
from tessera.shared.errors import MultipartError, ServiceUnavailable
from tessera.shared.http import DicomJSONResponse
from tessera.shared.multipart import (
    PartOut,
    multipart_content_type,
    new_boundary,
    write_parts,
)
from tessera.shared.settings import Settings
from tessera.shared.status import FailureReason
from tessera.shared.stow import (
    DICOM,
    check_content_type,
    damaged_body_warning,
    failed_item,
    read_stow_parts,
    response_status,
)
from tessera.shared.uids import read_uids

log = logging.getLogger(__name__)

LOCKED_RETRY_AFTER = 2  # seconds: a study stays locked for a second or two
_CHUNK = 1024 * 1024
# request headers that describe the client's body, not ours; and Accept-Encoding, as
# the router reads the shard's answer itself (the session does not decompress)
_NOT_SENT = frozenset(
    {b"content-type", b"content-length", b"transfer-encoding", b"accept-encoding"}
)

Pin = Callable[[list[str], str], Awaitable[dict[str, str]]]


@dataclass
class SplitPart:
    """One part of the request, its file detached from the reader (ours to close)."""

    index: int
    content_type: str
    file: IO[bytes]
    study: str | None = None
    sop_class: str | None = None
    sop_instance: str | None = None


@dataclass
class Group:
    """The parts that go to one shard, and what it answered."""

    shard: Shard
    parts: list[SplitPart] = field(default_factory=list)
    body: dict[str, Any] | None = None
    warnings: list[str] = field(default_factory=list)
    error: str = ""  # why the shard gave no answer for these parts
    refusal: Response | None = None  # the shard refused the whole request (4xx)


# --- merging the shards' answers -----------------------------------------------------------


def _uid_of(item: dict[str, Any]) -> str | None:
    values = item.get("00081155", {}).get("Value") or [None]
    return values[0]


def _ordered(groups: Sequence[Group], tag: str) -> list[dict[str, Any]]:
    """The items of sequence ``tag`` of every answer, in the order of the request's parts:
    an item goes where its SOPInstanceUID's part was; one without (an unreadable part)
    takes the group's first part not claimed otherwise."""
    keyed: list[tuple[int, int, dict[str, Any]]] = []
    for g, group in enumerate(groups):
        items = ((group.body or {}).get(tag) or {}).get("Value") or []
        free = list(group.parts)
        for item in items:
            uid = _uid_of(item)
            part = next((p for p in free if uid is not None and p.sop_instance == uid), None)
            if part is None:
                part = next((p for p in free if p.sop_instance is None), None)
            if part is not None:
                free.remove(part)
            keyed.append((part.index if part is not None else 1 << 30, g, item))
    keyed.sort(key=lambda k: (k[0], k[1]))
    return [item for _, _, item in keyed]


def merge_responses(
    groups: Sequence[Group], study_path: str | None = None, body_error: str | None = None
) -> tuple[dict[str, Any], int, list[str]]:
    """The merged STOW-RS response body, its status (PS3.18 Table 10.5.3-1) and the
    Warning headers to send."""
    for group in groups:
        if group.body is None:
            items = [
                failed_item(
                    p.sop_class,
                    p.sop_instance,
                    FailureReason.PROCESSING_FAILURE,
                    f"{group.error}; re-send",
                )
                for p in group.parts
            ]
            group.body = {"00081198": {"vr": "SQ", "Value": items}}
    referenced = _ordered(groups, "00081199")
    failed = _ordered(groups, "00081198")
    retrieve: dict[str, Any] = {"vr": "UR"}
    studies = {p.study for g in groups for p in g.parts if p.sop_instance in _stored_uids(g)}
    if study_path is not None or len(studies) == 1:
        for group in groups:
            value = (group.body or {}).get("00081190", {}).get("Value")
            if value and _stored_uids(group):
                retrieve = {"vr": "UR", "Value": value}
                break
    body: dict[str, Any] = {"00081190": retrieve}
    if failed:
        body["00081198"] = {"vr": "SQ", "Value": failed}
    if referenced:
        body["00081199"] = {"vr": "SQ", "Value": referenced}
    status = response_status(referenced, bool(failed), body_error)
    warnings: list[str] = []
    for group in groups:
        warnings += [w for w in group.warnings if w not in warnings]
    if body_error:
        warnings.append(damaged_body_warning(body_error))
    return body, status, warnings


def _stored_uids(group: Group) -> set[str | None]:
    items = ((group.body or {}).get("00081199") or {}).get("Value") or []
    return {_uid_of(i) for i in items}


# --- the split --------------------------------------------------------------------------


class StowSplit:
    """Reads, groups, sends and merges one STOW-RS request over the shards of a map."""

    def __init__(self, session: aiohttp.ClientSession, prefix: str, settings: Settings) -> None:
        self.session = session
        self.prefix = prefix
        self.settings = settings

    async def store(self, request: Request, shards: ShardMap, pin: Pin | None) -> Response:
        check_content_type(request.headers.get("content-type", ""))
        parts: list[SplitPart] = []
        body_error: str | None = None
        try:
            try:
                await self._read(request, parts)
            except MultipartError as e:
                if not parts:
                    raise
                body_error = e.reason
            except ClientDisconnect:  # nobody to answer; send nothing on
                log.info("STOW: client went away during the upload")
                return Response(status_code=400)
            owners = await self.owners(shards, {p.study for p in parts if p.study}, pin)
            groups = self._group(parts, owners, shards)
            await asyncio.gather(*(self._send(request, g) for g in groups))
        finally:
            for part in parts:
                part.file.close()
        if all(g.body is None for g in groups):
            for group in groups:
                if group.refusal is not None:  # 406, 413...: as one shard would answer
                    return group.refusal
            raise ServiceUnavailable(
                "no shard took the instances: " + "; ".join(g.error for g in groups),
                retry_after=RETRY_AFTER,
            )
        body, status, warnings = merge_responses(groups, None, body_error)
        response = DicomJSONResponse(body, status_code=status)
        for warning in warnings:
            response.headers.append("Warning", warning)
        return response

    async def _read(self, request: Request, parts: list[SplitPart]) -> None:
        s = self.settings
        reader = read_stow_parts(request.stream(), request.headers.get("content-type", ""), s)
        async with aclosing(reader):
            async for part in reader:
                content_type = part.headers.get("content-type") or (
                    str(part.content_type) if part.content_type else DICOM
                )
                split = SplitPart(len(parts), content_type, part.detach())
                parts.append(split)
                if part.content_type is None or part.content_type.essence == DICOM:
                    uids = await asyncio.to_thread(read_uids, split.file)
                    split.study, split.sop_class, split.sop_instance = uids

    @staticmethod
    async def owners(shards: ShardMap, studies: set[str], pin: Pin | None) -> dict[str, str]:
        """The shard of each study; 503 if one is locked; pins what a transition moves."""
        locked = sorted(studies & shards.locked)
        if locked:
            raise ServiceUnavailable(
                f"study {locked[0]} is being moved to another shard; retry shortly",
                retry_after=LOCKED_RETRY_AFTER,
            )
        owners = {uid: shards.owner(uid) for uid in studies}
        moving = [
            uid
            for uid in studies
            if uid not in shards.overrides and shards.next_owner(uid) not in (None, owners[uid])
        ]
        if moving and pin is not None:
            by_shard: dict[str, list[str]] = {}
            for uid in moving:
                by_shard.setdefault(owners[uid], []).append(uid)
            for shard, uids in by_shard.items():
                owners.update(await pin(uids, shard))
        return owners

    def _group(
        self, parts: list[SplitPart], owners: dict[str, str], shards: ShardMap
    ) -> list[Group]:
        groups: dict[str, Group] = {}
        stray: list[SplitPart] = []
        for part in parts:
            if part.study is None:
                stray.append(part)
                continue
            name = owners[part.study]
            groups.setdefault(name, Group(shards.get(name, part.study))).parts.append(part)
        if stray:
            if not groups:
                first = shards.placement[0] if shards.placement else next(iter(shards.shards))
                groups[first] = Group(shards.get(first))
            group = next(iter(groups.values()))
            group.parts = sorted(group.parts + stray, key=lambda p: p.index)
        return list(groups.values())

    async def _send(self, request: Request, group: Group) -> None:
        """Send the group's parts to its shard's ingest as one multipart request (the
        client's headers, X-Forwarded-* as the proxy sets them) and keep its answer."""
        boundary = new_boundary()
        headers = [
            (name.decode("latin-1"), value.decode("latin-1"))
            for name, value in upstream_headers(request, self.prefix)
            if name.lower() not in _NOT_SENT
        ]
        headers += [
            ("Content-Type", multipart_content_type(DICOM, boundary)),
            ("Accept-Encoding", "identity"),
        ]
        body = write_parts(
            [PartOut(p.content_type, _file_chunks(p.file)) for p in group.parts], boundary
        )
        url = group.shard.url(Service.INGEST)
        started = time.perf_counter()
        try:
            # the client's query goes along as it was sent (label=..., README "Security")
            query = request.scope.get("query_string", b"").decode("latin-1")
            target = URL(url + "/studies" + (f"?{query}" if query else ""), encoded=True)
            async with self.session.post(
                target, headers=headers, data=body, allow_redirects=False
            ) as r:
                metrics.observe_upstream(_origin(url), r.status, time.perf_counter() - started)
                content = await r.read()
        except (aiohttp.ClientError, TimeoutError) as e:
            group.error = f"shard {group.shard.name} unreachable ({type(e).__name__})"
            return
        group.warnings = r.headers.getall("warning", [])
        media_type = r.headers.get("content-type", "")
        if r.status in (200, 202, 409) and "json" in media_type:
            try:
                answer = json.loads(content)
            except ValueError:
                answer = None
            if isinstance(answer, dict):  # PS3.18 10.5.3: one dataset, not an array
                group.body = answer
            else:
                group.error = f"malformed DICOM JSON from shard {group.shard.name}"
            return
        group.error = f"HTTP {r.status} from shard {group.shard.name}"
        if 400 <= r.status < 500:
            group.refusal = Response(content, status_code=r.status, media_type=media_type or None)


def _origin(base_url: str) -> str:
    """``scheme://host:port`` of a shard service: the label of its upstream latency."""
    parts = urlsplit(base_url)
    return f"{parts.scheme}://{parts.netloc}"


async def _file_chunks(fp: IO[bytes]) -> AsyncIterator[bytes]:
    fp.seek(0)
    while chunk := fp.read(_CHUNK):
        yield chunk
