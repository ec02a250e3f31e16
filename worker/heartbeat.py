"""A running job's heartbeat: a Redis key refreshed by a background thread (a greenlet under
the gevent pool), so a job that waits minutes on a silent upstream still shows it is alive.
If the worker dies, the key expires and the reaper takes over."""

from __future__ import annotations

import logging
import threading
from types import TracebackType

from shared.bus import EventBus

log = logging.getLogger(__name__)


class Heartbeat:
    def __init__(self, bus: EventBus, response_id: str, *, every: float, ttl: float) -> None:
        self.bus = bus
        self.response_id = response_id
        self.every = every
        self.ttl = ttl
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, daemon=True, name=f"heartbeat-{response_id}"
        )

    def _beat(self) -> None:
        try:
            self.bus.beat(self.response_id, ttl_seconds=self.ttl)
        except Exception:  # Redis briefly away: the next beat tries again
            log.warning("response %s: heartbeat failed", self.response_id, exc_info=True)

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            self._beat()

    def __enter__(self) -> Heartbeat:
        self._beat()
        self._thread.start()
        return self

    def __exit__(
        self, _t: type[BaseException] | None, _e: BaseException | None, _tb: TracebackType | None
    ) -> None:
        self._stop.set()
        self._thread.join(self.every + 1)
        try:
            self.bus.stop_beat(self.response_id)
        except Exception:
            log.warning("response %s: could not clear the heartbeat", self.response_id)
