"""Corpus files stored and indexed as ingest would, for the retrieve tests."""

from __future__ import annotations

import hashlib
import io
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
from starlette.applications import Starlette

from tessera.index.writer import index_instances
from tessera.retrieve.context import Context
from tessera.shared.dicomfile import parse_instance
from tessera.shared.messages import IndexInstance
from tessera.shared.multipart import read_parts
from tessera.shared.storage import instance_key

CORPUS = Path(__file__).parents[1] / "data" / "corpus"
FLAIR = [CORPUS / f"Brainix/Flair/IM-0001-000{i}.dcm" for i in (3, 1, 2)]
EPI = [CORPUS / f"Brainix/Epi/IM-0001-000{i}.dcm" for i in (2, 1)]
JPEG = CORPUS / "TransferSyntaxes/1.2.840.10008.1.2.4.50.dcm"
J2K = CORPUS / "TransferSyntaxes/1.2.840.10008.1.2.4.91.dcm"
IMPLICIT = CORPUS / "ColorTestMalaterre.dcm"
FRAGMENTS = CORPUS / "LenaTwiceWithFragments.dcm"
PDF = CORPUS / "sample-pdf.dcm"
OVERLAY = CORPUS / "PatientWith2studies/TEST_1_study_1234.dcm"
EVRLE = "1.2.840.10008.1.2.1"


@dataclass(frozen=True)
class Stored:
    path: Path
    data: bytes
    study: str
    series: str
    sop: str
    ts: str

    @property
    def url(self) -> str:
        return f"/studies/{self.study}/series/{self.series}/instances/{self.sop}"


def describe(path: Path) -> tuple[Stored, IndexInstance]:
    """What ingest sends the index for this file (parse_instance, as STOW-RS does)."""
    data = path.read_bytes()
    parsed = parse_instance(io.BytesIO(data))
    pixel = parsed.pixel_data_json()  # what ingest gives the index
    stored = Stored(
        path,
        data,
        parsed.study_instance_uid,
        parsed.series_instance_uid,
        parsed.sop_instance_uid,
        parsed.transfer_syntax_uid,
    )
    sha = hashlib.sha256(data).hexdigest()
    return stored, IndexInstance(
        study_instance_uid=stored.study,
        series_instance_uid=stored.series,
        sop_instance_uid=stored.sop,
        sop_class_uid=parsed.sop_class_uid,
        transfer_syntax_uid=stored.ts,
        storage_key=instance_key(sha),
        size=len(data),
        sha256=sha,
        metadata=parsed.metadata,
        number_of_frames=parsed.number_of_frames,
        rows=parsed.rows,
        columns=parsed.columns,
        pixel_data=pixel,
    )


async def store_files(app: Starlette, paths: list[Path]) -> list[Stored]:
    ctx: Context = app.state.retrieve
    described = [describe(p) for p in paths]
    for stored, inst in described:
        await ctx.store.put_bytes(inst.storage_key, stored.data)
    outcomes = await index_instances(ctx.pool, [inst for _, inst in described])
    assert {o.outcome for o in outcomes} == {"stored"}, outcomes
    return [stored for stored, _ in described]


async def parts(response: httpx.Response) -> list[tuple[dict[str, str], bytes]]:
    async def body() -> AsyncIterator[bytes]:
        yield response.content

    out = []
    async for part in read_parts(
        body(),
        response.headers["content-type"],
        spool_threshold=1 << 20,
        max_part_size=1 << 30,
        max_total_size=1 << 31,
    ):
        out.append((part.headers, part.file.read()))
    return out


def by_number(files: list[Stored]) -> list[Stored]:
    return sorted(files, key=lambda s: s.path.name)
