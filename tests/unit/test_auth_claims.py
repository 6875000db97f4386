"""From token claims to permissions and labels (README "Security"): OAuth ``scope``,
Keycloak's ``realm_access.roles``, ``groups``; labels from ``tessera_labels``."""

from __future__ import annotations

import pytest

from tessera.router.auth.claims import principal
from tessera.shared.auth import Permission
from tessera.shared.settings import Settings

SETTINGS = Settings()


def test_a_keycloak_access_token() -> None:
    claims = {
        "sub": "f3b1c2d4",
        "azp": "ohif",
        "scope": "openid profile email",
        "realm_access": {"roles": ["offline_access", "tessera:read", "tessera:write"]},
        "tessera_labels": ["cardio", "research"],
    }
    p = principal(claims, SETTINGS)
    assert p.subject == "f3b1c2d4" and p.client_id == "ohif" and p.method == "oidc"
    assert p.permissions == {Permission.READ, Permission.WRITE}
    assert p.labels == {"cardio", "research"}


def test_scope_groups_and_a_space_separated_labels_claim() -> None:
    claims = {
        "sub": "uploader",
        "client_id": "bridge",
        "scope": "tessera:write other:thing",
        "groups": ["tessera:admin", "staff"],
        "tessera_labels": "cardio neuro",
    }
    p = principal(claims, SETTINGS)
    assert p.permissions == {Permission.WRITE, Permission.ADMIN}
    assert p.labels == {"cardio", "neuro"} and p.client_id == "bridge"


def test_no_labels_claim_sees_everything_and_an_empty_one_nothing() -> None:
    assert principal({"sub": "a"}, SETTINGS).labels is None
    limited = principal({"sub": "a", "tessera_labels": []}, SETTINGS)
    assert limited.labels == frozenset() and not limited.sees(["cardio"])


@pytest.mark.parametrize(
    "claims",
    [
        {"sub": "a", "scope": "read write"},  # without the prefix: nothing
        {"sub": "a", "scope": "tessera:root"},  # not a permission
        {"sub": "a", "realm_access": "tessera:read"},  # not an object: no roles
        {"sub": "a", "groups": [{"name": "tessera:read"}]},  # not strings
    ],
)
def test_what_grants_nothing(claims: dict[str, object]) -> None:
    assert principal(claims, SETTINGS).permissions == frozenset()


def test_the_prefix_and_claims_are_configurable() -> None:
    settings = Settings(auth_permission_prefix="pacs-", auth_permission_claims=("roles",))
    claims = {"sub": "a", "roles": ["pacs-read", "tessera:write"], "scope": "pacs-admin"}
    assert principal(claims, settings).permissions == {Permission.READ}
