"""Background job contracts (Celery): the task names and queues that cross processes.

Rebalance (moving studies between shards): the router's admin API and ``shardctl`` queue
a job by its row id; the rebalance worker (``python -m tessera.router.rebalance``) runs
or resumes it from the router database. The argument is the job id, nothing else: the
job's state lives in its rows.
"""

from __future__ import annotations

REBALANCE_TASK = "tessera.router.rebalance.run"
REBALANCE_QUEUE = "rebalance"
