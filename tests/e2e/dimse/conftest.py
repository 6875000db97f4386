"""The DIMSE gateway in front of a single-shard archive with access control on.

archive     the shard's services, the router (API keys only, the internal secret, the
            audit trail) and the DIMSE gateway, each its own process; the gateway
            listens for DICOM on ``dimse_port`` and for TLS (PS3.15 B.1, client
            certificates required, from the test CA) on ``dimse_tls_port``
pki         the test CA, the gateway's certificate, a trusted and a rogue client's
admin       an httpx client of the router with an admin API key
nodes       registers AEs through the router's /admin/dicom-nodes (removed after)
"""

from __future__ import annotations

import asyncio
import dataclasses
import tempfile
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pydicom
import pytest
from pynetdicom import AE, _config

from tessera.router.auth.apikeys import ApiKeys
from tessera.shared.auth import Permission
from tests.support.cluster import CORE, Cluster, migrated_database, shard_settings, start_cluster
from tests.support.pki import Pki, make_pki
from tests.support.servers import RedisDatabases, empty_database

SECRET = "internal-secret-for-the-dimse-tests-0123456789"
CALLING = "MODALITY"  # the usual calling AE title of the tests


@pytest.fixture(scope="package")
def pki() -> Pki:
    return make_pki(Path(tempfile.mkdtemp(prefix="tessera-pki-")))


@pytest.fixture(scope="package")
async def router_database(postgres_dsn: str) -> AsyncIterator[str]:
    async with empty_database(postgres_dsn, "dimse_router") as dsn:
        yield dsn


@pytest.fixture(scope="package")
async def shard_database(postgres_dsn: str) -> AsyncIterator[str]:
    async with migrated_database(postgres_dsn, "dimse") as dsn:
        yield dsn


def gateway_settings(**values: Any) -> Any:
    """:func:`shard_settings` plus the gateway, wired to the router and back."""
    settings = shard_settings(**values)
    return dataclasses.replace(
        settings,
        dimse_url=f"http://127.0.0.1:{settings.dimse_http_port}",
        dimse_router_url=f"http://127.0.0.1:{settings.router_port}",
    )


@pytest.fixture(scope="package")
def archive(
    pki: Pki, router_database: str, shard_database: str, redis_databases: RedisDatabases
) -> Iterator[Cluster]:
    workdir = Path(tempfile.mkdtemp(prefix="tessera-dimse-"))
    with redis_databases.lease() as redis_url:
        cluster = start_cluster(
            lambda: gateway_settings(
                shard=f"dimse-{uuid.uuid4().hex[:6]}",
                database_url=shard_database,
                redis_url=redis_url,
                storage_url=(workdir / "objects").as_uri(),
                spool_dir=str(workdir),
                internal_secret=SECRET,
                auth="on",
                auth_database_url=router_database,
                auth_cache_seconds=0.0,
                index_timeout=8.0,
                index_claim_idle=2.0,
                dimse_tls_cert=str(pki.server_cert),
                dimse_tls_key=str(pki.server_key),
                dimse_tls_ca=str(pki.ca),
                dimse_timeout=20.0,
                dimse_job_stale=3.0,
                log_level="info",
            ),
            workdir,
            [*CORE, "dimse"],
        )
        try:
            yield cluster
        finally:
            cluster.stop_all()


@pytest.fixture(scope="package")
def admin_token(archive: Cluster, router_database: str) -> str:
    async def create() -> str:
        keys = await ApiKeys.connect(router_database)
        try:
            _, token = await keys.create("dimse tests", list(Permission))
            return token
        finally:
            await keys.close()

    return asyncio.run(create())


@pytest.fixture(scope="package")
def admin(archive: Cluster, admin_token: str) -> Iterator[httpx.Client]:
    base = f"http://127.0.0.1:{archive.settings.router_port}"
    with httpx.Client(
        base_url=base, headers={"Authorization": f"Bearer {admin_token}"}, timeout=120
    ) as client:
        yield client


ALL = ["echo", "store", "find", "move", "get"]
CORPUS = Path(__file__).resolve().parents[2] / "data" / "corpus"
SEED = [
    *sorted((CORPUS / "Brainix").rglob("*.dcm")),
    *sorted((CORPUS / "Knee").rglob("*.dcm")),
    *sorted((CORPUS / "Encodings").glob("Lena-*.dcm")),
]


def send_files(archive: Cluster, paths: list[Path]) -> list[int]:
    """C-STORE each file as it is (pynetdicom), each on its own association; statuses."""
    statuses = []
    _config.STORE_SEND_CHUNKED_DATASET = True
    try:
        for path in paths:
            meta = pydicom.filereader.read_file_meta_info(path)
            ae = AE(ae_title=CALLING)
            ae.add_requested_context(meta.MediaStorageSOPClassUID, [meta.TransferSyntaxUID])
            assoc = ae.associate("127.0.0.1", archive.settings.dimse_port, ae_title="TESSERA")
            assert assoc.is_established
            statuses.append(int(assoc.send_c_store(path).Status))
            assoc.release()
    finally:
        _config.STORE_SEND_CHUNKED_DATASET = False
    return statuses


@pytest.fixture
def nodes(admin: httpx.Client) -> Iterator[Callable[..., dict[str, Any]]]:
    """``register(aet, **fields)``: PUT /admin/dicom-nodes/{aet}; removed after the test."""
    made: list[str] = []

    def register(aet: str, **fields: Any) -> dict[str, Any]:
        body = {"host": "127.0.0.1", "operations": ALL, **fields}
        r = admin.put(f"/admin/dicom-nodes/{aet}", json=body)
        assert r.status_code in (200, 201), r.text
        made.append(aet)
        return r.json()

    yield register
    for aet in made:
        admin.delete(f"/admin/dicom-nodes/{aet}")


@pytest.fixture(scope="package")
def seeded(archive: Cluster, admin: httpx.Client) -> None:
    """Brainix, Knee and the Lena character set files, stored by C-STORE."""
    admin.put(f"/admin/dicom-nodes/{CALLING}", json={"host": "127.0.0.1", "operations": ALL})
    for path, status in zip(SEED, send_files(archive, SEED), strict=True):
        assert status in (0x0000, 0x0111, 0xB000, 0xB006, 0xB007), path


def dicom_port(archive: Cluster) -> str:
    return str(archive.settings.dimse_port)


@pytest.fixture
def modality(nodes: Callable[..., dict[str, Any]]) -> str:
    """A registered AE that may do everything, calling from 127.0.0.1."""
    nodes(CALLING)
    return CALLING
