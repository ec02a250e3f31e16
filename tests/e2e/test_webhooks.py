"""Webhooks end to end: real API, worker, beat and Redis processes; endpoints managed with the
openai SDK's ``client.webhooks``; events received by a real HTTP server on 127.0.0.1 and
verified with ``client.webhooks.unwrap``."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import openai
import pytest
from openai.types.webhooks import (
    ResponseCancelledWebhookEvent,
    ResponseCompletedWebhookEvent,
    ResponseFailedWebhookEvent,
    ResponseIncompleteWebhookEvent,
    WebhookEndpoint,
    WebhookEndpointWithSecret,
)

from shared.webhook_sender import new_secret
from tests.e2e.durable import MiniStack, running
from tests.e2e.helpers import TERMINAL, script, wait_status
from tests.fakes.receiver import Behaviour, Receiver, running_receiver

pytestmark = pytest.mark.e2e

KEY_A = "sk-hooks-tenant-a-0123456789"
KEY_B = "sk-hooks-tenant-b-9876543210"
MAX_ATTEMPTS = 3
ALL = ["response.completed", "response.failed", "response.cancelled", "response.incomplete"]


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    yield from running_receiver()


@pytest.fixture(scope="module")
def mini(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MiniStack]:
    env = {
        "RESQ_API_KEYS": f"{KEY_A}:tenant-a,{KEY_B}:tenant-b",
        "RESQ_OUTBOUND_ALLOW_LOOPBACK": "true",  # the receiver is on 127.0.0.1
        "RESQ_WEBHOOK_MAX_ATTEMPTS": str(MAX_ATTEMPTS),
        "RESQ_WEBHOOK_BACKOFF_SECONDS": "0.4",
        "RESQ_WEBHOOK_BACKOFF_MAX_SECONDS": "1",
        "RESQ_WEBHOOK_SWEEP_SECONDS": "0.2",
        "RESQ_WEBHOOK_TIMEOUT_SECONDS": "15",
        "RESQ_WORKER_CONCURRENCY": "20",
    }
    with running(tmp_path_factory.mktemp("webhooks"), env) as stack:
        yield stack


def sdk(mini: MiniStack, key: str = KEY_A) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=f"{mini.root_url}/v1", api_key=key, max_retries=0, http_client=mini.http
    )


def wait_terminal(client: openai.OpenAI, rid: str) -> Any:
    return client.responses.retrieve(wait_status(client, rid, TERMINAL, timeout=30)["id"])


def endpoint(
    client: openai.OpenAI, receiver: Receiver, path: str, behaviour: Behaviour | None = None
) -> WebhookEndpointWithSecret:
    url = receiver.behave(path, behaviour or Behaviour())
    return client.webhooks.create(name=path, url=url, event_types=ALL)  # type: ignore[arg-type]


def deliveries(mini: MiniStack, endpoint_id: str, key: str = KEY_A) -> list[dict[str, Any]]:
    got = mini.http.get(
        f"{mini.root_url}/v1/webhook_endpoints/{endpoint_id}/deliveries",
        headers={"Authorization": f"Bearer {key}"},
    )
    assert got.status_code == 200, got.text
    data: list[dict[str, Any]] = got.json()["data"]
    return data


def settled(mini: MiniStack, endpoint_id: str, timeout: float = 10) -> list[dict[str, Any]]:
    """The endpoint's delivery log once no delivery is pending (the receiver logs a request
    before it answers, so the worker records an attempt a moment after the receiver saw it)."""
    deadline = time.monotonic() + timeout
    while True:
        log = deliveries(mini, endpoint_id)
        if all(d["status"] != "pending" for d in log):
            return log
        assert time.monotonic() < deadline, log
        time.sleep(0.05)


def test_endpoints_are_managed_with_the_sdk(mini: MiniStack, receiver: Receiver) -> None:
    client = sdk(mini)
    created = endpoint(client, receiver, "/crud")
    assert created.signing_secret.startswith("whsec_") and created.id.startswith("whep_")
    assert created.signing_secret_hint and created.signing_secret_hint.endswith(
        created.signing_secret[-4:]
    )
    shown = client.webhooks.retrieve(created.id)
    assert isinstance(shown, WebhookEndpoint)
    raw = client.webhooks.with_raw_response.retrieve(created.id).http_response.json()
    assert "signing_secret" not in raw  # shown once, at creation
    # every field the server sends is one the SDK's own model declares, and none is missing
    assert set(raw) == set(WebhookEndpoint.model_fields)
    assert set(created.model_dump()) == set(WebhookEndpointWithSecret.model_fields)
    assert created.model_extra in (None, {})
    assert created.id in [e.id for e in client.webhooks.list()]

    updated = client.webhooks.update(created.id, name="renamed", event_types=["response.failed"])
    assert (updated.name, updated.event_types, updated.url) == (
        "renamed",
        ["response.failed"],
        created.url,
    )
    rotated = client.webhooks.rotate_secret(created.id)
    assert rotated.signing_secret != created.signing_secret

    result = client.webhooks.test(created.id, event_type="response.completed")
    assert (result.status_code, result.success, result.event_type) == (
        200,
        True,
        "response.completed",
    )
    (sample,) = receiver.at("/crud")
    event = client.webhooks.unwrap(sample.body, sample.headers, secret=rotated.signing_secret)
    assert isinstance(event, ResponseCompletedWebhookEvent)

    assert client.webhooks.event_types.list().data == ALL
    assert client.webhooks.delete(created.id).deleted
    with pytest.raises(openai.NotFoundError):
        client.webhooks.retrieve(created.id)


def test_bad_endpoints_are_refused_with_clear_errors(mini: MiniStack, receiver: Receiver) -> None:
    client = sdk(mini)
    cases: list[tuple[dict[str, Any], str, str]] = [
        ({"url": "http://169.254.169.254/latest"}, "url", "url_not_allowed"),
        ({"url": "ftp://example.com/x"}, "url", "invalid_url"),
        ({"event_types": ["batch.completed"]}, "event_types", "invalid_value"),
        ({"event_types": []}, "event_types", "invalid_value"),
    ]
    for change, param, code in cases:
        body = {"name": "bad", "url": receiver.url + "/bad", "event_types": ALL, **change}
        with pytest.raises(openai.BadRequestError) as info:
            client.webhooks.create(**body)
        error = info.value.response.json()["error"]
        assert (error["param"], error["code"], error["type"]) == (
            param,
            code,
            "invalid_request_error",
        ), error
    missing = mini.http.post(
        f"{mini.root_url}/v1/webhook_endpoints",
        json={"url": receiver.url, "event_types": ALL},
        headers={"Authorization": f"Bearer {KEY_A}"},
    )
    assert missing.status_code == 400
    assert missing.json()["error"] == {
        "message": "Missing required parameter: 'name'.",
        "type": "invalid_request_error",
        "param": "name",
        "code": "missing_required_parameter",
    }


def test_each_terminal_status_arrives_once_and_verifies(
    mini: MiniStack, receiver: Receiver
) -> None:
    client = sdk(mini)
    hook = endpoint(client, receiver, "/statuses")
    jobs = {
        "completed": client.responses.create(
            model="resq-builtin", background=True, input=script(words=3)
        ).id,
        "failed": client.responses.create(
            model="resq-builtin",
            background=True,
            input=script(error={"message": "boom", "code": "server_error"}),
        ).id,
        "incomplete": client.responses.create(
            model="resq-builtin", background=True, input=script(words=50), max_output_tokens=16
        ).id,
        "cancelled": client.responses.create(
            model="resq-builtin", background=True, input=script(words=200, delay_ms=50)
        ).id,
    }
    while client.responses.retrieve(jobs["cancelled"]).status == "queued":
        time.sleep(0.05)
    client.responses.cancel(jobs["cancelled"])
    for status, rid in jobs.items():
        assert wait_terminal(client, rid).status == status

    got = receiver.wait_for("/statuses", 4)
    time.sleep(1.5)  # nothing more arrives: each event exactly once
    assert len(receiver.at("/statuses")) == 4, [
        (r.headers["webhook-id"], r.body) for r in receiver.at("/statuses")
    ]
    kinds = {
        "completed": ResponseCompletedWebhookEvent,
        "failed": ResponseFailedWebhookEvent,
        "incomplete": ResponseIncompleteWebhookEvent,
        "cancelled": ResponseCancelledWebhookEvent,
    }
    by_response = {}
    for r in got:
        event = client.webhooks.unwrap(r.body, r.headers, secret=hook.signing_secret)
        by_response[event.data.id] = event  # type: ignore[union-attr]
        with pytest.raises(openai.InvalidWebhookSignatureError):
            client.webhooks.unwrap(r.body, r.headers, secret=new_secret())
    for status, rid in jobs.items():
        event = by_response[rid]
        assert isinstance(event, kinds[status]) and event.type == f"response.{status}"
        assert client.responses.retrieve(event.data.id).status == status  # data.id retrieves
    log = settled(mini, hook.id)
    assert sorted(d["response_id"] for d in log) == sorted(jobs.values())
    assert all(d["status"] == "delivered" and len(d["attempts"]) == 1 for d in log)


def test_a_receiver_failing_twice_gets_it_on_the_third_attempt(
    mini: MiniStack, receiver: Receiver
) -> None:
    client = sdk(mini)
    hook = endpoint(client, receiver, "/flaky", Behaviour(statuses=[500, 503]))
    rid = client.responses.create(model="resq-builtin", background=True, input="hi").id
    wait_terminal(client, rid)
    got = receiver.wait_for("/flaky", 3)
    assert [r.answered for r in got] == [500, 503, 200]
    assert len({r.headers["webhook-id"] for r in got}) == 1
    (entry,) = settled(mini, hook.id)
    assert entry["id"] == got[0].headers["webhook-id"] and entry["status"] == "delivered"
    assert [(a["status_code"], a["success"]) for a in entry["attempts"]] == [
        (500, False),
        (503, False),
        (200, True),
    ]


def test_a_receiver_always_failing_is_given_up_on_and_can_be_redelivered(
    mini: MiniStack, receiver: Receiver
) -> None:
    client = sdk(mini)
    hook = endpoint(client, receiver, "/down", Behaviour(then=500))
    rid = client.responses.create(model="resq-builtin", background=True, input="hi").id
    wait_terminal(client, rid)
    receiver.wait_for("/down", MAX_ATTEMPTS)
    (entry,) = settled(mini, hook.id, timeout=15)
    assert entry["status"] == "failed"
    assert [a["status_code"] for a in entry["attempts"]] == [500] * MAX_ATTEMPTS
    assert all(a["error"].startswith("HTTP 500") for a in entry["attempts"])
    time.sleep(1.5)
    assert len(receiver.at("/down")) == MAX_ATTEMPTS  # no attempt past the limit

    receiver.behave("/down", Behaviour())  # the receiver is fixed; the operator redelivers
    again = mini.http.post(
        f"{mini.root_url}/v1/webhook_endpoints/{hook.id}/deliveries/{entry['id']}/redeliver",
        headers={"Authorization": f"Bearer {KEY_A}"},
    )
    assert again.status_code == 200, again.text
    got = receiver.wait_for("/down", MAX_ATTEMPTS + 1)
    assert got[-1].headers["webhook-id"] == entry["id"] and got[-1].answered == 200
    client.webhooks.unwrap(got[-1].body, got[-1].headers, secret=hook.signing_secret)
    deadline = time.monotonic() + 10
    while deliveries(mini, hook.id)[0]["status"] != "delivered":
        assert time.monotonic() < deadline
        time.sleep(0.1)


def test_a_tenant_receives_only_its_own_events(mini: MiniStack, receiver: Receiver) -> None:
    a, b = sdk(mini, KEY_A), sdk(mini, KEY_B)
    hook_a = endpoint(a, receiver, "/tenant-a")
    hook_b = endpoint(b, receiver, "/tenant-b")
    rid_a = a.responses.create(model="resq-builtin", background=True, input="a").id
    rid_b = b.responses.create(model="resq-builtin", background=True, input="b").id
    wait_terminal(a, rid_a)
    wait_terminal(b, rid_b)
    (got_a,) = receiver.wait_for("/tenant-a", 1)
    (got_b,) = receiver.wait_for("/tenant-b", 1)
    time.sleep(1)
    assert len(receiver.at("/tenant-a")) == 1 and len(receiver.at("/tenant-b")) == 1
    event_a = a.webhooks.unwrap(got_a.body, got_a.headers, secret=hook_a.signing_secret)
    event_b = b.webhooks.unwrap(got_b.body, got_b.headers, secret=hook_b.signing_secret)
    assert (event_a.data.id, event_b.data.id) == (rid_a, rid_b)  # type: ignore[union-attr]
    # another tenant's endpoint is not found, and neither is its delivery log
    with pytest.raises(openai.NotFoundError):
        b.webhooks.retrieve(hook_a.id)
    with pytest.raises(openai.NotFoundError):
        b.webhooks.delete(hook_a.id)
    assert (
        mini.http.get(
            f"{mini.root_url}/v1/webhook_endpoints/{hook_a.id}/deliveries",
            headers={"Authorization": f"Bearer {KEY_B}"},
        ).status_code
        == 404
    )
    assert hook_b.id not in [e.id for e in a.webhooks.list()]


def test_a_slow_receiver_does_not_delay_jobs(mini: MiniStack, receiver: Receiver) -> None:
    client = sdk(mini)
    endpoint(client, receiver, "/slow", Behaviour(delay=8))
    rids = [
        client.responses.create(model="resq-builtin", background=True, input=f"job {n}").id
        for n in range(6)
    ]
    for rid in rids:
        assert wait_terminal(client, rid).status == "completed"
    # Every job ended while the receiver had answered none of its events yet (it records a
    # request only after its 8 s wait): completion never waits on a delivery.
    assert receiver.at("/slow") == []
    receiver.wait_for("/slow", 6, timeout=40)  # and every event still arrives
