"""The index service's internal routes, and the one client that calls them.

Used by the router's rebalance (moving studies between shards); never public. Served by
``tessera.index.delete``:

    GET    /internal/studies?after=PK&limit=N   {"studies": [[pk, uid, n], ...]} by pk
    GET    /internal/studies/{study}/instances  {"study", "digest", "instances": [
                                                  {"sop", "series", "sha256", "size"}]}
    DELETE /studies/{study}                     rows, then objects; If-Match: "<digest>"
                                                answers 412 if the study changed
    GET    /internal/studies/{study}/labels     {"labels": [...]} (README "Security")
    PUT    /internal/studies/{study}/labels     {"labels": [...]}: sets them

The digest (:func:`study_digest`) names what a study holds, so a delete after a copy
removes exactly what was copied.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass

import httpx

from tessera.shared.auth.labels import check_labels
from tessera.shared.changefeed import MOVE_HEADER

STUDIES_PATH = "/internal/studies"
INSTANCES_PATH = "/internal/studies/{study}/instances"
STUDY_PATH = "/studies/{study}"
LABELS_PATH = "/internal/studies/{study}/labels"
MAX_PAGE = 10_000

__all__ = [
    "IndexCallError",
    "IndexInternalClient",
    "ListedInstance",
    "StudyChanged",
    "check_labels",  # re-exported: the labels routes check what they set
    "study_digest",
]


def study_digest(pairs: Iterable[tuple[str, str]]) -> str:
    """SHA-256 of the sorted ``SOPInstanceUID TAB sha256 LF`` lines of a study."""
    h = hashlib.sha256()
    for sop, sha in sorted(pairs):
        h.update(f"{sop}\t{sha}\n".encode())
    return h.hexdigest()


@dataclass(frozen=True)
class ListedInstance:
    """One instance as a shard's index holds it."""

    sop: str
    series: str
    sha256: str
    size: int


class IndexCallError(Exception):
    """The index answered with an error status."""


class StudyChanged(Exception):
    """The study no longer holds what the digest said (DELETE answered 412)."""


class IndexInternalClient:
    """The internal calls to one shard's index service."""

    def __init__(self, client: httpx.AsyncClient, index_url: str) -> None:
        self.client = client
        self.base = index_url.rstrip("/")

    async def studies(self, page: int = 1000) -> AsyncIterator[list[tuple[str, int]]]:
        """Every study as pages of (StudyInstanceUID, instances), by key."""
        after = 0
        while True:
            r = await self._call("GET", STUDIES_PATH, params={"after": after, "limit": page})
            rows = r.json()["studies"]
            if not rows:
                return
            yield [(uid, n) for _, uid, n in rows]
            after = rows[-1][0]

    async def instances(self, study: str) -> dict[str, ListedInstance]:
        r = await self._call("GET", INSTANCES_PATH.format(study=study))
        return {
            i["sop"]: ListedInstance(i["sop"], i["series"], i["sha256"], i["size"])
            for i in r.json()["instances"]
        }

    async def delete_study(self, study: str, digest: str, moved_to: str = "") -> bool:
        """Delete the study if it holds what ``digest`` says; False if it was gone (404).
        Raises :class:`StudyChanged` on 412. A rebalance's delete of what it copied to
        shard ``moved_to``: the change feed says "move-out" (not shown to readers)."""
        r = await self._call(
            "DELETE",
            STUDY_PATH.format(study=study),
            frozenset({404, 412}),
            headers={"If-Match": f'"{digest}"', MOVE_HEADER: moved_to or "-"},
        )
        if r.status_code == 412:
            raise StudyChanged(r.text)
        return r.status_code != 404

    async def labels(self, study: str) -> list[str] | None:
        """The study's labels; None if the shard has no such study."""
        r = await self._call("GET", LABELS_PATH.format(study=study), frozenset({404}))
        return None if r.status_code == 404 else list(r.json()["labels"])

    async def set_labels(self, study: str, labels: list[str]) -> list[str] | None:
        """Set the study's labels; the new ones, or None if there is no such study."""
        r = await self._call(
            "PUT", LABELS_PATH.format(study=study), frozenset({404}), json={"labels": labels}
        )
        return None if r.status_code == 404 else list(r.json()["labels"])

    async def _call(
        self,
        method: str,
        path: str,
        ok: frozenset[int] = frozenset(),
        params: dict[str, int] | None = None,
        headers: dict[str, str] | None = None,
        json: object = None,
    ) -> httpx.Response:
        """The answer; IndexCallError for a status >= 400 not in ``ok``. Transport errors
        (the index down) propagate as httpx raises them: the caller retries those."""
        r = await self.client.request(
            method, self.base + path, params=params, headers=headers, json=json
        )
        if r.status_code >= 400 and r.status_code not in ok:
            raise IndexCallError(f"HTTP {r.status_code} {r.text[:300].strip()}")
        return r
