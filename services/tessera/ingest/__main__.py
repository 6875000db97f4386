"""``python -m tessera.ingest``: the STOW-RS service of a shard."""

from tessera.shared.serve import serve

serve("tessera.ingest.app:create_app", port_setting="ingest_port", workers_setting="ingest_workers")
