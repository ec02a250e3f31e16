"""Queries for the reaper: running jobs and putting a lost one back in the queue."""

from __future__ import annotations

from typing import Any

from sqlalchemy import update
from sqlmodel import col, select

from shared.schema.response import TERMINAL_STATUSES, Status
from shared.store.repo import Store
from shared.store.tables import ResponseRow


def _rows(store: Store, *conditions: Any, order: Any, limit: int) -> list[ResponseRow]:
    with store.session() as s:
        return list(s.exec(select(ResponseRow).where(*conditions).order_by(order).limit(limit)))


def running_started_before(store: Store, *, before: int, limit: int = 500) -> list[ResponseRow]:
    """Jobs ``in_progress`` that started before ``before`` (uses the status index)."""
    started = col(ResponseRow.started_at)
    return _rows(
        store,
        col(ResponseRow.status) == Status.IN_PROGRESS.value,
        started < before,
        order=started,
        limit=limit,
    )


def queued_created_before(store: Store, *, before: int, limit: int = 500) -> list[ResponseRow]:
    """Jobs still ``queued`` that were created before ``before`` (uses the status index)."""
    created = col(ResponseRow.created_at)
    return _rows(
        store,
        col(ResponseRow.status) == Status.QUEUED.value,
        created < before,
        order=created,
        limit=limit,
    )


def ended_between(store: Store, *, since: int, until: int, limit: int = 2000) -> list[ResponseRow]:
    """Jobs that reached a terminal status in ``[since, until)`` (uses the ended_at index)."""
    ended = col(ResponseRow.ended_at)
    return _rows(
        store,
        col(ResponseRow.status).in_([st.value for st in TERMINAL_STATUSES]),
        ended >= since,
        ended < until,
        order=ended,
        limit=limit,
    )


def requeue(store: Store, *, response_id: str, started_at: int, refund: bool = False) -> bool:
    """Put a lost job back to ``queued`` so a worker can claim it again; only if it is still
    the attempt that was seen (nobody finished or re-claimed it meanwhile). ``refund``: the
    attempt does not count (a stopping worker handed the job back before any output)."""
    values: dict[str, Any] = {"status": Status.QUEUED.value, "started_at": None}
    if refund:
        values["attempts"] = ResponseRow.attempts - 1
    with store.session() as s:
        result = s.execute(
            update(ResponseRow)
            .where(
                col(ResponseRow.id) == response_id,
                col(ResponseRow.status) == Status.IN_PROGRESS.value,
                col(ResponseRow.started_at) == started_at,
            )
            .values(**values)
        )
        s.commit()
        return bool(result.rowcount == 1)  # type: ignore[attr-defined]
