"""What the response endpoints do, between parsing and serialising."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from dataclasses import dataclass
from typing import Any

import httpx
import redis

from api.context import Deps
from shared import ids, logs, tokens
from shared.bus import StoredEvent
from shared.context import (
    COMPACTION_INSTRUCTIONS,
    COMPACTION_PROMPT,
    count_method,
    decode_compaction,
    encode_compaction,
    fit,
    history,
    invalid_compaction,
    model_items,
    previous_not_found,
    text_message,
)
from shared.errors import (
    IdempotencyKeyReused,
    InvalidRequest,
    NotFound,
    ServerError,
    ServiceUnavailable,
)
from shared.lifecycle import close_log
from shared.queue import queue_for
from shared.routing import Route
from shared.schema.items import ensure_id, normalize_input
from shared.schema.requests import (
    CompactRequest,
    CreateResponseRequest,
    InputTokensRequest,
    parse_create_request,
)
from shared.schema.response import TERMINAL_STATUSES, Status, echo_params
from shared.schema.tools import prepare_tools
from shared.schema.validation import parse_body
from shared.secrets import seal
from shared.store.conversations import ConversationStore
from shared.store.repo import IdempotencyKey
from shared.store.tables import IdempotencyKeyRow, ResponseRow

log = logging.getLogger(__name__)

# Parameters accepted by the wire schema whose features this server does not run yet: a
# clear 400 rather than silently ignoring what the client asked for.
NOT_YET_SUPPORTED = ("prompt",)
DB_RECHECK_SECONDS = 2.0
# A key whose response is deleted between being found and being read is free again: the
# create runs anew. Bounded, so a pathological delete loop cannot spin a request forever.
IDEMPOTENCY_ATTEMPTS = 3
TOKENIZE_TIMEOUT_SECONDS = 10.0


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


def _check_supported(req: CreateResponseRequest) -> None:
    for name in NOT_YET_SUPPORTED:
        if getattr(req, name) is not None:
            raise InvalidRequest(
                f"Unsupported parameter: '{name}' is not supported by this resq server yet.",
                param=name,
                code="unsupported_parameter",
            )


def _check_answers(inherited: list[dict[str, Any]], own: list[dict[str, Any]]) -> None:
    """Tool outputs and approval answers in the input must answer something in the context."""
    context = inherited + own
    calls = {i.get("call_id") for i in context if i["type"] == "function_call"}
    requests = {i.get("id") for i in context if i["type"] == "mcp_approval_request"}
    for item in own:
        if item["type"] == "function_call_output" and item.get("call_id") not in calls:
            raise InvalidRequest(
                f"No tool call found for function call output with call_id {item.get('call_id')}.",
                param="input",
            )
        if item["type"] == "mcp_approval_response" and (
            item.get("approval_request_id") not in requests
        ):
            raise InvalidRequest(
                "No MCP approval request found with id "
                f"{item.get('approval_request_id')} for this approval response.",
                param="input",
            )


def resolve_items(
    deps: Deps, tenant: str, items: list[dict[str, Any]], name: str = "input"
) -> list[dict[str, Any]]:
    """Normalised items ready to store: ids assigned, item references replaced by the items
    they name, compaction items checked to be this server's."""
    resolved = []
    for i, item in enumerate(items):
        if item["type"] == "item_reference":
            found = deps.store.find_item(tenant=tenant, item_id=item["id"])
            if found is None:
                raise InvalidRequest(
                    f"Item with id '{item['id']}' not found.",
                    param=f"{name}[{i}]",
                    code="item_not_found",
                )
            item = found
        elif item["type"] == "compaction" and decode_compaction(item["encrypted_content"]) is None:
            raise invalid_compaction(f"{name}[{i}]")
        resolved.append(ensure_id(item))
    return resolved


def conversation_id(value: Any) -> str | None:
    """The id in ``conversation`` (``"conv_…"`` or ``{"id": "conv_…"}``)."""
    if isinstance(value, dict):
        value = value.get("id")
        if not isinstance(value, str):
            raise InvalidRequest(
                "Missing required parameter: 'conversation.id'.",
                param="conversation.id",
                code="missing_required_parameter",
            )
    return value


@dataclass(frozen=True)
class Context:
    """A request's context as the API checked it: its own input items (ids assigned,
    references resolved) and everything the model would see (history first)."""

    conversation_id: str | None
    inherited: list[dict[str, Any]]
    own_items: list[dict[str, Any]]
    items: list[dict[str, Any]]


def check_context(
    deps: Deps,
    *,
    tenant: str,
    raw_input: Any,
    previous_response_id: str | None,
    conversation: Any = None,
) -> Context:
    """Check what a request continues, and assemble its context (``shared.context``). The
    worker assembles it again when it runs (a conversation may have grown meanwhile)."""
    conv_id = conversation_id(conversation)
    if previous_response_id is not None and conv_id is not None:
        raise InvalidRequest(
            "'previous_response_id' and 'conversation' cannot be used together: a response "
            "continues either a previous response or a conversation.",
            param="conversation",
            code="invalid_request",
        )
    if previous_response_id is not None:
        previous = deps.store.get_response(response_id=previous_response_id, tenant=tenant)
        if previous is None or not previous.store:
            raise previous_not_found(previous_response_id)
        if previous.status not in TERMINAL_STATUSES:
            raise InvalidRequest(
                f"Previous response with id '{previous_response_id}' is still "
                f"{previous.status}. Continue from it once it has ended (poll it, or stream "
                "it to its end).",
                param="previous_response_id",
                code="previous_response_in_progress",
            )
    if conv_id is not None and (
        ConversationStore(deps.store).get(tenant=tenant, conversation_id=conv_id) is None
    ):
        raise NotFound(f"Conversation with id '{conv_id}' not found.", param="conversation")
    own = resolve_items(deps, tenant, normalize_input(raw_input))
    inherited = history(
        deps.store, previous_response_id=previous_response_id, conversation_id=conv_id
    )
    _check_answers(inherited, own)
    return Context(
        conversation_id=conv_id,
        inherited=inherited,
        own_items=own,
        items=model_items(inherited + own),
    )


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
    req = parse_create_request(body)
    _check_supported(req)
    assert req.model is not None
    route = deps.router.resolve(req.model)
    tools = prepare_tools(req.tools, deps.outbound.check_url)
    context = check_context(
        deps,
        tenant=tenant,
        raw_input=req.input,
        previous_response_id=req.previous_response_id,
        conversation=req.conversation,
    )
    # With truncation "disabled", a context that cannot fit is a 400 now, not a failed run.
    fit(
        context.items,
        instructions=req.instructions,
        tools=tools.echo,
        route=route,
        truncation=req.truncation,
    )
    input_items = context.own_items
    now = int(time.time())
    row = ResponseRow(
        id=ids.new_id(ids.RESPONSE),
        tenant=tenant,
        status=(Status.QUEUED if req.background else Status.IN_PROGRESS).value,
        model=req.model,
        background=bool(req.background),
        store=req.store is not False,
        stream=bool(req.stream),
        created_at=now,
        enqueued_at=time.time(),
        previous_response_id=req.previous_response_id,
        params=echo_params(
            req, model=req.model, conversation_id=context.conversation_id, tools=tools.echo
        ),
        tool_secrets=(
            seal(deps.settings.secret_key, tools.credentials) if tools.credentials else None
        ),
    )
    logs.set_fields(response_id=row.id, model=row.model)
    key = None
    if idempotency_key is not None:
        key = IdempotencyKey(
            key=idempotency_key,
            body_hash=body_hash(body),
            now=now,
            ttl_seconds=deps.settings.idempotency_ttl_seconds,
        )
    for _ in range(IDEMPOTENCY_ATTEMPTS):
        holder = deps.store.create_response(row=row, input_items=input_items, idempotency=key)
        if holder is None:
            _enqueue(deps, row)
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


def send(deps: Deps, row: ResponseRow) -> None:
    """Queue a stored response (again), on the queue its service tier picks."""
    deps.enqueue(row.id, queue_for(row.params.get("service_tier")))


def _enqueue(deps: Deps, row: ResponseRow) -> None:
    try:
        send(deps, row)
    except Exception as exc:
        log.exception("response %s: could not enqueue; removing it", row.id)
        # Deleting the response deletes its Idempotency-Key row too: a retry can succeed.
        deps.store.delete_response(response_id=row.id, tenant=row.tenant)
        raise ServiceUnavailable(
            "resq could not queue the response (the broker is unreachable); nothing was "
            "queued, so the request can be retried."
        ) from exc
    log.info("response %s: queued (model=%s background=%s)", row.id, row.model, row.background)


def get_row(deps: Deps, response_id: str, *, tenant: str) -> ResponseRow:
    row = deps.store.get_response(response_id=response_id, tenant=tenant)
    if row is None or not row.store:
        raise NotFound(f"Response with id '{response_id}' not found.", param="response_id")
    return row


def check_replayable(deps: Deps, row: ResponseRow) -> None:
    """A finished response whose event log has expired cannot be streamed again."""
    if row.status in TERMINAL_STATUSES and deps.bus.last(row.id) is None:
        raise InvalidRequest(
            f"The event stream of response '{row.id}' has expired (it is kept "
            f"{deps.settings.event_ttl_seconds} s after its last event); retrieve the "
            "response without stream=true.",
            param="stream",
            code="stream_expired",
        )


def wait_for_end(deps: Deps, row: ResponseRow) -> str:
    """Block until the response's terminal event; return the final Response as JSON text
    (taken from the event as stored, not decoded and encoded again)."""
    deadline = time.monotonic() + deps.settings.sync_timeout_seconds
    after = -1
    next_db_check = time.monotonic() + DB_RECHECK_SECONDS
    while time.monotonic() < deadline:
        events = deps.bus.read(row.id, after=after, block_ms=1000)
        for event in events:
            after = event.sequence_number
            if event.terminal:
                return event.response_json()
        if time.monotonic() >= next_db_check:
            next_db_check = time.monotonic() + DB_RECHECK_SECONDS
            current = deps.store.get_response(response_id=row.id)
            if current is None:
                # A store=false response is deleted as it ends: its terminal event, written
                # just before, may have landed since the read above.
                for event in deps.bus.read(row.id, after=after):
                    if event.terminal:
                        return event.response_json()
                raise NotFound(
                    f"Response with id '{row.id}' not found.",
                    param="response_id",
                    should_retry=False,
                )
            if current.status in TERMINAL_STATUSES and not events:
                return json.dumps(deps.store.render(current), separators=(",", ":"))
    raise ServerError(
        f"Response '{row.id}' did not finish within {deps.settings.sync_timeout_seconds:g} s; "
        "it is still running. Poll GET /v1/responses/{id}.",
        should_retry=False,
    )


def cancel(deps: Deps, response_id: str, *, tenant: str) -> dict[str, Any]:
    row = get_row(deps, response_id, tenant=tenant)
    if not row.background:
        raise InvalidRequest(
            "Only responses created with background=true can be cancelled.",
            param="response_id",
            code="invalid_request",
        )
    if row.status in TERMINAL_STATUSES:
        return deps.store.render(row)
    cancel_any(deps, row)
    return deps.store.render(get_row(deps, response_id, tenant=tenant))


def cancel_any(deps: Deps, row: ResponseRow) -> None:
    """Cancel a response that has not ended (any kind: operators may stop sync ones too)."""
    previous = deps.store.cancel(response_id=row.id, now=int(time.time()))
    try:
        deps.bus.request_cancel(row.id)
    except redis.RedisError as exc:
        # The store says cancelled, and no run overwrites that; the answer says so too. A
        # running job stops once it can read Redis again (its flag is set on the next cancel)
        # or ends as cancelled in the store whatever it finishes with.
        log.warning("response %s: cancelled; Redis unavailable to tell the worker: %s", row.id, exc)
        return
    if previous == Status.IN_PROGRESS:
        _await_worker_stop(deps, row.id)
    elif previous == Status.QUEUED:
        _log_cancelled_before_start(deps, row.id)
        deps.metrics.finished(model=row.model, status=Status.CANCELLED.value)
    log.info("response %s: cancelled (was %s)", row.id, previous)


def _log_cancelled_before_start(deps: Deps, response_id: str) -> None:
    """A job cancelled while queued never runs, so no worker will write its event log; the
    API now owns the response (the conditional UPDATE made it so) and ends the log, so a
    stream waiting on it ends with a terminal event like any other."""
    row = deps.store.get_response(response_id=response_id)
    if row is not None:
        close_log(deps.store, deps.bus, row)


def _await_worker_stop(deps: Deps, response_id: str) -> None:
    """Give the running job a moment to persist its partial output."""
    last: StoredEvent | None = deps.bus.last(response_id)
    if last is not None and last.terminal:
        return
    after = last.sequence_number if last else -1
    deadline = time.monotonic() + deps.settings.cancel_wait_seconds
    while time.monotonic() < deadline:
        for event in deps.bus.read(response_id, after=after, block_ms=200):
            after = event.sequence_number
            if event.terminal:
                return
    log.warning(
        "response %s: worker did not confirm the cancel within %.1f s",
        response_id,
        deps.settings.cancel_wait_seconds,
    )


def delete(deps: Deps, response_id: str, *, tenant: str) -> dict[str, Any]:
    row = get_row(deps, response_id, tenant=tenant)
    if row.status not in TERMINAL_STATUSES:
        deps.store.cancel(response_id=row.id, now=int(time.time()))
        deps.bus.request_cancel(row.id)
    deps.store.delete_response(response_id=row.id, tenant=tenant)
    return {"id": row.id, "object": "response", "deleted": True}


def count_input_tokens(deps: Deps, body: Any, *, tenant: str) -> dict[str, Any]:
    """``POST /v1/responses/input_tokens``: the tokens the request's whole context would
    take (README, "Token counts"): the route's ``tokenize_url`` where it has one, else the
    built-in model's exact count or resq's estimate. With ``truncation: "auto"``, what
    would remain after truncation."""
    req = parse_body(InputTokensRequest, body)
    route = deps.router.resolve(req.model) if req.model is not None else None
    context = check_context(
        deps,
        tenant=tenant,
        raw_input=req.input,
        previous_response_id=req.previous_response_id,
        conversation=req.conversation,
    )
    tools = req.tools or []
    items = context.items
    if route is not None and req.truncation == "auto":
        items = fit(
            items, instructions=req.instructions, tools=tools, route=route, truncation="auto"
        ).items
    count = None
    if route is not None and route.tokenize_url:
        count = _upstream_count(route, req.model or "", req.instructions, items)
    if count is None:
        method = count_method(route) if route is not None else tokens.ESTIMATE
        count = tokens.count(req.instructions, items, tools, method=method)
    return {"object": "response.input_tokens", "input_tokens": count}


def _upstream_count(
    route: Route, model: str, instructions: str | None, items: list[dict[str, Any]]
) -> int | None:
    """Ask a vLLM-style ``/tokenize`` endpoint (``{"model", "messages"}`` → ``{"count"}``);
    None (and a warning) if it cannot answer, so the caller falls back to the estimate."""
    assert route.tokenize_url is not None
    key = os.environ.get(route.api_key_env) if route.api_key_env else None
    try:
        answer = httpx.post(
            route.tokenize_url,
            json={
                "model": route.upstream_model or model,
                "messages": tokens.chat_messages(instructions, items),
            },
            headers={"Authorization": f"Bearer {key}"} if key else None,
            timeout=TOKENIZE_TIMEOUT_SECONDS,
        )
        answer.raise_for_status()
        found = answer.json().get("count")
        if isinstance(found, int) and not isinstance(found, bool):
            return found
        log.warning("tokenizer %s answered without an integer 'count'", route.tokenize_url)
    except (httpx.HTTPError, ValueError, AttributeError) as exc:
        log.warning("tokenizer %s failed (%s); using the estimate", route.tokenize_url, exc)
    return None


def compact(deps: Deps, body: Any, *, tenant: str) -> dict[str, Any]:
    """``POST /v1/responses/compact``: the model summarises the context; the answer is every
    user message of it followed by one ``compaction`` item carrying the summary, to be sent
    as ``input`` next time. The summary runs as a response through the queue like any other
    (``store: false``, so nothing of it stays)."""
    req = parse_body(CompactRequest, body)
    route = deps.router.resolve(req.model)
    context = check_context(
        deps, tenant=tenant, raw_input=req.input, previous_response_id=req.previous_response_id
    )
    if not context.items:
        raise InvalidRequest(
            "Nothing to compact: give 'input', 'previous_response_id', or both.",
            param="input",
            code="missing_required_parameter",
        )
    lead = [] if req.instructions is None else [text_message("developer", req.instructions)]
    job_items = [*lead, *context.items, text_message("user", COMPACTION_PROMPT)]
    job = parse_create_request(
        {
            "model": req.model,
            "input": [],
            "instructions": COMPACTION_INSTRUCTIONS,
            "store": False,
            "truncation": "auto",
        }
    )
    now = int(time.time())
    row = ResponseRow(
        id=ids.new_id(ids.RESPONSE),
        tenant=tenant,
        status=Status.IN_PROGRESS.value,
        model=req.model,
        store=False,
        created_at=now,
        params=echo_params(job, model=req.model),
    )
    # The job runs with truncation "auto"; only a context whose last item alone cannot fit
    # fails, and that is a 400 now rather than a failed job.
    fit(job_items, instructions=COMPACTION_INSTRUCTIONS, tools=[], route=route, truncation="auto")
    deps.store.create_response(row=row, input_items=[ensure_id(i) for i in job_items])
    _enqueue(deps, row)
    final = json.loads(wait_for_end(deps, row))
    if final["status"] != Status.COMPLETED:
        reason = (final.get("error") or {}).get("message") or final["status"]
        raise ServerError(f"The model could not compact the conversation: {reason}")
    summary = "".join(
        part.get("text", "")
        for item in final["output"]
        if item.get("type") == "message"
        for part in item.get("content", [])
        if part.get("type") == "output_text"
    )
    kept = [i for i in context.inherited + context.own_items if _is_user_message(i)]
    compaction = {
        "id": ids.new_id(ids.COMPACTION),
        "type": "compaction",
        "encrypted_content": encode_compaction(summary),
    }
    return {
        "id": row.id,
        "object": "response.compaction",
        "created_at": now,
        "output": [*kept, compaction],
        "usage": final["usage"],
    }


def _is_user_message(item: dict[str, Any]) -> bool:
    return item.get("type") == "message" and item.get("role") == "user"
