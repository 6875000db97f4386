"""Bulk load a :class:`~bench.scale_data.ScaleSet` into a shard's index with COPY.

STOW-RS would take hours for a million instances; COPY takes minutes. The rows are what
the index writer (:mod:`tessera.index.writer`) would write for the same instances: the
same column values (``tessera.shared.levels.text``), the same patient key, ``attrs``
from the same :class:`~tessera.shared.levels.Layout` functions, the instance's DICOM JSON
as ``metadata``, and the counts, ModalitiesInStudy and SOPClassesInStudy the writer
computes; ``tests/integration/test_bench_scale_load.py`` checks that QIDO answers the
same on both. Not written: the change feed (QIDO does not read it) and stored objects
(none exist; ``storage_key`` names where one would be).

Tables must be empty; primary keys are given explicitly, then the sequences are moved
past them, and the tables are vacuumed and analysed as autovacuum would in time.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from typing import Any

import asyncpg

from bench.scale_data import MODALITIES, ScaleSet, instance_metadata, series_base
from tessera.index.writer import _patient_key
from tessera.shared.levels import Layout, instance_attrs, text
from tessera.shared.storage import instance_key

EVRLE = "1.2.840.10008.1.2.1"
PIXEL = json.dumps({"offset": 1468, "length": 524288, "vr": "OW", "encapsulated": False})
CHUNK_ROWS = 2000
COLUMNS = {
    "patient": ["pk", "patient_key", "patient_id", "issuer_of_patient_id", "patient_name",
                "patient_birth_date", "patient_sex"],
    "study": ["pk", "study_instance_uid", "patient_pk", "study_date", "study_time",
              "accession_number", "study_id", "study_description", "referring_physician_name",
              "modalities_in_study", "sop_classes_in_study", "number_of_series",
              "number_of_instances", "attrs"],
    "series": ["pk", "series_instance_uid", "study_pk", "modality", "series_number",
               "series_description", "performed_procedure_step_start_date",
               "performed_procedure_step_start_time", "number_of_instances", "attrs"],
    "instance": ["pk", "sop_instance_uid", "series_pk", "sop_class_uid", "instance_number",
                 "instance_number_int", "transfer_syntax_uid", "rows", "columns",
                 "number_of_frames", "storage_key", "size", "sha256", "pixel_data", "metadata",
                 "attrs"],
}  # fmt: skip
_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})


def _dumps(doc: dict[str, Any]) -> str:
    return json.dumps(doc, ensure_ascii=False, separators=(",", ":"))


def _field(value: object) -> str:
    """One value in COPY's text format."""
    if value is None:
        return "\\N"
    if isinstance(value, list):
        value = "{" + ",".join(value) + "}"  # CS and UI values need no quoting
    out = str(value)
    return out.translate(_ESCAPES) if ("\\" in out or "\t" in out or "\n" in out) else out


def _line(values: Iterable[object]) -> str:
    return "\t".join(_field(v) for v in values) + "\n"


def patient_rows(data: ScaleSet) -> Iterator[list[object]]:
    for p in range(data.patients):
        name, pid, birth, sex = data.patient(p)
        md = {
            "00100010": {"vr": "PN", "Value": [{"Alphabetic": name}]},
            "00100020": {"vr": "LO", "Value": [pid]},
            "00100030": {"vr": "DA", "Value": [birth]},
        }
        yield [p + 1, _patient_key(md), pid, "", name, birth, sex]


def study_rows(data: ScaleSet, layout: Layout) -> Iterator[list[object]]:
    for st in data.all_studies():
        md = instance_metadata(st, 0, 1, series_base(st, 0))  # the first instance's
        modalities = sorted({m for _, m, _ in st.series})
        classes = sorted({MODALITIES[m][1] for m in modalities})
        counts = [len(st.series), sum(n for _, _, n in st.series)]
        yield [st.index + 1, st.uid, st.patient + 1, st.date, st.time, st.accession,
               text(md, "00200010"), st.description, text(md, "00080090"), modalities, classes,
               *counts, _dumps(layout.study_attrs(md))]  # fmt: skip


def series_rows(data: ScaleSet, layout: Layout) -> Iterator[list[object]]:
    pk = 0
    for st in data.all_studies():
        for k, (uid, modality, count) in enumerate(st.series):
            pk += 1
            md = instance_metadata(st, k, 1, series_base(st, k))
            yield [pk, uid, st.index + 1, modality, text(md, "00200011"), text(md, "0008103E"),
                   "", "", count, _dumps(layout.series_attrs(md))]  # fmt: skip


class Template:
    """The JSON text of one series' instances, fast: the elements the instances share are
    encoded once, and each instance adds only its own. The result is the very string
    ``json.dumps`` (as the writer calls it) gives for the whole document."""

    def __init__(self, doc: dict[str, Any], own: set[str]) -> None:
        self.parts: list[tuple[str, str | None]] = [
            (tag, None if tag in own else f'"{tag}":{_dumps(element)}')
            for tag, element in doc.items()
        ]

    def render(self, doc: dict[str, Any]) -> str:
        return (
            "{"
            + ",".join(
                part if part is not None else f'"{tag}":{_dumps(doc[tag])}'
                for tag, part in self.parts
            )
            + "}"
        )


def instance_rows(data: ScaleSet) -> Iterator[list[object]]:
    pk = series_pk = 0
    for st in data.all_studies():
        for k, (_, _, count) in enumerate(st.series):
            series_pk += 1
            base = series_base(st, k)
            sop_class = base["00080016"]["Value"][0]
            first = instance_metadata(st, k, 1, base)
            own = set(first) - set(base)
            metadata, attrs = Template(first, own), Template(instance_attrs(first), own)
            for n in range(1, count + 1):
                pk += 1
                md = instance_metadata(st, k, n, base)
                sop = md["00080018"]["Value"][0]
                sha = hashlib.sha256(sop.encode()).hexdigest()
                yield [pk, sop, series_pk, sop_class, str(n), n, EVRLE, 512, 512, 1,
                       instance_key(sha), 525_800, sha, PIXEL, metadata.render(md),
                       attrs.render(md)]  # fmt: skip


async def _chunks(rows: Iterator[list[object]], counter: list[int]) -> AsyncIterator[bytes]:
    batch: list[str] = []
    for row in rows:
        batch.append(_line(row))
        if len(batch) == CHUNK_ROWS:
            counter[0] += len(batch)
            yield "".join(batch).encode()
            batch = []
    if batch:
        counter[0] += len(batch)
        yield "".join(batch).encode()


async def load(
    dsn: str,
    data: ScaleSet,
    layout: Layout | None = None,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """COPY ``data`` into the (empty, migrated) index at ``dsn``; timings and row counts."""
    layout = layout or Layout()
    conn = await asyncpg.connect(dsn)
    report: dict[str, Any] = {"rows": {}, "seconds": {}}
    try:
        tables = {
            "patient": patient_rows(data),
            "study": study_rows(data, layout),
            "series": series_rows(data, layout),
            "instance": instance_rows(data),
        }
        for table, rows in tables.items():
            started, counter = time.perf_counter(), [0]
            await conn.copy_to_table(
                table, source=_chunks(rows, counter), columns=COLUMNS[table], format="text"
            )
            report["rows"][table] = counter[0]
            report["seconds"][table] = round(time.perf_counter() - started, 1)
            log(f"  {table}: {counter[0]} rows in {report['seconds'][table]} s")
            await conn.execute(
                f"SELECT setval(pg_get_serial_sequence('{table}', 'pk'), {max(counter[0], 1)})"
            )
        started = time.perf_counter()
        await conn.execute("VACUUM (ANALYZE) patient, study, series, instance")
        report["seconds"]["vacuum_analyze"] = round(time.perf_counter() - started, 1)
    finally:
        await conn.close()
    return report
