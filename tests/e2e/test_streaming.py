"""Streaming: SSE for every response, resume from any sequence number on another API process,
disconnects, cancel and failures mid-stream — with the openai SDK and raw SSE."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from typing import Any

import openai
import pytest

from tests.e2e.conftest import Stack
from tests.e2e.helpers import TERMINAL, check, retrieve_raw, script, wait_status
from tests.e2e.streams import check_stream, read_stream

pytestmark = pytest.mark.e2e

TEXT_EVENTS = [
    "response.output_item.added",
    "response.content_part.added",
    "response.output_text.delta",
    "response.output_text.delta",
    "response.output_text.done",
    "response.content_part.done",
    "response.output_item.done",
]


def create_stream(stack: Stack, body: dict[str, Any], **kwargs: Any) -> list[dict[str, Any]]:
    with stack.http() as http:
        events, _ = read_stream(
            http,
            "POST",
            "/v1/responses",
            json={"model": "resq-builtin", "stream": True, **body},
            **kwargs,
        )
    return events


def types(events: list[dict[str, Any]]) -> list[str]:
    return [e["type"] for e in events]


@pytest.mark.parametrize(
    ("body", "expected_middle"),
    [
        ({"input": script(text="Hi there")}, TEXT_EVENTS),
        (
            {"input": script(reasoning="Think.", text="Yes no")},
            [
                "response.output_item.added",
                "response.reasoning_summary_part.added",
                "response.reasoning_summary_text.delta",
                "response.reasoning_summary_text.done",
                "response.reasoning_summary_part.done",
                "response.output_item.done",
                *TEXT_EVENTS,
            ],
        ),
        (
            {"input": script(refusal="No way")},
            [
                "response.output_item.added",
                "response.content_part.added",
                "response.refusal.delta",
                "response.refusal.delta",
                "response.refusal.done",
                "response.content_part.done",
                "response.output_item.done",
            ],
        ),
        (
            {
                "input": script(
                    tool_calls=[
                        {"name": "f", "arguments": {"a": 1}},
                        {"name": "g", "arguments": {}},
                    ]
                )
            },
            [
                "response.output_item.added",
                "response.function_call_arguments.delta",
                "response.function_call_arguments.done",
                "response.output_item.done",
                "response.output_item.added",
                "response.function_call_arguments.delta",
                "response.function_call_arguments.done",
                "response.output_item.done",
            ],
        ),
    ],
    ids=["text", "reasoning", "refusal", "function-calls"],
)
def test_stream_event_sequences(
    stack: Stack, client: openai.OpenAI, body: dict[str, Any], expected_middle: list[str]
) -> None:
    events = create_stream(stack, body)
    assert types(events) == [
        "response.created",
        "response.in_progress",
        *expected_middle,
        "response.completed",
    ]
    final = check_stream(events)
    assert events[0]["response"]["status"] == "in_progress"
    assert final["status"] == "completed"
    assert retrieve_raw(client, final["id"]) == final


def test_background_stream_starts_queued(stack: Stack, client: openai.OpenAI) -> None:
    events = create_stream(stack, {"input": script(text="a b"), "background": True})
    assert types(events)[:3] == ["response.created", "response.queued", "response.in_progress"]
    assert [e["response"]["status"] for e in events[:3]] == ["queued", "queued", "in_progress"]
    final = check_stream(events)
    assert retrieve_raw(client, final["id"]) == final


def test_sdk_raw_stream_yields_typed_events(client: openai.OpenAI) -> None:
    stream = client.responses.create(model="resq-builtin", input=script(text="x y"), stream=True)
    got = list(stream)
    assert [type(e).__name__ for e in got] == [
        "ResponseCreatedEvent",
        "ResponseInProgressEvent",
        "ResponseOutputItemAddedEvent",
        "ResponseContentPartAddedEvent",
        "ResponseTextDeltaEvent",
        "ResponseTextDeltaEvent",
        "ResponseTextDoneEvent",
        "ResponseContentPartDoneEvent",
        "ResponseOutputItemDoneEvent",
        "ResponseCompletedEvent",
    ]


def test_sdk_stream_helper_final_equals_retrieve(client: openai.OpenAI) -> None:
    with client.responses.stream(
        model="resq-builtin", input=script(reasoning="Hmm.", text="one two three")
    ) as stream:
        for _ in stream:
            pass
        final = stream.get_final_response()
    assert final.output_text == "one two three"
    streamed = final.model_dump(mode="json")
    for part in streamed["output"][1]["content"]:
        assert part.pop("parsed") is None  # the helper's ParsedResponse adds this
    assert streamed == client.responses.retrieve(final.id).model_dump(mode="json")


# ---- resume ---------------------------------------------------------------------------------


def full_log(stack: Stack, response_id: str, *, second: bool = True) -> list[dict[str, Any]]:
    with stack.http(second=second) as http:
        events, _ = read_stream(
            http, "GET", f"/v1/responses/{response_id}", params={"stream": "true"}
        )
    return events


def test_resume_after_completion_from_another_api_process(
    stack: Stack, client: openai.OpenAI
) -> None:
    first = create_stream(stack, {"input": script(words=8), "background": True})
    check_stream(first)
    rid = first[0]["response"]["id"]
    assert full_log(stack, rid) == first  # replay from 0 on the second API process
    last = first[-1]["sequence_number"]
    for n in (0, last // 2, last - 1, last, last + 5):
        with stack.http(second=True) as http:
            events, _ = read_stream(
                http, "GET", f"/v1/responses/{rid}", params={"stream": "true", "starting_after": n}
            )
        assert events == [e for e in first if e["sequence_number"] > n], n


def test_resume_live_from_another_api_process(stack: Stack, client: openai.OpenAI) -> None:
    # Read the first 8 events on API 1, hang up (the background job keeps running) ...
    head = create_stream(
        stack, {"input": script(words=40, delay_ms=40), "background": True}, stop_after=8
    )
    rid = head[0]["response"]["id"]
    n = head[-1]["sequence_number"]
    # ... and follow the rest live on API 2 while the job is still running.
    assert retrieve_raw(client, rid)["status"] == "in_progress"
    with stack.http(second=True) as http:
        tail, _ = read_stream(
            http, "GET", f"/v1/responses/{rid}", params={"stream": "true", "starting_after": n}
        )
    check_stream(tail, from_start=False)
    assert tail[0]["sequence_number"] == n + 1
    whole = head + tail
    final = check_stream(whole)
    assert (
        final["status"] == "completed"
        and len(final["output"][0]["content"][0]["text"].split()) == 40
    )
    assert full_log(stack, rid) == whole


def test_sdk_resume_and_helper_replay(stack: Stack, client: openai.OpenAI) -> None:
    created = client.responses.create(
        model="resq-builtin", input=script(words=20, delay_ms=20), background=True, stream=True
    )
    events = [e for e in created]
    rid = events[0].response.id
    client_2 = stack.client_2()
    resumed = list(client_2.responses.retrieve(rid, stream=True, starting_after=5))
    assert [e.sequence_number for e in resumed] == [e.sequence_number for e in events[6:]]
    with client_2.responses.stream(response_id=rid, starting_after=5) as stream:
        helper_events = list(stream)
        final = stream.get_final_response()
    assert [e.sequence_number for e in helper_events] == [e.sequence_number for e in events[6:]]
    assert final.id == rid and final.status == "completed"


def test_stream_get_needs_background(client: openai.OpenAI) -> None:
    done = client.responses.create(model="resq-builtin", input="x")
    with pytest.raises(openai.BadRequestError) as info:
        list(client.responses.retrieve(done.id, stream=True))
    assert info.value.param == "stream"


# ---- disconnects, cancel, failures ----------------------------------------------------------


def test_foreground_disconnect_cancels_within_a_second(stack: Stack, client: openai.OpenAI) -> None:
    head = create_stream(stack, {"input": script(words=300, delay_ms=20)}, stop_after=6)
    gone_at = time.monotonic()
    rid = head[0]["response"]["id"]
    raw = wait_status(client, rid, TERMINAL, timeout=10)
    elapsed = time.monotonic() - gone_at
    assert raw["status"] == "cancelled"
    assert elapsed < 1.0, f"took {elapsed:.2f} s"
    check(raw)


def test_background_disconnect_keeps_running(stack: Stack, client: openai.OpenAI) -> None:
    head = create_stream(
        stack, {"input": script(words=30, delay_ms=20), "background": True}, stop_after=6
    )
    raw = wait_status(client, head[0]["response"]["id"], TERMINAL, timeout=15)
    assert raw["status"] == "completed"
    assert len(check(raw).output_text.split()) == 30


def test_cancel_mid_stream_ends_the_stream(stack: Stack, client: openai.OpenAI) -> None:
    stream = client.responses.create(
        model="resq-builtin", input=script(words=300, delay_ms=20), background=True, stream=True
    )
    seen: list[Any] = []
    cancelled: dict[str, Any] = {}
    for event in stream:
        seen.append(event)
        if event.type == "response.output_text.delta" and not cancelled:
            rid = seen[0].response.id

            def cancel(rid: str = rid) -> None:
                raw = client.responses.with_raw_response.cancel(rid)
                cancelled.update(json.loads(raw.http_response.text))

            threading.Thread(target=cancel).start()
    last = seen[-1]
    assert last.type == "response.incomplete"
    assert last.response.status == "cancelled"
    time.sleep(0.2)
    assert cancelled["status"] == "cancelled"
    assert retrieve_raw(client, last.response.id) == cancelled
    events = full_log(stack, last.response.id)
    final = check_stream(events)
    assert final == cancelled


def test_cancel_of_queued_streaming_response_ends_its_stream(
    stack: Stack, client: openai.OpenAI
) -> None:
    os.kill(stack.worker_pid, signal.SIGSTOP)  # the job cannot start
    try:
        created = client.responses.create(model="resq-builtin", input="x", background=True)
        got: list[list[dict[str, Any]]] = []
        reader = threading.Thread(target=lambda: got.append(full_log(stack, created.id)))
        reader.start()
        time.sleep(0.3)  # the reader is now waiting on a log nobody has written yet
        cancelled = client.responses.with_raw_response.cancel(created.id)
        reader.join(10)
    finally:
        os.kill(stack.worker_pid, signal.SIGCONT)
    assert not reader.is_alive(), "the stream of a cancelled queued response never ended"
    events = got[0]
    assert types(events) == ["response.created", "response.queued", "response.incomplete"]
    final = check_stream(events)
    assert final == json.loads(cancelled.http_response.text)
    assert final["status"] == "cancelled"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            {"input": script(text="a b c d", error={"message": "exploded", "after_tokens": 2})},
            "exploded",
        ),
        (
            {
                "model": "upstream-fast",
                "input": 'upstream: {"mode": "error_midstream", "message": "gone bad"}',
            },
            "gone bad",
        ),
    ],
    ids=["builtin", "upstream"],
)
def test_failure_mid_stream_ends_with_error_then_failed(
    stack: Stack, client: openai.OpenAI, body: dict[str, Any], message: str
) -> None:
    events = create_stream(stack, body)
    assert types(events)[-2:] == ["error", "response.failed"]
    error = events[-2]
    assert error["code"] == "server_error" and message in error["message"]
    assert "error" not in {k for k in error if k != "type"}  # flat: the SDK would raise
    final = check_stream(events)
    assert final["status"] == "failed" and message in final["error"]["message"]
    assert retrieve_raw(client, final["id"])["status"] == "failed"


def test_sdk_stream_on_failure_yields_error_event(client: openai.OpenAI) -> None:
    got = list(
        client.responses.create(
            model="resq-builtin",
            stream=True,
            input=script(text="a b", error={"message": "nope", "after_tokens": 1}),
        )
    )
    assert [e.type for e in got][-2:] == ["error", "response.failed"]
    assert got[-2].message == "nope"


def test_idle_stream_gets_keepalives(stack: Stack) -> None:
    with stack.http() as http:
        events, comments = read_stream(
            http,
            "POST",
            "/v1/responses",
            json={
                "model": "resq-builtin",
                "stream": True,
                "input": script(text="a b", delay_ms=1300),
            },
        )
    assert comments >= 1
    assert check_stream(events)["status"] == "completed"
