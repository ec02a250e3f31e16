"""Ending a response's event log from what the store says, when its owner could not.

Used by the API for a job cancelled while still queued (no worker will ever run it) and by the
reaper for a job whose worker died after the store recorded its end but before the log's
terminal event was written. Either way the log ends like any other, numbering continued, so
every stream on it terminates.
"""

from __future__ import annotations

import logging

import redis

from shared.bus import Emitter, EventBus
from shared.schema.events import ErrorEvent, Event, ResponseEvent, terminal_type
from shared.schema.response import TERMINAL_STATUSES, Status
from shared.store import Store
from shared.store.tables import ResponseRow

log = logging.getLogger(__name__)


def close_log(store: Store, bus: EventBus, row: ResponseRow) -> bool:
    """Append the terminal event (after ``created``/``queued`` if the log is empty) unless the
    log already has one. Returns whether anything was written."""
    assert row.status in TERMINAL_STATUSES
    last = bus.last(row.id)
    if last is not None and last.terminal:
        return False
    events: list[Event] = []
    if last is None:
        first = Status.QUEUED if row.background else Status.IN_PROGRESS
        snapshot = store.render(row, output=[], status=first.value)
        events.append(ResponseEvent(type="response.created", response=snapshot))
        if row.background:
            events.append(ResponseEvent(type="response.queued", response=snapshot))
    if row.status == Status.FAILED and row.error:
        events.append(ErrorEvent(code=row.error.get("code"), message=row.error["message"]))
    events.append(ResponseEvent(type=terminal_type(row.status), response=store.render(row)))
    try:
        Emitter(bus, row.id, start=last.sequence_number + 1 if last else 0).emit(*events)
    except redis.ResponseError:  # someone else wrote that sequence number first
        log.info("response %s: its log moved on meanwhile; not appending", row.id)
        return False
    if not row.store:
        bus.expire_soon(row.id)
    log.info("response %s: event log closed from the store (%s)", row.id, row.status)
    return True
