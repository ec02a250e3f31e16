"""``execute``: claim, events with gap-free sequence numbers, persisted outcome.

Stand-ins only at the boundaries: fakeredis for the event bus, a SQLite file for the store,
the real built-in model as the provider.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from typing import Any

from shared.bus import EventBus, StoredEvent
from shared.schema.items import ensure_id, normalize_input
from shared.schema.requests import parse_create_request
from shared.schema.response import Status, echo_params
from shared.store import Store
from shared.store.tables import OUTPUT, ResponseRow
from worker.deps import RunDeps
from worker.execute import execute
from worker.providers.base import Provider, TextDelta
from worker.providers.builtin import BuiltinModel


def submit(store: Store, message: str, **body: Any) -> str:
    req = parse_create_request({"model": "resq-builtin", "input": message, **body})
    row = ResponseRow(
        id=f"resp_test{time.monotonic_ns()}",
        tenant="t",
        model="resq-builtin",
        status=(Status.QUEUED if req.background else Status.IN_PROGRESS).value,
        background=bool(req.background),
        store=True,
        stream=False,
        created_at=1,
        params=echo_params(req, model="resq-builtin"),
    )
    store.create_response(row=row, input_items=[ensure_id(i) for i in normalize_input(req.input)])
    return row.id


def events(bus: EventBus, response_id: str) -> list[StoredEvent]:
    return bus.read(response_id, after=-1, count=10_000)


def instant(_model: str) -> Provider:
    return BuiltinModel(sleep=lambda _s: None)


def script(**kwargs: Any) -> str:
    return "#resq " + json.dumps(kwargs)


def test_sync_run_events_and_outcome(store: Store, bus: EventBus) -> None:
    rid = submit(store, script(text="one two"))
    execute(rid, RunDeps(store=store, bus=bus, provider_for=instant))
    log = events(bus, rid)
    assert [e.sequence_number for e in log] == list(range(len(log)))
    assert [e.type for e in log] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
        "response.output_text.delta",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert log[0].json()["response"]["status"] == "in_progress"
    final = log[-1].json()["response"]
    row = store.get_response(response_id=rid)
    assert row is not None and row.status == "completed"
    assert final == store.render(row)
    assert final["output"][0]["content"][0]["text"] == "one two"
    assert final["usage"]["output_tokens"] == 2


def test_background_run_starts_with_queued_events(store: Store, bus: EventBus) -> None:
    rid = submit(store, "hi", background=True)
    execute(rid, RunDeps(store=store, bus=bus, provider_for=instant))
    log = events(bus, rid)
    assert [e.type for e in log[:3]] == [
        "response.created",
        "response.queued",
        "response.in_progress",
    ]
    assert [e.json()["response"]["status"] for e in log[:3]] == ["queued", "queued", "in_progress"]


def test_second_delivery_does_nothing(store: Store, bus: EventBus) -> None:
    rid = submit(store, "hi")
    execute(rid, RunDeps(store=store, bus=bus, provider_for=instant))
    count = len(events(bus, rid))
    execute(rid, RunDeps(store=store, bus=bus, provider_for=instant))
    assert len(events(bus, rid)) == count


def test_cancelled_while_queued_never_calls_the_provider(store: Store, bus: EventBus) -> None:
    rid = submit(store, "hi", background=True)
    assert store.cancel(response_id=rid, now=2) == "queued"
    called: list[str] = []

    def provider_for(model: str) -> Provider:
        called.append(model)
        return instant(model)

    execute(rid, RunDeps(store=store, bus=bus, provider_for=provider_for))
    assert called == [] and events(bus, rid) == []
    row = store.get_response(response_id=rid)
    assert row is not None and row.status == "cancelled"


def test_cancel_while_running_keeps_partial_output(store: Store, bus: EventBus) -> None:
    rid = submit(store, script(words=200, delay_ms=5), background=True)

    def cancel_soon() -> None:
        time.sleep(0.2)
        store.cancel(response_id=rid, now=3)
        bus.request_cancel(rid)

    threading.Thread(target=cancel_soon).start()
    execute(rid, RunDeps(store=store, bus=bus, provider_for=lambda _m: BuiltinModel()))
    row = store.get_response(response_id=rid)
    assert row is not None and row.status == "cancelled"
    output = store.items(response_id=rid, kind=OUTPUT)
    words = output[0]["content"][0]["text"].split()
    assert 0 < len(words) < 200
    assert output[0]["status"] == "incomplete"
    log = events(bus, rid)
    assert log[-1].type == "response.incomplete"
    assert log[-1].json()["response"]["status"] == "cancelled"
    assert [e.sequence_number for e in log] == list(range(len(log)))


def test_provider_failure_is_a_failed_response(store: Store, bus: EventBus) -> None:
    rid = submit(store, script(text="a b c", error={"message": "boom", "after_tokens": 1}))
    execute(rid, RunDeps(store=store, bus=bus, provider_for=instant))
    row = store.get_response(response_id=rid)
    assert row is not None and row.status == "failed"
    assert row.error == {"code": "server_error", "message": "boom"}
    log = events(bus, rid)
    assert [e.type for e in log[-2:]] == ["error", "response.failed"]
    assert log[-2].json() == {
        "type": "error",
        "sequence_number": log[-2].sequence_number,
        "code": "server_error",
        "message": "boom",
        "param": None,
    }
    assert log[-1].json()["response"]["output"][0]["status"] == "incomplete"


def test_unroutable_model_fails_cleanly(store: Store, bus: EventBus) -> None:
    from shared.routing import Router

    def provider_for(model: str) -> Provider:
        Router([]).resolve(model)  # the route was removed since the response was queued
        return instant(model)

    rid = submit(store, "hi")
    execute(rid, RunDeps(store=store, bus=bus, provider_for=provider_for))
    row = store.get_response(response_id=rid)
    assert row is not None and row.status == "failed"
    assert row.error is not None and "resq-builtin" in row.error["message"]


def test_unexpected_provider_exception_fails_cleanly(store: Store, bus: EventBus) -> None:
    class Broken:
        def stream(self, request: Any) -> Iterator[Any]:
            raise RuntimeError("bug")
            yield

    rid = submit(store, "hi")
    execute(rid, RunDeps(store=store, bus=bus, provider_for=lambda _m: Broken()))
    row = store.get_response(response_id=rid)
    assert row is not None and row.status == "failed"
    assert row.error == {
        "code": "server_error",
        "message": "resq worker error while running the response",
    }


class _Paced:
    """A provider that bursts some tokens, goes quiet, then sends one more."""

    def __init__(self, burst: int, pause: float) -> None:
        self.burst, self.pause = burst, pause
        self.paused = threading.Event()

    def stream(self, request: Any) -> Iterator[Any]:
        for n in range(self.burst):
            yield TextDelta(f"w{n} ")
        self.paused.set()
        time.sleep(self.pause)
        yield TextDelta("last")


class _CountingBus(EventBus):
    def __init__(self, inner: EventBus) -> None:
        super().__init__(inner.redis, ttl_seconds=inner.ttl_seconds)
        self.publishes = 0

    def publish(self, response_id: str, events: list[dict[str, Any]]) -> None:
        self.publishes += 1
        super().publish(response_id, events)


def test_a_burst_goes_out_in_few_publishes_and_nothing_waits_for_a_quiet_upstream(
    store: Store, bus: EventBus
) -> None:
    counting = _CountingBus(bus)
    provider = _Paced(burst=200, pause=1.0)
    rid = submit(store, "hi")
    runner = threading.Thread(
        target=execute,
        args=(rid, RunDeps(store=store, bus=counting, provider_for=lambda _m: provider)),
    )
    runner.start()
    assert provider.paused.wait(10)
    time.sleep(0.3)  # the upstream is quiet: everything it sent must be out already
    seen = [e for e in events(bus, rid) if e.type == "response.output_text.delta"]
    assert "".join(e.json()["delta"] for e in seen) == "".join(f"w{n} " for n in range(200))
    runner.join(10)
    assert counting.publishes < 50  # 200 deltas, far fewer round trips
    logged = events(bus, rid)
    assert [e.sequence_number for e in logged] == list(range(len(logged)))
    row = store.get_response(response_id=rid)
    assert row is not None and row.status == "completed"
    assert store.render(row)["output"][0]["content"][0]["text"].endswith("w199 last")
