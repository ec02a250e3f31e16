"""A stopping worker's grace period for the jobs it is running.

Celery's warm shutdown (SIGTERM, or the launcher's stop) stops taking messages and waits for
running tasks. resq bounds that wait: ``begin`` starts the grace period
(``RESQ_SHUTDOWN_GRACE_SECONDS``), and a job still running when it is over stops at its next
check. A job that has sent no output yet goes back to the queue untouched (the next worker
runs it from the start, without spending an attempt); one whose output already went out ends
``failed`` with what it streamed, as the reaper would end it.
"""

from __future__ import annotations

import time


class Drain:
    def __init__(self) -> None:
        self._deadline: float | None = None

    def begin(self, grace_seconds: float, *, now: float | None = None) -> None:
        """Start the grace period (a second call keeps the first deadline). Safe to call from
        a signal handler: it only records a time."""
        if self._deadline is None:
            now = time.monotonic() if now is None else now
            self._deadline = now + max(0.0, grace_seconds)

    @property
    def draining(self) -> bool:
        return self._deadline is not None

    def expired(self, *, now: float | None = None) -> bool:
        """The grace period has begun and is over: running jobs stop now."""
        if self._deadline is None:
            return False
        return (time.monotonic() if now is None else now) >= self._deadline


# The worker process's own: its shutdown signal begins it (worker.celery_app), its jobs read it.
PROCESS_DRAIN = Drain()
