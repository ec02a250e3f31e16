"""The reaper: finds running jobs whose heartbeat stopped (their worker died) and re-queues
them, or fails them where a re-run is not safe. Run periodically by Celery beat
(``resq.reap``); every step is a conditional update, so several reapers never conflict.

A lost job is re-queued (and run from the start by the next worker) only if its event log
holds nothing but the lifecycle events ``created``/``queued``/``in_progress`` — no output has
reached any client — and it has attempts left (``RESQ_MAX_ATTEMPTS``). The re-run continues the
log's numbering, so a resuming client never sees two events with one sequence number.
Otherwise it ends ``failed`` with an ``error`` event and ``response.failed`` appended to its log.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import redis

from shared.bus import Emitter, EventBus
from shared.schema.events import ErrorEvent, ResponseEvent, terminal_type
from shared.schema.response import Status
from shared.store import Store
from shared.store.jobs import requeue, running_started_before
from shared.store.tables import OUTPUT, ResponseRow
from worker.execute import LIFECYCLE_START

log = logging.getLogger(__name__)


@dataclass
class Reaped:
    requeued: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)


def reap(
    *,
    store: Store,
    bus: EventBus,
    enqueue: Callable[[str], None],
    heartbeat_timeout: float,
    max_attempts: int,
    now: float | None = None,
) -> Reaped:
    now = time.time() if now is None else now
    done = Reaped()
    candidates = running_started_before(store, before=int(now - heartbeat_timeout))
    alive = bus.beating([row.id for row in candidates])
    for row in candidates:
        if row.id in alive:
            continue
        last = bus.last(row.id)
        if last is not None and last.terminal:
            continue  # it finished; the store update is what it wrote first
        output_started = last is not None and last.type not in LIFECYCLE_START
        if not output_started and row.attempts < max_attempts:
            assert row.started_at is not None
            if requeue(store, response_id=row.id, started_at=row.started_at):
                enqueue(row.id)
                done.requeued.append(row.id)
                log.warning(
                    "response %s: worker lost (attempt %d); re-queued", row.id, row.attempts
                )
            continue
        reason = (
            "after output had started streaming, so it was not re-run"
            if output_started
            else f"on each of its {row.attempts} attempts"
        )
        if _fail(
            store,
            bus,
            row,
            f"The worker running this response stopped {reason}.",
            next_seq=last.sequence_number + 1 if last else 0,
            now=now,
        ):
            done.failed.append(row.id)
    return done


def _fail(
    store: Store, bus: EventBus, row: ResponseRow, message: str, *, next_seq: int, now: float
) -> bool:
    error = {"code": "server_error", "message": message}
    final_row = store.finish(
        response_id=row.id,
        status=Status.FAILED,
        now=int(now),
        output=store.items(response_id=row.id, kind=OUTPUT),
        error=error,
    )
    if final_row is None or final_row.status != Status.FAILED:
        return False
    log.error("response %s: %s", row.id, message)
    final = store.render(final_row)
    try:
        Emitter(bus, row.id, start=next_seq).emit(
            ErrorEvent(code="server_error", message=message),
            ResponseEvent(type=terminal_type(Status.FAILED.value), response=final),
        )
    except redis.ResponseError:
        log.warning("response %s: its log moved on meanwhile; not appending", row.id)
    return True
