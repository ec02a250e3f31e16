"""Server-sent events: the one place that frames them, and the relay from the event log.

Framing per spec digest §4.1: ``event:`` and ``data:`` lines, one event per write (gunicorn
flushes each yielded chunk), no ``[DONE]``, ``: keep-alive`` comments on idle streams. The
relay waits for events (from the process's one reader of event logs, ``api.tail``) in short
slices so it notices a client that went away within about a second, even when no event is due.
"""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Iterator
from typing import Any

import redis
from flask import Response, stream_with_context

from api.deps import Deps
from shared.bus import StoredEvent
from shared.schema.response import TERMINAL_STATUSES

log = logging.getLogger(__name__)

READ_SLICE_SECONDS = 0.5
KEEPALIVE = b": keep-alive\n\n"


def frame(event: StoredEvent) -> bytes:
    return f"event: {event.type}\ndata: {event.data}\n\n".encode()


def client_gone(sock: Any) -> bool:
    """True once the client closed its end (a peek reads EOF). Never blocks."""
    if sock is None:
        return False
    raw = getattr(sock, "_sock", sock)  # gevent wraps the real socket
    try:
        return bool(raw.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b"")
    except (BlockingIOError, InterruptedError):
        return False
    except OSError:
        return True


def relay(
    deps: Deps,
    response_id: str,
    *,
    after: int,
    cancel_on_disconnect: bool,
    client_socket: Any = None,
) -> Iterator[bytes]:
    """Replay events after ``after`` and follow live ones until the terminal event.

    The log is first read here, before the response starts: Redis being away is then the
    usual JSON 503, not a failure inside a body whose status has already gone out."""
    last = deps.bus.last(response_id)
    if last is not None and last.terminal and last.sequence_number <= after:
        return iter(())  # resuming after the end: nothing more will come
    return _follow(deps, response_id, after, cancel_on_disconnect, client_socket)


def _follow(
    deps: Deps, response_id: str, after: int, cancel_on_disconnect: bool, client_socket: Any
) -> Iterator[bytes]:
    finished = client_left = False
    idle_since = time.monotonic()
    keepalive = deps.settings.sse_keepalive_seconds
    deps.metrics.stream_opened(1)
    follower = deps.tail.follow(response_id, after=after)
    try:
        while True:
            if deps.stopping.is_set():
                log.info("response %s: API stopping; ending the stream for resume", response_id)
                return
            try:
                events = follower.next(READ_SLICE_SECONDS)
            except (redis.ConnectionError, redis.TimeoutError):
                # End cleanly; the client resumes with starting_after once Redis is back.
                log.warning("response %s: Redis unavailable; ending the stream", response_id)
                return
            for event in events:
                yield frame(event)
                after = event.sequence_number
                if event.terminal:
                    finished = True
                    return
            if events:
                idle_since = time.monotonic()
                continue
            if client_gone(client_socket):
                client_left = True
                return
            if time.monotonic() - idle_since >= keepalive:
                if _ended_without_log(deps, response_id, after):
                    finished = True
                    return
                yield KEEPALIVE
                idle_since = time.monotonic()
    except GeneratorExit:  # the server closed the generator: the client's write failed
        client_left = True
        raise
    finally:
        follower.close()
        deps.metrics.stream_opened(-1)
        if client_left and not finished:
            log.info("response %s: streaming client went away", response_id)
            if cancel_on_disconnect:
                deps.bus.request_cancel(response_id)


def _ended_without_log(deps: Deps, response_id: str, after: int) -> bool:
    """The response ended (or was deleted) and its log will get no terminal event."""
    row = deps.store.get_response(response_id=response_id)
    if row is None:
        return True
    return row.status in TERMINAL_STATUSES and not deps.bus.read(response_id, after=after)


def sse_response(stream: Iterator[bytes]) -> Response:
    response = Response(stream_with_context(stream), mimetype="text/event-stream")
    response.headers["Cache-Control"] = "no-cache"
    response.headers["X-Accel-Buffering"] = "no"
    return response
