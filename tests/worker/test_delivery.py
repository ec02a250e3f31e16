"""Delivering webhooks to a real HTTP receiver: signatures the openai SDK accepts, retries
with the same webhook-id, the attempt limit and the retry window, the address policy."""

from __future__ import annotations

import random
from collections.abc import Iterator

import httpx
import openai
import pytest
from openai.types.webhooks import ResponseCompletedWebhookEvent

from shared import webhook_sender
from shared.netpolicy import OutboundPolicy
from shared.schema.response import Status
from shared.schema.webhooks import EVENT_TYPES
from shared.store import Store
from shared.store.outbox import DELIVERED, FAILED, PENDING
from shared.store.tables import WebhookEndpointRow
from shared.store.webhooks import DeliveryView, WebhookStore
from tests.fakes.receiver import Behaviour, Receiver, running_receiver
from tests.worker.test_execute import submit
from worker.delivery import Policy, deliver

LOOPBACK = OutboundPolicy(allow_loopback=True)
POLICY = Policy(timeout=2, max_attempts=3, window=3600, backoff=10, backoff_max=60)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    yield from running_receiver()


@pytest.fixture
def http() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=2) as client:
        yield client


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def setup(store: Store, url: str, secret: str) -> tuple[WebhookStore, str, str]:
    """An endpoint at ``url`` and one background response completed: (hooks, response id,
    delivery id)."""
    hooks = WebhookStore(store)
    hooks.create_endpoint(
        WebhookEndpointRow(
            id="whep_1",
            tenant="t",
            name="test",
            url=url,
            event_types=list(EVENT_TYPES),
            secret=secret,
            created_at=1,
            updated_at=1,
        )
    )
    rid = submit(store, "hi", background=True)
    store.claim(response_id=rid, now=2)
    store.finish(response_id=rid, status=Status.COMPLETED, now=3, output=[])
    (view,), _ = hooks.list_deliveries(tenant="t", endpoint_id="whep_1", after=None, limit=5)
    return hooks, rid, view.delivery.id


def log(hooks: WebhookStore, delivery_id: str) -> DeliveryView:
    view = hooks.get_delivery(tenant="t", endpoint_id="whep_1", delivery_id=delivery_id)
    assert view is not None
    return view


def test_the_sdk_verifies_what_is_sent(
    store: Store, receiver: Receiver, http: httpx.Client
) -> None:
    secret = webhook_sender.new_secret()
    url = receiver.behave("/hook", Behaviour())
    hooks, rid, did = setup(store, url, secret)
    deliver(did, 0, hooks=hooks, client=http, outbound=LOOPBACK, policy=POLICY)

    (got,) = receiver.at("/hook")
    client = openai.OpenAI(api_key="x", webhook_secret=secret)
    event = client.webhooks.unwrap(got.body, got.headers)
    assert isinstance(event, ResponseCompletedWebhookEvent)
    assert event.data.id == rid and event.type == "response.completed" and event.created_at == 3
    assert got.headers["webhook-id"] == did and got.headers["content-type"] == "application/json"
    with pytest.raises(openai.InvalidWebhookSignatureError):
        client.webhooks.unwrap(got.body, got.headers, secret=webhook_sender.new_secret())
    view = log(hooks, did)
    assert view.delivery.status == DELIVERED and view.delivery.delivered_at is not None
    assert [(a.number, a.status_code, a.ok) for a in view.attempts] == [(1, 200, True)]


def test_a_stale_timestamp_is_refused_by_the_sdk(
    store: Store, receiver: Receiver, http: httpx.Client
) -> None:
    secret = webhook_sender.new_secret()
    hooks, _, did = setup(store, receiver.behave("/old", Behaviour()), secret)
    deliver(did, 0, hooks=hooks, client=http, outbound=LOOPBACK, policy=POLICY, clock=Clock(1_000))
    (got,) = receiver.at("/old")
    with pytest.raises(openai.InvalidWebhookSignatureError, match="too old"):
        openai.OpenAI(api_key="x").webhooks.unwrap(got.body, got.headers, secret=secret)


def test_failures_are_retried_with_backoff_and_the_same_webhook_id(
    store: Store, receiver: Receiver, http: httpx.Client
) -> None:
    secret = webhook_sender.new_secret()
    url = receiver.behave("/flaky", Behaviour(statuses=[500, 503]))
    hooks, rid, did = setup(store, url, secret)
    clock = Clock(1_000.0)
    rng = random.Random(7)
    for attempt in range(3):
        deliver(
            did,
            attempt,
            hooks=hooks,
            client=http,
            outbound=LOOPBACK,
            policy=POLICY,
            clock=clock,
            rng=rng,
        )
        view = log(hooks, did)
        if attempt < 2:
            assert view.delivery.status == PENDING
            assert view.delivery.next_attempt_at is not None
            wait = view.delivery.next_attempt_at - clock.now
            ceiling = POLICY.backoff * 2**attempt
            assert ceiling / 2 <= wait <= ceiling  # exponential, jittered in the upper half
            clock.now = view.delivery.next_attempt_at
    got = receiver.at("/flaky")
    assert [r.answered for r in got] == [500, 503, 200]
    assert {r.headers["webhook-id"] for r in got} == {did}
    assert len({r.body for r in got}) == 1  # the same event, byte for byte
    for r in got:  # every attempt is freshly signed
        openai.OpenAI(api_key="x").webhooks.verify_signature(
            r.body, r.headers, secret=secret, tolerance=10**10
        )
    view = log(hooks, did)
    assert view.delivery.status == DELIVERED
    assert [(a.number, a.status_code, a.ok) for a in view.attempts] == [
        (1, 500, False),
        (2, 503, False),
        (3, 200, True),
    ]
    assert view.attempts[0].error == "HTTP 500: receiver says no"


def test_attempts_stop_at_the_limit(store: Store, receiver: Receiver, http: httpx.Client) -> None:
    hooks, _, did = setup(store, receiver.behave("/down", Behaviour(then=502)), "whsec_c2VjcmV0")
    clock = Clock(1_000.0)
    for attempt in range(POLICY.max_attempts + 1):  # one message too many: it does nothing
        deliver(
            did, attempt, hooks=hooks, client=http, outbound=LOOPBACK, policy=POLICY, clock=clock
        )
        clock.now += 100
    assert len(receiver.at("/down")) == POLICY.max_attempts
    view = log(hooks, did)
    assert view.delivery.status == FAILED and view.delivery.next_attempt_at is None
    assert [a.status_code for a in view.attempts] == [502] * POLICY.max_attempts


def test_the_retry_window_ends_retries_early(
    store: Store, receiver: Receiver, http: httpx.Client
) -> None:
    hooks, _, did = setup(store, receiver.behave("/gone", Behaviour(then=500)), "whsec_c2VjcmV0")
    short = Policy(timeout=2, max_attempts=100, window=15, backoff=10, backoff_max=60)
    # created at 3; first attempt at 4; the next would be 5..10 s later, the one after
    # 10..20 s later: past 3 + 15
    clock = Clock(4.0)
    deliver(did, 0, hooks=hooks, client=http, outbound=LOOPBACK, policy=short, clock=clock)
    view = log(hooks, did)
    assert view.delivery.status == PENDING and view.delivery.next_attempt_at is not None
    clock.now = view.delivery.next_attempt_at
    deliver(did, 1, hooks=hooks, client=http, outbound=LOOPBACK, policy=short, clock=clock)
    assert log(hooks, did).delivery.status == FAILED


def test_unreachable_and_refused_receivers_are_logged_as_attempts(
    store: Store, http: httpx.Client
) -> None:
    hooks, _, did = setup(store, "http://127.0.0.1:9/nothing", "whsec_c2VjcmV0")
    clock = Clock(4.0)
    deliver(did, 0, hooks=hooks, client=http, outbound=LOOPBACK, policy=POLICY, clock=clock)
    clock.now += 100
    deliver(did, 1, hooks=hooks, client=http, outbound=OutboundPolicy(), policy=POLICY, clock=clock)
    first, second = log(hooks, did).attempts
    assert first.status_code is None and first.error is not None and "Connect" in first.error
    assert second.error is not None and second.error.startswith("refused:")
    assert "loopback" in second.error


def test_a_redirect_is_not_followed(store: Store, http: httpx.Client) -> None:
    receiver = Receiver().start()
    try:
        hooks, _, did = setup(
            store, receiver.behave("/moved", Behaviour(then=301)), "whsec_c2VjcmV0"
        )
        deliver(did, 0, hooks=hooks, client=http, outbound=LOOPBACK, policy=POLICY)
        (attempt,) = log(hooks, did).attempts
        assert attempt.status_code == 301 and not attempt.ok
    finally:
        receiver.stop()


def test_during_a_rotation_both_secrets_verify(
    store: Store, receiver: Receiver, http: httpx.Client
) -> None:
    old, new = webhook_sender.new_secret(), webhook_sender.new_secret()
    hooks, _, did = setup(store, receiver.behave("/rot", Behaviour()), old)
    hooks.rotate_secret(tenant="t", endpoint_id="whep_1", secret=new, keep_old_until=10**12, now=5)
    deliver(did, 0, hooks=hooks, client=http, outbound=LOOPBACK, policy=POLICY)
    (got,) = receiver.at("/rot")
    assert len(got.headers["webhook-signature"].split()) == 2
    for secret in (old, new):
        openai.OpenAI(api_key="x").webhooks.unwrap(got.body, got.headers, secret=secret)
