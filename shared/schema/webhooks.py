"""Webhook endpoint requests and objects, in the shapes the openai SDK (3.x) speaks
(``openai.types.webhooks``). Unknown request fields are ignored, as for responses (spec
digest 3: SDKs add fields before servers know them)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from shared.schema.validation import custom_error, parse_body
from shared.store.tables import WebhookAttemptRow, WebhookEndpointRow
from shared.store.webhooks import DeliveryView
from shared.webhooks import EVENT_TYPES, secret_hint

MAX_NAME = 256
MAX_URL = 2048


def _check_event_types(value: list[str], param: str = "event_types") -> list[str]:
    if not value:
        raise custom_error(
            "invalid_value", f"Invalid '{param}': expected at least one event type.", param
        )
    unknown = [v for v in value if v not in EVENT_TYPES]
    if unknown:
        raise custom_error(
            "invalid_value",
            f"Invalid value: {unknown[0]!r} is not an event type this server sends. "
            f"Supported values are: {', '.join(repr(t) for t in EVENT_TYPES)}.",
            param,
        )
    return list(dict.fromkeys(value))  # in order, without repeats


class _Request(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore")


class CreateEndpoint(_Request):
    name: str = Field(min_length=1, max_length=MAX_NAME)
    url: str = Field(min_length=1, max_length=MAX_URL)
    event_types: list[str]

    _event_types = field_validator("event_types")(_check_event_types)


class UpdateEndpoint(_Request):
    name: str | None = Field(default=None, min_length=1, max_length=MAX_NAME)
    url: str | None = Field(default=None, min_length=1, max_length=MAX_URL)
    event_types: list[str] | None = None

    @field_validator("event_types")
    @classmethod
    def _types(cls, value: list[str] | None) -> list[str] | None:
        return None if value is None else _check_event_types(value)


class RotateSecret(_Request):
    keep_old_secret_active_for_24_hours: bool = False


class TestEndpoint(_Request):
    event_type: str

    @field_validator("event_type")
    @classmethod
    def _type(cls, value: str) -> str:
        return _check_event_types([value], "event_type")[0]


parse = parse_body


def endpoint_object(row: WebhookEndpointRow, *, with_secret: bool = False) -> dict[str, Any]:
    """``WebhookEndpoint``, or ``WebhookEndpointWithSecret`` right after creation or rotation
    (the only times the secret is shown)."""
    shown: dict[str, Any] = {
        "id": row.id,
        "object": "webhook_endpoint",
        "name": row.name,
        "url": row.url,
        "event_types": list(row.event_types),
        "created_at": row.created_at,
        "updated_at": row.updated_at,
        "signing_secret_hint": secret_hint(row.secret),
    }
    if with_secret:
        shown["signing_secret"] = row.secret
    return shown


def attempt_object(row: WebhookAttemptRow) -> dict[str, Any]:
    return {
        "number": row.number,
        "attempted_at": int(row.started_at),
        "status_code": row.status_code,
        "latency_ms": row.latency_ms,
        "success": row.ok,
        "error": row.error,
    }


def delivery_object(view: DeliveryView) -> dict[str, Any]:
    """A resq extension (``/v1/webhook_endpoints/{id}/deliveries``): one event sent to one
    endpoint, with every attempt. ``id`` is the ``webhook-id`` header the receiver saw."""
    d, event = view.delivery, view.event
    return {
        "id": d.id,
        "object": "webhook_endpoint.delivery",
        "webhook_endpoint_id": d.endpoint_id,
        "event_id": event.id,
        "event_type": event.type,
        "response_id": event.response_id,
        "status": d.status,
        "created_at": d.created_at,
        "delivered_at": d.delivered_at,
        "next_attempt_at": (
            int(d.next_attempt_at) if d.status == "pending" and d.next_attempt_at else None
        ),
        "attempts": [attempt_object(a) for a in view.attempts],
    }
