"""The reaper: finds running jobs whose heartbeat stopped (their worker died) and re-queues
them, or fails them where a re-run is not safe. Run periodically by Celery beat
(``resq.reap``); every step is a conditional update, so several reapers never conflict.

A lost job is re-queued (and run from the start by the next worker) only if its event log
holds nothing but the lifecycle events ``created``/``queued``/``in_progress`` — no output has
reached any client — and it has attempts left (``RESQ_MAX_ATTEMPTS``). The re-run continues the
log's numbering, so a resuming client never sees two events with one sequence number.
Otherwise it ends ``failed`` with an ``error`` event and ``response.failed`` appended to its log,
keeping what it had streamed: its output items are rebuilt from its log (``worker.replay``), as
a cancelled response keeps its partial output.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from shared.bus import EventBus, StoredEvent
from shared.lifecycle import close_log
from shared.schema.events import OPENING_TYPES
from shared.schema.response import Status
from shared.store import Store
from shared.store.tables import OUTPUT, ResponseRow
from worker.replay import OUTPUT_EVENT_TYPES, merge_saved, replay

log = logging.getLogger(__name__)

# A job the reaper re-queued is not re-sent as "stuck" for this long.
RESEND_GRACE_SECONDS = 600.0
READ_BATCH = 1000  # events per read of a lost job's log


@dataclass
class Reaped:
    requeued: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    resent: list[str] = field(default_factory=list)
    closed: list[str] = field(default_factory=list)


def reap(
    *,
    store: Store,
    bus: EventBus,
    enqueue: Callable[[str], None],
    heartbeat_timeout: float,
    max_attempts: int,
    queue_depth: Callable[[], int] = lambda: 0,
    queued_resend_after: float = 120.0,
    now: float | None = None,
) -> Reaped:
    now = time.time() if now is None else now
    done = Reaped()
    _reap_running(store, bus, enqueue, heartbeat_timeout, max_attempts, now, done)
    # (a job re-queued just now is marked as re-sent, so the next step leaves it alone)
    _resend_stuck_queued(store, bus, enqueue, queue_depth, queued_resend_after, now, done)
    _close_ended_logs(store, bus, heartbeat_timeout, now, done)
    return done


def _reap_running(
    store: Store,
    bus: EventBus,
    enqueue: Callable[[str], None],
    heartbeat_timeout: float,
    max_attempts: int,
    now: float,
    done: Reaped,
) -> None:
    candidates = store.running_started_before(before=int(now - heartbeat_timeout))
    alive = bus.beating([row.id for row in candidates])
    for row in candidates:
        if row.id in alive:
            continue
        last = bus.last(row.id)
        if last is not None and last.terminal:
            continue  # it finished; the store update is what it wrote first
        output_started = last is not None and last.type not in OPENING_TYPES
        if not output_started and row.attempts < max_attempts:
            assert row.started_at is not None
            if store.requeue(response_id=row.id, started_at=row.started_at):
                bus.mark_resent(row.id, ttl_seconds=RESEND_GRACE_SECONDS)
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
            now=now,
        ):
            done.failed.append(row.id)


def _resend_stuck_queued(
    store: Store,
    bus: EventBus,
    enqueue: Callable[[str], None],
    queue_depth: Callable[[], int],
    after: float,
    now: float,
    done: Reaped,
) -> None:
    """A job still ``queued`` long after it was accepted while the queue is empty has lost its
    message (a worker died holding it, or the API died before sending it): send it again. A
    duplicate message is harmless, since only one claim can win."""
    if queue_depth() > 0:
        return  # a backlog explains waiting jobs; look again once it has drained
    for row in store.queued_created_before(before=int(now - after)):
        if bus.mark_resent(row.id, ttl_seconds=after):
            enqueue(row.id)
            done.resent.append(row.id)
            log.warning(
                "response %s: queued for over %g s with an empty queue; re-sent", row.id, after
            )


def _close_ended_logs(
    store: Store, bus: EventBus, heartbeat_timeout: float, now: float, done: Reaped
) -> None:
    """Jobs whose worker died after the store recorded their end (or that were cancelled
    while their worker was dying) get their log's terminal event from the store."""
    since = int(now - 10 * heartbeat_timeout)
    rows = store.ended_between(since=since, until=int(now - heartbeat_timeout))
    alive = bus.beating([row.id for row in rows])
    for row in rows:
        if row.id not in alive and close_log(store, bus, row):
            done.closed.append(row.id)


def _fail(store: Store, bus: EventBus, row: ResponseRow, message: str, *, now: float) -> bool:
    output = _streamed_output(store, bus, row.id)
    final_row = store.finish(
        response_id=row.id,
        status=Status.FAILED,
        now=int(now),
        output=output,
        error={"code": "server_error", "message": message},
    )
    if final_row is None or final_row.status != Status.FAILED:
        return False
    log.error("response %s: %s (%d output items kept)", row.id, message, len(output))
    close_log(store, bus, final_row)  # error + response.failed, after the log's last event
    return True


def _streamed_output(store: Store, bus: EventBus, response_id: str) -> list[dict[str, Any]]:
    """The output items the job had streamed, rebuilt from its log; the store's copy of
    each item its worker had finished and saved."""
    events = (e.json() for e in _whole_log(bus, response_id) if e.type in OUTPUT_EVENT_TYPES)
    return merge_saved(replay(events), store.items(response_id=response_id, kind=OUTPUT))


def _whole_log(bus: EventBus, response_id: str) -> Iterator[StoredEvent]:
    after = -1
    while batch := bus.read(response_id, after=after, count=READ_BATCH):
        yield from batch
        after = batch[-1].sequence_number
