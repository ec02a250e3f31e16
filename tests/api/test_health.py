"""``/healthz`` (liveness) and ``/readyz`` (readiness: Redis, the database, a fresh worker)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import fakeredis
import redis
from flask.testing import FlaskClient

from api import create_app
from shared.bus import EventBus
from shared.embedded_redis import free_port
from shared.settings import Settings
from shared.store import Store, make_engine, migrate
from worker.presence import Presence


def client_for(tmp_path: Path, redis_client: Any, database_url: str | None = None) -> FlaskClient:
    url = database_url or f"sqlite:///{tmp_path / 'api.db'}"
    if database_url is None:
        migrate.upgrade(url)
    settings = Settings.from_env(
        {"DATABASE_URL": url, "REDIS_URL": "redis://unused", "RESQ_API_KEYS": "sk-1:t1"}
    )
    app = create_app(
        settings,
        store=Store(make_engine(url)),
        bus=EventBus(redis_client, ttl_seconds=60),
        enqueue=lambda _id: None,
    )
    return app.test_client()


def not_ready(body: dict[str, Any], message: str) -> None:
    assert body["error"] == {
        "message": message,
        "type": "server_error",
        "param": None,
        "code": "service_unavailable",
    }
    assert body["status"] == "unavailable"


def test_ready_with_a_fresh_worker_and_public(tmp_path: Path) -> None:
    fake = fakeredis.FakeRedis()
    client = client_for(tmp_path, fake)
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


def test_not_ready_names_redis_when_it_does_not_answer(tmp_path: Path) -> None:
    gone = redis.Redis.from_url(f"redis://127.0.0.1:{free_port()}/0")
    resp = client_for(tmp_path, gone).get("/readyz")
    assert resp.status_code == 503
    body = resp.get_json()
    not_ready(body, "resq is not ready: redis, workers down.")
    assert body["checks"]["redis"]["ok"] is False
    assert body["checks"]["database"] == {"ok": True}


def test_not_ready_names_the_database_when_it_does_not_answer(tmp_path: Path) -> None:
    fake = fakeredis.FakeRedis()
    Presence(fake, "resq@a", consuming=lambda: True).beat()
    url = f"postgresql+psycopg://resq@127.0.0.1:{free_port()}/resq"
    resp = client_for(tmp_path, fake, database_url=url).get("/readyz")
    assert resp.status_code == 503
    body = resp.get_json()
    not_ready(body, "resq is not ready: database down.")
    assert body["checks"]["database"]["error"].startswith("the database does not answer: ")
