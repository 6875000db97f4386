"""Run a service's ASGI app with uvicorn, configured from the environment once."""

from __future__ import annotations

import importlib
import logging

import uvicorn

from tessera.shared.settings import Settings


def serve(factory: str, port_setting: str) -> None:
    """``factory`` is "module:function" taking Settings and returning the app."""
    settings = Settings.from_env()
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(name)s %(levelname)s %(message)s"
    )
    module, _, name = factory.partition(":")
    app = getattr(importlib.import_module(module), name)(settings)
    uvicorn.run(
        app,
        host=settings.host,
        port=int(getattr(settings, port_setting)),
        log_level=settings.log_level,
        access_log=settings.log_level == "debug",
        timeout_keep_alive=30,
        limit_concurrency=2048,
    )
