"""A stopping worker's grace period (``worker.drain``): a job still running when it is over
goes back to the queue untouched if it has sent no output, and ends ``failed`` with what it
streamed otherwise."""

from __future__ import annotations

import threading
import time

import fakeredis

from shared.bus import EventBus
from shared.lifecycle import close_log
from shared.store import Store
from tests.worker.test_execute import events, script, submit
from worker.deps import RunDeps
from worker.drain import Drain
from worker.execute import execute
from worker.providers.base import Provider
from worker.providers.builtin import BuiltinModel


def slow(_model: str) -> Provider:
    return BuiltinModel()  # real sleeps: the drain check runs while it waits


def test_a_drain_begins_once_and_expires_at_its_deadline() -> None:
    drain = Drain()
    assert not drain.draining and not drain.expired(now=1e9)
    drain.begin(5, now=100.0)
    drain.begin(1, now=200.0)  # a second signal keeps the first deadline
    assert drain.draining
    assert not drain.expired(now=104.9)
    assert drain.expired(now=105.0)


def test_a_job_with_no_output_yet_is_handed_back_untouched(store: Store, bus: EventBus) -> None:
    rid = submit(store, script(text="late", wait_ms=5000), background=True)
    drain = Drain()
    threading.Timer(0.3, lambda: drain.begin(0)).start()
    started = time.monotonic()
    handed_back = execute(rid, RunDeps(store=store, bus=bus, provider_for=slow, drain=drain))
    assert handed_back is True
    assert time.monotonic() - started < 2  # not the 5 s the model would have taken
    row = store.get_response(response_id=rid)
    assert row is not None
    assert (row.status, row.started_at, row.attempts) == ("queued", None, 0)
    assert [e.type for e in events(bus, rid)] == [
        "response.created",
        "response.queued",
        "response.in_progress",
    ]
    assert not bus.beating([rid])
    # The next worker runs it from the start, continuing the log's numbering.
    assert execute(rid, RunDeps(store=store, bus=bus, provider_for=slow)) is False
    log = events(bus, rid)
    assert [e.sequence_number for e in log] == list(range(len(log)))
    assert log[-1].type == "response.completed"
    assert log[-1].json()["response"]["output"][0]["content"][0]["text"] == "late"
    row = store.get_response(response_id=rid)
    assert row is not None and row.attempts == 1


def test_a_job_whose_output_went_out_fails_and_keeps_it(store: Store, bus: EventBus) -> None:
    rid = submit(store, script(words=200, delay_ms=20), background=True)
    drain = Drain()
    threading.Timer(0.5, lambda: drain.begin(0)).start()
    assert execute(rid, RunDeps(store=store, bus=bus, provider_for=slow, drain=drain)) is False
    row = store.get_response(response_id=rid)
    assert row is not None and row.status == "failed"
    assert row.error is not None and row.error["code"] == "server_error"
    assert "shut down after output had started" in row.error["message"]
    final = events(bus, rid)[-1].json()["response"]
    text = final["output"][0]["content"][0]["text"]
    assert text.startswith("alpha bravo") and 0 < len(text.split()) < 200
    assert final["output"][0]["status"] == "incomplete"


def test_a_cancel_wins_over_the_drain(store: Store, bus: EventBus) -> None:
    rid = submit(store, script(text="late", wait_ms=5000), background=True)
    drain = Drain()
    drain.begin(0)
    bus.request_cancel(rid)
    assert execute(rid, RunDeps(store=store, bus=bus, provider_for=slow, drain=drain)) is False
    row = store.get_response(response_id=rid)
    assert row is not None and row.status == "cancelled"


def test_redis_going_away_before_any_output_hands_the_job_back(store: Store) -> None:
    server = fakeredis.FakeServer()
    bus = EventBus(fakeredis.FakeRedis(server=server), ttl_seconds=60)
    rid = submit(store, script(text="late", wait_ms=600), background=True)

    def redis_stops() -> None:
        server.connected = False  # every command now raises redis.ConnectionError

    threading.Timer(0.3, redis_stops).start()
    handed_back = execute(rid, RunDeps(store=store, bus=bus, provider_for=slow))
    assert handed_back is True
    row = store.get_response(response_id=rid)
    assert row is not None
    assert (row.status, row.started_at, row.attempts, row.error) == ("queued", None, 0, None)
    server.connected = True  # Redis is back (its file held the opening events)
    assert [e.type for e in events(bus, rid)] == [
        "response.created",
        "response.queued",
        "response.in_progress",
    ]
    assert execute(rid, RunDeps(store=store, bus=bus, provider_for=slow)) is False
    log = events(bus, rid)
    assert [e.sequence_number for e in log] == list(range(len(log)))
    assert log[-1].type == "response.completed"
    assert log[-1].json()["response"]["output"][0]["content"][0]["text"] == "late"


def test_redis_going_away_after_output_went_out_fails_the_job(store: Store) -> None:
    server = fakeredis.FakeServer()
    bus = EventBus(fakeredis.FakeRedis(server=server), ttl_seconds=60)
    rid = submit(store, script(words=200, delay_ms=10), background=True)

    def redis_blinks() -> None:
        server.connected = False
        time.sleep(0.3)
        server.connected = True

    threading.Timer(0.4, redis_blinks).start()
    assert execute(rid, RunDeps(store=store, bus=bus, provider_for=slow)) is False
    # The store recorded the end, with what had been produced, although Redis was away.
    row = store.get_response(response_id=rid)
    assert row is not None and row.status == "failed"
    assert row.error == {
        "code": "server_error",
        "message": "resq worker error while running the response",
    }
    text = store.render(row)["output"][0]["content"][0]["text"]
    assert text.startswith("alpha bravo") and 0 < len(text.split()) < 200
    time.sleep(0.4)  # Redis is back: the reaper ends the log from the store
    assert close_log(store, bus, row) is True
    log = events(bus, rid)
    assert [e.type for e in log][-2:] == ["error", "response.failed"]
    assert [e.sequence_number for e in log] == list(range(len(log)))


def test_a_log_holding_an_earlier_attempts_output_is_not_run_again(
    store: Store, bus: EventBus
) -> None:
    rid = submit(store, script(text="again"), background=True)
    bus.publish(
        rid,
        [
            {"type": "response.created", "sequence_number": 0},
            {"type": "response.output_text.delta", "sequence_number": 1, "delta": "half"},
        ],
    )
    assert execute(rid, RunDeps(store=store, bus=bus, provider_for=slow)) is False
    row = store.get_response(response_id=rid)
    assert row is not None and row.status == "failed"
    assert row.error is not None and row.error["message"] == (
        "The worker running this response stopped after output had started streaming, "
        "so it was not re-run."
    )
    log = events(bus, rid)
    assert [e.type for e in log][-2:] == ["error", "response.failed"]
    assert [e.sequence_number for e in log] == list(range(len(log)))
