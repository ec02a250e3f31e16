"""A worker node's own heartbeat, so the rest of the deployment can tell it is there.

While its Celery consumer runs and is connected to the broker, a worker writes its node name
with the current time into one Redis sorted set (``keys.WORKERS``) every few seconds. The
API's ``/readyz`` counts the fresh entries; the worker's container check
(``python -m worker.healthcheck``) looks for its own. A worker that hangs, loses the broker or
starts to shut down stops beating, and its entry goes stale within ``WORKER_FRESH_SECONDS``.

(Celery's own worker heartbeats travel as events, which resq runs without; ``inspect ping``
costs a broadcast round trip per question. One sorted set costs one command per beat.)
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable

import redis

from shared import keys

log = logging.getLogger(__name__)

# Entries this old are removed by every beat: nodes that are long gone.
FORGET_SECONDS = 3600.0


class Presence:
    """Beats for the node ``name`` while ``consuming()`` says its consumer runs."""

    def __init__(
        self,
        client: redis.Redis,
        name: str,
        *,
        consuming: Callable[[], bool],
        every: float = keys.WORKER_BEAT_SECONDS,
    ) -> None:
        self.client = client
        self.name = name
        self.consuming = consuming
        self.every = every
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="resq-presence")

    def beat(self) -> bool:
        """One beat; False (and nothing written) while the consumer is not running."""
        if not self.consuming():
            return False
        now = time.time()
        pipe = self.client.pipeline(transaction=False)
        pipe.zadd(keys.WORKERS, {self.name: now})
        pipe.zremrangebyscore(keys.WORKERS, "-inf", now - FORGET_SECONDS)
        pipe.execute()
        return True

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.beat()
            except redis.RedisError as exc:  # Redis away: the next beat tries again
                log.warning("worker %s: heartbeat failed: %s", self.name, exc)
            self._stop.wait(self.every)
        with contextlib.suppress(redis.RedisError):  # else it goes stale on its own
            self.client.zrem(keys.WORKERS, self.name)  # gone at once

    def start(self) -> Presence:
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop beating; the node is taken out by the beating thread. Only sets a flag, so a
        signal handler may call it."""
        self._stop.set()
