"""A response's lifecycle on its event log, decided in one place.

The opening status of a new response, the events a log opens with (``created``, ``queued``,
``in_progress``) and the events it closes with (the flat ``error`` event of a failure, then the
terminal event) are built here for everyone who writes them: the worker's run
(``worker.execute``), the reaper, and ``close_log``, which ends a log from what the store says
when its owner could not: for a job cancelled while still queued (no worker will ever run it)
and for a job whose worker died after the store recorded its end but before the log's
terminal event was written. Either way the log ends like any other, numbering continued, so
every stream on it terminates. The event-type sets are ``shared.schema.events``'s.
"""

from __future__ import annotations

import logging
from typing import Any

import redis

from shared.bus import Emitter, EventBus
from shared.schema.events import ErrorEvent, Event, ResponseEvent, terminal_type
from shared.schema.response import TERMINAL_STATUSES, Status
from shared.store import Store
from shared.store.tables import ResponseRow

log = logging.getLogger(__name__)


def opening_status(background: bool) -> Status:
    """A new response's status: a background one waits in the queue; any other is running
    from the start (its client waits on the request)."""
    return Status.QUEUED if background else Status.IN_PROGRESS


def opening_events(store: Store, row: ResponseRow, *, running: bool) -> list[ResponseEvent]:
    """``created`` (in its opening status), ``queued`` for a background response, then
    ``in_progress`` if a worker is running it; each with the Response as it stood, no output."""

    def snapshot(type_: str, status: Status) -> ResponseEvent:
        return ResponseEvent(type=type_, response=store.render(row, output=[], status=status))

    events = [snapshot("response.created", opening_status(row.background))]
    if row.background:
        events.append(snapshot("response.queued", Status.QUEUED))
    if running:
        events.append(snapshot("response.in_progress", Status.IN_PROGRESS))
    return events


def closing_events(row: ResponseRow, response: dict[str, Any]) -> list[Event]:
    """The events that end the log of ``row``, which has ended (``response`` is its final
    Response): the documented flat ``error`` event of a failure first (§4.4), then the
    terminal event."""
    events: list[Event] = []
    if row.status == Status.FAILED and row.error:
        events.append(ErrorEvent(code=row.error.get("code"), message=row.error["message"]))
    events.append(ResponseEvent(type=terminal_type(row.status), response=response))
    return events


def close_log(store: Store, bus: EventBus, row: ResponseRow) -> bool:
    """Append the terminal event (after ``created``/``queued`` if the log is empty) unless the
    log already has one. Returns whether anything was written."""
    assert row.status in TERMINAL_STATUSES
    last = bus.last(row.id)
    if last is not None and last.terminal:
        return False
    events: list[Event] = []
    if last is None:
        events += opening_events(store, row, running=False)
    events += closing_events(row, store.render(row))
    try:
        Emitter(bus, row.id, start=last.sequence_number + 1 if last else 0).emit(*events)
    except redis.ResponseError:  # someone else wrote that sequence number first
        log.info("response %s: its log moved on meanwhile; not appending", row.id)
        return False
    if not row.store:
        bus.expire_soon(row.id)
    log.info("response %s: event log closed from the store (%s)", row.id, row.status)
    return True
