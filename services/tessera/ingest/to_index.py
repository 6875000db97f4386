"""A STOW request's stored instances on their way to the index, several to a job.

Ingest stores each part as it arrives, then hands it here. The instances go to the
index queue as one :class:`~tessera.shared.messages.IndexJob` per group: when
:data:`GROUP` are waiting, when the oldest has waited :data:`LINGER` seconds (a slow
upload still reaches the index as it goes, and its pins stay young), and when the body
ends. So the ten instances of a ten-instance request reach the index worker together
and share its transaction (one commit, one WAL flush, one count refresh for all ten)
instead of arriving one by one, a few milliseconds apart, in batches of two or three.
The worker answers a job with one outcome per instance, in order; it commits a job
whose batch failed instance by instance, so one bad instance still fails alone.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from tessera.shared.messages import IndexInstance, IndexJob
from tessera.shared.queue import IndexQueue

log = logging.getLogger(__name__)

GROUP = 16  # instances to a job, at most
LINGER = 0.2  # seconds the first instance of a group may wait for the others


@dataclass
class Stored:
    """A part written to storage (and pinned), for the index."""

    instance: IndexInstance
    written_now: bool
    warning: int | None


class ToIndex:
    """Groups of one request's stored instances, sent as jobs answered on ``reply_to``.
    ``refused(stored, error)`` is told of each instance whose job could not be queued
    (Redis away): it fails that instance, not the request."""

    def __init__(
        self,
        queue: IndexQueue,
        reply_to: str,
        duplicate_policy: str,
        refused: Callable[[Stored, Exception], None],
    ) -> None:
        self.queue = queue
        self.reply_to = reply_to
        self.duplicate_policy = duplicate_policy
        self.refused = refused
        self.sent: dict[str, list[Stored]] = {}  # job id -> its instances, in order
        self.count = 0  # instances handed in
        self._waiting: list[Stored] = []
        self._timer: asyncio.TimerHandle | None = None
        self._sending: set[asyncio.Task[None]] = set()

    def add(self, stored: Stored) -> None:
        self.count += 1
        self._waiting.append(stored)
        if len(self._waiting) >= GROUP:
            self._flush()
        elif self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(LINGER, self._flush)

    async def close(self) -> dict[str, list[Stored]]:
        """Send what waits and return every job sent, once each is in the queue."""
        self._flush()
        while self._sending:
            await asyncio.gather(*self._sending)
        return self.sent

    def abandon(self) -> None:
        """The request ended without an answer (the client went): send nothing more.
        What waited stays stored but unindexed; the sweeper takes it, its pins expire."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._waiting = []

    def _flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self._waiting:
            return
        group, self._waiting = self._waiting, []
        task = asyncio.ensure_future(self._send(group))
        self._sending.add(task)
        task.add_done_callback(self._sending.discard)

    async def _send(self, group: list[Stored]) -> None:
        job = IndexJob(
            job_id=uuid.uuid4().hex,
            reply_to=self.reply_to,
            instances=tuple(s.instance for s in group),
            duplicate_policy=self.duplicate_policy,
            unpin=True,  # by the worker, with its answer
        )
        try:
            await self.queue.send(job)
        except Exception as e:  # Redis down: the objects stay for the sweeper, pins expire
            log.warning("queueing %d STOW instance(s) failed: %s: %s", len(group),
                        type(e).__name__, e)  # fmt: skip
            for stored in group:
                self.refused(stored, e)
            return
        self.sent[job.job_id] = group
