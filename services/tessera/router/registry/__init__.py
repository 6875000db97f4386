"""The router's shard registry (its own PostgreSQL database, :mod:`.migrations`).

:class:`Registry` (:mod:`.store`): shards and their states, placement overrides, locks
and tombstones, every write numbered so router replicas poll changes incrementally;
:class:`RegistryWatcher` keeps a router's :class:`~tessera.router.shards.ShardMap` up to
date. ``python -m tessera.router.registry.migrate`` (:mod:`.migrate`) applies the
migrations and registers the shards of a new deployment.
"""

from tessera.router.registry.store import (
    MIGRATIONS,
    OverrideRow,
    Registry,
    RegistryWatcher,
    ShardRow,
)

__all__ = ["MIGRATIONS", "OverrideRow", "Registry", "RegistryWatcher", "ShardRow"]
