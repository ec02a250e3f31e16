"""Any OpenAI-compatible Chat Completions server (OpenAI, vLLM, Ollama, llama.cpp), over httpx.

Always streams from upstream (``stream: true`` with ``include_usage``), so a cancel takes
effect between chunks even when the client did not ask to stream. Retries and the connection
pool: ``worker.providers.http_stream``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx

from shared.media import Media, media_of
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
from worker.providers.http_stream import StreamingHttpProvider, event_json, server_events
from worker.providers.retry import AttemptFailed

_FINISH: dict[str, FinishReason] = {
    "stop": "stop",
    "length": "length",
    "content_filter": "content_filter",
    "tool_calls": "tool_calls",
    "function_call": "tool_calls",
}


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
        elif (media := media_of(part)) is not None:
            parts.append(_media_part(media))
    if all(p["type"] == "text" for p in parts):
        return "".join(p["text"] for p in parts)
    return parts


def _media_part(media: Media) -> dict[str, Any]:
    """An image as ``image_url`` (a URL or a data URL), a file as OpenAI's ``file`` part."""
    if media.kind == "image":
        image: dict[str, Any] = {"url": media.url or media.data_url}
        if media.detail:
            image["detail"] = media.detail
        return {"type": "image_url", "image_url": image}
    file: dict[str, Any] = {"file_data": media.data_url}
    if media.filename:
        file["filename"] = media.filename
    return {"type": "file", "file": file}


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


def _chunk_error(chunk: dict[str, Any]) -> str:
    err = chunk["error"]
    return str(err.get("message") if isinstance(err, dict) else err)


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


class ChatCompletionsProvider(StreamingHttpProvider):
    name = "chat_completions"

    @property
    def url(self) -> str:
        return f"{self.base_url}/chat/completions"

    def body(self, request: ProviderRequest) -> dict[str, Any]:
        return build_body(request, self.upstream_model or request.model)

    def deltas(self, url: str, response: httpx.Response) -> Iterator[Delta]:
        finished = False
        for event in server_events(response.iter_lines()):
            if event.data.strip() == "[DONE]":
                return
            chunk = event_json(url, event)
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
