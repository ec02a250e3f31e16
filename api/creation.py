"""Creating a response (``POST /v1/responses``): validate, store and queue it, or find the
one an ``Idempotency-Key`` already names."""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass
from typing import Any

from api.capabilities import check_accepts, check_json_schema, check_media
from api.deps import Deps
from api.inputs import Context, check_context
from api.limits import admit, estimate, release
from api.prompt_expansion import Expanded, expand
from api.service import enqueue
from shared import ids, logs
from shared.errors import IdempotencyKeyReused, InvalidRequest, ServerError
from shared.lifecycle import opening_status
from shared.model_context import fit, instructions_text
from shared.routing import Route
from shared.schema.requests import CreateResponseRequest, parse_create_request
from shared.schema.response import echo_params
from shared.schema.tools import Tools, prepare_tools
from shared.secrets import seal
from shared.store import IdempotencyKey
from shared.store.tables import IdempotencyKeyRow, ResponseRow

log = logging.getLogger(__name__)

# A key whose response is deleted between being found and being read is free again: the
# create runs anew. Bounded, so a pathological delete loop cannot spin a request forever.
IDEMPOTENCY_ATTEMPTS = 3


@dataclass(frozen=True)
class Created:
    """What ``create`` answers with: the response, the request as parsed, and whether the
    response is a replay of an earlier request with the same ``Idempotency-Key``."""

    row: ResponseRow
    req: CreateResponseRequest
    replayed: bool = False


def body_hash(body: Any) -> str:
    """SHA-256 of the canonical JSON of a parsed body: key order and spacing do not count."""
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def require_model(model: str | None) -> str:
    """The model: a request with a ``prompt`` may leave it to the prompt's version."""
    if model is None:
        raise InvalidRequest(
            "Missing required parameter: 'model' (neither the request nor its prompt's "
            "version names one).",
            param="model",
            code="missing_required_parameter",
        )
    return model


def create(deps: Deps, body: Any, *, tenant: str, idempotency_key: str | None = None) -> Created:
    """Validate, store and enqueue a new response, or find the one an ``Idempotency-Key``
    already names.

    The key rule (README, "Behaviour worth knowing"): keys are per tenant and live
    ``idempotency_ttl_seconds`` from first use. The same key with the same body (by
    ``body_hash``) creates nothing and enqueues nothing: the original response is the
    answer (``Created.replayed``). The same key with another body is a 409
    ``idempotency_key_reused``. Deleting the response releases its key. The key row is
    written in the response's own transaction, so of two concurrent requests exactly one
    creates the response and the other replays it.
    """
    expanded = expand(deps, body, tenant=tenant)
    req = parse_create_request(expanded.body if expanded else body)
    route = deps.router.resolve(require_model(req.model))
    tools = prepare_tools(req.tools, deps.outbound.check_url)
    context = check_context(
        deps,
        tenant=tenant,
        raw_input=req.input,
        previous_response_id=req.previous_response_id,
        conversation=req.conversation,
    )
    check_media(context.own_items, deps.outbound)
    check_accepts(route, req, context.own_items)
    check_json_schema(req)
    row = _new_row(
        deps, req, route=route, tools=tools, context=context, tenant=tenant, expanded=expanded
    )
    logs.set_fields(response_id=row.id, model=row.model)
    key = None
    if idempotency_key is not None:
        key = IdempotencyKey(
            key=idempotency_key,
            body_hash=body_hash(body),
            now=row.created_at,
            ttl_seconds=deps.settings.idempotency_ttl_seconds,
        )
    wanted = 0
    if deps.limiter.policy.of(tenant).tokens_per_minute:
        wanted = estimate(
            route,
            instructions_text(row.params["instructions"]),
            context.items,
            tools.echo,
            req.max_output_tokens,
        )
        row.params["charged_tokens"] = wanted  # settled with real usage as the run ends
    admit(deps, tenant, tokens_wanted=wanted, background=row.background)
    try:
        created = _store(deps, req, row=row, input_items=context.own_items, key=key)
    except Exception:
        release(deps, tenant)  # nothing was queued after all
        raise
    if created.replayed:
        release(deps, tenant)
    return created


def _new_row(
    deps: Deps,
    req: CreateResponseRequest,
    *,
    route: Route,
    tools: Tools,
    context: Context,
    tenant: str,
    expanded: Expanded | None = None,
) -> ResponseRow:
    """The response's row, once its context is known to fit: with truncation "disabled", a
    context that cannot fit is a 400 now, not a failed run. A prompt's rendered instructions
    (``expanded``) are the Response's instructions."""
    assert req.model is not None
    params = echo_params(
        req, model=req.model, conversation_id=context.conversation_id, tools=tools.tools
    )
    if expanded is not None:
        params.update(instructions=expanded.instructions, validation=expanded.validation)
    fit(
        context.items,
        instructions=instructions_text(params["instructions"]),
        tools=tools.echo,
        route=route,
        truncation=req.truncation,
    )
    return ResponseRow(
        id=ids.new_id(ids.RESPONSE),
        tenant=tenant,
        status=opening_status(bool(req.background)),
        model=req.model,
        background=bool(req.background),
        store=req.store is not False,
        stream=bool(req.stream),
        created_at=int(time.time()),
        enqueued_at=time.time(),
        previous_response_id=req.previous_response_id,
        params=params,
        tool_secrets=(
            seal(deps.settings.secret_key, tools.credentials) if tools.credentials else None
        ),
    )


def _store(
    deps: Deps,
    req: CreateResponseRequest,
    *,
    row: ResponseRow,
    input_items: list[dict[str, Any]],
    key: IdempotencyKey | None,
) -> Created:
    """Store and queue the response, unless a live key already names one (see ``create``)."""
    for _ in range(IDEMPOTENCY_ATTEMPTS):
        holder = deps.store.create_response(row=row, input_items=input_items, idempotency=key)
        if holder is None:
            enqueue(deps, row)
            return Created(row=row, req=req)
        assert key is not None
        original = _original(deps, holder, key)
        if original is not None:
            log.info("response %s: replayed for an Idempotency-Key", original.id)
            return Created(row=original, req=req, replayed=True)
    raise ServerError(
        "The response named by this Idempotency-Key kept being deleted; retry the request.",
    )


def _original(deps: Deps, holder: IdempotencyKeyRow, key: IdempotencyKey) -> ResponseRow | None:
    """The response a live key names, if the body matches; None if it was deleted since
    the key was read (the key went with it)."""
    if holder.body_hash != key.body_hash:
        raise IdempotencyKeyReused(
            f"The Idempotency-Key '{key.key}' was already used with a different request "
            f"body (keys are kept {key.ttl_seconds} s after first use). Use a new key for "
            "a new request.",
            should_retry=False,
        )
    return deps.store.get_response(response_id=holder.response_id, tenant=holder.tenant)
