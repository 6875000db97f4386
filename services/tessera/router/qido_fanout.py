"""QIDO-RS over N shards: ask every shard, merge in the shard order, page (PS3.18 10.6).

A search that names no study (``/studies``, ``/series``, ``/instances``) goes to the
index service of every known shard at once, with the client's query but its own
``limit`` and ``offset``. The results are merged in exactly the order one shard uses
(:mod:`tessera.router.qido_merge`), then ``offset`` and ``limit`` are applied, so paging
through the router gives what one shard holding everything would.

Each shard can hold at most all of the first ``offset+limit`` results, but it holds
about its share of them: studies are placed by a hash of their UID, which no search
matches on. So a shard is first asked for its share of ``offset+limit`` (a binomial
count: the mean plus four standard deviations, rarely exceeded), and asked again, from
where it stopped, only while it is not exhausted and its last result comes before the
end of the merged page (its next results might belong in it). With 4 shards and OHIF's
page of 101 that is 45 results of each shard rather than 101. When the server maximum
decides the page, every shard is asked full pages as before: the 8.3.4.4.1 Warning
counts what remains, and a shard gives its count only for a page its maximum cut.

- A result of a study whose owner (placement + overrides) is another shard is dropped:
  it is a copy in the middle of a move, and the owner answers for it.
- NumberOfPatientRelated{Studies,Series,Instances} count across shards: when they are
  returned, each shard is asked for its counts of the page's patients and they are summed.
- The PS3.18 8.3.4.4.1 Warning is computed over the merged result from the shards'
  own Warnings; any other Warning of a shard is passed on.
- A shard that does not answer within ``router_shard_timeout`` (or is unreachable, or
  fails, or answers malformed JSON) leaves its results out, and the response says so in
  a ``Warning: 299`` header (RFC 9111 5.5 form, as the limit Warning), never silently.
  No shard answering is 503.

The requests go through the router's aiohttp session
(:func:`tessera.router.proxy.open_session`), as the pass-through proxy's do: httpx cost
the router about 2 ms of CPU per 4 shard requests of 45 studies, aiohttp 0.4 ms. The
session does not decompress, so a shard is asked for ``Accept-Encoding: identity``.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, unquote_plus, urlsplit

import aiohttp
from starlette.requests import Request
from starlette.responses import Response
from yarl import URL

from tessera.router.proxy import RETRY_AFTER, end_to_end, upstream_headers
from tessera.router.qido_merge import MalformedAnswer, Result, ShardPage, body, merge, parse_results
from tessera.router.shards import Service, Shard, ShardMap
from tessera.shared import metrics
from tessera.shared.errors import ServiceUnavailable
from tessera.shared.http import public_base_url
from tessera.shared.levels import Layout, text
from tessera.shared.qido.attributes import PATIENT_COUNTS, Level
from tessera.shared.qido.params import QidoQuery, Scope, parse_query
from tessera.shared.qido.result import more_results_warning, return_attributes

_REMAINING = re.compile(r'^\s*299\s+\S+\s+"There are (\d+) additional results')
_PAGING = frozenset({"limit", "offset"})
# the patient row's identity in a shard (tessera.index.writer._patient_key)
_PATIENT = ("00100020", "00100021", "00100010", "00100030")
# owners of studies remembered per shard map (about 150 bytes each)
OWNERS_KEPT = 100_000


def _patient(document: dict[str, Any]) -> tuple[str, ...]:
    return tuple(text(document, t) for t in _PATIENT)


def share(need: int, shards: int) -> int:
    """What to ask each of ``shards`` equal shards first for the first ``need`` results:
    its expected count (binomial, p = 1/shards) plus four standard deviations, so that
    a second request is rarely needed (under 1 in 10,000 searches per shard)."""
    if shards <= 1 or need <= 0:
        return max(need, 0)
    p = 1 / shards
    return min(need, math.ceil(need * p + 4 * math.sqrt(need * p * (1 - p))) + 2)


class ShardFailed(Exception):
    """A shard gave no usable answer; the reason goes in the response's Warning."""


@dataclass
class _Shard:
    """One shard's part in a search: its answers so far, its Warnings, its media type."""

    shard: Shard
    url: str
    origin: str  # the metrics label
    page: ShardPage
    media_type: str = "application/dicom+json"
    warnings: list[str] = field(default_factory=list)


def _query_without_paging(raw: bytes) -> list[str]:
    """The client's query items, as sent, less ``limit`` and ``offset``."""
    items = []
    for item in raw.decode("latin-1").split("&"):
        if item and unquote_plus(item.partition("=")[0]) not in _PAGING:
            items.append(item)
    return items


class QidoFanOut:
    """Answers a search across studies from every shard of a :class:`ShardMap`."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        prefix: str,
        max_limit: int,
        timeout: float,
        layout: Layout,
    ) -> None:
        self.session = session
        self.prefix = prefix
        self.max_limit = max_limit
        self.timeout = timeout
        self.layout = layout
        self._owners_of: ShardMap | None = None
        self._owners: dict[str, str] = {}

    def _owner(self, shards: ShardMap) -> Callable[[str], str]:
        """``shards.owner``, remembered while ``shards`` is the router's map: the
        rendezvous hash (a BLAKE2b per shard) of each result was the merge's largest
        cost. A registry change makes a new map, which starts afresh."""
        if self._owners_of is not shards or len(self._owners) >= OWNERS_KEPT:
            self._owners_of, self._owners = shards, {}
        owners = self._owners

        def owner(study_instance_uid: str) -> str:
            shard = owners.get(study_instance_uid)
            if shard is None:
                shard = owners[study_instance_uid] = shards.owner(study_instance_uid)
            return shard

        return owner

    async def search(self, request: Request, level: Level, shards: ShardMap) -> Response:
        query = parse_query(request.query_params.multi_items(), level, Scope(), self.layout)
        limit = self.max_limit if query.limit is None else min(query.limit, self.max_limit)
        server_limited = limit == self.max_limit
        need = query.offset + limit
        base = _query_without_paging(request.scope.get("query_string", b""))
        headers = _headers(request, self.prefix)
        path = request.url.path.removeprefix(self.prefix)
        deadline = asyncio.get_running_loop().time() + self.timeout
        agent = urlsplit(public_base_url(request, self.prefix)).netloc or "tessera"
        parts = [
            _Shard(s, s.url(Service.INDEX) + path, _origin(s), ShardPage(s.name))
            for s in shards.all()
        ]
        first = share(need, len(shards.placement))
        asks = {p.shard.name: self.max_limit if server_limited else first for p in parts}
        warnings: list[str] = []
        owner = self._owner(shards)
        while True:
            asked = [p for p in parts if p.shard.name in asks]
            results = await asyncio.gather(
                *(self._page(p, base, headers, asks[p.shard.name], level, deadline) for p in asked),
                return_exceptions=True,
            )
            for part, result in zip(asked, results, strict=True):
                if isinstance(result, Response):
                    return result  # the shard refused the query (400, 406...): so would one
                if isinstance(result, BaseException):
                    if not isinstance(result, ShardFailed | TimeoutError):
                        raise result
                    why = str(result) or "did not answer in time"
                    name = part.shard.name
                    warnings.append(f'299 {agent} "shard {name} {why}: its results are missing"')
                    parts.remove(part)
            if not parts:
                raise ServiceUnavailable(
                    "no shard answered the search: " + "; ".join(warnings),
                    retry_after=RETRY_AFTER,
                )
            merged = merge((p.page for p in parts), owner, query.offset, limit, server_limited)
            if not merged.wanting:
                break
            asks = {
                name: self.max_limit if server_limited else min(self.max_limit, n)
                for name, n in merged.wanting.items()
            }
        if merged.page and self._wants_patient_counts(query):
            await self._patient_counts(merged.page, headers, shards, warnings, agent)
        for part in parts:
            warnings += [w for w in part.warnings if w not in warnings]
        if server_limited and merged.remaining:
            warnings.insert(0, more_results_warning(agent, merged.remaining))
        if merged.page:
            response = Response(body(merged.page), media_type=parts[0].media_type)
        else:  # PS3.18 8.3.4.4.1: no matching results
            response = Response(status_code=204)
        for warning in warnings:
            response.headers.append("Warning", warning)
        return response

    async def _page(
        self,
        part: _Shard,
        base: list[str],
        headers: list[tuple[str, str]],
        size: int,
        level: Level,
        deadline: float,
    ) -> Response | None:
        """The shard's next ``size`` results, added to its page (or its 4xx answer).

        When the server maximum decides the page, each page asked is a full one, so the
        shard's 8.3.4.4.1 Warning tells how many of its matches follow the last one."""
        page = part.page
        query = "&".join([*base, f"limit={size}", f"offset={len(page.results)}"])
        async with asyncio.timeout_at(deadline):
            r, content = await self._get(f"{part.url}?{query}", headers, part.origin)
        if 400 <= r.status < 500:
            return _response(r, content)
        if r.status not in (200, 204):  # 204: no match (PS3.18 8.3.4.4.1)
            raise ShardFailed(f"answered HTTP {r.status}")
        if r.headers.get("content-encoding", "identity").lower() != "identity":
            raise ShardFailed("answered content-encoded (Accept-Encoding: identity was sent)")
        try:
            results = parse_results(content or b"[]", level, part.shard.name)
        except MalformedAnswer as e:
            raise ShardFailed(str(e)) from None
        part.media_type = r.headers.get("content-type", part.media_type)
        page.results += results
        page.remaining = 0
        for warning in r.headers.getall("warning", ()):
            m = _REMAINING.match(warning)
            if m:
                page.remaining = int(m.group(1))
            elif warning not in part.warnings:
                part.warnings.append(warning)
        # a short page ends the shard's matches; one its maximum cut (Warning) does not
        page.complete = len(results) < size and not page.remaining
        return None

    async def _get(
        self, url: str, headers: list[tuple[str, str]], origin: str
    ) -> tuple[aiohttp.ClientResponse, bytes]:
        """GET ``url`` (its query as the client encoded it): the response and its body."""
        started = time.perf_counter()
        try:
            async with self.session.get(
                URL(url, encoded=True), headers=headers, allow_redirects=False
            ) as r:
                metrics.observe_upstream(origin, r.status, time.perf_counter() - started)
                return r, await r.read()
        except aiohttp.ClientError as e:
            raise ShardFailed(f"is unreachable ({type(e).__name__})") from None

    def _wants_patient_counts(self, query: QidoQuery) -> bool:
        return bool(PATIENT_COUNTS & return_attributes(query).keys())

    async def _patient_counts(
        self,
        results: Sequence[Result],
        headers: list[tuple[str, str]],
        shards: ShardMap,
        warnings: list[str],
        agent: str,
    ) -> None:
        """Replace each result's patient counts by their sums over the shards.

        A shard counts the studies, series and instances of its patient row: same
        PatientID, IssuerOfPatientID, PatientName and PatientBirthDate. Each shard is
        asked for the studies with the page's PatientID (and birth date), and the first
        one of the same patient on that shard gives that shard's counts.
        """
        documents = [r.decoded() for r in results]
        patients = {_patient(d) for d in documents}
        sums: dict[tuple[str, ...], dict[str, int]] = {}
        jobs = [(p, s) for p in patients for s in shards.all()]
        found = await asyncio.gather(
            *(self._counts_of(patient, shard, headers) for patient, shard in jobs),
            return_exceptions=True,
        )
        for (patient, shard), counts in zip(jobs, found, strict=True):
            if isinstance(counts, BaseException):
                if not isinstance(counts, ShardFailed | TimeoutError):
                    raise counts
                w = f'299 {agent} "shard {shard.name} did not give its patient counts"'
                if w not in warnings:
                    warnings.append(w)
                continue
            total = sums.setdefault(patient, dict.fromkeys(PATIENT_COUNTS, 0))
            for tag, n in counts.items():
                total[tag] += n
        for result, document in zip(results, documents, strict=True):
            total = sums.get(_patient(document), {})
            changed = False
            for tag in PATIENT_COUNTS & document.keys():
                if tag in total:
                    document[tag] = {"vr": "IS", "Value": [total[tag]]}
                    changed = True
            if changed:
                result.replace(document)

    async def _counts_of(
        self, patient: tuple[str, ...], shard: Shard, headers: list[tuple[str, str]]
    ) -> dict[str, int]:
        pid, _issuer, _name, birth = patient
        params = [
            f"PatientID={quote(pid, safe='')}",
            "includefield=" + ",".join(sorted(PATIENT_COUNTS)) + ",00100021",
            f"limit={self.max_limit}",
        ]
        if birth:
            params.append(f"PatientBirthDate={quote(birth, safe='')}")
        url = shard.url(Service.INDEX) + "/studies?" + "&".join(params)
        async with asyncio.timeout(self.timeout):
            r, content = await self._get(url, headers, _origin(shard))
        if r.status not in (200, 204):
            raise ShardFailed(f"answered HTTP {r.status}")
        try:
            rows = json.loads(content or b"[]")
            for row in rows:
                if _patient(row) == patient:
                    return {t: int(text(row, t) or 0) for t in PATIENT_COUNTS}
        except (ValueError, TypeError, AttributeError):
            raise ShardFailed("answered malformed DICOM JSON") from None
        return {}


def _headers(request: Request, prefix: str) -> list[tuple[str, str]]:
    """The client's headers for the shards (:func:`upstream_headers`), asking for the
    answer as it is: the session does not decompress, and the router reads it."""
    return [
        (name.decode("latin-1"), value.decode("latin-1"))
        for name, value in upstream_headers(request, prefix)
        if name.lower() != b"accept-encoding"
    ] + [("Accept-Encoding", "identity")]


def _origin(shard: Shard) -> str:
    """``scheme://host:port`` of the shard's index service, as the proxy labels it."""
    parts = urlsplit(shard.url(Service.INDEX))
    return f"{parts.scheme}://{parts.netloc}"


def _response(upstream: aiohttp.ClientResponse, content: bytes) -> Response:
    """A shard's (small, read) answer as the router's."""
    response = Response(content, status_code=upstream.status)
    for name, value in end_to_end(list(upstream.raw_headers)):
        if name != b"content-length":
            response.raw_headers.append((name, value))
    return response
