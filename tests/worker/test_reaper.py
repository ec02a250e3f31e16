"""The reaper and per-job bounds: lost jobs are re-queued or failed, never left running."""

from __future__ import annotations

import copy
import itertools
import json
import threading
import time
from collections.abc import Callable
from typing import Any

from openai.types.responses import ResponseOutputItem
from pydantic import TypeAdapter

from shared.bus import Emitter, EventBus
from shared.schema.events import Event, OutputItemEvent, ResponseEvent, StreamEvent
from shared.schema.response import Status
from shared.store import Store
from shared.store.tables import OUTPUT
from tests.compat import assert_wire_response
from tests.worker.test_execute import events, instant, script, submit
from worker.deps import Limits, RunDeps
from worker.execute import execute
from worker.providers.base import Delta, ReasoningDelta, RefusalDelta, TextDelta, ToolCallDelta
from worker.providers.builtin import BuiltinModel
from worker.reaper import Reaped, reap
from worker.replay import merge_saved, replay
from worker.stream_items import McpTarget
from worker.stream_state import StreamState

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
    execute(rid, RunDeps(store=store, bus=bus, provider_for=instant))
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
        RunDeps(
            store=store,
            bus=bus,
            provider_for=lambda _m: BuiltinModel(),
            limits=Limits(time_limit_seconds=0.3),
        ),
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
        RunDeps(
            store=store,
            bus=bus,
            provider_for=lambda _m: BuiltinModel(),
            limits=Limits(heartbeat_seconds=0.1, heartbeat_timeout_seconds=0.25),
        ),
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
    execute(rid, RunDeps(store=store, bus=bus, provider_for=instant))
    # the duplicate message: a no-op
    execute(rid, RunDeps(store=store, bus=bus, provider_for=instant))
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


# ---- a lost job keeps what it streamed (worker.replay) -----------------------------------

Step = Callable[[StreamState], list[StreamEvent]]


def ids_in_order() -> Callable[[str], str]:
    numbers = itertools.count(1)
    return lambda prefix: f"{prefix}_{next(numbers)}"


def deltas(*items: Delta) -> list[Step]:
    return [lambda state, d=d: state.apply(d) for d in items]  # type: ignore[misc]


def lose_mid_run(store: Store, bus: EventBus, rid: str, steps: list[Step]) -> StreamState:
    """A worker claimed the job, streamed these steps (saving each item it finished, as
    ``Publisher.flush`` does) and died. Returns its stream state at that moment."""
    row = store.claim(response_id=rid, now=LONG_AGO)
    assert row is not None
    snap = store.render(row, output=[])
    emitter = Emitter(bus, rid)
    emitter.emit(
        ResponseEvent(type="response.created", response=snap),
        ResponseEvent(type="response.in_progress", response=snap),
    )
    state = StreamState(new_id=ids_in_order())
    for step in steps:
        events = step(state)
        emitter.emit(*events)
        for event in events:
            if isinstance(event, OutputItemEvent) and event.type == "response.output_item.done":
                store.save_output_item(
                    response_id=rid, position=event.output_index, item=event.item
                )
    return state


def cancelled(state: StreamState) -> list[dict[str, Any]]:
    """The output a cancel at this point would have left (``worker.execute``)."""
    state = copy.deepcopy(state)
    state.close("incomplete")
    return state.output


def reap_failed(store: Store, bus: EventBus, rid: str) -> tuple[list[dict[str, Any]], Any]:
    """Reap the lost job; its stored output and the Response its ``response.failed`` carries,
    after checking the log is gap-free and parses for the SDK."""
    assert run_reaper(store, bus, []).failed == [rid]
    row = store.get_response(response_id=rid)
    assert row is not None and row.status == "failed"
    assert row.error == {
        "code": "server_error",
        "message": "The worker running this response stopped after output had started "
        "streaming, so it was not re-run.",
    }
    log = events(bus, rid)
    assert [e.sequence_number for e in log] == list(range(len(log)))
    assert [e.type for e in log][-2:] == ["error", "response.failed"]
    final = log[-1].json()["response"]
    output = store.items(response_id=rid, kind=OUTPUT)
    assert final["output"] == output and final == store.render(row)
    return output, assert_wire_response(final)


def test_lost_mid_message_keeps_its_text(store: Store, bus: EventBus) -> None:
    rid = submit(store, "hi")
    state = lose_mid_run(store, bus, rid, deltas(TextDelta("Hello "), TextDelta("there")))
    assert store.items(response_id=rid, kind=OUTPUT) == []  # nothing had finished
    output, parsed = reap_failed(store, bus, rid)
    assert output == [
        {
            "id": "msg_1",
            "type": "message",
            "status": "incomplete",
            "role": "assistant",
            "content": [
                {"type": "output_text", "text": "Hello there", "annotations": [], "logprobs": []}
            ],
        }
    ]
    assert output == cancelled(state)
    assert parsed.output_text == "Hello there"


def test_lost_after_one_item_keeps_it_and_the_half_streamed_next(
    store: Store, bus: EventBus
) -> None:
    rid = submit(store, "hi")
    state = lose_mid_run(
        store,
        bus,
        rid,
        deltas(
            ReasoningDelta("Thinking "),
            ReasoningDelta("first."),
            TextDelta("The answer "),
            TextDelta("is"),
        ),
    )
    saved = store.items(response_id=rid, kind=OUTPUT)
    assert [(i["type"], i["status"]) for i in saved] == [("reasoning", "completed")]
    output, parsed = reap_failed(store, bus, rid)
    assert output == cancelled(state)
    assert output[0] == saved[0]
    assert output[0]["summary"] == [{"type": "summary_text", "text": "Thinking first."}]
    assert [(i["type"], i["status"]) for i in output] == [
        ("reasoning", "completed"),
        ("message", "incomplete"),
    ]
    assert output[1]["content"][0]["text"] == "The answer is"
    assert parsed.output_text == "The answer is"


def test_lost_mid_function_call_keeps_its_arguments_so_far(store: Store, bus: EventBus) -> None:
    rid = submit(store, "hi")
    state = lose_mid_run(
        store,
        bus,
        rid,
        deltas(
            TextDelta("Let me look."),
            ToolCallDelta(index=0, call_id="call_9", name="get_weather"),
            ToolCallDelta(index=0, arguments='{"city": '),
            ToolCallDelta(index=0, arguments='"Par'),
        ),
    )
    output, parsed = reap_failed(store, bus, rid)
    assert output == cancelled(state)
    assert output[1] == {
        "id": "fc_2",
        "type": "function_call",
        "status": "incomplete",
        "call_id": "call_9",
        "name": "get_weather",
        "arguments": '{"city": "Par',
    }
    assert [(i.type, i.status) for i in parsed.output] == [
        ("message", "completed"),
        ("function_call", "incomplete"),
    ]


def test_lost_background_job_with_only_lifecycle_events_is_still_requeued(
    store: Store, bus: EventBus
) -> None:
    rid = submit(store, "hi", background=True)
    row = store.claim(response_id=rid, now=LONG_AGO)
    assert row is not None
    snap = store.render(row, output=[])
    Emitter(bus, rid).emit(
        *(
            ResponseEvent(type=t, response=snap)  # type: ignore[arg-type]
            for t in ("response.created", "response.queued", "response.in_progress")
        )
    )
    sent: list[str] = []
    reaped = run_reaper(store, bus, sent)
    assert reaped.requeued == sent == [rid] and reaped.failed == []
    assert [e.type for e in events(bus, rid)] == [
        "response.created",
        "response.queued",
        "response.in_progress",
    ]
    row = store.get_response(response_id=rid)
    assert row is not None and row.status == "queued"
    assert store.items(response_id=rid, kind=OUTPUT) == []


def mcp_run() -> list[Step]:
    """Every kind of output item, worker-added MCP items included, in one run."""
    return [
        lambda s: s.start_list_tools("docs")[1],
        lambda s: s.finish_list_tools(0, [{"name": "lookup", "input_schema": {}}], None),
        lambda s: s.start_mcp_call("docs", "lookup", '{"q": 1}', "mcpr_0")[1],
        lambda s: s.finish_mcp_call(1, output="found", error=None),
        *deltas(
            ReasoningDelta("Hmm, "),
            ReasoningDelta("let me see."),
            TextDelta("Partly "),
            TextDelta("yes"),
            RefusalDelta("but no "),
            RefusalDelta("more."),
            ToolCallDelta(index=0, call_id="call_1", name="get_weather"),
            ToolCallDelta(index=0, arguments='{"city":'),
            ToolCallDelta(index=0, arguments='"Oslo"}'),
            ToolCallDelta(index=1, name="lookup"),
            ToolCallDelta(index=1, arguments='{"q":'),
            ToolCallDelta(index=1, arguments=' "x"}'),
            ToolCallDelta(index=2, name="ask"),
            ToolCallDelta(index=2, arguments="{}"),
        ),
        lambda s: s.end_turn(),
    ]


def test_replay_at_every_point_of_a_run_gives_what_a_cancel_gives() -> None:
    steps = mcp_run()
    adapter: TypeAdapter[ResponseOutputItem] = TypeAdapter(ResponseOutputItem)
    for cut in range(len(steps) + 1):
        targets = {
            "lookup": McpTarget(server_label="docs", tool="lookup", approval=False),
            "ask": McpTarget(server_label="docs", tool="ask", approval=True),
        }
        state = StreamState(new_id=ids_in_order(), mcp=targets.get)
        streamed: list[dict[str, Any]] = []
        for step in steps[:cut]:
            wired = [e.wire(len(streamed) + i) for i, e in enumerate(step(state))]
            streamed += json.loads(json.dumps(wired))
        rebuilt, expected = replay(streamed), cancelled(state)
        # The one thing a log lacks: an approval request's arguments are not streamed, they
        # arrive with its output_item.done.
        approval_done = any(
            e["item"]["type"] == "mcp_approval_request"
            for e in streamed
            if "item" in e and e["type"] == "response.output_item.done"
        )
        for item in expected:
            if item["type"] == "mcp_approval_request" and not approval_done:
                item["arguments"] = ""
        assert rebuilt == expected, f"after step {cut}"
        for item in rebuilt:
            adapter.validate_python(item, strict=True)
    assert [i["type"] for i in rebuilt] == [
        "mcp_list_tools",
        "mcp_call",
        "reasoning",
        "message",
        "function_call",
        "mcp_call",
        "mcp_approval_request",
    ]
    # the turn ended; only the MCP call the worker had not yet run is left open
    assert [i.get("status") for i in rebuilt] == [
        None,
        "completed",
        "completed",
        "completed",
        "completed",
        "incomplete",
        None,
    ]
    assert [c.get("text", c.get("refusal")) for c in rebuilt[3]["content"]] == [
        "Partly yes",
        "but no more.",
    ]


def test_replay_a_cut_between_an_items_closing_events() -> None:
    state = StreamState(new_id=ids_in_order())
    opened = state.apply(TextDelta("Hi"))
    closing = state.close("completed")
    assert [e.type for e in closing] == [
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
    ]
    for cut in range(len(closing) - 1):  # the text, then its part, done; the item not
        rebuilt = replay(e.wire(i) for i, e in enumerate([*opened, *closing[: cut + 1]]))
        assert rebuilt == [{**state.output[0], "status": "incomplete"}]
    assert replay(e.wire(i) for i, e in enumerate([*opened, *closing])) == state.output


def test_merge_saved_prefers_the_stores_copy() -> None:
    streamed = [
        {"id": "msg_1", "type": "message", "status": "completed", "content": []},
        {"id": "fc_2", "type": "function_call", "status": "incomplete", "arguments": "{"},
    ]
    saved = [
        {"id": "msg_1", "type": "message", "status": "completed", "content": ["kept"]},
        {"id": "rs_0", "type": "reasoning", "status": "completed", "summary": []},
    ]
    assert merge_saved(streamed, saved) == [saved[0], streamed[1], saved[1]]
    assert merge_saved([], saved) == saved
