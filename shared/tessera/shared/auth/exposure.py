"""Who may listen where (README "Security"), decided before a service binds its port.

Like Orthanc's default, an archive without authentication answers on loopback only:

* the router (``public``) without authentication (``auth=on``, or an ``auth_issuer``)
  refuses any other address;
* a shard service, or a worker's probe port, without ``internal_secret`` likewise (it
  would be a side door to the archive);

unless the operator sets ``TESSERA_AUTH=off``: the explicit acknowledgement that the
archive is open to whoever reaches that address.
"""

from __future__ import annotations

import ipaddress

from tessera.shared.settings import Settings


def auth_enabled(settings: Settings) -> bool:
    """Whether the router authenticates its clients: ``auth=on``, or an issuer set."""
    mode = settings.auth.strip().lower()
    if mode not in ("", "on", "off"):
        raise ValueError(f"TESSERA_AUTH must be on, off or empty, not {settings.auth!r}")
    return mode == "on" or (mode == "" and bool(settings.auth_issuer))


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_exposure(settings: Settings, *, public: bool) -> None:
    """Raise :class:`SystemExit` with the reason if this service may not listen on
    ``settings.host``."""
    if is_loopback(settings.host) or settings.auth.strip().lower() == "off":
        return
    if public and not auth_enabled(settings):
        raise SystemExit(
            f"refusing to listen on {settings.host} without authentication: set"
            " TESSERA_AUTH_ISSUER (an OpenID provider) or TESSERA_AUTH=on (API keys), or"
            " TESSERA_AUTH=off to serve everyone who reaches that address"
        )
    if not public and not settings.internal_secret:
        raise SystemExit(
            f"refusing to listen on {settings.host} without TESSERA_INTERNAL_SECRET: this"
            " shard service would answer anyone (set TESSERA_AUTH=off to allow it)"
        )
