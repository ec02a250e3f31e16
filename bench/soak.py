"""Soak test: background jobs under steady load while Celery workers are SIGKILLed.

``python -m bench.soak [--jobs 2000] [--workers 3] [--kill-every 4] [--cancel-ratio 0.1]
[--duration-cap 600]``. Not run in CI; 127.0.0.1 only; bounded in jobs and time.

Starts a private Redis (append-only persistence) and a migrated SQLite in a temp dir, ONE API
process, ``--workers`` Celery workers (gevent pool) and ONE standalone ``celery beat`` that
schedules the reaper (beat cannot be embedded in a gevent worker; the reap tasks run on the
workers), with short heartbeats (1 s, timeout 4 s, reaper every 2 s, 3 attempts).
Then:

- submits ``--jobs`` background responses to the built-in model at ``--rate`` per second
  (at most ``--submit-concurrency`` in flight), each scripted ``#resq {"words": W,
  "delay_ms": D}`` (W 5..60, D 0..40); accepted ids and rejected requests are kept apart;
- cancels ``--cancel-ratio`` of the accepted jobs after a random short delay;
- every ``--kill-every`` s SIGKILLs a random worker (its whole process group and any
  descendant, so no child of it survives) and starts a replacement with a new name; the API
  and beat are never killed;
- when everything is submitted and every accepted id is terminal (or nothing moved for
  ``--stall-seconds``, or ``--duration-cap`` is reached), stops killing, gives the reaper
  heartbeat timeout + 2 reaper intervals (more while jobs still move), then checks with
  ``GET /v1/responses/{id}`` that every accepted id is terminal (``lost`` must be 0), that
  the counts add up, that completed jobs carry exactly their scripted output, and, for a
  sample of completed jobs, that the event log (``GET ?stream=true`` and the Redis stream
  itself) has gap-free sequence numbers from 0 and exactly one terminal event, last.

Prints a summary and writes ``bench/results/soak-<timestamp>.json`` (``--results DIR``); on
any problem the temp dir (logs, database, Redis data) is kept and its path printed. Exit
status: 0 all good, 1 a check failed (or lost > 0), 130 interrupted. Everything it starts is
stopped on exit, Ctrl-C, SIGTERM or an error.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import Counter
from contextlib import closing, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import redis

from bench.stack import HOST, RESULTS, TERMINAL, _body_chunks, _children, _request
from bench.stack import http_json as _http_json
from ops.embedded_redis import EmbeddedRedis, free_port
from ops.launcher import (
    api_command,
    beat_command,
    spawn,
    stop_all,
    wait_healthy,
    worker_command,
)
from shared import keys
from shared.settings import Settings
from shared.store import migrate

MODEL = "resq-builtin"
TERMINAL_STATUSES = {"completed", "failed", "cancelled", "incomplete"}
WORDS = ("alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel")
REAPER_FAILURE = "The worker running this response stopped"
SOAK_ENV = {
    "RESQ_HEARTBEAT_SECONDS": "1",
    "RESQ_HEARTBEAT_TIMEOUT_SECONDS": "4",
    "RESQ_REAPER_INTERVAL_SECONDS": "2",
    "RESQ_MAX_ATTEMPTS": "3",
    "RESQ_WORKER_CONCURRENCY": "50",
    # a job whose message died with a killed worker is re-sent after this (see worker/reaper.py)
    "RESQ_QUEUED_RESEND_SECONDS": "10",
}


def now() -> float:
    return time.monotonic()


async def http_json(
    port: int, method: str, path: str, body: Any = None, timeout: float = 30
) -> tuple[int, Any]:
    """``bench.streams.http_json`` with one retry on a connection-level error (never for a
    POST create, whose retry could make a second job)."""
    try:
        return await _http_json(port, method, path, body, timeout=timeout)
    except (OSError, asyncio.IncompleteReadError, TimeoutError):
        if method == "POST" and path == "/v1/responses":
            raise
        await asyncio.sleep(0.5)
        return await _http_json(port, method, path, body, timeout=timeout)


def expected_text(words: int) -> str:
    return " ".join(WORDS[i % len(WORDS)] for i in range(words))


def output_text(body: dict[str, Any]) -> str:
    parts = []
    for item in body.get("output") or []:
        if item.get("type") == "message":
            for c in item.get("content") or []:
                if c.get("type") == "output_text":
                    parts.append(c.get("text", ""))
    return "".join(parts)


# --------------------------------------------------------------------------- the stack


@dataclass
class WorkerProc:
    name: str
    process: subprocess.Popen[bytes]
    log_path: Path
    started: float
    log: IO[bytes]


@dataclass
class Stack:
    root: Path
    api_port: int
    redis: EmbeddedRedis
    env: dict[str, str] = field(default_factory=dict)
    settings: Settings | None = None
    api: subprocess.Popen[bytes] | None = None
    beat: subprocess.Popen[bytes] | None = None
    workers: dict[str, WorkerProc] = field(default_factory=dict)
    dead: list[WorkerProc] = field(default_factory=list)
    logs: list[IO[bytes]] = field(default_factory=list)
    serial: int = 0

    @property
    def db_path(self) -> Path:
        return self.root / "resq.db"

    @classmethod
    def start(cls, n_workers: int) -> Stack:
        root = Path(tempfile.mkdtemp(prefix="resq-soak-"))
        stack = cls(root=root, api_port=free_port(), redis=EmbeddedRedis(root / "redis"))
        try:
            stack._start(n_workers)
        except BaseException:
            stack.stop()
            raise
        return stack

    def _start(self, n_workers: int) -> None:
        self.redis.start()  # persist=True: append-only file in root/redis
        database_url = f"sqlite:///{self.db_path}"
        migrate.upgrade(database_url)
        (self.root / "var").mkdir()
        self.env = {
            **os.environ,
            **SOAK_ENV,
            "RESQ_HOST": HOST,
            "RESQ_PORT": str(self.api_port),
            "REDIS_URL": self.redis.url,
            "DATABASE_URL": database_url,
            "RESQ_VAR_DIR": str(self.root / "var"),
            "RESQ_LOG_LEVEL": "INFO",
        }
        for name in ("RESQ_API_KEYS", "RESQ_MODELS_FILE"):  # open mode, built-in model only
            self.env.pop(name, None)
        self.settings = Settings.from_env(self.env)
        self.api = self._spawn("api", api_command(self.settings))
        # The reaper's schedule: ONE standalone beat (it cannot live in a gevent worker), never
        # killed; the reap tasks it sends run on the workers.
        self.beat = self._spawn("beat", beat_command(self.settings))
        for _ in range(n_workers):
            self.start_worker()
        wait_healthy(f"http://{HOST}:{self.api_port}", 60, [self.api, self.beat])
        deadline = now() + 90
        while not all(self.ready(w) for w in self.workers.values()):
            if now() > deadline or self.exited():
                raise RuntimeError("the workers did not get ready (see their logs)")
            time.sleep(0.2)

    def _spawn(self, name: str, command: list[str]) -> subprocess.Popen[bytes]:
        log = (self.root / f"{name}.log").open("wb")
        self.logs.append(log)
        return spawn(command, self.env, stdout=log, stderr=subprocess.STDOUT)

    def start_worker(self) -> WorkerProc:
        assert self.settings is not None
        self.serial += 1
        name = f"soak-{self.serial}@%h"
        path = self.root / f"worker-soak-{self.serial}.log"
        log = path.open("wb")
        # A process group of its own (``spawn``), so a kill takes the whole group at once (the
        # main process and anything it forked). Not also a new session: setsid() then
        # setpgid() is refused (EPERM), which stopped the soak before its first worker.
        process = spawn(
            worker_command(self.settings, name=name),
            self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        worker = WorkerProc(name, process, path, time.time(), log)
        self.workers[name] = worker
        return worker

    @staticmethod
    def ready(worker: WorkerProc) -> bool:
        try:
            return b" ready." in worker.log_path.read_bytes()
        except OSError:
            return False

    def kill(self, worker: WorkerProc) -> dict[str, Any]:
        """SIGKILL the worker's process group, and any descendant outside it."""
        pid = worker.process.pid
        tree = _children(pid)
        t = time.time()
        with suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)
        for p in tree:
            with suppress(ProcessLookupError):
                os.kill(p, signal.SIGKILL)
        worker.process.wait(10)
        deadline = now() + 5
        survivors = [p for p in tree[1:] if _alive(p)]
        while survivors and now() < deadline:
            time.sleep(0.05)
            survivors = [p for p in survivors if _alive(p)]
        del self.workers[worker.name]
        self.dead.append(worker)
        return {
            "at": round(t, 3),
            "name": worker.name,
            "pid": pid,
            "processes": tree,
            "uptime_s": round(t - worker.started, 2),
            "was_ready": self.ready(worker),
            "survivors": survivors,
        }

    def exited(self) -> list[str]:
        out = [n for n, w in self.workers.items() if w.process.poll() is not None]
        for name, p in (("api", self.api), ("beat", self.beat)):
            if p is not None and p.poll() is not None:
                out.append(name)
        return out

    def worker_logs(self) -> list[Path]:
        return sorted(self.root.glob("worker-soak-*.log"), key=lambda p: int(p.stem.split("-")[-1]))

    def stop(self) -> None:
        workers = list(self.workers.values())
        groups = [w.process.pid for w in workers]
        try:
            others = [p for p in (self.api, self.beat) if p is not None]
            stop_all([w.process for w in workers] + others)
        finally:
            for pgid in groups:  # anything of a worker's group still there
                with suppress(ProcessLookupError, PermissionError):
                    os.killpg(pgid, signal.SIGKILL)
            self.redis.stop()
            for log in self.logs + [w.log for w in workers + self.dead]:
                log.close()


def _query(path: Path, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)) as c:
        return c.execute(sql, params).fetchall()


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


# --------------------------------------------------------------------------- the run


@dataclass
class Job:
    id: str
    words: int
    delay_ms: int
    accepted_at: float
    cancel: dict[str, Any] | None = None


@dataclass
class Soak:
    stack: Stack
    args: argparse.Namespace
    rng: random.Random
    t0: float = 0.0
    jobs: dict[str, Job] = field(default_factory=dict)
    rejected: list[dict[str, Any]] = field(default_factory=list)
    submit_errors: list[str] = field(default_factory=list)
    submitted: int = 0
    kills: list[dict[str, Any]] = field(default_factory=list)
    unexpected_exits: list[dict[str, Any]] = field(default_factory=list)
    timeline: list[dict[str, Any]] = field(default_factory=list)
    phases: dict[str, float] = field(default_factory=dict)
    stalled: bool = False
    open_seen: set[str] | None = None  # the non-terminal ids last seen, and since when
    open_since: float = 0.0
    capped: bool = False
    stop_killing: asyncio.Event = field(default_factory=asyncio.Event)
    cancel_tasks: set[asyncio.Task[None]] = field(default_factory=set)
    background: list[asyncio.Task[None]] = field(default_factory=list)

    @property
    def port(self) -> int:
        return self.stack.api_port

    def elapsed(self) -> float:
        return round(now() - self.t0, 2)

    def deadline(self) -> float:
        return self.t0 + self.args.duration_cap

    # ---------------------------------------------------------------- load

    async def submit_all(self) -> None:
        sem = asyncio.Semaphore(self.args.submit_concurrency)
        tasks = []

        async def one() -> None:
            try:
                await self.submit_one()
            finally:
                sem.release()

        for i in range(self.args.jobs):
            due = self.t0 + i / self.args.rate
            if due > now():
                await asyncio.sleep(due - now())
            if now() > self.deadline():
                self.capped = True
                break
            await sem.acquire()
            self.submitted += 1
            tasks.append(asyncio.create_task(one()))
        await asyncio.gather(*tasks)

    async def submit_one(self) -> None:
        words, delay = self.rng.randint(5, 60), self.rng.randint(0, 40)
        script = "#resq " + json.dumps({"words": words, "delay_ms": delay})
        body = {"model": MODEL, "input": script, "background": True}
        try:
            status, answer = await http_json(self.port, "POST", "/v1/responses", body, timeout=60)
        except (OSError, asyncio.IncompleteReadError, TimeoutError, ValueError) as exc:
            # Unknown whether a job exists: counted apart, never as accepted.
            self.submit_errors.append(f"{type(exc).__name__}: {exc}")
            return
        if status == 200 and isinstance(answer, dict) and answer.get("id"):
            job = Job(answer["id"], words, delay, time.time())
            self.jobs[job.id] = job
            if self.rng.random() < self.args.cancel_ratio:
                delay_s = self.rng.uniform(0, self.args.cancel_max_delay)
                task = asyncio.create_task(self.cancel_later(job, delay_s))
                self.cancel_tasks.add(task)
                task.add_done_callback(self.cancel_tasks.discard)
        else:
            self.rejected.append({"status": status, "body": answer, "at": self.elapsed()})

    async def cancel_later(self, job: Job, delay_s: float) -> None:
        await asyncio.sleep(delay_s)
        t = now()
        job.cancel = {"after_s": round(delay_s, 3)}
        try:
            status, body = await http_json(self.port, "POST", f"/v1/responses/{job.id}/cancel")
        except (OSError, asyncio.IncompleteReadError, TimeoutError, ValueError) as exc:
            job.cancel.update(error=f"{type(exc).__name__}: {exc}")
            return
        job.cancel.update(
            http=status,
            status=body.get("status") if isinstance(body, dict) else None,
            took_s=round(now() - t, 3),
        )
        if status != 200:
            job.cancel["body"] = body

    # ---------------------------------------------------------------- chaos

    async def killer(self) -> None:
        while not self.stop_killing.is_set():
            try:
                await asyncio.wait_for(self.stop_killing.wait(), self.args.kill_every)
                return
            except TimeoutError:
                pass
            alive = list(self.stack.workers.values())
            if not alive:
                continue
            victim = self.rng.choice(alive)
            record = self.stack.kill(victim)
            record["t"] = self.elapsed()
            record["in_progress_at_kill"] = self.db_count("in_progress")
            replacement = self.stack.start_worker()
            record["replacement"] = replacement.name
            self.kills.append(record)

    async def watchdog(self) -> None:
        """Replace a worker that died without being killed (and record it); stop if the API
        or beat died."""
        while True:
            await asyncio.sleep(0.5)
            for name, p in (("API", self.stack.api), ("beat", self.stack.beat)):
                if p is not None and p.poll() is not None:
                    raise RuntimeError(f"the {name} process exited ({p.returncode})")
            for name, w in list(self.stack.workers.items()):
                if w.process.poll() is not None:
                    self.unexpected_exits.append(
                        {"t": self.elapsed(), "name": name, "code": w.process.returncode}
                    )
                    del self.stack.workers[name]
                    self.stack.dead.append(w)
                    self.stack.start_worker()

    # ---------------------------------------------------------------- progress

    def query(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        """A read of the store (cheap, no HTTP): for progress and waiting only."""
        return _query(self.stack.db_path, sql, params)

    def db_count(self, status: str) -> int:
        return int(self.query("SELECT count(*) FROM responses WHERE status=?", (status,))[0][0])

    def open_ids(self) -> set[str]:
        """Accepted ids not terminal in the store (the verdict itself uses the API)."""
        rows = self.query(
            "SELECT id FROM responses WHERE status NOT IN (?, ?, ?, ?)",
            tuple(sorted(TERMINAL_STATUSES)),
        )
        return {r[0] for r in rows} & set(self.jobs)

    def statuses(self) -> Counter[str]:
        return Counter(dict(self.query("SELECT status, count(*) FROM responses GROUP BY 1")))

    def check_background(self, tasks: list[asyncio.Task[None]]) -> None:
        for t in tasks:
            if t.done():
                t.result()  # re-raises what stopped it (the API died)

    async def reporter(self) -> None:
        while True:
            await asyncio.sleep(self.args.progress_every)
            counts = self.statuses()
            self.timeline.append(
                {
                    "t": self.elapsed(),
                    "submitted": self.submitted,
                    "accepted": len(self.jobs),
                    "rejected": len(self.rejected),
                    "kills": len(self.kills),
                    "workers": len(self.stack.workers),
                    "statuses": dict(counts),
                    "load": round(os.getloadavg()[0], 2),
                }
            )
            print(
                f"[{self.elapsed():7.1f}s] submitted {self.submitted} accepted {len(self.jobs)} "
                f"rejected {len(self.rejected)} kills {len(self.kills)} | "
                + " ".join(f"{k} {v}" for k, v in sorted(counts.items())),
                flush=True,
            )

    async def drain(self) -> None:
        """Until every accepted id is terminal, nothing moved for ``--stall-seconds``, or the
        cap."""
        self.open_since = now()
        while True:
            self.check_background(self.background)
            open_ids = await asyncio.to_thread(self.open_ids)
            if not open_ids:
                return
            if open_ids != self.open_seen:
                self.open_seen, self.open_since = open_ids, now()
            if now() - self.open_since > self.args.stall_seconds:
                self.stalled = True
                print(f"stalled: {len(open_ids)} jobs not terminal, none moved", flush=True)
                return
            if now() > self.deadline():
                self.capped = True
                print(f"duration cap: {len(open_ids)} jobs not terminal", flush=True)
                return
            await asyncio.sleep(0.5)

    async def settle(self) -> None:
        """Kills stopped: give the reaper heartbeat timeout + 2 intervals, longer while
        non-terminal jobs are still moving (bounded by ``--stall-seconds``)."""
        s = self.stack.settings
        assert s is not None
        grace = s.heartbeat_timeout_seconds + 2 * s.reaper_interval_seconds + 1
        end = now() + grace
        while True:
            await asyncio.sleep(0.5)
            self.check_background(self.background)
            open_ids = await asyncio.to_thread(self.open_ids)
            if open_ids != self.open_seen:
                self.open_seen, self.open_since = open_ids, now()
            if now() >= end and (not open_ids or now() - self.open_since > self.args.stall_seconds):
                return

    # ---------------------------------------------------------------- verdict

    async def verify(self) -> dict[str, Any]:
        sem = asyncio.Semaphore(20)
        final: dict[str, dict[str, Any]] = {}

        async def get(rid: str) -> None:
            async with sem:
                try:
                    status, body = await http_json(self.port, "GET", f"/v1/responses/{rid}")
                except (OSError, asyncio.IncompleteReadError, TimeoutError, ValueError) as exc:
                    final[rid] = {"http": 0, "error": f"{type(exc).__name__}: {exc}"}
                    return
            final[rid] = {"http": status, "body": body if isinstance(body, dict) else {}}

        await asyncio.gather(*(get(r) for r in self.jobs))
        counts: Counter[str] = Counter()
        failed_messages: Counter[str] = Counter()
        lost: list[str] = []
        output_mismatch: list[dict[str, Any]] = []
        cancelled_without_asking: list[str] = []
        for rid, job in self.jobs.items():
            got = final[rid]
            status = got.get("body", {}).get("status") if got["http"] == 200 else None
            if status not in TERMINAL_STATUSES:
                lost.append(rid)
                counts["lost"] += 1
                continue
            counts[status] += 1
            body = got["body"]
            if status == "failed":
                message = (body.get("error") or {}).get("message", "<no error>")
                failed_messages[re.sub(r"resp_\w+", "resp_…", message)] += 1
            elif status == "completed":
                text = output_text(body)
                tokens = (body.get("usage") or {}).get("output_tokens")
                if text != expected_text(job.words) or tokens != job.words:
                    output_mismatch.append(
                        {"id": rid, "words": job.words, "tokens": tokens, "text": text[:200]}
                    )
            elif status == "cancelled" and job.cancel is None:
                cancelled_without_asking.append(rid)
        completed = [r for r in self.jobs if final[r].get("body", {}).get("status") == "completed"]
        sample = self.rng.sample(completed, min(self.args.sample, len(completed)))
        streams = await asyncio.gather(*(self.check_stream(r) for r in sample))
        logs = await asyncio.to_thread(self.check_logs, sample, final)
        # What a client following such a log sees (a few of them, a short wait each).
        probes = list(logs["bad_terminal_logs"])[: self.args.probe]
        probed = await asyncio.gather(
            *(self.check_stream(r, timeout=self.args.probe_seconds, want=None) for r in probes)
        )
        logs["stream_probe"] = dict(zip(probes, probed, strict=True))
        return {
            "counts": counts,
            "failed_messages": failed_messages,
            "lost": lost,
            "final": final,
            "output_mismatch": output_mismatch,
            "cancelled_without_asking": cancelled_without_asking,
            "stream_sample": dict(zip(sample, streams, strict=True)),
            "redis_logs": logs,
        }

    async def check_stream(
        self, rid: str, *, timeout: float = 30, want: str | None = "response.completed"
    ) -> dict[str, Any]:
        """``GET ?stream=true``: the event types and sequence numbers as relayed."""
        seqs: list[int] = []
        types: list[str] = []
        error = None
        writer = None
        pending = b""
        started = now()
        try:
            async with asyncio.timeout(timeout):
                reader, writer, status, headers = await _request(
                    self.port, "GET", f"/v1/responses/{rid}?stream=true"
                )
                async for piece in _body_chunks(reader, headers):
                    if status != 200:
                        error = f"HTTP {status}: {piece[:200]!r}"
                        break
                    *blocks, pending = (pending + piece).split(b"\n\n")
                    for block in blocks:
                        at = block.find(b"data: ")
                        if at >= 0:  # else a keep-alive comment
                            event = json.loads(block[at + 6 :])
                            seqs.append(event.get("sequence_number", -1))
                            types.append(event.get("type", ""))
        except TimeoutError:
            error = f"no end after {timeout:g} s ({len(types)} events)"
        except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
            error = f"{type(exc).__name__}: {exc}"
        finally:
            if writer is not None:
                writer.close()
        verdict = _log_verdict(seqs, types, error, want=want)
        verdict["took_s"] = round(now() - started, 2)
        return verdict

    def check_logs(self, sample: list[str], final: dict[str, dict[str, Any]]) -> dict[str, Any]:
        """The Redis streams themselves: every terminal accepted job's log, and the sample."""
        client: Any = redis.Redis.from_url(self.stack.redis.url)
        try:
            verdicts: dict[str, dict[str, Any]] = {}
            for rid in self.jobs:
                entries = client.xrange(keys.events(rid))
                seqs = [int(e[0].decode().split("-", 1)[1]) - 1 for e in entries]
                types = [e[1][b"t"].decode() for e in entries]
                status = final[rid].get("body", {}).get("status")
                want = {"completed": "response.completed", "failed": "response.failed"}
                verdicts[rid] = _log_verdict(seqs, types, None, want=want.get(status))
                verdicts[rid]["status"] = status
        finally:
            client.close()
        bad = {r: v for r, v in verdicts.items() if not v["ok"] and v["status"]}
        return {
            "sample": {r: verdicts[r] for r in sample},
            "bad_terminal_logs": bad,
            "bad_by_status": Counter(v["status"] for v in bad.values()),
        }


def _log_verdict(
    seqs: list[int], types: list[str], error: str | None, want: str | None
) -> dict[str, Any]:
    terminals = [t for t in types if t in TERMINAL]
    problems = []
    if error:
        problems.append(error)
    if seqs != list(range(len(seqs))):
        problems.append(f"sequence numbers not 0..{len(seqs) - 1} gap-free: {seqs[:60]}")
    if len(terminals) != 1:
        problems.append(f"{len(terminals)} terminal events: {terminals}")
    elif types[-1] not in TERMINAL:
        problems.append(f"the terminal event is not last (last: {types[-1]})")
    elif want and terminals[0] != want:
        problems.append(f"terminal event {terminals[0]}, expected {want}")
    return {
        "ok": not problems,
        "events": len(seqs),
        "last": types[-1] if types else None,
        "problems": problems,
    }


# --------------------------------------------------------------------------- evidence

_NOTABLE = re.compile(r"ERROR|CRITICAL|Traceback|WARNING|Exception")
_ID = re.compile(r"resp_[0-9A-Za-z]+")


def worker_log_summary(stack: Stack) -> dict[str, Any]:
    counts: Counter[str] = Counter()
    unexpected: list[str] = []
    patterns = {
        "requeued": "re-queued",
        "reaper_failed_after_output": "after output had started streaming",
        "reaper_failed_attempts": "on each of its",
        "received": "Task resq.run_response[",
        "not_claimable": "not claimable",
        "heartbeat_failed": "heartbeat failed",
        "log_moved_on": "its log moved on",
        "cancel_not_confirmed": "did not confirm the cancel",
        "tracebacks": "Traceback",
    }
    for path in [*stack.worker_logs(), stack.root / "api.log", stack.root / "beat.log"]:
        for line in path.read_text(errors="replace").splitlines():
            for key, needle in patterns.items():
                if needle in line:
                    if key == "received" and "received" not in line:
                        continue
                    counts[key] += 1
            if _NOTABLE.search(line) and not any(
                s in line
                for s in ("re-queued", REAPER_FAILURE, "Open mode", "open mode", "not claimable")
            ):
                unexpected.append(f"{path.name}: {line[:400]}")
    return {"counts": dict(counts), "other_notable_lines": unexpected[:200]}


def _stamp(line: str) -> float | None:
    """The epoch of a ``2026-11-21 23:56:51,906 …`` log line (local time, like the logs)."""
    m = re.search(r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),(\d{3})", line)
    if not m:
        return None
    return time.mktime(time.strptime(m.group(1), "%Y-%m-%d %H:%M:%S")) + int(m.group(2)) / 1000


def _kill_context(lines: list[str], kills: list[dict[str, Any]]) -> dict[str, Any]:
    """Who took the job and when that worker was killed, or the kill nearest its creation."""
    out: dict[str, Any] = {}
    for line in lines:
        at = _stamp(line)
        if at is None:
            continue
        if "queued (model=" in line:
            out["queued_at"] = at
            nearest = min(kills, key=lambda k: abs(k["at"] - at), default=None)
            if nearest is not None:
                out["nearest_kill"] = nearest["name"]
                out["nearest_kill_ms_after_queued"] = round((nearest["at"] - at) * 1000)
        m = re.match(r"worker-soak-(\d+)\.log: .*\] received", line)
        if m:
            name = f"soak-{m.group(1)}@%h"
            killed = [k["at"] for k in kills if k["name"] == name]
            out.setdefault("received", []).append(
                {
                    "worker": name,
                    "at": at,
                    "worker_killed_ms_later": round((killed[0] - at) * 1000) if killed else None,
                }
            )
    return out


def investigate(
    stack: Stack, ids: list[str], kills: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    """For jobs that did not end: their row, their event log, their heartbeat, whether their
    task message still sits in a queue or in kombu's unacked set, and every log line naming
    them."""
    out: dict[str, Any] = {}
    client: Any = redis.Redis.from_url(stack.redis.url)
    queued_msgs: dict[str, list[str]] = {}
    try:
        for key in client.scan_iter(match="*"):
            kind = client.type(key)
            name = key.decode(errors="replace")
            if kind == b"list":
                values = client.lrange(key, 0, -1)
            elif kind == b"hash" and name.startswith("unacked"):
                values = list(client.hgetall(key).values())
            else:
                continue
            for v in values:
                text = v.decode(errors="replace")
                for rid in ids:
                    if rid in text:
                        queued_msgs.setdefault(rid, []).append(name)
        index = {m.decode(): s for m, s in client.zrange("unacked_index", 0, -1, withscores=True)}
        unacked_tags: dict[str, list[dict[str, Any]]] = {}
        for tag, v in client.hgetall("unacked").items():
            text = v.decode(errors="replace")
            for rid in ids:
                if rid in text:
                    unacked_tags.setdefault(rid, []).append(
                        {"tag": tag.decode(), "since": index.get(tag.decode())}
                    )
        mentions: dict[str, list[str]] = {}
        wanted = set(ids)
        for path in stack.worker_logs() + [stack.root / "api.log"]:
            for line in path.read_text(errors="replace").splitlines():
                for rid in set(_ID.findall(line)) & wanted:
                    mentions.setdefault(rid, []).append(f"{path.name}: {line[:300]}")
        columns = ("status", "attempts", "created_at", "started_at", "ended_at")
        for rid in ids:
            rows = _query(
                stack.db_path, f"SELECT {', '.join(columns)} FROM responses WHERE id=?", (rid,)
            )
            entries = client.xrange(keys.events(rid))
            out[rid] = {
                "row": dict(zip(columns, rows[0], strict=True)) if rows else None,
                "events": [e[1][b"t"].decode() for e in entries],
                "heartbeat": client.get(keys.heartbeat(rid)),
                "cancel_flag": bool(client.exists(keys.cancel(rid))),
                "message_in": queued_msgs.get(rid, []),
                "unacked": unacked_tags.get(rid, []),
                "log_lines": mentions.get(rid, [])[-30:],
                "kill_context": _kill_context(mentions.get(rid, []), kills or []),
            }
    finally:
        client.close()
    return out


# --------------------------------------------------------------------------- main


async def run(soak: Soak, report: dict[str, Any]) -> None:
    soak.t0 = now()
    background = soak.background = [
        asyncio.create_task(soak.reporter()),
        asyncio.create_task(soak.watchdog()),
    ]
    killer = asyncio.create_task(soak.killer())
    background.append(killer)
    try:
        work = asyncio.create_task(soak.submit_all())
        while not work.done():
            await asyncio.wait([work, *background], return_when=asyncio.FIRST_COMPLETED)
            soak.check_background(background)
        await work
        soak.phases["submitted_s"] = soak.elapsed()
        if soak.cancel_tasks:
            await asyncio.gather(*soak.cancel_tasks)
        await soak.drain()
        soak.phases["drained_s"] = soak.elapsed()
        soak.stop_killing.set()
        background.remove(killer)
        await killer
        soak.phases["kills_stopped_s"] = soak.elapsed()
        await soak.settle()
        soak.phases["settled_s"] = soak.elapsed()
        result = await soak.verify()
        soak.phases["verified_s"] = soak.elapsed()
    finally:
        soak.stop_killing.set()
        for t in [killer, *background, *soak.cancel_tasks]:
            t.cancel()
    report["result"] = result


def summarize(soak: Soak, result: dict[str, Any], report: dict[str, Any]) -> list[str]:
    counts: Counter[str] = result["counts"]
    accepted = len(soak.jobs)
    cancels = [j.cancel for j in soak.jobs.values() if j.cancel is not None]
    numbers = {
        "submitted": soak.submitted,
        "accepted": accepted,
        "rejected": len(soak.rejected),
        "submit_errors": len(soak.submit_errors),
        "completed": counts["completed"],
        "failed": counts["failed"],
        "cancelled": counts["cancelled"],
        "incomplete": counts["incomplete"],
        "lost": counts["lost"],
        "kills": len(soak.kills),
        "unexpected_worker_exits": len(soak.unexpected_exits),
        "cancel_requests": len(cancels),
    }
    cancel_answers = Counter(
        f"{c.get('http')} {c.get('status') or c.get('error')}" for c in cancels
    )
    stream_bad = {r: v for r, v in result["stream_sample"].items() if not v["ok"]}
    redis_sample_bad = {r: v for r, v in result["redis_logs"]["sample"].items() if not v["ok"]}
    checks = {
        "lost == 0": counts["lost"] == 0,
        "counts add up": sum(counts[k] for k in (*TERMINAL_STATUSES, "lost")) == accepted,
        "submitted == accepted + rejected + errors": soak.submitted
        == accepted + len(soak.rejected) + len(soak.submit_errors),
        f"stream sample ({len(result['stream_sample'])}): gap-free from 0, one terminal": not (
            stream_bad
        )
        and bool(result["stream_sample"]),
        "redis log sample: gap-free from 0, one terminal, last": not redis_sample_bad,
        "completed outputs are exactly the scripted words": not result["output_mismatch"],
        "every terminal job's event log ends in one (matching) terminal event": not result[
            "redis_logs"
        ]["bad_terminal_logs"],
        "no job cancelled without a cancel request": not result["cancelled_without_asking"],
        "all jobs submitted (no duration cap)": soak.submitted == soak.args.jobs,
        "no stall": not soak.stalled,
        "kills happened": len(soak.kills) > 0 or soak.args.kill_every <= 0,
        "every kill left no survivor process": not any(k["survivors"] for k in soak.kills),
    }
    report["numbers"] = numbers
    report["checks"] = checks
    report["failed_messages"] = dict(result["failed_messages"].most_common())
    report["cancel_answers"] = dict(cancel_answers)
    report["rejected"] = soak.rejected[:200]
    report["submit_errors"] = soak.submit_errors[:200]
    report["kills"] = soak.kills
    report["unexpected_worker_exits"] = soak.unexpected_exits
    report["phases_s"] = soak.phases
    report["timeline"] = soak.timeline
    report["output_mismatch"] = result["output_mismatch"][:50]
    report["cancelled_without_asking"] = result["cancelled_without_asking"][:50]
    report["stream_sample_problems"] = stream_bad
    report["redis_sample_problems"] = redis_sample_bad
    report["terminal_log_problems"] = {
        "by_status": dict(result["redis_logs"]["bad_by_status"]),
        "examples": dict(list(result["redis_logs"]["bad_terminal_logs"].items())[:30]),
        "stream_probe": result["redis_logs"]["stream_probe"],
        "details": investigate(
            soak.stack, list(result["redis_logs"]["bad_terminal_logs"])[:20], soak.kills
        ),
    }
    report["store_statuses"] = dict(soak.statuses())
    report["attempts"] = _attempts(soak)
    report["worker_logs"] = worker_log_summary(soak.stack)
    if result["lost"]:
        report["lost"] = {
            "ids": result["lost"],
            "details": investigate(soak.stack, result["lost"][:50], soak.kills),
            "api_answers": {r: result["final"][r] for r in result["lost"][:50]},
        }
    print("\n=== soak summary ===")
    for k, v in numbers.items():
        print(f"  {k:<26} {v}")
    print(f"  {'run time (s)':<26} {report['meta'].get('run_time_s')}")
    print("  failed, by message:")
    for message, n in result["failed_messages"].most_common():
        print(f"    {n:5d}  {message[:110]}")
    print("  cancel answers: " + ", ".join(f"{k}: {v}" for k, v in cancel_answers.items()))
    print(f"  attempts (store): {report['attempts']}")
    print(f"  worker logs: {report['worker_logs']['counts']}")
    bad_logs = report["terminal_log_problems"]
    if bad_logs["by_status"]:
        print(f"  terminal jobs whose event log has no proper ending: {bad_logs['by_status']}")
        for rid, v in bad_logs["stream_probe"].items():
            print(
                f"    GET {rid}?stream=true: {v['events']} events, ended after {v['took_s']} s; "
                + "; ".join(v["problems"])
            )
    for rid, d in report.get("lost", {}).get("details", {}).items():
        row = d["row"] or {}
        print(
            f"  LOST {rid}: {row.get('status')} attempts={row.get('attempts')} "
            f"events={len(d['events'])} message in {d['message_in'] or 'no queue'}; "
            f"{d['kill_context']}"
        )
    print("  checks:")
    for name, ok in checks.items():
        print(f"    {'ok  ' if ok else 'FAIL'}  {name}")
    return [name for name, ok in checks.items() if not ok]


def _attempts(soak: Soak) -> dict[str, int]:
    rows = soak.query(
        "SELECT status || ' x' || attempts, count(*) FROM responses GROUP BY 1 ORDER BY 1"
    )
    return {k: v for k, v in rows}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--jobs", type=int, default=2000, help="background jobs to submit")
    p.add_argument("--workers", type=int, default=3, help="Celery worker processes alive")
    p.add_argument("--kill-every", type=float, default=4, help="seconds between SIGKILLs")
    p.add_argument("--cancel-ratio", type=float, default=0.1, help="share of jobs cancelled")
    p.add_argument("--cancel-max-delay", type=float, default=2.0, help="cancel after 0..this s")
    p.add_argument("--duration-cap", type=float, default=600, help="max s of submit + drain")
    p.add_argument("--rate", type=float, default=12, help="creates per second")
    p.add_argument("--submit-concurrency", type=int, default=16, help="creates in flight")
    p.add_argument("--stall-seconds", type=float, default=30, help="give up if nothing moves")
    p.add_argument("--sample", type=int, default=50, help="completed jobs whose log is read")
    p.add_argument("--probe", type=int, default=5, help="streams opened on unended logs")
    p.add_argument("--probe-seconds", type=float, default=20, help="how long each is followed")
    p.add_argument("--progress-every", type=float, default=5)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--keep", action="store_true", help="keep the temp dir even if all is well")
    p.add_argument("--results", type=Path, default=RESULTS, help="where the JSON report goes")
    args = p.parse_args(argv)
    if args.seed is None:
        args.seed = random.randrange(1 << 30)
    return args


def _raise_interrupt(signum: int, _frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _raise_interrupt)
    started = time.time()
    report: dict[str, Any] = {
        "meta": {
            "args": vars(args),
            "env": SOAK_ENV,
            "started": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(started)),
            "cpus": os.cpu_count(),
            "loadavg_at_start": os.getloadavg(),
            "python": sys.version.split()[0],
        },
        "problems": [],
    }
    stack: Stack | None = None
    soak: Soak | None = None
    failed, interrupted = True, False
    try:
        stack = Stack.start(args.workers)
        report["meta"]["temp_dir"] = str(stack.root)
        print(
            f"resq soak: API :{stack.api_port}, {args.workers} workers, logs in {stack.root} "
            f"(seed {args.seed})",
            flush=True,
        )
        soak = Soak(stack=stack, args=args, rng=random.Random(args.seed))
        asyncio.run(run(soak, report))
        report["meta"]["run_time_s"] = round(time.time() - started, 1)
        report["problems"] += summarize(soak, report.pop("result"), report)
        failed = bool(report["problems"])
    except KeyboardInterrupt:
        interrupted = True
        report["problems"].append("interrupted")
    except (RuntimeError, OSError, AssertionError, sqlite3.Error, redis.RedisError) as exc:
        report["problems"].append(f"{type(exc).__name__}: {exc}")
    finally:
        report.pop("result", None)
        if soak is not None and "numbers" not in report:
            report["partial"] = {
                "submitted": soak.submitted,
                "accepted": len(soak.jobs),
                "rejected": len(soak.rejected),
                "kills": soak.kills,
            }
        if stack is not None:
            stack.stop()
        report["meta"]["run_time_s"] = round(time.time() - started, 1)
        report["meta"]["loadavg_at_end"] = os.getloadavg()
        args.results.mkdir(parents=True, exist_ok=True)
        out = args.results / f"soak-{time.strftime('%Y%m%dT%H%M%S')}.json"
        out.write_text(json.dumps(report, indent=2, default=str) + "\n")
        print(f"results: {out}  (run time {report['meta']['run_time_s']} s)", flush=True)
        if failed:
            for problem in report["problems"]:
                print(f"PROBLEM: {problem}", flush=True)
            if stack is not None:
                print(f"logs, database and Redis data kept in {stack.root}", flush=True)
        elif stack is not None and not args.keep:
            shutil.rmtree(stack.root, ignore_errors=True)
    return 130 if interrupted else 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
