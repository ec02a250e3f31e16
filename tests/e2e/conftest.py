"""The real stack for end-to-end tests: a Redis server, the API under gunicorn, a Celery
worker and fake upstreams (Chat Completions, Responses, Anthropic Messages), all as separate
processes on 127.0.0.1 (the fakes as threads of the test process). Tests talk to it with the
official ``openai`` SDK over HTTP."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import httpx
import openai
import pytest
import redis

from ops.embedded_redis import EmbeddedRedis, free_port
from ops.launcher import api_command, stop_all, wait_healthy, worker_command
from shared.settings import Settings
from shared.store import migrate
from tests.fakes.anthropic import FakeAnthropic
from tests.fakes.responses_upstream import FakeResponses
from tests.fakes.upstream import FakeUpstream

KEY_A = "sk-test-tenant-a-0123456789"
KEY_B = "sk-test-tenant-b-9876543210"
SYNC_TIMEOUT_SECONDS = 6


@dataclass
class Stack:
    base_url: str
    root_url: str
    redis_url: str
    database_url: str
    log_dir: Path
    upstream: FakeUpstream
    worker_pid: int
    root_url_2: str
    anthropic: FakeAnthropic
    responses: FakeResponses

    sdk_http: httpx.Client = field(default_factory=lambda: httpx.Client(timeout=60))
    _redis: redis.Redis | None = None

    def client(self, key: str = KEY_A) -> openai.OpenAI:
        """An SDK client; they share one connection pool, closed when the stack stops."""
        return openai.OpenAI(
            base_url=self.base_url, api_key=key, max_retries=0, http_client=self.sdk_http
        )

    def client_2(self, key: str = KEY_A) -> openai.OpenAI:
        """An SDK client of the second API process."""
        return openai.OpenAI(
            base_url=f"{self.root_url_2}/v1", api_key=key, max_retries=0, http_client=self.sdk_http
        )

    def http(self, key: str | None = KEY_A, second: bool = False) -> httpx.Client:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        base = self.root_url_2 if second else self.root_url
        return httpx.Client(base_url=base, headers=headers, timeout=30)

    def redis(self) -> redis.Redis:
        if self._redis is None:
            self._redis = redis.Redis.from_url(self.redis_url)
        return self._redis

    def close(self) -> None:
        self.sdk_http.close()
        if self._redis is not None:
            self._redis.close()

    def worker_log(self) -> str:
        return (self.log_dir / "worker.log").read_text()

    def logs(self) -> str:
        return "\n".join(
            f"--- {p.name} ---\n{p.read_text()[-5000:]}" for p in sorted(self.log_dir.glob("*.log"))
        )


ANTHROPIC_KEY = "sk-ant-upstream-secret"
RESPONSES_KEY = "sk-responses-upstream-secret"


def _models_file(
    path: Path,
    upstream: FakeUpstream,
    dead_port: int,
    anthropic: FakeAnthropic,
    responses: FakeResponses,
) -> Path:
    path.write_text(
        f"""
[[route]]
match = "resq-*"
provider = "builtin"
list = ["resq-builtin"]

[[route]]
match = "tiny-context"
provider = "builtin"
context_window = 40

[[route]]
match = "upstream-fast"
provider = "openai"
base_url = "{upstream.base_url}"
api_key_env = "RESQ_TEST_UPSTREAM_KEY"
upstream_model = "fake-model"

[[route]]
match = "upstream-slow"
provider = "vllm"
base_url = "{upstream.base_url}"
timeout_seconds = 1
tokenize_url = "{upstream.base_url.removesuffix("/v1")}/tokenize"

[[route]]
match = "upstream-dead"
provider = "ollama"
base_url = "http://127.0.0.1:{dead_port}/v1"
tokenize_url = "http://127.0.0.1:{dead_port}/tokenize"

[[route]]
match = "claude-e2e"
provider = "anthropic"
base_url = "{anthropic.base_url}"
api_key_env = "RESQ_TEST_ANTHROPIC_KEY"
upstream_model = "claude-fake-1"
json_retries = 2

[[route]]
match = "responses-e2e"
provider = "openai_responses"
base_url = "{responses.base_url}"
api_key_env = "RESQ_TEST_RESPONSES_KEY"
upstream_model = "gpt-fake-1"
json_retries = 2

[[route]]
match = "responses-reasoner"
provider = "openai_responses"
base_url = "{responses.base_url}"
api_key_env = "RESQ_TEST_RESPONSES_KEY"
accepts = {{ temperature = false, top_p = false, images = false }}
"""
    )
    return path


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    root = tmp_path_factory.mktemp("stack")
    log_dir = root / "logs"
    log_dir.mkdir()
    upstream = FakeUpstream().start()
    anthropic = FakeAnthropic(api_key=ANTHROPIC_KEY).start()
    responses = FakeResponses(api_key=RESPONSES_KEY).start()
    redis_server = EmbeddedRedis(root / "redis", persist=False).start()
    database_url = f"sqlite:///{root / 'resq.db'}"
    migrate.upgrade(database_url)
    port, port_2 = free_port(), free_port()
    env = {
        **os.environ,
        "RESQ_HOST": "127.0.0.1",
        "RESQ_PORT": str(port),
        "REDIS_URL": redis_server.url,
        "DATABASE_URL": database_url,
        "RESQ_API_KEYS": f"{KEY_A}:tenant-a,{KEY_B}:tenant-b",
        "RESQ_MODELS_FILE": str(
            _models_file(root / "models.toml", upstream, free_port(), anthropic, responses)
        ),
        "RESQ_TEST_ANTHROPIC_KEY": ANTHROPIC_KEY,
        "RESQ_TEST_RESPONSES_KEY": RESPONSES_KEY,
        "RESQ_OUTBOUND_ALLOW_LOOPBACK": "true",  # file_url fetches from a test server
        "RESQ_SYNC_TIMEOUT_SECONDS": str(SYNC_TIMEOUT_SECONDS),
        "RESQ_WORKER_CONCURRENCY": "50",
        "RESQ_TEST_UPSTREAM_KEY": "sk-upstream-secret",
        "RESQ_LOG_LEVEL": "INFO",
        "RESQ_SSE_KEEPALIVE_SECONDS": "1",
        "RESQ_UPSTREAM_RETRIES": "2",
        "RESQ_UPSTREAM_RETRY_BUDGET_SECONDS": "10",
    }
    settings = Settings.from_env(env)
    processes: list[subprocess.Popen[bytes]] = []
    logs: list[IO[bytes]] = []
    try:
        settings_2 = Settings.from_env({**env, "RESQ_PORT": str(port_2)})
        for name, command in (
            ("api", api_command(settings)),
            ("worker", worker_command(settings)),
            ("api-2", api_command(settings_2)),
        ):
            logs.append((log_dir / f"{name}.log").open("wb"))
            processes.append(subprocess.Popen(command, env=env, stdout=logs[-1], stderr=logs[-1]))
        root_url = f"http://127.0.0.1:{port}"
        wait_healthy(root_url, 60, processes)
        wait_healthy(f"http://127.0.0.1:{port_2}", 60, processes)
        running = Stack(
            base_url=f"{root_url}/v1",
            root_url=root_url,
            redis_url=redis_server.url,
            database_url=database_url,
            log_dir=log_dir,
            upstream=upstream,
            worker_pid=processes[1].pid,
            root_url_2=f"http://127.0.0.1:{port_2}",
            anthropic=anthropic,
            responses=responses,
        )
        yield running
        running.close()
    finally:
        stop_all(processes)
        for log in logs:
            log.close()
        redis_server.stop()
        upstream.stop()
        anthropic.stop()
        responses.stop()


@pytest.fixture
def client(stack: Stack) -> openai.OpenAI:
    return stack.client(KEY_A)


@pytest.fixture
def client_b(stack: Stack) -> openai.OpenAI:
    return stack.client(KEY_B)
