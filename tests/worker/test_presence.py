"""A worker node's own heartbeat (``worker.presence``) and the container check that reads it
(``worker.healthcheck``)."""

from __future__ import annotations

import time

import fakeredis
import pytest

from shared import keys
from shared.presence import fresh_workers
from worker import healthcheck
from worker.presence import Presence


def test_beats_only_while_the_consumer_runs() -> None:
    fake = fakeredis.FakeRedis()
    consuming = [False]
    presence = Presence(fake, "resq@host-a", consuming=lambda: consuming[0])
    assert presence.beat() is False
    assert fresh_workers(fake) == []
    consuming[0] = True
    assert presence.beat() is True
    assert fresh_workers(fake) == ["resq@host-a"]
    later = time.time() + keys.WORKER_FRESH_SECONDS + 1
    assert fresh_workers(fake, now=later) == []  # it stopped beating: stale


def test_the_thread_beats_and_takes_the_node_out_when_stopped() -> None:
    fake = fakeredis.FakeRedis()
    presence = Presence(fake, "resq@host-a", consuming=lambda: True, every=0.05).start()
    deadline = time.monotonic() + 5
    while not fresh_workers(fake):
        assert time.monotonic() < deadline
        time.sleep(0.01)
    presence.stop()
    while fresh_workers(fake):
        assert time.monotonic() < deadline, "the node was not taken out"
        time.sleep(0.01)


@pytest.mark.parametrize(
    ("name", "host", "healthy"),
    [
        (None, "host-a", True),
        (None, "host-b", False),
        ("resq@host-a", "host-b", True),
        ("celery@host-a", "host-a", False),
    ],
)
def test_the_container_check(name: str | None, host: str, healthy: bool) -> None:
    fake = fakeredis.FakeRedis()
    Presence(fake, "resq@host-a", consuming=lambda: True).beat()
    problem = healthcheck.check(fake, name=name, host=host, now=time.time())
    assert (problem is None) is healthy
    stale = healthcheck.check(fake, name=name, host=host, now=time.time() + 60)
    assert stale is not None
