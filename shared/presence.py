"""Which worker nodes are there: the read side of the workers' own heartbeats
(``worker.presence`` writes them, into the sorted set ``keys.WORKERS``)."""

from __future__ import annotations

import time

import redis

from shared import keys


def fresh_workers(client: redis.Redis, *, now: float | None = None) -> list[str]:
    """The worker nodes that beat within the last ``WORKER_FRESH_SECONDS``."""
    now = time.time() if now is None else now
    found = client.zrangebyscore(keys.WORKERS, now - keys.WORKER_FRESH_SECONDS, "+inf")
    return [n.decode() if isinstance(n, bytes) else str(n) for n in found]
