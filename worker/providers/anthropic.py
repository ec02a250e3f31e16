"""Anthropic's Messages API, streaming, over httpx (not the ``anthropic`` SDK: see below).

Request: instructions and system/developer messages → ``system``; messages with text, image
and document blocks; function calls and their outputs → ``tool_use`` / ``tool_result``
blocks; function tools → ``tools`` with ``input_schema``; ``tool_choice`` and
``parallel_tool_calls`` → ``tool_choice`` (``auto`` / ``any`` / ``tool`` / ``none`` with
``disable_parallel_tool_use``); ``reasoning.effort`` → extended ``thinking`` with a token
budget; ``max_output_tokens`` → ``max_tokens`` (required there: the route's default when the
request gives none); ``text.format`` ``json_schema`` → ``output_config.format``.

Stream: ``text_delta`` → text, ``thinking_delta`` → reasoning summary text, a thinking block's
``signature`` (or a ``redacted_thinking`` block's ``data``) → the reasoning item's
``encrypted_content``, so a later turn can send the block back as Anthropic requires in a tool
loop; ``tool_use`` + ``input_json_delta`` → function calls; ``stop_reason`` → the finish
(``max_tokens`` → incomplete); usage with cache read and write tokens. HTTP 429 and 529
(``overloaded_error``) are retried like 5xx, after ``retry-after`` when given
(``worker.providers.http_stream``); an in-stream ``error`` event before any output is retried
too.

Why httpx and not the official SDK: the SDK has its own retry loop and timeouts, which would
run inside resq's (one retry budget per job, ``RESQ_UPSTREAM_RETRY_BUDGET_SECONDS``, the same
log lines and error messages for every provider), and a cancel here is closing the response
stream, which the other providers already do through ``StreamingHttpProvider``. The wire format
is small and documented; the fake upstream in ``tests/fakes/anthropic.py`` checks it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx

from shared.media import Media, media_of
from worker.providers.base import (
    Delta,
    Finish,
    FinishReason,
    ProviderRequest,
    ReasoningDelta,
    ReasoningDone,
    TextDelta,
    ToolCallDelta,
    Usage,
    message_text,
)
from worker.providers.http_stream import JSON, StreamingHttpProvider, event_json, server_events
from worker.providers.retry import AttemptFailed

API_VERSION = "2023-06-01"
# Thinking budgets for ``reasoning.effort``; Anthropic's minimum budget is 1024 tokens.
THINKING_BUDGETS = {"minimal": 1024, "low": 2048, "medium": 8192, "high": 16384, "xhigh": 32768}
MIN_THINKING_BUDGET = 1024
REDACTED = "redacted_thinking:"  # marks a redacted block's data in ``encrypted_content``
JSON_OBJECT_NOTE = "Answer with a single JSON object and nothing else."
_STOP: dict[str, FinishReason] = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "tool_use": "tool_calls",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "refusal": "content_filter",
}
_RETRYABLE_ERRORS = {"overloaded_error", "api_error", "rate_limit_error", "timeout_error"}


# ---- request --------------------------------------------------------------------------


def _media_block(media: Media) -> JSON:
    if media.kind == "image":
        if media.url is not None:
            return {"type": "image", "source": {"type": "url", "url": media.url}}
        source = {"type": "base64", "media_type": media.media_type, "data": media.data}
        return {"type": "image", "source": source}
    source = {"type": "base64", "media_type": media.media_type, "data": media.data}
    block: JSON = {"type": "document", "source": source}
    if media.filename:
        block["title"] = media.filename
    return block


def _user_blocks(content: Any) -> list[JSON]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    blocks: list[JSON] = []
    for part in content or []:
        if not isinstance(part, dict):
            continue
        if part.get("type") in ("input_text", "output_text", "text"):
            if part.get("text"):
                blocks.append({"type": "text", "text": part["text"]})
            continue
        media = media_of(part)
        if media is not None:
            blocks.append(_media_block(media))
    return blocks


def _reasoning_block(item: JSON) -> JSON | None:
    """A reasoning item this provider made, as the block it came from; None for any other
    (a reasoning item from another provider means nothing to Anthropic)."""
    secret = item.get("encrypted_content")
    if not secret:
        return None
    if secret.startswith(REDACTED):
        return {"type": "redacted_thinking", "data": secret.removeprefix(REDACTED)}
    thinking = "".join(str(p.get("text", "")) for p in item.get("summary") or [])
    return {"type": "thinking", "thinking": thinking, "signature": secret}


def _arguments(raw: Any) -> Any:
    try:
        value = json.loads(raw or "{}")
    except (TypeError, json.JSONDecodeError):
        return {}
    return value if isinstance(value, dict) else {}


@dataclass
class Conversation:
    """Messages built turn by turn: consecutive blocks of one role share a message."""

    system: list[str] = field(default_factory=list)
    messages: list[JSON] = field(default_factory=list)

    def add(self, role: str, blocks: list[JSON]) -> None:
        if not blocks:
            return
        if self.messages and self.messages[-1]["role"] == role:
            self.messages[-1]["content"].extend(blocks)
        else:
            self.messages.append({"role": role, "content": list(blocks)})


def to_messages(request: ProviderRequest) -> Conversation:
    out = Conversation(system=[request.instructions] if request.instructions else [])
    for item in request.input_items:
        itype = item.get("type", "message")
        if itype == "message":
            role = item.get("role")
            if role in ("system", "developer"):
                out.system.append(message_text(item))
            elif role == "assistant":
                text = message_text(item)
                out.add("assistant", [{"type": "text", "text": text}] if text else [])
            else:
                out.add("user", _user_blocks(item.get("content")))
        elif itype == "reasoning":
            block = _reasoning_block(item)
            out.add("assistant", [block] if block else [])
        elif itype == "function_call":
            block = {
                "type": "tool_use",
                "id": item["call_id"],
                "name": item["name"],
                "input": _arguments(item.get("arguments")),
            }
            out.add("assistant", [block])
        elif itype == "function_call_output":
            output = item.get("output")
            content = output if isinstance(output, str) else message_text({"content": output})
            out.add(
                "user",
                [{"type": "tool_result", "tool_use_id": item["call_id"], "content": content}],
            )
    return out


def _tool_choice(choice: Any, parallel: bool) -> JSON:
    if isinstance(choice, dict) and choice.get("type") == "function":
        out: JSON = {"type": "tool", "name": choice["name"]}
    elif choice == "required":
        out = {"type": "any"}
    elif choice == "none":
        return {"type": "none"}
    else:
        out = {"type": "auto"}
    if not parallel:
        out["disable_parallel_tool_use"] = True
    return out


def _thinking_allowed(messages: list[JSON]) -> bool:
    """Anthropic wants the thinking block back in front of a tool loop's last tool use; a turn
    that cannot send it (the calls came from elsewhere) goes without thinking."""
    last = next((m for m in reversed(messages) if m["role"] == "assistant"), None)
    if last is None or not any(b["type"] == "tool_use" for b in last["content"]):
        return True
    return last["content"][0]["type"] in ("thinking", "redacted_thinking")


def build_body(request: ProviderRequest, upstream_model: str, default_max_tokens: int) -> JSON:
    conversation = to_messages(request)
    max_tokens = request.max_output_tokens or default_max_tokens
    body: JSON = {
        "model": upstream_model,
        "max_tokens": max_tokens,
        "messages": conversation.messages,
        "stream": True,
    }
    fmt = (request.text or {}).get("format") or {}
    system = list(conversation.system)
    if fmt.get("type") == "json_schema":
        body["output_config"] = {
            "format": {"type": "json_schema", "schema": fmt.get("schema") or {}}
        }
    elif fmt.get("type") == "json_object":
        system.append(JSON_OBJECT_NOTE)
    if system:
        body["system"] = "\n\n".join(s for s in system if s)
    tools = [t for t in request.tools if t.get("type") == "function"]
    if tools:
        body["tools"] = [
            {
                "name": t["name"],
                **({"description": t["description"]} if t.get("description") else {}),
                "input_schema": t.get("parameters") or {"type": "object", "properties": {}},
            }
            for t in tools
        ]
        body["tool_choice"] = _tool_choice(request.tool_choice, request.parallel_tool_calls)
    effort = (request.reasoning or {}).get("effort")
    budget = min(THINKING_BUDGETS.get(str(effort), 0), max_tokens - 1)
    thinking = budget >= MIN_THINKING_BUDGET and _thinking_allowed(conversation.messages)
    if thinking:
        body["thinking"] = {"type": "enabled", "budget_tokens": budget}
    else:  # thinking takes no sampling changes; 1.0 is the default either way
        if request.temperature is not None and request.temperature != 1.0:
            body["temperature"] = request.temperature
        if request.top_p is not None and request.top_p != 1.0:
            body["top_p"] = request.top_p
    return body


# ---- stream ---------------------------------------------------------------------------


@dataclass
class _Read:
    """What one streamed message has said so far."""

    input_tokens: int = 0
    cache_read: int = 0
    cache_write: int = 0
    output_tokens: int = 0
    stop_reason: str | None = None
    blocks: dict[int, JSON] = field(default_factory=dict)  # open blocks by index
    arguments: set[int] = field(default_factory=set)  # tool blocks that got input deltas

    def usage(self) -> Usage:
        return Usage(
            input_tokens=self.input_tokens + self.cache_read + self.cache_write,
            output_tokens=self.output_tokens,
            cached_tokens=self.cache_read,
            cache_write_tokens=self.cache_write,
        )

    def count(self, usage: Any) -> None:
        if not isinstance(usage, dict):
            return
        self.input_tokens = int(usage.get("input_tokens") or self.input_tokens)
        self.cache_read = int(usage.get("cache_read_input_tokens") or self.cache_read)
        self.cache_write = int(usage.get("cache_creation_input_tokens") or self.cache_write)
        self.output_tokens = int(usage.get("output_tokens") or self.output_tokens)


class AnthropicProvider(StreamingHttpProvider):
    name = "anthropic"

    @property
    def url(self) -> str:
        return f"{self.base_url}/v1/messages"

    def headers(self) -> dict[str, str]:
        headers = {"anthropic-version": API_VERSION}
        if self.api_key:
            headers[self.auth_header or "x-api-key"] = self.api_key
        return headers

    def body(self, request: ProviderRequest) -> JSON:
        default = self.max_output_tokens or 4096
        return build_body(request, self.upstream_model or request.model, default)

    def deltas(self, url: str, response: httpx.Response) -> Iterator[Delta]:
        read = _Read()
        for event in server_events(response.iter_lines()):
            data = event_json(url, event)
            kind = data.get("type") or event.name
            if kind == "message_stop":
                yield read.usage()
                yield Finish(_STOP.get(str(read.stop_reason), "stop"))
                return
            if kind == "error":
                raise _stream_error(url, data)
            yield from parse_event(kind, data, read)
        raise AttemptFailed(
            f"upstream {url} ended its stream before message_stop",
            f"HTTP {response.status_code}, {response.headers.get('content-type', '')}",
        )


def _stream_error(url: str, data: JSON) -> AttemptFailed:
    raw = data.get("error")
    error: JSON = raw if isinstance(raw, dict) else {}
    etype = str(error.get("type") or "error")
    return AttemptFailed(
        f"upstream {url} sent an error in the stream",
        f"{etype}: {error.get('message') or 'no message'}",
        code="rate_limit_exceeded" if etype == "rate_limit_error" else "server_error",
        retryable=etype in _RETRYABLE_ERRORS,
    )


def parse_event(kind: str, data: JSON, read: _Read) -> Iterator[Delta]:
    """One Messages stream event → deltas; ``read`` keeps usage and the open blocks."""
    if kind == "message_start":
        read.count((data.get("message") or {}).get("usage"))
    elif kind == "message_delta":
        read.stop_reason = (data.get("delta") or {}).get("stop_reason") or read.stop_reason
        read.count(data.get("usage"))
    elif kind == "content_block_start":
        index, block = int(data.get("index", 0)), dict(data.get("content_block") or {})
        read.blocks[index] = block
        if block.get("type") == "text" and block.get("text"):
            yield TextDelta(block["text"])
        elif block.get("type") == "tool_use":
            yield ToolCallDelta(index=index, call_id=block.get("id"), name=block.get("name"))
    elif kind == "content_block_delta":
        yield from _block_delta(int(data.get("index", 0)), data.get("delta") or {}, read)
    elif kind == "content_block_stop":
        yield from _block_stop(int(data.get("index", 0)), read)


def _block_delta(index: int, delta: JSON, read: _Read) -> Iterator[Delta]:
    dtype = delta.get("type")
    if dtype == "text_delta":
        yield TextDelta(str(delta.get("text", "")))
    elif dtype == "thinking_delta":
        yield ReasoningDelta(str(delta.get("thinking", "")))
    elif dtype == "signature_delta":
        block = read.blocks.setdefault(index, {"type": "thinking"})
        block["signature"] = str(block.get("signature") or "") + str(delta.get("signature", ""))
    elif dtype == "input_json_delta":
        read.arguments.add(index)
        yield ToolCallDelta(index=index, arguments=str(delta.get("partial_json", "")))


def _block_stop(index: int, read: _Read) -> Iterator[Delta]:
    block = read.blocks.pop(index, {})
    btype = block.get("type")
    if btype == "thinking":
        yield ReasoningDone(block.get("signature") or None)
    elif btype == "redacted_thinking":
        yield ReasoningDone(REDACTED + str(block.get("data") or ""))
    elif btype == "tool_use" and index not in read.arguments:
        yield ToolCallDelta(index=index, arguments=json.dumps(block.get("input") or {}))
