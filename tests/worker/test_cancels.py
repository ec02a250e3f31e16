"""The worker's one poll of cancel flags (``worker.cancels``)."""

from __future__ import annotations

import time
from collections.abc import Callable

import fakeredis
import pytest
import redis

from shared.bus import EventBus
from worker.cancels import CancelWatch


class CountingBus(EventBus):
    """An event bus that counts its cancel reads, and can be told Redis is away."""

    def __init__(self) -> None:
        super().__init__(fakeredis.FakeRedis(), ttl_seconds=60)
        self.reads = 0
        self.away = False

    def cancels_among(self, response_ids: list[str]) -> set[str]:
        self.reads += 1
        if self.away:
            raise redis.ConnectionError("Redis is away")
        return super().cancels_among(response_ids)


def eventually(check: Callable[[], bool], timeout: float = 2.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "not within the time"
        time.sleep(0.01)


def test_a_run_sees_its_cancel_and_only_its_own() -> None:
    bus = CountingBus()
    watch = CancelWatch(bus, every=0.02)
    with watch.watching("resp_a"), watch.watching("resp_b"):
        assert not watch.requested("resp_a")
        bus.request_cancel("resp_a")
        eventually(lambda: watch.requested("resp_a"))
        assert not watch.requested("resp_b")
    assert dict(watch.running) == {}


def test_one_read_serves_every_run_of_the_process() -> None:
    bus = CountingBus()
    watch = CancelWatch(bus, every=0.02)
    runs = [watch.watching(f"resp_{n}") for n in range(50)]
    for run in runs:
        run.__enter__()
    eventually(lambda: bus.reads >= 5)
    for run in runs:
        run.__exit__(None, None, None)
    # Each run asking on its own would have made 50 reads per poll.
    assert bus.reads < 50


def test_a_failed_poll_reaches_the_runs_until_one_succeeds() -> None:
    bus = CountingBus()
    watch = CancelWatch(bus, every=0.02)
    with watch.watching("resp_a"):
        bus.away = True
        eventually(lambda: watch.error is not None)
        with pytest.raises(redis.ConnectionError):
            watch.requested("resp_a")
        bus.away = False
        eventually(lambda: watch.error is None)
        assert not watch.requested("resp_a")
