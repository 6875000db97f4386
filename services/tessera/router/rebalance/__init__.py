"""Rebalance: moving studies between shards while the archive serves.

* :mod:`.job`      a job (add or drain a shard): list, pin, copy, verify, switch, delete;
* :mod:`.batch`    studies locked, released and deleted in batches;
* :mod:`.move`     one study copied as stored (WADO-RS there, STOW-RS here) and verified;
* :mod:`.worker`   the Celery worker that runs jobs (``python -m tessera.router.rebalance``);
* :mod:`.api`      ``/admin/shards`` and ``/admin/rebalance`` on the router;
* :mod:`.shardctl` the operator's CLI (``python -m tessera.router.rebalance.shardctl``).

The task it runs is named in :mod:`tessera.shared.jobs`.
"""
