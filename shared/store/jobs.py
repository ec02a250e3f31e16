"""A job's run, as the worker and the reaper see it: claiming it, writing its outcome,
cancelling it, and finding and re-queueing lost ones.

A status only ever moves by a conditional ``UPDATE`` (``WHERE status IN …``), so of two
writers racing (a worker finishing, an API cancelling, a reaper re-queueing) exactly one wins.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

from sqlalchemy import bindparam, update
from sqlmodel import Session, col, select

from shared.schema.response import TERMINAL_STATUSES, Status
from shared.store.conversations import append_response_items
from shared.store.engine import Queries
from shared.store.items import replace_outputs
from shared.store.outbox import record_terminal_event
from shared.store.responses import delete_response_rows
from shared.store.tables import INPUT, ItemRow, ResponseRow

ACTIVE_STATUSES = (Status.QUEUED, Status.IN_PROGRESS)
# A response that ends in one of these adds its items to its conversation; a failed or
# cancelled one leaves the conversation as it was, so a retry starts from the same place.
CONVERSATION_STATUSES = (Status.COMPLETED, Status.INCOMPLETE)

log = logging.getLogger(__name__)

# A run's two statements, built once: Core on the table (the ORM's bulk UPDATE … RETURNING,
# building, evaluating and synchronising, was ~10 % of a worker's CPU per job under
# ``bench.run``'s drain, claim and finish alike). The rows they return become ResponseRows.
_RESPONSES = ResponseRow.__table__  # type: ignore[attr-defined]
_CLAIM = (
    update(_RESPONSES)
    .where(
        _RESPONSES.c.id == bindparam("response_id"),
        _RESPONSES.c.status.in_(ACTIVE_STATUSES),
        _RESPONSES.c.started_at.is_(None),
    )
    .values(
        status=Status.IN_PROGRESS,
        started_at=bindparam("now"),
        attempts=_RESPONSES.c.attempts + 1,
    )
    .returning(*_RESPONSES.c)
)
_OUTCOME_COLUMNS = (
    "status",
    "ended_at",
    "completed_at",
    "error",
    "incomplete_details",
    "usage",
    "truncation_details",
    "timings",
    "tool_secrets",
)
_WRITE_OUTCOME = (
    update(_RESPONSES)
    .where(
        _RESPONSES.c.id == bindparam("response_id"),
        _RESPONSES.c.status.in_(bindparam("from_statuses", expanding=True)),
    )
    .values({name: bindparam(f"new_{name}") for name in _OUTCOME_COLUMNS})
    .returning(*_RESPONSES.c)
)
_STORED = select(_RESPONSES.c.store).where(_RESPONSES.c.id == bindparam("response_id"))


class JobStore(Queries):
    """A job's status and the run's outcome; an end of a background response writes its
    webhook event in the same transaction and then announces the new deliveries."""

    # Called with the ids of new webhook deliveries after the transaction that wrote them
    # committed (``Store`` sets it).
    on_deliveries: Callable[[list[str]], None] | None = None

    def _announce(self, delivery_ids: list[str]) -> None:
        if not delivery_ids or self.on_deliveries is None:
            return
        try:
            self.on_deliveries(delivery_ids)
        except Exception:  # the sweep sends them later; the commit stands
            log.warning("could not queue webhook deliveries %s now", delivery_ids, exc_info=True)

    def claim(self, *, response_id: str, now: int) -> ResponseRow | None:
        """Atomically take a job that has not started yet; None if it is terminal or taken.
        One statement (UPDATE … RETURNING)."""
        with self.engine.begin() as conn:
            found = conn.execute(_CLAIM, {"response_id": response_id, "now": now})
            row = found.mappings().one_or_none()
        return None if row is None else ResponseRow(**row)

    def finish(
        self,
        *,
        response_id: str,
        status: Status,
        now: int,
        output: list[dict[str, Any]],
        saved: Mapping[int, dict[str, Any]] | None = None,
        error: dict[str, Any] | None = None,
        incomplete_details: dict[str, Any] | None = None,
        usage: dict[str, Any] | None = None,
        truncation_details: dict[str, Any] | None = None,
        timings: dict[str, Any] | None = None,
        from_statuses: tuple[Status, ...] = (Status.IN_PROGRESS,),
    ) -> ResponseRow | None:
        """Write the outcome of a run. The output is always kept; the status only changes
        from one of ``from_statuses`` (a cancel that landed first is never overwritten).
        Returns the row as stored afterwards, or None if the response was deleted.
        ``saved``: output items already stored as they are (``save_output_item``), by
        position; those are not written again.

        In the same transaction: a status change of a background response writes its
        webhook event (the outbox); a response that ends ``completed`` or ``incomplete`` in
        a conversation appends its input and output items to it; and a ``store: false``
        response is deleted with its items (the returned row is its last state)."""
        assert status in TERMINAL_STATUSES
        values = {
            "status": status,
            "ended_at": now,
            "completed_at": now if status == Status.COMPLETED else None,
            "error": error,
            "incomplete_details": incomplete_details,
            "usage": usage,
            "truncation_details": truncation_details,
            "timings": timings,
            "tool_secrets": None,  # credentials live only as long as the run
        }
        with self.session() as s:
            stored = s.connection().execute(_STORED, {"response_id": response_id}).scalar()
            if stored is None:
                return None
            if stored:
                kept = {
                    i for i, item in (saved or {}).items() if i < len(output) and output[i] == item
                }
                changed_items = {i: item for i, item in enumerate(output) if i not in kept}
                replace_outputs(
                    s.connection(), response_id, changed_items, truncate=True, keep=kept
                )
            row, changed = _write_outcome(s, response_id, values, from_statuses)
            deliveries = _announce_end(s, row, output, now) if changed else []
            if not stored:
                delete_response_rows(s, response_id)
            s.commit()
        self._announce(deliveries)
        return row

    def cancel(self, *, response_id: str, now: int) -> Status | None:
        """Mark a job cancelled if it has not ended. Returns the status it had, or None if
        it was already terminal (or is gone)."""
        with self.session() as s:
            row = s.get(ResponseRow, response_id)
            if row is None or row.status not in ACTIVE_STATUSES:
                return None
            previous = row.status
            result = s.execute(
                update(ResponseRow)
                .where(col(ResponseRow.id) == response_id, col(ResponseRow.status) == previous)
                .values(status=Status.CANCELLED, ended_at=now, tool_secrets=None)
            )
            if result.rowcount != 1:  # type: ignore[attr-defined]
                s.rollback()
                return None
            deliveries = record_terminal_event(s, row=row, now=now)
            s.commit()
        self._announce(deliveries)
        return previous

    # ---- the reaper --------------------------------------------------------------------

    def running_started_before(self, *, before: int, limit: int = 500) -> list[ResponseRow]:
        """Jobs ``in_progress`` that started before ``before`` (uses the status index)."""
        started = col(ResponseRow.started_at)
        return self._rows(
            col(ResponseRow.status) == Status.IN_PROGRESS,
            started < before,
            order=started,
            limit=limit,
        )

    def queued_created_before(self, *, before: int, limit: int = 500) -> list[ResponseRow]:
        """Jobs still ``queued`` that were created before ``before`` (uses the status index)."""
        created = col(ResponseRow.created_at)
        return self._rows(
            col(ResponseRow.status) == Status.QUEUED,
            created < before,
            order=created,
            limit=limit,
        )

    def ended_between(self, *, since: int, until: int, limit: int = 2000) -> list[ResponseRow]:
        """Jobs that reached a terminal status in ``[since, until)`` (uses the ended_at index)."""
        ended = col(ResponseRow.ended_at)
        return self._rows(
            col(ResponseRow.status).in_(sorted(TERMINAL_STATUSES)),
            ended >= since,
            ended < until,
            order=ended,
            limit=limit,
        )

    def _rows(self, *conditions: Any, order: Any, limit: int) -> list[ResponseRow]:
        with self.session() as s:
            return list(s.exec(select(ResponseRow).where(*conditions).order_by(order).limit(limit)))

    def requeue(self, *, response_id: str, started_at: int, refund: bool = False) -> bool:
        """Put a lost job back to ``queued`` so a worker can claim it again; only if it is
        still the attempt that was seen (nobody finished or re-claimed it meanwhile).
        ``refund``: the attempt does not count (a stopping worker handed the job back before
        any output)."""
        values: dict[str, Any] = {"status": Status.QUEUED, "started_at": None}
        if refund:
            values["attempts"] = ResponseRow.attempts - 1
        with self.session() as s:
            result = s.execute(
                update(ResponseRow)
                .where(
                    col(ResponseRow.id) == response_id,
                    col(ResponseRow.status) == Status.IN_PROGRESS,
                    col(ResponseRow.started_at) == started_at,
                )
                .values(**values)
            )
            s.commit()
            return bool(result.rowcount == 1)  # type: ignore[attr-defined]


def _write_outcome(
    s: Session, response_id: str, values: dict[str, Any], from_statuses: tuple[Status, ...]
) -> tuple[ResponseRow, bool]:
    """Write ``values`` to the row (UPDATE … RETURNING) if its status allows it: the row as
    it is afterwards, and whether its status changed.

    A status change announces itself (webhook); re-writing the same status (a cancelled run
    storing what it had produced) does not. If the status had moved on (a cancel landed
    first), nothing is written here: the caller kept the outputs only."""
    status = values["status"]
    params = {f"new_{name}": values[name] for name in _OUTCOME_COLUMNS}

    def write(statuses: tuple[str, ...]) -> ResponseRow | None:
        found = s.connection().execute(
            _WRITE_OUTCOME,
            {"response_id": response_id, "from_statuses": list(statuses), **params},
        )
        row = found.mappings().one_or_none()
        return None if row is None else ResponseRow(**row)

    row = write(tuple(f for f in from_statuses if f != status))
    if row is not None:
        return row, True
    if status in from_statuses:
        row = write((status,))
    if row is None:
        row = s.get(ResponseRow, response_id)
    assert row is not None
    return row, False


def _announce_end(
    s: Session, row: ResponseRow, output: list[dict[str, Any]], now: int
) -> list[str]:
    """In the caller's transaction, once a run's status changed: the webhook event (returns
    the ids of its deliveries) and, for a conversation's response that ended ``completed`` or
    ``incomplete``, its input and output items appended to the conversation."""
    deliveries = record_terminal_event(s, row=row, now=now)
    conversation = (row.params.get("conversation") or {}).get("id")
    if conversation and row.status in CONVERSATION_STATUSES:
        inputs = [
            r.data
            for r in s.exec(
                select(ItemRow)
                .where(ItemRow.response_id == row.id, ItemRow.kind == INPUT)
                .order_by(col(ItemRow.position))
            )
        ]
        append_response_items(s, conversation, response_id=row.id, items=inputs + output, now=now)
    return deliveries
