"""The shards a router knows, their services, and where each study goes.

In single-shard mode (no ``router_database_url``) the map holds the one shard of the
settings (``ingest_url``, ``index_url``, ``retrieve_url``). With a registry
(:mod:`tessera.router.registry`) it is rebuilt from the registry's shard and override
rows each time they change.

- ``shards``: every shard that is not removed, by name (URL lookup, QIDO fan-out).
- ``placement``: the rendezvous hash candidates: the ``active`` shards, and a ``draining``
  shard until its transition commits (``Registry.commit_transition``).
- ``next_placement``: the candidates once the transition in progress commits (active and
  joining, minus draining), or None when no transition is in progress.
- ``overrides``: StudyInstanceUID -> shard for studies pinned or being moved.
- ``locked``: studies whose STOW must wait (503 + Retry-After) while their move ends.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING

from tessera.router.placement import place
from tessera.shared.errors import ServiceUnavailable
from tessera.shared.settings import Settings

if TYPE_CHECKING:
    from tessera.router.registry import OverrideRow, ShardRow


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
    state: str = "active"

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
    """Shards by name, the hash candidates, and the studies off their hashed shard."""

    shards: Mapping[str, Shard]
    overrides: Mapping[str, str] = field(default_factory=dict)
    locked: frozenset[str] = frozenset()
    placement: tuple[str, ...] = None  # type: ignore[assignment]  # None: every shard
    next_placement: tuple[str, ...] | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> ShardMap:
        shard = Shard(
            settings.shard, settings.ingest_url, settings.index_url, settings.retrieve_url
        )
        return cls({shard.name: shard}, placement=(shard.name,))

    @classmethod
    def from_rows(cls, shards: Iterable[ShardRow], overrides: Iterable[OverrideRow]) -> ShardMap:
        """The map a registry describes (removed shards and released overrides left out)."""
        rows = [r for r in shards if r.state != "removed"]
        known = {
            r.name: Shard(r.name, r.ingest_url, r.index_url, r.retrieve_url, r.state) for r in rows
        }
        placement = tuple(
            sorted(
                r.name
                for r in rows
                if r.state == "active" or (r.state == "draining" and r.in_placement)
            )
        )
        transition = any(
            r.state == "joining" or (r.state == "draining" and r.in_placement) for r in rows
        )
        next_placement = (
            tuple(sorted(n for n, s in known.items() if s.state in ("active", "joining")))
            if transition
            else None
        )
        live = [o for o in overrides if not o.released]
        return cls(
            known,
            overrides={o.study_instance_uid: o.shard for o in live},
            locked=frozenset(o.study_instance_uid for o in live if o.locked),
            placement=placement,
            next_placement=next_placement,
        )

    def __post_init__(self) -> None:
        if self.placement is None:  # built by hand (tests): every shard is a candidate
            object.__setattr__(self, "placement", tuple(sorted(self.shards)))

    def owner(self, study_instance_uid: str) -> str:
        """The name of the shard that holds (or will hold) the study."""
        if not self.placement and study_instance_uid not in self.overrides:
            raise ServiceUnavailable("no active shard is registered", retry_after=30)
        return place(study_instance_uid, self.placement, self.overrides)

    def next_owner(self, study_instance_uid: str) -> str | None:
        """Its hashed shard once the transition in progress commits (None: no transition)."""
        if self.next_placement is None or not self.next_placement:
            return None
        return place(study_instance_uid, self.next_placement)

    def for_study(self, study_instance_uid: str) -> Shard:
        """The shard that holds (or will hold) the study."""
        return self.get(self.owner(study_instance_uid), study_instance_uid)

    def get(self, name: str, study_instance_uid: str = "") -> Shard:
        shard = self.shards.get(name)
        if shard is None:
            about = f"study {study_instance_uid} is on shard" if study_instance_uid else "shard"
            raise ServiceUnavailable(
                f"{about} {name!r}, which this router does not know", retry_after=30
            )
        return shard

    def only(self) -> Shard | None:
        """The shard when there is exactly one (requests then pass through), else None."""
        if len(self.shards) == 1 and not self.overrides:
            return next(iter(self.shards.values()))
        return None

    def all(self) -> list[Shard]:
        return list(self.shards.values())
