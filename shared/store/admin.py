"""The operator API's data (``api/admin.py``): its queries, and the numbers and timelines
built from them.

Each query is bounded by an index, never a full scan of the responses table
(``tests/shared/test_admin_store.py`` shows the plans):

- active responses: ``status IN (queued, in_progress)`` → ``ix_responses_status_created``
- finished in the last 15 minutes: ``ended_at >= now - 900`` → ``ix_responses_ended_at``,
  capped at ``WINDOW_ROWS`` rows (the newest)
- the listing: by status, tenant or model with ``created_at`` → the matching
  ``(…, created_at)`` index; newest first, paged by id
- a response's webhook attempts → ``ix_webhook_events_response``
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, or_, update
from sqlalchemy import select as sql_select
from sqlmodel import col, delete, select

from shared.schema.response import Status
from shared.store.engine import Queries
from shared.store.jobs import ACTIVE_STATUSES
from shared.store.tables import (
    OUTPUT,
    ItemRow,
    ResponseRow,
    WebhookAttemptRow,
    WebhookDeliveryRow,
    WebhookEventRow,
)

WINDOW_SECONDS = 900
WINDOW_ROWS = 50_000  # the newest rows of the window, at most, per call
# The windows ``GET /v1/admin/queue`` reports, by name.
WINDOWS = {"1m": 60, "5m": 300, "15m": WINDOW_SECONDS}
FINISHED = (Status.COMPLETED, Status.FAILED, Status.CANCELLED, Status.INCOMPLETE)


@dataclass(frozen=True)
class Finished:
    status: Status
    model: str
    tenant: str
    ended_at: int
    timings: dict[str, Any] | None


@dataclass(frozen=True)
class Active:
    status: Status
    model: str
    tenant: str
    count: int


@dataclass(frozen=True)
class Filters:
    status: Status | None = None
    model: str | None = None
    tenant: str | None = None
    created_before: int | None = None  # from ``older_than``


class AdminStore(Queries):
    """What the operators see: counts, listings, a response's history."""

    def active(self) -> list[Active]:
        with self.session() as s:
            rows = s.execute(
                sql_select(
                    col(ResponseRow.status),
                    col(ResponseRow.model),
                    col(ResponseRow.tenant),
                    func.count(),
                )
                .where(col(ResponseRow.status).in_(ACTIVE_STATUSES))
                .group_by(ResponseRow.status, ResponseRow.model, ResponseRow.tenant)
            ).all()
        return [Active(status, model, tenant, int(n)) for status, model, tenant, n in rows]

    def active_by_tenant(self) -> dict[str, dict[str, int]]:
        """Each tenant's ``queued`` and ``running`` responses."""
        counts: dict[str, dict[str, int]] = {}
        for a in self.active():
            kind = "running" if a.status == Status.IN_PROGRESS else "queued"
            tenant = counts.setdefault(a.tenant, {"queued": 0, "running": 0})
            tenant[kind] += a.count
        return counts

    def active_by_status(self) -> dict[str, int]:
        counts: dict[str, int] = dict.fromkeys(ACTIVE_STATUSES, 0)
        for a in self.active():
            counts[a.status] += a.count
        return counts

    def oldest_queued(self) -> int | None:
        with self.session() as s:
            found = s.execute(
                select(func.min(ResponseRow.created_at)).where(
                    col(ResponseRow.status) == Status.QUEUED
                )
            ).scalar()
        return int(found) if found is not None else None

    def finished_since(self, since: int) -> list[Finished]:
        with self.session() as s:
            rows = s.execute(
                sql_select(
                    col(ResponseRow.status),
                    col(ResponseRow.model),
                    col(ResponseRow.tenant),
                    col(ResponseRow.ended_at),
                    col(ResponseRow.timings),
                )
                .where(col(ResponseRow.ended_at) >= since)
                .order_by(col(ResponseRow.ended_at).desc())
                .limit(WINDOW_ROWS)
            ).all()
        return [Finished(*row) for row in rows]

    def queue_report(self, *, now: float, queues: list[dict[str, Any]]) -> dict[str, Any]:
        """The body of ``GET /v1/admin/queue``: ``queues`` (each one's depth and pause, from
        Redis) with the responses active now and those finished in each window, overall and
        by model and tenant."""
        finished = self.finished_since(int(now) - WINDOW_SECONDS)
        active = self.active()
        oldest = self.oldest_queued()
        by_model: dict[str, dict[str, int]] = {}
        by_tenant: dict[str, dict[str, int]] = {}
        for a in active:
            by_model.setdefault(a.model, _counts())[a.status] += a.count
            by_tenant.setdefault(a.tenant, _counts())[a.status] += a.count
        for r in finished:
            if r.status in FINISHED:
                by_model.setdefault(r.model, _counts())[r.status] += 1
                by_tenant.setdefault(r.tenant, _counts())[r.status] += 1
        return {
            "object": "admin.queue",
            "generated_at": now,
            "queues": queues,
            "totals": {
                "queued": sum(a.count for a in active if a.status == Status.QUEUED),
                "in_progress": sum(a.count for a in active if a.status == Status.IN_PROGRESS),
                "oldest_queued_age_seconds": round(now - oldest, 3) if oldest is not None else None,
            },
            "windows": {name: _window(finished, now, span) for name, span in WINDOWS.items()},
            "by_model": [{"model": m, **c} for m, c in sorted(by_model.items())],
            "by_tenant": [{"tenant": t, **c} for t, c in sorted(by_tenant.items())],
        }

    def listing(
        self, filters: Filters, *, limit: int, after: str | None = None
    ) -> tuple[list[ResponseRow], bool]:
        query = select(ResponseRow)
        if filters.status is not None:
            query = query.where(col(ResponseRow.status) == filters.status)
        if filters.model is not None:
            query = query.where(col(ResponseRow.model) == filters.model)
        if filters.tenant is not None:
            query = query.where(col(ResponseRow.tenant) == filters.tenant)
        if filters.created_before is not None:
            query = query.where(col(ResponseRow.created_at) < filters.created_before)
        with self.session() as s:
            if after is not None:
                anchor = s.get(ResponseRow, after)
                if anchor is None:
                    return [], False
                query = query.where(
                    or_(
                        col(ResponseRow.created_at) < anchor.created_at,
                        (col(ResponseRow.created_at) == anchor.created_at)
                        & (col(ResponseRow.id) < anchor.id),
                    )
                )
            rows = list(
                s.exec(
                    query.order_by(
                        col(ResponseRow.created_at).desc(), col(ResponseRow.id).desc()
                    ).limit(limit + 1)
                ).all()
            )
        return rows[:limit], len(rows) > limit

    def webhook_attempts(
        self, response_id: str
    ) -> list[tuple[WebhookDeliveryRow, WebhookAttemptRow]]:
        with self.session() as s:
            rows = s.execute(
                select(WebhookDeliveryRow, WebhookAttemptRow)
                .join(WebhookEventRow, col(WebhookEventRow.id) == col(WebhookDeliveryRow.event_id))
                .join(
                    WebhookAttemptRow,
                    col(WebhookAttemptRow.delivery_id) == col(WebhookDeliveryRow.id),
                )
                .where(col(WebhookEventRow.response_id) == response_id)
                .order_by(col(WebhookAttemptRow.started_at))
            ).all()
        return [(delivery, attempt) for delivery, attempt in rows]

    def response_detail(self, row: ResponseRow) -> dict[str, Any]:
        """What ``GET /v1/admin/responses/{id}`` adds to a response's summary: its timings,
        its timeline and every webhook attempt made for it."""
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
            for delivery, attempt in self.webhook_attempts(row.id)
        ]
        return {"timings": row.timings, "timeline": timeline(row), "webhook_attempts": attempts}

    def requeue(self, response_id: str, *, now: float) -> ResponseRow | None:
        """Put an ended response back in the queue to run again from the start: its output,
        error and timings go. None if it is running or gone (a queued one stays as is)."""
        with self.session() as s:
            row = s.get(ResponseRow, response_id)
            if row is None or row.status == Status.IN_PROGRESS:
                return None
            if row.status == Status.QUEUED:
                return row
            result = s.execute(
                update(ResponseRow)
                .where(
                    col(ResponseRow.id) == response_id,
                    col(ResponseRow.status).not_in(ACTIVE_STATUSES),
                )
                .values(
                    status=Status.QUEUED,
                    started_at=None,
                    ended_at=None,
                    completed_at=None,
                    error=None,
                    incomplete_details=None,
                    usage=None,
                    timings=None,
                    truncation_details=None,
                    enqueued_at=now,
                )
            )
            if result.rowcount != 1:  # type: ignore[attr-defined]
                s.rollback()
                return None
            s.execute(
                delete(ItemRow).where(
                    col(ItemRow.response_id) == response_id, col(ItemRow.kind) == OUTPUT
                )
            )
            s.commit()
            return s.get(ResponseRow, response_id, populate_existing=True)


def timeline(row: ResponseRow) -> list[dict[str, Any]]:
    """When a response was queued, started, wrote its first output and finished, as far as
    it got: from its timings (to the microsecond) where they exist, else its whole-second
    columns."""
    timings = row.timings or {}
    queued = row.enqueued_at or float(row.created_at)
    events: list[dict[str, Any]] = [{"event": "queued", "at": queued}]
    started = None
    if row.started_at is not None:
        started = queued + timings["queue_wait"] if "queue_wait" in timings else row.started_at
        events.append({"event": "started", "at": started})
    if started is not None and timings.get("first_token") is not None:
        events.append({"event": "first_token", "at": started + timings["first_token"]})
    if row.ended_at is not None:
        ended = started + timings["run"] if started and "run" in timings else row.ended_at
        events.append({"event": "finished", "at": ended, "status": row.status})
    return events


def _counts() -> dict[str, int]:
    return {"queued": 0, "in_progress": 0, **dict.fromkeys(FINISHED, 0)}


def _window(finished: list[Finished], now: float, seconds: int) -> dict[str, Any]:
    """Responses that finished in the last ``seconds``: by status, per second, and the p50
    and p95 of their queue wait and run time."""
    rows = [r for r in finished if r.ended_at >= now - seconds]
    by_status: dict[str, int] = {
        status: sum(1 for r in rows if r.status == status) for status in FINISHED
    }
    waits = [_timing(r.timings, "queue_wait") for r in rows]
    runs = [_timing(r.timings, "run") for r in rows]
    return {
        **by_status,
        "throughput_per_second": round(len(rows) / seconds, 4),
        "queue_wait_seconds": _percentiles([w for w in waits if w is not None]),
        "run_seconds": _percentiles([r for r in runs if r is not None]),
    }


def _timing(timings: dict[str, Any] | None, key: str) -> float | None:
    value = (timings or {}).get(key)
    return float(value) if isinstance(value, (int, float)) else None


def _percentiles(values: list[float]) -> dict[str, float | None]:
    return {"p50": percentile(values, 0.5), "p95": percentile(values, 0.95)}


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]
