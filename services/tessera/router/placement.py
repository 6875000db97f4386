"""Which shard holds a study: rendezvous (highest-random-weight) hashing.

Each shard gets a weight for a StudyInstanceUID from a stable hash of the pair; the
study lives on the shard with the highest weight (Thaler & Ravishankar, "Using
name-based mappings to increase hit rates", IEEE/ACM ToN 1998). Every router computes
the same answer from the same shard names, with no table to share. Adding a shard moves
only the studies for which the new shard now weighs most, about 1/(n+1) of them, and
moves them only to it; removing a shard moves only its own studies.

Studies moved by hand or by a rebalance are listed in ``overrides`` and win over the
hash. The whole study stays on one shard, so series and instances need no placement.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence


def weight(shard: str, study_instance_uid: str) -> int:
    """The shard's 64-bit weight for this study: the same in every process and release.

    BLAKE2b of ``shard NUL uid``; NUL cannot occur in either, so no two pairs collide
    by concatenation (Python's ``hash()`` is salted per process and would not do).
    """
    digest = hashlib.blake2b(
        shard.encode() + b"\x00" + study_instance_uid.encode(), digest_size=8
    ).digest()
    return int.from_bytes(digest, "big")


def place(
    study_instance_uid: str,
    shards: Sequence[str],
    overrides: Mapping[str, str] | None = None,
) -> str:
    """The name of the shard that holds ``study_instance_uid``.

    An entry in ``overrides`` (StudyInstanceUID -> shard) wins, even for a shard that
    is no longer in ``shards`` (it is being drained). Ties between weights, which need
    a 64-bit collision, go to the greater shard name, so the answer never depends on
    the order of ``shards``.
    """
    if overrides:
        moved = overrides.get(study_instance_uid)
        if moved is not None:
            return moved
    if not shards:
        raise ValueError("no shards to place a study on")
    return max(shards, key=lambda shard: (weight(shard, study_instance_uid), shard))
