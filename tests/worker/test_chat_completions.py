"""The Chat Completions provider against a real (fake) upstream over HTTP, and its pure
request mapping (``build_body`` / ``to_messages`` / ``to_tools``)."""

from __future__ import annotations

import email.utils
import json
import logging
import random
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Generator, Iterator
from datetime import UTC, datetime
from http import HTTPStatus
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
from worker.providers.retry import backoff_seconds, retry_after_seconds

API_KEY = "sk-upstream-test-key"
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def upstream() -> Iterator[FakeUpstream]:
    with FakeUpstream() as fake:
        yield fake


def _provider(fake: FakeUpstream, **kwargs: Any) -> ChatCompletionsProvider:
    """A provider of the fake; no retries unless asked (see the retry tests below)."""
    options: dict[str, Any] = {"api_key": API_KEY, "upstream_model": "fake-model", "timeout": 5.0}
    options |= {"retries": 0, "retry_budget_seconds": 0.0}
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
    url = f"{upstream.base_url}/chat/completions"
    assert error.message == f"upstream {url} timed out after 1 attempt: ReadTimeout, timeout 0.5 s"
    assert (error.status, error.code) == (None, "server_error")


def test_stall_between_chunks_times_out(upstream: FakeUpstream) -> None:
    deltas: list[Delta] = []
    with pytest.raises(
        ProviderError, match="timed out after 1 attempt: ReadTimeout, timeout 0.3 s"
    ):
        provider = _provider(upstream, timeout=0.3)
        for delta in provider.stream(_request({"mode": "text", "tokens": 3, "delay_ms": 1000})):
            deltas.append(delta)

    assert deltas == []


def test_connection_refused() -> None:
    port = _free_port()
    provider = ChatCompletionsProvider(
        base_url=f"http://127.0.0.1:{port}/v1", api_key=API_KEY, retries=0, retry_budget_seconds=0
    )
    error = _fail(provider, _request())

    url = f"http://127.0.0.1:{port}/v1/chat/completions"
    assert error.message.startswith(f"could not reach upstream {url} after 1 attempt: ")
    assert (error.status, error.code) == (None, "server_error")


def test_error_chunk_midstream(upstream: FakeUpstream) -> None:
    script = {"mode": "error_midstream", "text": "Partial answer", "message": "kaboom"}
    deltas: list[Delta] = []
    with pytest.raises(ProviderError) as info:
        for delta in _provider(upstream).stream(_request(script)):
            deltas.append(delta)

    assert deltas == [TextDelta("Partial"), TextDelta(" answer")]
    assert info.value.message == (
        f"upstream {upstream.base_url}/chat/completions sent an error in the stream: kaboom "
        "(failed mid-stream after output had started; not retried)"
    )


def test_stream_cut_before_finish_is_an_error(upstream: FakeUpstream) -> None:
    deltas: list[Delta] = []
    with pytest.raises(ProviderError) as info:
        for delta in _provider(upstream).stream(_request({"mode": "truncate", "text": "Half"})):
            deltas.append(delta)

    assert deltas == [TextDelta("Half")]
    assert info.value.message == (
        f"upstream {upstream.base_url}/chat/completions ended its stream before a finish_reason "
        "or [DONE]: HTTP 200, text/event-stream; charset=utf-8 "
        "(failed mid-stream after output had started; not retried)"
    )
    assert (info.value.status, info.value.code) == (None, "server_error")


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
    provider = ChatCompletionsProvider(
        base_url=upstream.base_url + "/", api_key=None, retries=0, retry_budget_seconds=0
    )
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


# --- retries ------------------------------------------------------------------------------


class _MaxRandom(random.Random):
    """Full jitter's worst case: every draw is the top of its range."""

    def uniform(self, a: float, b: float) -> float:
        return b


class _Clock:
    """A monotonic clock that only moves when the provider sleeps."""

    def __init__(self) -> None:
        self.now = 0.0
        self.waits: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.waits.append(seconds)
        self.now += seconds


def _retrying(
    fake: FakeUpstream,
    waits: list[float],
    *,
    retries: int = 4,
    budget: float = 60.0,
    **kwargs: Any,
) -> ChatCompletionsProvider:
    """A retrying provider whose waits are recorded in ``waits`` instead of slept."""
    options: dict[str, Any] = {"retries": retries, "retry_budget_seconds": budget}
    return _provider(fake, sleep=waits.append, **options, **kwargs)


def _flaky(**script: Any) -> dict[str, Any]:
    return {"mode": "flaky", "key": uuid.uuid4().hex, **script}


HELLO = [
    TextDelta("Hello"),
    TextDelta(" from"),
    TextDelta(" upstream"),
    Finish("stop"),
    Usage(input_tokens=11, output_tokens=3),
]


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"retry_after": 2}, [2.0, 2.0]),
        ({"retry_after": "0.75"}, [0.75, 0.75]),
        ({"retry_after_ms": 250}, [0.25, 0.25]),
        ({"retry_after": 9, "retry_after_ms": 1500}, [1.5, 1.5]),  # the ms header wins
    ],
    ids=["retry-after", "retry-after-fraction", "retry-after-ms", "both"],
)
def test_429_twice_then_200_completes_after_the_asked_waits(
    upstream: FakeUpstream, headers: dict[str, Any], expected: list[float]
) -> None:
    waits: list[float] = []
    script = _flaky(failures=2, status=429, **headers)
    deltas = _collect(_retrying(upstream, waits), _request(script))

    assert deltas == HELLO
    assert waits == expected
    assert len(upstream.requests) == 3
    assert all(r["body"] == upstream.requests[0]["body"] for r in upstream.requests)


def test_retry_after_as_an_http_date_is_honoured(upstream: FakeUpstream) -> None:
    waits: list[float] = []
    when = email.utils.formatdate(time.time() + 30, usegmt=True)
    script = _flaky(status=503, retry_after=when)
    deltas = _collect(_retrying(upstream, waits), _request(script))

    assert deltas == HELLO
    (wait,) = waits
    assert 28 < wait <= 31  # an HTTP date has whole seconds


@pytest.mark.parametrize("status", [500, 502, 503, 504, 529])
def test_5xx_is_retried_with_backoff(upstream: FakeUpstream, status: int) -> None:
    waits: list[float] = []
    deltas = _collect(_retrying(upstream, waits), _request(_flaky(status=status)))

    assert deltas == HELLO
    assert len(upstream.requests) == 2
    (wait,) = waits
    assert 0 <= wait <= 0.5


def test_500_always_fails_after_retries_plus_one_attempts(upstream: FakeUpstream) -> None:
    waits: list[float] = []
    script = {"mode": "status", "status": 500, "message": "boom from upstream"}
    provider = _retrying(upstream, waits, retries=3, rng=random.Random(7))
    error = _fail(provider, _request(script))

    url = f"{upstream.base_url}/chat/completions"
    assert error.message == f"upstream {url} answered HTTP 500 after 4 attempts: boom from upstream"
    assert (error.status, error.code) == (500, "server_error")
    assert len(upstream.requests) == 4
    draws = random.Random(7)
    assert waits == [draws.uniform(0, 0.5), draws.uniform(0, 1.0), draws.uniform(0, 2.0)]


def test_429_always_keeps_rate_limit_exceeded(upstream: FakeUpstream) -> None:
    waits: list[float] = []
    error = _fail(_retrying(upstream, waits, retries=2), _request(_flaky(failures=99, status=429)))

    url = f"{upstream.base_url}/chat/completions"
    assert error.message == (
        f"upstream {url} answered HTTP 429 after 3 attempts: Rate limit reached for fake-model."
    )
    assert (error.status, error.code) == (429, "rate_limit_exceeded")
    assert len(waits) == 2


def test_retry_after_beyond_the_budget_fails_at_once(upstream: FakeUpstream) -> None:
    waits: list[float] = []
    script = _flaky(failures=99, status=429, retry_after=30)
    error = _fail(_retrying(upstream, waits, budget=10), _request(script))

    url = f"{upstream.base_url}/chat/completions"
    assert error.message == (
        f"upstream {url} answered HTTP 429 after 1 attempt (it asked to wait 30 s, beyond the "
        "10 s retry budget): Rate limit reached for fake-model."
    )
    assert error.code == "rate_limit_exceeded"
    assert waits == []
    assert len(upstream.requests) == 1


def test_backoff_stops_when_the_next_wait_would_overrun_the_budget(upstream: FakeUpstream) -> None:
    clock = _Clock()
    provider = _provider(
        upstream,
        retries=10,
        retry_budget_seconds=3.0,
        sleep=clock.sleep,
        clock=clock,
        rng=_MaxRandom(),
    )
    error = _fail(provider, _request({"mode": "status", "status": 503}))

    # Waits of 0.5 and 1.0 fit in 3 s; the next (2.0) would end at 3.5 s.
    assert clock.waits == [0.5, 1.0]
    assert len(upstream.requests) == 3
    url = f"{upstream.base_url}/chat/completions"
    assert error.message == (
        f"upstream {url} answered HTTP 503 after 3 attempts (the 3 s retry budget ran out): "
        "The server had an error while processing your request."
    )


def test_time_spent_in_attempts_counts_against_the_budget(upstream: FakeUpstream) -> None:
    waits: list[float] = []
    provider = _retrying(upstream, waits, budget=0.5, timeout=0.6, rng=_MaxRandom())
    started = time.monotonic()
    error = _fail(provider, _request({"mode": "hang", "seconds": 10}))

    assert time.monotonic() - started < 2
    assert waits == []
    url = f"{upstream.base_url}/chat/completions"
    assert error.message == (
        f"upstream {url} timed out after 1 attempt (the 0.5 s retry budget ran out): "
        "ReadTimeout, timeout 0.6 s"
    )


@pytest.mark.parametrize("status", [400, 401, 403, 404, 409, 422])
def test_other_4xx_are_not_retried(upstream: FakeUpstream, status: int) -> None:
    waits: list[float] = []
    error = _fail(_retrying(upstream, waits), _request(_flaky(status=status, retry_after=0)))

    url = f"{upstream.base_url}/chat/completions"
    phrase = HTTPStatus(status).phrase
    assert error.message == f"upstream {url} answered HTTP {status} after 1 attempt: {phrase}"
    assert (error.status, error.code) == (status, "server_error")
    assert waits == []
    assert len(upstream.requests) == 1


def test_connection_refused_is_retried_then_fails() -> None:
    waits: list[float] = []
    port = _free_port()
    provider = ChatCompletionsProvider(
        base_url=f"http://127.0.0.1:{port}/v1",
        api_key=API_KEY,
        retries=2,
        retry_budget_seconds=60,
        sleep=waits.append,
    )
    error = _fail(provider, _request())

    url = f"http://127.0.0.1:{port}/v1/chat/completions"
    assert error.message.startswith(f"could not reach upstream {url} after 3 attempts: ")
    assert "Connection refused" in error.message
    assert (error.status, error.code) == (None, "server_error")
    assert len(waits) == 2


def test_timeout_before_the_first_byte_is_retried(upstream: FakeUpstream) -> None:
    waits: list[float] = []
    provider = _retrying(upstream, waits, retries=1, timeout=0.3)
    error = _fail(provider, _request({"mode": "hang", "seconds": 10}))

    url = f"{upstream.base_url}/chat/completions"
    assert error.message == f"upstream {url} timed out after 2 attempts: ReadTimeout, timeout 0.3 s"
    assert len(upstream.requests) == 2
    assert len(waits) == 1


def test_stream_error_before_any_delta_is_retried(upstream: FakeUpstream) -> None:
    waits: list[float] = []
    script = _flaky(fail_as="stream_error", message="overloaded, try again")
    deltas = _collect(_retrying(upstream, waits), _request(script))

    assert deltas == HELLO
    assert len(upstream.requests) == 2
    assert len(waits) == 1


def test_stream_error_before_any_delta_counts_as_an_attempt(upstream: FakeUpstream) -> None:
    waits: list[float] = []
    script = _flaky(failures=99, fail_as="stream_error", message="overloaded")
    error = _fail(_retrying(upstream, waits, retries=1), _request(script))

    url = f"{upstream.base_url}/chat/completions"
    assert (
        error.message == f"upstream {url} sent an error in the stream after 2 attempts: overloaded"
    )
    assert (error.status, error.code) == (None, "server_error")


@pytest.mark.parametrize(
    ("script", "message"),
    [
        (
            {"mode": "error_midstream", "text": "Partial answer", "message": "kaboom"},
            "sent an error in the stream: kaboom",
        ),
        (
            {"mode": "truncate", "text": "Partial answer"},
            "ended its stream before a finish_reason or [DONE]: "
            "HTTP 200, text/event-stream; charset=utf-8",
        ),
    ],
    ids=["error-chunk", "truncated"],
)
def test_failure_after_output_started_is_not_retried(
    upstream: FakeUpstream, script: dict[str, Any], message: str
) -> None:
    waits: list[float] = []
    deltas: list[Delta] = []
    with pytest.raises(ProviderError) as info:
        for delta in _retrying(upstream, waits).stream(_request(script)):
            deltas.append(delta)

    assert deltas == [TextDelta("Partial"), TextDelta(" answer")]
    url = f"{upstream.base_url}/chat/completions"
    assert info.value.message == (
        f"upstream {url} {message} (failed mid-stream after output had started; not retried)"
    )
    assert (info.value.status, info.value.code) == (None, "server_error")
    assert waits == []
    assert len(upstream.requests) == 1


def _chunk(delta: dict[str, Any]) -> bytes:
    choice = {"index": 0, "delta": delta, "finish_reason": None}
    return f"data: {json.dumps({'choices': [choice]})}\n\n".encode()


class _BreakingStream(httpx.SyncByteStream):
    """A 200 body that sends ``chunks`` and then fails like a dropped connection."""

    def __init__(self, chunks: list[bytes], error: httpx.TransportError) -> None:
        self.chunks = chunks
        self.error = error

    def __iter__(self) -> Iterator[bytes]:
        yield from self.chunks
        raise self.error


@pytest.mark.parametrize(
    ("error", "message"),
    [
        (httpx.ReadError("connection reset by peer"), "broke off its answer: connection reset"),
        (httpx.ReadTimeout("read timed out"), "timed out: ReadTimeout, timeout 5 s"),
    ],
    ids=["reset", "stall"],
)
def test_connection_lost_after_output_started_is_not_retried(
    upstream: FakeUpstream, error: httpx.TransportError, message: str
) -> None:
    calls: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        body = _BreakingStream([_chunk({"role": "assistant"}), _chunk({"content": "Par"})], error)
        return httpx.Response(200, headers={"content-type": "text/event-stream"}, stream=body)

    waits: list[float] = []
    provider = _retrying(upstream, waits, transport=httpx.MockTransport(handler))
    deltas: list[Delta] = []
    with pytest.raises(ProviderError) as info:
        for delta in provider.stream(_request()):
            deltas.append(delta)

    assert deltas == [TextDelta("Par")]
    url = f"{upstream.base_url}/chat/completions"
    assert info.value.message.startswith(f"upstream {url} {message}")
    assert info.value.message.endswith(" (failed mid-stream after output had started; not retried)")
    assert (len(calls), waits) == (1, [])


def test_connection_lost_before_any_delta_is_retried(upstream: FakeUpstream) -> None:
    calls: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        if len(calls) == 1:
            body = _BreakingStream([_chunk({"role": "assistant"})], httpx.ReadError("reset"))
            return httpx.Response(200, headers={"content-type": "text/event-stream"}, stream=body)
        finish = {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
        content = _chunk({"content": "Again"}) + f"data: {json.dumps(finish)}\n\n".encode()
        return httpx.Response(200, headers={"content-type": "text/event-stream"}, content=content)

    waits: list[float] = []
    provider = _retrying(upstream, waits, transport=httpx.MockTransport(handler))

    assert _collect(provider, _request()) == [TextDelta("Again"), Finish("stop")]
    assert len(calls) == 2
    assert len(waits) == 1


def test_backoff_is_full_jitter_within_bounds() -> None:
    rng = random.Random(42)
    for attempt, ceiling in [(1, 0.5), (2, 1.0), (3, 2.0), (4, 4.0), (5, 8.0), (6, 8.0), (60, 8.0)]:
        draws = [backoff_seconds(attempt, rng) for _ in range(2000)]
        assert all(0 <= d <= ceiling for d in draws)
        assert max(draws) > 0.95 * ceiling  # it reaches the top of its range ...
        assert min(draws) < 0.05 * ceiling  # ... and the bottom: full jitter, not equal jitter


def test_retry_waits_over_http_stay_within_the_backoff_bounds(upstream: FakeUpstream) -> None:
    waits: list[float] = []
    provider = _retrying(upstream, waits, retries=6, budget=1000, rng=random.Random(3))
    _fail(provider, _request({"mode": "status", "status": 502}))

    assert len(waits) == 6
    for wait, ceiling in zip(waits, [0.5, 1.0, 2.0, 4.0, 8.0, 8.0], strict=True):
        assert 0 <= wait <= ceiling


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({}, None),
        ({"retry-after": "7"}, 7.0),
        ({"retry-after": "2.5"}, 2.5),
        ({"retry-after": "-3"}, 0.0),
        ({"retry-after": "nan"}, None),
        ({"retry-after": "soon"}, None),
        ({"retry-after-ms": "1500"}, 1.5),
        ({"retry-after-ms": "1500", "retry-after": "9"}, 1.5),
        ({"retry-after-ms": "later", "retry-after": "9"}, 9.0),
        ({"retry-after": "Wed, 21 Oct 2015 07:28:12 GMT"}, 12.0),
        ({"retry-after": "Wed, 21 Oct 2015 07:27:00 GMT"}, 0.0),
        ({"retry-after": "Wed, 21 Oct 2015 07:28:05 -0000"}, 5.0),
    ],
)
def test_retry_after_seconds(headers: dict[str, str], expected: float | None) -> None:
    now = datetime(2015, 10, 21, 7, 28, tzinfo=UTC).timestamp()

    assert retry_after_seconds(httpx.Headers(headers), now) == expected


def test_each_retry_is_logged_without_secrets(
    upstream: FakeUpstream, caplog: pytest.LogCaptureFixture
) -> None:
    waits: list[float] = []
    caplog.set_level(logging.WARNING, logger="worker.providers.chat_completions")
    _fail(_retrying(upstream, waits, retries=2), _request({"mode": "status", "status": 503}))

    url = f"{upstream.base_url}/chat/completions"
    messages = [r.getMessage() for r in caplog.records]
    assert [r.levelno for r in caplog.records] == [logging.WARNING, logging.WARNING]
    for attempt, (message, wait) in enumerate(zip(messages, waits, strict=True), start=1):
        assert message == (
            f"upstream attempt {attempt} of 3 failed, retrying in {wait:.2f} s: "
            f"upstream {url} answered HTTP 503: "
            "The server had an error while processing your request."
        )
    assert API_KEY not in caplog.text
    assert "Bearer" not in caplog.text


def test_no_retries_when_retries_is_zero(upstream: FakeUpstream) -> None:
    waits: list[float] = []
    error = _fail(_retrying(upstream, waits, retries=0), _request(_flaky(status=503)))

    assert "answered HTTP 503 after 1 attempt: " in error.message
    assert (waits, len(upstream.requests)) == ([], 1)


def test_fake_flaky_counts_failures_per_key(upstream: FakeUpstream) -> None:
    a, b = _flaky(status=429, retry_after=3), _flaky(status=503)
    answers = []
    with httpx.Client(timeout=5) as client:
        for script in (a, b, a, b, a):
            body = build_body(_request(script), "fake-model")
            response = client.post(f"{upstream.base_url}/chat/completions", json=body)
            answers.append((response.status_code, response.headers.get("retry-after")))

    assert answers == [(429, "3"), (503, None), (200, None), (200, None), (200, None)]
    assert upstream.flaky_seen == {a["key"]: 3, b["key"]: 2}


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
            ChatCompletionsProvider(
                base_url=base_url, api_key=API_KEY, retries=0, retry_budget_seconds=0
            ),
            _request({"mode": "text", "text": "From a process"}),
        )
    finally:
        process.terminate()
        process.wait(timeout=5)
        if process.stdout is not None:
            process.stdout.close()

    assert base_url == f"http://127.0.0.1:{port}/v1"
    assert deltas[:3] == [TextDelta("From"), TextDelta(" a"), TextDelta(" process")]
