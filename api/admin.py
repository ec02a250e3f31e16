"""``/v1/admin``: the operator API (README, "Monitoring"). Admin keys only
(``RESQ_ADMIN_KEYS``); a tenant's key gets 403."""

from __future__ import annotations

import json
import logging
import threading
import time
from typing import Any

from flask import Blueprint, Response, g, jsonify, request

from api import service
from api.context import Deps, deps
from api.responses import list_page, query_int
from shared import keys
from shared.errors import Conflict, InvalidRequest, NotFound, PermissionDenied
from shared.metrics import paused_queues, percentile, queue_depths
from shared.schema.response import TERMINAL_STATUSES, Status
from shared.store.admin import WINDOW_SECONDS, AdminStore, Filters
from shared.store.tables import ResponseRow

log = logging.getLogger(__name__)
bp = Blueprint("admin", __name__, url_prefix="/v1/admin")

WINDOWS = {"1m": 60, "5m": 300, "15m": WINDOW_SECONDS}
FINISHED = ("completed", "failed", "cancelled", "incomplete")
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


def _counts() -> dict[str, int]:
    return {"queued": 0, "in_progress": 0, **dict.fromkeys(FINISHED, 0)}


@bp.get("/queue")
def queue() -> Response:
    d = deps()
    now = time.time()
    store = _admin(d)
    finished = store.finished_since(int(now) - WINDOW_SECONDS)
    active = store.active()
    oldest = store.oldest_queued()
    depths = queue_depths(d.bus.redis)
    paused = paused_queues(d.bus.redis)
    windows = {}
    for name, seconds in WINDOWS.items():
        rows = [r for r in finished if r.ended_at >= now - seconds]
        by_status = {status: sum(1 for r in rows if r.status == status) for status in FINISHED}
        waits = [_timing(r.timings, "queue_wait") for r in rows]
        runs = [_timing(r.timings, "run") for r in rows]
        windows[name] = {
            **by_status,
            "throughput_per_second": round(len(rows) / seconds, 4),
            "queue_wait_seconds": _percentiles([w for w in waits if w is not None]),
            "run_seconds": _percentiles([r for r in runs if r is not None]),
        }
    by_model: dict[str, dict[str, int]] = {}
    by_tenant: dict[str, dict[str, int]] = {}
    for a in active:
        by_model.setdefault(a.model, _counts())[a.status] += a.count
        by_tenant.setdefault(a.tenant, _counts())[a.status] += a.count
    for r in finished:
        if r.status in FINISHED:
            by_model.setdefault(r.model, _counts())[r.status] += 1
            by_tenant.setdefault(r.tenant, _counts())[r.status] += 1
    return jsonify(
        {
            "object": "admin.queue",
            "generated_at": now,
            "queues": [
                {"name": q, "depth": depths[q], "paused": paused[q]} for q in keys.ALL_QUEUES
            ],
            "totals": {
                "queued": sum(a.count for a in active if a.status == Status.QUEUED.value),
                "in_progress": sum(a.count for a in active if a.status == Status.IN_PROGRESS.value),
                "oldest_queued_age_seconds": round(now - oldest, 3) if oldest is not None else None,
            },
            "windows": windows,
            "by_model": [{"model": m, **c} for m, c in sorted(by_model.items())],
            "by_tenant": [{"tenant": t, **c} for t, c in sorted(by_tenant.items())],
        }
    )


def _timing(timings: dict[str, Any] | None, key: str) -> float | None:
    value = (timings or {}).get(key)
    return float(value) if isinstance(value, (int, float)) else None


def _percentiles(values: list[float]) -> dict[str, float | None]:
    return {"p50": percentile(values, 0.5), "p95": percentile(values, 0.95)}


@bp.get("/queue/history")
def history() -> Response:
    """Samples taken every few seconds by beat (``resq.sample_queue``), oldest first, with
    the rate of finished responses between consecutive samples."""
    d = deps()
    minutes = query_int("minutes", 15, 1, 60)
    assert minutes is not None
    since = time.time() - minutes * 60
    raw = d.bus.redis.lrange(keys.HISTORY, 0, keys.HISTORY_LENGTH - 1)
    samples = sorted((json.loads(s) for s in raw), key=lambda s: s["at"])
    data = []
    previous = None
    for sample in samples:
        rate = 0.0
        if previous is not None and sample["at"] > previous["at"]:
            done = max(0.0, sample["finished_total"] - previous["finished_total"])
            rate = done / (sample["at"] - previous["at"])
        previous = sample
        if sample["at"] >= since:
            data.append(
                {
                    "at": sample["at"],
                    "depth": sample["depth"],
                    "in_progress": sample["in_progress"],
                    "finished_per_second": round(rate, 4),
                }
            )
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


def summary(row: ResponseRow) -> dict[str, Any]:
    return {
        "id": row.id,
        "object": "admin.response",
        "tenant": row.tenant,
        "model": row.model,
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
    status = request.args.get("status")
    known = {s.value for s in Status}
    if status is not None and status not in known:
        raise InvalidRequest(
            f"Invalid value: '{status}'. Supported values are: {sorted(known)}.",
            param="status",
            code="invalid_value",
        )
    filters = Filters(
        status=status,
        model=request.args.get("model"),
        tenant=request.args.get("tenant"),
        created_before=int(time.time()) - older_than if older_than is not None else None,
    )
    rows, has_more = _admin(d).listing(filters, limit=limit, after=request.args.get("after"))
    return list_page([summary(r) for r in rows], has_more)


@bp.get("/responses/<response_id>")
def response(response_id: str) -> Response:
    d = deps()
    row = _row(d, response_id)
    timings = row.timings or {}
    timeline = [{"event": "queued", "at": row.enqueued_at or float(row.created_at)}]
    started = None
    if row.started_at is not None:
        queued = row.enqueued_at or float(row.created_at)
        started = queued + timings["queue_wait"] if "queue_wait" in timings else row.started_at
        timeline.append({"event": "started", "at": started})
    if started is not None and timings.get("first_token") is not None:
        timeline.append({"event": "first_token", "at": started + timings["first_token"]})
    if row.ended_at is not None:
        ended = started + timings["run"] if started and "run" in timings else row.ended_at
        timeline.append({"event": "finished", "at": ended, "status": row.status})
    attempts = [
        {
            "delivery_id": delivery.id,
            "endpoint_id": delivery.endpoint_id,
            "number": attempt.number,
            "status_code": attempt.status_code,
            "ok": attempt.ok,
            "latency_ms": attempt.latency_ms,
            "error": attempt.error,
            "at": attempt.started_at,
        }
        for delivery, attempt in _admin(d).webhook_attempts(row.id)
    ]
    return jsonify(
        {**summary(row), "timings": row.timings, "timeline": timeline, "webhook_attempts": attempts}
    )


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
    if row.status == Status.IN_PROGRESS.value:
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
    """Workers stop (or start again) taking messages from the queue: a broadcast to the live
    ones, and a flag in Redis that workers starting later read (``worker/celery_app.py``).
    Messages already taken run to their end; nothing queued is lost."""
    if name not in keys.ALL_QUEUES:
        raise NotFound(
            f"No queue named '{name}'. Queues: {', '.join(keys.ALL_QUEUES)}.", param="name"
        )
    d = deps()
    if paused:
        d.bus.redis.set(keys.paused(name), b"1")
        # Waits (up to a second) for the live workers to confirm. A message a worker took
        # in the meantime goes back to the queue when the worker sees the flag.
        d.celery.control.cancel_consumer(name, reply=True, timeout=INSPECT_TIMEOUT_SECONDS)
    else:
        d.bus.redis.delete(keys.paused(name))
        d.celery.control.add_consumer(name, reply=True, timeout=INSPECT_TIMEOUT_SECONDS)
    return {"name": name, "paused": paused}
