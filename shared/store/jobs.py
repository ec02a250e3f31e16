"""Queries for the reaper: running jobs and putting a lost one back in the queue."""

from __future__ import annotations

from sqlalchemy import update
from sqlmodel import col, select

from shared.schema.response import TERMINAL_STATUSES, Status
from shared.store.repo import Store
from shared.store.tables import ResponseRow


def running_started_before(store: Store, *, before: int, limit: int = 500) -> list[ResponseRow]:
    """Jobs ``in_progress`` that started before ``before`` (uses the status index)."""
    with store.session() as s:
        rows = s.exec(
            select(ResponseRow)
            .where(
                col(ResponseRow.status) == Status.IN_PROGRESS.value,
                col(ResponseRow.started_at) < before,
            )
            .order_by(col(ResponseRow.started_at))
            .limit(limit)
        ).all()
    return list(rows)


def queued_created_before(store: Store, *, before: int, limit: int = 500) -> list[ResponseRow]:
    """Jobs still ``queued`` that were created before ``before``."""
    with store.session() as s:
        rows = s.exec(
            select(ResponseRow)
            .where(
                col(ResponseRow.status) == Status.QUEUED.value,
                col(ResponseRow.created_at) < before,
            )
            .order_by(col(ResponseRow.created_at))
            .limit(limit)
        ).all()
    return list(rows)


def ended_between(store: Store, *, since: int, until: int, limit: int = 2000) -> list[ResponseRow]:
    """Jobs that reached a terminal status in ``[since, until)``."""
    with store.session() as s:
        rows = s.exec(
            select(ResponseRow)
            .where(
                col(ResponseRow.status).in_([st.value for st in TERMINAL_STATUSES]),
                col(ResponseRow.ended_at) >= since,
                col(ResponseRow.ended_at) < until,
            )
            .limit(limit)
        ).all()
    return list(rows)


def requeue(store: Store, *, response_id: str, started_at: int) -> bool:
    """Put a lost job back to ``queued`` so a worker can claim it again; only if it is still
    the attempt that was seen (nobody finished or re-claimed it meanwhile)."""
    with store.session() as s:
        result = s.execute(
            update(ResponseRow)
            .where(
                col(ResponseRow.id) == response_id,
                col(ResponseRow.status) == Status.IN_PROGRESS.value,
                col(ResponseRow.started_at) == started_at,
            )
            .values(status=Status.QUEUED.value, started_at=None)
        )
        s.commit()
        return bool(result.rowcount == 1)  # type: ignore[attr-defined]
