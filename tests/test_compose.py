"""docker-compose.yml: Compose itself accepts it, and it has the shape resq's deployment needs
(one image for every resq service, a one-shot migration, health checks, a worker that scales
and drains, Flower, persistent Redis and Postgres, shared settings).

``docker compose config`` needs only the client, no engine. Without a Compose (neither the
``docker compose`` plugin nor ``docker-compose``) that test is skipped locally and fails in CI
(``CI=true``); the checks on the parsed file always run.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from ops.launcher import worker_command
from shared import keys
from shared.settings import Settings

REPO_ROOT = Path(__file__).resolve().parents[1]
SERVICES = {"api", "worker", "beat", "redis", "postgres", "flower", "migrate"}
APP_SERVICES = ("migrate", "api", "worker", "beat", "flower")  # run resq's code
SHARED_ENV = (
    "REDIS_URL",
    "DATABASE_URL",
    "RESQ_SECRET_KEY",
    "RESQ_ADMIN_KEYS",
    "RESQ_SHUTDOWN_GRACE_SECONDS",
)


def compose_command() -> list[str] | None:
    """How to run Compose here: the ``docker compose`` plugin, else ``docker-compose``."""
    docker = shutil.which("docker")
    if docker:
        probe = subprocess.run([docker, "compose", "version"], capture_output=True, timeout=30)
        if probe.returncode == 0:
            return [docker, "compose"]
    standalone = shutil.which("docker-compose")
    return [standalone] if standalone else None


def test_compose_accepts_the_file() -> None:
    command = compose_command()
    if command is None:
        message = "no Docker Compose here (neither `docker compose` nor `docker-compose`)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    result = subprocess.run(
        [*command, "-f", "docker-compose.yml", "config", "--quiet"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "WARN" not in result.stderr, result.stderr  # e.g. a variable without a default


# ---- the parsed file -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def services() -> dict[str, Any]:
    data = yaml.safe_load((REPO_ROOT / "docker-compose.yml").read_text())
    assert isinstance(data, dict)
    services: dict[str, Any] = data["services"]
    return services


def _command(service: dict[str, Any]) -> str:
    command = service.get("command", "")
    return " ".join(command) if isinstance(command, list) else str(command)


def _healthcheck(service: dict[str, Any]) -> str:
    test = service["healthcheck"]["test"]
    return " ".join(test) if isinstance(test, list) else str(test)


def _seconds(duration: str) -> float:
    """A Compose duration such as ``45s`` or ``1m30s``."""
    units = {"h": 3600, "m": 60, "s": 1}
    parts = re.fullmatch(r"(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?", duration)
    assert parts and duration, duration
    return sum(int(n) * units[u] for n, u in zip(parts.groups(), "hms", strict=True) if n)


def _procfile() -> dict[str, str]:
    lines = (REPO_ROOT / "Procfile").read_text().splitlines()
    entries = (line.partition(":") for line in lines if line.strip())
    return {name.strip(): command.strip() for name, _, command in entries}


def test_every_long_running_service_has_a_healthcheck(services: dict[str, Any]) -> None:
    assert set(services) == SERVICES
    for name, service in services.items():
        if name != "migrate":  # a one-shot: its exit status is its health
            assert service.get("healthcheck", {}).get("test"), f"{name} has no healthcheck"
    assert "healthcheck" not in services["migrate"]
    assert "redis-cli ping" in _healthcheck(services["redis"])
    assert "pg_isready" in _healthcheck(services["postgres"])
    # Readiness (Redis, the database, a fresh worker), not the bare liveness /healthz.
    assert "http://127.0.0.1:8080/readyz" in _healthcheck(services["api"])
    assert "http://127.0.0.1:5555/healthcheck" in _healthcheck(services["flower"])
    # The worker's check looks for this very node's heartbeat, written while it consumes.
    assert services["worker"]["healthcheck"]["test"] == [
        "CMD",
        "python",
        "-m",
        "worker.healthcheck",
    ]
    assert "/tmp/celerybeat-schedule" in _healthcheck(services["beat"])


def test_worker_scales(services: dict[str, Any]) -> None:
    worker = services["worker"]
    assert "container_name" not in worker
    assert "ports" not in worker
    assert "--hostname" not in _command(worker)  # each replica keeps its own node name


def test_worker_consumes_every_queue_like_the_procfile_and_launcher(
    services: dict[str, Any],
) -> None:
    queues = f"--queues {','.join(keys.ALL_QUEUES)} "
    assert set(keys.ALL_QUEUES) == {"resq", "resq.high", "resq.low", "resq.webhooks"}
    assert queues in _command(services["worker"])
    assert queues in _procfile()["worker"] + " "
    assert queues.strip() in " ".join(worker_command(Settings()))


def test_flower_runs_flower_on_the_apps_broker(services: dict[str, Any]) -> None:
    flower = services["flower"]
    assert flower["command"] == ["celery", "-A", "worker.celery_app", "flower", "--port=5555"]
    assert flower["ports"] == ["127.0.0.1:${FLOWER_PORT:-5555}:5555"]  # no login: local only
    procfile = _procfile()["flower"]
    assert procfile.startswith("celery -A worker.celery_app flower ")
    assert "--port=${FLOWER_PORT:-5555}" in procfile


@pytest.mark.parametrize("name", APP_SERVICES)
def test_app_services_run_the_image_and_share_settings(services: dict[str, Any], name: str) -> None:
    service = services[name]
    # One image, built from the Dockerfile; nothing is installed when a container starts.
    assert service["build"] == "."
    assert service["image"] == "resq:local"
    assert "pip" not in _command(service)
    assert "volumes" not in service or all(
        volume.endswith(":ro") for volume in service["volumes"]
    )  # no source tree mounted over the installed package
    assert service["restart"] == ("no" if name == "migrate" else "unless-stopped")
    env = service["environment"]
    assert set(SHARED_ENV) <= set(env)
    assert env["DATABASE_URL"] == "postgresql://resq:resq@postgres:5432/resq"
    assert env["REDIS_URL"] == "redis://redis:6379/0"
    depends_on = service["depends_on"]
    if name == "migrate":
        assert depends_on == {"postgres": {"condition": "service_healthy"}}
        assert service["command"] == ["python", "-m", "shared.store.migrate"]
        return
    assert depends_on["redis"] == {"condition": "service_healthy"}
    assert "api" not in depends_on  # nothing waits on the API's readiness (it waits on workers)
    if name != "flower":  # the database is at the newest schema before they start
        assert depends_on["migrate"] == {"condition": "service_completed_successfully"}


def test_redis_and_postgres_keep_their_data(services: dict[str, Any]) -> None:
    redis_command = _command(services["redis"])
    assert "--appendonly yes --appendfsync everysec" in redis_command  # stated, not defaulted
    assert services["redis"]["volumes"] == ["redis-data:/data"]
    assert services["postgres"]["volumes"] == ["postgres-data:/var/lib/postgresql/data"]
    data = yaml.safe_load((REPO_ROOT / "docker-compose.yml").read_text())
    assert {"redis-data", "postgres-data"} <= set(data["volumes"])


def test_worker_and_api_get_time_to_drain_before_sigkill(services: dict[str, Any]) -> None:
    grace = services["worker"]["environment"]["RESQ_SHUTDOWN_GRACE_SECONDS"]
    assert grace == "${RESQ_SHUTDOWN_GRACE_SECONDS:-30}"
    assert Settings.from_env({}).shutdown_grace_seconds == 30  # the same default
    assert _seconds(services["worker"]["stop_grace_period"]) > 30
    api_command = services["api"]["command"]
    graceful_timeout = int(api_command[api_command.index("--graceful-timeout") + 1])
    assert _seconds(services["api"]["stop_grace_period"]) > graceful_timeout
