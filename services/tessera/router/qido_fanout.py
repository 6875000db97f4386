"""QIDO-RS over N shards: ask every shard, merge in the shard order, page (PS3.18 10.6).

A search that names no study (``/studies``, ``/series``, ``/instances``) goes to the
index service of every known shard at once, with the client's query but
``offset=0&limit=offset+limit`` (in pages of at most ``qido_max_limit``, the most a shard
returns). The rows are merged in exactly the order one shard uses
(:mod:`tessera.shared.qido.sql`: StudyDate, StudyTime, StudyInstanceUID descending;
SeriesNumber as an integer then as text, SeriesInstanceUID; InstanceNumber likewise,
SOPInstanceUID), recomputed from the attributes every result carries (PS3.18 Table
10.6.3-3/-4/-5 makes them required), then ``offset`` and ``limit`` are applied, so paging
through the router gives what one shard holding everything would.

- A row of a study whose owner (placement + overrides) is another shard is dropped: it
  is a copy in the middle of a move, and the owner answers for it.
- NumberOfPatientRelated{Studies,Series,Instances} count across shards: when they are
  returned, each shard is asked for its counts of the page's patients and they are summed.
- The PS3.18 8.3.4.4.1 Warning is computed over the merged result from the shards'
  own Warnings; any other Warning of a shard is passed on.
- A shard that does not answer within ``router_shard_timeout`` (or is unreachable, or
  fails) leaves its rows out, and the response says so in a ``Warning: 299`` header
  (RFC 9111 5.5 form, as the limit Warning), never silently. No shard answering is 503.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, unquote_plus, urlsplit

import httpx
from starlette.requests import Request
from starlette.responses import Response

from tessera.router.proxy import RETRY_AFTER, downstream_headers, upstream_headers
from tessera.router.shards import Service, Shard, ShardMap
from tessera.shared.errors import ServiceUnavailable
from tessera.shared.http import public_base_url
from tessera.shared.levels import Layout, text
from tessera.shared.qido.attributes import PATIENT_COUNTS, Level
from tessera.shared.qido.params import QidoQuery, Scope, parse_query
from tessera.shared.qido.result import more_results_warning, return_attributes

_REMAINING = re.compile(r'^\s*299\s+\S+\s+"There are (\d+) additional results')
_SERIES_INT = re.compile(r"[+-]?[0-9]{1,9}")  # the SQL's '^[+-]?[0-9]{1,9}$'
_PAGING = frozenset({"limit", "offset"})
# the patient row's identity in a shard (tessera.index.writer._patient_key)
_PATIENT = ("00100020", "00100021", "00100010", "00100030")

Row = dict[str, Any]


# --- the order of one shard, in Python ----------------------------------------------------


class _Desc:
    """A string that sorts in reverse (for the DESC parts of the order)."""

    __slots__ = ("value",)

    def __init__(self, value: str) -> None:
        self.value = value

    def __lt__(self, other: _Desc) -> bool:
        return self.value > other.value

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Desc) and self.value == other.value

    def __hash__(self) -> int:
        return hash(self.value)


def _int_or_none(value: str) -> int | None:
    """InstanceNumber as the index writer stores it in ``instance_number_int``."""
    try:
        n = int(value.strip())
    except ValueError:
        return None
    return n if -(2**31) <= n < 2**31 else None


def _number_key(number: int | None, value: str, uid: str) -> tuple[Any, ...]:
    """ORDER BY number NULLS LAST, value COLLATE "C", uid COLLATE "C" (all ascending)."""
    return (number is None, number or 0, value, uid)


def order_key(level: Level, row: Row) -> tuple[Any, ...]:
    """The sort key of a result of a search across studies at ``level``: ascending order
    of these keys is the shard's ORDER BY (``tessera.shared.qido.sql._order``).

    Empty or absent values are '' as in the index's columns, so undated studies come
    last; Python compares str by code point, which is COLLATE "C" (byte order of UTF-8).
    """
    key: tuple[Any, ...] = (
        _Desc(text(row, "00080020")),
        _Desc(text(row, "00080030")),
        _Desc(text(row, "0020000D")),
    )
    if level is not Level.STUDY:
        number = text(row, "00200011")
        as_int = int(number) if _SERIES_INT.fullmatch(number) else None
        key += _number_key(as_int, number, text(row, "0020000E"))
    if level is Level.INSTANCE:
        number = text(row, "00200013")
        key += _number_key(_int_or_none(number), number, text(row, "00080018"))
    return key


@dataclass
class ShardPage:
    """What one shard answered: its rows (in its order) and its matches beyond them."""

    shard: str
    rows: list[Row] = field(default_factory=list)
    remaining: int = 0  # from its PS3.18 8.3.4.4.1 Warning


def merge(
    pages: Iterable[ShardPage],
    level: Level,
    owner: Callable[[str], str],
    offset: int,
    limit: int,
) -> tuple[list[Row], int]:
    """The page ``[offset, offset+limit)`` of the merged rows, and how many matches are
    known to follow it. Rows of a study whose ``owner`` is not the shard are dropped."""
    rows: list[Row] = []
    total = 0
    for page in pages:
        kept = [r for r in page.rows if owner(text(r, "0020000D")) == page.shard]
        rows += kept
        total += len(kept) + page.remaining
    rows.sort(key=lambda r: order_key(level, r))
    chosen = rows[offset : offset + limit]
    return chosen, max(0, total - offset - len(chosen))


# --- fan-out --------------------------------------------------------------------------------


class ShardFailed(Exception):
    """A shard gave no usable answer; the reason goes in the response's Warning."""


@dataclass
class _Answer:
    page: ShardPage
    media_type: str
    warnings: list[str]


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
        client: httpx.AsyncClient,
        prefix: str,
        max_limit: int,
        timeout: float,
        layout: Layout,
    ) -> None:
        self.client = client
        self.prefix = prefix
        self.max_limit = max_limit
        self.timeout = timeout
        self.layout = layout

    async def search(self, request: Request, level: Level, shards: ShardMap) -> Response:
        query = parse_query(request.query_params.multi_items(), level, Scope(), self.layout)
        limit = self.max_limit if query.limit is None else min(query.limit, self.max_limit)
        server_limited = limit == self.max_limit
        need = query.offset + limit
        base = _query_without_paging(request.scope.get("query_string", b""))
        headers = upstream_headers(request, self.prefix)
        targets = shards.all()
        results = await asyncio.gather(
            *(
                self._shard(shard, request.url.path, base, headers, need, server_limited, shards)
                for shard in targets
            ),
            return_exceptions=True,
        )
        answers: list[_Answer] = []
        warnings: list[str] = []
        agent = urlsplit(public_base_url(request, self.prefix)).netloc or "tessera"
        for shard, result in zip(targets, results, strict=True):
            if isinstance(result, Response):
                return result  # the shard refused the query (400, 406...): so would one
            if isinstance(result, BaseException):
                if not isinstance(result, ShardFailed | httpx.HTTPError | TimeoutError):
                    raise result
                why = str(result) or "did not answer in time"
                warnings.append(f'299 {agent} "shard {shard.name} {why}: its results are missing"')
                continue
            answers.append(result)
        if not answers:
            raise ServiceUnavailable(
                "no shard answered the search: " + "; ".join(warnings), retry_after=RETRY_AFTER
            )
        rows, remaining = merge((a.page for a in answers), level, shards.owner, query.offset, limit)
        if rows and self._wants_patient_counts(query):
            await self._patient_counts(rows, headers, shards, warnings, agent)
        for answer in answers:
            warnings += [w for w in answer.warnings if w not in warnings]
        if server_limited and remaining:
            warnings.insert(0, more_results_warning(agent, remaining))
        response = Response(
            json.dumps(rows, ensure_ascii=False, separators=(",", ":")),
            media_type=answers[0].media_type,
        )
        for warning in warnings:
            response.headers.append("Warning", warning)
        return response

    async def _shard(
        self,
        shard: Shard,
        path: str,
        base: list[str],
        headers: list[tuple[bytes, bytes]],
        need: int,
        server_limited: bool,
        shards: ShardMap,
    ) -> _Answer | Response:
        """The shard's first rows until ``need`` of them are its own, in pages.

        When the server maximum decides the page, each page asked is a full one, so the
        shard's 8.3.4.4.1 Warning tells how many of its matches follow the last one."""
        async with asyncio.timeout(self.timeout):
            url = shard.url(Service.INDEX) + path.removeprefix(self.prefix)
            page = ShardPage(shard.name)
            warnings: list[str] = []
            media_type = "application/dicom+json"
            own = offset = 0
            while True:
                size = min(self.max_limit, max(need - own, 0))
                if server_limited and size:
                    size = self.max_limit
                query = "&".join([*base, f"limit={size}", f"offset={offset}"])
                try:
                    r = await self.client.get(f"{url}?{query}", headers=headers)
                except httpx.TransportError as e:
                    raise ShardFailed(f"is unreachable ({type(e).__name__})") from None
                if 400 <= r.status_code < 500:
                    return _response(r)
                if r.status_code != 200:
                    raise ShardFailed(f"answered HTTP {r.status_code}")
                media_type = r.headers.get("content-type", media_type)
                rows = r.json()
                page.rows += rows
                offset += len(rows)
                own += sum(1 for x in rows if shards.owner(text(x, "0020000D")) == shard.name)
                page.remaining = 0
                for warning in r.headers.get_list("warning"):
                    m = _REMAINING.match(warning)
                    if m:
                        page.remaining = int(m.group(1))
                    elif warning not in warnings:
                        warnings.append(warning)
                if len(rows) < size or own >= need or size == 0:
                    return _Answer(page, media_type, warnings)

    def _wants_patient_counts(self, query: QidoQuery) -> bool:
        return bool(PATIENT_COUNTS & return_attributes(query).keys())

    async def _patient_counts(
        self,
        rows: Sequence[Row],
        headers: list[tuple[bytes, bytes]],
        shards: ShardMap,
        warnings: list[str],
        agent: str,
    ) -> None:
        """Replace each row's patient counts by their sums over the shards.

        A shard counts the studies, series and instances of its patient row: same
        PatientID, IssuerOfPatientID, PatientName and PatientBirthDate. Each shard is
        asked for the studies with the page's PatientID (and birth date), and the first
        one of the same patient on that shard gives that shard's counts.
        """
        patients = {tuple(text(r, t) for t in _PATIENT) for r in rows}
        sums: dict[tuple[str, ...], dict[str, int]] = {}
        jobs = [(p, s) for p in patients for s in shards.all()]
        found = await asyncio.gather(
            *(self._counts_of(patient, shard, headers) for patient, shard in jobs),
            return_exceptions=True,
        )
        for (patient, shard), counts in zip(jobs, found, strict=True):
            if isinstance(counts, BaseException):
                if not isinstance(counts, ShardFailed | httpx.HTTPError | TimeoutError):
                    raise counts
                w = f'299 {agent} "shard {shard.name} did not give its patient counts"'
                if w not in warnings:
                    warnings.append(w)
                continue
            total = sums.setdefault(patient, dict.fromkeys(PATIENT_COUNTS, 0))
            for tag, n in counts.items():
                total[tag] += n
        for row in rows:
            total = sums.get(tuple(text(row, t) for t in _PATIENT), {})
            for tag in PATIENT_COUNTS & row.keys():
                if tag in total:
                    row[tag] = {"vr": "IS", "Value": [total[tag]]}

    async def _counts_of(
        self, patient: tuple[str, ...], shard: Shard, headers: list[tuple[bytes, bytes]]
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
            try:
                r = await self.client.get(url, headers=headers)
            except httpx.TransportError as e:
                raise ShardFailed(f"is unreachable ({type(e).__name__})") from None
        if r.status_code != 200:
            raise ShardFailed(f"answered HTTP {r.status_code}")
        for row in r.json():
            if tuple(text(row, t) for t in _PATIENT) == patient:
                return {t: int(text(row, t) or 0) for t in PATIENT_COUNTS}
        return {}


def _response(upstream: httpx.Response) -> Response:
    """A shard's (small, read) answer as the router's, its body already decoded."""
    response = Response(upstream.content, status_code=upstream.status_code)
    for name, value in downstream_headers(upstream):
        if name not in (b"content-length", b"content-encoding"):
            response.raw_headers.append((name, value))
    return response
