"""A fast fake OpenAI-compatible Chat Completions server for benchmarks (127.0.0.1 only).

``python -m bench.upstream --port N --tokens 50 --delay-ms 20`` serves until SIGINT/SIGTERM and
prints its base URL (``http://127.0.0.1:N/v1``) once it listens. One process, raw gevent sockets
and a minimal HTTP/1.1 parser (keep-alive, ``Content-Length`` bodies), so it holds thousands of
concurrent slow streams and is never the bottleneck of a benchmark. It speaks the same wire
format as ``tests/fakes/upstream.py`` (which is threaded and too slow for this).

``POST /v1/chat/completions``:

- ``stream: true``: ``text/event-stream`` (chunked). A role chunk at once, then one
  ``chat.completion.chunk`` per content token (``"w0 "``, ``"w1 "``, ...) each after
  ``delay_ms``, then a chunk with ``finish_reason`` (``"stop"``, or ``"length"`` when the
  request's ``max_tokens`` cut it), a usage chunk when ``stream_options.include_usage`` is set,
  and ``data: [DONE]``.
- ``stream: false``: one ``chat.completion`` JSON after ``tokens * delay_ms``.

Tokens and delay, first found wins: request headers ``x-bench-tokens`` / ``x-bench-delay-ms``;
a ``bench: {"tokens": N, "delay_ms": D}`` script in the last user message; the server-wide
defaults (CLI, changeable at run time with ``POST /_bench/defaults {"tokens", "delay_ms"}``).
``GET /_bench/stats`` reports requests served and active / peak concurrent streams
(``POST /_bench/stats/reset-peak`` restarts the peak);
``GET /v1/models`` and ``GET /healthz`` answer too.

``python -m bench.upstream --selfcheck`` starts a server subprocess and measures it: non-stream
and stream requests/s at concurrency 32 (keep-alive), then thousands of concurrent slow streams.
"""

from __future__ import annotations

import argparse
import heapq
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

MAX_HEADER_BYTES = 64 * 1024
MAX_BODY_BYTES = 16 * 1024 * 1024
MAX_TOKENS = 100_000
MAX_DELAY_MS = 60_000
IDLE_TIMEOUT_SECONDS = 120.0
CREATED = 1_700_000_000
PROMPT_TOKENS = 11
_SCRIPT = re.compile(r"bench:\s*(\{[^{}]*\})")
SSE_HEADERS = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream; charset=utf-8\r\n"
    b"Cache-Control: no-cache\r\nTransfer-Encoding: chunked\r\n\r\n"
)
_STATUS_TEXT = {200: "OK", 400: "Bad Request", 404: "Not Found", 411: "Length Required"}


@dataclass
class Config:
    tokens: int = 50
    delay_ms: float = 20.0


@dataclass
class Stats:
    requests: int = 0
    streams: int = 0
    active: int = 0
    peak_active: int = 0
    completed_streams: int = 0
    disconnects: int = 0


# --------------------------------------------------------------------------- the server


class BadRequest(Exception):
    pass


def _clamp(value: Any, high: float, default: float) -> float:
    try:
        return max(0.0, min(float(value), high))
    except (TypeError, ValueError):
        return default


def _plan(headers: dict[bytes, bytes], body: dict[str, Any], config: Config) -> tuple[int, float]:
    """(tokens, delay in seconds) for one request."""
    tokens, delay_ms = float(config.tokens), config.delay_ms
    messages = body.get("messages") or []
    users = [m for m in messages if isinstance(m, dict) and m.get("role") == "user"]
    content = users[-1].get("content") if users else None
    if isinstance(content, str) and "bench:" in content:
        match = _SCRIPT.search(content)
        if match:
            try:
                script = json.loads(match.group(1))
                tokens = _clamp(script.get("tokens", tokens), MAX_TOKENS, tokens)
                delay_ms = _clamp(script.get("delay_ms", delay_ms), MAX_DELAY_MS, delay_ms)
            except ValueError:
                pass
    if b"x-bench-tokens" in headers:
        tokens = _clamp(headers[b"x-bench-tokens"], MAX_TOKENS, tokens)
    if b"x-bench-delay-ms" in headers:
        delay_ms = _clamp(headers[b"x-bench-delay-ms"], MAX_DELAY_MS, delay_ms)
    return int(tokens), delay_ms / 1000


def _usage(completion: int) -> dict[str, Any]:
    return {
        "prompt_tokens": PROMPT_TOKENS,
        "completion_tokens": completion,
        "total_tokens": PROMPT_TOKENS + completion,
        "completion_tokens_details": {"reasoning_tokens": 0},
        "prompt_tokens_details": {"cached_tokens": 0},
    }


def _chunked(payload: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(payload), payload)


class Upstream:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.stats = Stats()
        self.ids = 0
        self.ticker = Ticker()

    # -- connection loop ----------------------------------------------------------------

    def handle(self, sock: Any, _address: Any) -> None:
        import gevent

        sock.settimeout(IDLE_TIMEOUT_SECONDS)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        buf = b""
        try:
            while True:  # one request per turn; ends on close, error, timeout or Connection: close
                while b"\r\n\r\n" not in buf:
                    if len(buf) > MAX_HEADER_BYTES:
                        return
                    data = sock.recv(65536)
                    if not data:
                        return
                    buf += data
                head, _, buf = buf.partition(b"\r\n\r\n")
                lines = head.split(b"\r\n")
                method, path, version = lines[0].split(b" ", 2)
                headers = {}
                for line in lines[1:]:
                    name, _, value = line.partition(b":")
                    headers[name.strip().lower()] = value.strip()
                if b"transfer-encoding" in headers:
                    self._json(sock, 411, _error("chunked request bodies are not supported"), False)
                    return
                length = int(headers.get(b"content-length", b"0"))
                if length > MAX_BODY_BYTES:
                    return
                while len(buf) < length:
                    data = sock.recv(max(65536, length - len(buf)))
                    if not data:
                        return
                    buf += data
                body, buf = buf[:length], buf[length:]
                keep = (
                    version == b"HTTP/1.1" and headers.get(b"connection", b"").lower() != b"close"
                )
                self.stats.requests += 1
                keep = self.route(sock, method, path.split(b"?", 1)[0], headers, body, keep)
                if not keep:
                    return
        except (OSError, ValueError, gevent.Timeout):
            return
        finally:
            sock.close()

    def route(
        self,
        sock: Any,
        method: bytes,
        path: bytes,
        headers: dict[bytes, bytes],
        raw: bytes,
        keep: bool,
    ) -> bool:
        path = path.rstrip(b"/")
        if method == b"POST" and path == b"/v1/chat/completions":
            try:
                body = json.loads(raw or b"{}")
                if not isinstance(body, dict):
                    raise ValueError("the body must be a JSON object")
            except ValueError as exc:
                self._json(sock, 400, _error(f"bad JSON: {exc}"), keep)
                return keep
            tokens, delay = _plan(headers, body, self.config)
            if body.get("stream"):
                self.stream(sock, body, tokens, delay)
                return keep
            self.complete(sock, body, tokens, delay, keep)
            return keep
        if method == b"GET" and path in (b"/healthz", b""):
            self._json(sock, 200, {"status": "ok"}, keep)
        elif method == b"GET" and path == b"/v1/models":
            model = {"id": "bench-up", "object": "model", "created": CREATED, "owned_by": "bench"}
            self._json(sock, 200, {"object": "list", "data": [model]}, keep)
        elif method == b"GET" and path == b"/_bench/stats":
            self._json(sock, 200, vars(self.stats), keep)
        elif method == b"POST" and path == b"/_bench/stats/reset-peak":
            self.stats.peak_active = self.stats.active
            self._json(sock, 200, vars(self.stats), keep)
        elif method == b"POST" and path == b"/_bench/defaults":
            previous = vars(Config(self.config.tokens, self.config.delay_ms))
            try:
                new = json.loads(raw or b"{}")
                tokens = int(_clamp(new.get("tokens", self.config.tokens), MAX_TOKENS, 0))
                delay_ms = _clamp(new.get("delay_ms", self.config.delay_ms), MAX_DELAY_MS, 0)
            except (ValueError, AttributeError) as exc:
                self._json(sock, 400, _error(f"bad defaults: {exc}"), keep)
                return keep
            self.config.tokens, self.config.delay_ms = tokens, delay_ms
            self._json(sock, 200, {"previous": previous, "current": vars(self.config)}, keep)
        else:
            self._json(sock, 404, _error(f"no route {method.decode()} {path.decode()}"), keep)
        return keep

    # -- answers ------------------------------------------------------------------------

    def _json(self, sock: Any, status: int, payload: dict[str, Any], keep: bool) -> None:
        data = json.dumps(payload, separators=(",", ":")).encode()
        head = (
            f"HTTP/1.1 {status} {_STATUS_TEXT.get(status, 'Error')}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n"
            f"Connection: {'keep-alive' if keep else 'close'}\r\n\r\n"
        )
        sock.sendall(head.encode() + data)

    def _finish(self, body: dict[str, Any], tokens: int) -> tuple[int, str]:
        cap = body.get("max_tokens") or body.get("max_completion_tokens")
        if isinstance(cap, int) and 0 <= cap < tokens:
            return cap, "length"
        return tokens, "stop"

    def complete(
        self, sock: Any, body: dict[str, Any], tokens: int, delay: float, keep: bool
    ) -> None:
        import gevent

        count, finish = self._finish(body, tokens)
        if delay and count:
            gevent.sleep(delay * count)
        self.ids += 1
        content = "".join(f"w{i} " for i in range(count))
        message: dict[str, Any] = {"role": "assistant", "content": content, "refusal": None}
        choice = {"index": 0, "message": message, "logprobs": None, "finish_reason": finish}
        payload = {
            "id": f"chatcmpl-bench-{self.ids}",
            "object": "chat.completion",
            "created": CREATED,
            "model": body.get("model", "bench-up"),
            "choices": [choice],
            "usage": _usage(count),
        }
        self._json(sock, 200, payload, keep)

    def stream(self, sock: Any, body: dict[str, Any], tokens: int, delay: float) -> None:
        count, finish = self._finish(body, tokens)
        self.ids += 1
        usage = bool((body.get("stream_options") or {}).get("include_usage"))
        model = json.dumps(str(body.get("model", "bench-up")))
        head = (
            f'data: {{"id":"chatcmpl-bench-{self.ids}","object":"chat.completion.chunk",'
            f'"created":{CREATED},"model":{model},"system_fingerprint":"fp_bench",'
            '"choices":[{"index":0,"delta":'
        ).encode()
        tail = b',"usage":null}\n\n' if usage else b"}\n\n"

        def chunk(delta: bytes, reason: bytes = b"null") -> bytes:
            return _chunked(
                head + delta + b',"logprobs":null,"finish_reason":' + reason + b"}]" + tail
            )

        end = [chunk(b"{}", b'"%s"' % finish.encode())]
        if usage:
            last = json.dumps({"choices": [], "usage": _usage(count)}, separators=(",", ":"))
            end.append(_chunked(head.split(b'"choices"')[0] + last[1:].encode() + b"\n\n"))
        end += [_chunked(b"data: [DONE]\n\n"), b"0\r\n\r\n"]
        ending = b"".join(end)

        def piece(i: int) -> bytes:
            """Piece 0: headers and role chunk; piece i: content token i-1 (+ the ending)."""
            if i == 0:
                out = SSE_HEADERS + chunk(b'{"role":"assistant","content":"","refusal":null}')
            else:
                out = chunk(b'{"content":"w%d "}' % (i - 1))
            return out + ending if i == count else out

        stats = self.stats
        stats.streams += 1
        stats.active += 1
        stats.peak_active = max(stats.peak_active, stats.active)
        try:
            if not delay or not count:
                sock.sendall(b"".join(piece(i) for i in range(count + 1)))
                ok = True
            else:
                ok = self.ticker.run_stream(sock, piece, count, delay)
            if ok:
                stats.completed_streams += 1
            else:
                stats.disconnects += 1
                raise ConnectionError("the client went away mid-stream")
        except OSError:
            stats.disconnects += 1
            raise
        finally:
            stats.active -= 1


class _Stream:
    """One paced stream, advanced by the ticker: no timer or greenlet switch per chunk."""

    __slots__ = ("sock", "raw", "piece", "count", "delay", "start", "next", "done", "ok")

    def __init__(self, sock: Any, piece: Callable[[int], bytes], count: int, delay: float) -> None:
        from gevent.event import Event

        self.sock = sock
        self.raw = getattr(sock, "_sock", sock)  # gevent's non-blocking OS socket
        self.piece = piece
        self.count = count
        self.delay = delay
        self.start = time.monotonic()
        self.next = 0
        self.done = Event()
        self.ok = False


class Ticker:
    """Sends every paced stream's due chunks from one greenlet, on an absolute schedule
    (chunk i at start + i * delay), so per-chunk cost is one ``send`` and no drift builds up."""

    MAX_BATCH = 2000  # chunks sent before yielding to the hub (accepting, reading requests)
    TICK = 0.001  # chunks due within a tick go out together (at most 1 ms early)

    def __init__(self) -> None:
        from gevent.event import Event

        self.heap: list[tuple[float, int, _Stream]] = []
        self.serial = 0
        self.wake = Event()
        self.greenlet: Any = None

    def run_stream(
        self, sock: Any, piece: Callable[[int], bytes], count: int, delay: float
    ) -> bool:
        import gevent

        if self.greenlet is None:
            self.greenlet = gevent.spawn(self._loop)
        stream = _Stream(sock, piece, count, delay)
        self._step(stream, stream.start)
        stream.done.wait(timeout=count * delay + IDLE_TIMEOUT_SECONDS)
        return stream.ok

    def _push(self, due: float, stream: _Stream) -> None:
        self.serial += 1
        first = not self.heap or due < self.heap[0][0]
        heapq.heappush(self.heap, (due, self.serial, stream))
        if first:
            self.wake.set()

    def _step(self, stream: _Stream, now: float) -> None:
        i = stream.next
        data = stream.piece(i)
        stream.next = i + 1
        try:
            sent = stream.raw.send(data)
        except BlockingIOError:
            sent = 0
        except OSError:
            stream.done.set()
            return
        if sent < len(data):  # a slow reader: finish this piece in its own greenlet
            import gevent

            gevent.spawn(self._send_rest, stream, data[sent:])
        elif i == stream.count:
            stream.ok = True
            stream.done.set()
        else:
            self._push(stream.start + (i + 1) * stream.delay, stream)

    def _send_rest(self, stream: _Stream, rest: bytes) -> None:
        try:
            stream.sock.sendall(rest)
        except OSError:
            stream.done.set()
            return
        if stream.next > stream.count:
            stream.ok = True
            stream.done.set()
        else:
            self._push(stream.start + stream.next * stream.delay, stream)

    def _loop(self) -> None:
        import gevent

        heap = self.heap
        while True:  # lives as long as the server process
            if not heap:
                self.wake.clear()
                self.wake.wait()
                continue
            now = time.monotonic()
            wait = heap[0][0] - now
            if wait > self.TICK:
                self.wake.clear()
                self.wake.wait(wait - self.TICK / 2)
                continue
            horizon = now + self.TICK
            for _ in range(self.MAX_BATCH):
                if not heap or heap[0][0] > horizon:
                    break
                self._step(heapq.heappop(heap)[2], now)
            gevent.sleep(0)


def _error(message: str) -> dict[str, Any]:
    return {
        "error": {"message": message, "type": "invalid_request_error", "param": None, "code": None}
    }


def serve(host: str, port: int, config: Config) -> None:
    from gevent import signal_handler
    from gevent.server import StreamServer

    app = Upstream(config)
    server = StreamServer((host, port), app.handle, backlog=4096)
    server.reuse_addr = True
    server.start()
    stop = lambda: server.stop(timeout=1)  # noqa: E731
    signal_handler(signal.SIGTERM, stop)
    signal_handler(signal.SIGINT, stop)
    print(f"http://{host}:{server.server_port}/v1", flush=True)
    server.serve_forever()


# --------------------------------------------------------------------------- the self-check


def start_subprocess(
    port: int, tokens: int = 50, delay_ms: float = 20.0, **popen: Any
) -> tuple[subprocess.Popen[bytes], str]:
    """Start ``python -m bench.upstream`` and return (process, base URL) once it listens."""
    from ops.embedded_redis import die_with_parent

    command = [sys.executable, "-m", "bench.upstream", "--port", str(port)]
    command += ["--tokens", str(tokens), "--delay-ms", str(delay_ms)]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, preexec_fn=die_with_parent, **popen)
    assert proc.stdout is not None
    line = proc.stdout.readline().decode().strip()  # bounded: the child prints or exits
    if not line.startswith("http://"):
        proc.kill()
        proc.wait()
        raise RuntimeError(f"bench.upstream did not start (printed {line!r})")
    return proc, line


def _request_bytes(port: int, stream: bool, tokens: int, delay_ms: float) -> bytes:
    body = json.dumps(
        {
            "model": "bench-up",
            "messages": [{"role": "user", "content": "x"}],
            "stream": stream,
            "stream_options": {"include_usage": True} if stream else None,
        }
    ).encode()
    return (
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        f"x-bench-tokens: {tokens}\r\nx-bench-delay-ms: {delay_ms}\r\n\r\n"
    ).encode() + body


def _read_one(sock: Any, buf: bytes) -> tuple[bytes, bytes, int]:
    """Read one response on a keep-alive socket: (status line, rest of the buffer, data events)."""
    while b"\r\n\r\n" not in buf:
        data = sock.recv(65536)
        if not data:
            raise ConnectionError("closed before the headers")
        buf += data
    head, _, buf = buf.partition(b"\r\n\r\n")
    status = head.split(b"\r\n", 1)[0]
    lower = head.lower()
    if b"content-length:" in lower:
        length = int(lower.split(b"content-length:", 1)[1].split(b"\r\n", 1)[0])
        while len(buf) < length:
            data = sock.recv(65536)
            if not data:
                raise ConnectionError("closed mid-body")
            buf += data
        return status, buf[length:], 1
    body = buf  # chunked: every payload chunk ends "\n\n\r\n", so the end marker is unambiguous
    while not body.endswith(b"\n\n\r\n0\r\n\r\n"):
        data = sock.recv(65536)
        if not data:
            raise ConnectionError("closed mid-stream")
        body += data
    return status, b"", body.count(b"\r\ndata: ")


def _phase(port: int, *, total: int, conc: int, stream: bool, tokens: int, delay_ms: float) -> dict:
    import gevent
    from gevent import socket as gsocket

    request = _request_bytes(port, stream, tokens, delay_ms)
    per = [total // conc + (1 if i < total % conc else 0) for i in range(conc)]
    done = {"ok": 0, "errors": 0, "events": 0}

    def client(n: int) -> None:
        sock = gsocket.create_connection(("127.0.0.1", port), timeout=60)
        buf = b""
        try:
            for _ in range(n):
                sock.sendall(request)
                status, buf, events = _read_one(sock, buf)
                ok = status.startswith(b"HTTP/1.1 200")
                done["ok" if ok else "errors"] += 1
                done["events"] += events
        except (OSError, ConnectionError):
            done["errors"] += 1
        finally:
            sock.close()

    start = time.perf_counter()
    gevent.joinall([gevent.spawn(client, n) for n in per if n], timeout=120)
    wall = time.perf_counter() - start
    return {**done, "wall_s": round(wall, 3), "req_per_s": round(done["ok"] / wall, 1)}


def selfcheck(requests: int, concurrency: int, slow_streams: int) -> dict[str, Any]:
    from ops.embedded_redis import free_port

    port = free_port()
    proc, url = start_subprocess(port)
    try:
        phases = [  # (name, requests, connections, stream, delay_ms)
            ("non_stream", requests, concurrency, False, 0.0),
            ("stream_50_tokens", requests // 2, concurrency, True, 0.0),
            (f"slow_streams_{slow_streams}x50x20ms", slow_streams, slow_streams, True, 20.0),
        ]
        results: dict[str, Any] = {"url": url}
        for name, total, conc, stream, delay_ms in phases:
            before = _cpu_seconds(proc.pid)
            results[name] = _phase(
                port, total=total, conc=conc, stream=stream, tokens=50, delay_ms=delay_ms
            )
            results[name]["server_cpu_s"] = round(_cpu_seconds(proc.pid) - before, 2)
        return results
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1", choices=["127.0.0.1"])
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--tokens", type=int, default=50, help="content chunks per answer")
    parser.add_argument("--delay-ms", type=float, default=20.0, help="pause before each token")
    parser.add_argument("--selfcheck", action="store_true", help="measure a server's throughput")
    parser.add_argument("--requests", type=int, default=20000, help="selfcheck: non-stream count")
    parser.add_argument("--concurrency", type=int, default=32, help="selfcheck: connections")
    parser.add_argument("--slow-streams", type=int, default=2000, help="selfcheck: held at once")
    args = parser.parse_args(argv)
    if args.selfcheck:
        print(json.dumps(selfcheck(args.requests, args.concurrency, args.slow_streams), indent=2))
        return
    serve(args.host, args.port, Config(tokens=args.tokens, delay_ms=args.delay_ms))


if __name__ == "__main__":
    main()
