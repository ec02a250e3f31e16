"""The queues' state in Redis: pausing has one owner (``shared.queue``), and what it writes is
what workers, ``/metrics`` and the admin API read."""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Any

import fakeredis

from shared import keys, queue
from shared.metrics import queue_history


class Control:
    """Celery's broadcast, as far as pausing uses it: records what was sent."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, str]] = []

    def cancel_consumer(self, name: str, **_options: Any) -> None:
        self.sent.append(("cancel_consumer", name))

    def add_consumer(self, name: str, **_options: Any) -> None:
        self.sent.append(("add_consumer", name))


def test_pause_and_resume_set_the_flag_every_reader_sees_and_broadcast() -> None:
    client = fakeredis.FakeRedis()
    control = Control()
    app: Any = SimpleNamespace(control=control)
    client.rpush(keys.LOW_QUEUE, b"m1", b"m2")
    queue.pause(app, client, keys.LOW_QUEUE, timeout=1.0)
    assert queue.is_paused(client, keys.LOW_QUEUE) and not queue.is_paused(client, keys.QUEUE)
    assert queue.paused_queues(client) == {q: q == keys.LOW_QUEUE for q in keys.ALL_QUEUES}
    assert queue.queue_states(client) == [
        {"name": q, "depth": 2 if q == keys.LOW_QUEUE else 0, "paused": q == keys.LOW_QUEUE}
        for q in keys.ALL_QUEUES
    ]
    queue.resume(app, client, keys.LOW_QUEUE, timeout=1.0)
    assert not any(queue.paused_queues(client).values())
    assert control.sent == [("cancel_consumer", keys.LOW_QUEUE), ("add_consumer", keys.LOW_QUEUE)]


def test_history_is_oldest_first_with_the_rate_between_samples() -> None:
    client = fakeredis.FakeRedis()
    for at, finished in ((100.0, 0), (110.0, 20), (120.0, 20), (125.0, 30)):
        sample = {"at": at, "depth": 1, "in_progress": 2, "finished_total": finished}
        client.lpush(keys.HISTORY, json.dumps(sample))
    data = queue_history(client, since=110.0)
    assert data == [
        {"at": 110.0, "depth": 1, "in_progress": 2, "finished_per_second": 2.0},
        {"at": 120.0, "depth": 1, "in_progress": 2, "finished_per_second": 0.0},
        {"at": 125.0, "depth": 1, "in_progress": 2, "finished_per_second": 2.0},
    ]
