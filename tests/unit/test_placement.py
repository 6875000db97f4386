"""Rendezvous placement of studies on shards (tessera.router.placement)."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from tessera.router.placement import place, weight

FOUR = ["shard-0", "shard-1", "shard-2", "shard-3"]


def random_uids(n: int, seed: int = 20240) -> list[str]:
    """``n`` distinct StudyInstanceUIDs in the UUID-derived form (PS3.5 B.2), seeded."""
    rng = random.Random(seed)
    return [f"2.25.{rng.getrandbits(128)}" for _ in range(n)]


def test_the_weight_is_pinned() -> None:
    # Changing the hash would silently misplace every stored study: pin it.
    assert weight("shard-0", "2.25.1") == 18289318150631877866
    assert place("1.3.6.1.4.1.9328.50.1.1", FOUR) == "shard-1"
    assert place("2.25.1", FOUR) == "shard-0"


def test_deterministic_and_independent_of_shard_order() -> None:
    uids = random_uids(500)
    first = [place(uid, FOUR) for uid in uids]
    assert [place(uid, FOUR) for uid in uids] == first
    assert [place(uid, list(reversed(FOUR))) for uid in uids] == first
    shuffled = FOUR.copy()
    random.Random(3).shuffle(shuffled)
    assert [place(uid, tuple(shuffled)) for uid in uids] == first


def test_one_shard_takes_everything() -> None:
    assert {place(uid, ["only"]) for uid in random_uids(100)} == {"only"}


def test_no_shards_is_an_error() -> None:
    with pytest.raises(ValueError):
        place("1.2.3", [])


def test_roughly_uniform_over_four_shards() -> None:
    counts = Counter(place(uid, FOUR) for uid in random_uids(10_000))
    assert set(counts) == set(FOUR)
    # expected 2500 each, standard deviation ~43: ±250 is a loose (~6 sigma) bound
    for shard, n in counts.items():
        assert 2250 <= n <= 2750, (shard, n)


def test_adding_a_shard_moves_about_one_in_n_plus_one_and_only_to_it() -> None:
    uids = random_uids(10_000)
    five = [*FOUR, "shard-4"]
    before = {uid: place(uid, FOUR) for uid in uids}
    after = {uid: place(uid, five) for uid in uids}
    moved = [uid for uid in uids if before[uid] != after[uid]]
    assert {after[uid] for uid in moved} == {"shard-4"}
    assert all(before[uid] == after[uid] for uid in uids if after[uid] != "shard-4")
    assert 0.17 <= len(moved) / len(uids) <= 0.23  # 1/5 expected


def test_removing_a_shard_moves_only_its_studies() -> None:
    uids = random_uids(5_000)
    three = ["shard-0", "shard-1", "shard-3"]
    for uid in uids:
        was = place(uid, FOUR)
        now = place(uid, three)
        assert now == was or was == "shard-2"


def test_overrides_win() -> None:
    uids = random_uids(200)
    moved_uid = uids[0]
    home = place(moved_uid, FOUR)
    elsewhere = next(s for s in FOUR if s != home)
    overrides = {moved_uid: elsewhere}
    assert place(moved_uid, FOUR, overrides) == elsewhere
    # a shard being drained (no longer listed) still holds the studies moved to it
    assert place(moved_uid, FOUR, {moved_uid: "shard-old"}) == "shard-old"
    # everything else stays where the hash puts it
    assert all(place(uid, FOUR, overrides) == place(uid, FOUR) for uid in uids[1:])
    assert place(moved_uid, FOUR, {}) == home
