"""Sending one webhook: Standard Webhooks signatures (the ``standardwebhooks`` package), the
headers OpenAI sends (spec digest 6.2), an HTTP POST that follows no redirects, and the retry
schedule. Used by the worker's delivery task and by the API's ``/test`` endpoint."""

from __future__ import annotations

import base64
import random
import secrets
import time
from dataclasses import dataclass
from datetime import UTC, datetime

import httpx
from standardwebhooks.webhooks import Webhook

from shared.errors import InvalidRequest
from shared.netpolicy import OutboundPolicy

SECRET_PREFIX = "whsec_"
USER_AGENT = "resq-webhooks/1.0"
# Receivers should answer quickly; what they send back is not needed beyond its status.
MAX_ERROR_BODY = 200


def new_secret() -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


def secret_hint(secret: str) -> str:
    return f"{SECRET_PREFIX}…{secret[-4:]}"


def signed_headers(
    *, webhook_id: str, body: str, secrets_: list[str], now: float
) -> dict[str, str]:
    """Headers for one attempt. Several secrets (a rotation's overlap) give several
    signatures, space-separated; a receiver with either secret verifies."""
    timestamp = datetime.fromtimestamp(int(now), tz=UTC)
    signatures = " ".join(Webhook(s).sign(webhook_id, timestamp, body) for s in secrets_)
    return {
        "content-type": "application/json",
        "user-agent": USER_AGENT,
        "webhook-id": webhook_id,
        "webhook-timestamp": str(int(now)),
        "webhook-signature": signatures,
    }


@dataclass(frozen=True)
class Outcome:
    ok: bool
    latency_ms: int
    status_code: int | None = None
    error: str | None = None


def post(
    client: httpx.Client, *, url: str, body: str, headers: dict[str, str], policy: OutboundPolicy
) -> Outcome:
    """One attempt. Only a 2xx is success; a redirect is not followed (it is a failure)."""
    started = time.monotonic()

    def took() -> int:
        return int((time.monotonic() - started) * 1000)

    try:
        policy.check_url(url)  # again at send time: DNS may have changed since creation
    except InvalidRequest as exc:
        return Outcome(ok=False, latency_ms=took(), error=f"refused: {exc.message}")
    try:
        request = client.build_request("POST", url, content=body.encode(), headers=headers)
        answer = client.send(request, stream=True, follow_redirects=False)
        try:
            status = answer.status_code
            # At most the start of the body, for the log: a receiver cannot make us read more.
            head = b"" if 200 <= status < 300 else next(answer.iter_raw(MAX_ERROR_BODY), b"")
        finally:
            answer.close()
    except httpx.TimeoutException as exc:
        return Outcome(ok=False, latency_ms=took(), error=f"timeout: {type(exc).__name__}")
    except httpx.HTTPError as exc:
        return Outcome(ok=False, latency_ms=took(), error=f"{type(exc).__name__}: {exc}")
    if 200 <= status < 300:
        return Outcome(ok=True, latency_ms=took(), status_code=status)
    text = head[:MAX_ERROR_BODY].decode("utf-8", "replace")
    return Outcome(ok=False, latency_ms=took(), status_code=status, error=f"HTTP {status}: {text}")


def retry_delay(attempt: int, *, base: float, cap: float, rng: random.Random) -> float:
    """Seconds before the attempt after attempt number ``attempt`` (1-based): exponential,
    capped, with jitter (a uniform pick in the upper half) so receivers coming back from an
    outage are not hit by every retry at once."""
    ceiling = min(cap, base * 2 ** (attempt - 1))
    return rng.uniform(ceiling / 2, ceiling)
