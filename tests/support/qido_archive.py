"""The small archive the QIDO-RS integration tests search, indexed with the real writer
from pydicom datasets, and helpers to search it through the index app:

    study   patient                  date      time    modalities  description
    ST1     Smith^John               20240115  101500  MR, SR      Brain MRI
    ST2     Goldsmith^Anna           20231201  235959  CT          Chest_CT 100%
    ST3     SMITH^JANE               20240301  080000  MR, CT      Follow-up
    ST4     Yamada^Tarou=山田^太郎    (none)    (none)  OT          (none)

Also: ST1's series carry RequestAttributesSequence items (ST1.1: RequestedProcedureID
RP1, ScheduledProcedureStepID SPS1; ST1.2: RP2/SPS2), a SeriesDescription and a
PerformedProcedureStepStartDate/Time; ST3 has a ReferencedStudySequence item; ST2 has
TimezoneOffsetFromUTC +0100, and its instances an AcquisitionDateTime (see
ACQUISITION).
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
import httpx
from pydicom.dataset import Dataset

from tessera.index.app import create_app
from tessera.index.writer import index_instances
from tessera.shared.levels import Layout
from tessera.shared.messages import IndexInstance
from tessera.shared.settings import Settings

MR = "1.2.840.10008.5.1.4.1.1.4"
BASE = "http://index.test"
ST1, ST2, ST3, ST4 = "1.2.826.0.9.1", "1.2.826.0.9.2", "1.2.826.0.9.3", "1.2.826.0.9.4"
NEWEST_FIRST = [ST3, ST1, ST2, ST4]

STUDIES: dict[str, dict[str, Any]] = {
    ST1: {
        "PatientName": "Smith^John",
        "PatientID": "P1",
        "PatientBirthDate": "19700101",
        "PatientSex": "M",
        "PatientAge": "054Y",
        "StudyDate": "20240115",
        "StudyTime": "101500",
        "AccessionNumber": "ACC1",
        "StudyDescription": "Brain MRI",
        "ReferringPhysicianName": "Ref^Doc",
        "StudyID": "S1",
    },
    ST2: {
        "PatientName": "Goldsmith^Anna",
        "PatientID": "P2",
        "StudyDate": "20231201",
        "StudyTime": "235959",
        "AccessionNumber": "ACC2",
        "StudyDescription": "Chest_CT 100%",
        "TimezoneOffsetFromUTC": "+0100",
    },
    ST3: {
        "PatientName": "SMITH^JANE",
        "PatientID": "P3",
        "StudyDate": "20240301",
        "StudyTime": "080000",
        "AccessionNumber": "ACC3",
        "StudyDescription": "Follow-up",
    },
    ST4: {"PatientName": "Yamada^Tarou=山田^太郎=やまだ^たろう", "PatientID": "P4"},
}
# (study, series, modality, SeriesNumber, BodyPartExamined, instances)
SERIES = [
    (ST1, f"{ST1}.1", "MR", "2", "HEAD", 3),
    (ST1, f"{ST1}.2", "MR", "10", "HEAD", 1),
    (ST1, f"{ST1}.3", "SR", "1", "", 1),
    (ST2, f"{ST2}.1", "CT", "1", "CHEST", 2),
    (ST3, f"{ST3}.1", "MR", "1", "HEAD", 1),
    (ST3, f"{ST3}.2", "CT", "2", "CHEST", 1),
    (ST4, f"{ST4}.1", "OT", "1", "", 1),
]


# (series, RequestedProcedureID, ScheduledProcedureStepID) of RequestAttributesSequence
REQUESTS = [(f"{ST1}.1", "RP1", "SPS1"), (f"{ST1}.2", "RP2", "SPS2")]
REFERENCED_STUDY = "1.2.826.0.9.99"  # ST3's ReferencedStudySequence > ReferencedSOPInstanceUID
# AcquisitionDateTime of ST2's instances, by InstanceNumber: #10 carries its own offset
# (23:00Z); #1 has none, so it is in ST2's TimezoneOffsetFromUTC, +0100 (22:00Z)
ACQUISITION = {10: "20231201230000+0000", 1: "20231201230000"}


def _item(**values: str) -> Dataset:
    item = Dataset()
    for keyword, value in values.items():
        setattr(item, keyword, value)
    return item


def make_instance(
    study: str, series: str, sop: str, *, modality: str, series_number: str, number: int
) -> IndexInstance:
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.SOPClassUID = MR
    ds.SOPInstanceUID = sop
    ds.StudyInstanceUID = study
    ds.SeriesInstanceUID = series
    ds.Modality = modality
    ds.SeriesNumber = series_number
    ds.InstanceNumber = number
    ds.ImageType = ["ORIGINAL", "PRIMARY", "LOCALIZER" if number == 2 else "AXIAL"]
    ds.Rows, ds.Columns, ds.BitsAllocated = 4, 4, 16
    for keyword, value in STUDIES[study].items():
        setattr(ds, keyword, value)
    body_part = next((s[4] for s in SERIES if s[1] == series), "")
    if body_part:
        ds.BodyPartExamined = body_part
    for request_series, procedure, step in REQUESTS:
        if series == request_series:
            ds.RequestAttributesSequence = [
                _item(RequestedProcedureID=procedure, ScheduledProcedureStepID=step)
            ]
            ds.SeriesDescription = f"series {series_number}"
            ds.PerformedProcedureStepStartDate = "20240115"
            ds.PerformedProcedureStepStartTime = "1016" + series_number.zfill(2)
    if study == ST3:
        ds.ReferencedStudySequence = [
            _item(
                ReferencedSOPClassUID="1.2.840.10008.3.1.2.3.1",
                ReferencedSOPInstanceUID=REFERENCED_STUDY,
            )
        ]
    if study == ST2 and number in ACQUISITION:
        ds.AcquisitionDateTime = ACQUISITION[number]
    return indexed(ds, size=100, rows=4, columns=4)


def indexed(ds: Dataset, size: int = 1, **more: Any) -> IndexInstance:
    """What ingest would send the index for ``ds`` (its UIDs and attributes as DICOM JSON,
    Explicit VR Little Endian), with no object behind it: the SHA-256 and content key are
    made from the SOPInstanceUID, ``size`` is what the test says."""
    sop = str(ds.SOPInstanceUID)
    sha = hashlib.sha256(sop.encode()).hexdigest()
    return IndexInstance(
        study_instance_uid=str(ds.StudyInstanceUID),
        series_instance_uid=str(ds.SeriesInstanceUID),
        sop_instance_uid=sop,
        sop_class_uid=str(ds.SOPClassUID),
        transfer_syntax_uid="1.2.840.10008.1.2.1",
        storage_key=f"instances/{sha}.dcm",
        size=size,
        sha256=sha,
        metadata=ds.to_json_dict(),
        **more,
    )


def archive() -> list[IndexInstance]:
    # instance numbers 10, 1, 2, ... so that the order is visibly numeric, not textual
    return [
        make_instance(study, series, f"{series}.{n}", modality=mod, series_number=num, number=n)
        for study, series, mod, num, _, count in SERIES
        for n in [10, *range(1, count)][:count]
    ]


async def index(
    database: str, instances: list[IndexInstance], layout: Layout | None = None
) -> None:
    conn = await asyncpg.connect(database)
    try:
        outcomes = await index_instances(conn, instances, "reject", layout)
    finally:
        await conn.close()
    assert {o.outcome for o in outcomes} == {"stored"}


@asynccontextmanager
async def serve(database: str, **settings: Any) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(Settings(database_url=database, **settings))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url=BASE) as client:
            yield client


def value(result: dict, tag: str) -> Any:
    element = result.get(tag, {})
    values = element.get("Value")
    if not values:
        return None
    return values[0] if len(values) == 1 else values


async def search(client: httpx.AsyncClient, path: str, **params: Any) -> list[dict]:
    response = await client.get(path, params=params)
    if response.status_code == 204:  # no match (PS3.18 8.3.4.4.1)
        return []
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/dicom+json"
    return response.json()  # type: ignore[no-any-return]


async def study_uids(client: httpx.AsyncClient, **params: Any) -> list[str]:
    return [value(r, "0020000D") for r in await search(client, "/studies", **params)]
