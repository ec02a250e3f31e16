"""A fake Anthropic Messages API server on 127.0.0.1, streaming only, for tests.

It answers ``POST /v1/messages`` with ``"stream": true`` in the real wire shapes (the
examples, each with its documentation source, are in ``wire/anthropic_messages.json``):
``message_start``, ``ping``, then per content block ``content_block_start`` /
``content_block_delta`` (``thinking_delta`` + ``signature_delta``, ``text_delta``,
``input_json_delta``) / ``content_block_stop``, then ``message_delta`` (``stop_reason``,
cumulative ``usage``) and ``message_stop``. Errors are ``{"type": "error", "error": {"type",
"message"}, "request_id"}`` with the status that goes with the error type (429
``rate_limit_error``, 500 ``api_error``, 529 ``overloaded_error``, ...). Every answer has a
``request-id`` header.

``FakeAnthropic().start()`` (a background thread) or ``python -m tests.fakes.anthropic --port
N`` (prints its base URL once it listens). ``base_url`` is ``http://127.0.0.1:PORT``: the
client posts to ``base_url + "/v1/messages"``. The header ``anthropic-version`` is required
(400 without it); with ``api_key`` set, ``x-api-key`` must equal it (401 otherwise). A request
without ``"stream": true`` gets a 400 ``invalid_request_error``: this fake only streams.

Scripts: a line ``upstream: {json}`` in the ``text`` blocks (or string content) of a user
message; the newest user message holding one wins. No script: ``Hello from upstream`` in
three ``text_delta`` events. Modes (every key optional):

- ``text``: ``text``, ``tokens`` (number of chunks; without ``text`` the chunks are
  ``"tok0 "``, ``"tok1 "``, ...), ``delay_ms`` (sleep before each event after
  ``message_start``).
- ``length``: like ``text`` but ``stop_reason`` is ``"max_tokens"``.
- ``reasoning``: ``reasoning`` (a string, or a list of strings: one ``thinking`` block each,
  one ``thinking_delta`` per word, then a ``signature_delta`` ``"sig-<msg id>-<n>"``) before
  the ``text``; ``redacted: true`` adds a ``redacted_thinking`` block (``data``
  ``"redacted-<msg id>"``) after them.
- ``tool_calls``: ``calls`` (a list of ``{"id", "name", "arguments"}``) or, for one call,
  ``call_id`` / ``name`` / ``arguments`` (a string or a JSON object; default
  ``get_weather`` / ``{"city": "Paris"}``); ids default to ``toolu_fake_1``, ...; ``chunks``
  (``input_json_delta`` pieces per call, default 3); ``text`` (optional) before the calls.
  ``stop_reason`` is ``"tool_use"``.
- ``after_tool``: a script used instead of this one when the last message is a user message
  holding a ``tool_result`` block. Without it such a request is answered with the text
  ``"The tool said: "`` + the first 200 characters of the (first) tool result's text.
- ``status``: HTTP ``status`` (default 500) with the error body; ``type`` and ``message``
  override the error's; ``retry_after`` sets the ``retry-after`` header.
- ``flaky``: the first ``failures`` (default 1) requests with this ``key`` fail as ``status``
  would (``status``, ``retry_after``, ``message``), later ones answer as ``text`` would.
- ``sequence``: the n-th request with this ``key`` (from 0) is answered by the script
  ``answers[min(n, len(answers) - 1)]`` (any mode).
- ``hang``: send nothing for ``seconds`` (default 30; ``stop()`` ends it early, with the
  connection closed unanswered), then answer as ``text``.
- ``error_midstream``: the text block's start and deltas, then ``event: error`` with ``{"type":
  "error", "error": {"type", "message"}}`` (``type`` default ``overloaded_error``, ``message``
  default ``Overloaded``), and the stream ends: no ``content_block_stop``, ``message_delta``
  or ``message_stop``.

Every streaming mode takes ``delay_ms`` and ``usage`` (overrides of ``input_tokens``,
``output_tokens``, ``cache_creation_input_tokens``, ``cache_read_input_tokens``). Defaults:
``input_tokens`` 25, both cache counts 0, ``output_tokens`` one per streamed chunk (thinking
words, text chunks, argument pieces). ``message_start`` carries the input counts with
``output_tokens`` 1; ``message_delta`` carries all four, cumulative.
"""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

from tests.fakes.http_fake import (
    Event,
    HttpFake,
    Plan,
    ScriptedHandler,
    serve_main,
    text_of,
    user_texts,
)

DEFAULT_INPUT_TOKENS = 25
ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    504: "timeout_error",
    529: "overloaded_error",
}
ERROR_MESSAGES = {
    429: "Number of request tokens has exceeded your per-minute rate limit",
    500: "Internal server error",
    529: "Overloaded",
}
STOP_REASONS = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use"}


def user_texts_of(body: dict[str, Any]) -> list[str]:
    """The text of every user message (string content or ``text`` blocks), newest first."""
    return user_texts(body.get("messages"), "text")


def tool_result_of(body: dict[str, Any]) -> str | None:
    """The text of the first ``tool_result`` block of the last message, when it has one."""
    messages = body.get("messages") or []
    last = messages[-1] if messages and isinstance(messages[-1], dict) else {}
    content = last.get("content") if last.get("role") == "user" else None
    for block in content if isinstance(content, list) else []:
        if isinstance(block, dict) and block.get("type") == "tool_result":
            return text_of(block.get("content", ""), "text")
    return None


def error_body(status: int, script: dict[str, Any], request_id: str) -> dict[str, Any]:
    etype = script.get("type") or ERROR_TYPES.get(
        status, "api_error" if status >= 500 else "invalid_request_error"
    )
    message = script.get("message") or ERROR_MESSAGES.get(status) or HTTPStatus(status).phrase
    return {"type": "error", "error": {"type": etype, "message": message}, "request_id": request_id}


def usage_of(plan: Plan, script: dict[str, Any]) -> dict[str, int]:
    """The cumulative usage of ``message_delta``."""
    over = script.get("usage") or {}
    return {
        "input_tokens": int(over.get("input_tokens", DEFAULT_INPUT_TOKENS)),
        "cache_creation_input_tokens": int(over.get("cache_creation_input_tokens", 0)),
        "cache_read_input_tokens": int(over.get("cache_read_input_tokens", 0)),
        "output_tokens": int(over.get("output_tokens", plan.pieces)),
    }


def _block(index: int, block: dict[str, Any], deltas: list[dict[str, Any]]) -> list[Event]:
    start = {"type": "content_block_start", "index": index, "content_block": block}
    out: list[Event] = [("content_block_start", start)]
    for delta in deltas:
        data = {"type": "content_block_delta", "index": index, "delta": delta}
        out.append(("content_block_delta", data))
    out.append(("content_block_stop", {"type": "content_block_stop", "index": index}))
    return out


Block = tuple[dict[str, Any], list[dict[str, Any]]]  # a content block's start shape, its deltas


def blocks_of(plan: Plan, message_id: str) -> list[Block]:
    """Each content block of the answer, in order."""
    blocks: list[Block] = []
    deltas: list[dict[str, Any]]
    for n, words in enumerate(plan.reasoning):
        deltas = [{"type": "thinking_delta", "thinking": word} for word in words]
        deltas.append({"type": "signature_delta", "signature": f"sig-{message_id}-{n}"})
        blocks.append(({"type": "thinking", "thinking": "", "signature": ""}, deltas))
    if plan.redacted:
        blocks.append(({"type": "redacted_thinking", "data": f"redacted-{message_id}"}, []))
    if plan.text:
        deltas = [{"type": "text_delta", "text": piece} for piece in plan.text]
        blocks.append(({"type": "text", "text": ""}, deltas))
    for call in plan.calls:
        deltas = [{"type": "input_json_delta", "partial_json": piece} for piece in call.pieces]
        blocks.append(({"type": "tool_use", "id": call.id, "name": call.name, "input": {}}, deltas))
    return blocks


def events_of(plan: Plan, script: dict[str, Any], model: str, message_id: str) -> list[Event]:
    """The whole event stream of one answer."""
    usage = usage_of(plan, script)
    message: dict[str, Any] = {
        "id": message_id,
        "type": "message",
        "role": "assistant",
        "content": [],
        "model": model,
        "stop_reason": None,
        "stop_sequence": None,
        "usage": {**usage, "output_tokens": 1},
    }
    events: list[Event] = [
        ("message_start", {"type": "message_start", "message": message}),
        ("ping", {"type": "ping"}),
    ]
    for index, (block, deltas) in enumerate(blocks_of(plan, message_id)):
        events += _block(index, block, deltas)
    if plan.end == "error":
        error = {
            "type": script.get("type", "overloaded_error"),
            "message": script.get("message", "Overloaded"),
        }
        # The failure cuts the last block short: no content_block_stop, no message end.
        return events[:-1] + [("error", {"type": "error", "error": error})]
    delta = {"stop_reason": STOP_REASONS[plan.end], "stop_sequence": None}
    events.append(("message_delta", {"type": "message_delta", "delta": delta, "usage": usage}))
    events.append(("message_stop", {"type": "message_stop"}))
    return events


class _Handler(ScriptedHandler):
    route = "/v1/messages"
    call_prefix = "toolu_fake_"
    request_id_header = "request-id"

    user_texts = staticmethod(user_texts_of)
    tool_result = staticmethod(tool_result_of)

    def refusal(self, body: dict[str, Any]) -> dict[str, Any] | None:
        key = self.server.fake.api_key
        if key is not None and self.headers.get("x-api-key") != key:
            return {"status": 401, "message": "invalid x-api-key"}
        if not self.headers.get("anthropic-version"):
            return {"status": 400, "message": "anthropic-version: header is required"}
        return None

    def error_payload(self, status: int, script: dict[str, Any]) -> dict[str, Any]:
        return error_body(status, script, f"req_fake_{self.server.fake.next_id()}")

    def events(self, plan: Plan, script: dict[str, Any], body: dict[str, Any]) -> list[Event]:
        message_id = f"msg_fake_{self.server.fake.next_id()}"
        return events_of(plan, script, str(body.get("model", "claude-fake")), message_id)


class FakeAnthropic(HttpFake):
    """The fake Anthropic server; ``base_url`` has no ``/v1`` (the SDK adds it)."""

    handler = _Handler


def main(argv: list[str] | None = None) -> None:
    serve_main(FakeAnthropic, __doc__.splitlines()[0], argv)


if __name__ == "__main__":
    main()
