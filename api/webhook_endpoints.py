"""``/v1/webhook_endpoints`` and ``/v1/webhook_event_types``: what ``client.webhooks`` in the
openai SDK (3.x) calls, plus resq's delivery log (``…/{id}/deliveries``). Every endpoint
belongs to the caller's tenant; another tenant's ids are not found."""

from __future__ import annotations

import logging
import time
from typing import Any

import httpx
from flask import Blueprint, Response, g, jsonify, request

from api.body import json_body
from api.deps import Deps, deps
from api.query import list_page, query_int
from shared import ids, webhook_sender
from shared.errors import InvalidRequest, NotFound
from shared.schema import webhooks as schema
from shared.store.outbox import event_body
from shared.store.tables import WebhookAttemptRow, WebhookEndpointRow
from shared.store.webhooks import DeliveryView

log = logging.getLogger(__name__)
bp = Blueprint("webhooks", __name__, url_prefix="/v1")

MAX_LIST_LIMIT = 100
DEFAULT_LIST_LIMIT = 20
KEEP_OLD_SECRET_SECONDS = 24 * 3600


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
        "signing_secret_hint": webhook_sender.secret_hint(row.secret),
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


def _endpoint(d: Deps, endpoint_id: str) -> WebhookEndpointRow:
    row = d.hooks.get_endpoint(tenant=g.tenant, endpoint_id=endpoint_id)
    if row is None:
        raise NotFound(
            f"Webhook endpoint with id '{endpoint_id}' not found.", param="webhook_endpoint_id"
        )
    return row


def _delivery(d: Deps, endpoint_id: str, delivery_id: str) -> DeliveryView:
    _endpoint(d, endpoint_id)
    view = d.hooks.get_delivery(tenant=g.tenant, endpoint_id=endpoint_id, delivery_id=delivery_id)
    if view is None:
        raise NotFound(f"Delivery with id '{delivery_id}' not found.", param="delivery_id")
    return view


@bp.get("/webhook_event_types")
def event_types() -> Response:
    return jsonify({"object": "list", "data": list(schema.EVENT_TYPES)})


@bp.post("/webhook_endpoints")
def create() -> Response:
    d = deps()
    req = schema.parse(schema.CreateEndpoint, json_body())
    d.outbound.check_url(req.url)
    now = int(time.time())
    row = d.hooks.create_endpoint(
        WebhookEndpointRow(
            id=ids.new_id(ids.WEBHOOK_ENDPOINT),
            tenant=g.tenant,
            name=req.name,
            url=req.url,
            event_types=req.event_types,
            secret=webhook_sender.new_secret(),
            created_at=now,
            updated_at=now,
        )
    )
    return jsonify(endpoint_object(row, with_secret=True))


@bp.get("/webhook_endpoints")
def list_endpoints() -> Response:
    d = deps()
    limit = query_int("limit", DEFAULT_LIST_LIMIT, 1, MAX_LIST_LIMIT)
    assert limit is not None
    rows, has_more = d.hooks.list_endpoints(
        tenant=g.tenant, after=request.args.get("after"), limit=limit
    )
    return list_page([endpoint_object(r) for r in rows], has_more)


@bp.get("/webhook_endpoints/<endpoint_id>")
def retrieve(endpoint_id: str) -> Response:
    return jsonify(endpoint_object(_endpoint(deps(), endpoint_id)))


@bp.post("/webhook_endpoints/<endpoint_id>")
def update(endpoint_id: str) -> Response:
    d = deps()
    req = schema.parse(schema.UpdateEndpoint, json_body())
    _endpoint(d, endpoint_id)
    if req.url is not None:
        d.outbound.check_url(req.url)
    changes = req.model_dump(exclude_none=True, include={"name", "url", "event_types"})
    row = d.hooks.update_endpoint(
        tenant=g.tenant, endpoint_id=endpoint_id, changes=changes, now=int(time.time())
    )
    if row is None:  # deleted in between
        _endpoint(d, endpoint_id)
    assert row is not None
    return jsonify(endpoint_object(row))


@bp.delete("/webhook_endpoints/<endpoint_id>")
def delete(endpoint_id: str) -> Response:
    d = deps()
    if not d.hooks.delete_endpoint(tenant=g.tenant, endpoint_id=endpoint_id):
        _endpoint(d, endpoint_id)  # raises the 404
    return jsonify({"id": endpoint_id, "object": "webhook_endpoint.deleted", "deleted": True})


@bp.post("/webhook_endpoints/<endpoint_id>/rotate_secret")
def rotate_secret(endpoint_id: str) -> Response:
    d = deps()
    req = schema.parse(schema.RotateSecret, json_body())
    now = int(time.time())
    keep = now + KEEP_OLD_SECRET_SECONDS if req.keep_old_secret_active_for_24_hours else None
    row = d.hooks.rotate_secret(
        tenant=g.tenant,
        endpoint_id=endpoint_id,
        secret=webhook_sender.new_secret(),
        keep_old_until=keep,
        now=now,
    )
    if row is None:
        _endpoint(d, endpoint_id)
    assert row is not None
    return jsonify(endpoint_object(row, with_secret=True))


@bp.post("/webhook_endpoints/<endpoint_id>/test")
def test(endpoint_id: str) -> Response:
    """Send one sample event now, signed like a real one (its ``data.id`` names no stored
    response), and report what the receiver answered. Not recorded in the delivery log."""
    d = deps()
    req = schema.parse(schema.TestEndpoint, json_body())
    row = _endpoint(d, endpoint_id)
    now = time.time()
    body = event_body(
        event_id=ids.new_id(ids.EVENT),
        event_type=req.event_type,
        created_at=int(now),
        response_id=ids.new_id(ids.RESPONSE),
    )
    headers = webhook_sender.signed_headers(
        webhook_id=ids.new_id(ids.WEBHOOK_DELIVERY),
        body=body,
        secrets_=[row.secret],
        now=now,
    )
    with httpx.Client(timeout=d.settings.webhook_timeout_seconds) as client:
        outcome = webhook_sender.post(
            client, url=row.url, body=body, headers=headers, policy=d.outbound
        )
    if outcome.status_code is None:
        raise InvalidRequest(
            f"The test event could not be delivered to {row.url}: {outcome.error}",
            code="webhook_delivery_failed",
        )
    return jsonify(
        {
            "object": "webhook_endpoint.test",
            "webhook_endpoint_id": row.id,
            "event_type": req.event_type,
            "status_code": outcome.status_code,
            "success": True,
        }
    )


@bp.get("/webhook_endpoints/<endpoint_id>/deliveries")
def deliveries(endpoint_id: str) -> Response:
    d = deps()
    _endpoint(d, endpoint_id)
    limit = query_int("limit", DEFAULT_LIST_LIMIT, 1, MAX_LIST_LIMIT)
    assert limit is not None
    views, has_more = d.hooks.list_deliveries(
        tenant=g.tenant, endpoint_id=endpoint_id, after=request.args.get("after"), limit=limit
    )
    return list_page([delivery_object(v) for v in views], has_more)


@bp.get("/webhook_endpoints/<endpoint_id>/deliveries/<delivery_id>")
def delivery(endpoint_id: str, delivery_id: str) -> Response:
    return jsonify(delivery_object(_delivery(deps(), endpoint_id, delivery_id)))


@bp.post("/webhook_endpoints/<endpoint_id>/deliveries/<delivery_id>/redeliver")
def redeliver(endpoint_id: str, delivery_id: str) -> Response:
    """Send a delivery again now, with the same ``webhook-id`` and body (a failed one gets one
    more attempt; the sweep retries it if this send is lost)."""
    d = deps()
    _delivery(d, endpoint_id, delivery_id)
    view = d.hooks.redeliver(
        tenant=g.tenant, endpoint_id=endpoint_id, delivery_id=delivery_id, now=time.time()
    )
    assert view is not None
    try:
        d.send_delivery(view.delivery.id, view.delivery.attempts)
    except Exception:  # the store has it due: the delivery sweep sends it
        log.warning("delivery %s: could not send it now", view.delivery.id, exc_info=True)
    return jsonify(delivery_object(view))
