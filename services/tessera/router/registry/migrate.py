"""``python -m tessera.router.registry.migrate [--shard NAME=INGEST,INDEX,RETRIEVE ...]``: prepare
the router's registry database (``router_database_url``) before routers start.

What a deployment runs once per install or upgrade (the compose ``router-migrate``
service, the Helm pre-install/pre-upgrade hook job):

1. apply the registry migrations (``tessera/router/registry/migrations``);
2. register the deployment's shards. On an empty registry (a new deployment) they all
   become ``active`` at once: there is nothing to move yet. Once the registry has
   shards, a known shard only gets its URLs updated (its state is kept) and an unknown
   one is NOT added: placing studies on a new shard means moving some, which is
   ``python -m tessera.router.rebalance.shardctl add`` (a rebalance job), so it is said and skipped.
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Sequence

from tessera.router.registry import Registry
from tessera.shared.settings import Settings


def parse_shard(text: str) -> tuple[str, str, str, str]:
    """``NAME=INGEST_URL,INDEX_URL,RETRIEVE_URL`` as its four parts."""
    name, sep, urls = text.partition("=")
    parts = [u.strip() for u in urls.split(",")]
    if not sep or not name.strip() or len(parts) != 3 or not all(parts):
        raise argparse.ArgumentTypeError(
            f"{text!r}: expected NAME=INGEST_URL,INDEX_URL,RETRIEVE_URL"
        )
    return name.strip(), parts[0], parts[1], parts[2]


async def prepare(dsn: str, shards: Sequence[tuple[str, str, str, str]]) -> list[str]:
    """Migrate and register; what was done, in words."""
    registry = await Registry.connect(dsn)  # applies the registry migrations
    done = ["registry migrations applied"]
    try:
        known = {row.name: row for row in await registry.shards() if row.state != "removed"}
        for name, ingest, index, retrieve in shards:
            if not known:
                await registry.add_shard(name, ingest, index, retrieve, "active")
                done.append(f"{name}: registered, active")
            elif name in known:
                await registry.add_shard(name, ingest, index, retrieve)
                done.append(f"{name}: URLs updated, still {known[name].state}")
            else:
                done.append(
                    f"{name}: NOT registered: the registry already has shards, so a new one"
                    " joins with `python -m tessera.router.rebalance.shardctl add`"
                    " (moves its studies)"
                )
    finally:
        await registry.close()
    return done


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tessera.router.registry.migrate", description=__doc__
    )
    parser.add_argument(
        "--shard",
        action="append",
        type=parse_shard,
        default=[],
        metavar="NAME=INGEST,INDEX,RETRIEVE",
        help="a shard of this deployment and its services' base URLs (repeat per shard)",
    )
    args = parser.parse_args(argv)
    settings = Settings.from_env()
    if not settings.router_database_url:
        parser.error("TESSERA_ROUTER_DATABASE_URL is not set: there is no registry to prepare")
    for line in asyncio.run(prepare(settings.router_database_url, args.shard)):
        print(line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
