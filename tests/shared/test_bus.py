"""The event bus's stored form: what the API reads back is what the worker published."""

from __future__ import annotations

import json
import threading
import time

import fakeredis
import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from ops.embedded_redis import free_port
from shared import keys
from shared.bus import Emitter, EventBus, GroupCommit, _Waiting
from shared.metrics import Recorder
from shared.schema.events import OutputTextDelta, ResponseEvent


def test_a_terminal_events_response_is_cut_out_exactly() -> None:
    bus = EventBus(fakeredis.FakeRedis(), ttl_seconds=60)
    # a value that looks like the member being cut must not confuse the cut
    response = {"id": "resp_1", "status": "completed", "note": 'x "response": y'}
    Emitter(bus, "resp_1").emit(
        OutputTextDelta(item_id="m", output_index=0, content_index=0, delta='"response":'),
        ResponseEvent(type="response.completed", response=response),
    )
    delta, final = bus.read("resp_1", after=-1)
    assert final.terminal and not delta.terminal
    assert json.loads(final.response_json()) == response
    assert final.json()["response"] == response


def test_the_cut_does_not_depend_on_where_the_response_member_is() -> None:
    """The span the publisher records, not the member's place, decides the cut; an entry
    from before spans were recorded is parsed, giving the same text."""
    client = fakeredis.FakeRedis()
    bus = EventBus(client, ttl_seconds=60)
    response = {"id": "resp_1", "status": "completed", "note": '"response":{}'}
    event = {"response": response, "type": "response.completed", "sequence_number": 0, "x": 1}
    bus.publish("resp_1", [event])
    (stored,) = bus.read("resp_1")
    assert stored.data == json.dumps(event, separators=(",", ":"))
    assert stored.response_json() == json.dumps(response, separators=(",", ":"))
    client.xadd(keys.events("resp_2"), {"t": stored.type, "d": stored.data}, id="0-1")
    (unspanned,) = bus.read("resp_2")
    assert unspanned.response_span is None
    assert unspanned.response_json() == stored.response_json()


class HeldPipelines:
    """A client whose first pipeline waits at ``execute`` until released, so other publishes
    queue behind it; counts the pipelines sent."""

    def __init__(self, client: redis.Redis) -> None:
        self.client = client
        self.sent = 0
        self.entered = threading.Event()
        self.release = threading.Event()

    def pipeline(self, transaction: bool = False) -> object:
        pipe = self.client.pipeline(transaction=transaction)
        execute = pipe.execute
        first = self.sent == 0
        self.sent += 1

        def held(raise_on_error: bool = True) -> list[object]:
            if first:
                self.entered.set()
                self.release.wait(5)
            return execute(raise_on_error=raise_on_error)

        pipe.execute = held  # type: ignore[method-assign]
        return pipe


def delta(n: int) -> dict[str, object]:
    return {"type": "response.output_text.delta", "sequence_number": n, "delta": f"w{n}"}


def test_publishes_that_come_while_one_is_in_flight_go_out_in_one_pipeline() -> None:
    held = HeldPipelines(fakeredis.FakeRedis())
    group = GroupCommit(held)  # type: ignore[arg-type]
    bus = EventBus(held.client, ttl_seconds=60)
    bus.group = group
    errors: list[BaseException] = []

    def publish(response_id: str, numbers: range) -> None:
        try:
            bus.publish(response_id, [delta(n) for n in numbers])
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    first = threading.Thread(target=publish, args=("resp_0", range(0, 1)))
    first.start()
    assert held.entered.wait(5)
    queued = [threading.Thread(target=publish, args=(f"resp_{n}", range(0, 3))) for n in (1, 2)]
    queued.append(threading.Thread(target=publish, args=("resp_0", range(1, 3))))
    for thread in queued:
        thread.start()
    deadline = time.monotonic() + 5
    while len(group.queue) < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    held.release.set()
    for thread in (first, *queued):
        thread.join(5)
    assert errors == []
    assert held.sent == 2  # the first publish's pipeline, then the three queued ones together
    for response_id in ("resp_0", "resp_1", "resp_2"):
        assert [e.sequence_number for e in bus.read(response_id)] == [0, 1, 2]
    assert not group.busy and group.queue == []


def test_a_publish_that_fails_in_a_shared_pipeline_fails_alone() -> None:
    bus = EventBus(fakeredis.FakeRedis(), ttl_seconds=60)
    bus.publish("resp_a", [delta(0), delta(1)])
    entry = {"t": "x", "d": "{}"}
    twice = _Waiting([("xadd", (keys.events("resp_a"), entry), {"id": "0-2"})])
    fine = _Waiting([("xadd", (keys.events("resp_b"), entry), {"id": "0-1"})])
    bus.group._send([twice, fine])
    assert isinstance(twice.error, redis.ResponseError)  # sequence number 1 was taken
    assert fine.error is None
    assert [e.sequence_number for e in bus.read("resp_b")] == [0]


def test_an_unreachable_redis_fails_every_publish_and_the_next_one_can_lead() -> None:
    client = redis.Redis(port=free_port(), retry=Retry(NoBackoff(), 0))
    bus = EventBus(client, ttl_seconds=60)
    for _ in range(2):
        with pytest.raises(redis.ConnectionError):
            bus.publish("resp_a", [delta(0)])
        assert not bus.group.busy and bus.group.queue == []


def test_metrics_sent_through_the_group_commit_add_up_the_same() -> None:
    alone, grouped = fakeredis.FakeRedis(), fakeredis.FakeRedis()
    timings = {"queue_wait": 0.25, "run": 1.5, "first_token": 0.1}
    usage = {"input_tokens": 7, "output_tokens": 50}
    Recorder(alone).finished(model="m", status="completed", timings=timings, usage=usage)
    bus = EventBus(grouped, ttl_seconds=60)
    Recorder(grouped, bus.group).finished(
        model="m", status="completed", timings=timings, usage=usage
    )
    assert grouped.hgetall(keys.METRICS) == alone.hgetall(keys.METRICS)
    assert len(alone.hgetall(keys.METRICS)) > 5
    bus.beat("resp_a", ttl_seconds=5)
    assert grouped.get(keys.heartbeat("resp_a"))
    bus.stop_beat("resp_a")
    assert grouped.get(keys.heartbeat("resp_a")) is None
