"""Moving many studies with the routers' waits paid once per batch, not once per study.

A study's move (:mod:`tessera.router.rebalance.move`) must wait ``lock_wait`` (two
registry polls) after its lock, so that every router answers its STOW with 503 before
the last copy, and again after its release, so that no router still reads it at the
source when it is deleted there. Paid per study that is seconds per study whatever its
size; here the studies go through a pipeline instead:

copy
    ``concurrency`` workers copy and verify one study each (no lock: the archive keeps
    serving and storing it), save ``copied``, and put it in the *ready* list.
switch, a batch at a time
    A batch is started when the ready list holds ``batch_studies`` studies or
    ``batch_bytes`` bytes, when its oldest study has waited ``lock_wait`` (so the lock
    comes soon after the copy and the last copy stays small), or when nothing is left to
    copy. Its studies are locked in one registry transaction, then after ``lock_wait``
    each gets its last copy (what arrived meanwhile: usually two listings and nothing
    to send) and they are released in one transaction, saved ``switched``. Studies
    whose last copy takes longer than ``max(lock_wait, 1 s)`` are released in a later
    transaction when it ends, so one busy study does not hold the others' locks.
    After ``lock_wait`` more, each is deleted at the source and saved ``done``.

Copying goes on while batches wait, so the waits overlap the copying; at most
``MAX_BATCHES`` batches are in flight. A study that fails alone (:class:`MoveError`:
conflicting bytes, a shard refusing it) is unlocked, recorded as failed and stays on its
source while the others go on; any other error (a shard or the registry not answering)
unlocks the batch and ends the run, which the job retries.

Resuming: the states saved per study say where each is. ``pending`` and ``copied``
studies are copied again (idempotent: only what the target lacks is sent, so a
``copied`` study that waited through a crash catches up before it is locked); a lock
left by a crashed run is removed before the run starts
(:meth:`tessera.router.rebalance.job.JobRunner.move_all`); a study whose override was
released before the crash is not locked again (:meth:`Registry.set_locked_many` skips
it) but still gets its last copy; ``switched`` studies are deleted at the source after
one ``lock_wait``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

from tessera.router.rebalance.move import Copied, MoveError, Mover
from tessera.router.registry import Registry

log = logging.getLogger(__name__)

MAX_BATCHES = 4  # batches in flight (locked, released or deleting) at once
STRAGGLER = 1.0  # seconds (at least lock_wait) before a slow last copy is released apart


@dataclass
class Study:
    """One study of the work list, in the state its row was read with."""

    uid: str
    state: str  # pending, copied or switched
    mover: Mover
    bytes: int = 0


Save = Callable[[str, str, Copied], Awaitable[None]]
Fail = Callable[[str, MoveError], Awaitable[None]]


class BatchMover:
    """Runs the pipeline of the module docstring over a stream of studies."""

    def __init__(
        self,
        registry: Registry,
        lock_wait: float,
        *,
        concurrency: int,
        batch_studies: int,
        batch_bytes: int,
        save: Save,
        fail: Fail,
    ) -> None:
        self.registry = registry
        self.lock_wait = lock_wait
        self.concurrency = max(1, concurrency)
        self.batch_studies = max(1, batch_studies)
        self.batch_bytes = max(1, batch_bytes)
        self.save = save
        self.fail = fail
        # the last copies (locks held) and the deletes get slots of their own, so that
        # the copy workers never make a locked study wait
        self.lock_slots = asyncio.Semaphore(self.concurrency)
        self.delete_slots = asyncio.Semaphore(self.concurrency)
        self.batches = asyncio.Semaphore(MAX_BATCHES)
        self.ready: deque[tuple[float, Study]] = deque()  # (when it was copied, study)
        self.changed = asyncio.Event()
        self.copying = True

    async def run(self, studies: AsyncIterator[Study]) -> None:
        """Move every study ``studies`` yields (each ends ``done`` or failed)."""
        take = asyncio.Lock()

        async def next_study() -> Study | None:
            async with take:
                return await anext(studies, None)

        async with asyncio.TaskGroup() as tg:

            async def worker() -> None:
                while (study := await next_study()) is not None:
                    if study.state == "switched":  # released before a crash
                        tg.create_task(self._finish_resumed(study))
                    elif await self._copy(study):
                        self.ready.append((time.monotonic(), study))
                        self.changed.set()

            async def copy_stage() -> None:
                async with asyncio.TaskGroup() as workers:
                    for _ in range(self.concurrency):
                        workers.create_task(worker())
                self.copying = False
                self.changed.set()

            tg.create_task(copy_stage())
            await self._batcher(tg)

    async def _batcher(self, tg: asyncio.TaskGroup) -> None:
        """Start a batch whenever one is due (see the module docstring)."""
        while True:
            if self.ready and self._due():
                await self.batches.acquire()
                tg.create_task(self._switch(self._take()))
                continue
            if not self.ready and not self.copying:
                return
            self.changed.clear()
            timeout = None
            if self.ready:
                timeout = max(0.0, self.ready[0][0] + self.lock_wait - time.monotonic())
            try:
                await asyncio.wait_for(self.changed.wait(), timeout)
            except TimeoutError:
                pass

    def _due(self) -> bool:
        return (
            not self.copying
            or len(self.ready) >= self.batch_studies
            or sum(s.bytes for _, s in self.ready) >= self.batch_bytes
            or time.monotonic() - self.ready[0][0] >= self.lock_wait
        )

    def _take(self) -> list[Study]:
        batch: list[Study] = []
        size = 0
        while self.ready and len(batch) < self.batch_studies and size < self.batch_bytes:
            _, study = self.ready.popleft()
            batch.append(study)
            size += study.bytes
        return batch

    async def _copy(self, study: Study) -> bool:
        try:
            copied = await study.mover.copy(study.uid)
        except MoveError as e:
            await self.fail(study.uid, e)
            return False
        study.bytes = copied.bytes
        await self.save(study.uid, "copied", copied)
        return True

    async def _switch(self, batch: list[Study]) -> None:
        """Lock the batch, last copies, release; then delete each at its source."""
        try:
            uids = [s.uid for s in batch]
            try:
                if await self.registry.set_locked_many(uids, True):
                    await asyncio.sleep(self.lock_wait)  # every router sees the locks
                released = await self._release(batch)
            except BaseException:
                await self.registry.set_locked_many(uids, False)
                raise
            if released:
                # reads go to the source until each router sees the release: keep it until then
                await asyncio.sleep(self.lock_wait)
                async with asyncio.TaskGroup() as tg:
                    for study in released:
                        tg.create_task(self._finish(study))
        finally:
            self.batches.release()

    async def _release(self, batch: list[Study]) -> list[Study]:
        """Last copy of each study of the (locked) batch; release those that have it, in
        one transaction per group that ends within ``STRAGGLER`` s of each other."""
        tasks = {asyncio.create_task(self._last_copy(s)): s for s in batch}
        pending = set(tasks)
        released: list[Study] = []
        try:
            while pending:
                done, pending = await asyncio.wait(pending, timeout=max(self.lock_wait, STRAGGLER))
                good: list[tuple[Study, Copied]] = []
                for task in done:
                    study = tasks[task]
                    try:
                        good.append((study, task.result()))
                    except MoveError as e:
                        await self.registry.set_locked_many([study.uid], False)
                        await self.fail(study.uid, e)
                await self.registry.release_many(s.uid for s, _ in good)
                for study, copied in good:
                    await self.save(study.uid, "switched", copied)
                    released.append(study)
        finally:
            for task in pending:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)  # none left unretrieved
        return released

    async def _last_copy(self, study: Study) -> Copied:
        async with self.lock_slots:
            return await study.mover.copy(study.uid)

    async def _finish(self, study: Study) -> None:
        async with self.delete_slots:
            try:
                copied = await study.mover.finish(study.uid)
            except MoveError as e:
                await self.fail(study.uid, e)
                return
        await self.save(study.uid, "done", copied)

    async def _finish_resumed(self, study: Study) -> None:
        await asyncio.sleep(self.lock_wait)  # a release just before a crash: let routers see it
        await self._finish(study)
