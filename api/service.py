"""What the response endpoints do with a stored response: queue it, read it, wait for its
end, cancel it, delete it. Creating one is ``api.creation``; checking, counting and compacting
a context is ``api.inputs``."""

from __future__ import annotations

import json
import logging
import time
from typing import Any

import redis

from api.deps import Deps
from shared.bus import StoredEvent
from shared.errors import InvalidRequest, NotFound, ServerError, ServiceUnavailable
from shared.fair import PARKED
from shared.lifecycle import close_log
from shared.queue import queue_for
from shared.schema.response import TERMINAL_STATUSES, Status
from shared.store.tables import ResponseRow
from shared.tenancy import move_counts

log = logging.getLogger(__name__)

DB_RECHECK_SECONDS = 2.0


def send(deps: Deps, row: ResponseRow) -> None:
    """Queue a stored response, on the queue its service tier picks: into its tenant's fair
    queue (``shared.fair``), or straight to Celery when nothing waits (or fair queues are off)."""
    queue = queue_for(row.params.get("service_tier"))
    if deps.fair is not None:
        # A tenant with a running limit always waits for the dispatcher, which keeps it.
        direct = not deps.limiter.policy.of(row.tenant).running
        if deps.fair.park(row.tenant, queue, row.id, now=time.time(), direct=direct) == PARKED:
            return
    deps.enqueue(row.id, queue)


def enqueue(deps: Deps, row: ResponseRow) -> None:
    """Queue a new response; if the broker cannot take it, remove it again (a 503 the
    client can retry, since nothing of it is left)."""
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
    with deps.tail.follow(row.id, after=after) as follower:
        while time.monotonic() < deadline:
            events = follower.next(1.0)
            for event in events:
                after = event.sequence_number
                if event.terminal:
                    return event.response_json()
            if time.monotonic() >= next_db_check:
                next_db_check = time.monotonic() + DB_RECHECK_SECONDS
                ended = _ended_in_store(deps, row.id, after, quiet=not events)
                if ended is not None:
                    return ended
    raise ServerError(
        f"Response '{row.id}' did not finish within {deps.settings.sync_timeout_seconds:g} s; "
        "it is still running. Poll GET /v1/responses/{id}.",
        should_retry=False,
    )


def _ended_in_store(deps: Deps, response_id: str, after: int, *, quiet: bool) -> str | None:
    """The final Response of a response that ended without (yet) a terminal event seen by
    the waiter; None while it runs. A response gone from the store raises NotFound."""
    current = deps.store.get_response(response_id=response_id)
    if current is None:
        # A store=false response is deleted as it ends: its terminal event, written just
        # before, may have landed since the last read.
        for event in deps.bus.read(response_id, after=after):
            if event.terminal:
                return event.response_json()
        raise NotFound(
            f"Response with id '{response_id}' not found.",
            param="response_id",
            should_retry=False,
        )
    if current.status in TERMINAL_STATUSES and quiet:
        return json.dumps(deps.store.render(current), separators=(",", ":"))
    return None


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
        if previous == Status.QUEUED:
            _forget_waiting(deps, row)
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
        deps.metrics.finished(model=row.model, status=Status.CANCELLED)
    log.info("response %s: cancelled (was %s)", row.id, previous)


def _forget_waiting(deps: Deps, row: ResponseRow) -> None:
    """A queued job that ends before it runs: out of its tenant's fair queue (so it holds no
    turn) and out of the tenant's queued count."""
    if deps.fair is not None:
        deps.fair.forget(row.tenant, row.id)
    move_counts(deps.bus.redis, row.tenant, queued=-1)


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
    with deps.tail.follow(response_id, after=after) as follower:
        while (left := deadline - time.monotonic()) > 0:
            if any(event.terminal for event in follower.next(left)):
                return
    log.warning(
        "response %s: worker did not confirm the cancel within %.1f s",
        response_id,
        deps.settings.cancel_wait_seconds,
    )


def delete(deps: Deps, response_id: str, *, tenant: str) -> dict[str, Any]:
    row = get_row(deps, response_id, tenant=tenant)
    if row.status not in TERMINAL_STATUSES:
        previous = deps.store.cancel(response_id=row.id, now=int(time.time()))
        if previous == Status.QUEUED:
            _forget_waiting(deps, row)
        deps.bus.request_cancel(row.id)
    deps.store.delete_response(response_id=row.id, tenant=tenant)
    return {"id": row.id, "object": "response", "deleted": True}
