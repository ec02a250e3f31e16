"""The cancel flags of every run in a worker process, read in one round trip.

A running job looks for a cancel every ``CANCEL_CHECK_SECONDS`` (0.2 s). Each used to ask Redis
on its own: five round trips a second per running job, 2.6 % of a worker's busy samples in
bench's fanout (bench/README.md, issue 17). Here one thread (a greenlet under the gevent pool)
reads the flags of all the process's runs with one ``MGET`` at that pace, and a run looks its
own up in the result. A cancel is seen up to one poll later than before: within 0.4 s.

When the poll cannot read Redis, a run asking gets that error, as it got its own read's error
before: a run with no output yet goes back to the queue, one with output fails
(``worker.execute``).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager

import redis

from shared.bus import EventBus

log = logging.getLogger(__name__)

POLL_SECONDS = 0.2


class CancelWatch:
    def __init__(self, bus: EventBus, *, every: float = POLL_SECONDS) -> None:
        self.bus = bus
        self.every = every
        self.lock = threading.Lock()
        self.running: Counter[str] = Counter()  # response id -> runs of it here (normally 1)
        self.cancelled: frozenset[str] = frozenset()
        self.error: redis.RedisError | None = None
        self._poller_pid = 0

    @contextmanager
    def watching(self, response_id: str) -> Iterator[None]:
        """Include a run's flag in the polls while it runs."""
        with self.lock:
            self.running[response_id] += 1
            if self._poller_pid != os.getpid():
                self._poller_pid = os.getpid()
                threading.Thread(target=self._run, name="resq-cancels", daemon=True).start()
        try:
            yield
        finally:
            with self.lock:
                self.running[response_id] -= 1
                if self.running[response_id] <= 0:
                    del self.running[response_id]

    def requested(self, response_id: str) -> bool:
        """Whether a cancel of this response was asked for, as of the last poll. Raises the
        last poll's Redis error if it failed."""
        error = self.error
        if error is not None:
            raise error
        return response_id in self.cancelled

    def _run(self) -> None:
        while True:
            time.sleep(self.every)
            with self.lock:
                ids = list(self.running)
            if not ids:
                self.error = None
                continue
            try:
                self.cancelled = frozenset(self.bus.cancels_among(ids))
                self.error = None
            except redis.RedisError as exc:
                self.error = exc
            except Exception:  # never let the poller die: no run would see a cancel again
                log.exception("cancel poll failed")
