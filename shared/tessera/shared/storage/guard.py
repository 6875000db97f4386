"""Who may remove a stored object, and when: the handshake between the writers that may
reuse an object already in the store (ingest: objects are content-addressed, so a STOW
of bytes already stored writes nothing) and the removers (the sweeper, a delete).

Without it a remover could decide an object is unreferenced, a STOW could then find the
object present and not write it, and the remover would delete what the STOW's row is
about to reference. With it, in Redis (one per shard, keys named by shard):

- a writer **pins** the object's key (``INCR pin``, ``EXPIRE``) *before* it asks the
  store whether the object exists, then waits while a remover **claims** the key; it
  unpins (``DECR``) once its index commit has answered, whatever the answer (ingest
  asks the index worker to do it in the same step as the answer, :attr:`IndexJob.unpin`);
- a remover **claims** the key (``SET claim NX EX``) *before* it checks the pin, and
  removes the object only if no pin exists; it releases the claim after.

Redis applies the two writes in one order, so at least one side sees the other's:
either the remover sees the pin and keeps the object, or the writer sees the claim,
waits for its release, and finds the object gone (and writes it again). A pin is a count
(two STOWs of the same bytes pin it twice) and lasts at most ``pin_ttl`` seconds from
the last pin (longer than a STOW waits for its index commit: a writer that died, or
whose commit did not answer in time, unpins by expiry); the writer also renews the
object's modification time, which the sweeper's grace period counts from.
"""

from __future__ import annotations

import asyncio
import time

import redis.asyncio as aioredis

CLAIM_TTL = 60  # seconds: a remover that died holding a claim holds it no longer
_POLL = 0.05
# one step, so that a pin taken between the decrement and the delete is not lost, and an
# expired pin is not left at -1 for ever
UNPIN = "if redis.call('DECR', KEYS[1]) <= 0 then redis.call('DEL', KEYS[1]) end return 0"


def pin_key(shard: str, storage_key: str) -> str:
    return f"tessera:{shard}:storage:pin:{storage_key}"


def claim_key(shard: str, storage_key: str) -> str:
    return f"tessera:{shard}:storage:claim:{storage_key}"


class ObjectBusy(Exception):
    """A remover held the object's claim for longer than a writer may wait."""


class ObjectGuard:
    def __init__(self, redis: aioredis.Redis, shard: str, pin_ttl: float) -> None:
        self.redis = redis
        self.shard = shard
        self.pin_ttl = max(1, int(pin_ttl + 0.999))

    async def pin(self, storage_key: str, wait: float = CLAIM_TTL) -> None:
        """Keep removers off ``storage_key`` for ``pin_ttl`` seconds; returns once no
        remover holds it (:class:`ObjectBusy` after ``wait`` seconds)."""
        pin = pin_key(self.shard, storage_key)
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.incr(pin)
            pipe.expire(pin, self.pin_ttl)
            pipe.exists(claim_key(self.shard, storage_key))
            *_, claimed = await pipe.execute()
        deadline = time.monotonic() + wait
        while claimed:
            if time.monotonic() > deadline:
                raise ObjectBusy(f"{storage_key} is being removed; try again")
            await asyncio.sleep(_POLL)
            claimed = await self.redis.exists(claim_key(self.shard, storage_key))

    async def unpin(self, storage_key: str) -> None:
        """One pin of ``storage_key`` less (its writer's row is committed, or refused)."""
        await self.redis.eval(UNPIN, 1, pin_key(self.shard, storage_key))

    async def claim(self, storage_key: str) -> bool:
        """The right to remove ``storage_key``: False if a writer pinned it or another
        remover holds it. Call :meth:`release` after removing (or deciding not to)."""
        claim = claim_key(self.shard, storage_key)
        if not await self.redis.set(claim, "1", nx=True, ex=CLAIM_TTL):
            return False
        if int(await self.redis.get(pin_key(self.shard, storage_key)) or 0) > 0:
            await self.redis.delete(claim)
            return False
        return True

    async def release(self, storage_key: str) -> None:
        await self.redis.delete(claim_key(self.shard, storage_key))
