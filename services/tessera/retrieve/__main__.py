"""``python -m tessera.retrieve``: the retrieve service on ``settings.retrieve_port``."""

from tessera.shared.serve import serve

if __name__ == "__main__":
    serve("tessera.retrieve.app:create_app", "retrieve_port", workers_setting="retrieve_workers")
