"""A fake OpenAI Responses API server on 127.0.0.1, streaming only, for tests.

It answers ``POST /v1/responses`` with ``"stream": true`` in the real wire shapes (the
examples, each with its documentation source, are in ``wire/openai_responses.json``):
``response.created`` and ``response.in_progress`` (status ``in_progress``), then per output
item ``response.output_item.added`` ... ``response.output_item.done`` with the reasoning
summary, message content and function call argument events in between, then one terminal
event: ``response.completed``, ``response.incomplete`` or ``response.failed`` carrying the full
response object (``output``, ``usage``). Every event has a ``sequence_number`` from 0; there
is no ``[DONE]``. Errors are ``{"error": {"message", "type", "param", "code"}}`` (as
``tests/fakes/upstream.py`` sends them). Every answer has an ``x-request-id`` header.

``FakeResponses().start()`` (a background thread) or ``python -m
tests.fakes.responses_upstream --port N`` (prints its base URL once it listens). ``base_url``
is ``http://127.0.0.1:PORT/v1``: the client posts to ``base_url + "/responses"``. With
``api_key`` set, ``Authorization: Bearer <key>`` is required (401 otherwise). A request
without ``"stream": true`` gets a 400 ``invalid_request_error``: this fake only streams.

Scripts: a line ``upstream: {json}`` in a user message of ``input`` (a string, or a list of
items whose user messages hold a string or ``input_text`` parts); the newest user message
holding one wins. No script: ``Hello from upstream`` in three ``response.output_text.delta``
events. Modes (every key optional):

- ``text``: ``text``, ``tokens`` (number of chunks; without ``text`` the chunks are
  ``"tok0 "``, ``"tok1 "``, ...), ``delay_ms`` (sleep before each event after
  ``response.in_progress``).
- ``length``: like ``text``, but the message item ends with status ``incomplete`` and the
  terminal event is ``response.incomplete`` with ``incomplete_details: {"reason":
  "max_output_tokens"}``.
- ``reasoning``: ``reasoning`` (a string, or a list of strings: one summary part each, one
  ``response.reasoning_summary_text.delta`` per word) in a ``reasoning`` item ``rs_fake_N``
  before the message. Its ``output_item.done`` carries ``encrypted_content`` ``"enc-<id>"``
  only when the request's ``include`` holds ``"reasoning.encrypted_content"``.
- ``tool_calls``: ``calls`` (a list of ``{"id", "name", "arguments"}``) or, for one call,
  ``call_id`` / ``name`` / ``arguments`` (a string or a JSON object; default ``get_weather``
  / ``{"city": "Paris"}``); call ids default to ``call_fake_1``, ...; each call is a
  ``function_call`` item ``fc_fake_N_i``; ``chunks`` (argument deltas per call, default 3);
  ``text`` (optional) in a message item before the calls. Ends with ``response.completed``.
- ``after_tool``: a script used instead of this one when the last ``input`` item is a
  ``function_call_output``. Without it such a request is answered with the text ``"The tool
  said: "`` + the first 200 characters of that output's text.
- ``status``: HTTP ``status`` (default 500) with the error body; ``message``, ``type`` and
  ``code`` override the error's; ``retry_after`` sets the ``retry-after`` header.
- ``flaky``: the first ``failures`` (default 1) requests with this ``key`` fail as ``status``
  would (``status``, ``retry_after``, ``message``), later ones answer as ``text`` would.
- ``sequence``: the n-th request with this ``key`` (from 0) is answered by the script
  ``answers[min(n, len(answers) - 1)]`` (any mode).
- ``hang``: send nothing for ``seconds`` (default 30; ``stop()`` ends it early, with the
  connection closed unanswered), then answer as ``text``.
- ``error_midstream``: the message item's start and text deltas, then ``response.failed``
  (status ``failed``, ``error: {"code", "message"}`` from ``code`` (default
  ``server_error``) and ``message``) and the stream ends. With ``error_event: true`` an
  ``error`` event (``{"code", "message", "param"}``) comes just before ``response.failed``.

Every streaming mode takes ``delay_ms`` and ``usage`` (overrides of ``input_tokens``,
``output_tokens``, ``cached_tokens``, ``reasoning_tokens``). Defaults: ``input_tokens`` 25,
``cached_tokens`` 0, ``reasoning_tokens`` one per summary word, ``output_tokens`` one per
streamed chunk (summary words, text chunks, argument pieces); ``total_tokens`` is their sum.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tests.fakes.http_fake import (
    Call,
    Event,
    HttpFake,
    Plan,
    ScriptedHandler,
    serve_main,
    text_of,
    user_texts,
)
from tests.fakes.upstream import error_body

DEFAULT_INPUT_TOKENS = 25
ENCRYPTED_REASONING = "reasoning.encrypted_content"
FAILED_MESSAGE = "The server had an error while processing your request."
_CREATED = 1_700_000_000
_EMPTY_TEXT = {"type": "output_text", "annotations": [], "logprobs": [], "text": ""}


def user_texts_of(body: dict[str, Any]) -> list[str]:
    """The text of every user message of ``input`` (a string is one), newest first."""
    items = body.get("input")
    return [items] if isinstance(items, str) else user_texts(items, "input_text")


def tool_result_of(body: dict[str, Any]) -> str | None:
    """The text of the ``function_call_output`` the ``input`` ends with, if it ends so."""
    items = body.get("input")
    last = items[-1] if isinstance(items, list) and items else None
    if not isinstance(last, dict) or last.get("type") != "function_call_output":
        return None
    return text_of(last.get("output", ""), "input_text")


def usage_of(plan: Plan, script: dict[str, Any]) -> dict[str, Any]:
    over = script.get("usage") or {}
    reasoning = int(over.get("reasoning_tokens", plan.reasoning_pieces))
    inputs = int(over.get("input_tokens", DEFAULT_INPUT_TOKENS))
    outputs = int(over.get("output_tokens", plan.pieces))
    return {
        "input_tokens": inputs,
        "input_tokens_details": {
            "cached_tokens": int(over.get("cached_tokens", 0)),
            "cache_write_tokens": 0,  # required by the SDK 3.x model (RESPONSES_SPEC.md § 2.3)
        },
        "output_tokens": outputs,
        "output_tokens_details": {"reasoning_tokens": reasoning},
        "total_tokens": inputs + outputs,
    }


def _tool(tool: dict[str, Any]) -> dict[str, Any]:
    """A request tool as the response object echoes it (function tools normalised)."""
    if tool.get("type") != "function":
        return tool
    return {
        "type": "function",
        "name": tool.get("name"),
        "description": tool.get("description"),
        "parameters": tool.get("parameters"),
        "strict": tool.get("strict", True),
    }


def response_of(body: dict[str, Any], response_id: str) -> dict[str, Any]:
    """The response object as ``response.created`` shows it; terminal events update it."""
    return {
        "id": response_id,
        "object": "response",
        "created_at": _CREATED,
        "status": "in_progress",
        "background": bool(body.get("background", False)),
        "completed_at": None,
        "error": None,
        "incomplete_details": None,
        "instructions": body.get("instructions"),
        "max_output_tokens": body.get("max_output_tokens"),
        "max_tool_calls": body.get("max_tool_calls"),
        "model": body.get("model", "fake-model"),
        "output": [],
        "parallel_tool_calls": body.get("parallel_tool_calls", True),
        "previous_response_id": body.get("previous_response_id"),
        "reasoning": {"effort": None, "summary": None, **(body.get("reasoning") or {})},
        "service_tier": body.get("service_tier") or "default",
        "store": body.get("store", True),
        "temperature": body.get("temperature", 1.0),
        "text": {"format": {"type": "text"}, "verbosity": "medium"},
        "tool_choice": body.get("tool_choice", "auto"),
        "tools": [_tool(t) for t in body.get("tools") or []],
        "top_logprobs": body.get("top_logprobs", 0),
        "top_p": body.get("top_p", 1.0),
        "truncation": body.get("truncation", "disabled"),
        "usage": None,
        "user": body.get("user"),
        "metadata": body.get("metadata") or {},
    }


@dataclass
class _Stream:
    """The events of one answer so far; numbers them as they are emitted."""

    id: str  # suffix of every id in this answer
    events: list[dict[str, Any]] = field(default_factory=list)
    output: list[dict[str, Any]] = field(default_factory=list)  # the finished items

    def emit(self, type_: str, **fields: Any) -> None:
        self.events.append({"type": type_, "sequence_number": len(self.events), **fields})

    def added(self, item: dict[str, Any]) -> int:
        index = len(self.output)
        self.emit("response.output_item.added", output_index=index, item=item)
        return index

    def done(self, index: int, item: dict[str, Any]) -> None:
        self.emit("response.output_item.done", output_index=index, item=item)
        self.output.append(item)


def reasoning_item(s: _Stream, parts: list[list[str]], encrypted: bool) -> None:
    item_id = f"rs_fake_{s.id}"
    index = s.added({"id": item_id, "type": "reasoning", "summary": []})
    at = {"item_id": item_id, "output_index": index}
    summary = []
    for n, words in enumerate(parts):
        empty = {"type": "summary_text", "text": ""}
        s.emit("response.reasoning_summary_part.added", **at, summary_index=n, part=empty)
        for word in words:
            s.emit("response.reasoning_summary_text.delta", **at, summary_index=n, delta=word)
        text = "".join(words)
        s.emit("response.reasoning_summary_text.done", **at, summary_index=n, text=text)
        summary.append({"type": "summary_text", "text": text})
        s.emit("response.reasoning_summary_part.done", **at, summary_index=n, part=summary[-1])
    item: dict[str, Any] = {"id": item_id, "type": "reasoning", "summary": summary}
    if encrypted:
        item["encrypted_content"] = f"enc-{item_id}"
    s.done(index, item)


def message_item(s: _Stream, pieces: list[str], status: str | None) -> None:
    """A message item; ``status`` None stops after the text deltas (a failure cuts it)."""
    item_id = f"msg_fake_{s.id}"
    head = {"id": item_id, "type": "message", "status": "in_progress", "role": "assistant"}
    index = s.added({**head, "content": []})
    at = {"item_id": item_id, "output_index": index, "content_index": 0}
    s.emit("response.content_part.added", **at, part=_EMPTY_TEXT)
    for piece in pieces:
        s.emit("response.output_text.delta", **at, delta=piece, logprobs=[])
    if status is None:
        return
    part = {**_EMPTY_TEXT, "text": "".join(pieces)}
    s.emit("response.output_text.done", **at, text=part["text"], logprobs=[])
    s.emit("response.content_part.done", **at, part=part)
    s.done(index, {**head, "status": status, "content": [part]})


def call_item(s: _Stream, n: int, call: Call) -> None:
    item_id = f"fc_fake_{s.id}_{n}"
    head = {"id": item_id, "type": "function_call", "call_id": call.id, "name": call.name}
    index = s.added({**head, "status": "in_progress", "arguments": ""})
    at = {"item_id": item_id, "output_index": index}
    for piece in call.pieces:
        s.emit("response.function_call_arguments.delta", **at, delta=piece)
    s.emit("response.function_call_arguments.done", **at, name=call.name, arguments=call.arguments)
    s.done(index, {**head, "status": "completed", "arguments": call.arguments})


def events_of(plan: Plan, script: dict[str, Any], body: dict[str, Any], n: int) -> list[Event]:
    """The whole event stream of one answer (``n`` numbers its ids)."""
    s = _Stream(id=str(n))
    response = response_of(body, f"resp_fake_{n}")
    s.emit("response.created", response=response)
    s.emit("response.in_progress", response=response)
    if plan.reasoning:
        reasoning_item(s, plan.reasoning, ENCRYPTED_REASONING in (body.get("include") or []))
    final = {**response, "usage": usage_of(plan, script)}
    if plan.end == "error":
        message_item(s, plan.text, None)
        error = {
            "code": script.get("code", "server_error"),
            "message": script.get("message", FAILED_MESSAGE),
        }
        if script.get("error_event"):
            s.emit("error", **error, param=None)
        failed = {**final, "status": "failed", "error": error, "output": s.output}
        s.emit("response.failed", response=failed)
        return [(e["type"], e) for e in s.events]
    if plan.text:
        message_item(s, plan.text, "incomplete" if plan.end == "length" else "completed")
    for i, call in enumerate(plan.calls):
        call_item(s, i + 1, call)
    final["output"] = s.output
    if plan.end == "length":
        details = {"reason": "max_output_tokens"}
        incomplete = {**final, "status": "incomplete", "incomplete_details": details}
        s.emit("response.incomplete", response=incomplete)
    else:
        completed = {**final, "status": "completed", "completed_at": _CREATED + 1}
        s.emit("response.completed", response=completed)
    return [(e["type"], e) for e in s.events]


class _Handler(ScriptedHandler):
    route = "/v1/responses"
    call_prefix = "call_fake_"
    request_id_header = "x-request-id"
    head_events = 2

    user_texts = staticmethod(user_texts_of)
    tool_result = staticmethod(tool_result_of)

    def refusal(self, body: dict[str, Any]) -> dict[str, Any] | None:
        key = self.server.fake.api_key
        if key is None or self.headers.get("Authorization") == f"Bearer {key}":
            return None
        return {"status": 401, "message": "Incorrect API key provided.", "code": "invalid_api_key"}

    def error_payload(self, status: int, script: dict[str, Any]) -> dict[str, Any]:
        return error_body(status, script)

    def events(self, plan: Plan, script: dict[str, Any], body: dict[str, Any]) -> list[Event]:
        return events_of(plan, script, body, self.server.fake.next_id())


class FakeResponses(HttpFake):
    """The fake Responses server; ``base_url`` ends in ``/v1`` (as the openai SDK wants)."""

    handler = _Handler
    base_path = "/v1"


def main(argv: list[str] | None = None) -> None:
    serve_main(FakeResponses, __doc__.splitlines()[0], argv)


if __name__ == "__main__":
    main()
