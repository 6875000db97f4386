"""Every route of every service is authenticated and authorized unless it is deliberately
open (issue 10; RFC 6750 3.1). The route tables are read from the apps themselves, so a
route added later is covered without editing this test: it must declare a permission
(``requires``) or be listed in OPEN here, with the reason.

Router: no token -> 401 with ``WWW-Authenticate: Bearer realm="tessera"``; a valid token
without the route's permission -> 403 ``insufficient_scope``; the right one -> 2xx.
Shard services (ingest, index, retrieve) and the workers' ports: anything but the probes
without the router's internal credential -> 401, a client's token included.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest
from pydicom.uid import generate_uid
from starlette.routing import BaseRoute, Mount, Route

from tessera.shared.auth import ALL_PERMISSIONS, Permission, Principal
from tessera.shared.auth.internal import InternalCredential
from tessera.shared.settings import Settings
from tests.e2e.security.conftest import METRICS_TOKEN, SECRET, Tokens
from tests.support.cluster import Cluster
from tests.support.dicomgen import make_instance, multipart

# Deliberately open, and why (README "Security"):
OPEN = {
    "/healthz": "liveness probe: says nothing but 'ok'",
    "/readyz": "readiness probe: names dependencies, no data",
    "/viewer": "the viewer's static files (the login happens in the browser)",
    "/viewer/{path:path}": "the same, when no viewer is installed (a page saying how)",
    # OPTIONS on the service root: open like every OPTIONS (CORS preflight)
    "/dicom-web": "the Capabilities Description (PS3.18 8.9): the API's shape, no data",
    "/dicom-web/": "the same, at the root with its slash",
}
METRICS = "/metrics"  # behind METRICS_TOKEN here (metrics_token), open by default
HOLDER = {
    Permission.READ: "reader",
    Permission.WRITE: "writer",
    Permission.DELETE: "deleter",
    Permission.ADMIN: "admin",
}
LACKING = {
    Permission.READ: "writer",
    Permission.WRITE: "reader",
    Permission.DELETE: "reader",
    Permission.ADMIN: "writer",
}


@dataclass(frozen=True)
class Call:
    method: str
    template: str
    permission: Permission | None

    def __str__(self) -> str:
        return f"{self.method} {self.template}"


def calls(routes: list[BaseRoute]) -> Iterator[Call]:
    for route in routes:
        if isinstance(route, Mount):
            yield Call("GET", route.path + "/{path:path}", None)
        elif isinstance(route, Route):
            for method in sorted((route.methods or {"GET"}) - {"HEAD"}):
                yield Call(method, route.path, getattr(route.endpoint, "permission", None))


@dataclass
class Archive:
    study: str
    series: str
    sop: str


def stored(secure: Cluster, tokens: Tokens) -> Archive:
    """A new instance in a new study, stored by the writer."""
    study, series, sop = generate_uid(), generate_uid(), generate_uid()
    body, ctype = multipart([make_instance(study=study, series=series, sop=sop)])
    r = httpx.post(
        f"{secure.base_url}/studies",
        content=body,
        headers={"Content-Type": ctype, "Authorization": f"Bearer {tokens['writer']}"},
        timeout=60,
    )
    assert r.status_code == 200, r.text
    return Archive(study, series, sop)


@pytest.fixture(scope="module")
def archive(secure: Cluster, tokens: Tokens) -> Archive:
    return stored(secure, tokens)


def router_routes(settings: Settings) -> list[BaseRoute]:
    from tessera.router.app import create_app

    return list(create_app(settings).routes)


def concrete(call: Call, a: Archive, key_id: str = "0000000000000000") -> str:
    path = call.template.replace("{rest:path}", "metadata").replace("{path:path}", "index.html")
    path = path.replace("{study}", a.study).replace("{series}", a.series)
    path = path.replace("{instance}", a.sop)
    path = path.replace("{id}", key_id).replace("{name}", "no-such-shard")
    path = re.sub(r"\{[^}]+\}", "x", path)
    if call.template.endswith("/wado"):
        path += (
            f"?requestType=WADO&studyUID={a.study}&seriesUID={a.series}&objectUID={a.sop}"
            "&contentType=application%2Fdicom"
        )
    return path


def request(
    client: httpx.Client, call: Call, a: Archive, token: str | None, key_id: str = "0" * 16
) -> httpx.Response:
    headers = {} if token is None else {"Authorization": f"Bearer {token}"}
    kwargs: dict[str, object] = {}
    if call.method == "POST" and "/studies" in call.template:
        body, ctype = multipart([make_instance(study=a.study, series=a.series)])
        kwargs = {"content": body}
        headers["Content-Type"] = ctype
    elif call.method == "POST" and call.template == "/admin/api-keys":
        kwargs = {"json": {"label": "route test", "permissions": ["read"]}}
    elif call.method == "PUT" and call.template.endswith("/labels"):
        kwargs = {"json": {"labels": []}}
    return client.request(call.method, concrete(call, a, key_id), headers=headers, **kwargs)  # type: ignore[arg-type]


def test_every_router_route_is_open_on_purpose_or_declares_a_permission(secure: Cluster) -> None:
    # with a shard registry the router has more routes (/admin/shards, /admin/rebalance)
    with_registry = dataclasses.replace(
        secure.settings, router_database_url=secure.settings.auth_database_url
    )
    # and with a DIMSE gateway, the routes it forwards to it (/admin/dicom-nodes...)
    with_dimse = dataclasses.replace(secure.settings, dimse_url="http://127.0.0.1:9")
    every = [
        *calls(router_routes(secure.settings)),
        *calls(router_routes(with_registry)),
        *calls(router_routes(with_dimse)),
    ]
    assert any(c.template.startswith("/admin/rebalance") for c in every)
    assert any(c.template.startswith("/admin/dicom-nodes") for c in every)
    # what the router forwards to the gateway: AE registry, SCU jobs, peers, webhooks
    gateway = ("dimse", "dicom-nodes", "/admin/peer", "/admin/webhooks")
    assert any(c.template.startswith("/admin/peers") for c in every)
    assert any(c.template.startswith("/admin/webhooks") for c in every)
    assert all(c.permission is Permission.ADMIN for c in every
               if any(g in c.template for g in gateway))  # fmt: skip
    for call in every:
        if call.permission is None:
            assert call.template in OPEN or call.template == METRICS, (
                f"{call} declares no permission (requires()) and is not deliberately open"
            )


def test_router_routes_need_a_token_then_the_permission(
    secure: Cluster, tokens: Tokens, archive: Archive
) -> None:
    checked = 0
    base = f"http://127.0.0.1:{secure.settings.router_port}"
    with httpx.Client(base_url=base, timeout=60) as client:
        for call in calls(router_routes(secure.settings)):
            if call.permission is None:
                continue
            key_id = "0" * 16
            if call.method == "DELETE" and call.template == "/admin/api-keys/{id}":
                made = request(
                    client,
                    Call("POST", "/admin/api-keys", Permission.ADMIN),
                    archive,
                    tokens["admin"],
                )
                key_id = made.json()["id"]
            target = archive
            if call.method == "DELETE" and "/studies/" in call.template:
                target = stored(secure, tokens)  # a study of its own to delete
            anonymous = request(client, call, target, None, key_id)
            assert anonymous.status_code == 401, (str(call), anonymous.text)
            assert anonymous.headers["www-authenticate"] == 'Bearer realm="tessera"'
            lacking = request(client, call, target, tokens[LACKING[call.permission]], key_id)
            assert lacking.status_code == 403, (str(call), lacking.text)
            assert 'error="insufficient_scope"' in lacking.headers["www-authenticate"]
            allowed = request(client, call, target, tokens[HOLDER[call.permission]], key_id)
            assert 200 <= allowed.status_code < 300, (str(call), allowed.status_code, allowed.text)
            checked += 1
        # the open ones answer without a token
        for path in ("/healthz", "/readyz"):
            assert client.get(path).status_code == 200
        assert client.get("/metrics").status_code == 401
        assert (
            client.get("/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"}).status_code
            == 200
        )
    assert checked >= 14  # DICOMweb (11) + admin (audit, API keys)


SHARD_APPS = {
    "ingest": "tessera.ingest.app",
    "index": "tessera.index.app",
    "retrieve": "tessera.retrieve.app",
}


def shard_routes(name: str, settings: Settings) -> list[BaseRoute]:
    import importlib

    return list(importlib.import_module(SHARD_APPS[name]).create_app(settings).routes)


def internal(settings: Settings) -> str:
    principal = Principal("route-test", ALL_PERMISSIONS, None, method="internal")
    return InternalCredential(SECRET).header(principal)


@pytest.mark.parametrize("service", sorted(SHARD_APPS))
def test_shard_services_answer_only_the_routers_credential(
    secure: Cluster, tokens: Tokens, archive: Archive, service: str
) -> None:
    """No side door: a process on the cluster network with a client's own token, or
    with none, gets 401 from every route of every shard service but the probes."""
    checked = 0
    with httpx.Client(base_url=secure.service_url(service), timeout=60) as client:
        for call in calls(shard_routes(service, secure.settings)):
            if call.template in ("/healthz", "/readyz"):
                assert client.request(call.method, call.template).status_code == 200
                continue
            target = stored(secure, tokens) if call.method == "DELETE" else archive
            path = concrete(call, target)
            for headers in ({}, {"Authorization": f"Bearer {tokens['everything']}"}):
                r = client.request(call.method, path, headers=headers)
                assert r.status_code == 401, (service, str(call), headers, r.text)
                assert r.headers["www-authenticate"].startswith('Bearer realm="tessera-shard"')
                assert tokens["everything"] not in r.text
            with_credential = client.request(
                call.method, path, headers={"Authorization": internal(secure.settings)}
            )
            assert with_credential.status_code != 401, (service, str(call))
            checked += 1
        assert (
            client.get("/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"}).status_code
            == 200
        )
    assert checked >= 2


@pytest.mark.parametrize("worker", ["index-worker", "transcode"])
def test_worker_ports_serve_probes_and_guard_metrics(secure: Cluster, worker: str) -> None:
    with httpx.Client(base_url=secure.service_url(worker), timeout=30) as client:
        assert client.get("/healthz").status_code == 200
        assert client.get("/readyz").status_code == 200
        assert client.get("/metrics").status_code == 401
        assert client.get("/metrics", headers={"Authorization": "Bearer wrong"}).status_code == 401
        ok = client.get("/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"})
        assert ok.status_code == 200 and "# TYPE tessera_" in ok.text
        assert (
            client.get("/metrics", headers={"Authorization": internal(secure.settings)}).status_code
            == 200
        )
