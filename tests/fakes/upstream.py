"""A fake OpenAI-compatible Chat Completions server on 127.0.0.1, for tests.

It speaks the real wire format (``chat.completion.chunk`` SSE, ``chat.completion`` JSON,
OpenAI error bodies) over real HTTP, so providers and the ``openai`` SDK can talk to it.
Run it in-process (``FakeUpstream().start()``, a background thread) or as a subprocess
(``python -m tests.fakes.upstream --port N``; it prints its base URL once it listens).

Behaviour is scripted per request by the last user message: a line
``upstream: {"mode": "...", ...}`` anywhere in its text picks the mode (JSON keys below),
otherwise the answer is the text ``Hello from upstream`` streamed in three chunks.

Modes and their keys (every key optional):

- ``text``: ``text`` (the content), ``tokens`` (number of content chunks; without ``text``
  the chunks are ``"tok0 "``, ``"tok1 "``, ...), ``delay_ms`` (sleep before each chunk).
- ``length``: like ``text`` but ``finish_reason`` is ``"length"``.
- ``reasoning``: ``reasoning`` (streamed as ``reasoning_content`` deltas, one chunk per word)
  before the ``text`` content.
- ``refusal``: ``text`` streamed as ``refusal`` deltas.
- ``tool_calls``: ``calls`` (a list of ``{"id", "name", "arguments"}``) or, for one call,
  ``call_id`` / ``name`` / ``arguments`` (a string or a JSON object); ``chunks`` (argument
  pieces per call, default 3); optional ``text`` streamed before the calls. The id, type and
  name come in each call's first delta; ``finish_reason`` is ``"tool_calls"``.
- ``status``: answer HTTP ``status`` (default 500) with ``{"error": {"message", "type",
  "param", "code"}}`` from ``message`` / ``type`` / ``code``; ``retry_after`` sets the
  ``Retry-After`` header.
- ``hang``: read the request, then send nothing for ``seconds`` (default 30; ``stop()`` ends
  it early), then answer as ``text`` would.
- ``truncate``: the ``text`` chunks, then the body ends cleanly with no ``finish_reason``,
  usage or ``[DONE]`` (a proxy or server that cut the stream).
- ``error_midstream``: the ``text`` chunks, then ``data: {"error": {"message", "type",
  "code"}}`` from ``message`` / ``type`` / ``code``, then ``data: [DONE]``.
- ``flaky``: the first ``failures`` requests (default 1) whose script has the same ``key``
  (default ``""``; use a unique one per test) fail, later ones answer as ``text`` would.
  A failure is, by ``fail_as``: ``"status"`` (default) HTTP ``status`` (default 500) with the
  error body of ``status`` mode, plus the headers ``Retry-After`` from ``retry_after`` and
  ``retry-after-ms`` from ``retry_after_ms`` when given; or ``"stream_error"`` a 200 stream
  whose first chunk after the role chunk is an error (no content). Counted per key, per server.

Every streaming mode also takes ``delay_ms`` and ``usage`` (overrides of ``prompt_tokens``,
``completion_tokens``, ``reasoning_tokens``, ``cached_tokens``). A usage chunk is sent only
when the request asked for ``stream_options.include_usage``. ``stream: false`` gets one
``chat.completion`` object. ``GET /v1/models`` lists ``models``.

``POST /tokenize`` answers like vLLM's tokenizer endpoint (``{"model", "messages"}`` →
``{"count", "max_model_len"}``) with a count of its own: two tokens per word of every
message's content plus one per message, so a test can tell it from resq's estimate.
"""

from __future__ import annotations

import argparse
import contextlib
import json
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any

from tests.fakes.http_fake import DEFAULT_TEXT as DEFAULT_TEXT
from tests.fakes.http_fake import FakeHandler, HttpFake, calls_of, content_of, script_in, split
from tests.fakes.http_fake import ReceivedRequest as ReceivedRequest  # re-exported

DEFAULT_PROMPT_TOKENS = 11
DEFAULT_CACHED_TOKENS = 0
_CREATED = 1_700_000_000


@dataclass
class Reply:
    """What one request is answered with, built from its script."""

    reasoning: list[str] = field(default_factory=list)
    content: list[str] = field(default_factory=list)
    refusal: list[str] = field(default_factory=list)
    calls: list[dict[str, Any]] = field(default_factory=list)
    finish_reason: str = "stop"
    error: dict[str, Any] | None = None
    truncated: bool = False  # end the body after the content: no finish_reason, usage, [DONE]


def script_of(body: dict[str, Any]) -> dict[str, Any]:
    """The ``upstream: {...}`` script in the last user message, or ``{}``."""
    users = [m for m in body.get("messages") or [] if m.get("role") == "user"]
    if not users:
        return {}
    content = users[-1].get("content")
    if isinstance(content, list):
        content = "\n".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return script_in([content or ""])


def _calls(script: dict[str, Any]) -> list[dict[str, Any]]:
    calls = calls_of(script, "call_fake_")
    return [{"id": call.id, "name": call.name, "pieces": call.pieces} for call in calls]


def reply_for(script: dict[str, Any]) -> Reply:
    mode = script.get("mode", "text")
    if mode == "reasoning":
        text = str(script.get("reasoning", "Thinking about the question."))
        return Reply(reasoning=split(text, None), content=content_of(script))
    if mode == "refusal":
        return Reply(refusal=split(str(script.get("text", "I can't help with that.")), None))
    if mode == "tool_calls":
        content = content_of(script) if "text" in script else []
        return Reply(content=content, calls=_calls(script), finish_reason="tool_calls")
    if mode == "error_midstream":
        error = {
            "message": script.get("message", "upstream exploded mid-stream"),
            "type": script.get("type", "server_error"),
            "code": script.get("code"),
        }
        return Reply(content=content_of(script), error=error)
    if mode == "truncate":
        return Reply(content=content_of(script), truncated=True)
    return Reply(content=content_of(script), finish_reason="length" if mode == "length" else "stop")


def usage_of(reply: Reply, script: dict[str, Any]) -> dict[str, Any]:
    over = script.get("usage") or {}
    prompt = int(over.get("prompt_tokens", DEFAULT_PROMPT_TOKENS))
    reasoning = int(over.get("reasoning_tokens", len(reply.reasoning)))
    pieces = len(reply.content) + len(reply.refusal) + sum(len(c["pieces"]) for c in reply.calls)
    completion = int(over.get("completion_tokens", pieces + reasoning))
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "completion_tokens_details": {"reasoning_tokens": reasoning},
        "prompt_tokens_details": {
            "cached_tokens": int(over.get("cached_tokens", DEFAULT_CACHED_TOKENS))
        },
    }


def deltas_of(reply: Reply) -> list[tuple[dict[str, Any], str | None]]:
    """The (delta, finish_reason) of each choice chunk, in order."""
    out: list[tuple[dict[str, Any], str | None]] = [
        ({"role": "assistant", "content": "", "refusal": None}, None)
    ]
    out += [({"reasoning_content": piece}, None) for piece in reply.reasoning]
    out += [({"content": piece}, None) for piece in reply.content]
    out += [({"refusal": piece}, None) for piece in reply.refusal]
    for index, call in enumerate(reply.calls):
        for n, piece in enumerate(call["pieces"]):
            first = {"id": call["id"], "type": "function", "function": {"name": call["name"]}}
            tool: dict[str, Any] = {"index": index, **(first if n == 0 else {"function": {}})}
            tool["function"]["arguments"] = piece
            out.append(({"tool_calls": [tool]}, None))
    if reply.error is None and not reply.truncated:
        out.append(({}, reply.finish_reason))
    return out


def completion_of(reply: Reply, body: dict[str, Any], script: dict[str, Any]) -> dict[str, Any]:
    """The non-streaming ``chat.completion`` for a reply."""
    message: dict[str, Any] = {
        "role": "assistant",
        "content": "".join(reply.content) if reply.content or not reply.calls else None,
        "refusal": "".join(reply.refusal) or None,
    }
    if reply.reasoning:
        message["reasoning_content"] = "".join(reply.reasoning)
    if reply.calls:
        message["tool_calls"] = [
            {
                "id": c["id"],
                "type": "function",
                "function": {"name": c["name"], "arguments": "".join(c["pieces"])},
            }
            for c in reply.calls
        ]
    finish = reply.finish_reason
    choice = {"index": 0, "message": message, "logprobs": None, "finish_reason": finish}
    return {
        "id": "chatcmpl-fake",
        "object": "chat.completion",
        "created": _CREATED,
        "model": body.get("model", "fake-model"),
        "choices": [choice],
        "usage": usage_of(reply, script),
    }


def tokenize(body: dict[str, Any]) -> dict[str, Any]:
    messages = body.get("messages") or []
    count = sum(2 * len(str(m.get("content") or "").split()) + 1 for m in messages)
    return {"count": count, "max_model_len": 4096, "tokens": list(range(count))}


def error_body(status: int, script: dict[str, Any]) -> dict[str, Any]:
    defaults: tuple[str, str, str | None]
    if status == 429:
        defaults = ("Rate limit reached for fake-model.", "requests", "rate_limit_exceeded")
    elif status >= 500:
        defaults = ("The server had an error while processing your request.", "server_error", None)
    else:
        defaults = (HTTPStatus(status).phrase, "invalid_request_error", None)
    message, etype, code = defaults
    return {
        "error": {
            "message": script.get("message", message),
            "type": script.get("type", etype),
            "param": None,
            "code": script.get("code", code),
        }
    }


class _Handler(FakeHandler):
    @property
    def fake(self) -> FakeUpstream:
        fake = self.server.fake
        assert isinstance(fake, FakeUpstream)
        return fake

    def _authorized(self) -> bool:
        key = self.fake.api_key
        if key is None or self.headers.get("Authorization") == f"Bearer {key}":
            return True
        err = {"message": "Incorrect API key provided.", "type": "invalid_request_error"}
        self.send_json(401, {"error": {**err, "param": None, "code": "invalid_api_key"}})
        return False

    def do_GET(self) -> None:
        self.close_connection = True
        self.record(None)
        if not self._authorized():
            return
        if self.path.rstrip("/") != "/v1/models":
            self.send_json(404, error_body(404, {"message": f"no route {self.path}"}))
            return
        data = [
            {"id": m, "object": "model", "created": _CREATED, "owned_by": "fake-upstream"}
            for m in self.fake.models
        ]
        self.send_json(200, {"object": "list", "data": data})

    def do_POST(self) -> None:
        self.close_connection = True  # one request per connection: nothing lingers on stop()
        length = int(self.headers.get("Content-Length") or 0)
        try:
            body = json.loads(self.rfile.read(length) or b"{}")
            script = script_of(body)
        except ValueError as exc:
            self.record(None)
            self.send_json(400, error_body(400, {"message": f"bad JSON: {exc}"}))
            return
        self.record(body)
        if not self._authorized():
            return
        if self.path.rstrip("/") == "/tokenize":
            self.send_json(200, tokenize(body))
            return
        if self.path.rstrip("/") != "/v1/chat/completions":
            self.send_json(404, error_body(404, {"message": f"no route {self.path}"}))
            return
        mode = script.get("mode", "text")
        if mode == "hang" and self.server.stopping.wait(float(script.get("seconds", 30))):
            return
        if mode == "status":
            status = int(script.get("status", 500))
            retry = script.get("retry_after")
            headers = {"Retry-After": str(retry)} if retry is not None else None
            self.send_json(status, error_body(status, script), headers)
            return
        if mode == "flaky" and self.fake.flaky_fails(script):
            self._flaky_failure(body, script)
            return
        reply = reply_for(script)
        if not body.get("stream"):
            self.send_json(200, completion_of(reply, body, script))
            return
        self._stream(reply, body, script)

    def _flaky_failure(self, body: dict[str, Any], script: dict[str, Any]) -> None:
        if script.get("fail_as", "status") == "stream_error":
            error = {"message": script.get("message", "upstream is overloaded")}
            self._stream(Reply(error={**error, "type": "server_error", "code": None}), body, script)
            return
        status = int(script.get("status", 500))
        headers: dict[str, str] = {}
        if script.get("retry_after") is not None:
            headers["Retry-After"] = str(script["retry_after"])
        if script.get("retry_after_ms") is not None:
            headers["retry-after-ms"] = str(script["retry_after_ms"])
        self.send_json(status, error_body(status, script), headers)

    def _stream(self, reply: Reply, body: dict[str, Any], script: dict[str, Any]) -> None:
        self.start_sse()
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        base: dict[str, Any] = {
            "id": f"chatcmpl-fake-{len(self.fake.requests)}",
            "object": "chat.completion.chunk",
            "created": _CREATED,
            "model": body.get("model", "fake-model"),
            "system_fingerprint": "fp_fake",
        }
        if include_usage:
            base["usage"] = None
        delay = float(script.get("delay_ms", 0)) / 1000
        for delta, finish in deltas_of(reply):
            if delay and self.server.stopping.wait(delay):
                return
            choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
            self.send_sse(json.dumps({**base, "choices": [choice]}))
        if reply.error is not None:
            self.send_sse(json.dumps({"error": reply.error}))
        elif include_usage and not reply.truncated:
            self.send_sse(json.dumps({**base, "choices": [], "usage": usage_of(reply, script)}))
        if not reply.truncated:
            self.send_sse("[DONE]")
        self.end_sse()


class FakeUpstream(HttpFake):
    """The fake server. ``requests`` holds every request received, oldest first."""

    handler = _Handler
    base_path = "/v1"

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        api_key: str | None = None,
        models: tuple[str, ...] = ("fake-model",),
    ) -> None:
        super().__init__(host=host, port=port, api_key=api_key)
        self.models = models

    def flaky_fails(self, script: dict[str, Any]) -> bool:
        """Count one ``flaky`` request for its key; True while it is one of the failures."""
        seen = self.count(self.flaky_seen, str(script.get("key", "")))
        return seen < int(script.get("failures", 1))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--api-key", default=None, help="require this bearer key")
    parser.add_argument("--model", action="append", dest="models", help="listed by /v1/models")
    args = parser.parse_args(argv)
    fake = FakeUpstream(
        host=args.host,
        port=args.port,
        api_key=args.api_key,
        models=tuple(args.models or ["fake-model"]),
    )
    with contextlib.suppress(KeyboardInterrupt):
        fake.serve_forever()


if __name__ == "__main__":
    main()
