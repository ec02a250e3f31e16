"""Delivering webhooks: one attempt per task, retries scheduled in the store.

``deliver`` takes a delivery with a lease (so two workers never send the same attempt), signs
and POSTs it, and records the attempt with the delivery's next state in one transaction:
delivered on a 2xx; otherwise pending again after an exponential, jittered delay, or failed
once the attempts or the retry window are used up. ``sweep`` (scheduled by beat) queues what is
due: retries, and first sends whose message was lost.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass

import httpx

from shared import webhook_sender
from shared.metrics import Recorder
from shared.netpolicy import OutboundPolicy
from shared.settings import Settings
from shared.store.outbox import DELIVERED, FAILED, PENDING
from shared.store.tables import WebhookAttemptRow, WebhookDeliveryRow, WebhookEndpointRow
from shared.store.webhooks import Claimed, WebhookStore

log = logging.getLogger(__name__)

# Beyond the HTTP timeout, how long a taken delivery stays taken if its worker dies mid-send.
LEASE_SLACK_SECONDS = 30.0


@dataclass(frozen=True)
class Policy:
    timeout: float
    max_attempts: int
    window: float
    backoff: float
    backoff_max: float

    @classmethod
    def from_settings(cls, settings: Settings) -> Policy:
        return cls(
            timeout=settings.webhook_timeout_seconds,
            max_attempts=settings.webhook_max_attempts,
            window=settings.webhook_retry_window_seconds,
            backoff=settings.webhook_backoff_seconds,
            backoff_max=settings.webhook_backoff_max_seconds,
        )


def signing_secrets(endpoint: WebhookEndpointRow, now: float) -> list[str]:
    """The current secret, and the previous one while a rotation keeps it."""
    found = [endpoint.secret]
    if endpoint.old_secret and endpoint.old_secret_until and now < endpoint.old_secret_until:
        found.append(endpoint.old_secret)
    return found


def deliver(
    delivery_id: str,
    attempts: int,
    *,
    hooks: WebhookStore,
    client: httpx.Client,
    outbound: OutboundPolicy,
    policy: Policy,
    rng: random.Random | None = None,
    clock: Callable[[], float] = time.time,
    metrics: Recorder | None = None,
) -> None:
    """One attempt of a delivery (``attempts`` is the count its message was queued with)."""
    now = clock()
    claimed = hooks.claim(
        delivery_id=delivery_id,
        attempts=attempts,
        now=now,
        lease=policy.timeout + LEASE_SLACK_SECONDS,
    )
    if claimed is None:
        return  # delivered, failed, held by another attempt, or a stale message
    outcome = _send(claimed, client=client, outbound=outbound, now=now)
    number = claimed.delivery.attempts + 1
    ended = clock()
    status, next_at = _next_state(
        claimed.delivery, number, outcome, ended=ended, policy=policy, rng=rng
    )
    hooks.record_attempt(
        WebhookAttemptRow(
            delivery_id=claimed.delivery.id,
            number=number,
            started_at=now,
            latency_ms=outcome.latency_ms,
            status_code=outcome.status_code,
            error=outcome.error,
            ok=outcome.ok,
        ),
        status=status,
        next_attempt_at=next_at,
        delivered_at=int(ended) if outcome.ok else None,
    )
    if metrics is not None:
        metrics.webhook({DELIVERED: "delivered", FAILED: "failed"}.get(status, "retry"))
    log.info(
        "webhook %s (%s for %s) attempt %d to %s: %s -> %s",
        claimed.delivery.id,
        claimed.event.type,
        claimed.event.response_id,
        number,
        claimed.endpoint.id,
        outcome.status_code if outcome.ok else outcome.error,
        status,
    )


def _send(
    claimed: Claimed, *, client: httpx.Client, outbound: OutboundPolicy, now: float
) -> webhook_sender.Outcome:
    """Sign the event's body for the endpoint and POST it, once."""
    body, endpoint = claimed.event.body, claimed.endpoint
    headers = webhook_sender.signed_headers(
        webhook_id=claimed.delivery.id,
        body=body,
        secrets_=signing_secrets(endpoint, now),
        now=now,
    )
    return webhook_sender.post(
        client, url=endpoint.url, body=body, headers=headers, policy=outbound
    )


def _next_state(
    delivery: WebhookDeliveryRow,
    number: int,
    outcome: webhook_sender.Outcome,
    *,
    ended: float,
    policy: Policy,
    rng: random.Random | None,
) -> tuple[str, float | None]:
    """The delivery's state after attempt ``number``: delivered on success; else pending
    again after the backoff, or failed once the attempts or the retry window are used up.
    Returns (status, when the next attempt is due)."""
    if outcome.ok:
        return DELIVERED, None
    delay = webhook_sender.retry_delay(
        number, base=policy.backoff, cap=policy.backoff_max, rng=rng or random.Random()
    )
    out_of_time = ended + delay > delivery.created_at + policy.window
    if number >= policy.max_attempts or out_of_time:
        return FAILED, None
    return PENDING, ended + delay


def sweep(
    *, hooks: WebhookStore, enqueue: Callable[[str, int], None], clock: Callable[[], float]
) -> int:
    due = hooks.take_due(now=clock())
    for delivery_id, attempts in due:
        enqueue(delivery_id, attempts)
    return len(due)
