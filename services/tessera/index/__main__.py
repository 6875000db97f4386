"""``python -m tessera.index``: the index service's HTTP app (QIDO-RS) on
``settings.host:settings.index_port``; settings from ``TESSERA_*`` (see Settings)."""

from tessera.shared.serve import serve

if __name__ == "__main__":
    serve("tessera.index.app:create_app", "index_port")
