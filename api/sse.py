"""Server-sent events: the one place that frames them, and the relay from the event log."""

from __future__ import annotations

import logging
from collections.abc import Iterator

from flask import Response, stream_with_context

from api.context import Deps
from shared.bus import StoredEvent
from shared.schema.response import TERMINAL_STATUSES

log = logging.getLogger(__name__)

KEEPALIVE_SECONDS = 15
KEEPALIVE = b": keep-alive\n\n"


def frame(event: StoredEvent) -> bytes:
    return f"event: {event.type}\ndata: {event.data}\n\n".encode()


def relay(
    deps: Deps, response_id: str, *, after: int, cancel_on_disconnect: bool
) -> Iterator[bytes]:
    """Replay events after ``after`` and follow live ones until the terminal event."""
    finished = False
    try:
        while True:
            events = deps.bus.read(response_id, after=after, block_ms=KEEPALIVE_SECONDS * 1000)
            if not events:
                row = deps.store.get_response(response_id=response_id)
                if row is None or (
                    row.status in TERMINAL_STATUSES and not deps.bus.read(response_id, after=after)
                ):
                    finished = True
                    return
                yield KEEPALIVE
                continue
            for event in events:
                yield frame(event)
                after = event.sequence_number
                if event.terminal:
                    finished = True
                    return
    finally:
        if not finished and cancel_on_disconnect:
            log.info("response %s: streaming client went away; cancelling", response_id)
            deps.bus.request_cancel(response_id)


def sse_response(stream: Iterator[bytes]) -> Response:
    response = Response(stream_with_context(stream), mimetype="text/event-stream")
    response.headers["Cache-Control"] = "no-cache"
    response.headers["X-Accel-Buffering"] = "no"
    return response
