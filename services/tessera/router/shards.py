"""The shards a router knows and the three services of each one.

For now the map holds the one shard of the settings (``ingest_url``, ``index_url``,
``retrieve_url``); the shard registry in the router's PostgreSQL will build the same
:class:`ShardMap` with N shards and the moved-study overrides.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from tessera.router.placement import place
from tessera.shared.errors import ServiceUnavailable, TesseraError
from tessera.shared.settings import Settings


class Service(StrEnum):
    """A shard service the router forwards to."""

    INGEST = "ingest"  # STOW-RS
    INDEX = "index"  # QIDO-RS
    RETRIEVE = "retrieve"  # WADO-RS


@dataclass(frozen=True, slots=True)
class Shard:
    name: str
    ingest_url: str
    index_url: str
    retrieve_url: str

    def url(self, service: Service) -> str:
        """Base URL of one of this shard's services (no trailing slash)."""
        url = {
            Service.INGEST: self.ingest_url,
            Service.INDEX: self.index_url,
            Service.RETRIEVE: self.retrieve_url,
        }[service]
        return url.rstrip("/")


@dataclass(frozen=True)
class ShardMap:
    """Shards by name, and the studies that were moved off their hashed shard."""

    shards: Mapping[str, Shard]
    overrides: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_settings(cls, settings: Settings) -> ShardMap:
        shard = Shard(
            settings.shard, settings.ingest_url, settings.index_url, settings.retrieve_url
        )
        return cls({shard.name: shard})

    def __post_init__(self) -> None:
        if not self.shards:
            raise ValueError("a router needs at least one shard")

    def for_study(self, study_instance_uid: str) -> Shard:
        """The shard that holds (or will hold) the study."""
        name = place(study_instance_uid, tuple(self.shards), self.overrides)
        shard = self.shards.get(name)
        if shard is None:
            raise ServiceUnavailable(
                f"study {study_instance_uid} is on shard {name!r}, which this router does not know",
                retry_after=30,
            )
        return shard

    def only(self) -> Shard:
        """The shard for a request that names no study (QIDO at the root, STOW to /studies).

        With one shard that is simply it; with N such requests are fanned out (QIDO) or
        split by study (STOW), which this router does not do yet.
        """
        if len(self.shards) != 1:
            raise TesseraError("requests without a study need QIDO fan-out / STOW split")
        return next(iter(self.shards.values()))

    def all(self) -> list[Shard]:
        return list(self.shards.values())
