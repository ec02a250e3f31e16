"""``/healthz`` (liveness) and ``/readyz`` (readiness: Redis, the database, a fresh worker)."""

from __future__ import annotations

from typing import Any

import fakeredis
import pytest
import redis

from ops.embedded_redis import free_port
from tests.api.factory import AppFactory
from worker.presence import Presence


@pytest.fixture
def env() -> dict[str, str]:
    """Keys are required, so the probes are seen to answer without one."""
    return {"RESQ_API_KEYS": "sk-1:t1"}


def not_ready(body: dict[str, Any], message: str) -> None:
    assert body["error"] == {
        "message": message,
        "type": "server_error",
        "param": None,
        "code": "service_unavailable",
    }
    assert body["status"] == "unavailable"


def test_ready_with_a_fresh_worker_and_public(make_app: AppFactory) -> None:
    fake = fakeredis.FakeRedis()
    client = make_app(redis_client=fake).test_client()
    assert client.get("/healthz").get_json() == {"status": "ok"}
    resp = client.get("/readyz")  # no key needed, like /healthz
    assert resp.status_code == 503
    not_ready(resp.get_json(), "resq is not ready: workers down.")
    assert resp.get_json()["checks"]["workers"] == {
        "ok": False,
        "fresh": 0,
        "error": "no worker has sent a heartbeat recently",
    }
    assert Presence(fake, "resq@a", consuming=lambda: True).beat()
    resp = client.get("/readyz")
    assert resp.status_code == 200
    assert resp.get_json() == {
        "status": "ready",
        "checks": {
            "redis": {"ok": True},
            "workers": {"ok": True, "fresh": 1},
            "database": {"ok": True},
        },
    }


def test_not_ready_names_redis_when_it_does_not_answer(make_app: AppFactory) -> None:
    gone = redis.Redis.from_url(f"redis://127.0.0.1:{free_port()}/0")
    resp = make_app(redis_client=gone).test_client().get("/readyz")
    assert resp.status_code == 503
    body = resp.get_json()
    not_ready(body, "resq is not ready: redis, workers down.")
    assert body["checks"]["redis"]["ok"] is False
    assert body["checks"]["database"] == {"ok": True}


def test_not_ready_names_the_database_when_it_does_not_answer(make_app: AppFactory) -> None:
    fake = fakeredis.FakeRedis()
    Presence(fake, "resq@a", consuming=lambda: True).beat()
    url = f"postgresql+psycopg://resq@127.0.0.1:{free_port()}/resq"
    resp = make_app(redis_client=fake, database_url=url).test_client().get("/readyz")
    assert resp.status_code == 503
    body = resp.get_json()
    not_ready(body, "resq is not ready: database down.")
    assert body["checks"]["database"]["error"].startswith("the database does not answer: ")
