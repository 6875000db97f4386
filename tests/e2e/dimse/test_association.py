"""Who may associate with the gateway: AE title rules (PS3.8 7.1.1, 9.3.4 A-ASSOCIATE-RJ)
and TLS (PS3.15 B.1), with DCMTK's echoscu / storescu and pynetdicom as clients."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pydicom

from tests.e2e.dimse.conftest import CALLING, dicom_port
from tests.support.cluster import Cluster
from tests.support.dcmtk import run
from tests.support.dicomgen import make_instance
from tests.support.pki import Pki

DATA = Path(__file__).resolve().parents[2] / "data" / "corpus"
CT = DATA / "DummyCT.dcm"


def echo(archive: Cluster, calling: str = CALLING, called: str = "TESSERA") -> str:
    r = run("echoscu", "-v", "-aet", calling, "-aec", called, "127.0.0.1", dicom_port(archive))
    return r.stdout


def test_c_echo_of_a_registered_ae_succeeds(archive: Cluster, modality: str) -> None:
    out = echo(archive)
    assert "Received Echo Response (Success)" in out, out


def test_an_unknown_calling_ae_title_is_rejected_with_reason_3(
    archive: Cluster, modality: str
) -> None:
    out = echo(archive, calling="STRANGER")
    assert "Association Rejected" in out and "Calling AE Title Not Recognized" in out, out
    assert "Rejected Permanent" in out and "Service User" in out, out


def test_a_wrong_called_ae_title_is_rejected_with_reason_7(archive: Cluster, modality: str) -> None:
    out = echo(archive, called="NOTTESSERA")
    assert "Called AE Title Not Recognized" in out, out


def test_a_known_ae_calling_from_another_address_is_rejected_and_stores_nothing(
    archive: Cluster, nodes: Callable[..., dict[str, Any]], admin: httpx.Client, tmp_path: Path
) -> None:
    nodes("ELSEWHERE", host="10.1.2.3")
    out = echo(archive, calling="ELSEWHERE")
    assert "Calling AE Title Not Recognized" in out, out
    path = tmp_path / "new.dcm"
    path.write_bytes(make_instance())
    sop = pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID
    r = run("storescu", "-aet", "ELSEWHERE", "-aec", "TESSERA", "127.0.0.1",
            dicom_port(archive), path)  # fmt: skip
    assert "Association Rejected" in r.stdout, r.stdout
    found = admin.get("/dicom-web/instances", params={"SOPInstanceUID": sop})
    assert found.status_code in (200, 204) and not (found.content and found.json())


def test_an_operation_the_ae_may_not_do_is_refused_not_authorized(
    archive: Cluster, nodes: Callable[..., dict[str, Any]]
) -> None:
    nodes("ECHOONLY", operations=["echo"])
    r = run("storescu", "-v", "-aet", "ECHOONLY", "-aec", "TESSERA", "127.0.0.1",
            dicom_port(archive), CT)  # fmt: skip
    # PS3.7 C.5.x Refused: Not Authorized (DCMTK prints it as an unknown C-STORE status)
    assert "0x124" in r.stdout.lower() or "Not Authorized" in r.stdout, r.stdout


def test_the_registry_is_an_admin_api_on_the_router(
    archive: Cluster, admin: httpx.Client, nodes: Callable[..., dict[str, Any]]
) -> None:
    nodes("LISTED", port=4242, labels=["cardio"], description="cath lab")
    listed = admin.get("/admin/dicom-nodes").json()["nodes"]
    node = next(n for n in listed if n["aeTitle"] == "LISTED")
    assert node == {
        "aeTitle": "LISTED",
        "host": "127.0.0.1",
        "port": 4242,
        "operations": ["echo", "store", "find", "move", "get"],
        "labels": ["cardio"],
        "tls": False,
        "description": "cath lab",
    }
    assert admin.put("/admin/dicom-nodes/BAD%5CAE", json={}).status_code == 400
    assert admin.put("/admin/dicom-nodes/X", json={"operations": ["fly"]}).status_code == 400
    assert admin.put("/admin/dicom-nodes/X", json={"port": 70000}).status_code == 400
    assert admin.get("/admin/dicom-nodes/NOSUCH").status_code == 404
    # without credentials the router refuses; the gateway's own port refuses anything
    # but the router's internal credential
    base = f"http://127.0.0.1:{archive.settings.router_port}"
    assert httpx.get(base + "/admin/dicom-nodes").status_code == 401
    gateway = f"http://127.0.0.1:{archive.settings.dimse_http_port}"
    assert httpx.get(gateway + "/admin/dicom-nodes").status_code == 401


# -- TLS: PS3.15 B.1 ------------------------------------------------------------------------


def tls_echo(archive: Cluster, pki: Pki, cert: Path | None, key: Path | None) -> str:
    args = ["-v", "--enable-tls" if cert else "--anonymous-tls"]
    if cert and key:
        args = ["-v", "--enable-tls", str(key), str(cert)]
    args += ["--add-cert-file", str(pki.ca), "--require-peer-cert"]
    r = run("echoscu", *args, "-aet", CALLING, "-aec", "TESSERA", "127.0.0.1",
            str(archive.settings.dimse_tls_port))  # fmt: skip
    return r.stdout


def test_tls_with_a_trusted_client_certificate_associates(
    archive: Cluster, pki: Pki, modality: str
) -> None:
    out = tls_echo(archive, pki, pki.client_cert, pki.client_key)
    assert "Received Echo Response (Success)" in out, out


def test_tls_without_a_client_certificate_is_refused(
    archive: Cluster, pki: Pki, modality: str
) -> None:
    out = tls_echo(archive, pki, None, None)
    assert "Received Echo Response" not in out, out


def test_tls_with_an_untrusted_client_certificate_is_refused_and_stores_nothing(
    archive: Cluster, pki: Pki, modality: str
) -> None:
    out = tls_echo(archive, pki, pki.rogue_cert, pki.rogue_key)
    assert "Received Echo Response" not in out, out
    plain = run("echoscu", "-aet", CALLING, "-aec", "TESSERA", "127.0.0.1",
                str(archive.settings.dimse_tls_port), timeout=30)  # fmt: skip
    assert "Received Echo Response" not in plain.stdout  # plain DICOM on the TLS port


def test_the_gateways_http_port_answers_only_the_routers_credential(
    archive: Cluster, admin_token: str
) -> None:
    """No side door: every route of the gateway's HTTP side but the probes wants the
    router's internal credential; a client's own token (an admin API key) is refused."""
    from starlette.routing import Route

    from tessera.dimse.app import create_app
    from tessera.shared.auth import ALL_PERMISSIONS, Principal
    from tessera.shared.auth.internal import InternalCredential
    from tests.e2e.dimse.conftest import SECRET

    internal = InternalCredential(SECRET).header(
        Principal("route-test", ALL_PERMISSIONS, None, method="internal")
    )
    base = f"http://127.0.0.1:{archive.settings.dimse_http_port}"
    checked = 0
    with httpx.Client(base_url=base, timeout=30) as client:
        for route in create_app(archive.settings).routes:
            assert isinstance(route, Route)
            path = route.path.replace("{aet}", "NOSUCH").replace("{id}", "0")
            for method in sorted((route.methods or set()) - {"HEAD"}):
                if path in ("/healthz", "/readyz"):
                    assert client.request(method, path).status_code == 200
                    continue
                if path == "/metrics":  # open without metrics_token, as on every service
                    continue
                for headers in ({}, {"Authorization": f"Bearer {admin_token}"}):
                    assert client.request(method, path, headers=headers).status_code == 401
                with_credential = client.request(method, path, headers={"Authorization": internal})
                assert with_credential.status_code != 401, (method, path)
                checked += 1
    assert checked >= 10


def test_metrics_count_associations_operations_and_bytes(
    archive: Cluster, modality: str, tmp_path: Path
) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    echo(archive)
    echo(archive, calling="STRANGER")
    (tmp_path / "one.dcm").write_bytes(make_instance())
    stored = run("storescu", "-aet", CALLING, "-aec", "TESSERA", "127.0.0.1",
                 dicom_port(archive), tmp_path / "one.dcm")  # fmt: skip
    assert stored.returncode == 0, stored.stdout
    text = httpx.get(f"http://127.0.0.1:{archive.settings.dimse_http_port}/metrics").text
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    assert samples[("tessera_dimse_associations_total", (("result", "accepted"),))] >= 2
    assert samples[("tessera_dimse_associations_total", (("result", "rejected"),))] >= 1
    echoes = ("tessera_dimse_operations_total", (("service", "C-ECHO"), ("status", "success")))
    assert samples[echoes] >= 1
    operations = "tessera_dimse_operations_total"
    stores = [v for (n, labels), v in samples.items()
              if n == operations and ("service", "C-STORE") in labels]  # fmt: skip
    assert sum(stores) >= 1
    assert samples[("tessera_dimse_bytes_total", (("direction", "received"),))] > 0
    assert ("tessera_dimse_associations_active", ()) in samples
