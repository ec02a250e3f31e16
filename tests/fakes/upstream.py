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
import re
import sys
import threading
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, TypedDict

DEFAULT_TEXT = "Hello from upstream"
DEFAULT_PROMPT_TOKENS = 11
DEFAULT_CACHED_TOKENS = 0
_SCRIPT = re.compile(r"upstream:\s*(?=\{)")
_CREATED = 1_700_000_000


class ReceivedRequest(TypedDict):
    method: str
    path: str
    headers: dict[str, str]  # names lower-cased
    body: dict[str, Any] | None  # the JSON body; None for a GET or a body that is not JSON


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
    match = _SCRIPT.search(content or "")
    if not match:
        return {}
    script, _ = json.JSONDecoder().raw_decode(content, match.end())
    return script if isinstance(script, dict) else {}


def _split(text: str, pieces: int | None) -> list[str]:
    """``text`` in ``pieces`` near-equal chunks, or at word boundaries when not given."""
    if pieces is None:
        return re.findall(r"\s*\S+", text) or [text]
    size = -(-len(text) // max(pieces, 1)) or 1
    return [text[i : i + size] for i in range(0, len(text), size)] or [""]


def _content(script: dict[str, Any]) -> list[str]:
    tokens = script.get("tokens")
    if "text" not in script and tokens is not None:
        return [f"tok{i} " for i in range(int(tokens))]
    return _split(str(script.get("text", DEFAULT_TEXT)), tokens)


def _calls(script: dict[str, Any]) -> list[dict[str, Any]]:
    calls = script.get("calls") or [
        {
            "id": script.get("call_id", "call_fake_1"),
            "name": script.get("name", "get_weather"),
            "arguments": script.get("arguments", {"city": "Paris"}),
        }
    ]
    out = []
    for i, call in enumerate(calls):
        args = call.get("arguments", "{}")
        args = args if isinstance(args, str) else json.dumps(args)
        out.append(
            {
                "id": call.get("id", f"call_fake_{i + 1}"),
                "name": call["name"],
                "pieces": _split(args, int(script.get("chunks", 3))),
            }
        )
    return out


def reply_for(script: dict[str, Any]) -> Reply:
    mode = script.get("mode", "text")
    if mode == "reasoning":
        text = str(script.get("reasoning", "Thinking about the question."))
        return Reply(reasoning=_split(text, None), content=_content(script))
    if mode == "refusal":
        return Reply(refusal=_split(str(script.get("text", "I can't help with that.")), None))
    if mode == "tool_calls":
        content = _content(script) if "text" in script else []
        return Reply(content=content, calls=_calls(script), finish_reason="tool_calls")
    if mode == "error_midstream":
        error = {
            "message": script.get("message", "upstream exploded mid-stream"),
            "type": script.get("type", "server_error"),
            "code": script.get("code"),
        }
        return Reply(content=_content(script), error=error)
    if mode == "truncate":
        return Reply(content=_content(script), truncated=True)
    return Reply(content=_content(script), finish_reason="length" if mode == "length" else "stop")


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


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = 10  # seconds a connection may sit without sending its request
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - base signature
        pass

    def _json(
        self, status: int, payload: dict[str, Any], headers: dict[str, str] | None = None
    ) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Connection", "close")
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def _record(self, body: dict[str, Any] | None) -> None:
        headers = {k.lower(): v for k, v in self.headers.items()}
        received = ReceivedRequest(method=self.command, path=self.path, headers=headers, body=body)
        self.server.fake.requests.append(received)

    def _authorized(self) -> bool:
        key = self.server.fake.api_key
        if key is None or self.headers.get("Authorization") == f"Bearer {key}":
            return True
        err = {"message": "Incorrect API key provided.", "type": "invalid_request_error"}
        self._json(401, {"error": {**err, "param": None, "code": "invalid_api_key"}})
        return False

    def do_GET(self) -> None:
        self.close_connection = True
        self._record(None)
        if not self._authorized():
            return
        if self.path.rstrip("/") != "/v1/models":
            self._json(404, error_body(404, {"message": f"no route {self.path}"}))
            return
        data = [
            {"id": m, "object": "model", "created": _CREATED, "owned_by": "fake-upstream"}
            for m in self.server.fake.models
        ]
        self._json(200, {"object": "list", "data": data})

    def do_POST(self) -> None:
        self.close_connection = True  # one request per connection: nothing lingers on stop()
        length = int(self.headers.get("Content-Length") or 0)
        try:
            body = json.loads(self.rfile.read(length) or b"{}")
            script = script_of(body)
        except ValueError as exc:
            self._record(None)
            self._json(400, error_body(400, {"message": f"bad JSON: {exc}"}))
            return
        self._record(body)
        if not self._authorized():
            return
        if self.path.rstrip("/") == "/tokenize":
            self._json(200, tokenize(body))
            return
        if self.path.rstrip("/") != "/v1/chat/completions":
            self._json(404, error_body(404, {"message": f"no route {self.path}"}))
            return
        mode = script.get("mode", "text")
        if mode == "hang" and self.server.stopping.wait(float(script.get("seconds", 30))):
            return
        if mode == "status":
            status = int(script.get("status", 500))
            retry = script.get("retry_after")
            headers = {"Retry-After": str(retry)} if retry is not None else None
            self._json(status, error_body(status, script), headers)
            return
        if mode == "flaky" and self.server.fake.flaky_fails(script):
            self._flaky_failure(body, script)
            return
        reply = reply_for(script)
        if not body.get("stream"):
            self._json(200, completion_of(reply, body, script))
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
        self._json(status, error_body(status, script), headers)

    def _send_event(self, payload: str) -> None:
        data = f"data: {payload}\n\n".encode()
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()

    def _stream(self, reply: Reply, body: dict[str, Any], script: dict[str, Any]) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream; charset=utf-8")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("Connection", "close")
        self.end_headers()
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        base: dict[str, Any] = {
            "id": f"chatcmpl-fake-{len(self.server.fake.requests)}",
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
            self._send_event(json.dumps({**base, "choices": [choice]}))
        if reply.error is not None:
            self._send_event(json.dumps({"error": reply.error}))
        elif include_usage and not reply.truncated:
            self._send_event(json.dumps({**base, "choices": [], "usage": usage_of(reply, script)}))
        if not reply.truncated:
            self._send_event("[DONE]")
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], fake: FakeUpstream) -> None:
        self.fake = fake
        self.stopping = threading.Event()
        super().__init__(address, _Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that went away mid-answer (a cancel, a timeout) is not an error here."""
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class FakeUpstream:
    """The fake server. ``requests`` holds every request received, oldest first."""

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        api_key: str | None = None,
        models: tuple[str, ...] = ("fake-model",),
    ) -> None:
        self.host = host
        self.port = port
        self.api_key = api_key
        self.models = models
        self.requests: list[ReceivedRequest] = []
        self.flaky_seen: dict[str, int] = {}  # ``flaky`` requests received, per key
        self._flaky_lock = threading.Lock()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    def flaky_fails(self, script: dict[str, Any]) -> bool:
        """Count one ``flaky`` request for its key; True while it is one of the failures."""
        key = str(script.get("key", ""))
        with self._flaky_lock:
            seen = self.flaky_seen.get(key, 0)
            self.flaky_seen[key] = seen + 1
        return seen < int(script.get("failures", 1))

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    def start(self) -> FakeUpstream:
        self._server = _Server((self.host, self.port), self)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="fake-upstream",
            daemon=True,
        )
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        """Serve in the calling thread (the subprocess entrypoint)."""
        self._server = _Server((self.host, self.port), self)
        self.port = self._server.server_address[1]
        print(self.base_url, flush=True)
        try:
            self._server.serve_forever(poll_interval=0.05)
        finally:
            self._server.server_close()

    def stop(self) -> None:
        if self._server is None:
            return
        self._server.stopping.set()
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = self._thread = None

    def __enter__(self) -> FakeUpstream:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


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
