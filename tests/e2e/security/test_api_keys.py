"""API keys Tessera issues itself (issue 10): created, used as bearer tokens, limited to
their permissions, revoked; by the admin API and by the CLI."""

from __future__ import annotations

import json
import subprocess
import sys

import httpx

from tests.e2e.security.conftest import Tokens
from tests.support.cluster import Cluster


def _admin(cluster: Cluster, tokens: Tokens) -> httpx.Client:
    return httpx.Client(
        base_url=f"http://127.0.0.1:{cluster.settings.router_port}",
        headers={"Authorization": f"Bearer {tokens['admin']}"},
        timeout=30,
    )


def test_a_key_is_created_used_within_its_permissions_and_revoked(
    secure: Cluster, tokens: Tokens
) -> None:
    with _admin(secure, tokens) as admin:
        made = admin.post("/admin/api-keys", json={"label": "uploader", "permissions": ["read"]})
        assert made.status_code == 201, made.text
        key = made.json()
        assert key["token"].startswith(f"tsk_{key['id']}_")
        listed = admin.get("/admin/api-keys").json()["keys"]
        assert any(k["id"] == key["id"] for k in listed)
        assert all("token" not in k and "secret" not in json.dumps(k) for k in listed)

        bearer = {"Authorization": f"Bearer {key['token']}"}
        assert httpx.get(f"{secure.base_url}/studies", headers=bearer).status_code in (200, 204)
        stow = httpx.post(f"{secure.base_url}/studies", headers=bearer, content=b"")
        assert stow.status_code == 403  # read only

        assert admin.delete(f"/admin/api-keys/{key['id']}").status_code == 204
        assert admin.delete(f"/admin/api-keys/{key['id']}").status_code == 404
        refused = httpx.get(f"{secure.base_url}/studies", headers=bearer)
        assert refused.status_code == 401
        assert key["token"] not in refused.text


def test_bad_key_requests_are_400(secure: Cluster, tokens: Tokens) -> None:
    with _admin(secure, tokens) as admin:
        for body in (
            {"label": "x"},
            {"label": "", "permissions": ["read"]},
            {"label": "x", "permissions": ["root"]},
        ):
            assert admin.post("/admin/api-keys", json=body).status_code == 400, body


def test_an_expired_key_is_refused(secure: Cluster, tokens: Tokens) -> None:
    with _admin(secure, tokens) as admin:
        made = admin.post(
            "/admin/api-keys",
            json={"label": "gone", "permissions": ["read"], "expires": "2020-01-01T00:00:00+00:00"},
        )
        token = made.json()["token"]
    r = httpx.get(f"{secure.base_url}/studies", headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 401


def test_the_cli_creates_lists_and_revokes(secure: Cluster) -> None:
    database = secure.settings.auth_database_url
    cli = [sys.executable, "-m", "tessera.router.auth.apikeys", "--database", database]
    made = subprocess.run(
        [
            *cli,
            "create",
            "--label",
            "pacs bridge",
            "--permission",
            "write",
            "--permission",
            "read",
            "--labels",
            "cardio",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    key = json.loads(made.stdout)
    assert key["permissions"] == ["read", "write"] and key["labels"] == ["cardio"]
    bearer = {"Authorization": f"Bearer {key['token']}"}
    assert httpx.get(f"{secure.base_url}/studies", headers=bearer).status_code in (200, 204)
    listed = json.loads(
        subprocess.run([*cli, "list"], capture_output=True, text=True, check=True).stdout
    )
    assert key["id"] in {k["id"] for k in listed}
    subprocess.run([*cli, "revoke", key["id"]], capture_output=True, text=True, check=True)
    assert httpx.get(f"{secure.base_url}/studies", headers=bearer).status_code == 401
