"""The Flask app with stand-ins at its boundaries: fakeredis for the bus, a SQLite file for
the store, and an injected ``enqueue`` (the broker edge)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import fakeredis
import pytest
import redis
from flask.testing import FlaskClient

from api import create_app
from shared.bus import EventBus
from shared.settings import Settings
from shared.store import Store, make_engine, migrate


def make_client(
    tmp_path: Path,
    enqueue: Callable[[str], None],
    *,
    migrated: bool = True,
    keys: str = "",
) -> tuple[FlaskClient, Store]:
    url = f"sqlite:///{tmp_path / 'api.db'}"
    if migrated:
        migrate.upgrade(url)
    settings = Settings.from_env(
        {"DATABASE_URL": url, "REDIS_URL": "redis://unused", "RESQ_API_KEYS": keys}
    )
    store = Store(make_engine(url))
    app = create_app(
        settings, store=store, bus=EventBus(fakeredis.FakeRedis(), ttl_seconds=60), enqueue=enqueue
    )
    return app.test_client(), store


@pytest.fixture
def queued(tmp_path: Path) -> Iterator[tuple[FlaskClient, Store, list[str]]]:
    sent: list[str] = []
    client, store = make_client(tmp_path, sent.append)
    yield client, store, sent


def test_background_create_enqueues_the_response_id(
    queued: tuple[FlaskClient, Store, list[str]],
) -> None:
    client, store, sent = queued
    resp = client.post(
        "/v1/responses", json={"model": "resq-builtin", "input": "hi", "background": True}
    )
    assert resp.status_code == 200
    body = resp.get_json()
    assert body["status"] == "queued" and sent == [body["id"]]
    row = store.get_response(response_id=body["id"])
    assert row is not None and row.tenant == "default" and row.status == "queued"
    assert resp.headers["x-request-id"].startswith("req_")


def test_broker_down_is_503_and_nothing_is_kept(tmp_path: Path) -> None:
    def broken(_response_id: str) -> None:
        raise ConnectionError("broker unreachable")

    client, store = make_client(tmp_path, broken)
    resp = client.post(
        "/v1/responses", json={"model": "resq-builtin", "input": "hi", "background": True}
    )
    assert resp.status_code == 503
    assert resp.get_json()["error"]["type"] == "server_error"
    assert resp.get_json()["error"]["code"] == "service_unavailable"
    assert "x-should-retry" not in resp.headers  # nothing was queued: a retry is safe
    assert store.count_responses() == 0


def test_database_unavailable_is_a_json_503(tmp_path: Path) -> None:
    client, _store = make_client(tmp_path, lambda _id: None, migrated=False)
    resp = client.post(
        "/v1/responses", json={"model": "resq-builtin", "input": "hi", "background": True}
    )
    assert resp.status_code == 503
    assert resp.content_type == "application/json"
    assert resp.get_json() == {
        "error": {
            "message": "resq's database is unavailable right now; retry the request shortly.",
            "type": "server_error",
            "param": None,
            "code": "service_unavailable",
        }
    }
    assert b"Traceback" not in resp.data and b"sqlite" not in resp.data.lower()


class BrokenRedis(fakeredis.FakeRedis):
    """A Redis that has gone away (the boundary stand-in)."""

    def xread(self, *args: object, **kwargs: object) -> None:  # type: ignore[override]
        raise redis.ConnectionError("Connection refused")


class BuggyRedis(fakeredis.FakeRedis):
    def xread(self, *args: object, **kwargs: object) -> None:  # type: ignore[override]
        raise RuntimeError("a bug")


def _sync_client(tmp_path: Path, redis_client: fakeredis.FakeRedis) -> FlaskClient:
    url = f"sqlite:///{tmp_path / 'api.db'}"
    migrate.upgrade(url)
    settings = Settings.from_env({"DATABASE_URL": url, "REDIS_URL": "redis://unused"})
    app = create_app(
        settings,
        store=Store(make_engine(url)),
        bus=EventBus(redis_client, ttl_seconds=60),
        enqueue=lambda _id: None,
    )
    return app.test_client()


def test_redis_unavailable_is_a_json_503(tmp_path: Path) -> None:
    resp = _sync_client(tmp_path, BrokenRedis()).post(
        "/v1/responses", json={"model": "resq-builtin", "input": "hi"}
    )
    assert resp.status_code == 503
    err = resp.get_json()["error"]
    assert (err["type"], err["code"]) == ("server_error", "service_unavailable")
    assert "Redis" in err["message"]
    # the job was queued before Redis went away: the SDK must not re-POST it
    assert resp.headers["x-should-retry"] == "false"


def test_unexpected_failure_is_a_json_500_without_traceback(tmp_path: Path) -> None:
    resp = _sync_client(tmp_path, BuggyRedis()).post(
        "/v1/responses", json={"model": "resq-builtin", "input": "hi"}
    )
    assert resp.status_code == 500
    assert resp.get_json() == {
        "error": {
            "message": "The server had an error while processing your request.",
            "type": "server_error",
            "param": None,
            "code": "server_error",
        }
    }
    assert b"Traceback" not in resp.data and b"a bug" not in resp.data


def test_non_object_body_is_400(queued: tuple[FlaskClient, Store, list[str]]) -> None:
    client, _store, sent = queued
    resp = client.post("/v1/responses", json=["not", "an", "object"])
    assert resp.status_code == 400
    assert resp.get_json()["error"]["code"] == "invalid_type"
    assert sent == []


def test_unsupported_features_are_a_clear_400(queued: tuple[FlaskClient, Store, list[str]]) -> None:
    client, _store, sent = queued
    for body, param in (
        ({"prompt": {"id": "pmpt_x"}}, "prompt"),
        ({"tools": [{"type": "web_search"}]}, "tools[0].type"),
    ):
        resp = client.post("/v1/responses", json={"model": "resq-builtin", "input": "hi", **body})
        assert resp.status_code == 400
        err = resp.get_json()["error"]
        assert (err["code"], err["param"]) == ("unsupported_parameter", param)
    assert sent == []


def test_healthz_needs_no_key(tmp_path: Path) -> None:
    client, _store = make_client(tmp_path, lambda _id: None, keys="sk-1:t1")
    assert client.get("/healthz").status_code == 200
    assert client.get("/v1/models").status_code == 401
    ok = client.get("/v1/models", headers={"Authorization": "Bearer sk-1"})
    assert ok.status_code == 200


def test_input_items_query_validation(queued: tuple[FlaskClient, Store, list[str]]) -> None:
    client, _store, _sent = queued
    rid = client.post(
        "/v1/responses", json={"model": "resq-builtin", "input": "hi", "background": True}
    ).get_json()["id"]
    for query, param, code in (
        ("limit=0", "limit", "invalid_value"),
        ("limit=101", "limit", "invalid_value"),
        ("limit=abc", "limit", "invalid_type"),
        ("order=up", "order", "invalid_value"),
        ("after=msg_nope", "after", "invalid_value"),
    ):
        resp = client.get(f"/v1/responses/{rid}/input_items?{query}")
        assert resp.status_code == 400, query
        err = resp.get_json()["error"]
        assert (err["param"], err["code"]) == (param, code), query
