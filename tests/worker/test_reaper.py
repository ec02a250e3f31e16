"""The reaper and per-job bounds: lost jobs are re-queued or failed, never left running."""

from __future__ import annotations

import threading
import time

from shared.bus import Emitter, EventBus
from shared.schema.events import Event, OutputItemEvent, ResponseEvent
from shared.schema.response import Status
from shared.store import Store
from shared.store.tables import OUTPUT
from tests.worker.test_execute import events, instant, script, submit
from worker.execute import Limits, execute
from worker.providers.builtin import BuiltinModel
from worker.reaper import Reaped, reap

LONG_AGO = 1_000


def lose(store: Store, bus: EventBus, rid: str, *, output: bool = False) -> None:
    """A worker claimed the job, sent some events, and died (no heartbeat left)."""
    row = store.claim(response_id=rid, now=LONG_AGO)
    assert row is not None
    snap = store.render(row, output=[])
    emitted: list[Event] = [
        ResponseEvent(type="response.created", response=snap),
        ResponseEvent(type="response.in_progress", response=snap),
    ]
    if output:
        emitted.append(
            OutputItemEvent(
                type="response.output_item.added",
                output_index=0,
                item={
                    "id": "msg_1",
                    "type": "message",
                    "role": "assistant",
                    "status": "in_progress",
                    "content": [],
                },
            )
        )
    Emitter(bus, rid).emit(*emitted)


def run_reaper(store: Store, bus: EventBus, sent: list[str], max_attempts: int = 3) -> Reaped:
    return reap(
        store=store, bus=bus, enqueue=sent.append, heartbeat_timeout=30, max_attempts=max_attempts
    )


def test_lost_job_without_output_is_requeued_and_rerun(store: Store, bus: EventBus) -> None:
    rid = submit(store, script(text="again"))
    lose(store, bus, rid)
    sent: list[str] = []
    assert run_reaper(store, bus, sent).requeued == [rid]
    assert sent == [rid]
    row = store.get_response(response_id=rid)
    assert row is not None and row.status == "queued" and row.started_at is None
    execute(rid, store=store, bus=bus, provider_for=instant)
    log = events(bus, rid)
    assert [e.sequence_number for e in log] == list(range(len(log)))
    assert [e.type for e in log].count("response.created") == 1
    assert log[-1].type == "response.completed"
    assert log[-1].json()["response"]["output"][0]["content"][0]["text"] == "again"
    row = store.get_response(response_id=rid)
    assert row is not None and row.status == "completed" and row.attempts == 2


def test_job_with_a_heartbeat_is_left_alone(store: Store, bus: EventBus) -> None:
    rid = submit(store, "hi")
    lose(store, bus, rid)
    bus.beat(rid, ttl_seconds=30)
    sent: list[str] = []
    reaped = run_reaper(store, bus, sent)
    assert reaped.requeued == reaped.failed == [] and sent == []
    row = store.get_response(response_id=rid)
    assert row is not None and row.status == "in_progress"


def test_lost_job_after_output_started_fails_cleanly(store: Store, bus: EventBus) -> None:
    rid = submit(store, "hi")
    lose(store, bus, rid, output=True)
    sent: list[str] = []
    assert run_reaper(store, bus, sent).failed == [rid] and sent == []
    row = store.get_response(response_id=rid)
    assert row is not None and row.status == "failed"
    assert row.error is not None and "after output had started" in row.error["message"]
    log = events(bus, rid)
    assert [e.type for e in log] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "error",
        "response.failed",
    ]
    assert [e.sequence_number for e in log] == list(range(5))
    # a second reaper pass changes nothing
    assert run_reaper(store, bus, sent).failed == []


def test_lost_job_out_of_attempts_fails(store: Store, bus: EventBus) -> None:
    rid = submit(store, "hi")
    lose(store, bus, rid)
    sent: list[str] = []
    assert run_reaper(store, bus, sent, max_attempts=1).failed == [rid]
    row = store.get_response(response_id=rid)
    assert row is not None and row.status == "failed"
    assert row.error == {
        "code": "server_error",
        "message": "The worker running this response stopped on each of its 1 attempts.",
    }


def test_time_limit_stops_an_over_running_job(store: Store, bus: EventBus) -> None:
    rid = submit(store, script(words=200, delay_ms=10))
    started = time.monotonic()
    execute(
        rid,
        store=store,
        bus=bus,
        provider_for=lambda _m: BuiltinModel(),
        limits=Limits(time_limit_seconds=0.3),
    )
    assert time.monotonic() - started < 1.5
    row = store.get_response(response_id=rid)
    assert row is not None and row.status == "failed"
    assert row.error is not None and "job time limit of 0.3 s" in row.error["message"]
    assert store.items(response_id=rid, kind=OUTPUT)[0]["status"] == "incomplete"


def test_heartbeat_is_kept_while_running_and_cleared_after(store: Store, bus: EventBus) -> None:
    rid = submit(store, script(words=30, delay_ms=20))
    seen: list[set[str]] = []

    def watch() -> None:
        time.sleep(0.3)
        seen.append(bus.beating([rid]))

    watcher = threading.Thread(target=watch)
    watcher.start()
    execute(
        rid,
        store=store,
        bus=bus,
        provider_for=lambda _m: BuiltinModel(),
        limits=Limits(heartbeat_seconds=0.1, heartbeat_timeout_seconds=0.25),
    )
    watcher.join()
    assert seen == [{rid}]
    assert bus.beating([rid]) == set()


def test_stuck_queued_job_is_resent_when_the_queue_is_empty(store: Store, bus: EventBus) -> None:
    rid = submit(store, "hi", background=True)  # created_at=1: long ago; its message is gone
    sent: list[str] = []

    def reap_with(depth: int) -> Reaped:
        return reap(
            store=store,
            bus=bus,
            enqueue=sent.append,
            heartbeat_timeout=30,
            max_attempts=3,
            queue_depth=lambda: depth,
            queued_resend_after=60,
        )

    assert reap_with(5).resent == [] and sent == []  # a backlog explains the wait
    assert reap_with(0).resent == [rid] and sent == [rid]
    assert reap_with(0).resent == [] and sent == [rid]  # at most once per interval
    execute(rid, store=store, bus=bus, provider_for=instant)
    execute(rid, store=store, bus=bus, provider_for=instant)  # the duplicate message: a no-op
    assert [e.type for e in events(bus, rid)].count("response.created") == 1


def test_ended_job_whose_worker_died_before_its_terminal_event(store: Store, bus: EventBus) -> None:
    rid = submit(store, "hi")
    lose(store, bus, rid)
    store.finish(response_id=rid, status=Status.COMPLETED, now=LONG_AGO + 5, output=[])
    sent: list[str] = []
    reaped = reap(
        store=store,
        bus=bus,
        enqueue=sent.append,
        heartbeat_timeout=30,
        max_attempts=3,
        now=LONG_AGO + 100,
    )
    assert reaped.closed == [rid]
    log = events(bus, rid)
    assert [e.type for e in log] == [
        "response.created",
        "response.in_progress",
        "response.completed",
    ]
    row = store.get_response(response_id=rid)
    assert row is not None and log[-1].json()["response"] == store.render(row)


def test_cancelled_while_its_worker_died_ends_its_log(store: Store, bus: EventBus) -> None:
    rid = submit(store, "hi", background=True)
    lose(store, bus, rid, output=True)
    assert store.cancel(response_id=rid, now=LONG_AGO + 1) == "in_progress"
    reaped = reap(
        store=store,
        bus=bus,
        enqueue=[].append,
        heartbeat_timeout=30,
        max_attempts=3,
        now=LONG_AGO + 100,
    )
    assert reaped.closed == [rid] and reaped.failed == []
    log = events(bus, rid)
    assert log[-1].type == "response.incomplete"
    assert log[-1].json()["response"]["status"] == "cancelled"
    assert [e.sequence_number for e in log] == list(range(len(log)))
