"""The gateway in front of three shards: C-STORE lands each study on one shard (its
owner), C-FIND answers from every shard exactly as the router's QIDO-RS does, C-GET
reads from the owner."""

from __future__ import annotations

import dataclasses
import tempfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from pynetdicom import AE, _config, build_role, evt
from pynetdicom.association import Association

from tessera.local.processes import free_port
from tests.support.cluster import Cluster
from tests.support.dicomgen import make_instance
from tests.support.shards import Federation

STUDY_ROOT_FIND = "1.2.840.10008.5.1.4.1.2.2.1"
STUDY_ROOT_GET = "1.2.840.10008.5.1.4.1.2.2.3"
MR = "1.2.840.10008.5.1.4.1.1.4"
STUDIES = 6


@pytest.fixture(scope="module")
def gateway(federation: Federation) -> Iterator[Cluster]:
    assert federation.router is not None
    settings = dataclasses.replace(
        federation.router.settings,
        dimse_port=free_port(),
        dimse_http_port=free_port(),
        dimse_tls_port=0,
        dimse_router_url=f"http://127.0.0.1:{federation.router.settings.router_port}",
        dimse_database_url=federation.router_dsn,
    )
    cluster = Cluster(settings, Path(tempfile.mkdtemp(prefix="tessera-dimse-fed-")))
    cluster.start("dimse")
    cluster.wait_ready("dimse")
    node = {"host": "127.0.0.1", "operations": ["echo", "store", "find", "get"]}
    url = f"http://127.0.0.1:{settings.dimse_http_port}/admin/dicom-nodes/FEDSCU"
    assert httpx.put(url, json=node).status_code in (200, 201)
    try:
        yield cluster
    finally:
        cluster.stop_all()


@pytest.fixture(scope="module")
def stored(gateway: Cluster, tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    folder = tmp_path_factory.mktemp("fed-dimse")
    studies = [generate_uid() for _ in range(STUDIES)]
    ae = AE(ae_title="FEDSCU")
    ae.add_requested_context(MR, ["1.2.840.10008.1.2.1"])
    assoc = ae.associate("127.0.0.1", gateway.settings.dimse_port, ae_title="TESSERA")
    assert assoc.is_established
    _config.STORE_SEND_CHUNKED_DATASET = True
    try:
        for s, study in enumerate(studies):
            series = generate_uid()
            for i in range(4):
                path = folder / f"{s}-{i}.dcm"
                path.write_bytes(make_instance(study, series, instance_number=i + 1,
                                               patient_id=f"FED-{s % 2}"))  # fmt: skip
                assert assoc.send_c_store(path).Status == 0x0000
    finally:
        _config.STORE_SEND_CHUNKED_DATASET = False
        assoc.release()
    return studies


@pytest.fixture
def assoc(gateway: Cluster) -> Iterator[Association]:
    ae = AE(ae_title="FEDSCU")
    ae.add_requested_context(STUDY_ROOT_FIND)
    a = ae.associate("127.0.0.1", gateway.settings.dimse_port, ae_title="TESSERA")
    assert a.is_established
    yield a
    a.release()


def find(assoc: Association, **keys: object) -> list[Dataset]:
    query = Dataset()
    for k, v in keys.items():
        setattr(query, k, v)
    return [i for s, i in assoc.send_c_find(query, STUDY_ROOT_FIND) if s.Status in (0xFF00, 0xFF01)]


async def test_each_study_is_on_one_shard(federation: Federation, stored: list[str]) -> None:
    for study in stored:
        holders = []
        for name in federation.stacks:
            async with federation.shard_client(name) as client:
                r = await client.get("/studies", params={"StudyInstanceUID": study})
                if r.status_code == 200 and r.json():
                    holders.append(name)
        assert len(holders) == 1, (study, holders)


def test_c_find_equals_the_routers_qido_at_every_level(
    federation: Federation, stored: list[str], assoc: Association
) -> None:
    base = federation.base_url
    for patient in ("FED-0", "FED-1"):
        studies = find(assoc, QueryRetrieveLevel="STUDY", PatientID=patient, StudyInstanceUID="")
        qido = httpx.get(base + "/studies", params={"PatientID": patient}).json()
        assert {s.StudyInstanceUID for s in studies} == {q["0020000D"]["Value"][0] for q in qido}
        assert len(studies) == STUDIES // 2
    for study in stored:
        series = find(assoc, QueryRetrieveLevel="SERIES", StudyInstanceUID=study,
                      SeriesInstanceUID="")  # fmt: skip
        images = find(assoc, QueryRetrieveLevel="IMAGE", StudyInstanceUID=study,
                      SeriesInstanceUID=series[0].SeriesInstanceUID, SOPInstanceUID="")  # fmt: skip
        qido = httpx.get(base + f"/studies/{study}/instances").json()
        assert {i.SOPInstanceUID for i in images} == {q["00080018"]["Value"][0] for q in qido}
        assert len(images) == 4


def test_c_get_reads_from_the_owner(gateway: Cluster, stored: list[str]) -> None:
    received: list[str] = []

    def on_store(event: evt.Event) -> int:
        received.append(str(event.request.AffectedSOPInstanceUID))
        return 0

    ae = AE(ae_title="FEDSCU")
    ae.add_requested_context(STUDY_ROOT_GET)
    ae.add_requested_context(MR, ["1.2.840.10008.1.2.1"])
    a = ae.associate("127.0.0.1", gateway.settings.dimse_port, ae_title="TESSERA",
                     ext_neg=[build_role(MR, scp_role=True)],
                     evt_handlers=[(evt.EVT_C_STORE, on_store)])  # fmt: skip
    assert a.is_established
    query = Dataset()
    query.QueryRetrieveLevel = "STUDY"
    query.StudyInstanceUID = stored[-1]
    try:
        final = [s for s, _ in a.send_c_get(query, STUDY_ROOT_GET)][-1]
    finally:
        a.release()
    assert final.Status == 0 and final.NumberOfCompletedSuboperations == 4 == len(received)
