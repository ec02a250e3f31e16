"""Publishing a run's events: batched onto the response's event log, and each output item
saved to the store once its ``output_item.done`` is out (so a run that dies later keeps it).
"""

from __future__ import annotations

import copy
import time
from collections.abc import Sequence
from typing import Any

from shared import lifecycle
from shared.bus import Emitter, EventBus
from shared.schema.events import OPENING_TYPES, Event, OutputItemEvent, StreamEvent
from shared.store import Store
from shared.store.tables import ResponseRow

# Events produced within this long of the last publish wait and go out together, in one Redis
# round trip: an upstream that bursts many chunks at once costs a few publishes, not one per
# chunk. The first event of a run, and any event after a quiet spell, goes out at once.
FLUSH_SECONDS = 0.005
ITEM_DONE = "response.output_item.done"


class Publisher:
    def __init__(self, store: Store, bus: EventBus, response_id: str) -> None:
        self.store = store
        self.response_id = response_id
        last = bus.last(response_id)
        # A re-run (the reaper re-queued a lost attempt that had sent no output) continues the
        # numbering of the log after the lifecycle events it already holds.
        self.resumed = last is not None
        # Whether anything but the opening events is on the log: a client may have seen it, so
        # from then on the run is never handed back or re-run (README, "Durability").
        self.output_out = last is not None and last.type not in OPENING_TYPES
        self.emitter = Emitter(bus, response_id, start=last.sequence_number + 1 if last else 0)
        self.pending: list[StreamEvent] = []  # produced, not yet published
        # Output items saved to the store as they finished, as saved: the run's end writes
        # only what differs (``Store.finish``'s ``saved``).
        self.saved: dict[int, dict[str, Any]] = {}
        self.last_flush = 0.0

    def open(self, row: ResponseRow) -> None:
        """The opening lifecycle events, unless an earlier attempt sent them."""
        if not self.resumed:
            self.emitter.emit(*lifecycle.opening_events(self.store, row, running=True))

    def wait(self, idle: float) -> float:
        """How long the run may wait for its next delta: ``idle`` with nothing pending, else
        until the pending events are due."""
        if not self.pending:
            return idle
        return max(0.0, self.last_flush + FLUSH_SECONDS - time.monotonic())

    def add(self, events: Sequence[StreamEvent]) -> None:
        """Queue events, publishing them (and what waits) if the last publish is not recent."""
        self.pending += events
        if time.monotonic() - self.last_flush >= FLUSH_SECONDS:
            self.flush()

    def publish(self, events: Sequence[StreamEvent]) -> None:
        """Publish events now (with whatever is pending)."""
        self.pending += events
        self.flush()

    def flush(self) -> None:
        """Publish the pending events, then save the output items they finished."""
        published, self.pending = self.pending, []
        self.emitter.emit(*published)
        self.output_out = self.output_out or bool(published)
        for event in published:
            if isinstance(event, OutputItemEvent) and event.type == ITEM_DONE:
                self.store.save_output_item(
                    response_id=self.response_id, position=event.output_index, item=event.item
                )
                self.saved[event.output_index] = copy.deepcopy(event.item)
        self.last_flush = time.monotonic()

    def close(self, events: Sequence[StreamEvent]) -> None:
        """Publish what is pending and the closing item events in one go, saving nothing:
        the store's ``finish`` writes every output item at once."""
        self.emitter.emit(*self.pending, *events)
        self.pending = []

    def end(self, events: Sequence[Event]) -> None:
        """The log's last events (``shared.lifecycle.closing_events``)."""
        self.emitter.emit(*events)
