"""Moving one study from a source shard to a target shard while the archive serves it.

The per-study steps of the design's rebalance protocol (step 4), each idempotent so that
a job that crashed resumes a study from the last state it saved; the lock and release
between them are done for a batch of studies at once by
:class:`tessera.router.rebalance.batch.BatchMover`:

``pending`` -> copy (:meth:`Mover.copy`)
    List the study on the source and the target (the index's internal listing: each
    instance's SOPInstanceUID and SHA-256), fetch what the target lacks from the source
    retrieve service (WADO-RS as stored: ``transfer-syntax=*``, PS3.18 8.7.3.5.2), and
    STOW-RS it to the target ingest service in batches, which stores the objects and
    re-creates the index rows there. Verify: the same SOPInstanceUIDs on both sides, the
    same SHA-256 for each (the bytes fetched are hashed too, against the source's row).
``copied`` -> switch (the batch)
    Lock the batch (routers answer its STOWs with 503 + Retry-After), wait two registry
    polls so that every router sees the locks, copy what arrived meanwhile
    (:meth:`Mover.copy` again), then release the overrides: the hash now sends reads and
    writes to the target (two more polls pass before the source copy is deleted, for
    routers that still read there).
``switched`` -> delete (:meth:`Mover.finish`)
    Copy anything that still reached the source (a STOW already in flight when the lock
    came), then delete the study at the source with ``If-Match: "<digest>"`` of what was
    just verified on the target; 412 (it changed again) repeats the round, 404 means it
    is already gone.
``done``

Bodies are streamed: the source's multipart response is split by the shared reader into
spooled parts (memory up to ``SPOOL`` bytes each, then a temporary file), and a STOW
request sends up to ``rebalance_batch_size`` instances / ``rebalance_batch_bytes`` bytes,
read from those files as it goes.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import aclosing
from dataclasses import dataclass
from tempfile import SpooledTemporaryFile
from typing import Any

import httpx

from tessera.router.shards import Shard
from tessera.shared.changefeed import MOVE_HEADER
from tessera.shared.index_internal import IndexCallError, IndexInternalClient, study_digest
from tessera.shared.index_internal import ListedInstance as Listed
from tessera.shared.index_internal import StudyChanged as Changed
from tessera.shared.multipart import new_boundary, read_parts
from tessera.shared.settings import GIB, MIB

log = logging.getLogger(__name__)

ANY_TS = 'multipart/related; type="application/dicom"; transfer-syntax=*'
SPOOL = 4 * MIB
CHUNK = 1 * MIB
ROUNDS = 5  # copy / delete rounds before a study is given up (left on its source)
TIMEOUT = httpx.Timeout(connect=5.0, read=300.0, write=300.0, pool=60.0)


class MoveError(Exception):
    """The study cannot be moved (a conflicting object on the target, a shard refusing):
    it stays on its source, the job records why."""


class ShardClient:
    """The calls a rebalance makes to one shard's services, directly (not via a router):
    its index's internal routes (:class:`~tessera.shared.index_internal.IndexInternalClient`),
    WADO-RS from its retrieve, STOW-RS to its ingest."""

    def __init__(self, client: httpx.AsyncClient, shard: Shard) -> None:
        self.client = client
        self.shard = shard
        self.index = IndexInternalClient(client, shard.index_url)

    @property
    def name(self) -> str:
        return self.shard.name

    async def studies(self, page: int = 1000) -> AsyncIterator[list[tuple[str, int]]]:
        """Every study on the shard as pages of (StudyInstanceUID, instances), by key."""
        try:
            async for rows in self.index.studies(page):
                yield rows
        except IndexCallError as e:
            raise MoveError(f"listing the studies of {self.name}: {e}") from None

    async def instances(self, study: str) -> dict[str, Listed]:
        try:
            return await self.index.instances(study)
        except IndexCallError as e:
            raise MoveError(f"listing study {study} on {self.name}: {e}") from None

    async def delete(self, study: str, digest: str, moved_to: str) -> bool:
        """Delete the study if it holds what ``digest`` says; False if it was gone (404).
        Raises :class:`Changed` on 412. The change feed says "move-out"."""
        try:
            return await self.index.delete_study(study, digest, moved_to)
        except IndexCallError as e:
            raise MoveError(f"deleting study {study} on {self.name}: {e}") from None

    async def fetch(
        self, url_path: str
    ) -> AsyncIterator[tuple[str, SpooledTemporaryFile[bytes], int]]:
        """(SOPInstanceUID, file, size) of each instance of a WADO-RS retrieve, as stored.

        The caller owns (and closes) each file."""
        url = self.shard.retrieve_url.rstrip("/") + url_path
        async with self.client.stream("GET", url, headers={"Accept": ANY_TS}) as r:
            if r.status_code != 200:
                await r.aread()
                _check(r, f"retrieving {url_path} from {self.name}")
            parts = read_parts(
                r.aiter_bytes(),
                r.headers.get("content-type", ""),
                spool_threshold=SPOOL,
                max_part_size=16 * GIB,
                max_total_size=1 << 50,
            )
            async with aclosing(parts):
                async for part in parts:
                    location = part.content_location or ""
                    sop = location.rstrip("/").rsplit("/", 1)[-1]
                    yield sop, part.detach(), part.size

    async def store(self, study: str, files: Sequence[tuple[str, Any]]) -> list[str]:
        """STOW-RS the files to the shard's ingest; the failures it reports, as text."""
        boundary = new_boundary()

        async def body() -> AsyncIterator[bytes]:
            for _, f in files:
                yield f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode()
                f.seek(0)
                while block := await asyncio.to_thread(f.read, CHUNK):
                    yield block
                yield b"\r\n"
            yield f"--{boundary}--\r\n".encode()

        r = await self.client.post(
            f"{self.shard.ingest_url.rstrip('/')}/studies/{study}",
            content=body(),
            headers={
                "Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}',
                "Accept": "application/dicom+json",
                MOVE_HEADER: self.name,  # the change feed says "move-in", not "create"
            },
        )
        if r.status_code not in (200, 202, 409):
            _check(r, f"storing study {study} on {self.name}")
        failed = r.json().get("00081198", {}).get("Value", [])
        return [f"{_value(f, '00081155')}: failure reason {_value(f, '00081197')}" for f in failed]


def _value(item: dict[str, Any], tag: str) -> Any:
    values = item.get(tag, {}).get("Value", [None])
    return values[0] if values else None


def _check(r: httpx.Response, doing: str) -> None:
    if r.status_code >= 400:
        raise MoveError(f"{doing}: HTTP {r.status_code} {r.text[:300].strip()}")


@dataclass
class Batch:
    files: list[tuple[str, Any]]
    size: int = 0

    def close(self) -> None:
        for _, f in self.files:
            f.close()
        self.files.clear()
        self.size = 0


@dataclass(frozen=True)
class Copied:
    instances: int  # the study's instances on the source, all now on the target
    bytes: int
    copied: int  # of them sent in this call


class Mover:
    """Copies and deletes studies from one shard to another (see the module docstring);
    the locks and releases between are :mod:`.batch`'s, a batch at a time."""

    def __init__(
        self,
        source: ShardClient,
        target: ShardClient,
        batch_size: int = 32,
        batch_bytes: int = 64 * MIB,
    ) -> None:
        self.source = source
        self.target = target
        self.batch_size = batch_size
        self.batch_bytes = batch_bytes

    async def copy(self, study: str, src: dict[str, Listed] | None = None) -> Copied:
        """Make the target hold every instance of the source's study, byte for byte."""
        if src is None:
            src = await self.source.instances(study)
        sent = 0
        failures: list[str] = []
        for _ in range(ROUNDS):
            dst = await self.target.instances(study)
            bad = [s for s, i in src.items() if s in dst and dst[s].sha256 != i.sha256]
            if bad:
                raise MoveError(
                    f"study {study}: {len(bad)} SOPInstanceUIDs hold other bytes on "
                    f"{self.target.name} ({bad[0]} ...)"
                )
            missing = [i for s, i in src.items() if s not in dst]
            if not missing:
                await self._copy_labels(study)
                return Copied(len(src), sum(i.size for i in src.values()), sent)
            failures = await self._send(study, src, missing, whole=len(missing) == len(src))
            sent += len(missing)
        raise MoveError(
            f"study {study}: instances still missing on {self.target.name} after "
            f"{ROUNDS} rounds; {'; '.join(failures[:3]) or 'no STOW failure reported'}"
        )

    async def _copy_labels(self, study: str) -> None:
        """The target's study gets the source's labels (README "Security"), so that who
        may see it does not change when it moves."""
        try:
            labels = await self.source.index.labels(study)
            if labels:
                await self.target.index.set_labels(study, labels)
        except IndexCallError as e:
            raise MoveError(f"study {study}: copying its labels failed: {e}") from None

    async def _send(
        self, study: str, src: dict[str, Listed], missing: list[Listed], whole: bool
    ) -> list[str]:
        paths = (
            [f"/studies/{study}"]
            if whole
            else [f"/studies/{study}/series/{i.series}/instances/{i.sop}" for i in missing]
        )
        wanted = {i.sop for i in missing}
        batch = Batch([])
        failures: list[str] = []
        try:
            for path in paths:
                async for sop, f, size in self.source.fetch(path):
                    if sop not in wanted:  # arrived after the listing: the next round
                        f.close()
                        continue
                    batch.files.append((sop, f))
                    batch.size += size
                    digest = await asyncio.to_thread(_sha256, f)
                    if digest != src[sop].sha256:
                        raise MoveError(
                            f"study {study}: {self.source.name} served other bytes for "
                            f"{sop} than its index holds (SHA-256 {digest})"
                        )
                    if len(batch.files) >= self.batch_size or batch.size >= self.batch_bytes:
                        failures += await self.target.store(study, batch.files)
                        batch.close()
            if batch.files:
                failures += await self.target.store(study, batch.files)
        finally:
            batch.close()
        return failures

    async def finish(self, study: str) -> Copied:
        """Delete the study at the source once the target holds all of it."""
        for _ in range(ROUNDS):
            src = await self.source.instances(study)
            copied = await self.copy(study, src)
            try:
                digest = study_digest((s, i.sha256) for s, i in src.items())
                await self.source.delete(study, digest, self.target.name)
            except Changed:
                continue
            return copied
        raise MoveError(f"study {study} kept changing on {self.source.name}; not deleted")


def _sha256(f: Any) -> str:
    h = hashlib.sha256()
    f.seek(0)
    while block := f.read(CHUNK):
        h.update(block)
    f.seek(0)
    return h.hexdigest()
