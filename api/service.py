"""What the response endpoints do, between parsing and serialising."""

from __future__ import annotations

import logging
import time
from typing import Any

import redis

from api.context import Deps
from shared import ids
from shared.bus import Emitter, StoredEvent
from shared.errors import InvalidRequest, NotFound, ServerError, ServiceUnavailable
from shared.schema.events import ResponseEvent, terminal_type
from shared.schema.items import ensure_id, normalize_input
from shared.schema.requests import CreateResponseRequest, parse_create_request
from shared.schema.response import TERMINAL_STATUSES, Status, echo_params
from shared.store.tables import ResponseRow

log = logging.getLogger(__name__)

SUPPORTED_TOOL_TYPES = {"function"}
# Parameters accepted by the wire schema whose features this server does not run yet: a
# clear 400 rather than silently ignoring what the client asked for.
NOT_YET_SUPPORTED = ("previous_response_id", "conversation", "prompt")
DB_RECHECK_SECONDS = 2.0


def _check_supported(req: CreateResponseRequest) -> None:
    for name in NOT_YET_SUPPORTED:
        if getattr(req, name) is not None:
            raise InvalidRequest(
                f"Unsupported parameter: '{name}' is not supported by this resq server yet.",
                param=name,
                code="unsupported_parameter",
            )
    for i, tool in enumerate(req.tools or []):
        if tool.get("type") not in SUPPORTED_TOOL_TYPES:
            raise InvalidRequest(
                f"Unsupported tool type: {tool.get('type')!r}. This resq server supports "
                "'function' tools.",
                param=f"tools[{i}].type",
                code="unsupported_parameter",
            )


def _resolve_references(
    deps: Deps, tenant: str, items: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    resolved = []
    for i, item in enumerate(items):
        if item["type"] == "item_reference":
            found = deps.store.find_item(tenant=tenant, item_id=item["id"])
            if found is None:
                raise InvalidRequest(
                    f"Item with id '{item['id']}' not found.",
                    param=f"input[{i}]",
                    code="item_not_found",
                )
            item = found
        resolved.append(ensure_id(item))
    return resolved


def create(deps: Deps, body: Any, *, tenant: str) -> tuple[ResponseRow, CreateResponseRequest]:
    req = parse_create_request(body)
    _check_supported(req)
    assert req.model is not None
    deps.router.resolve(req.model)
    input_items = _resolve_references(deps, tenant, normalize_input(req.input))
    row = ResponseRow(
        id=ids.new_id(ids.RESPONSE),
        tenant=tenant,
        status=(Status.QUEUED if req.background else Status.IN_PROGRESS).value,
        model=req.model,
        background=bool(req.background),
        store=req.store is not False,
        stream=bool(req.stream),
        created_at=int(time.time()),
        params=echo_params(req, model=req.model),
    )
    deps.store.create_response(row=row, input_items=input_items)
    try:
        deps.enqueue(row.id)
    except Exception as exc:
        log.exception("response %s: could not enqueue; removing it", row.id)
        deps.store.delete_response(response_id=row.id, tenant=tenant)
        raise ServiceUnavailable(
            "resq could not queue the response (the broker is unreachable); nothing was "
            "queued, so the request can be retried."
        ) from exc
    log.info("response %s: queued (model=%s background=%s)", row.id, row.model, row.background)
    return row, req


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


def wait_for_end(deps: Deps, row: ResponseRow) -> dict[str, Any]:
    """Block until the response's terminal event; return the final Response."""
    deadline = time.monotonic() + deps.settings.sync_timeout_seconds
    after = -1
    next_db_check = time.monotonic() + DB_RECHECK_SECONDS
    while time.monotonic() < deadline:
        events = deps.bus.read(row.id, after=after, block_ms=1000)
        for event in events:
            after = event.sequence_number
            if event.terminal:
                final: dict[str, Any] = event.json()["response"]
                return final
        if time.monotonic() >= next_db_check:
            next_db_check = time.monotonic() + DB_RECHECK_SECONDS
            current = deps.store.get_response(response_id=row.id)
            if current is None:
                raise NotFound(
                    f"Response with id '{row.id}' not found.",
                    param="response_id",
                    should_retry=False,
                )
            if current.status in TERMINAL_STATUSES and not events:
                return deps.store.render(current)
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
    previous = deps.store.cancel(response_id=row.id, now=int(time.time()))
    deps.bus.request_cancel(row.id)
    if previous == Status.IN_PROGRESS:
        _await_worker_stop(deps, row.id)
    elif previous == Status.QUEUED:
        _log_cancelled_before_start(deps, row.id)
    log.info("response %s: cancelled (was %s)", row.id, previous)
    return deps.store.render(get_row(deps, response_id, tenant=tenant))


def _log_cancelled_before_start(deps: Deps, response_id: str) -> None:
    """A job cancelled while queued never runs, so no worker will write its event log; the
    API now owns the response (the conditional UPDATE made it so) and writes the log, so a
    stream on it ends with a terminal event like any other."""
    row = deps.store.get_response(response_id=response_id)
    if row is None:
        return
    queued = deps.store.render(row, output=[], status=Status.QUEUED.value)
    final = deps.store.render(row, output=[])
    try:
        Emitter(deps.bus, response_id).emit(
            ResponseEvent(type="response.created", response=queued),
            ResponseEvent(type="response.queued", response=queued),
            ResponseEvent(type=terminal_type(row.status), response=final),
        )
    except redis.ResponseError:  # an entry already holds that sequence number
        log.warning("response %s: event log already written; leaving it", response_id)


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
