"""The provider's deltas, read by a thread of their own so a run can wait for them with a
timeout (``worker.run``)."""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from contextlib import closing
from typing import Any

from worker.providers.base import Delta


class DeltaFeed:
    """The provider's deltas, read by a thread of their own (a greenlet under the gevent
    pool) into a queue, so the run can wait for the next one with a timeout and publish what
    it holds when the upstream goes quiet. Provider errors come out of ``next``."""

    END = object()
    QUIET = object()

    def __init__(self, deltas: Iterator[Delta]) -> None:
        self.deltas = deltas
        self.queue: queue.Queue[tuple[str, Any]] = queue.Queue()
        self.stopped = threading.Event()
        self.reader = threading.Thread(target=self._read, name="resq-deltas", daemon=True)

    def _read(self) -> None:
        with closing(self.deltas):  # type: ignore[type-var]
            try:
                for delta in self.deltas:
                    self.queue.put(("delta", delta))
                    if self.stopped.is_set():
                        return
                self.queue.put(("end", None))
            except BaseException as exc:  # handed to the run, which decides
                self.queue.put(("error", exc))

    def next(self, timeout: float | None) -> Any:
        """The next delta; ``END`` after the last; ``QUIET`` if none came within
        ``timeout``."""
        try:
            kind, value = self.queue.get(timeout=timeout)
        except queue.Empty:
            return self.QUIET
        if kind == "error":
            raise value
        return self.END if kind == "end" else value

    def __enter__(self) -> DeltaFeed:
        self.reader.start()
        return self

    def __exit__(self, *exc: object) -> None:
        # A run that stops early (cancel, time limit) leaves the reader to close the upstream
        # stream when its next chunk arrives (or its read times out).
        self.stopped.set()
