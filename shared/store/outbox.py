"""The webhook outbox: a background response's terminal status and its webhook event (with
one delivery per subscribed endpoint) are written in one transaction, by ``Store.finish`` and
``Store.cancel``. The event exists exactly when the status does, before anything is sent."""

from __future__ import annotations

import json

from sqlalchemy import bindparam, select
from sqlmodel import Session

from shared import ids
from shared.store.tables import ResponseRow, WebhookDeliveryRow, WebhookEndpointRow, WebhookEventRow

PENDING = "pending"
DELIVERED = "delivered"
FAILED = "failed"

# A queued send holds a delivery this long; if its message is lost the sweep sends it again.
QUEUED_GRACE_SECONDS = 60.0

_ENDPOINTS = WebhookEndpointRow.__table__  # type: ignore[attr-defined]
_ENDPOINTS_OF = select(_ENDPOINTS.c.id, _ENDPOINTS.c.event_types).where(
    _ENDPOINTS.c.tenant == bindparam("tenant")
)


def event_body(*, event_id: str, event_type: str, created_at: int, response_id: str) -> str:
    """The payload OpenAI sends (spec digest 6.1), serialised once and sent byte for byte."""
    return json.dumps(
        {
            "id": event_id,
            "object": "event",
            "created_at": created_at,
            "type": event_type,
            "data": {"id": response_id},
        },
        separators=(",", ":"),
    )


def record_terminal_event(s: Session, *, row: ResponseRow, now: int) -> list[str]:
    """In the caller's transaction: the webhook event for ``row``'s terminal status and a
    delivery for each of its tenant's endpoints subscribed to it. Returns the delivery ids."""
    if not row.background:
        return []
    event_type = f"response.{row.status}"
    # A prebuilt Core select (ids and subscriptions only): it runs for every background
    # response that ends, and nearly always finds nothing to send.
    endpoints = s.connection().execute(_ENDPOINTS_OF, {"tenant": row.tenant}).all()
    subscribed = [endpoint_id for endpoint_id, types in endpoints if event_type in types]
    if not subscribed:
        return []
    event_id = ids.new_id(ids.EVENT)
    s.add(
        WebhookEventRow(
            id=event_id,
            tenant=row.tenant,
            type=event_type,
            response_id=row.id,
            created_at=now,
            body=event_body(
                event_id=event_id, event_type=event_type, created_at=now, response_id=row.id
            ),
        )
    )
    s.flush()  # the event row first: deliveries reference it
    deliveries = [
        WebhookDeliveryRow(
            id=ids.new_id(ids.WEBHOOK_DELIVERY),
            event_id=event_id,
            endpoint_id=endpoint_id,
            tenant=row.tenant,
            status=PENDING,
            created_at=now,
            next_attempt_at=now + QUEUED_GRACE_SECONDS,  # sent at once; swept if lost
        )
        for endpoint_id in subscribed
    ]
    s.add_all(deliveries)
    return [d.id for d in deliveries]
