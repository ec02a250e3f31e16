"""What the fake upstream servers of this package share: the HTTP plumbing and the scripting.

Plumbing: ``HttpFake`` runs a ``ThreadingHTTPServer`` on 127.0.0.1 in a background thread (or
in the calling thread, for ``python -m``), records every request, counts ``flaky`` and
``sequence`` requests per key, and ``stop()`` wakes any handler that is waiting (``hang``,
``delay_ms``) through the server's ``stopping`` event. ``FakeHandler`` writes JSON replies and
chunked SSE (``event:`` + ``data:`` lines, or ``data:`` alone).

Scripting (the convention of ``tests/fakes/upstream.py``): a line ``upstream: {json}`` in a
user message scripts the answer to a request. ``resolve`` picks the script that applies to
this request (``after_tool``, ``sequence`` and ``flaky`` choose another one), ``plan_of``
turns it into a provider-neutral ``Plan``, and ``ScriptedHandler`` runs the common request
flow; each provider's fake only says where scripts and tool results are in its requests and
how a ``Plan`` or an error looks on its wire.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import re
import sys
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar, Self, TypedDict

DEFAULT_TEXT = "Hello from upstream"
DEFAULT_REASONING = "Thinking about the question."
TOOL_SAID = "The tool said: "
TOOL_RESULT_CHARS = 200  # how much of a tool result the default ``after_tool`` answer quotes
ONLY_STREAMS = 'this fake only streams: send "stream": true'
_SCRIPT = re.compile(r"upstream:\s*(?=\{)")

Event = tuple[str, dict[str, Any]]  # (SSE event name, JSON data)


class ReceivedRequest(TypedDict):
    method: str
    path: str
    headers: dict[str, str]  # names lower-cased
    body: dict[str, Any] | None  # the JSON body; None for a GET or a body that is not JSON


# --- scripts -------------------------------------------------------------------------------


def script_in(texts: Iterable[str]) -> dict[str, Any]:
    """The script of the first text (newest message first) holding one, or ``{}``.

    Raises ValueError when the JSON after ``upstream:`` does not parse.
    """
    for text in texts:
        match = _SCRIPT.search(text)
        if match:
            script, _ = json.JSONDecoder().raw_decode(text, match.end())
            return script if isinstance(script, dict) else {}
    return {}


def text_of(content: Any, part_type: str) -> str:
    """A message's text: its string content, or the ``text`` of its parts of ``part_type``."""
    if isinstance(content, str):
        return content
    parts = [p for p in content if isinstance(p, dict)] if isinstance(content, list) else []
    return "\n".join(str(p.get("text", "")) for p in parts if p.get("type") == part_type)


def user_texts(messages: Any, part_type: str) -> list[str]:
    """The text of every user message (items of another ``type`` skipped), newest first."""
    items = messages if isinstance(messages, list) else []
    users = [m for m in items if isinstance(m, dict) and m.get("role") == "user"]
    users = [m for m in users if m.get("type", "message") == "message"]
    return [text_of(m.get("content"), part_type) for m in reversed(users)]


def split(text: str, pieces: int | None) -> list[str]:
    """``text`` in ``pieces`` near-equal chunks, or at word boundaries when not given."""
    if pieces is None:
        return re.findall(r"\s*\S+", text) or [text]
    size = -(-len(text) // max(pieces, 1)) or 1
    return [text[i : i + size] for i in range(0, len(text), size)] or [""]


def content_of(script: dict[str, Any]) -> list[str]:
    """The text chunks of a script: ``text`` split in ``tokens`` pieces, or ``tok0 ``, ..."""
    tokens = script.get("tokens")
    if "text" not in script and tokens is not None:
        return [f"tok{i} " for i in range(int(tokens))]
    return split(str(script.get("text", DEFAULT_TEXT)), tokens)


@dataclass
class Call:
    id: str
    name: str
    pieces: list[str]  # the JSON arguments, in the chunks they are streamed in

    @property
    def arguments(self) -> str:
        return "".join(self.pieces)


def calls_of(script: dict[str, Any], id_prefix: str) -> list[Call]:
    """The tool calls of a ``tool_calls`` script; ids default to ``id_prefix`` + 1, 2, ..."""
    calls = script.get("calls") or [
        {
            "id": script.get("call_id", f"{id_prefix}1"),
            "name": script.get("name", "get_weather"),
            "arguments": script.get("arguments", {"city": "Paris"}),
        }
    ]
    out = []
    for i, call in enumerate(calls):
        args = call.get("arguments", "{}")
        args = args if isinstance(args, str) else json.dumps(args)
        pieces = split(args, int(script.get("chunks", 3)))
        out.append(Call(id=call.get("id", f"{id_prefix}{i + 1}"), name=call["name"], pieces=pieces))
    return out


@dataclass
class Plan:
    """What to stream, in provider-neutral terms."""

    reasoning: list[list[str]] = field(default_factory=list)  # parts / blocks, in word pieces
    text: list[str] = field(default_factory=list)
    calls: list[Call] = field(default_factory=list)
    end: str = "stop"  # "stop", "length", "tool_calls" or "error" (fails after the text)
    redacted: bool = False  # Anthropic: add a redacted_thinking block

    @property
    def reasoning_pieces(self) -> int:
        return sum(len(part) for part in self.reasoning)

    @property
    def pieces(self) -> int:
        """Every streamed chunk: the fakes' default output token count."""
        calls = sum(len(call.pieces) for call in self.calls)
        return self.reasoning_pieces + len(self.text) + calls


def plan_of(script: dict[str, Any], call_prefix: str) -> Plan:
    mode = script.get("mode", "text")
    if mode == "reasoning":
        parts = script.get("reasoning", DEFAULT_REASONING)
        parts = parts if isinstance(parts, list) else [parts]
        return Plan(
            reasoning=[split(str(part), None) for part in parts],
            text=content_of(script),
            redacted=bool(script.get("redacted")),
        )
    if mode == "tool_calls":
        text = content_of(script) if "text" in script else []
        return Plan(text=text, calls=calls_of(script, call_prefix), end="tool_calls")
    if mode == "error_midstream":
        return Plan(text=content_of(script), end="error")
    return Plan(text=content_of(script), end="length" if mode == "length" else "stop")


def resolve(fake: HttpFake, script: dict[str, Any], tool_result: str | None) -> dict[str, Any]:
    """The script that answers this request.

    After a tool result, ``after_tool`` (default: quote the result) replaces the script.
    ``sequence`` answers with its n-th answer (counted per key), ``flaky`` becomes a ``status``
    script for the first ``failures`` requests of its key and a ``text`` script after that.
    """
    if tool_result is not None:
        script = script.get("after_tool") or {"text": TOOL_SAID + tool_result[:TOOL_RESULT_CHARS]}
    mode = script.get("mode", "text")
    key = str(script.get("key", ""))
    if mode == "sequence":
        answers = script.get("answers") or [{}]
        seen = fake.count(fake.sequence_seen, key)
        return resolve(fake, answers[min(seen, len(answers) - 1)], None)
    if mode == "flaky":
        fails = fake.count(fake.flaky_seen, key) < int(script.get("failures", 1))
        return {**script, "mode": "status" if fails else "text"}
    return script


# --- HTTP ----------------------------------------------------------------------------------


class FakeHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = 10  # seconds a connection may sit without sending its request
    server: FakeServer

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - base signature
        pass

    def send_json(
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

    def record(self, body: dict[str, Any] | None) -> None:
        headers = {k.lower(): v for k, v in self.headers.items()}
        received = ReceivedRequest(method=self.command, path=self.path, headers=headers, body=body)
        self.server.fake.requests.append(received)

    def read_body(self) -> dict[str, Any]:
        """The JSON body (``{}`` when empty); raises ValueError when it is not JSON."""
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length) or b"{}")
        if not isinstance(body, dict):
            raise ValueError("the body is not a JSON object")
        return body

    def wait(self, seconds: float) -> bool:
        """Sleep; True when the server is stopping (then answer nothing more)."""
        return self.server.stopping.wait(seconds)

    def start_sse(self, headers: dict[str, str] | None = None) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream; charset=utf-8")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("Connection", "close")
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()

    def send_sse(self, data: str, event: str | None = None) -> None:
        """One SSE event as one HTTP chunk: ``event:`` (when given) and ``data:`` lines."""
        frame = (f"event: {event}\n" if event else "") + f"data: {data}\n\n"
        encoded = frame.encode()
        self.wfile.write(f"{len(encoded):x}\r\n".encode() + encoded + b"\r\n")
        self.wfile.flush()

    def end_sse(self) -> None:
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()


class ScriptedHandler(FakeHandler):
    """The request flow of a scripted streaming fake; subclasses fill in the wire shapes."""

    route: ClassVar[str]  # the one POST path served
    call_prefix: ClassVar[str]  # default tool call ids: prefix + 1, 2, ...
    request_id_header: ClassVar[str]
    head_events: ClassVar[int] = 1  # events sent before ``delay_ms`` starts to apply

    def user_texts(self, body: dict[str, Any]) -> list[str]:
        """The text of every user message, newest first."""
        raise NotImplementedError

    def tool_result(self, body: dict[str, Any]) -> str | None:
        """The text of the tool result the request ends with, if it ends with one."""
        raise NotImplementedError

    def refusal(self, body: dict[str, Any]) -> dict[str, Any] | None:
        """An error script (``status``, ``message``, ...) for a request this fake rejects."""
        raise NotImplementedError

    def error_payload(self, status: int, script: dict[str, Any]) -> dict[str, Any]:
        raise NotImplementedError

    def events(self, plan: Plan, script: dict[str, Any], body: dict[str, Any]) -> list[Event]:
        raise NotImplementedError

    def send_error_body(self, status: int, script: dict[str, Any]) -> None:
        headers = {self.request_id_header: f"req_fake_{self.server.fake.next_id()}"}
        if script.get("retry_after") is not None:
            headers["retry-after"] = str(script["retry_after"])
        self.send_json(status, self.error_payload(status, script), headers)

    def do_POST(self) -> None:
        self.close_connection = True  # one request per connection: nothing lingers on stop()
        try:
            body = self.read_body()
            script = script_in(self.user_texts(body))
        except ValueError as exc:
            self.record(None)
            self.send_error_body(400, {"message": f"bad JSON: {exc}"})
            return
        self.record(body)
        refusal = self.refusal(body)
        if refusal is None and self.path.rstrip("/") != self.route:
            refusal = {"status": 404, "message": f"no route {self.path}"}
        if refusal is None and body.get("stream") is not True:
            refusal = {"status": 400, "message": ONLY_STREAMS}
        if refusal is not None:
            self.send_error_body(int(refusal["status"]), refusal)
            return
        script = resolve(self.server.fake, script, self.tool_result(body))
        mode = script.get("mode", "text")
        if mode == "status":
            self.send_error_body(int(script.get("status", 500)), script)
            return
        if mode == "hang" and self.wait(float(script.get("seconds", 30))):
            return
        events = self.events(plan_of(script, self.call_prefix), script, body)
        self.stream(events, float(script.get("delay_ms", 0)) / 1000)

    def stream(self, events: list[Event], delay: float) -> None:
        self.start_sse({self.request_id_header: f"req_fake_{self.server.fake.next_id()}"})
        for n, (name, data) in enumerate(events):
            if delay and n >= self.head_events and self.wait(delay):
                return
            self.send_sse(json.dumps(data), name)
        self.end_sse()


class FakeServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(
        self, address: tuple[str, int], fake: HttpFake, handler: type[BaseHTTPRequestHandler]
    ) -> None:
        self.fake = fake
        self.stopping = threading.Event()
        super().__init__(address, handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that went away mid-answer (a cancel, a timeout) is not an error here."""
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class HttpFake:
    """A fake server. ``requests`` holds every request received, oldest first."""

    handler: ClassVar[type[BaseHTTPRequestHandler]]
    base_path: ClassVar[str] = ""  # ``base_url`` is ``http://host:port`` + this

    def __init__(self, *, host: str = "127.0.0.1", port: int = 0, api_key: str | None = None):
        self.host = host
        self.port = port
        self.api_key = api_key
        self.requests: list[ReceivedRequest] = []
        self.flaky_seen: dict[str, int] = {}  # ``flaky`` requests received, per key
        self.sequence_seen: dict[str, int] = {}  # ``sequence`` requests received, per key
        self._count_lock = threading.Lock()
        self._ids = itertools.count(1)
        self._server: FakeServer | None = None
        self._thread: threading.Thread | None = None

    def count(self, seen: dict[str, int], key: str) -> int:
        """Count one request for ``key`` in ``seen``; how many came before it."""
        with self._count_lock:
            before = seen.get(key, 0)
            seen[key] = before + 1
        return before

    def next_id(self) -> int:
        """A number for ids (``msg_fake_3``), unique per server."""
        return next(self._ids)

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}{self.base_path}"

    def _bind(self) -> FakeServer:
        self._server = FakeServer((self.host, self.port), self, self.handler)
        self.port = self._server.server_address[1]
        return self._server

    def start(self) -> Self:
        server = self._bind()
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=type(self).__name__,
            daemon=True,
        )
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        """Serve in the calling thread (the subprocess entrypoint)."""
        server = self._bind()
        print(self.base_url, flush=True)
        try:
            server.serve_forever(poll_interval=0.05)
        finally:
            server.server_close()

    def stop(self) -> None:
        if self._server is None:
            return
        self._server.stopping.set()
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def serve_main(fake_class: type[HttpFake], description: str, argv: list[str] | None) -> None:
    """``python -m tests.fakes.<fake> --port N``: serve until interrupted."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--api-key", default=None, help="require this API key")
    args = parser.parse_args(argv)
    fake = fake_class(host=args.host, port=args.port, api_key=args.api_key)
    with contextlib.suppress(KeyboardInterrupt):
        fake.serve_forever()
