"""The OHIF viewer beside the API: :mod:`.serving` (the built OHIF at ``/viewer/`` with a
generated ``app-config.js``) and :mod:`.ohif` (that configuration, also as
``python -m tessera.router.viewer.ohif`` for a user's own OHIF)."""

from tessera.router.viewer.serving import routes

__all__ = ["routes"]
