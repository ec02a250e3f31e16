"""Webhook storage on SQLite and Postgres: the outbox written with the terminal status,
tenant scoping, leases, due sends, the delivery log."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import Engine
from sqlmodel import Session, col, select

from shared.schema.response import Status
from shared.store import Store
from shared.store.outbox import DELIVERED, PENDING, QUEUED_GRACE_SECONDS
from shared.store.tables import (
    WebhookAttemptRow,
    WebhookDeliveryRow,
    WebhookEndpointRow,
    WebhookEventRow,
)
from shared.store.webhooks import WebhookStore
from tests.shared.test_store import T0, create

ALL = ["response.completed", "response.failed", "response.cancelled", "response.incomplete"]


def endpoint(
    hooks: WebhookStore,
    endpoint_id: str,
    *,
    tenant: str = "tenant-a",
    types: list[str] | None = None,
    created_at: int = T0,
) -> WebhookEndpointRow:
    return hooks.create_endpoint(
        WebhookEndpointRow(
            id=endpoint_id,
            tenant=tenant,
            name=endpoint_id,
            url=f"https://example.com/{endpoint_id}",
            event_types=types if types is not None else ALL,
            secret="whsec_c2VjcmV0",
            created_at=created_at,
            updated_at=created_at,
        )
    )


def run_to(store: Store, response_id: str, status: Status, *, now: int = T0 + 5) -> None:
    assert store.claim(response_id=response_id, now=T0 + 1) is not None
    store.finish(response_id=response_id, status=status, now=now, output=[])


def deliveries(engine: Engine) -> list[WebhookDeliveryRow]:
    with Session(engine) as s:
        return list(s.exec(select(WebhookDeliveryRow).order_by(col(WebhookDeliveryRow.id))).all())


def events(engine: Engine) -> list[WebhookEventRow]:
    with Session(engine) as s:
        return list(s.exec(select(WebhookEventRow)).all())


@pytest.fixture
def hooks(store: Store) -> WebhookStore:
    return WebhookStore(store)


@pytest.mark.parametrize("status", [Status.COMPLETED, Status.FAILED, Status.INCOMPLETE])
def test_a_finished_background_response_writes_its_event_with_the_status(
    store: Store, hooks: WebhookStore, engine: Engine, status: Status
) -> None:
    announced: list[list[str]] = []
    store.on_deliveries = announced.append
    endpoint(hooks, "whep_1")
    create(store, "resp_1")
    run_to(store, "resp_1", status, now=T0 + 7)

    (event,) = events(engine)
    assert (event.type, event.response_id, event.tenant) == (
        f"response.{status}",
        "resp_1",
        "tenant-a",
    )
    assert json.loads(event.body) == {
        "id": event.id,
        "object": "event",
        "created_at": T0 + 7,
        "type": f"response.{status}",
        "data": {"id": "resp_1"},
    }
    (delivery,) = deliveries(engine)
    assert (delivery.endpoint_id, delivery.status, delivery.attempts) == ("whep_1", PENDING, 0)
    assert announced == [[delivery.id]]  # after the commit, for an immediate send


def test_a_cancel_writes_response_cancelled_and_a_late_finish_writes_nothing(
    store: Store, hooks: WebhookStore, engine: Engine
) -> None:
    endpoint(hooks, "whep_1")
    create(store, "resp_1")
    assert store.claim(response_id="resp_1", now=T0 + 1) is not None
    assert store.cancel(response_id="resp_1", now=T0 + 2) == Status.IN_PROGRESS.value
    # the worker's own finish arrives after the cancel: the status stays, no second event
    store.finish(response_id="resp_1", status=Status.COMPLETED, now=T0 + 3, output=[])
    # and the worker, seeing the cancel, stores what it had: the same status, no event
    kept = store.finish(
        response_id="resp_1",
        status=Status.CANCELLED,
        now=T0 + 3,
        output=[],
        usage={"input_tokens": 1, "output_tokens": 0, "total_tokens": 1},
        from_statuses=(Status.IN_PROGRESS.value, Status.CANCELLED.value),
    )
    assert kept is not None and kept.status == "cancelled" and kept.usage is not None
    assert [e.type for e in events(engine)] == ["response.cancelled"]
    assert store.cancel(response_id="resp_1", now=T0 + 4) is None
    assert len(deliveries(engine)) == 1


def test_only_subscribed_endpoints_of_the_same_tenant_for_background_responses(
    store: Store, hooks: WebhookStore, engine: Engine
) -> None:
    endpoint(hooks, "whep_a_all")
    endpoint(hooks, "whep_a_failed_only", types=["response.failed"])
    endpoint(hooks, "whep_b", tenant="tenant-b")
    create(store, "resp_bg")
    create(store, "resp_fg", body={"model": "m", "input": "hi"})  # not background
    run_to(store, "resp_bg", Status.COMPLETED)
    run_to(store, "resp_fg", Status.COMPLETED)
    assert [d.endpoint_id for d in deliveries(engine)] == ["whep_a_all"]
    assert [e.response_id for e in events(engine)] == ["resp_bg"]


def test_no_endpoint_no_event(store: Store, engine: Engine) -> None:
    create(store, "resp_1")
    run_to(store, "resp_1", Status.COMPLETED)
    assert events(engine) == [] and deliveries(engine) == []


def test_a_failing_announcement_does_not_undo_the_commit(
    store: Store, hooks: WebhookStore, engine: Engine
) -> None:
    def broken(_: list[str]) -> None:
        raise ConnectionError("redis is away")

    store.on_deliveries = broken
    endpoint(hooks, "whep_1")
    create(store, "resp_1")
    run_to(store, "resp_1", Status.COMPLETED)
    assert store.get_response(response_id="resp_1") is not None
    assert store.get_response(response_id="resp_1").status == "completed"  # type: ignore[union-attr]
    (delivery,) = deliveries(engine)
    # the sweep sends it once the grace for an immediate send has passed
    assert hooks.take_due(now=T0 + 5 + QUEUED_GRACE_SECONDS - 1) == []
    assert hooks.take_due(now=T0 + 5 + QUEUED_GRACE_SECONDS) == [(delivery.id, 0)]


def test_claim_takes_a_delivery_once_and_ignores_stale_messages(
    store: Store, hooks: WebhookStore, engine: Engine
) -> None:
    endpoint(hooks, "whep_1")
    create(store, "resp_1")
    run_to(store, "resp_1", Status.COMPLETED)
    (d,) = deliveries(engine)
    claimed = hooks.claim(delivery_id=d.id, attempts=0, now=100.0, lease=10)
    assert claimed is not None and claimed.endpoint.id == "whep_1"
    assert hooks.claim(delivery_id=d.id, attempts=0, now=101.0, lease=10) is None  # held
    hooks.record_attempt(
        WebhookAttemptRow(delivery_id=d.id, number=1, started_at=100.0, latency_ms=5, ok=False),
        status=PENDING,
        next_attempt_at=200.0,
        delivered_at=None,
    )
    assert hooks.claim(delivery_id=d.id, attempts=0, now=102.0, lease=10) is None  # stale
    assert hooks.take_due(now=199.0) == []
    assert hooks.take_due(now=200.0) == [(d.id, 1)]
    assert hooks.take_due(now=201.0) == []  # pushed ahead while its send is queued
    assert hooks.claim(delivery_id=d.id, attempts=1, now=201.0, lease=10) is not None


def test_a_lease_of_a_dead_sender_expires(
    store: Store, hooks: WebhookStore, engine: Engine
) -> None:
    endpoint(hooks, "whep_1")
    create(store, "resp_1")
    run_to(store, "resp_1", Status.COMPLETED)
    (d,) = deliveries(engine)
    assert hooks.claim(delivery_id=d.id, attempts=0, now=100.0, lease=10) is not None
    assert hooks.claim(delivery_id=d.id, attempts=0, now=109.0, lease=10) is None
    assert hooks.claim(delivery_id=d.id, attempts=0, now=111.0, lease=10) is not None


def test_delivery_log_and_redelivery(store: Store, hooks: WebhookStore, engine: Engine) -> None:
    endpoint(hooks, "whep_1")
    for n in range(3):
        create(store, f"resp_{n}")
        run_to(store, f"resp_{n}", Status.COMPLETED, now=T0 + 10 + n)
    page, more = hooks.list_deliveries(tenant="tenant-a", endpoint_id="whep_1", after=None, limit=2)
    assert more and [v.event.response_id for v in page] == ["resp_2", "resp_1"]
    rest, more = hooks.list_deliveries(
        tenant="tenant-a", endpoint_id="whep_1", after=page[-1].delivery.id, limit=2
    )
    assert not more and [v.event.response_id for v in rest] == ["resp_0"]
    assert hooks.list_deliveries(tenant="tenant-b", endpoint_id="whep_1", after=None, limit=5) == (
        [],
        False,
    )

    d = rest[0].delivery
    assert hooks.claim(delivery_id=d.id, attempts=0, now=100.0, lease=10) is not None
    hooks.record_attempt(
        WebhookAttemptRow(
            delivery_id=d.id, number=1, started_at=100.0, latency_ms=3, status_code=204, ok=True
        ),
        status=DELIVERED,
        next_attempt_at=None,
        delivered_at=100,
    )
    view = hooks.get_delivery(tenant="tenant-a", endpoint_id="whep_1", delivery_id=d.id)
    assert view is not None and view.delivery.status == DELIVERED
    assert [(a.number, a.status_code, a.ok) for a in view.attempts] == [(1, 204, True)]
    assert hooks.get_delivery(tenant="tenant-b", endpoint_id="whep_1", delivery_id=d.id) is None

    again = hooks.redeliver(tenant="tenant-a", endpoint_id="whep_1", delivery_id=d.id, now=300.0)
    assert again is not None and again.delivery.status == PENDING
    assert hooks.claim(delivery_id=d.id, attempts=1, now=300.0, lease=10) is not None


def test_endpoints_are_listed_newest_first_per_tenant_and_deleted_with_their_log(
    store: Store, hooks: WebhookStore, engine: Engine
) -> None:
    for n in range(3):
        endpoint(hooks, f"whep_{n}", created_at=T0 + n)
    endpoint(hooks, "whep_b", tenant="tenant-b")
    rows, more = hooks.list_endpoints(tenant="tenant-a", after=None, limit=2)
    assert [r.id for r in rows] == ["whep_2", "whep_1"] and more
    rows, more = hooks.list_endpoints(tenant="tenant-a", after="whep_1", limit=2)
    assert [r.id for r in rows] == ["whep_0"] and not more
    assert hooks.get_endpoint(tenant="tenant-b", endpoint_id="whep_0") is None

    changed = hooks.update_endpoint(
        tenant="tenant-a", endpoint_id="whep_0", changes={"name": "renamed"}, now=T0 + 50
    )
    assert changed is not None and (changed.name, changed.updated_at) == ("renamed", T0 + 50)
    same = hooks.update_endpoint(
        tenant="tenant-a", endpoint_id="whep_0", changes={"name": "renamed"}, now=T0 + 60
    )
    assert same is not None and same.updated_at == T0 + 50  # unchanged: not advanced

    create(store, "resp_1")
    run_to(store, "resp_1", Status.COMPLETED)
    assert len(deliveries(engine)) == 3
    assert not hooks.delete_endpoint(tenant="tenant-b", endpoint_id="whep_0")
    assert hooks.delete_endpoint(tenant="tenant-a", endpoint_id="whep_0")
    assert {d.endpoint_id for d in deliveries(engine)} == {"whep_1", "whep_2"}
    assert len(events(engine)) == 1  # the event stays for the other endpoints


def test_rotation_keeps_the_old_secret_only_when_asked(store: Store, hooks: WebhookStore) -> None:
    endpoint(hooks, "whep_1")
    kept = hooks.rotate_secret(
        tenant="tenant-a", endpoint_id="whep_1", secret="whsec_bmV3", keep_old_until=999, now=1
    )
    assert kept is not None
    assert (kept.secret, kept.old_secret, kept.old_secret_until) == (
        "whsec_bmV3",
        "whsec_c2VjcmV0",
        999,
    )
    dropped = hooks.rotate_secret(
        tenant="tenant-a", endpoint_id="whep_1", secret="whsec_bmV3ZXI=", keep_old_until=None, now=2
    )
    assert dropped is not None and dropped.old_secret is None
