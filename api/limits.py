"""A create's admission against its tenant's limits (``shared.tenancy``): charged and counted
queued, or refused with OpenAI's 429 (``rate_limit_exceeded``, ``x-ratelimit-*`` headers,
``retry-after``) before anything is stored or queued. The headers go on admitted answers too,
as OpenAI's do. Redis away: a 503, never an unchecked create (limits fail closed).
"""

from __future__ import annotations

import contextlib
import logging
import time
from typing import Any

import redis
from flask import g

from api.deps import Deps
from shared import keys, tokens
from shared.errors import RateLimited, ServiceUnavailable
from shared.model_context import count_method
from shared.routing import Route
from shared.tenancy import Verdict, move_counts

log = logging.getLogger(__name__)

WHAT = {
    "requests": "requests per minute",
    "tokens": "tokens per minute",
    "queued": "background jobs queued",
    "running": "jobs running",
}


def estimate(
    route: Route,
    instructions: str | None,
    items: list[dict[str, Any]],
    tools: list[dict[str, Any]],
    max_output_tokens: int | None,
) -> int:
    """Tokens a create is charged: its input as resq estimates it, plus the most it may
    write (``max_output_tokens``, else the route's); the worker settles with real usage."""
    method = count_method(route)
    return tokens.count(instructions, items, tools, method=method) + (
        max_output_tokens or route.max_output_tokens or 0
    )


def admit(deps: Deps, tenant: str, *, tokens_wanted: int, background: bool) -> Verdict:
    try:
        verdict = deps.limiter.admit(
            tenant, tokens=tokens_wanted, background=background, now=time.time()
        )
    except redis.RedisError as exc:
        log.warning("tenant %s: limits unavailable (Redis): %s", tenant, exc)
        raise ServiceUnavailable(
            "resq cannot check this key's limits right now (Redis is unreachable); nothing "
            "was queued, so the request can be retried."
        ) from exc
    if verdict.refused is not None:
        _count_refusal(deps, tenant, verdict.refused)
        raise refusal(tenant, verdict)
    g.ratelimit_headers = verdict.headers()
    return verdict


def release(deps: Deps, tenant: str) -> None:
    """Undo an admission's ``queued`` count (the create did not queue after all)."""
    with contextlib.suppress(redis.RedisError):  # the reaper sets the counts again anyway
        move_counts(deps.bus.redis, tenant, queued=-1)


def _count_refusal(deps: Deps, tenant: str, limit: str) -> None:
    with contextlib.suppress(redis.RedisError):
        deps.bus.redis.hincrby(keys.RATE_LIMITED, f"{tenant}|{limit}", 1)


def refusal(tenant: str, verdict: Verdict) -> RateLimited:
    limits = verdict.limits
    limit = verdict.refused or "requests"
    headers = verdict.headers()
    wait = verdict.retry_after()
    if limit == "tokens" and verdict.cost > limits.tokens_per_minute:
        headers["x-should-retry"] = "false"
        message = (
            f"Request too large for tokens per minute (tenant '{tenant}'): limit "
            f"{limits.tokens_per_minute}, requested {verdict.cost}. Ask for fewer tokens "
            "(max_output_tokens, a shorter input)."
        )
    elif limit == "requests":
        message = (
            f"Rate limit reached for requests per minute (tenant '{tenant}'): limit "
            f"{limits.requests_per_minute}. Please try again in {wait:.3g}s."
        )
    elif limit == "tokens":
        message = (
            f"Rate limit reached for tokens per minute (tenant '{tenant}'): limit "
            f"{limits.tokens_per_minute}, remaining {max(0, int(verdict.tokens_left))}, "
            f"requested {verdict.cost}. Please try again in {wait:.3g}s."
        )
    elif limit == "queued":
        message = (
            f"Too many background jobs queued (tenant '{tenant}'): limit {limits.queued}. "
            "Try again once some have started."
        )
    else:
        message = (
            f"Too many jobs running (tenant '{tenant}'): limit {limits.running}. Try again "
            "once one has ended, or create the response with background=true to wait in the "
            "queue."
        )
    kind = "tokens" if limit == "tokens" else "requests"
    return RateLimited(message, type_=kind, headers=headers)
