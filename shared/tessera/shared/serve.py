"""Run a service's ASGI app with uvicorn, configured from the environment once."""

from __future__ import annotations

import importlib
import logging

import uvicorn

from tessera.shared.auth.exposure import check_exposure
from tessera.shared.http_limits import guarded_protocol
from tessera.shared.settings import Settings


def serve(factory: str, port_setting: str, *, public: bool = False) -> None:
    """``factory`` is "module:function" taking Settings and returning the app; ``public``
    for the router (its clients authenticate; a shard service needs the internal
    credential): see :func:`~tessera.shared.auth.exposure.check_exposure`. With
    ``tls_cert`` and ``tls_key`` the service speaks HTTPS."""
    settings = Settings.from_env()
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(name)s %(levelname)s %(message)s"
    )
    check_exposure(settings, public=public)
    if bool(settings.tls_cert) != bool(settings.tls_key):
        raise SystemExit("HTTPS needs both TESSERA_TLS_CERT and TESSERA_TLS_KEY")
    module, _, name = factory.partition(":")
    app = getattr(importlib.import_module(module), name)(settings)
    uvicorn.run(
        app,
        host=settings.host,
        port=int(getattr(settings, port_setting)),
        log_level=settings.log_level,
        access_log=settings.log_level == "debug",
        http=guarded_protocol(settings),
        timeout_keep_alive=int(settings.http_keep_alive),
        limit_concurrency=2048,
        ssl_certfile=settings.tls_cert or None,
        ssl_keyfile=settings.tls_key or None,
    )
