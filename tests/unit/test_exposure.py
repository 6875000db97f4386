"""Without authentication Tessera listens on loopback only (README "Security")."""

from __future__ import annotations

import pytest

from tessera.shared.auth.exposure import auth_enabled, check_exposure, is_loopback
from tessera.shared.settings import Settings


@pytest.mark.parametrize("host", ["127.0.0.1", "127.8.9.1", "::1", "localhost"])
def test_loopback_is_always_allowed(host: str) -> None:
    check_exposure(Settings(host=host), public=True)
    check_exposure(Settings(host=host), public=False)
    assert is_loopback(host)


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "10.1.2.3", "pacs.example"])
def test_another_address_needs_authentication(host: str) -> None:
    with pytest.raises(SystemExit, match="without authentication"):
        check_exposure(Settings(host=host), public=True)
    with pytest.raises(SystemExit, match="TESSERA_INTERNAL_SECRET"):
        check_exposure(Settings(host=host), public=False)
    check_exposure(Settings(host=host, auth_issuer="https://idp.example"), public=True)
    check_exposure(Settings(host=host, auth="on"), public=True)
    check_exposure(Settings(host=host, internal_secret="x" * 32), public=False)


def test_off_is_the_operators_acknowledgement() -> None:
    check_exposure(Settings(host="0.0.0.0", auth="off"), public=True)
    check_exposure(Settings(host="0.0.0.0", auth="off"), public=False)
    assert not auth_enabled(Settings(auth="off", auth_issuer="https://idp.example"))


def test_a_wrong_mode_is_refused() -> None:
    with pytest.raises(ValueError, match="on, off or empty"):
        auth_enabled(Settings(auth="maybe"))
