"""The pure shape builders against the Open Responses contract and the openai SDK.

``shared.schema.response`` builds every Response resq sends; ``worker.stream_state`` builds
every output item and item-level stream event. Both are pure, so these tests feed them data
and judge the result with ``tests.compat`` (contract + SDK round trip), assert the exact
event-type sequence of each scenario, and replay whole streams through the SDK's own
``responses.stream()`` accumulator.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from typing import Any

import pytest
from openai import omit
from openai._models import construct_type
from openai.lib.streaming.responses import ResponseStreamState
from openai.types.responses import ResponseStreamEvent

from shared.bus import Emitter
from shared.schema import items as it
from shared.schema.events import Event, ResponseEvent, terminal_type
from shared.schema.requests import parse_create_request
from shared.schema.response import Status, echo_params, response_object, usage_object
from tests.compat import (
    SPEC_RESPONSE_FIELDS,
    assert_all_spec_fields,
    assert_sdk_event,
    assert_sdk_response,
    assert_valid_event,
    assert_valid_response,
    assert_wire_event,
    assert_wire_response,
    event_schema_names,
)
from worker.providers.base import (
    Delta,
    Finish,
    ReasoningDelta,
    RefusalDelta,
    TextDelta,
    ToolCallDelta,
    Usage,
)
from worker.stream_state import StreamState

RESPONSE_ID = "resp_test"
CREATED_AT = 1_761_565_462
COMPLETED_AT = CREATED_AT + 3
MODEL = "test-model"

WEATHER_SCHEMA = {
    "type": "object",
    "properties": {"city": {"type": "string"}},
    "required": ["city"],
    "additionalProperties": False,
}
WEATHER_TOOL = {
    "type": "function",
    "name": "get_weather",
    "description": "Current weather for a city.",
    "parameters": WEATHER_SCHEMA,
    "strict": True,
}
JSON_SCHEMA_FORMAT = {
    "type": "json_schema",
    "name": "answer",
    "description": "The answer object.",
    "schema": {
        "type": "object",
        "properties": {"answer": {"type": "string"}},
        "required": ["answer"],
        "additionalProperties": False,
    },
    "strict": True,
}
NON_DEFAULT_BODY: dict[str, Any] = {
    "model": MODEL,
    "input": "What is the weather in Paris?",
    "instructions": "Answer in one word.",
    "metadata": {"ticket": "T-1", "team": "qa"},
    "text": {"format": JSON_SCHEMA_FORMAT, "verbosity": "low"},
    "reasoning": {"effort": "high", "summary": "auto"},
    "tools": [WEATHER_TOOL],
    "tool_choice": {"type": "function", "name": "get_weather"},
    "temperature": 0.2,
    "top_p": 0.5,
    "max_output_tokens": 64,
}

# What OpenAI echoes for a request that sets nothing (spec digest §2.4).
DEFAULT_ECHO = {
    "background": False,
    "completed_at": None,
    "conversation": None,
    "error": None,
    "incomplete_details": None,
    "instructions": None,
    "max_output_tokens": None,
    "max_tool_calls": None,
    "metadata": {},
    "model": MODEL,
    "parallel_tool_calls": True,
    "previous_response_id": None,
    "prompt": None,
    "prompt_cache_key": None,
    "prompt_cache_retention": None,
    "reasoning": {"effort": None, "summary": None},
    "safety_identifier": None,
    "service_tier": "auto",
    "store": True,
    "temperature": 1.0,
    "text": {"format": {"type": "text"}, "verbosity": "medium"},
    "tool_choice": "auto",
    "tools": [],
    "top_logprobs": 0,
    "top_p": 1.0,
    "truncation": "disabled",
    "usage": None,
    "user": None,
}


def _params(body: dict[str, Any] | None = None) -> dict[str, Any]:
    return echo_params(parse_create_request(body or {"model": MODEL, "input": "hi"}), model=MODEL)


def _final_message(text: str, status: str = "completed") -> dict[str, Any]:
    item = it.output_message("msg_final", status=status)
    item["content"].append(it.output_text_part(text))
    return item


def _response(status: Status, params: dict[str, Any], **lifecycle: Any) -> dict[str, Any]:
    return response_object(
        response_id=RESPONSE_ID,
        created_at=CREATED_AT,
        status=status.value,
        params=params,
        output=lifecycle.pop("output", []),
        **lifecycle,
    )


TERMINAL_LIFECYCLE: dict[Status, dict[str, Any]] = {
    Status.COMPLETED: {
        "completed_at": COMPLETED_AT,
        "output": [_final_message("Sunny.")],
        "usage": usage_object(21, 7, reasoning_tokens=3, cached_tokens=4),
    },
    Status.FAILED: {
        "completed_at": COMPLETED_AT,  # must be dropped: only completed responses carry it
        "error": {"code": "server_error", "message": "upstream returned 502"},
    },
    Status.INCOMPLETE: {
        "output": [_final_message("Sun", status="incomplete")],
        "incomplete_details": {"reason": "max_output_tokens"},
        "usage": usage_object(21, 64),
    },
    Status.CANCELLED: {},
}


# ---- the Response object ----------------------------------------------------------------


def test_spec_field_list_is_the_digest_list() -> None:
    assert len(SPEC_RESPONSE_FIELDS) == len(set(SPEC_RESPONSE_FIELDS)) == 33
    assert_all_spec_fields(_response(Status.QUEUED, _params()))
    without_store = {k: v for k, v in _response(Status.QUEUED, _params()).items() if k != "store"}
    with pytest.raises(AssertionError, match="lacks spec fields: store"):
        assert_all_spec_fields(without_store)


@pytest.mark.parametrize("status", [Status.QUEUED, Status.IN_PROGRESS])
def test_default_params_echo_openai_defaults(status: Status) -> None:
    raw = _response(status, _params())
    parsed = assert_wire_response(raw)

    assert {k: raw[k] for k in DEFAULT_ECHO} == DEFAULT_ECHO
    assert raw["presence_penalty"] == raw["frequency_penalty"] == 0.0
    assert (raw["output"], raw["status"], raw["object"]) == ([], status.value, "response")
    assert parsed.status == status.value
    assert parsed.output_text == ""
    assert parsed.model_extra == {"store": True, "presence_penalty": 0.0, "frequency_penalty": 0.0}


def test_background_request_echoes_background() -> None:
    raw = _response(Status.QUEUED, _params({"model": MODEL, "input": "x", "background": True}))
    parsed = assert_wire_response(raw)
    assert (parsed.background, raw["store"]) == (True, True)


def test_non_default_params_are_echoed() -> None:
    raw = _response(Status.IN_PROGRESS, _params(NON_DEFAULT_BODY))
    parsed = assert_wire_response(raw)

    assert parsed.instructions == "Answer in one word."
    assert parsed.metadata == {"ticket": "T-1", "team": "qa"}
    assert parsed.text is not None and parsed.text.verbosity == "low"
    assert parsed.text.format.model_dump(by_alias=True, exclude_unset=True) == JSON_SCHEMA_FORMAT
    assert parsed.reasoning is not None
    assert (parsed.reasoning.effort, parsed.reasoning.summary) == ("high", "auto")
    assert [t.model_dump(exclude_unset=True) for t in parsed.tools] == [WEATHER_TOOL]
    assert parsed.tool_choice.model_dump() == {"type": "function", "name": "get_weather"}
    assert (parsed.temperature, parsed.top_p, parsed.max_output_tokens) == (0.2, 0.5, 64)


def test_function_tool_echo_is_normalised() -> None:
    bare = {"type": "function", "name": "get_weather", "parameters": WEATHER_SCHEMA}
    raw = _response(Status.QUEUED, _params({"model": MODEL, "input": "x", "tools": [bare]}))
    assert_sdk_response(raw)
    assert_valid_response(raw)


def test_json_schema_format_echo_keeps_defaults() -> None:
    fmt = {"type": "json_schema", "name": "answer", "schema": JSON_SCHEMA_FORMAT["schema"]}
    raw = _response(Status.QUEUED, _params({"model": MODEL, "input": "x", "text": {"format": fmt}}))
    assert_sdk_response(raw)
    assert_valid_response(raw)


@pytest.mark.parametrize("body", [None, NON_DEFAULT_BODY], ids=["defaults", "non_defaults"])
@pytest.mark.parametrize("status", list(TERMINAL_LIFECYCLE), ids=str)
def test_terminal_responses(status: Status, body: dict[str, Any] | None) -> None:
    lifecycle = dict(TERMINAL_LIFECYCLE[status])
    raw = _response(status, _params(body), **lifecycle)
    parsed = assert_wire_response(raw)

    assert parsed.status == status.value
    assert raw["completed_at"] == (COMPLETED_AT if status == Status.COMPLETED else None)
    assert raw["error"] == lifecycle.get("error")
    assert raw["incomplete_details"] == lifecycle.get("incomplete_details")
    assert raw["usage"] == lifecycle.get("usage")
    output = [item.model_dump(exclude_unset=True) for item in parsed.output]
    assert output == lifecycle.get("output", [])
    if status == Status.COMPLETED:
        assert parsed.output_text == "Sunny."
        usage = parsed.usage
        assert usage is not None
        assert (usage.total_tokens, usage.output_tokens_details.reasoning_tokens) == (28, 3)
        assert usage.input_tokens_details.cached_tokens == 4
    if status == Status.FAILED:
        error = parsed.error
        assert error is not None
        assert (error.code, error.message) == ("server_error", "upstream returned 502")
    if status == Status.INCOMPLETE:
        assert parsed.incomplete_details is not None
        assert parsed.incomplete_details.reason == "max_output_tokens"


def test_usage_object_shape() -> None:
    assert usage_object(13, 12) == {
        "input_tokens": 13,
        "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
        "output_tokens": 12,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": 25,
    }


def test_checkers_reject_broken_responses() -> None:
    """The judges themselves can fail: each catches a typical shape bug."""
    good = _response(Status.COMPLETED, _params(), **TERMINAL_LIFECYCLE[Status.COMPLETED])
    with pytest.raises(AssertionError, match=r"\$\.output\[0\]"):
        assert_valid_response({**good, "output": [{"type": "message", "id": "msg_1"}]})
    with pytest.raises(AssertionError, match="temperature"):
        assert_valid_response({**good, "temperature": None})
    with pytest.raises(AssertionError, match="the SDK rejects"):
        assert_sdk_response({**good, "usage": {"input_tokens": 1}})
    with pytest.raises(AssertionError, match="the SDK rejects"):
        assert_sdk_response({**good, "created_at": "yesterday"})


# ---- stream events ------------------------------------------------------------------------


class _Recorder:
    """The event bus seen by ``Emitter``: keeps what would be published."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    def publish(self, response_id: str, events: list[dict[str, Any]]) -> None:
        assert response_id == RESPONSE_ID
        self.events.extend(events)


def _counting_ids() -> Callable[[str], str]:
    counter = itertools.count(1)
    return lambda prefix: f"{prefix}_{next(counter)}"


def _item_events(
    deltas: Sequence[Delta], close_status: str = "completed"
) -> tuple[StreamState, list[Event]]:
    state = StreamState(new_id=_counting_ids())
    events: list[Event] = []
    for delta in deltas:
        events += state.apply(delta)
    events += state.close(close_status)
    assert all("sequence_number" not in e.model_dump() for e in events), "must not stamp"
    return state, events


def _stream(
    deltas: Sequence[Delta],
    *,
    outcome: Status = Status.COMPLETED,
    background: bool = False,
    **lifecycle: Any,
) -> tuple[StreamState, list[dict[str, Any]]]:
    """A whole stream, lifecycle events included, stamped by resq's own ``Emitter``."""
    body = {"model": MODEL, "input": "hi", "background": background}
    params = _params(body)
    close_status = "completed" if outcome == Status.COMPLETED else "incomplete"
    state, item_events = _item_events(deltas, close_status)
    usage = state.usage
    if usage is not None:
        lifecycle["usage"] = usage_object(
            usage.input_tokens, usage.output_tokens, usage.reasoning_tokens, usage.cached_tokens
        )
    final = _response(outcome, params, output=state.output, completed_at=COMPLETED_AT, **lifecycle)

    recorder = _Recorder()
    emitter = Emitter(recorder, RESPONSE_ID)  # type: ignore[arg-type]
    first = Status.QUEUED if background else Status.IN_PROGRESS
    emitter.emit(ResponseEvent(type="response.created", response=_response(first, params)))
    if background:
        emitter.emit(
            ResponseEvent(type="response.queued", response=_response(Status.QUEUED, params))
        )
    emitter.emit(
        ResponseEvent(type="response.in_progress", response=_response(Status.IN_PROGRESS, params))
    )
    for event in item_events:
        emitter.emit(event)
    emitter.emit(ResponseEvent(type=terminal_type(outcome), response=final))
    return state, recorder.events


def _types(events: list[dict[str, Any]]) -> list[str]:
    return [e["type"] for e in events]


def _check_events(events: list[dict[str, Any]]) -> None:
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    for event in events:
        assert list(event)[:2] == ["type", "sequence_number"]
        assert_wire_event(event)
    # Dense output_index, in the order items were added; every added item is finished.
    added = [e["output_index"] for e in events if e["type"] == "response.output_item.added"]
    done = [e["output_index"] for e in events if e["type"] == "response.output_item.done"]
    assert added == list(range(len(added))) == done


def _replay_in_sdk(events: list[dict[str, Any]]) -> tuple[list[Any], ResponseStreamState[Any]]:
    """Feed the stream to the accumulator behind ``client.responses.stream()``."""
    sdk_state: ResponseStreamState[Any] = ResponseStreamState(input_tools=omit, text_format=omit)
    out: list[Any] = []
    for raw in events:
        out += sdk_state.handle_event(construct_type(type_=ResponseStreamEvent, value=raw))
    return out, sdk_state


def _without(value: Any, keys: frozenset[str]) -> Any:
    if isinstance(value, dict):
        return {k: _without(v, keys) for k, v in value.items() if k not in keys}
    if isinstance(value, list):
        return [_without(v, keys) for v in value]
    return value


def _assert_sdk_final_equals(events: list[dict[str, Any]], sdk_state: ResponseStreamState[Any]):
    completed = events[-1]
    assert completed["type"] == "response.completed"
    final = sdk_state._completed_response  # what ResponseStream.get_final_response() returns
    assert final is not None
    dumped = final.model_dump(mode="json", exclude_unset=True, by_alias=True)
    # ParsedResponse adds ``parsed`` / ``parsed_arguments`` (None without text_format/tools).
    assert _without(dumped, frozenset({"parsed", "parsed_arguments"})) == completed["response"]
    return final


LIFECYCLE_START = ["response.created", "response.in_progress"]
MESSAGE_OPEN = ["response.output_item.added", "response.content_part.added"]
MESSAGE_CLOSE = [
    "response.output_text.done",
    "response.content_part.done",
    "response.output_item.done",
]


def test_text_stream() -> None:
    deltas = [TextDelta("Hel"), TextDelta("lo, "), TextDelta("world"), Usage(9, 3), Finish("stop")]
    state, events = _stream(deltas)

    assert _types(events) == [
        *LIFECYCLE_START,
        *MESSAGE_OPEN,
        *["response.output_text.delta"] * 3,
        *MESSAGE_CLOSE,
        "response.completed",
    ]
    _check_events(events)
    assert state.output == [
        {
            "id": "msg_1",
            "type": "message",
            "status": "completed",
            "role": "assistant",
            "content": [it.output_text_part("Hello, world")],
        }
    ]
    added, part_added = events[2], events[3]
    assert added["item"] == {**state.output[0], "status": "in_progress", "content": []}
    assert part_added["part"] == it.output_text_part("")
    assert events[-2]["item"] == state.output[0]
    assert state.finish_reason == "stop"

    sdk_events, sdk_state = _replay_in_sdk(events)
    snapshots = [e.snapshot for e in sdk_events if e.type == "response.output_text.delta"]
    assert snapshots == ["Hel", "Hello, ", "Hello, world"]
    final = _assert_sdk_final_equals(events, sdk_state)
    assert final.output_text == "Hello, world"
    assert final.usage is not None and final.usage.total_tokens == 12


def test_background_stream_starts_queued() -> None:
    _, events = _stream([TextDelta("ok")], background=True)
    assert _types(events) == [
        "response.created",
        "response.queued",
        "response.in_progress",
        *MESSAGE_OPEN,
        "response.output_text.delta",
        *MESSAGE_CLOSE,
        "response.completed",
    ]
    _check_events(events)
    statuses = [e["response"]["status"] for e in events if "response" in e]
    assert statuses == ["queued", "queued", "in_progress", "completed"]
    _, sdk_state = _replay_in_sdk(events)
    _assert_sdk_final_equals(events, sdk_state)


def test_reasoning_then_text() -> None:
    deltas = [ReasoningDelta("Think"), ReasoningDelta("ing."), TextDelta("Done")]
    state, events = _stream(deltas)

    assert _types(events) == [
        *LIFECYCLE_START,
        "response.output_item.added",
        "response.reasoning_summary_part.added",
        "response.reasoning_summary_text.delta",
        "response.reasoning_summary_text.delta",
        "response.reasoning_summary_text.done",
        "response.reasoning_summary_part.done",
        "response.output_item.done",
        *MESSAGE_OPEN,
        "response.output_text.delta",
        *MESSAGE_CLOSE,
        "response.completed",
    ]
    _check_events(events)
    reasoning, message = state.output
    assert reasoning == {
        "id": "rs_1",
        "type": "reasoning",
        "summary": [{"type": "summary_text", "text": "Thinking."}],
        "status": "completed",
    }
    assert (message["id"], message["content"][0]["text"]) == ("msg_2", "Done")
    assert {e["output_index"] for e in events[2:9]} == {0}
    assert {e["output_index"] for e in events[9:14]} == {1}
    assert events[6]["text"] == "Thinking."

    _, sdk_state = _replay_in_sdk(events)
    final = _assert_sdk_final_equals(events, sdk_state)
    assert final.output_text == "Done"


def test_refusal() -> None:
    state, events = _stream([RefusalDelta("I can't"), RefusalDelta(" help with that.")])

    assert _types(events) == [
        *LIFECYCLE_START,
        *MESSAGE_OPEN,
        "response.refusal.delta",
        "response.refusal.delta",
        "response.refusal.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    _check_events(events)
    refusal = it.refusal_part("I can't help with that.")
    assert events[3]["part"] == it.refusal_part("")
    assert events[6]["refusal"] == refusal["refusal"]
    assert events[7]["part"] == refusal
    assert state.output[0]["content"] == [refusal]

    _, sdk_state = _replay_in_sdk(events)
    final = _assert_sdk_final_equals(events, sdk_state)
    assert final.output_text == ""


def test_text_then_refusal_in_one_message() -> None:
    _, events = _stream([TextDelta("Sure"), RefusalDelta("no")])
    assert _types(events)[2:-1] == [
        *MESSAGE_OPEN,
        "response.output_text.delta",
        "response.output_text.done",
        "response.content_part.done",
        "response.content_part.added",
        "response.refusal.delta",
        "response.refusal.done",
        "response.content_part.done",
        "response.output_item.done",
    ]
    _check_events(events)
    assert [e["content_index"] for e in events if "content_index" in e] == [0, 0, 0, 0, 1, 1, 1, 1]
    _, sdk_state = _replay_in_sdk(events)
    _assert_sdk_final_equals(events, sdk_state)


def test_two_function_calls() -> None:
    deltas = [
        ToolCallDelta(index=0, call_id="call_a", name="get_weather"),
        ToolCallDelta(index=0, arguments='{"city":'),
        ToolCallDelta(index=0, arguments=' "Paris"}'),
        ToolCallDelta(index=1, call_id="call_b", name="get_time", arguments="{}"),
        Finish("tool_calls"),
    ]
    state, events = _stream(deltas)

    call = [
        "response.output_item.added",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.done",
        "response.output_item.done",
    ]
    assert _types(events) == [
        *LIFECYCLE_START,
        *call,
        "response.output_item.added",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.done",
        "response.output_item.done",
        "response.completed",
    ]
    _check_events(events)
    assert state.output == [
        it.function_call_item("fc_1", "call_a", "get_weather", '{"city": "Paris"}', "completed"),
        it.function_call_item("fc_2", "call_b", "get_time", "{}", "completed"),
    ]
    # The added item already carries call_id and name, with empty arguments (§4.3 rule 5).
    assert events[2]["item"] == it.function_call_item("fc_1", "call_a", "get_weather")
    dones = [e for e in events if e["type"] == "response.function_call_arguments.done"]
    assert [(e["name"], e["arguments"]) for e in dones] == [
        ("get_weather", '{"city": "Paris"}'),
        ("get_time", "{}"),
    ]

    sdk_events, sdk_state = _replay_in_sdk(events)
    snapshots = [
        e.snapshot for e in sdk_events if e.type == "response.function_call_arguments.delta"
    ]
    assert snapshots == ['{"city":', '{"city": "Paris"}', "{}"]
    final = _assert_sdk_final_equals(events, sdk_state)
    assert [(o.call_id, o.name) for o in final.output] == [
        ("call_a", "get_weather"),
        ("call_b", "get_time"),
    ]


def test_text_cut_short_is_incomplete() -> None:
    deltas = [TextDelta("The answer"), Usage(5, 64), Finish("length")]
    state, events = _stream(
        deltas, outcome=Status.INCOMPLETE, incomplete_details={"reason": "max_output_tokens"}
    )

    assert _types(events) == [
        *LIFECYCLE_START,
        *MESSAGE_OPEN,
        "response.output_text.delta",
        *MESSAGE_CLOSE,
        "response.incomplete",
    ]
    _check_events(events)
    assert state.finish_reason == "length"
    assert state.output[0]["status"] == "incomplete"
    assert events[-2]["item"]["status"] == "incomplete"
    final = events[-1]["response"]
    assert (final["status"], final["completed_at"]) == ("incomplete", None)
    assert final["incomplete_details"] == {"reason": "max_output_tokens"}
    assert final["output"] == state.output

    sdk_events, sdk_state = _replay_in_sdk(events)
    assert sdk_events[-1].type == "response.incomplete"
    assert sdk_events[-1].response.incomplete_details.reason == "max_output_tokens"
    assert sdk_state._completed_response is None  # get_final_response() would raise


@pytest.mark.parametrize("outcome", [Status.FAILED, Status.CANCELLED], ids=str)
def test_interrupted_text_ends_with_one_terminal_event(outcome: Status) -> None:
    error = {"code": "server_error", "message": "boom"} if outcome == Status.FAILED else None
    _, events = _stream([TextDelta("partial")], outcome=outcome, error=error)

    terminal = "response.failed" if outcome == Status.FAILED else "response.incomplete"
    assert _types(events)[-2:] == ["response.output_item.done", terminal]
    _check_events(events)
    final = events[-1]["response"]
    assert (final["status"], final["error"]) == (outcome.value, error)
    assert [i["status"] for i in final["output"]] == ["incomplete"]
    sdk_events, _ = _replay_in_sdk(events)
    assert sdk_events[-1].response.status == outcome.value


def test_close_without_items_emits_nothing() -> None:
    state = StreamState(new_id=_counting_ids())
    assert state.apply(Usage(1, 0)) == []
    assert state.close("completed") == []
    assert state.output == []


def test_every_contract_event_type_is_known_to_the_sdk() -> None:
    """The contract's event types the SDK lacks (they must never be sent)."""
    from tests.compat import sdk_event_classes

    missing = set(event_schema_names()) - set(sdk_event_classes())
    assert missing == {"response.reasoning.delta", "response.reasoning.done"}


def test_event_checkers_reject_broken_events() -> None:
    delta = {
        "type": "response.output_text.delta",
        "sequence_number": 4,
        "item_id": "msg_1",
        "output_index": 0,
        "content_index": 0,
        "delta": "Hi",
        "logprobs": [],
    }
    assert assert_valid_event(delta) == "ResponseOutputTextDeltaStreamingEvent"
    assert_sdk_event(delta)
    broken = {k: v for k, v in delta.items() if k != "item_id"}
    with pytest.raises(AssertionError, match="item_id"):
        assert_valid_event(broken)
    with pytest.raises(AssertionError, match="the SDK rejects"):
        assert_sdk_event(broken)
    with pytest.raises(AssertionError, match="no event class"):
        assert_sdk_event({**delta, "type": "response.keepalive"})
    # The SDK's documented flat error event is exempt from the contract's nested shape.
    flat_error = {
        "type": "error",
        "sequence_number": 2,
        "code": "server_error",
        "message": "x",
        "param": None,
    }
    assert assert_valid_event(flat_error) is None
    assert_sdk_event(flat_error)
