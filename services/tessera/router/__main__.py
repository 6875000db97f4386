"""``python -m tessera.router``: the public DICOMweb endpoint on ``host:router_port``."""

from tessera.shared.serve import serve

serve(
    "tessera.router.app:create_app",
    port_setting="router_port",
    public=True,
    workers_setting="router_workers",
)
