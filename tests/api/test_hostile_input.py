"""Hostile and malformed requests, each a named regression test, on SQLite and on Postgres:
a clear 4xx (or the usual 503) in OpenAI's error envelope, never a 500, and nothing stored or
queued for a refused request.

The app runs in-process with stand-ins at its edges (fakeredis, or a Redis client on a port
where nothing listens; an injected enqueue), over a real database of each backend.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import fakeredis
import kombu.exceptions
import pytest
import redis
from flask.testing import FlaskClient
from sqlalchemy import func, select

from ops.embedded_redis import free_port
from shared.schema.response import Status
from shared.store import Store
from shared.store.tables import ResponseRow, WebhookEndpointRow
from tests.api.factory import AppFactory, store_of

BASE = {"model": "resq-builtin", "input": "hi"}
MAX_BODY = 512 * 1024  # room for 10,000 small input items


@dataclass
class Api:
    client: FlaskClient
    store: Store
    sent: list[str]

    def rows(self) -> int:
        with self.store.session() as s:
            responses = s.scalar(select(func.count()).select_from(ResponseRow)) or 0
            hooks = s.scalar(select(func.count()).select_from(WebhookEndpointRow)) or 0
            return int(responses + hooks)

    def post(self, path: str, body: Any = None, **kwargs: Any) -> Any:
        if body is not None:
            kwargs.setdefault("data", body if isinstance(body, str | bytes) else json.dumps(body))
            kwargs.setdefault("content_type", "application/json")
        return self.client.post(path, **kwargs)


@pytest.fixture
def env() -> dict[str, str]:
    """A body limit small enough to test quickly; loopback URLs allowed, so a malformed URL on
    127.0.0.1 is refused for being malformed and a webhook may point at 127.0.0.1."""
    return {"RESQ_MAX_BODY_BYTES": str(MAX_BODY), "RESQ_OUTBOUND_ALLOW_LOOPBACK": "1"}


@pytest.fixture
def apps(make_app: AppFactory, database_url: str) -> Callable[..., Api]:
    """Builds apps over this backend's database with a given Redis client (and broker URL,
    or enqueue); each records what it queues in its own ``sent``."""

    def make(
        redis_client: Any,
        *,
        broker_url: str = "redis://unused",
        enqueue: Callable[[str], None] | None = None,
    ) -> Api:
        sent: list[str] = []
        app = make_app(
            database_url=database_url,
            redis_client=redis_client,
            env={"REDIS_URL": broker_url},
            enqueue=enqueue or sent.append,
        )
        return Api(client=app.test_client(), store=store_of(app), sent=sent)

    return make


@pytest.fixture
def api(apps: Callable[..., Api]) -> Api:
    return apps(fakeredis.FakeRedis())


def nothing_listens() -> str:
    return f"redis://127.0.0.1:{free_port()}/0"


def redis_down() -> redis.Redis:
    return redis.Redis.from_url(nothing_listens())


def refused(
    api: Api, resp: Any, status: int, code: str | None, param: str | None, before: int
) -> dict[str, Any]:
    """The response is ``status`` with exactly the envelope, and nothing was stored or
    queued."""
    assert resp.status_code == status, resp.get_data(as_text=True)
    assert resp.content_type == "application/json"
    body = resp.get_json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    assert (body["error"]["code"], body["error"]["param"]) == (code, param)
    assert api.sent == [] and api.rows() == before
    error: dict[str, Any] = body["error"]
    return error


def deep(levels: int) -> str:
    return '{"model": "resq-builtin", "input": ' + "[" * levels + "]" * levels + "}"


@pytest.mark.parametrize(
    "path",
    [
        "/v1/responses",
        "/v1/responses/input_tokens",
        "/v1/responses/compact",
        "/v1/conversations",
        "/v1/webhook_endpoints",
    ],
)
def test_json_nested_1000_deep_is_a_400(api: Api, path: str) -> None:
    before = api.rows()
    error = refused(api, api.post(path, deep(1000)), 400, "invalid_json", None, before)
    assert "nested too deeply" in error["message"]


def test_json_nested_within_the_limit_is_read(api: Api) -> None:
    schema: dict[str, Any] = {"type": "object"}
    for _ in range(20):
        schema = {"type": "object", "properties": {"x": schema}}
    body = {**BASE, "background": True, "text": {"format": {"type": "json_schema",
            "name": "deep", "schema": schema}}}  # fmt: skip
    assert api.post("/v1/responses", body).status_code == 200


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_nan_and_infinity_are_not_json_numbers(api: Api, constant: str) -> None:
    body = '{"model": "resq-builtin", "input": "hi", "temperature": ' + constant + "}"
    refused(api, api.post("/v1/responses", body), 400, "invalid_json", None, api.rows())


@pytest.mark.parametrize("url", ["http://127.0.0.1:99999/", "http://[::1/"])
def test_a_malformed_webhook_url_is_a_400(api: Api, url: str) -> None:
    body = {"name": "hook", "url": url, "event_types": ["response.completed"]}
    before = api.rows()
    refused(api, api.post("/v1/webhook_endpoints", body), 400, "invalid_url", "url", before)


@pytest.mark.parametrize("url", ["http://127.0.0.1:99999/mcp", "http://[::1/mcp"])
def test_a_malformed_mcp_url_is_a_400(api: Api, url: str) -> None:
    body = {**BASE, "tools": [{"type": "mcp", "server_label": "s", "server_url": url}]}
    before = api.rows()
    refused(api, api.post("/v1/responses", body), 400, "invalid_url", "tools[0].server_url", before)


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({**BASE, "model": "resq-\u0000builtin"}, "model"),
        ({**BASE, "input": [{"type": "message", "role": "user", "content": "x", "id": "m\u0000"}]},
         "input[0].id"),
        ({**BASE, "metadata": {"k": "v\u0000"}}, "metadata.k"),
        ({**BASE, "instructions": "\u0000"}, "instructions"),
    ],
)  # fmt: skip
def test_a_nul_in_a_create_is_a_400(api: Api, body: dict[str, Any], param: str) -> None:
    before = api.rows()
    refused(api, api.post("/v1/responses", body), 400, "invalid_value", param, before)


def test_a_nul_in_a_webhook_name_is_a_400(api: Api) -> None:
    body = {"name": "a\u0000b", "url": "https://example.com/hook"}
    before = api.rows()
    refused(api, api.post("/v1/webhook_endpoints", body), 400, "invalid_value", "name", before)


@pytest.mark.parametrize(
    ("path", "param"),
    [
        ("/v1/responses/resp_%00x", None),
        ("/v1/responses/resp_x/input_items?after=%00", "after"),
        ("/v1/admin/responses?model=%00", "model"),
        ("/v1/conversations/conv_%00", None),
    ],
)
def test_a_nul_in_the_url_is_a_400(api: Api, path: str, param: str | None) -> None:
    refused(api, api.client.get(path), 400, "invalid_value", param, api.rows())


def test_stream_resume_while_redis_is_down_is_a_json_503(apps: Callable[..., Api]) -> None:
    up = apps(fakeredis.FakeRedis())
    rid = up.post("/v1/responses", {**BASE, "background": True}).get_json()["id"]
    down = apps(redis_down())
    resp = down.client.get(f"/v1/responses/{rid}?stream=true&starting_after=0")
    assert resp.status_code == 503 and resp.content_type == "application/json"
    assert resp.get_json()["error"]["code"] == "service_unavailable"


def test_cancel_while_redis_is_down_answers_what_the_store_recorded(
    apps: Callable[..., Api],
) -> None:
    up = apps(fakeredis.FakeRedis())
    rid = up.post("/v1/responses", {**BASE, "background": True}).get_json()["id"]
    down = apps(redis_down())
    resp = down.post(f"/v1/responses/{rid}/cancel", "")
    assert resp.status_code == 200, resp.get_data(as_text=True)
    assert resp.get_json()["status"] == "cancelled"
    assert up.client.get(f"/v1/responses/{rid}").get_json()["status"] == "cancelled"


def test_a_body_over_the_limit_is_a_413(api: Api) -> None:
    body = {**BASE, "input": "x" * MAX_BODY}
    before = api.rows()
    error = refused(api, api.post("/v1/responses", body), 413, "request_too_large", None, before)
    assert str(MAX_BODY) in error["message"]


@pytest.mark.parametrize(
    "content_type", ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data"]
)
def test_a_json_body_with_another_content_type_is_a_400(api: Api, content_type: str) -> None:
    resp = api.post("/v1/responses", json.dumps(BASE), content_type=content_type)
    refused(api, resp, 400, "unsupported_content_type", None, api.rows())


def test_json_content_types_and_empty_bodies_are_accepted(api: Api) -> None:
    ok = api.post("/v1/responses", {**BASE, "background": True}, content_type="application/json")
    assert ok.status_code == 200
    rid = ok.get_json()["id"]
    vendor = api.post("/v1/responses", {**BASE, "background": True},
                      content_type="application/vnd.api+json; charset=utf-8")  # fmt: skip
    assert vendor.status_code == 200
    unlabelled = api.client.post("/v1/responses", data=json.dumps({**BASE, "background": True}))
    assert unlabelled.status_code == 200
    empty = api.post(f"/v1/responses/{rid}/cancel", "", content_type="application/json")
    assert empty.status_code == 200


@pytest.mark.parametrize(
    ("extra", "code", "param"),
    [
        ({"input": [{"type": "foo"}]}, "invalid_value", "input[0].type"),
        ({"input": [{"type": "foo"}] * 10_000}, "invalid_value", "input[0].type"),
        ({"input": [{"type": "reasoning", "summary": "thought"}]}, "invalid_type",
         "input[0].summary"),
        ({"input": [{"type": "reasoning", "summary": [{"type": "x", "text": "t"}]}]},
         "invalid_value", "input[0].summary[0].type"),
        ({"input": [{"type": "function_call_output", "call_id": 1, "output": "x"}]},
         "invalid_type", "input[0].call_id"),
        ({"tool_choice": {"type": "function", "name": 5}}, "invalid_type", "tool_choice.name"),
        ({"tool_choice": {"type": "function"}}, "missing_required_parameter",
         "tool_choice.name"),
        ({"tool_choice": {"type": "web_search"}}, "invalid_value", "tool_choice.type"),
        ({"text": {"format": {"type": "json_schema"}}}, "missing_required_parameter",
         "text.format.name"),
        ({"text": {"format": {"type": "json_schema", "name": "n"}}},
         "missing_required_parameter", "text.format.schema"),
        ({"include": ["bogus.include"]}, "invalid_value", "include[0]"),
        ({"max_output_tokens": 2**64}, "integer_above_max_value", "max_output_tokens"),
        ({"temperature": 3}, "decimal_above_max_value", "temperature"),
        ({"top_p": 2}, "decimal_above_max_value", "top_p"),
        ({"temperature": -1}, "decimal_below_min_value", "temperature"),
    ],
)  # fmt: skip
def test_invalid_requests_are_refused_before_anything_runs(
    api: Api, extra: dict[str, Any], code: str, param: str
) -> None:
    before = api.rows()
    error = refused(api, api.post("/v1/responses", {**BASE, **extra}), 400, code, param, before)
    if code == "decimal_above_max_value" and param == "temperature":
        assert error["message"] == (
            "Invalid 'temperature': decimal above maximum value. Expected a value <= 2, but got "
            "3 instead."
        )


def test_valid_items_tool_choices_and_includes_are_accepted(api: Api) -> None:
    body = {
        **BASE,
        "background": True,
        "input": [
            {"type": "reasoning", "summary": [{"type": "summary_text", "text": "t"}]},
            {"type": "message", "role": "user", "content": "hi"},
        ],
        "tools": [{"type": "function", "name": "f", "parameters": {"type": "object"}}],
        "tool_choice": {"type": "allowed_tools", "mode": "auto",
                        "tools": [{"type": "function", "name": "f"}]},
        "include": ["reasoning.encrypted_content"],
        "max_output_tokens": 2**31 - 1,
        "text": {"format": {"type": "json_schema", "name": "n", "schema": {"type": "object"}}},
        "some_future_field": {"a": 1},
    }  # fmt: skip
    resp = api.post("/v1/responses", body)
    assert resp.status_code == 200, resp.get_data(as_text=True)
    assert len(api.sent) == 1


def test_options_is_a_json_405(api: Api) -> None:
    resp = api.client.options("/v1/responses")
    assert resp.status_code == 405 and resp.content_type == "application/json"
    assert resp.get_json()["error"]["code"] == "method_not_allowed"


# ---- values wider than the store's columns, and query integers past any column --------------


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({**BASE, "model": "m" * 257}, "model"),
        ({**BASE, "input": [{"type": "message", "role": "user", "content": "x", "id": "m" * 129}]},
         "input[0].id"),
    ],
)  # fmt: skip
def test_a_value_longer_than_its_column_is_a_400(
    api: Api, body: dict[str, Any], param: str
) -> None:
    before = api.rows()
    refused(api, api.post("/v1/responses", body), 400, "string_above_max_length", param, before)


def test_a_conversation_item_id_longer_than_its_column_is_a_400(api: Api) -> None:
    item = {"type": "message", "role": "user", "content": "x", "id": "m" * 129}
    resp = api.post("/v1/conversations", {"items": [item]})
    refused(api, resp, 400, "string_above_max_length", "items[0].id", api.rows())


def test_an_item_id_as_long_as_its_column_is_stored(api: Api) -> None:
    item = {"type": "message", "role": "user", "content": "x", "id": "m" * 128}
    resp = api.post("/v1/responses", {**BASE, "background": True, "input": [item]})
    assert resp.status_code == 200, resp.get_data(as_text=True)
    items = api.client.get(f"/v1/responses/{resp.get_json()['id']}/input_items").get_json()
    assert [i["id"] for i in items["data"]] == ["m" * 128]


@pytest.mark.parametrize(
    ("path", "param"),
    [
        ("/v1/admin/responses?older_than=99999999999999999999", "older_than"),
        ("/v1/admin/responses?older_than=3153600001", "older_than"),
        ("/v1/responses/resp_x?stream=true&starting_after=99999999999999999999", "starting_after"),
    ],
)
def test_a_query_integer_out_of_range_is_a_400(api: Api, path: str, param: str) -> None:
    if "starting_after" in path:
        rid = api.post("/v1/responses", {**BASE, "background": True}).get_json()["id"]
        api.sent.clear()
        path = path.replace("resp_x", rid)
    refused(api, api.client.get(path), 400, "invalid_value", param, api.rows())


# ---- the broker away ---------------------------------------------------------------------------


def test_pausing_a_queue_while_the_broker_is_away_is_a_503(apps: Callable[..., Api]) -> None:
    api = apps(fakeredis.FakeRedis(), broker_url=nothing_listens())
    resp = api.client.post("/v1/admin/queues/resq/pause")
    assert resp.status_code == 503 and resp.content_type == "application/json"
    assert resp.get_json()["error"]["code"] == "service_unavailable"
    assert "broker" in resp.get_json()["error"]["message"]


def test_a_requeue_the_broker_cannot_take_is_sent_by_the_sweep(
    apps: Callable[..., Api],
) -> None:
    """The store holds it as queued; the stuck-queued sweep (worker/reaper.py) sends it."""
    up = apps(fakeredis.FakeRedis())
    rid = up.post("/v1/responses", {**BASE, "background": True}).get_json()["id"]
    assert up.post(f"/v1/responses/{rid}/cancel", "").get_json()["status"] == "cancelled"

    def broker_away(response_id: str) -> None:
        raise kombu.exceptions.OperationalError("Error 111 connecting to 127.0.0.1. Refused.")

    down = apps(fakeredis.FakeRedis(), enqueue=broker_away)
    resp = down.client.post(f"/v1/admin/responses/{rid}/requeue")
    assert resp.status_code == 200, resp.get_data(as_text=True)
    assert resp.get_json()["status"] == "queued"
    row = up.store.get_response(response_id=rid)
    assert row is not None and row.status == "queued"
    assert rid in {r.id for r in up.store.queued_created_before(before=int(time.time()) + 1)}


def test_a_requeue_while_redis_is_away_changes_nothing(apps: Callable[..., Api]) -> None:
    up = apps(fakeredis.FakeRedis())
    rid = up.post("/v1/responses", {**BASE, "background": True}).get_json()["id"]
    up.post(f"/v1/responses/{rid}/cancel", "")
    up.sent.clear()
    down = apps(redis_down())
    resp = down.client.post(f"/v1/admin/responses/{rid}/requeue")
    assert resp.status_code == 503 and resp.get_json()["error"]["code"] == "service_unavailable"
    row = up.store.get_response(response_id=rid)
    assert row is not None and row.status == "cancelled" and down.sent == []


def test_a_redelivery_the_broker_cannot_take_is_sent_by_the_sweep(
    apps: Callable[..., Api],
) -> None:
    """The store has the delivery due again; the delivery sweep sends it."""
    api = apps(fakeredis.FakeRedis(), broker_url=nothing_listens())
    hook = {"name": "hook", "url": "http://127.0.0.1:9/hook", "event_types": ["response.completed"]}
    endpoint = api.post("/v1/webhook_endpoints", hook).get_json()["id"]
    rid = api.post("/v1/responses", {**BASE, "background": True}).get_json()["id"]
    now = int(time.time())
    assert api.store.claim(response_id=rid, now=now) is not None
    api.store.finish(response_id=rid, status=Status.COMPLETED, now=now, output=[])
    path = f"/v1/webhook_endpoints/{endpoint}/deliveries"
    (delivery,) = api.client.get(path).get_json()["data"]
    resp = api.client.post(f"{path}/{delivery['id']}/redeliver")
    assert resp.status_code == 200, resp.get_data(as_text=True)
    assert resp.get_json()["status"] == "pending"
