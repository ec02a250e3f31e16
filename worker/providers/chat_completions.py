"""Any OpenAI-compatible Chat Completions server (OpenAI, vLLM, Ollama, llama.cpp), over httpx.

Always streams from upstream (``stream: true`` with ``include_usage``), so a cancel takes
effect between chunks even when the client did not ask to stream.

Retries: an attempt that fails before it produced any delta is retried when the failure is
transient (HTTP 429 and 5xx, timeouts, connection errors, a stream that breaks before its first
delta), with exponential backoff and full jitter, or after the upstream's ``retry-after-ms`` /
``retry-after``, up to ``retries`` extra attempts within ``retry_budget_seconds``. Other 4xx are
not retried. Once a delta has been yielded nothing is retried: the caller may already have
streamed it to a client, so a later failure is raised at once.
"""

from __future__ import annotations

import json
import logging
import random
import ssl
import time
from collections.abc import Callable, Generator, Iterator
from contextlib import closing
from functools import lru_cache
from typing import Any

import httpx

from worker.providers.base import (
    Delta,
    Finish,
    FinishReason,
    ProviderError,
    ProviderRequest,
    ReasoningDelta,
    RefusalDelta,
    TextDelta,
    ToolCallDelta,
    Usage,
    message_text,
)
from worker.providers.retry import (
    AttemptFailed,
    backoff_seconds,
    retry_after_seconds,
)

log = logging.getLogger(__name__)

_RETRYABLE_TRANSPORT = (httpx.NetworkError, httpx.RemoteProtocolError, httpx.ProxyError)

_FINISH: dict[str, FinishReason] = {
    "stop": "stop",
    "length": "length",
    "content_filter": "content_filter",
    "tool_calls": "tool_calls",
    "function_call": "tool_calls",
}


@lru_cache(maxsize=1)
def ssl_context() -> ssl.SSLContext:
    """One CA bundle load per process (building a context costs ~20 ms of CPU)."""
    return ssl.create_default_context()


def _content_parts(item: dict[str, Any]) -> str | list[dict[str, Any]]:
    content = item.get("content")
    if isinstance(content, str):
        return content
    parts: list[dict[str, Any]] = []
    for part in content or []:
        ptype = part.get("type")
        if ptype in {"input_text", "output_text"}:
            parts.append({"type": "text", "text": part.get("text", "")})
        elif ptype == "refusal":
            parts.append({"type": "text", "text": part.get("refusal", "")})
        elif ptype == "input_image" and part.get("image_url"):
            parts.append({"type": "image_url", "image_url": {"url": part["image_url"]}})
    if all(p["type"] == "text" for p in parts):
        return "".join(p["text"] for p in parts)
    return parts


def to_messages(request: ProviderRequest) -> list[dict[str, Any]]:
    """Responses input items → Chat Completions messages."""
    messages: list[dict[str, Any]] = []
    if request.instructions:
        messages.append({"role": "system", "content": request.instructions})
    for item in request.input_items:
        itype = item.get("type")
        if itype == "message":
            role = "system" if item["role"] == "developer" else item["role"]
            if role == "assistant":
                messages.append({"role": "assistant", "content": message_text(item)})
            else:
                messages.append({"role": role, "content": _content_parts(item)})
        elif itype == "function_call":
            call = {
                "id": item["call_id"],
                "type": "function",
                "function": {"name": item["name"], "arguments": item.get("arguments", "")},
            }
            last = messages[-1] if messages else None
            if last and last["role"] == "assistant" and "tool_calls" in last:
                last["tool_calls"].append(call)
            else:
                messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
        elif itype == "function_call_output":
            output = item.get("output")
            if not isinstance(output, str):
                output = message_text({"content": output})
            messages.append({"role": "tool", "tool_call_id": item["call_id"], "content": output})
    return messages


def to_tools(tools: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for tool in tools:
        if tool.get("type") != "function":
            continue
        fn = {
            k: tool[k]
            for k in ("name", "description", "parameters", "strict")
            if tool.get(k) is not None
        }
        out.append({"type": "function", "function": fn})
    return out


def _tool_choice(choice: Any) -> Any:
    if isinstance(choice, dict) and choice.get("type") == "function":
        return {"type": "function", "function": {"name": choice["name"]}}
    return choice


def build_body(request: ProviderRequest, upstream_model: str) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": upstream_model,
        "messages": to_messages(request),
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    if request.max_output_tokens is not None:
        body["max_tokens"] = request.max_output_tokens
    if request.temperature is not None:
        body["temperature"] = request.temperature
    if request.top_p is not None:
        body["top_p"] = request.top_p
    tools = to_tools(request.tools)
    if tools:
        body["tools"] = tools
        body["tool_choice"] = _tool_choice(request.tool_choice)
        body["parallel_tool_calls"] = request.parallel_tool_calls
    fmt = (request.text or {}).get("format") or {}
    if fmt.get("type") == "json_schema":
        schema = {k: fmt[k] for k in ("name", "schema", "strict", "description") if k in fmt}
        body["response_format"] = {"type": "json_schema", "json_schema": schema}
    elif fmt.get("type") == "json_object":
        body["response_format"] = {"type": "json_object"}
    effort = (request.reasoning or {}).get("effort")
    if effort:
        body["reasoning_effort"] = effort
    return body


def _error_message(response: httpx.Response) -> str:
    try:
        data = json.loads(response.read())
        err = data.get("error", data)
        if isinstance(err, dict):
            return str(err.get("message") or err)
        return str(err)
    except (ValueError, AttributeError):
        return response.text[:500]


def _chunk_error(chunk: dict[str, Any]) -> str:
    err = chunk["error"]
    return str(err.get("message") if isinstance(err, dict) else err)


def _http_failure(url: str, response: httpx.Response) -> AttemptFailed:
    status = response.status_code
    return AttemptFailed(
        f"upstream {url} answered HTTP {status}",
        _error_message(response),
        code="rate_limit_exceeded" if status == 429 else "server_error",
        status=status,
        retryable=status == 429 or status >= 500,
        retry_after=retry_after_seconds(response.headers, time.time()),
    )


def parse_chunk(chunk: dict[str, Any]) -> Iterator[Delta]:
    """One ``chat.completion.chunk`` → deltas."""
    if chunk.get("error"):
        raise ProviderError(f"upstream sent an error in the stream: {_chunk_error(chunk)}")
    for choice in chunk.get("choices") or []:
        delta = choice.get("delta") or {}
        reasoning = delta.get("reasoning_content") or delta.get("reasoning")
        if reasoning:
            yield ReasoningDelta(reasoning)
        if delta.get("content"):
            yield TextDelta(delta["content"])
        if delta.get("refusal"):
            yield RefusalDelta(delta["refusal"])
        for call in delta.get("tool_calls") or []:
            fn = call.get("function") or {}
            yield ToolCallDelta(
                index=int(call.get("index", 0)),
                call_id=call.get("id"),
                name=fn.get("name"),
                arguments=fn.get("arguments") or "",
            )
        if choice.get("finish_reason"):
            yield Finish(_FINISH.get(choice["finish_reason"], "stop"))
    usage = chunk.get("usage")
    if usage:
        yield Usage(
            input_tokens=int(usage.get("prompt_tokens") or 0),
            output_tokens=int(usage.get("completion_tokens") or 0),
            reasoning_tokens=int(
                (usage.get("completion_tokens_details") or {}).get("reasoning_tokens") or 0
            ),
            cached_tokens=int((usage.get("prompt_tokens_details") or {}).get("cached_tokens") or 0),
        )


class ChatCompletionsProvider:
    def __init__(
        self,
        *,
        base_url: str,
        api_key: str | None,
        retries: int,
        retry_budget_seconds: float,
        upstream_model: str | None = None,
        timeout: float = 60.0,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.api_key = api_key
        self.retries = retries
        self.retry_budget_seconds = retry_budget_seconds
        self.upstream_model = upstream_model
        self.timeout = timeout
        self.transport = transport
        self.sleep = sleep
        self.rng = rng or random.Random()
        self.clock = clock
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        # One client for every job of this route in the process: its connections to the
        # upstream are kept alive and reused (a new client per job cost a connection and a
        # client's set-up each time). No cap on connections: every running job may stream.
        self.client = httpx.Client(
            headers=headers,
            timeout=httpx.Timeout(self.timeout, connect=min(self.timeout, 10.0)),
            verify=ssl_context(),
            transport=self.transport,
            limits=httpx.Limits(max_connections=None, max_keepalive_connections=100),
        )

    def stream(self, request: ProviderRequest) -> Iterator[Delta]:
        url = f"{self.base_url}/chat/completions"
        body = build_body(request, self.upstream_model or request.model)
        started = self.clock()
        attempt = 0
        while True:
            attempt += 1
            output_started = False
            try:
                with closing(self._attempt(self.client, url, body)) as deltas:
                    for delta in deltas:
                        output_started = True
                        yield delta
                return
            except AttemptFailed as failure:
                if output_started:
                    raise failure.midstream() from failure
                wait, why = self._next_wait(failure, attempt, started)
                if wait is None:
                    raise failure.given_up(attempt, why) from failure
                log.warning(
                    "upstream attempt %d of %d failed, retrying in %.2f s: %s",
                    attempt,
                    self.retries + 1,
                    wait,
                    failure,
                )
                self.sleep(wait)

    def _next_wait(
        self, failure: AttemptFailed, attempt: int, started: float
    ) -> tuple[float | None, str]:
        """The wait before the next attempt, or None and why (for the message) to give up."""
        if not failure.retryable or attempt > self.retries:
            return None, ""
        remaining = self.retry_budget_seconds - (self.clock() - started)
        if failure.retry_after is not None:
            if failure.retry_after > remaining:
                return None, (
                    f" (it asked to wait {failure.retry_after:g} s, beyond the "
                    f"{self.retry_budget_seconds:g} s retry budget)"
                )
            return failure.retry_after, ""
        wait = backoff_seconds(attempt, self.rng)
        if wait > remaining:
            return None, f" (the {self.retry_budget_seconds:g} s retry budget ran out)"
        return wait, ""

    def _attempt(
        self, client: httpx.Client, url: str, body: dict[str, Any]
    ) -> Generator[Delta, None, None]:
        """One request; every failure comes out as ``AttemptFailed``."""
        answered = False
        try:
            with client.stream("POST", url, json=body) as response:
                if response.status_code >= 400:
                    raise _http_failure(url, response)
                answered = True
                yield from self._events(url, response)
        except httpx.TimeoutException as exc:
            detail = f"{type(exc).__name__}, timeout {self.timeout:g} s"
            raise AttemptFailed(f"upstream {url} timed out", detail) from exc
        except httpx.TransportError as exc:
            head = (
                f"upstream {url} broke off its answer"
                if answered
                else f"could not reach upstream {url}"
            )
            detail = str(exc) or type(exc).__name__
            retryable = isinstance(exc, _RETRYABLE_TRANSPORT)
            raise AttemptFailed(head, detail, retryable=retryable) from exc

    def _events(self, url: str, response: httpx.Response) -> Iterator[Delta]:
        finished = False
        for line in response.iter_lines():
            if not line.startswith("data:"):
                continue
            data = line[5:].strip()
            if data == "[DONE]":
                return
            try:
                chunk = json.loads(data)
            except json.JSONDecodeError as exc:
                raise AttemptFailed(
                    f"upstream {url} sent a chunk that is not JSON", data[:200]
                ) from exc
            if chunk.get("error"):
                raise AttemptFailed(
                    f"upstream {url} sent an error in the stream", _chunk_error(chunk)
                )
            for delta in parse_chunk(chunk):
                finished = finished or isinstance(delta, Finish)
                yield delta
        if not finished:
            raise AttemptFailed(
                f"upstream {url} ended its stream before a finish_reason or [DONE]",
                f"HTTP {response.status_code}, {response.headers.get('content-type', '')}",
            )
