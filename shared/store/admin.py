"""Queries behind the operator API (``api/admin.py``). Each is bounded by an index, never a
full scan of the responses table (``tests/shared/test_admin_store.py`` shows the plans):

- active responses: ``status IN (queued, in_progress)`` → ``ix_responses_status_created``
- finished in the last 15 minutes: ``ended_at >= now - 900`` → ``ix_responses_ended_at``,
  capped at ``WINDOW_ROWS`` rows (the newest)
- the listing: by status, tenant or model with ``created_at`` → the matching
  ``(…, created_at)`` index; newest first, paged by id
- a response's webhook attempts → ``ix_webhook_events_response``
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, or_, update
from sqlalchemy import select as sql_select
from sqlmodel import col, delete, select

from shared.schema.response import Status
from shared.store.repo import ACTIVE_STATUSES, Store
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


@dataclass(frozen=True)
class Finished:
    status: str
    model: str
    tenant: str
    ended_at: int
    timings: dict[str, Any] | None


@dataclass(frozen=True)
class Active:
    status: str
    model: str
    tenant: str
    count: int


@dataclass(frozen=True)
class Filters:
    status: str | None = None
    model: str | None = None
    tenant: str | None = None
    created_before: int | None = None  # from ``older_than``


class AdminStore:
    def __init__(self, store: Store) -> None:
        self.store = store

    def active(self) -> list[Active]:
        with self.store.session() as s:
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

    def active_by_status(self) -> dict[str, int]:
        counts = dict.fromkeys(ACTIVE_STATUSES, 0)
        for a in self.active():
            counts[a.status] += a.count
        return counts

    def oldest_queued(self) -> int | None:
        with self.store.session() as s:
            found = s.execute(
                select(func.min(ResponseRow.created_at)).where(
                    col(ResponseRow.status) == Status.QUEUED.value
                )
            ).scalar()
        return int(found) if found is not None else None

    def finished_since(self, since: int) -> list[Finished]:
        with self.store.session() as s:
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
        with self.store.session() as s:
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
        with self.store.session() as s:
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

    def requeue(self, response_id: str, *, now: float) -> ResponseRow | None:
        """Put an ended response back in the queue to run again from the start: its output,
        error and timings go. None if it is running or gone (a queued one stays as is)."""
        with self.store.session() as s:
            row = s.get(ResponseRow, response_id)
            if row is None or row.status == Status.IN_PROGRESS.value:
                return None
            if row.status == Status.QUEUED.value:
                return row
            result = s.execute(
                update(ResponseRow)
                .where(
                    col(ResponseRow.id) == response_id,
                    col(ResponseRow.status).not_in(ACTIVE_STATUSES),
                )
                .values(
                    status=Status.QUEUED.value,
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
