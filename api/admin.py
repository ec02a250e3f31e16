"""``/v1/admin``: the operator API (README, "Monitoring"). Admin keys only
(``RESQ_ADMIN_KEYS``); a tenant's key gets 403."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import asdict
from typing import Any

from flask import Blueprint, Response, g, jsonify, request

from api import service
from api.deps import Deps, deps
from api.query import list_page, query_int
from shared import keys
from shared import queue as queues
from shared.errors import Conflict, InvalidRequest, NotFound, PermissionDenied
from shared.metrics import queue_history
from shared.schema.response import TERMINAL_STATUSES, Status
from shared.store.admin import AdminStore, Filters
from shared.store.tables import ResponseRow
from shared.tenancy import rate_limited

log = logging.getLogger(__name__)
bp = Blueprint("admin", __name__, url_prefix="/v1/admin")

INSPECT_TIMEOUT_SECONDS = 1.0
WORKERS_CACHE_SECONDS = 2.0
MAX_LIST_LIMIT = 100
# ``older_than`` reaches back at most a century: every stored response is younger, and the cut-off
# it yields stays a small timestamp.
OLDER_THAN_MAX = 100 * 365 * 24 * 3600


@bp.before_request
def _admins_only() -> None:
    if not deps().auth.is_admin(request):
        raise PermissionDenied(
            "This endpoint needs an admin key (RESQ_ADMIN_KEYS); tenant keys cannot use it.",
        )


def _admin(d: Deps) -> AdminStore:
    return AdminStore(d.store)


# ---- the queue -----------------------------------------------------------------------------


@bp.get("/queue")
def queue() -> Response:
    d = deps()
    states = queues.queue_states(d.bus.redis)
    report = _admin(d).queue_report(now=time.time(), queues=states)
    _add_limits(d, report)
    return jsonify(report)


def _add_limits(d: Deps, report: dict[str, Any]) -> None:
    """Each tenant's limits and its 429s so far, by limit (``shared.tenancy``)."""
    refused = rate_limited(d.bus.redis)
    rows = {r["tenant"]: r for r in report["by_tenant"]}
    for tenant in {t for t, _ in refused} - set(rows):
        rows[tenant] = {"tenant": tenant, **dict.fromkeys(("queued", "in_progress"), 0)}
    for tenant, row in rows.items():
        hits = {limit: n for (t, limit), n in refused.items() if t == tenant}
        row["rate_limited"] = hits
        row["rate_limited_total"] = sum(hits.values())
        row["limits"] = asdict(d.limiter.policy.of(tenant))
    report["by_tenant"] = [rows[t] for t in sorted(rows)]


@bp.get("/queue/history")
def history() -> Response:
    """Samples taken every few seconds by beat (``resq.sample_queue``), oldest first, with
    the rate of finished responses between consecutive samples."""
    d = deps()
    minutes = query_int("minutes", 15, 1, 60)
    assert minutes is not None
    data = queue_history(d.bus.redis, since=time.time() - minutes * 60)
    return jsonify({"object": "list", "data": data})


# ---- workers --------------------------------------------------------------------------------

_workers_cache: dict[str, Any] = {}
_workers_lock = threading.Lock()


@bp.get("/workers")
def workers() -> Response:
    """Live workers, from Celery's inspect (a broadcast, answered within a second; cached
    for two so a dashboard refreshing does not flood the workers)."""
    d = deps()
    with _workers_lock:
        if time.monotonic() - _workers_cache.get("at", -1e9) > WORKERS_CACHE_SECONDS:
            _workers_cache.update(body=_inspect(d), at=time.monotonic())
        return jsonify(_workers_cache["body"])


def _inspect(d: Deps) -> dict[str, Any]:
    inspect = d.celery.control.inspect(timeout=INSPECT_TIMEOUT_SECONDS)
    try:
        stats = inspect.stats() or {}
        active = inspect.active() or {}
        queues = inspect.active_queues() or {}
    except Exception as exc:  # the broker is down: say so, do not fail the page
        return {"object": "list", "data": [], "error": f"could not ask the workers: {exc}"}
    now = time.time()
    data = []
    for name in sorted(set(stats) | set(active)):
        pool = (stats.get(name) or {}).get("pool") or {}
        data.append(
            {
                "name": name,
                "concurrency": pool.get("max-concurrency"),
                "queues": [q["name"] for q in queues.get(name) or []],
                "active": [
                    {
                        "response_id": (task.get("args") or [task.get("id")])[0],
                        "runtime_seconds": round(now - task["time_start"], 3)
                        if task.get("time_start")
                        else None,
                    }
                    for task in active.get(name) or []
                    if task.get("name") == "resq.run_response"
                ],
            }
        )
    return {"object": "list", "data": data, "error": None}


# ---- responses ------------------------------------------------------------------------------


def prompt_label(prompt: Any) -> str | None:
    """``pmpt_…@2``: the prompt and version a response ran, or None."""
    if not isinstance(prompt, dict) or not prompt.get("id"):
        return None
    return f"{prompt['id']}@{prompt.get('version') or '?'}"


def summary(row: ResponseRow) -> dict[str, Any]:
    return {
        "id": row.id,
        "object": "admin.response",
        "tenant": row.tenant,
        "model": row.model,
        "prompt": prompt_label(row.params.get("prompt")),
        "status": row.status,
        "background": row.background,
        "created_at": row.created_at,
        "started_at": row.started_at,
        "ended_at": row.ended_at,
        "attempts": row.attempts,
        "error": row.error,
    }


def _row(d: Deps, response_id: str) -> ResponseRow:
    row = d.store.get_response(response_id=response_id)
    if row is None:
        raise NotFound(f"Response with id '{response_id}' not found.", param="response_id")
    return row


@bp.get("/responses")
def responses() -> Response:
    d = deps()
    limit = query_int("limit", 20, 1, MAX_LIST_LIMIT)
    older_than = query_int("older_than", None, 0, OLDER_THAN_MAX)
    assert limit is not None
    filters = Filters(
        status=_status_filter(),
        model=request.args.get("model"),
        tenant=request.args.get("tenant"),
        created_before=int(time.time()) - older_than if older_than is not None else None,
    )
    rows, has_more = _admin(d).listing(filters, limit=limit, after=request.args.get("after"))
    return list_page([summary(r) for r in rows], has_more)


def _status_filter() -> Status | None:
    status = request.args.get("status")
    if status is None:
        return None
    try:
        return Status(status)
    except ValueError:
        known = sorted(str(s) for s in Status)
        raise InvalidRequest(
            f"Invalid value: '{status}'. Supported values are: {known}.",
            param="status",
            code="invalid_value",
        ) from None


@bp.get("/responses/<response_id>")
def response(response_id: str) -> Response:
    d = deps()
    row = _row(d, response_id)
    return jsonify({**summary(row), **_admin(d).response_detail(row)})


@bp.post("/responses/<response_id>/cancel")
def cancel(response_id: str) -> Response:
    d = deps()
    row = _row(d, response_id)
    if row.status not in TERMINAL_STATUSES:
        service.cancel_any(d, row)
    return jsonify(summary(_row(d, response_id)))


@bp.post("/responses/<response_id>/requeue")
def requeue(response_id: str) -> Response:
    """Run an ended (or stuck queued) response again from the start."""
    d = deps()
    row = _row(d, response_id)
    running = Conflict(
        f"Response '{response_id}' is running; cancel it first, or let it end.",
        param="response_id",
    )
    if row.status == Status.IN_PROGRESS:
        raise running
    if row.status in TERMINAL_STATUSES:
        # The new run writes a new event log from sequence number 0. Dropped before the store
        # changes: with Redis away this answers 503 and nothing has changed. (An ended
        # response does not start again on its own, so its log cannot gain events meanwhile.)
        d.bus.drop(row.id)
    again = _admin(d).requeue(row.id, now=time.time())
    if again is None:
        raise running
    try:
        service.send(d, again)
    except Exception:  # the store has it queued: the stuck-queued sweep sends it
        log.warning("response %s: requeued, but could not send it now", row.id, exc_info=True)
    g.enqueued = True
    return jsonify(summary(again))


# ---- pausing a queue ------------------------------------------------------------------------


@bp.post("/queues/<name>/pause")
def pause(name: str) -> Response:
    return jsonify(_set_paused(name, True))


@bp.post("/queues/<name>/resume")
def resume(name: str) -> Response:
    return jsonify(_set_paused(name, False))


def _set_paused(name: str, paused: bool) -> dict[str, Any]:
    """Workers stop (or start again) taking messages from the queue (``shared.queue``)."""
    if name not in keys.ALL_QUEUES:
        raise NotFound(
            f"No queue named '{name}'. Queues: {', '.join(keys.ALL_QUEUES)}.", param="name"
        )
    d = deps()
    change = queues.pause if paused else queues.resume
    change(d.celery, d.bus.redis, name, timeout=INSPECT_TIMEOUT_SECONDS)
    return {"name": name, "paused": paused}
