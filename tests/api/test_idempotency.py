"""``Idempotency-Key`` on ``POST /v1/responses``, through the Flask app with stand-ins at its
boundaries (fakeredis, a SQLite file, an injected ``enqueue`` recording the ids it is sent).

The rule (README, "Behaviour worth knowing"): same tenant + key + body within the TTL →
the original response, nothing new stored or enqueued, ``idempotent-replayed: true``; a
different body → 409 ``idempotency_key_reused``; keys are per tenant and at most 255
characters; a deleted or failed-to-enqueue response frees its key.
"""

from __future__ import annotations

from typing import Any

import pytest
from flask.testing import FlaskClient

from tests.api.factory import AppFactory, store_of

KEYS = "sk-a:tenant-a,sk-b:tenant-b"
BODY = {"model": "resq-builtin", "input": "hi", "background": True}


@pytest.fixture
def env() -> dict[str, str]:
    """Two tenants, each with its own key: keys are per tenant."""
    return {"RESQ_API_KEYS": KEYS}


def post(
    client: FlaskClient, body: dict[str, Any], key: str | None, *, api_key: str = "sk-a"
) -> Any:
    headers = {"Authorization": f"Bearer {api_key}"}
    if key is not None:
        headers["Idempotency-Key"] = key
    return client.post("/v1/responses", json=body, headers=headers)


def test_background_post_repeated_five_times_creates_and_enqueues_once(client, store, sent):
    answers = [post(client, BODY, "key-1") for _ in range(5)]

    assert [a.status_code for a in answers] == [200] * 5
    ids = {a.get_json()["id"] for a in answers}
    assert len(ids) == 1 and sent == list(ids)
    assert store.count_responses() == 1
    assert "idempotent-replayed" not in answers[0].headers
    assert [a.headers.get("idempotent-replayed") for a in answers[1:]] == ["true"] * 4
    first = answers[0].get_json()
    for replay in answers[1:]:
        assert replay.get_json() == first  # the stored Response, still queued
        assert replay.headers["x-request-id"].startswith("req_")


def test_replay_shows_the_response_as_it_is_now(client, store, sent):
    rid = post(client, BODY, "key-1").get_json()["id"]
    assert store.cancel(response_id=rid, now=1) == "queued"

    replay = post(client, BODY, "key-1")

    assert replay.status_code == 200
    assert replay.headers["idempotent-replayed"] == "true"
    assert (replay.get_json()["id"], replay.get_json()["status"]) == (rid, "cancelled")
    assert sent == [rid]


def test_key_order_and_spacing_of_the_body_do_not_matter(client, sent):
    first = post(client, BODY, "key-1").get_json()["id"]
    raw = '{ "background": true,\n "input": "hi", "model": "resq-builtin" }'
    replay = client.post(
        "/v1/responses",
        data=raw,
        content_type="application/json",
        headers={"Authorization": "Bearer sk-a", "Idempotency-Key": "key-1"},
    )

    assert replay.status_code == 200
    assert replay.get_json()["id"] == first
    assert replay.headers["idempotent-replayed"] == "true"
    assert sent == [first]


def test_same_key_with_a_different_body_is_409(client, store, sent):
    first = post(client, BODY, "key-1").get_json()["id"]

    resp = post(client, {**BODY, "input": "something else"}, "key-1")

    assert resp.status_code == 409
    err = resp.get_json()["error"]
    assert set(resp.get_json()) == {"error"}
    assert (err["type"], err["code"], err["param"]) == (
        "invalid_request_error",
        "idempotency_key_reused",
        None,
    )
    assert err["message"] == (
        "The Idempotency-Key 'key-1' was already used with a different request body (keys "
        "are kept 86400 s after first use). Use a new key for a new request."
    )
    assert resp.headers["x-should-retry"] == "false"  # the SDK retries a bare 409
    assert "idempotent-replayed" not in resp.headers
    assert sent == [first] and store.count_responses() == 1


def test_the_same_key_in_two_tenants_makes_two_responses(client, store, sent):
    a = post(client, BODY, "shared-key", api_key="sk-a")
    b = post(client, BODY, "shared-key", api_key="sk-b")
    a_again = post(client, BODY, "shared-key", api_key="sk-a")

    assert (a.status_code, b.status_code, a_again.status_code) == (200, 200, 200)
    assert a.get_json()["id"] != b.get_json()["id"]
    assert "idempotent-replayed" not in b.headers
    assert a_again.get_json()["id"] == a.get_json()["id"]
    assert sent == [a.get_json()["id"], b.get_json()["id"]]
    row = store.get_response(response_id=b.get_json()["id"])
    assert row is not None and row.tenant == "tenant-b"


def test_a_different_key_or_no_key_makes_a_new_response(client, sent):
    ids = [post(client, BODY, key).get_json()["id"] for key in ("key-1", "key-2", None, None)]

    assert len(set(ids)) == 4 and sent == ids


@pytest.mark.parametrize("length", [0, 256, 1000])
def test_an_empty_or_too_long_key_is_400(client, store, sent, length):
    resp = post(client, BODY, "k" * length)

    assert resp.status_code == 400
    err = resp.get_json()["error"]
    assert (err["type"], err["code"], err["param"]) == (
        "invalid_request_error",
        "invalid_value",
        "Idempotency-Key",
    )
    assert err["message"] == (
        f"Invalid 'Idempotency-Key' header: expected 1 to 255 characters, got {length}."
    )
    assert sent == [] and store.count_responses() == 0


def test_a_key_of_255_characters_is_accepted(client, sent):
    key = "k" * 255
    first = post(client, BODY, key)
    replay = post(client, BODY, key)

    assert (first.status_code, replay.status_code) == (200, 200)
    assert replay.get_json()["id"] == first.get_json()["id"]
    assert replay.headers["idempotent-replayed"] == "true"
    assert sent == [first.get_json()["id"]]


def test_an_invalid_body_is_a_400_and_does_not_take_the_key(client, sent):
    bad = post(client, {"model": "resq-builtin", "input": "hi", "temperature": "hot"}, "key-1")
    good = post(client, BODY, "key-1")

    assert bad.status_code == 400
    assert good.status_code == 200 and "idempotent-replayed" not in good.headers
    assert sent == [good.get_json()["id"]]


def test_enqueue_failure_frees_the_key_and_a_retry_succeeds(make_app: AppFactory):
    sent: list[str] = []
    failures = [ConnectionError("broker unreachable")]

    def flaky(response_id: str) -> None:
        if failures:
            raise failures.pop()
        sent.append(response_id)

    app = make_app(enqueue=flaky)
    client, store = app.test_client(), store_of(app)
    down = post(client, BODY, "key-1")
    assert down.status_code == 503
    assert down.get_json()["error"]["code"] == "service_unavailable"
    assert store.count_responses() == 0

    retried = post(client, BODY, "key-1")
    again = post(client, BODY, "key-1")

    assert retried.status_code == 200 and "idempotent-replayed" not in retried.headers
    assert again.get_json()["id"] == retried.get_json()["id"]
    assert again.headers["idempotent-replayed"] == "true"
    assert sent == [retried.get_json()["id"]]
    assert store.count_responses() == 1


def test_deleting_the_response_frees_the_key(client, sent):
    first = post(client, BODY, "key-1").get_json()["id"]
    deleted = client.delete(f"/v1/responses/{first}", headers={"Authorization": "Bearer sk-a"})
    assert deleted.status_code == 200

    anew = post(client, BODY, "key-1")

    assert anew.status_code == 200 and "idempotent-replayed" not in anew.headers
    assert anew.get_json()["id"] != first
    assert sent == [first, anew.get_json()["id"]]


def test_an_expired_key_runs_the_request_anew(make_app: AppFactory, sent: list[str]):
    app = make_app(env={"RESQ_IDEMPOTENCY_TTL_SECONDS": "0"})  # dead at once
    client, store = app.test_client(), store_of(app)

    first = post(client, BODY, "key-1")
    second = post(client, {**BODY, "input": "another body is fine too"}, "key-1")

    assert (first.status_code, second.status_code) == (200, 200)
    assert "idempotent-replayed" not in second.headers
    assert sent == [first.get_json()["id"], second.get_json()["id"]]
    assert len(set(sent)) == 2 and store.count_responses() == 2
