"""Access by study label, through the router, over three shards (issue 10).

Two uploaders limited to different labels (``cardio``, ``neuro``: a ``tessera_labels``
claim from the provider) store studies for patients with the same PatientID; the studies
spread over three shards. Each sees exactly its own studies at every QIDO-RS level and on
every page (the server's maximum is 3 here, so paging and the "more results" Warning are
exercised), counts only its own patient-related studies, and gets 404 for the other's
study on every WADO route of the retrieve service's route table (taken from the app, so
a route added later is covered). A credential without the claim sees everything; an
admin can relabel a study.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import httpx
import pytest
from pydicom.uid import generate_uid
from starlette.routing import Route

from tessera.retrieve.app import create_app as retrieve_app
from tessera.shared.settings import Settings
from tests.e2e.security.conftest import SECRET, Tokens
from tests.support.dicomgen import make_instance, multipart
from tests.support.identity import Provider
from tests.support.servers import RedisDatabases
from tests.support.shards import Federation, running

PATIENT = "SAME-PATIENT-ID"
MAX = 3  # qido_max_limit of the shards and the router


@dataclass
class Stored:
    study: str
    series: str
    sops: list[str] = field(default_factory=list)


@dataclass
class World:
    fed: Federation
    mine: dict[str, list[Stored]]  # label -> its studies
    open_study: Stored  # stored by an unrestricted writer: no label


@pytest.fixture(scope="module")
async def world(
    provider: Provider,
    postgres_dsn: str,
    redis_databases: RedisDatabases,
    s3_settings: dict[str, str],
    tokens: Tokens,
) -> AsyncIterator[World]:
    tokens.forget()  # the provider may have rotated its key in another module
    router = {
        "internal_secret": SECRET,
        "auth": "on",
        "auth_issuer": provider.issuer,
        "auth_cache_seconds": 0.0,
        "qido_max_limit": MAX,
    }
    shards = {"internal_secret": SECRET, "qido_max_limit": MAX}
    with redis_databases.lease() as redis_url:
        async with running(
            postgres_dsn, redis_url, s3_settings, shards=3, shard_overrides=shards, **router
        ) as fed:
            mine: dict[str, list[Stored]] = {"cardio": [], "neuro": []}
            async with httpx.AsyncClient(base_url=fed.base_url, timeout=60) as client:
                for label in mine:
                    for i in range(5):
                        mine[label].append(await store(client, tokens[label], instances=1 + i % 2))
                open_study = await store(client, tokens["writer"], instances=1)
            placed = {s.study: s for ss in mine.values() for s in ss}
            on_shards = [await shard_studies(fed, name) for name in fed.stacks]
            assert sum(1 for found in on_shards if found & placed.keys()) >= 2, on_shards
            yield World(fed, mine, open_study)


async def store(client: httpx.AsyncClient, token: str, instances: int) -> Stored:
    s = Stored(generate_uid(), generate_uid())
    files = []
    for n in range(instances):
        sop = generate_uid()
        s.sops.append(sop)
        files.append(
            make_instance(
                study=s.study, series=s.series, sop=sop, patient_id=PATIENT, instance_number=n + 1
            )
        )
    body, ctype = multipart(files)
    r = await client.post(
        "/studies",
        content=body,
        headers={"Content-Type": ctype, "Authorization": f"Bearer {token}"},
    )
    assert r.status_code == 200, r.text
    return s


async def shard_studies(fed: Federation, name: str) -> set[str]:
    async with fed.shard_client(name) as index:
        r = await index.get("/internal/studies", params={"limit": 1000})
        return {uid for _, uid, _ in r.json()["studies"]}


async def every_page(
    client: httpx.AsyncClient, path: str, token: str, key: str, limit: int | None
) -> list[str]:
    """Every result of a search, page by page; checks the Warning of each page."""
    found: list[str] = []
    offset = 0
    while True:
        params: dict[str, object] = {"offset": offset}
        if limit is not None:
            params["limit"] = limit
        r = await client.get(path, params=params, headers={"Authorization": f"Bearer {token}"})
        assert r.status_code in (200, 204), r.text
        page = r.json() if r.status_code == 200 and r.content else []
        found += [item[key]["Value"][0] for item in page]
        warning = r.headers.get("warning")
        if limit is None and len(page) == MAX:
            total_left = (
                int(re.search(r"There are (\d+) additional", warning or "").group(1))
                if warning
                else 0
            )
            assert warning is not None or total_left == 0
        if not page or (limit is not None and len(page) < limit) or (limit is None and not warning):
            return found
        offset += len(page)


@pytest.mark.parametrize("label", ["cardio", "neuro"])
@pytest.mark.parametrize("limit", [None, 1, 2])
async def test_each_sees_exactly_its_own_studies_on_every_page(
    world: World, tokens: Tokens, label: str, limit: int | None
) -> None:
    mine = world.mine[label]
    async with httpx.AsyncClient(base_url=world.fed.base_url, timeout=60) as client:
        studies = await every_page(client, "/studies", tokens[label], "0020000D", limit)
        assert sorted(studies) == sorted(s.study for s in mine)
        series = await every_page(client, "/series", tokens[label], "0020000E", limit)
        assert sorted(series) == sorted(s.series for s in mine)
        sops = await every_page(client, "/instances", tokens[label], "00080018", limit)
        assert sorted(sops) == sorted(sop for s in mine for sop in s.sops)
        by_patient = await every_page(
            client, f"/studies?PatientID={PATIENT}", tokens[label], "0020000D", limit
        )
        assert sorted(by_patient) == sorted(s.study for s in mine)


async def test_the_warning_counts_only_visible_results(world: World, tokens: Tokens) -> None:
    async with httpx.AsyncClient(base_url=world.fed.base_url, timeout=60) as client:
        r = await client.get("/studies", headers={"Authorization": f"Bearer {tokens['cardio']}"})
    assert len(r.json()) == MAX
    assert re.search(r"There are 2 additional results", r.headers["warning"]), r.headers["warning"]


async def test_patient_related_counts_count_only_visible_studies(
    world: World, tokens: Tokens
) -> None:
    async with httpx.AsyncClient(base_url=world.fed.base_url, timeout=60) as client:
        r = await client.get(
            "/studies",
            params={
                "PatientID": PATIENT,
                "includefield": "NumberOfPatientRelatedStudies",
                "limit": 1,
            },
            headers={"Authorization": f"Bearer {tokens['neuro']}"},
        )
    (study,) = r.json()
    assert study["00201200"]["Value"] == [5]


async def test_the_others_study_is_not_found_on_every_wado_route(
    world: World, tokens: Tokens
) -> None:
    theirs = world.mine["neuro"][1]
    routes = [
        r.path for r in retrieve_app(Settings()).routes if r.path.startswith(("/studies", "/wado"))
    ]
    assert len(routes) >= 12
    values = {
        "study": theirs.study,
        "series": theirs.series,
        "instance": theirs.sops[0],
        "frames": "1",
        "tag_path": "7FE00010",
    }
    async with httpx.AsyncClient(base_url=world.fed.base_url, timeout=60) as client:
        for template in routes:
            path = re.sub(r"\{(\w+)(:path)?\}", lambda m: values[m.group(1)], template)
            params = {}
            if template == "/wado":
                params = {
                    "requestType": "WADO",
                    "studyUID": theirs.study,
                    "seriesUID": theirs.series,
                    "objectUID": theirs.sops[0],
                }
            for label, expected in (("cardio", 404), ("neuro", None)):
                r = await client.get(
                    path, params=params, headers={"Authorization": f"Bearer {tokens[label]}"}
                )
                if expected is not None:
                    assert r.status_code == expected, (template, label, r.status_code, r.text[:200])
                    assert theirs.study not in r.text or "not found" in r.text
                else:
                    assert r.status_code != 404, (template, label, r.text[:200])


async def test_storing_into_the_others_study_is_refused(world: World, tokens: Tokens) -> None:
    theirs = world.mine["neuro"][0]
    body, ctype = multipart(
        [make_instance(study=theirs.study, series=theirs.series, patient_id=PATIENT)]
    )
    async with httpx.AsyncClient(base_url=world.fed.base_url, timeout=60) as client:
        r = await client.post(
            f"/studies/{theirs.study}",
            content=body,
            headers={"Content-Type": ctype, "Authorization": f"Bearer {tokens['cardio']}"},
        )
        assert r.status_code == 409, r.text
        (failed,) = r.json()["00081198"]["Value"]
        assert failed["00081197"]["Value"] == [0x0124]  # Refused: Not Authorized
        asked = await client.post(
            "/studies?label=neuro",
            content=body,
            headers={"Content-Type": ctype, "Authorization": f"Bearer {tokens['cardio']}"},
        )
        assert asked.status_code == 403  # a limited credential gives only its own labels


async def test_an_unlimited_credential_sees_all_and_an_admin_relabels(
    world: World, tokens: Tokens
) -> None:
    every = [s.study for ss in world.mine.values() for s in ss] + [world.open_study.study]
    base = f"http://127.0.0.1:{world.fed.router.settings.router_port}"  # type: ignore[union-attr]
    async with httpx.AsyncClient(base_url=world.fed.base_url, timeout=60) as client:
        seen = await every_page(client, "/studies", tokens["everything"], "0020000D", None)
        assert sorted(seen) == sorted(every)
        cardio = await every_page(client, "/studies", tokens["cardio"], "0020000D", None)
        assert world.open_study.study not in cardio
        admin = {"Authorization": f"Bearer {tokens['admin']}"}
        url = f"{base}/admin/studies/{world.open_study.study}/labels"
        r = await client.put(url, json={"labels": ["cardio", "research"]}, headers=admin)
        assert r.status_code == 200 and r.json()["labels"] == ["cardio", "research"]
        assert (await client.get(url, headers=admin)).json()["labels"] == ["cardio", "research"]
        cardio = await every_page(client, "/studies", tokens["cardio"], "0020000D", None)
        assert world.open_study.study in cardio
        metadata = await client.get(
            f"/studies/{world.open_study.study}/metadata",
            headers={"Authorization": f"Bearer {tokens['cardio']}"},
        )
        assert metadata.status_code == 200
        assert (
            await client.put(url, json={"labels": ["bad label"]}, headers=admin)
        ).status_code == 400
        assert (
            await client.get(f"{base}/admin/studies/{generate_uid()}/labels", headers=admin)
        ).status_code == 404


async def test_the_registrys_admin_routes_need_the_admin_permission(
    world: World, tokens: Tokens
) -> None:
    """The routes a router has only with a shard registry (shards, rebalance jobs), read
    from its route table: no token 401, another permission 403, admin let through (the
    requests are harmless: an empty body, a shard and a job that do not exist)."""
    from tessera.router.app import create_app

    router = world.fed.router
    assert router is not None
    calls = [
        (method, route.path)
        for route in create_app(router.settings).routes
        if isinstance(route, Route) and route.path.startswith("/admin/")
        for method in sorted((route.methods or set()) - {"HEAD"})
    ]
    assert {path for _, path in calls} >= {"/admin/shards", "/admin/rebalance/{id}"}
    base = f"http://127.0.0.1:{router.settings.router_port}"
    async with httpx.AsyncClient(base_url=base, timeout=60) as client:
        for method, template in calls:
            path = template.replace("{name}", "no-such-shard").replace("{id}", "999999")
            path = path.replace("{study}", world.open_study.study)
            for token, allowed in ((None, {401}), (tokens["writer"], {403})):
                headers = {"Authorization": f"Bearer {token}"} if token else {}
                r = await client.request(method, path, headers=headers, json={})
                assert r.status_code in allowed, (method, template, token is None, r.status_code)
            r = await client.request(
                method, path, headers={"Authorization": f"Bearer {tokens['admin']}"}, json={}
            )
            assert r.status_code not in (401, 403) and r.status_code < 500, (
                method,
                template,
                r.status_code,
                r.text[:200],
            )
