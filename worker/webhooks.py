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

from shared import webhooks
from shared.metrics import Recorder
from shared.netpolicy import OutboundPolicy
from shared.settings import Settings
from shared.store.outbox import DELIVERED, FAILED, PENDING
from shared.store.tables import WebhookAttemptRow, WebhookEndpointRow
from shared.store.webhooks import WebhookStore

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
    now = clock()
    claimed = hooks.claim(
        delivery_id=delivery_id,
        attempts=attempts,
        now=now,
        lease=policy.timeout + LEASE_SLACK_SECONDS,
    )
    if claimed is None:
        return  # delivered, failed, held by another attempt, or a stale message
    delivery, event, endpoint = claimed.delivery, claimed.event, claimed.endpoint
    headers = webhooks.signed_headers(
        webhook_id=delivery.id, body=event.body, secrets_=signing_secrets(endpoint, now), now=now
    )
    outcome = webhooks.post(
        client, url=endpoint.url, body=event.body, headers=headers, policy=outbound
    )
    number = delivery.attempts + 1
    ended = clock()
    status, next_at = DELIVERED, None
    if not outcome.ok:
        delay = webhooks.retry_delay(
            number, base=policy.backoff, cap=policy.backoff_max, rng=rng or random.Random()
        )
        out_of_time = ended + delay > delivery.created_at + policy.window
        if number >= policy.max_attempts or out_of_time:
            status = FAILED
        else:
            status, next_at = PENDING, ended + delay
    hooks.record_attempt(
        WebhookAttemptRow(
            delivery_id=delivery.id,
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
        delivery.id,
        event.type,
        event.response_id,
        number,
        endpoint.id,
        outcome.status_code if outcome.ok else outcome.error,
        status,
    )


def sweep(
    *, hooks: WebhookStore, enqueue: Callable[[str, int], None], clock: Callable[[], float]
) -> int:
    due = hooks.take_due(now=clock())
    for delivery_id, attempts in due:
        enqueue(delivery_id, attempts)
    return len(due)
