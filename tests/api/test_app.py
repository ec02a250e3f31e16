"""The Flask app with stand-ins at its boundaries (``tests.api.factory``): fakeredis for the
bus, a SQLite file for the store, and an injected ``enqueue`` (the broker edge)."""

from __future__ import annotations

import fakeredis
import redis
from flask.testing import FlaskClient

from shared.store import Store
from tests.api.factory import AppFactory, store_of


def test_background_create_enqueues_the_response_id(
    client: FlaskClient, store: Store, sent: list[str]
) -> None:
    resp = client.post(
        "/v1/responses", json={"model": "resq-builtin", "input": "hi", "background": True}
    )
    assert resp.status_code == 200
    body = resp.get_json()
    assert body["status"] == "queued" and sent == [body["id"]]
    row = store.get_response(response_id=body["id"])
    assert row is not None and row.tenant == "default" and row.status == "queued"
    assert resp.headers["x-request-id"].startswith("req_")


def test_broker_down_is_503_and_nothing_is_kept(make_app: AppFactory) -> None:
    def broken(_response_id: str) -> None:
        raise ConnectionError("broker unreachable")

    app = make_app(enqueue=broken)
    client = app.test_client()
    resp = client.post(
        "/v1/responses", json={"model": "resq-builtin", "input": "hi", "background": True}
    )
    assert resp.status_code == 503
    assert resp.get_json()["error"]["type"] == "server_error"
    assert resp.get_json()["error"]["code"] == "service_unavailable"
    assert "x-should-retry" not in resp.headers  # nothing was queued: a retry is safe
    assert store_of(app).count_responses() == 0


def test_database_unavailable_is_a_json_503(make_app: AppFactory) -> None:
    client = make_app(migrated=False).test_client()
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


def test_redis_unavailable_is_a_json_503(make_app: AppFactory) -> None:
    resp = (
        make_app(redis_client=BrokenRedis())
        .test_client()
        .post("/v1/responses", json={"model": "resq-builtin", "input": "hi"})
    )
    assert resp.status_code == 503
    err = resp.get_json()["error"]
    assert (err["type"], err["code"]) == ("server_error", "service_unavailable")
    assert "Redis" in err["message"]
    # the job was queued before Redis went away: the SDK must not re-POST it
    assert resp.headers["x-should-retry"] == "false"


def test_unexpected_failure_is_a_json_500_without_traceback(make_app: AppFactory) -> None:
    resp = (
        make_app(redis_client=BuggyRedis())
        .test_client()
        .post("/v1/responses", json={"model": "resq-builtin", "input": "hi"})
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


def test_non_object_body_is_400(client: FlaskClient, sent: list[str]) -> None:
    resp = client.post("/v1/responses", json=["not", "an", "object"])
    assert resp.status_code == 400
    assert resp.get_json()["error"]["code"] == "invalid_type"
    assert sent == []


def test_unsupported_features_are_a_clear_400(client: FlaskClient, sent: list[str]) -> None:
    for body, param in (({"tools": [{"type": "web_search"}]}, "tools[0].type"),):
        resp = client.post("/v1/responses", json={"model": "resq-builtin", "input": "hi", **body})
        assert resp.status_code == 400
        err = resp.get_json()["error"]
        assert (err["code"], err["param"]) == ("unsupported_parameter", param)
    assert sent == []


def test_healthz_needs_no_key(make_app: AppFactory) -> None:
    client = make_app(env={"RESQ_API_KEYS": "sk-1:t1"}).test_client()
    assert client.get("/healthz").status_code == 200
    assert client.get("/v1/models").status_code == 401
    ok = client.get("/v1/models", headers={"Authorization": "Bearer sk-1"})
    assert ok.status_code == 200


def test_input_items_query_validation(client: FlaskClient) -> None:
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
