"""An upstream that speaks the Responses API itself (OpenAI, Azure OpenAI, vLLM's and others'
``/v1/responses``), over httpx.

resq is the store and the queue, so every request goes upstream with ``stream: true`` and
``store: false``, never with the upstream's own ``background``; it always asks for
``reasoning.encrypted_content``, because with ``store: false`` a reasoning item can only be
shown to the model again (a tool loop, a continued chain) with its encrypted content. The
upstream's events become resq's deltas (``worker.stream_state`` makes resq's own events, ids
and sequence numbers from them); a function call keeps the upstream's ``call_id``.

Wire shapes: the Responses streaming events (``response.output_text.delta``,
``response.reasoning_summary_text.delta``, ``response.output_item.added`` / ``.done``,
``response.function_call_arguments.delta``, ``response.completed`` / ``.incomplete`` /
``.failed``, ``error``), as the openai SDK's ``ResponseStreamEvent`` types define them; examples
with their documentation sources in tests/fakes/wire/openai_responses.json.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx

from shared.media import media_of
from worker.providers.base import (
    Delta,
    Finish,
    FinishReason,
    ProviderRequest,
    ReasoningDelta,
    ReasoningDone,
    RefusalDelta,
    TextDelta,
    ToolCallDelta,
    Usage,
)
from worker.providers.http_stream import JSON, StreamingHttpProvider, event_json, server_events
from worker.providers.retry import AttemptFailed

ENCRYPTED = "reasoning.encrypted_content"
# Keys an input item may carry upstream, by type; resq's own bookkeeping (ids, statuses of
# items the upstream never stored) stays behind.
_ITEM_KEYS: dict[str, tuple[str, ...]] = {
    "message": ("type", "role", "content"),
    "function_call": ("type", "call_id", "name", "arguments"),
    "function_call_output": ("type", "call_id", "output"),
    "reasoning": ("type", "id", "summary", "encrypted_content"),
}
_INCOMPLETE: dict[str, FinishReason] = {
    "max_output_tokens": "length",
    "content_filter": "content_filter",
}
_RETRYABLE_CODES = {"server_error", "rate_limit_exceeded", None}


def _part(part: Any) -> Any:
    """A content part as the upstream takes it: files always as a ``data:`` URL."""
    if not isinstance(part, dict) or part.get("type") != "input_file":
        return part
    media = media_of(part)
    if media is None:
        return part
    out = {"type": "input_file", "file_data": media.data_url}
    if media.filename:
        out["filename"] = media.filename
    return out


def to_input(items: list[JSON]) -> list[JSON]:
    """resq's context items → upstream input items. A reasoning item without encrypted
    content is left out: with ``store: false`` the upstream could not read it."""
    out: list[JSON] = []
    for item in items:
        itype = item.get("type", "message")
        keys = _ITEM_KEYS.get(itype)
        if keys is None:
            continue
        if itype == "reasoning" and not item.get("encrypted_content"):
            continue
        sent = {k: item[k] for k in keys if k in item}
        sent["type"] = itype
        if itype == "message" and isinstance(sent.get("content"), list):
            sent["content"] = [_part(p) for p in sent["content"]]
        out.append(sent)
    return out


def build_body(
    request: ProviderRequest, upstream_model: str, default_max_tokens: int | None = None
) -> JSON:
    body: JSON = {
        "model": upstream_model,
        "input": to_input(request.input_items),
        "stream": True,
        "store": False,
        "include": [ENCRYPTED],
    }
    if request.instructions:
        body["instructions"] = request.instructions
    max_tokens = request.max_output_tokens or default_max_tokens
    if max_tokens is not None:
        body["max_output_tokens"] = max_tokens
    # 1.0 is the echo's default, and what the upstream assumes: a reasoning model refuses
    # the parameter even at its default, so it is sent only when a request changed it.
    if request.temperature is not None and request.temperature != 1.0:
        body["temperature"] = request.temperature
    if request.top_p is not None and request.top_p != 1.0:
        body["top_p"] = request.top_p
    tools = [t for t in request.tools if t.get("type") == "function"]
    if tools:
        body["tools"] = tools
        body["tool_choice"] = request.tool_choice
        body["parallel_tool_calls"] = request.parallel_tool_calls
    reasoning = {k: v for k, v in (request.reasoning or {}).items() if v is not None}
    if reasoning:
        body["reasoning"] = reasoning
    fmt = (request.text or {}).get("format") or {}
    if fmt.get("type") in ("json_schema", "json_object"):
        body["text"] = {"format": {k: v for k, v in fmt.items() if v is not None}}
    return body


def _usage(response: JSON) -> Usage | None:
    usage = response.get("usage")
    if not isinstance(usage, dict):
        return None
    return Usage(
        input_tokens=int(usage.get("input_tokens") or 0),
        output_tokens=int(usage.get("output_tokens") or 0),
        reasoning_tokens=int(
            (usage.get("output_tokens_details") or {}).get("reasoning_tokens") or 0
        ),
        cached_tokens=int((usage.get("input_tokens_details") or {}).get("cached_tokens") or 0),
    )


class ResponsesProvider(StreamingHttpProvider):
    name = "openai_responses"

    @property
    def url(self) -> str:
        return f"{self.base_url}/responses"

    def body(self, request: ProviderRequest) -> JSON:
        return build_body(request, self.upstream_model or request.model, self.max_output_tokens)

    def deltas(self, url: str, response: httpx.Response) -> Iterator[Delta]:
        calls = False
        for event in server_events(response.iter_lines()):
            if event.data == "[DONE]":
                continue
            data = event_json(url, event)
            kind = data.get("type") or event.name
            if kind in ("response.completed", "response.incomplete"):
                yield from self._end(kind, data.get("response") or {}, calls)
                return
            if kind in ("response.failed", "error"):
                raise self._failure(url, kind, data)
            for delta in parse_event(kind, data):
                calls = calls or isinstance(delta, ToolCallDelta)
                yield delta
        raise AttemptFailed(
            f"upstream {url} ended its stream before response.completed",
            f"HTTP {response.status_code}, {response.headers.get('content-type', '')}",
        )

    @staticmethod
    def _end(kind: str, final: JSON, calls: bool) -> Iterator[Delta]:
        usage = _usage(final)
        if usage is not None:
            yield usage
        if kind == "response.incomplete":
            reason = (final.get("incomplete_details") or {}).get("reason")
            yield Finish(_INCOMPLETE.get(str(reason), "length"))
        else:
            yield Finish("tool_calls" if calls else "stop")

    @staticmethod
    def _failure(url: str, kind: str, data: JSON) -> AttemptFailed:
        error = (data.get("response") or {}).get("error") if kind == "response.failed" else data
        error = error if isinstance(error, dict) else {}
        code = error.get("code")
        return AttemptFailed(
            f"upstream {url} sent {kind}",
            str(error.get("message") or "no message"),
            code="rate_limit_exceeded" if code == "rate_limit_exceeded" else "server_error",
            retryable=code in _RETRYABLE_CODES,
        )


def parse_event(kind: str, data: JSON) -> Iterator[Delta]:
    """One upstream stream event → deltas (the lifecycle events and the text's ``.done``
    events carry nothing new)."""
    if kind == "response.output_text.delta":
        yield TextDelta(str(data.get("delta", "")))
    elif kind == "response.refusal.delta":
        yield RefusalDelta(str(data.get("delta", "")))
    elif kind in ("response.reasoning_summary_text.delta", "response.reasoning_text.delta"):
        part = int(data.get("summary_index", data.get("content_index", 0)) or 0)
        yield ReasoningDelta(str(data.get("delta", "")), part=part)
    elif kind == "response.function_call_arguments.delta":
        yield ToolCallDelta(index=int(data.get("output_index", 0)), arguments=str(data["delta"]))
    elif kind == "response.output_item.added":
        item = data.get("item") or {}
        if item.get("type") == "function_call":
            yield ToolCallDelta(
                index=int(data.get("output_index", 0)),
                call_id=item.get("call_id"),
                name=item.get("name"),
                arguments=str(item.get("arguments") or ""),
            )
    elif kind == "response.output_item.done":
        item = data.get("item") or {}
        if item.get("type") == "reasoning":
            yield ReasoningDone(item.get("encrypted_content"))
