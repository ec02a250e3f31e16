"""The Chat Completions provider against a real (fake) upstream over HTTP, and its pure
request mapping (``build_body`` / ``to_messages`` / ``to_tools``)."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from tests.fakes.upstream import FakeUpstream
from worker.providers.base import (
    Delta,
    Finish,
    ProviderError,
    ProviderRequest,
    ReasoningDelta,
    RefusalDelta,
    TextDelta,
    ToolCallDelta,
    Usage,
)
from worker.providers.chat_completions import ChatCompletionsProvider, build_body, to_messages

API_KEY = "sk-upstream-test-key"
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def upstream() -> Iterator[FakeUpstream]:
    with FakeUpstream() as fake:
        yield fake


def _provider(fake: FakeUpstream, **kwargs: Any) -> ChatCompletionsProvider:
    options: dict[str, Any] = {"api_key": API_KEY, "upstream_model": "fake-model", "timeout": 5.0}
    return ChatCompletionsProvider(base_url=fake.base_url, **{**options, **kwargs})


def _request(script: dict[str, Any] | None = None, **kwargs: Any) -> ProviderRequest:
    text = "Say hello."
    if script is not None:
        text += f"\nupstream: {json.dumps(script)}"
    items = [{"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}]
    return ProviderRequest(model="resq-model", input_items=items, **kwargs)


def _collect(provider: ChatCompletionsProvider, request: ProviderRequest) -> list[Delta]:
    return list(provider.stream(request))


def _fail(provider: ChatCompletionsProvider, request: ProviderRequest) -> ProviderError:
    with pytest.raises(ProviderError) as info:
        _collect(provider, request)
    return info.value


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _sse(fake: FakeUpstream, body: dict[str, Any]) -> tuple[httpx.Headers, list[str]]:
    """The raw ``data:`` payloads of one streamed answer."""
    with (
        httpx.Client(timeout=5) as client,
        client.stream("POST", f"{fake.base_url}/chat/completions", json=body) as response,
    ):
        assert response.status_code == 200
        lines = [line for line in response.iter_lines() if line]
        return response.headers, lines


# --- the provider over HTTP ---------------------------------------------------------------


def test_text_stream_maps_to_text_finish_and_usage(upstream: FakeUpstream) -> None:
    deltas = _collect(_provider(upstream), _request())

    assert deltas == [
        TextDelta("Hello"),
        TextDelta(" from"),
        TextDelta(" upstream"),
        Finish("stop"),
        Usage(input_tokens=11, output_tokens=3, reasoning_tokens=0, cached_tokens=0),
    ]
    text = "".join(d.text for d in deltas if isinstance(d, TextDelta))
    assert text == "Hello from upstream"


def test_usage_details_are_mapped(upstream: FakeUpstream) -> None:
    usage = {"prompt_tokens": 42, "completion_tokens": 9}
    usage |= {"reasoning_tokens": 4, "cached_tokens": 30}
    deltas = _collect(_provider(upstream), _request({"mode": "text", "text": "Hi", "usage": usage}))

    assert deltas == [
        TextDelta("Hi"),
        Finish("stop"),
        Usage(input_tokens=42, output_tokens=9, reasoning_tokens=4, cached_tokens=30),
    ]


def test_custom_text_in_tokens_chunks(upstream: FakeUpstream) -> None:
    script = {"mode": "text", "text": "abcdefgh", "tokens": 4, "delay_ms": 5}
    deltas = _collect(_provider(upstream), _request(script))

    assert deltas == [
        TextDelta("ab"),
        TextDelta("cd"),
        TextDelta("ef"),
        TextDelta("gh"),
        Finish("stop"),
        Usage(input_tokens=11, output_tokens=4),
    ]


def test_length_finish(upstream: FakeUpstream) -> None:
    deltas = _collect(_provider(upstream), _request({"mode": "length", "text": "Cut short"}))

    assert deltas == [
        TextDelta("Cut"),
        TextDelta(" short"),
        Finish("length"),
        Usage(input_tokens=11, output_tokens=2),
    ]


def test_tool_call_deltas(upstream: FakeUpstream) -> None:
    script = {
        "mode": "tool_calls",
        "chunks": 2,
        "calls": [
            {"id": "call_a", "name": "get_weather", "arguments": {"city": "Paris"}},
            {"id": "call_b", "name": "get_time", "arguments": '{"tz":"UTC"}'},
        ],
    }
    deltas = _collect(_provider(upstream), _request(script))

    assert deltas == [
        ToolCallDelta(index=0, call_id="call_a", name="get_weather", arguments='{"city": '),
        ToolCallDelta(index=0, arguments='"Paris"}'),
        ToolCallDelta(index=1, call_id="call_b", name="get_time", arguments='{"tz":'),
        ToolCallDelta(index=1, arguments='"UTC"}'),
        Finish("tool_calls"),
        Usage(input_tokens=11, output_tokens=4),
    ]
    args = "".join(d.arguments for d in deltas if isinstance(d, ToolCallDelta) and d.index == 0)
    assert json.loads(args) == {"city": "Paris"}


def test_reasoning_deltas_come_before_text(upstream: FakeUpstream) -> None:
    script = {"mode": "reasoning", "reasoning": "Think first.", "text": "Done"}
    deltas = _collect(_provider(upstream), _request(script))

    assert deltas == [
        ReasoningDelta("Think"),
        ReasoningDelta(" first."),
        TextDelta("Done"),
        Finish("stop"),
        Usage(input_tokens=11, output_tokens=3, reasoning_tokens=2),
    ]


def test_refusal_deltas(upstream: FakeUpstream) -> None:
    deltas = _collect(_provider(upstream), _request({"mode": "refusal", "text": "No way"}))

    assert deltas == [
        RefusalDelta("No"),
        RefusalDelta(" way"),
        Finish("stop"),
        Usage(input_tokens=11, output_tokens=2),
    ]


def test_upstream_500_is_a_server_error_with_its_message(upstream: FakeUpstream) -> None:
    script = {"mode": "status", "status": 500, "message": "boom from upstream"}
    error = _fail(_provider(upstream), _request(script))

    assert (error.status, error.code) == (500, "server_error")
    assert "HTTP 500" in error.message
    assert "boom from upstream" in error.message
    assert upstream.base_url in error.message


def test_upstream_429_is_rate_limit_exceeded(upstream: FakeUpstream) -> None:
    script = {"mode": "status", "status": 429, "retry_after": 7}
    error = _fail(_provider(upstream), _request(script))

    assert (error.status, error.code) == (429, "rate_limit_exceeded")
    assert "Rate limit reached for fake-model." in error.message


def test_upstream_error_body_that_is_not_json(upstream: FakeUpstream) -> None:
    """A proxy in front of the upstream may answer HTML; its text still reaches the message."""

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(502, text="<html>Bad Gateway</html>")

    provider = _provider(upstream, transport=httpx.MockTransport(handler))
    error = _fail(provider, _request())

    assert (error.status, error.code) == (502, "server_error")
    assert "<html>Bad Gateway</html>" in error.message


def test_hanging_upstream_times_out(upstream: FakeUpstream) -> None:
    started = time.monotonic()
    error = _fail(_provider(upstream, timeout=0.5), _request({"mode": "hang", "seconds": 10}))

    assert time.monotonic() - started < 3
    assert "timed out after 0.5 s" in error.message
    assert (error.status, error.code) == (None, "server_error")


def test_stall_between_chunks_times_out(upstream: FakeUpstream) -> None:
    deltas: list[Delta] = []
    with pytest.raises(ProviderError, match="timed out after 0.3 s"):
        provider = _provider(upstream, timeout=0.3)
        for delta in provider.stream(_request({"mode": "text", "tokens": 3, "delay_ms": 1000})):
            deltas.append(delta)

    assert deltas == []


def test_connection_refused() -> None:
    port = _free_port()
    provider = ChatCompletionsProvider(base_url=f"http://127.0.0.1:{port}/v1", api_key=API_KEY)
    error = _fail(provider, _request())

    assert error.message.startswith(f"could not reach upstream http://127.0.0.1:{port}/v1")
    assert (error.status, error.code) == (None, "server_error")


def test_error_chunk_midstream(upstream: FakeUpstream) -> None:
    script = {"mode": "error_midstream", "text": "Partial answer", "message": "kaboom"}
    deltas: list[Delta] = []
    with pytest.raises(ProviderError) as info:
        for delta in _provider(upstream).stream(_request(script)):
            deltas.append(delta)

    assert deltas == [TextDelta("Partial"), TextDelta(" answer")]
    assert info.value.message == "upstream sent an error in the stream: kaboom"


def test_stream_cut_before_finish_is_an_error(upstream: FakeUpstream) -> None:
    deltas: list[Delta] = []
    with pytest.raises(ProviderError, match="ended before") as info:
        for delta in _provider(upstream).stream(_request({"mode": "truncate", "text": "Half"})):
            deltas.append(delta)

    assert deltas == [TextDelta("Half")]
    assert info.value.code == "server_error"


def test_closing_the_stream_abandons_the_upstream_call(upstream: FakeUpstream) -> None:
    stream = _provider(upstream).stream(_request({"mode": "text", "tokens": 200, "delay_ms": 20}))
    started = time.monotonic()

    assert isinstance(stream, Generator)
    assert next(stream) == TextDelta("tok0 ")
    stream.close()
    assert time.monotonic() - started < 1


def test_sends_the_key_model_and_body(upstream: FakeUpstream) -> None:
    request = _request(max_output_tokens=50)
    _collect(_provider(upstream), request)

    (received,) = upstream.requests
    assert (received["method"], received["path"]) == ("POST", "/v1/chat/completions")
    assert received["headers"]["authorization"] == f"Bearer {API_KEY}"
    assert received["headers"]["content-type"] == "application/json"
    assert received["body"] == build_body(request, "fake-model")


def test_no_key_no_authorization_header_and_request_model_used(upstream: FakeUpstream) -> None:
    provider = ChatCompletionsProvider(base_url=upstream.base_url + "/", api_key=None)
    request = _request()
    _collect(provider, request)

    (received,) = upstream.requests
    assert received["path"] == "/v1/chat/completions"
    assert "authorization" not in received["headers"]
    assert received["body"] == build_body(request, "resq-model")


def test_rejected_key_reports_401(upstream: FakeUpstream) -> None:
    upstream.api_key = "sk-the-right-one"
    error = _fail(_provider(upstream), _request())

    assert error.status == 401
    assert "Incorrect API key provided." in error.message


# --- the request mapping ----------------------------------------------------------------


def test_to_messages_maps_roles_history_and_tool_calls() -> None:
    items: list[dict[str, Any]] = [
        {"type": "message", "role": "developer", "content": "Be brief."},
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Hi"}]},
        {
            "type": "message",
            "role": "assistant",
            "content": [{"type": "output_text", "text": "Hello!", "annotations": []}],
        },
        {
            "type": "message",
            "role": "user",
            "content": [
                {"type": "input_text", "text": "Weather here?"},
                {"type": "input_image", "image_url": "https://example.com/a.png"},
            ],
        },
        {"type": "function_call", "call_id": "call_1", "name": "where", "arguments": "{}"},
        {"type": "function_call", "call_id": "call_2", "name": "weather", "arguments": '{"c":1}'},
        {"type": "function_call_output", "call_id": "call_1", "output": "Paris"},
        {
            "type": "function_call_output",
            "call_id": "call_2",
            "output": [{"type": "input_text", "text": "Sunny"}],
        },
    ]
    request = ProviderRequest(model="m", input_items=items, instructions="You are resq.")

    assert to_messages(request) == [
        {"role": "system", "content": "You are resq."},
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello!"},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "Weather here?"},
                {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}},
            ],
        },
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "where", "arguments": "{}"},
                },
                {
                    "id": "call_2",
                    "type": "function",
                    "function": {"name": "weather", "arguments": '{"c":1}'},
                },
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "Paris"},
        {"role": "tool", "tool_call_id": "call_2", "content": "Sunny"},
    ]


def test_build_body_minimal() -> None:
    request = ProviderRequest(
        model="m", input_items=[{"type": "message", "role": "user", "content": "Hi"}]
    )

    assert build_body(request, "up-model") == {
        "model": "up-model",
        "messages": [{"role": "user", "content": "Hi"}],
        "stream": True,
        "stream_options": {"include_usage": True},
    }


def test_build_body_maps_every_option() -> None:
    params = {"type": "object", "properties": {"city": {"type": "string"}}}
    request = ProviderRequest(
        model="m",
        input_items=[{"type": "message", "role": "user", "content": "Hi"}],
        tools=[
            {
                "type": "function",
                "name": "get_weather",
                "description": "Weather for a city",
                "parameters": params,
                "strict": True,
            },
            {"type": "function", "name": "noop", "description": None, "parameters": None},
        ],
        tool_choice={"type": "function", "name": "get_weather"},
        parallel_tool_calls=False,
        max_output_tokens=128,
        temperature=0.2,
        top_p=0.9,
        reasoning={"effort": "low"},
        text={"format": {"type": "json_schema", "name": "out", "schema": params, "strict": True}},
    )

    assert build_body(request, "up-model") == {
        "model": "up-model",
        "messages": [{"role": "user", "content": "Hi"}],
        "stream": True,
        "stream_options": {"include_usage": True},
        "max_tokens": 128,
        "temperature": 0.2,
        "top_p": 0.9,
        "tools": [
            {
                "type": "function",
                "function": {
                    "name": "get_weather",
                    "description": "Weather for a city",
                    "parameters": params,
                    "strict": True,
                },
            },
            {"type": "function", "function": {"name": "noop"}},
        ],
        "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
        "parallel_tool_calls": False,
        "response_format": {
            "type": "json_schema",
            "json_schema": {"name": "out", "schema": params, "strict": True},
        },
        "reasoning_effort": "low",
    }


def test_build_body_json_object_format_and_string_tool_choice() -> None:
    request = ProviderRequest(
        model="m",
        input_items=[],
        tools=[{"type": "function", "name": "f", "parameters": {"type": "object"}}],
        tool_choice="required",
        text={"format": {"type": "json_object"}},
    )
    body = build_body(request, "up")

    assert body["tool_choice"] == "required"
    assert body["parallel_tool_calls"] is True
    assert body["response_format"] == {"type": "json_object"}


# --- the fake upstream speaks the real wire format ----------------------------------------


def _assert_known_fields(chunk: ChatCompletionChunk, allowed_extra: set[str]) -> None:
    """Every key the fake sends is one the SDK knows (a misspelt key would pass validation)."""
    assert not chunk.model_extra
    for choice in chunk.choices:
        assert not choice.model_extra
        assert set(choice.delta.model_extra or {}) <= allowed_extra
        for call in choice.delta.tool_calls or []:
            assert not call.model_extra
            assert call.function is None or not call.function.model_extra


@pytest.mark.parametrize(
    ("script", "finish"),
    [
        (None, "stop"),
        ({"mode": "length"}, "length"),
        ({"mode": "reasoning"}, "stop"),
        ({"mode": "refusal"}, "stop"),
        ({"mode": "tool_calls", "text": "Let me check."}, "tool_calls"),
    ],
)
def test_fake_chunks_are_sdk_chunks(
    upstream: FakeUpstream, script: dict[str, Any] | None, finish: str
) -> None:
    body = build_body(_request(script), "fake-model")
    headers, lines = _sse(upstream, body)

    assert headers["content-type"].startswith("text/event-stream")
    assert lines[-1] == "data: [DONE]"
    chunks = [ChatCompletionChunk.model_validate_json(line[5:]) for line in lines[:-1]]
    for chunk in chunks:
        _assert_known_fields(chunk, allowed_extra={"reasoning_content"})
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[-2].choices[0].finish_reason == finish
    assert all(c.choices[0].finish_reason is None for c in chunks[:-2])
    usage = chunks[-1]
    assert usage.choices == []
    assert usage.usage is not None
    assert usage.usage.total_tokens == usage.usage.prompt_tokens + usage.usage.completion_tokens
    assert all(c.usage is None for c in chunks[:-1])


def test_fake_sends_no_usage_chunk_unless_asked(upstream: FakeUpstream) -> None:
    body = {"model": "m", "stream": True, "messages": [{"role": "user", "content": "Hi"}]}
    _, lines = _sse(upstream, body)

    chunks = [json.loads(line[5:]) for line in lines[:-1]]
    assert [c["choices"][0]["finish_reason"] for c in chunks] == [None, None, None, None, "stop"]
    assert all("usage" not in c for c in chunks)


def test_fake_non_stream_and_models_through_the_sdk(upstream: FakeUpstream) -> None:
    with openai.OpenAI(base_url=upstream.base_url, api_key=API_KEY, max_retries=0) as client:
        script = {"mode": "tool_calls", "name": "f", "arguments": {"a": 1}, "call_id": "call_z"}
        completion = client.chat.completions.create(
            model="fake-model",
            messages=[{"role": "user", "content": f"upstream: {json.dumps(script)}"}],
        )
        models = client.models.list()
        with pytest.raises(openai.RateLimitError) as info:
            content = 'upstream: {"mode": "status", "status": 429}'
            client.chat.completions.create(
                model="fake-model", messages=[{"role": "user", "content": content}]
            )

    assert isinstance(completion, ChatCompletion)
    (choice,) = completion.choices
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    (call,) = choice.message.tool_calls or []
    assert call.model_dump() == {
        "id": "call_z",
        "type": "function",
        "function": {"name": "f", "arguments": '{"a": 1}'},
    }
    assert [m.id for m in models.data] == ["fake-model"]
    assert info.value.code == "rate_limit_exceeded"
    assert info.value.type == "requests"


def test_fake_serves_others_while_one_request_hangs(upstream: FakeUpstream) -> None:
    outcome: list[BaseException] = []

    def hang() -> None:
        body = build_body(_request({"mode": "hang", "seconds": 30}), "m")
        try:
            httpx.post(f"{upstream.base_url}/chat/completions", json=body, timeout=10)
        except httpx.HTTPError as exc:
            outcome.append(exc)

    thread = threading.Thread(target=hang)
    thread.start()
    while not upstream.requests:
        time.sleep(0.01)
    started = time.monotonic()
    deltas = _collect(_provider(upstream), _request())
    elapsed = time.monotonic() - started
    upstream.stop()  # ends the hang at once
    thread.join(timeout=5)

    assert deltas[-2:] == [Finish("stop"), Usage(input_tokens=11, output_tokens=3)]
    assert elapsed < 1
    assert not thread.is_alive()
    assert [type(e) for e in outcome] == [httpx.RemoteProtocolError]


def test_fake_runs_as_a_subprocess() -> None:
    port = _free_port()
    command = [sys.executable, "-m", "tests.fakes.upstream", "--port", str(port)]
    command += ["--api-key", API_KEY]
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        base_url = process.stdout.readline().strip()
        deltas = _collect(
            ChatCompletionsProvider(base_url=base_url, api_key=API_KEY),
            _request({"mode": "text", "text": "From a process"}),
        )
    finally:
        process.terminate()
        process.wait(timeout=5)
        if process.stdout is not None:
            process.stdout.close()

    assert base_url == f"http://127.0.0.1:{port}/v1"
    assert deltas[:3] == [TextDelta("From"), TextDelta(" a"), TextDelta(" process")]
