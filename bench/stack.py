"""What the benchmarks share: resq started in its production shape (``Stack``), ``make run``'s
whole tree (``Launched``), RSS/CPU from /proc (``Sampler``), a raw-socket asyncio HTTP/SSE
client (one-shot ``http_json``/``sse`` and keep-alive ``Connection``), and percentile helpers.

Everything talks to 127.0.0.1 only; every process ``Stack`` starts, ``Stack.stop`` stops (and
each one dies with its parent, even on SIGKILL).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from bench.upstream import start_subprocess
from ops.embedded_redis import EmbeddedRedis, free_port
from ops.launcher import (
    READY_TIMEOUT_SECONDS,
    api_command,
    spawn,
    stop_all,
    wait_healthy,
    worker_command,
)
from shared.settings import Settings
from shared.store import migrate

HOST = "127.0.0.1"
REPO = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).with_name("results")
TERMINAL = {"response.completed", "response.failed", "response.incomplete"}
CLK_TCK = os.sysconf("SC_CLK_TCK")

# --------------------------------------------------------------------------- /proc


def _children(pid: int) -> list[int]:
    """pid and all its descendants (the gunicorn master's gevent worker is its child)."""
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            parents.setdefault(ppid, []).append(int(entry))
    tree, todo = [], [pid]
    while todo:
        p = todo.pop()
        tree.append(p)
        todo += parents.get(p, [])
    return tree


def _rss_kb(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except (OSError, IndexError, ValueError):
        pass
    return 0


def _pss_kb(pid: int) -> int:
    """Proportional set size: shared pages (a forked gunicorn worker's) counted once overall."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except (OSError, IndexError, ValueError):
        pass
    return 0


def _cpu_s(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK
    except (OSError, IndexError, ValueError):
        return 0.0


class Sampler:
    """RSS (processes + descendants) of named process groups every ``interval``; peaks since
    reset. ``pids`` is asked again every 2 s and on ``refresh`` (workers may be restarted)."""

    def __init__(self, pids: Callable[[], dict[str, list[int]]], interval: float = 0.1) -> None:
        self.pids = pids
        self.interval = interval
        self.trees: dict[str, list[int]] = {}
        self.peak: dict[str, int] = {}
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, name="sampler", daemon=True)
        self.refresh()

    def refresh(self) -> None:
        self.trees = {
            name: [p for pid in pids for p in _children(pid)] for name, pids in self.pids().items()
        }

    def rss_kb(self, name: str) -> int:
        return sum(_rss_kb(p) for p in self.trees[name])

    def pss_kb(self, name: str) -> int:
        return sum(_pss_kb(p) for p in self.trees[name])

    def cpu_s(self, name: str) -> float:
        return sum(_cpu_s(p) for p in self.trees[name])

    def reset(self) -> None:
        with self.lock:
            self.peak = {name: self.rss_kb(name) for name in self.trees}

    def _run(self) -> None:
        rounds = 0
        while not self.stopping.wait(self.interval):
            rounds += 1
            if rounds % 20 == 0:
                self.refresh()
            with self.lock:
                for name in self.trees:
                    self.peak[name] = max(self.peak.get(name, 0), self.rss_kb(name))

    def __enter__(self) -> Sampler:
        self.reset()
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopping.set()
        self.thread.join(5)


# --------------------------------------------------------------------------- HTTP client


def request_bytes(
    port: int,
    method: str,
    path: str,
    body: Any = None,
    headers: dict[str, str] | None = None,
    *,
    keep_alive: bool = False,
) -> bytes:
    data = json.dumps(body).encode() if body is not None else b""
    connection = "keep-alive" if keep_alive else "close"
    head = f"{method} {path} HTTP/1.1\r\nHost: {HOST}:{port}\r\nConnection: {connection}\r\n"
    for name, value in (headers or {}).items():
        head += f"{name}: {value}\r\n"
    if body is not None:
        head += f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n"
    return head.encode() + b"\r\n" + data


async def _read_head(reader: asyncio.StreamReader) -> tuple[int, dict[str, str]]:
    raw = await reader.readuntil(b"\r\n\r\n")
    lines = raw.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    hdrs = {
        k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:] if ln)
    }
    return status, hdrs


async def _request(
    port: int, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, int, dict[str, str]]:
    reader, writer = await asyncio.open_connection(HOST, port, limit=1 << 20)
    writer.write(request_bytes(port, method, path, body, headers))
    status, hdrs = await _read_head(reader)
    return reader, writer, status, hdrs


async def _body_chunks(reader: asyncio.StreamReader, headers: dict[str, str]) -> Any:
    """Yield the decoded body in pieces (chunked, Content-Length or until close), for a
    connection that closes after this answer."""
    if "chunked" in headers.get("transfer-encoding", ""):
        buf = bytearray()
        while True:
            data = await reader.read(1 << 16)
            if not data:
                raise ConnectionError("the body ended before the last chunk (truncated)")
            buf += data
            pos, out, end = 0, bytearray(), False
            while True:
                eol = buf.find(b"\r\n", pos)
                if eol < 0:
                    break
                size = int(bytes(buf[pos:eol]).split(b";")[0], 16)
                if size == 0:
                    end = True
                    break
                if len(buf) < eol + 4 + size:
                    break
                out += buf[eol + 2 : eol + 2 + size]
                pos = eol + 4 + size
            del buf[:pos]
            if out:
                yield bytes(out)
            if end:
                return
    elif "content-length" in headers:
        yield await reader.readexactly(int(headers["content-length"]))
    else:
        yield await reader.read()


async def http_json(
    port: int, method: str, path: str, body: Any = None, *, timeout: float = 60
) -> tuple[int, Any]:
    async with asyncio.timeout(timeout):
        reader, writer, status, headers = await _request(port, method, path, body)
        try:
            raw = b"".join([piece async for piece in _body_chunks(reader, headers)])
            return status, json.loads(raw) if raw else None
        finally:
            writer.close()


async def _exact_body(
    reader: asyncio.StreamReader, headers: dict[str, str]
) -> AsyncIterator[bytes]:
    """Yield the body in pieces, consuming exactly its bytes (so the connection can be reused)."""
    if "chunked" in headers.get("transfer-encoding", ""):
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            if size == 0:
                while await reader.readuntil(b"\r\n") != b"\r\n":
                    pass  # trailers
                return
            yield (await reader.readexactly(size + 2))[:-2]
    elif "content-length" in headers:
        yield await reader.readexactly(int(headers["content-length"]))
    else:
        yield await reader.read()


class Connection:
    """One keep-alive HTTP/1.1 connection: requests one after the other, as an SDK's pool does."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def exchange(
        self, request: bytes, on_data: Callable[[bytes], None] | None = None
    ) -> tuple[int, bytes]:
        """Send ``request`` (from ``request_bytes(..., keep_alive=True)``), read the whole
        answer: (status, body). ``on_data`` sees each body piece as it arrives."""
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(HOST, self.port, limit=1 << 20)
        assert self.reader is not None
        try:
            self.writer.write(request)
            status, headers = await _read_head(self.reader)
            pieces = []
            async for piece in _exact_body(self.reader, headers):
                pieces.append(piece)
                if on_data is not None:
                    on_data(piece)
        except BaseException:
            self.close()
            raise
        if headers.get("connection", "").lower() == "close":
            self.close()
        return status, b"".join(pieces)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


@dataclass
class StreamResult:
    status: int = 0
    events: int = 0
    terminal: str | None = None
    final_status: str | None = None  # the Response's status in the terminal event
    first_event_s: float | None = None  # since the request started
    first_delta_s: float | None = None
    seq_error: str | None = None
    gaps: int = 0
    error: str | None = None
    ended_s: float = 0.0


_SEQ = re.compile(rb'"sequence_number":(\d+)')


class EventParser:
    """SSE blocks → checks. resq events: sequence numbers strictly increasing from 0 (gaps
    counted), the terminal event parsed as JSON. ``chat``: ``chat.completion.chunk``s, where
    the first content chunk is the first delta."""

    def __init__(self, result: StreamResult, start: float, chat: bool) -> None:
        self.result = result
        self.start = start
        self.chat = chat
        self.expected = 0
        self.pending = b""

    def feed(self, data: bytes) -> None:
        blocks = (self.pending + data).split(b"\n\n")
        self.pending = blocks.pop()
        r = self.result
        for block in blocks:
            at = block.find(b"data: ")
            if at < 0:
                continue  # a keep-alive comment
            payload = block[at + 6 :]
            if r.first_event_s is None:
                r.first_event_s = time.perf_counter() - self.start
            if self.chat:
                if payload == b"[DONE]":
                    r.terminal = "[DONE]"
                    continue
                r.events += 1
                if r.first_delta_s is None and b'"content":"w' in payload:
                    r.first_delta_s = time.perf_counter() - self.start
                continue
            r.events += 1
            kind = block[7 : block.find(b"\n")].decode() if block[:7] == b"event: " else ""
            match = _SEQ.search(payload)
            seq = int(match.group(1)) if match else None
            if seq is None or seq < self.expected:
                r.seq_error = (
                    r.seq_error or f"sequence_number {seq} where >= {self.expected} was due"
                )
            else:
                r.gaps += seq - self.expected
                self.expected = seq + 1
            if kind == "response.output_text.delta" and r.first_delta_s is None:
                r.first_delta_s = time.perf_counter() - self.start
            if kind in TERMINAL:
                r.terminal = kind
                r.final_status = json.loads(payload)["response"]["status"]


async def sse(
    port: int,
    method: str,
    path: str,
    body: Any = None,
    *,
    headers: dict[str, str] | None = None,
    chat: bool = False,
    on_open: Callable[[], None] | None = None,
    timeout: float = 120,
) -> StreamResult:
    """Read one SSE body to its end (or its first error, or ``timeout``) and check it."""
    result = StreamResult()
    start = time.perf_counter()
    parser = EventParser(result, start, chat)
    writer = None
    try:
        async with asyncio.timeout(timeout):
            reader, writer, result.status, hdrs = await _request(port, method, path, body, headers)
            if result.status != 200:
                raw = b"".join([p async for p in _body_chunks(reader, hdrs)])
                result.error = f"HTTP {result.status}: {raw[:300]!r}"
                return result
            if on_open:
                on_open()
            async for piece in _body_chunks(reader, hdrs):
                parser.feed(piece)
            if parser.pending.strip():
                result.error = f"the body ended inside an event: {parser.pending[:200]!r}"
    except TimeoutError:
        result.error = f"no end after {timeout:g} s ({result.events} events so far)"
    except (OSError, ConnectionError, asyncio.IncompleteReadError, ValueError, KeyError) as exc:
        result.error = f"{type(exc).__name__}: {exc}"
    finally:
        result.ended_s = time.perf_counter()
        if writer is not None:
            writer.close()
    if result.error is None and result.terminal is None:
        result.error = "the stream ended without a terminal event"
    return result


def pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def ms(value: float | None) -> float | None:
    return None if value is None else round(value * 1000, 1)


# --------------------------------------------------------------------------- the stack


@dataclass
class Stack:
    """Private Redis (no persistence), a migrated database (SQLite in ``root`` unless
    ``database_url`` is given), the fake upstream, ONE API process and ``workers`` Celery
    workers (gevent pool), all configured as ``make run`` does except for the model route
    ``bench-up`` → the fake upstream."""

    root: Path
    api_port: int
    upstream_port: int
    redis: EmbeddedRedis
    database_url: str
    workers: int = 1
    env: dict[str, str] = field(default_factory=dict)
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    logs: list[IO[bytes]] = field(default_factory=list)

    @classmethod
    def start(
        cls,
        *,
        concurrency: int | None,
        log_level: str,
        workers: int = 1,
        database_url: str | None = None,
    ) -> Stack:
        root = Path(tempfile.mkdtemp(prefix="resq-bench-"))
        stack = cls(
            root=root,
            api_port=free_port(),
            upstream_port=free_port(),
            redis=EmbeddedRedis(root / "redis", persist=False),
            database_url=database_url or f"sqlite:///{root / 'resq.db'}",
            workers=workers,
        )
        try:
            stack._start(concurrency, log_level)
        except BaseException:
            stack.stop()
            raise
        return stack

    def _log(self, name: str) -> IO[bytes]:
        self.logs.append((self.root / f"{name}.log").open("ab"))
        return self.logs[-1]

    def _start(self, concurrency: int | None, log_level: str) -> None:
        self.redis.start()
        migrate.upgrade(self.database_url)
        upstream, url = start_subprocess(self.upstream_port, 50, 20, stderr=self._log("upstream"))
        self.processes["upstream"] = upstream
        models = self.root / "models.toml"
        models.write_text(
            f'[[route]]\nmatch = "bench-up"\nprovider = "openai"\nbase_url = "{url}"\n'
            "timeout_seconds = 120\n"
        )
        self.env = {
            **os.environ,
            "RESQ_HOST": HOST,
            "RESQ_PORT": str(self.api_port),
            "REDIS_URL": self.redis.url,
            "DATABASE_URL": self.database_url,
            "RESQ_MODELS_FILE": str(models),
            "RESQ_VAR_DIR": str(self.root / "var"),
            "RESQ_LOG_LEVEL": log_level,
        }
        self.env.pop("RESQ_API_KEYS", None)  # open mode
        if concurrency is None:
            self.env.pop("RESQ_WORKER_CONCURRENCY", None)  # the production default
        else:
            self.env["RESQ_WORKER_CONCURRENCY"] = str(concurrency)
        settings = Settings.from_env(self.env)
        log = self._log("api")
        self.processes["api"] = spawn(
            api_command(settings), self.env, stdout=log, stderr=subprocess.STDOUT
        )
        self.start_workers()
        wait_healthy(f"http://{HOST}:{self.api_port}", 60, list(self.processes.values()))

    def _worker_names(self) -> list[str]:
        return [f"worker-{i}" for i in range(self.workers)]

    def start_workers(self) -> None:
        settings = Settings.from_env(self.env)
        for name in self._worker_names():
            command = worker_command(settings, name=f"bench-{name}@%h")
            log = self._log(name)
            self.processes[name] = spawn(command, self.env, stdout=log, stderr=subprocess.STDOUT)

    def stop_workers(self) -> None:
        stop_all([self.processes.pop(name) for name in self._worker_names()])

    def pids(self) -> dict[str, list[int]]:
        assert self.redis.process is not None
        out: dict[str, list[int]] = {"redis": [self.redis.process.pid], "worker": []}
        for name, p in list(self.processes.items()):
            out.setdefault(name.split("-")[0], []).append(p.pid)
        return out

    def exited(self) -> list[str]:
        return [n for n, p in self.processes.items() if p.poll() is not None]

    def tails(self, lines: int = 40) -> dict[str, list[str]]:
        out = {}
        for path in sorted(self.root.glob("*.log")):
            text = path.read_text(errors="replace").splitlines()
            notable = [ln for ln in text if re.search(r"ERROR|CRITICAL|Traceback|Error|WARN", ln)]
            out[path.stem] = notable[-lines:] + ["--- last lines ---"] + text[-lines:]
        return out

    def stop(self) -> None:
        stop_all([p for n, p in self.processes.items() if n != "upstream"])
        stop_all([p for n, p in self.processes.items() if n == "upstream"], timeout=5)
        for p in self.processes.values():
            if p.stdout is not None:
                p.stdout.close()
        self.redis.stop()
        for log in self.logs:
            log.close()


def _label(pid: int) -> str:
    """What a process of ``make run``'s tree is, from its command line."""
    try:
        args = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return "gone"
    for marker, label in (("ops.launcher", "launcher"), ("gunicorn", "api"), ("beat", "beat")):
        if marker in args:
            return label
    if "celery" in args:
        return "worker"
    name = Path(args[0].split(" ")[0]).name  # redis-server shows "redis-server host:port"
    return "redis" if name == "redis-server" else name or "?"


@dataclass
class Launched:
    """``make run``'s whole tree: ``python -m ops.launcher`` (which starts a private Redis, the
    API, a worker and beat) with resq's defaults, except a free port and its own var dir under
    ``root``; its output goes to ``root/launcher.log``. ``stop`` leaves nothing of it running."""

    process: subprocess.Popen[bytes]
    log: Path
    known: dict[int, str] = field(default_factory=dict)  # pid -> what it was

    @classmethod
    def start(cls, root: Path) -> Launched:
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith("RESQ_") and k not in {"REDIS_URL", "DATABASE_URL"}
        }
        env |= {"RESQ_PORT": str(free_port()), "RESQ_VAR_DIR": str(root / "launcher-var")}
        log = root / "launcher.log"
        with log.open("ab") as out:
            process = spawn(
                [sys.executable, "-m", "ops.launcher"],
                env,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=REPO,
            )
        return cls(process, log)

    async def wait_ready(self, timeout: float = READY_TIMEOUT_SECONDS + 5) -> float:
        """Seconds until the launcher printed its banner (a worker beats, ``/readyz`` is 200);
        it gives up itself after ``READY_TIMEOUT_SECONDS``."""
        start = time.perf_counter()
        while "resq is running at" not in self.log.read_text(errors="replace"):
            if self.process.poll() is not None:
                raise RuntimeError(f"the launcher exited with {self.process.returncode}")
            if time.perf_counter() - start > timeout:
                raise RuntimeError(f"the launcher was not ready within {timeout:g} s")
            await asyncio.sleep(0.1)
        return time.perf_counter() - start

    def tree(self) -> list[int]:
        """The launcher and all its descendants (remembered for ``stop``)."""
        pids = _children(self.process.pid)
        self.known |= {pid: _label(pid) for pid in pids if pid not in self.known}
        return pids

    def rss_kb(self) -> dict[int, tuple[str, int, int]]:
        """pid -> (what it is, VmRSS kB, PSS kB) for every process of the tree."""
        return {pid: (_label(pid), _rss_kb(pid), _pss_kb(pid)) for pid in self.tree()}

    def stop(self, timeout: float = 30) -> None:
        self.tree()
        stop_all([self.process], timeout=timeout)  # it stops its children in order
        for pid, what in self.known.items():
            if pid != self.process.pid and _label(pid) == what:  # a child outlived it
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)


async def set_upstream(stack: Stack, tokens: int, delay_ms: float) -> None:
    status, _ = await http_json(
        stack.upstream_port, "POST", "/_bench/defaults", {"tokens": tokens, "delay_ms": delay_ms}
    )
    assert status == 200, "the bench upstream refused its defaults"
    await http_json(stack.upstream_port, "POST", "/_bench/stats/reset-peak", {})


def meta(args: argparse.Namespace) -> dict[str, Any]:
    """Where and how a run was made."""

    def git(*cmd: str) -> str:
        try:
            run = subprocess.run(
                ["git", "--no-optional-locks", *cmd], capture_output=True, text=True, timeout=5
            )
            return run.stdout
        except (OSError, subprocess.TimeoutExpired):
            return ""

    head = git("rev-parse", "--short", "HEAD").strip()
    changed = [ln[3:] for ln in git("status", "--porcelain").splitlines() if ln[3:9] != "bench/"]
    return {
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "git_head": head,
        "uncommitted_outside_bench": changed,
        "cpus": os.cpu_count(),
        "loadavg_at_start": os.getloadavg(),
        "python": sys.version.split()[0],
        "args": {k: sorted(v) if isinstance(v, set) else v for k, v in vars(args).items()},
    }
