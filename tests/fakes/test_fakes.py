"""The fake Anthropic Messages and OpenAI Responses servers, over real HTTP.

Every event is checked against the documented example of its type in ``wire/*.json`` (same
keys, recursively) and, for the Responses fake, parsed by the openai SDK's own types.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from openai.types.responses import Response, ResponseStreamEvent
from pydantic import TypeAdapter

from tests.fakes.anthropic import FakeAnthropic
from tests.fakes.http_fake import HttpFake
from tests.fakes.responses_upstream import FakeResponses

WIRE = Path(__file__).parent / "wire"
STREAM_EVENT: TypeAdapter[Any] = TypeAdapter(ResponseStreamEvent)
Events = list[tuple[str | None, dict[str, Any]]]


def shape(value: Any) -> Any:
    """The keys of a JSON value, recursively through objects (lists and scalars are leaves)."""
    if isinstance(value, dict):
        return {k: shape(v) for k, v in value.items()}
    return "list" if isinstance(value, list) else None


def sse(response: httpx.Response) -> Events:
    """(``event:`` name, ``data:`` JSON) of every SSE event of a finished answer."""
    events: Events = []
    name = None
    for line in response.text.splitlines():
        if line.startswith("event: "):
            name = line.removeprefix("event: ")
        elif line.startswith("data: "):
            events.append((name, json.loads(line.removeprefix("data: "))))
            name = None
    return events


def types(events: Events) -> list[str]:
    return [data["type"] for _, data in events]


def deltas(events: Events, kind: str) -> list[dict[str, Any]]:
    found = [d["delta"] for _, d in events if d["type"] == "content_block_delta"]
    return [delta for delta in found if delta["type"] == kind]


def anthropic_key(data: dict[str, Any]) -> str:
    if data["type"] == "content_block_start":
        return f"content_block_start:{data['content_block']['type']}"
    if data["type"] == "content_block_delta":
        return f"content_block_delta:{data['delta']['type']}"
    return str(data["type"])


def responses_key(data: dict[str, Any]) -> str:
    if data["type"].startswith("response.output_item."):
        return f"{data['type']}:{data['item']['type']}"
    return str(data["type"])


def validate_with_sdk(events: Events) -> None:
    """Every event parses as the SDK's ``ResponseStreamEvent``, numbered 0, 1, ..."""
    for n, (_, data) in enumerate(events):
        assert data["sequence_number"] == n
        assert STREAM_EVENT.validate_python(data).type == data["type"]
    Response.model_validate(events[-1][1]["response"])


@dataclass(frozen=True)
class Wire:
    """How to talk to one fake, so that the tests common to both are written once."""

    name: str
    fake_class: type[HttpFake]
    path: str  # appended to ``base_url``
    fixture: dict[str, Any]
    key_of: Callable[[dict[str, Any]], str]
    user_message: Callable[[str], dict[str, Any]]
    headers: Callable[[str | None], dict[str, str]]
    validate: Callable[[Events], None]
    head: int  # events sent before ``delay_ms`` applies

    def body(self, text: str, **extra: Any) -> dict[str, Any]:
        messages = [self.user_message(text)]
        if self.name == "anthropic":
            return {"model": "claude-fake", "max_tokens": 64, "messages": messages, **extra}
        return {"model": "gpt-fake", "input": messages, **extra}

    def text_pieces(self, events: Events) -> list[str]:
        if self.name == "anthropic":
            return [d["text"] for d in deltas(events, "text_delta")]
        return [d["delta"] for _, d in events if d["type"] == "response.output_text.delta"]

    def text_of(self, events: Events) -> str:
        return "".join(self.text_pieces(events))

    def check(self, events: Events, *, optional: tuple[str, ...] = ()) -> None:
        """Each event's keys equal its fixture's (but for ``optional`` item keys it lacks)."""
        assert events, "no events"
        for name, data in events:
            assert name == data["type"]
            expected = json.loads(json.dumps(self.fixture["events"][self.key_of(data)]["data"]))
            for key in optional:
                if key not in data.get("item", {}):
                    expected.get("item", {}).pop(key, None)
            assert shape(data) == shape(expected), self.key_of(data)
        self.validate(events)


def _load(name: str) -> dict[str, Any]:
    return json.loads((WIRE / name).read_text())


ANTHROPIC = Wire(
    name="anthropic",
    fake_class=FakeAnthropic,
    path="/v1/messages",
    fixture=_load("anthropic_messages.json"),
    key_of=anthropic_key,
    user_message=lambda text: {"role": "user", "content": [{"type": "text", "text": text}]},
    headers=lambda key: {"anthropic-version": "2023-06-01", **({"x-api-key": key} if key else {})},
    validate=lambda events: None,
    head=1,
)
RESPONSES = Wire(
    name="responses",
    fake_class=FakeResponses,
    path="/responses",
    fixture=_load("openai_responses.json"),
    key_of=responses_key,
    user_message=lambda text: {"role": "user", "content": [{"type": "input_text", "text": text}]},
    headers=lambda key: {"authorization": f"Bearer {key}"} if key else {},
    validate=validate_with_sdk,
    head=2,
)


def script(**fields: Any) -> str:
    return f"Please answer.\nupstream: {json.dumps(fields)}\n"


def post(
    wire: Wire, fake: HttpFake, body: dict[str, Any], key: str | None = None, **kw: Any
) -> httpx.Response:
    headers = {**wire.headers(key), **kw.pop("headers", {})}
    body = {"stream": True, **body}
    return httpx.post(fake.base_url + wire.path, json=body, headers=headers, timeout=10, **kw)


@pytest.fixture(params=[ANTHROPIC, RESPONSES], ids=lambda w: w.name)
def wire(request: pytest.FixtureRequest) -> Wire:
    return request.param


@pytest.fixture
def fake(wire: Wire) -> Iterator[HttpFake]:
    with wire.fake_class() as server:
        yield server


@pytest.fixture
def anthropic() -> Iterator[FakeAnthropic]:
    with FakeAnthropic() as server:
        yield server


@pytest.fixture
def responses() -> Iterator[FakeResponses]:
    with FakeResponses() as server:
        yield server


# --- both fakes ----------------------------------------------------------------------------


def test_base_url_and_recorded_requests(wire: Wire, fake: HttpFake) -> None:
    suffix = "" if wire.name == "anthropic" else "/v1"
    assert fake.base_url == f"http://127.0.0.1:{fake.port}{suffix}"
    body = wire.body("hi", metadata={"user_id": "u1"})
    answer = post(wire, fake, body, headers={"X-Extra": "yes"})
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/event-stream")
    [received] = fake.requests
    assert received["method"] == "POST"
    assert received["path"] == ("/v1/messages" if wire.name == "anthropic" else "/v1/responses")
    assert received["headers"]["x-extra"] == "yes"
    assert received["body"] == {"stream": True, **body}


def test_default_answer(wire: Wire, fake: HttpFake) -> None:
    events = sse(post(wire, fake, wire.body("no script here")))
    wire.check(events)
    assert len(wire.text_pieces(events)) == 3
    assert wire.text_of(events) == "Hello from upstream"


def test_tokens_without_text(wire: Wire, fake: HttpFake) -> None:
    events = sse(post(wire, fake, wire.body(script(tokens=4))))
    wire.check(events)
    assert wire.text_of(events) == "tok0 tok1 tok2 tok3 "


@pytest.mark.parametrize(
    ("status", "anthropic_type", "openai_type"),
    [
        (429, "rate_limit_error", "requests"),
        (529, "overloaded_error", "server_error"),
        (500, "api_error", "server_error"),
        (400, "invalid_request_error", "invalid_request_error"),
    ],
)
def test_status(
    wire: Wire, fake: HttpFake, status: int, anthropic_type: str, openai_type: str
) -> None:
    body = wire.body(script(mode="status", status=status, retry_after=3))
    answer = post(wire, fake, body)
    assert answer.status_code == status
    assert answer.headers["retry-after"] == "3"
    payload = answer.json()
    if wire.name == "anthropic":
        assert payload["error"]["type"] == anthropic_type
        assert answer.headers["request-id"].startswith("req_")
        expected = wire.fixture["errors"][anthropic_type]["body"]
    else:
        assert payload["error"]["type"] == openai_type
        assert answer.headers["x-request-id"].startswith("req_")
        expected = wire.fixture["errors"]["server_error"]["body"]
    assert shape(payload) == shape(expected)


def test_status_message_override(wire: Wire, fake: HttpFake) -> None:
    answer = post(wire, fake, wire.body(script(mode="status", status=429, message="slow down")))
    assert answer.status_code == 429
    assert answer.json()["error"]["message"] == "slow down"
    assert "retry-after" not in answer.headers


def test_flaky(wire: Wire, fake: HttpFake) -> None:
    flaky = {"mode": "flaky", "key": "f1", "failures": 2, "status": 529, "retry_after": 1}
    body = wire.body(script(**flaky, text="ok"))
    statuses = [post(wire, fake, body).status_code for _ in range(2)]
    assert statuses == [529, 529]
    events = sse(post(wire, fake, body))
    wire.check(events)
    assert wire.text_of(events) == "ok"
    other = wire.body(script(mode="flaky", key="f2"))
    assert post(wire, fake, other).status_code == 500
    assert fake.flaky_seen == {"f1": 3, "f2": 1}


def test_sequence(wire: Wire, fake: HttpFake) -> None:
    answers = [{"mode": "status", "status": 500}, {"text": "second"}, {"mode": "length"}]
    body = wire.body(script(mode="sequence", key="s1", answers=answers[:2]))
    assert post(wire, fake, body).status_code == 500
    for _ in range(2):  # past the end: the last answer again
        assert wire.text_of(sse(post(wire, fake, body))) == "second"
    body = wire.body(script(mode="sequence", key="s2", answers=answers[2:]))
    assert wire.text_of(sse(post(wire, fake, body))) == "Hello from upstream"
    assert fake.sequence_seen == {"s1": 3, "s2": 1}


def test_hang_then_answer(wire: Wire, fake: HttpFake) -> None:
    started = time.monotonic()
    events = sse(post(wire, fake, wire.body(script(mode="hang", seconds=0.3, text="late"))))
    assert time.monotonic() - started >= 0.3
    wire.check(events)
    assert wire.text_of(events) == "late"


def test_hang_ended_by_stop(wire: Wire, fake: HttpFake) -> None:
    outcome: dict[str, Any] = {}

    def call() -> None:
        try:
            outcome["answer"] = post(wire, fake, wire.body(script(mode="hang")))
        except httpx.HTTPError as exc:
            outcome["error"] = exc

    thread = threading.Thread(target=call)
    thread.start()
    deadline = time.monotonic() + 5
    while not fake.requests and time.monotonic() < deadline:
        time.sleep(0.01)
    assert fake.requests, "the request never arrived"
    started = time.monotonic()
    fake.stop()
    thread.join(5)
    assert not thread.is_alive()
    assert time.monotonic() - started < 3
    assert isinstance(outcome.get("error"), httpx.RemoteProtocolError)


def test_delay_ms(wire: Wire, fake: HttpFake) -> None:
    started = time.monotonic()
    events = sse(post(wire, fake, wire.body(script(delay_ms=40))))
    # every event after message_start (Anthropic), response.in_progress (Responses) waits
    assert time.monotonic() - started >= (len(events) - wire.head) * 0.04
    wire.check(events)


def test_auth(wire: Wire) -> None:
    with wire.fake_class(api_key="sekret") as fake:
        assert post(wire, fake, wire.body("hi"), key="sekret").status_code == 200
        answer = post(wire, fake, wire.body("hi"), key="wrong")
        assert answer.status_code == 401
        name = "authentication_error" if wire.name == "anthropic" else "invalid_api_key"
        assert shape(answer.json()) == shape(wire.fixture["errors"][name]["body"])
        assert answer.json()["error"]["type" if wire.name == "anthropic" else "code"] == name


@pytest.mark.parametrize("stream", [False, None])
def test_only_streams(wire: Wire, fake: HttpFake, stream: bool | None) -> None:
    body = wire.body("hi") if stream is None else wire.body("hi", stream=stream)
    headers = wire.headers(None)
    answer = httpx.post(fake.base_url + wire.path, json=body, headers=headers, timeout=10)
    assert answer.status_code == 400
    assert answer.json()["error"]["type"] == "invalid_request_error"
    assert "only streams" in answer.json()["error"]["message"]


def test_unknown_route_and_bad_json(wire: Wire, fake: HttpFake) -> None:
    headers = wire.headers(None)
    assert httpx.post(fake.base_url + "/nope", json={}, headers=headers).status_code == 404
    answer = httpx.post(fake.base_url + wire.path, content=b"{not json", headers=headers)
    assert answer.status_code == 400
    assert fake.requests[-1]["body"] is None


def test_script_from_newest_user_message_holding_one(wire: Wire, fake: HttpFake) -> None:
    body = wire.body(script(text="older"))
    later = [wire.user_message("no script"), wire.user_message(script(text="newer"))]
    key = "messages" if wire.name == "anthropic" else "input"
    body[key] += later + [wire.user_message("plain text again")]
    assert wire.text_of(sse(post(wire, fake, body))) == "newer"


@pytest.mark.parametrize("module", ["tests.fakes.anthropic", "tests.fakes.responses_upstream"])
def test_module_entry_point(module: str) -> None:
    command = [sys.executable, "-m", module, "--port", "0"]
    with subprocess.Popen(command, stdout=subprocess.PIPE, text=True) as proc:
        try:
            assert proc.stdout is not None
            url = proc.stdout.readline().strip()
            assert url.startswith("http://127.0.0.1:")
            assert url.endswith("/v1") == module.endswith("responses_upstream")
        finally:
            proc.terminate()
            proc.wait(5)


# --- Anthropic -----------------------------------------------------------------------------


def anthropic_post(fake: FakeAnthropic, *messages: dict[str, Any], **extra: Any) -> Events:
    body = {"model": "claude-fake", "max_tokens": 64, "messages": list(messages), **extra}
    events = sse(post(ANTHROPIC, fake, body))
    ANTHROPIC.check(events)
    return events


def user(text: str) -> dict[str, Any]:
    return {"role": "user", "content": text}


def blocks(events: Events) -> list[str]:
    return [d["content_block"]["type"] for _, d in events if d["type"] == "content_block_start"]


def test_anthropic_text(anthropic: FakeAnthropic) -> None:
    events = anthropic_post(anthropic, user(script(text="Hi there you")))
    assert types(events) == [
        "message_start",
        "ping",
        "content_block_start",
        *["content_block_delta"] * 3,
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    message = events[0][1]["message"]
    assert message["id"].startswith("msg_")
    assert [message[k] for k in ("model", "role", "content")] == ["claude-fake", "assistant", []]
    assert message["stop_reason"] is None
    assert events[-2][1]["delta"] == {"stop_reason": "end_turn", "stop_sequence": None}
    assert {d["index"] for _, d in events[2:-2]} == {0}


def test_anthropic_length(anthropic: FakeAnthropic) -> None:
    events = anthropic_post(anthropic, user(script(mode="length", tokens=2)))
    assert events[-2][1]["delta"]["stop_reason"] == "max_tokens"
    assert types(events)[-3:] == ["content_block_stop", "message_delta", "message_stop"]


def test_anthropic_reasoning(anthropic: FakeAnthropic) -> None:
    content = script(mode="reasoning", reasoning=["First think.", "Then more."], redacted=True)
    events = anthropic_post(anthropic, user(content))
    assert blocks(events) == ["thinking", "thinking", "redacted_thinking", "text"]
    thinking = deltas(events, "thinking_delta")
    assert [d["thinking"] for d in thinking] == ["First", " think.", "Then", " more."]
    signatures = [d["signature"] for d in deltas(events, "signature_delta")]
    assert len(signatures) == 2 and all(s.startswith("sig-") for s in signatures)
    for index in (0, 1):  # the signature is the last delta of its thinking block
        block = [d for _, d in events if d.get("index") == index]
        assert block[-2]["delta"]["type"] == "signature_delta"
        assert block[-1]["type"] == "content_block_stop"
    redacted = [d for _, d in events if d["type"] == "content_block_start"][2]
    assert redacted["content_block"]["data"].startswith("redacted-")
    assert ANTHROPIC.text_of(events) == "Hello from upstream"


def test_anthropic_tool_calls(anthropic: FakeAnthropic) -> None:
    calls = [
        {"id": "toolu_a", "name": "lookup", "arguments": {"q": "x"}},
        {"name": "now", "arguments": "{}"},
    ]
    prompt = script(mode="tool_calls", text="Let me", calls=calls, chunks=2)
    events = anthropic_post(anthropic, user(prompt))
    assert blocks(events) == ["text", "tool_use", "tool_use"]
    starts = [d["content_block"] for _, d in events if d["type"] == "content_block_start"][1:]
    assert [(s["id"], s["name"], s["input"]) for s in starts] == [
        ("toolu_a", "lookup", {}),
        ("toolu_fake_2", "now", {}),
    ]
    pieces = {i: "" for i in (1, 2)}
    for _, d in events:
        if d["type"] == "content_block_delta" and d["delta"]["type"] == "input_json_delta":
            pieces[d["index"]] += d["delta"]["partial_json"]
    assert json.loads(pieces[1]) == {"q": "x"} and pieces[2] == "{}"
    assert len(deltas(events, "input_json_delta")) == 4
    assert events[-2][1]["delta"]["stop_reason"] == "tool_use"

    default = anthropic_post(anthropic, user(script(mode="tool_calls")))
    start = [d for _, d in default if d["type"] == "content_block_start"]
    assert [s["content_block"]["id"] for s in start] == ["toolu_fake_1"]
    assert start[0]["content_block"]["name"] == "get_weather"
    arguments = "".join(d["partial_json"] for d in deltas(default, "input_json_delta"))
    assert arguments == '{"city": "Paris"}'


def tool_turn(text: str, result: Any) -> list[dict[str, Any]]:
    call = {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {}}
    answer = {"type": "tool_result", "tool_use_id": "toolu_1", "content": result}
    assistant = {"role": "assistant", "content": [call]}
    return [user(text), assistant, {"role": "user", "content": [answer]}]


def test_anthropic_after_tool(anthropic: FakeAnthropic) -> None:
    events = anthropic_post(anthropic, *tool_turn(script(mode="tool_calls"), "15 degrees"))
    assert ANTHROPIC.text_of(events) == "The tool said: 15 degrees"
    assert events[-2][1]["delta"]["stop_reason"] == "end_turn"
    nested = script(mode="tool_calls", after_tool={"mode": "length", "text": "cut"})
    result = [{"type": "text", "text": "upstream: not a script here"}]
    events = anthropic_post(anthropic, *tool_turn(nested, result))
    assert ANTHROPIC.text_of(events) == "cut"
    assert events[-2][1]["delta"]["stop_reason"] == "max_tokens"
    long = anthropic_post(anthropic, *tool_turn("no script", "x" * 500))
    assert ANTHROPIC.text_of(long) == "The tool said: " + "x" * 200


def test_anthropic_error_midstream(anthropic: FakeAnthropic) -> None:
    events = anthropic_post(anthropic, user(script(mode="error_midstream", text="partial answer")))
    head = ["message_start", "ping", "content_block_start"]
    assert types(events) == [*head, "content_block_delta", "content_block_delta", "error"]
    assert events[-1][1]["error"] == {"type": "overloaded_error", "message": "Overloaded"}
    custom = script(mode="error_midstream", type="api_error", message="boom")
    error = anthropic_post(anthropic, user(custom))[-1][1]["error"]
    assert error == {"type": "api_error", "message": "boom"}


def test_anthropic_usage(anthropic: FakeAnthropic) -> None:
    default = anthropic_post(anthropic, user("hi"))
    assert default[-2][1]["usage"] == {
        "input_tokens": 25,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
        "output_tokens": 3,
    }
    usage = {"input_tokens": 7, "output_tokens": 9}
    usage |= {"cache_creation_input_tokens": 5, "cache_read_input_tokens": 4}
    events = anthropic_post(anthropic, user(script(usage=usage)))
    assert events[0][1]["message"]["usage"] == {**usage, "output_tokens": 1}
    assert events[-2][1]["usage"] == usage


def test_anthropic_headers(anthropic: FakeAnthropic) -> None:
    body = {"model": "claude-fake", "max_tokens": 8, "stream": True, "messages": [user("hi")]}
    url = anthropic.base_url + "/v1/messages"
    answer = httpx.post(url, json=body)
    assert answer.status_code == 400
    assert answer.json()["error"]["message"] == "anthropic-version: header is required"
    beta = {"anthropic-version": "2023-06-01", "anthropic-beta": "structured-outputs-2025-11-13"}
    fmt = {"type": "json_schema", "schema": {"type": "object"}}
    assert httpx.post(url, json={**body, "output_format": fmt}, headers=beta).status_code == 200
    assert anthropic.requests[-1]["headers"]["anthropic-beta"] == beta["anthropic-beta"]
    assert anthropic.requests[-1]["body"]["output_format"] == fmt  # type: ignore[index]


# --- Responses -----------------------------------------------------------------------------


def responses_post(fake: FakeResponses, input: Any, **extra: Any) -> Events:  # noqa: A002
    events = sse(post(RESPONSES, fake, {"model": "gpt-fake", "input": input, **extra}))
    encrypted = "reasoning.encrypted_content" in extra.get("include", [])
    RESPONSES.check(events, optional=() if encrypted else ("encrypted_content",))
    return events


def final(events: Events) -> Response:
    return Response.model_validate(events[-1][1]["response"])


def test_responses_text(responses: FakeResponses) -> None:
    events = responses_post(responses, script(text="Hi there you"))
    assert types(events) == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        *["response.output_text.delta"] * 3,
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    created = events[0][1]["response"]
    assert (created["status"], created["output"], created["usage"]) == ("in_progress", [], None)
    done = final(events)
    assert (done.status, done.model, done.output_text) == ("completed", "gpt-fake", "Hi there you")
    assert {e["response"]["id"] for _, e in events if "response" in e} == {done.id}
    assert done.id.startswith("resp_") and done.output[0].id.startswith("msg_")  # type: ignore[union-attr]


def test_responses_echoes_the_request(responses: FakeResponses) -> None:
    tool = {"type": "function", "name": "f", "parameters": {"type": "object"}}
    extra = {"store": False, "background": False, "instructions": "Be brief.", "tools": [tool]}
    response = final(responses_post(responses, "hi", **extra))
    assert response.model_extra == {"store": False}
    assert (response.background, response.instructions) == (False, "Be brief.")
    assert response.tools[0].name == "f"  # type: ignore[union-attr]


def test_responses_with_the_sdk(responses: FakeResponses) -> None:
    client = openai.OpenAI(base_url=responses.base_url, api_key="k", max_retries=0)
    calls = [{"name": "f", "arguments": {"a": 1}}]
    prompt = script(mode="tool_calls", text="Checking.", calls=calls)
    with client.responses.stream(model="gpt-fake", input=prompt) as stream:
        got = stream.get_final_response()
    assert got.output_text == "Checking."
    assert [(o.type, getattr(o, "arguments", None)) for o in got.output] == [
        ("message", None),
        ("function_call", '{"a": 1}'),
    ]


def test_responses_length(responses: FakeResponses) -> None:
    events = responses_post(responses, script(mode="length", text="cut short"))
    assert types(events)[-2:] == ["response.output_item.done", "response.incomplete"]
    assert events[-2][1]["item"]["status"] == "incomplete"
    response = final(events)
    assert response.status == "incomplete"
    assert response.incomplete_details is not None
    assert response.incomplete_details.reason == "max_output_tokens"


@pytest.mark.parametrize("include", [True, False])
def test_responses_reasoning(responses: FakeResponses, include: bool) -> None:
    extra = {"include": ["reasoning.encrypted_content"]} if include else {}
    prompt = script(mode="reasoning", reasoning=["Plan it.", "Do it."])
    events = responses_post(responses, prompt, **extra)
    kinds = types(events)
    assert kinds[2:9] == [
        "response.output_item.added",
        "response.reasoning_summary_part.added",
        "response.reasoning_summary_text.delta",
        "response.reasoning_summary_text.delta",
        "response.reasoning_summary_text.done",
        "response.reasoning_summary_part.done",
        "response.reasoning_summary_part.added",
    ]
    item = [d["item"] for _, d in events if d["type"] == "response.output_item.done"][0]
    assert item["id"].startswith("rs_")
    assert [s["text"] for s in item["summary"]] == ["Plan it.", "Do it."]
    assert ("encrypted_content" in item) is include
    if include:
        assert item["encrypted_content"].startswith("enc-")
    response = final(events)
    assert [o.type for o in response.output] == ["reasoning", "message"]
    assert response.usage is not None and response.usage.output_tokens_details.reasoning_tokens == 4


def test_responses_tool_calls(responses: FakeResponses) -> None:
    events = responses_post(responses, script(mode="tool_calls", chunks=4))
    added = [d["item"] for _, d in events if d["type"] == "response.output_item.added"]
    assert [(i["type"], i["call_id"], i["name"], i["arguments"]) for i in added] == [
        ("function_call", "call_fake_1", "get_weather", "")
    ]
    assert added[0]["id"].startswith("fc_")
    assert types(events).count("response.function_call_arguments.delta") == 4
    done = [d for _, d in events if d["type"] == "response.function_call_arguments.done"][0]
    assert (done["name"], json.loads(done["arguments"])) == ("get_weather", {"city": "Paris"})
    assert types(events)[-1] == "response.completed"


def test_responses_after_tool(responses: FakeResponses) -> None:
    call = {"type": "function_call", "call_id": "call_1", "name": "f", "arguments": "{}"}
    items = [RESPONSES.user_message(script(mode="tool_calls")), call]
    output = {"type": "function_call_output", "call_id": "call_1", "output": "15 degrees"}
    events = responses_post(responses, [*items, output])
    assert RESPONSES.text_of(events) == "The tool said: 15 degrees"
    nested = script(mode="tool_calls", after_tool={"text": "done"})
    parts = {**output, "output": [{"type": "input_text", "text": "x"}]}
    events = responses_post(responses, [RESPONSES.user_message(nested), call, parts])
    assert RESPONSES.text_of(events) == "done"


@pytest.mark.parametrize("error_event", [False, True])
def test_responses_error_midstream(responses: FakeResponses, error_event: bool) -> None:
    prompt = script(mode="error_midstream", text="partial answer", error_event=error_event)
    events = responses_post(responses, prompt)
    tail = ["error", "response.failed"] if error_event else ["response.failed"]
    assert types(events)[-3:] == ["response.output_text.delta"] * (3 - len(tail)) + tail
    response = final(events)
    assert response.status == "failed"
    assert response.error is not None and response.error.code == "server_error"
    assert response.output == []


def test_responses_usage(responses: FakeResponses) -> None:
    usage = {"input_tokens": 7, "output_tokens": 9, "cached_tokens": 5, "reasoning_tokens": 2}
    events = responses_post(responses, script(usage=usage))
    assert events[-1][1]["response"]["usage"] == {
        "input_tokens": 7,
        "input_tokens_details": {"cached_tokens": 5, "cache_write_tokens": 0},
        "output_tokens": 9,
        "output_tokens_details": {"reasoning_tokens": 2},
        "total_tokens": 16,
    }
