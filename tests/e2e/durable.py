"""A small stack whose parts tests may kill and restart: a persistent Redis on a fixed port,
SQLite, one API process and numbered Celery workers (each with its embedded beat/reaper)."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

import httpx
import openai
import redis

from ops.embedded_redis import EmbeddedRedis, free_port
from ops.launcher import api_command, beat_command, stop_all, wait_healthy, worker_command
from shared.settings import Settings
from shared.store import migrate
from tests.e2e.launched import alive, descendants

DURABLE_ENV = {
    "RESQ_HEARTBEAT_SECONDS": "0.5",
    "RESQ_HEARTBEAT_TIMEOUT_SECONDS": "2",
    "RESQ_REAPER_INTERVAL_SECONDS": "1",
    "RESQ_MAX_ATTEMPTS": "3",
    # A message a worker popped as Redis went down is gone from the broker (kombu pops it,
    # then records it as unacked): the reaper re-sends a job queued this long.
    "RESQ_QUEUED_RESEND_SECONDS": "5",
    "RESQ_WORKER_CONCURRENCY": "4",
    # The API's graceful stop lasts this + 5 s when a client keeps an idle connection open;
    # the tests wait 15 s for it.
    "RESQ_SHUTDOWN_GRACE_SECONDS": "5",
    "RESQ_LOG_LEVEL": "INFO",
}


class MiniStack:
    def __init__(self, root: Path, extra_env: dict[str, str] | None = None) -> None:
        self.root = root
        self.redis_server = EmbeddedRedis(root / "redis", persist=True)
        self.database_url = f"sqlite:///{root / 'resq.db'}"
        self.port = free_port()
        env = {
            k: v for k, v in os.environ.items() if k not in {"RESQ_API_KEYS", "RESQ_MODELS_FILE"}
        }
        self.env = {
            **env,
            **DURABLE_ENV,
            "RESQ_HOST": "127.0.0.1",
            "RESQ_PORT": str(self.port),
            "REDIS_URL": self.redis_server.url,
            "DATABASE_URL": self.database_url,
            "RESQ_VAR_DIR": str(root / "var"),
            **(extra_env or {}),
        }
        self.settings = Settings.from_env(self.env)
        self.api: subprocess.Popen[bytes] | None = None
        self.beat: subprocess.Popen[bytes] | None = None
        self.workers: dict[str, subprocess.Popen[bytes]] = {}
        self._logs: list[IO[bytes]] = []
        self._count = 0
        self.http = httpx.Client(timeout=60)

    @property
    def root_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def client(self) -> openai.OpenAI:
        return openai.OpenAI(
            base_url=f"{self.root_url}/v1", api_key="x", max_retries=0, http_client=self.http
        )

    def redis(self) -> redis.Redis:
        return redis.Redis.from_url(self.redis_server.url)

    def _spawn(self, name: str, command: list[str]) -> subprocess.Popen[bytes]:
        log = (self.root / f"{name}.log").open("ab")
        self._logs.append(log)
        return subprocess.Popen(command, env=self.env, stdout=log, stderr=log)

    def start(self) -> MiniStack:
        (self.root / "var").mkdir(exist_ok=True)
        self.redis_server.start()
        migrate.upgrade(self.database_url)
        self.start_api()
        self.beat = self._spawn("beat", beat_command(self.settings))
        self.add_worker()
        self.add_worker()
        return self

    def start_api(self) -> None:
        self.api = self._spawn("api", api_command(self.settings))
        wait_healthy(self.root_url, 60, [self.api])

    def add_worker(self) -> str:
        self._count += 1
        name = f"w{self._count}"
        self.workers[name] = self._spawn(name, worker_command(self.settings, f"{name}@%h"))
        return name

    def worker_ready(self, name: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while f"{name}@" not in self.log(name) or " ready." not in self.log(name):
            assert time.monotonic() < deadline, f"worker {name} never got ready"
            time.sleep(0.1)

    def log(self, name: str) -> str:
        return (self.root / f"{name}.log").read_text(errors="replace")

    def kill_pid(self, pid: int) -> None:
        """SIGKILL a worker and its children (its embedded beat), like an OOM kill would."""
        family = {pid, *descendants(pid)}
        for member in family:
            os.kill(member, signal.SIGKILL)
        for name, proc in list(self.workers.items()):
            if proc.pid == pid:
                proc.wait(10)
                del self.workers[name]

    def stop_workers(self, sig: signal.Signals = signal.SIGTERM, timeout: float = 60) -> None:
        procs = list(self.workers.values())
        family = {p.pid: descendants(p.pid) for p in procs}
        for proc in procs:
            proc.send_signal(sig)
        for proc in procs:
            proc.wait(timeout)
        deadline = time.monotonic() + timeout
        while any(alive(c) for kids in family.values() for c in kids):
            assert time.monotonic() < deadline, "worker children left running"
            time.sleep(0.1)
        self.workers.clear()

    def close(self) -> None:
        processes = [p for p in [self.api, self.beat, *self.workers.values()] if p is not None]
        for proc in processes:
            for child in descendants(proc.pid):
                if alive(child):
                    os.kill(child, signal.SIGTERM)
        stop_all(processes)
        self.redis_server.stop()
        self.http.close()
        for log in self._logs:
            log.close()


@contextmanager
def running(root: Path, extra_env: dict[str, str] | None = None) -> Iterator[MiniStack]:
    """A started MiniStack whose workers are ready; stopped afterwards."""
    stack = MiniStack(root, extra_env=extra_env).start()
    try:
        for name in stack.workers:
            stack.worker_ready(name)
        yield stack
    finally:
        stack.close()
