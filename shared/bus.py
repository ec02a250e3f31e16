"""The event bus: one Redis stream per response, the live fan-out and the replay log.

Event ``sequence_number`` n is stored at stream entry id ``0-(n+1)``. Redis refuses an entry
id that is not above the last one, so a sequence number can never be written twice with
different events, and ``starting_after=N`` is a plain ``XREAD`` from entry ``0-(N+1)``.

An entry's fields: ``t`` the event type, ``d`` the event's JSON (what SSE sends, byte for
byte) and, for a lifecycle event, ``r``: where its ``response`` sits in ``d``
(``start:end``), so the final Response is cut out of the stored text without decoding and
encoding it again, whatever the order of the event's members.
"""

from __future__ import annotations

import json
import os
import socket
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import redis
from redis.typing import EncodableT, FieldT

from shared import keys
from shared.schema.events import TERMINAL_TYPES, Event


def make_redis(url: str, *, max_connections: int = 1000) -> redis.Redis:
    """A client whose pool blocks (rather than fails) when every connection is in use."""
    pool = redis.BlockingConnectionPool.from_url(url, max_connections=max_connections, timeout=30)
    return redis.Redis(connection_pool=pool)


SEPARATORS = (",", ":")


@dataclass(frozen=True)
class StoredEvent:
    sequence_number: int
    type: str
    data: str  # the event's JSON, exactly as published
    response_span: tuple[int, int] | None = None  # where ``response`` is in ``data``

    @property
    def terminal(self) -> bool:
        return self.type in TERMINAL_TYPES

    def json(self) -> dict[str, Any]:
        parsed: dict[str, Any] = json.loads(self.data)
        return parsed

    def response_json(self) -> str:
        """A lifecycle event's ``response`` as JSON text: cut out of ``data`` where the
        publisher recorded it. An entry published before spans were recorded (a log written
        by an earlier version, read during an upgrade) is parsed instead; the text is the
        same, encoded with the same separators."""
        if self.response_span is None:
            return json.dumps(self.json()["response"], separators=SEPARATORS)
        start, end = self.response_span
        return self.data[start:end]


def _fields(event: dict[str, Any]) -> dict[FieldT, EncodableT]:
    """A stream entry's fields for an event (see the module docstring).

    A lifecycle event is encoded member by member, which yields exactly the text one
    ``json.dumps`` would and tells where its ``response`` starts and ends; every other event
    (the deltas: nearly all of them) is one ``json.dumps``."""
    if "response" not in event:
        return {"t": event["type"], "d": json.dumps(event, separators=SEPARATORS)}
    members: list[str] = []
    offset = 1  # past the opening brace
    span = ""
    for key, value in event.items():
        name = json.dumps(key) + ":"
        encoded = json.dumps(value, separators=SEPARATORS)
        if key == "response":
            start = offset + len(name)
            span = f"{start}:{start + len(encoded)}"
        members.append(name + encoded)
        offset += len(name) + len(encoded) + 1  # and the comma after it
    return {"t": event["type"], "d": "{" + ",".join(members) + "}", "r": span}


def entry_id(sequence_number: int) -> str:
    return f"0-{sequence_number + 1}"


def _sequence(entry_id: bytes | str) -> int:
    raw = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    return int(raw.split("-", 1)[1]) - 1


def decode_entry(raw_id: bytes | str, fields: Mapping[bytes, bytes]) -> StoredEvent:
    span = fields.get(b"r")
    start, _, end = span.decode().partition(":") if span else ("", "", "")
    return StoredEvent(
        sequence_number=_sequence(raw_id),
        type=fields[b"t"].decode(),
        data=fields[b"d"].decode(),
        response_span=(int(start), int(end)) if span else None,
    )


UNSTORED_TTL_SECONDS = 60


Command = tuple[str, tuple[Any, ...], dict[str, Any]]  # a pipeline method, its arguments


@dataclass(eq=False)
class _Waiting:
    """One caller's commands, waiting for a pipeline (``GroupCommit``)."""

    commands: list[Command]
    done: threading.Event = field(default_factory=threading.Event)
    error: BaseException | None = None
    lead: bool = False  # woken to send the next pipeline, not because its own went out


class GroupCommit:
    """The small writes of many runs in one process (their events, heartbeats, metrics) go
    to Redis together: a group commit.

    A caller that finds no pipeline in flight sends its commands at once. Callers that come
    while one is in flight (under load: the other runs of a worker) queue theirs; when it
    returns, the first of them sends everything queued in one pipeline. So an idle process
    writes with no added wait, and a busy one makes one round trip for many runs' writes
    instead of one each. Each caller returns once its own commands ran in Redis, or raises
    what went wrong with them (a whole pipeline failing fails every caller in it)."""

    def __init__(self, client: redis.Redis) -> None:
        self.client = client
        self.lock = threading.Lock()
        self.queue: list[_Waiting] = []
        self.busy = False

    def run(self, commands: list[Command]) -> None:
        """Run these commands (in this order, in one pipeline with others' commands)."""
        self._wait(_Waiting(commands))

    def _wait(self, waiting: _Waiting) -> None:
        with self.lock:
            self.queue.append(waiting)
            lead = not self.busy
            self.busy = True
        if not lead:
            waiting.done.wait()
            if not waiting.lead:
                if waiting.error is not None:
                    raise waiting.error
                return
        self._lead(waiting)

    def _lead(self, own: _Waiting) -> None:
        with self.lock:
            batch, self.queue = self.queue, []
        try:
            self._send(batch)
        except BaseException as exc:  # the whole pipeline failed: every caller in it sees it
            error = exc
            if not isinstance(exc, Exception):  # this greenlet was killed mid-send
                error = redis.ConnectionError(f"the run sending this pipeline was stopped: {exc!r}")
            for waiting in batch:
                if waiting is not own:
                    waiting.error = error
            raise
        finally:
            for waiting in batch:
                if waiting is not own:
                    waiting.done.set()
            self._hand_on()
        if own.error is not None:
            raise own.error

    def _hand_on(self) -> None:
        """Wake the first queued caller to send the next pipeline, or mark none in flight."""
        with self.lock:
            if not self.queue:
                self.busy = False
                return
            nxt = self.queue[0]
        nxt.lead = True
        nxt.done.set()

    def _send(self, batch: list[_Waiting]) -> None:
        pipe = self.client.pipeline(transaction=False)
        for waiting in batch:
            for name, args, kwargs in waiting.commands:
                getattr(pipe, name)(*args, **kwargs)
        results = pipe.execute(raise_on_error=False)
        start = 0
        for waiting in batch:
            end = start + len(waiting.commands)
            failed = [r for r in results[start:end] if isinstance(r, Exception)]
            waiting.error = failed[0] if failed else None
            start = end


class EventBus:
    def __init__(self, client: redis.Redis, *, ttl_seconds: int) -> None:
        self.redis = client
        self.ttl_seconds = ttl_seconds
        self.group = GroupCommit(client)

    def publish(self, response_id: str, events: list[dict[str, Any]]) -> None:
        """Append events in one round trip (shared with other callers' events under load:
        ``GroupCommit``); each one's ``sequence_number`` decides its place.

        The key's lifetime is set when the log starts and reset by its terminal event, so it
        expires ``ttl_seconds`` after the end (refreshing it on every event cost a third of
        the worker's CPU in bench/)."""
        key = keys.events(response_id)
        commands: list[Command] = [
            ("xadd", (key, _fields(event)), {"id": entry_id(event["sequence_number"])})
            for event in events
        ]
        if any(e["sequence_number"] == 0 or e["type"] in TERMINAL_TYPES for e in events):
            commands.append(("expire", (key, self.ttl_seconds), {}))
        self.group.run(commands)

    def read(
        self, response_id: str, *, after: int = -1, block_ms: int | None = None, count: int = 500
    ) -> list[StoredEvent]:
        """Events with ``sequence_number > after``; waits up to ``block_ms`` for new ones."""
        result: Any = self.redis.xread(
            {keys.events(response_id): entry_id(after)}, count=count, block=block_ms
        )
        if not result:
            return []
        _key, entries = result[0]
        return [decode_entry(raw_id, fields) for raw_id, fields in entries]

    def last(self, response_id: str) -> StoredEvent | None:
        entries: Any = self.redis.xrevrange(keys.events(response_id), count=1)
        return decode_entry(*entries[0]) if entries else None

    def request_cancel(self, response_id: str) -> None:
        self.redis.set(keys.cancel(response_id), b"1", ex=keys.CANCEL_TTL_SECONDS)

    def cancel_requested(self, response_id: str) -> bool:
        return bool(self.redis.exists(keys.cancel(response_id)))

    def cancels_among(self, response_ids: list[str]) -> set[str]:
        """The ids among these whose cancel was asked for (one round trip)."""
        found = self.redis.mget([keys.cancel(r) for r in response_ids])
        return {r for r, v in zip(response_ids, found, strict=True) if v is not None}

    def beat(self, response_id: str, *, ttl_seconds: float) -> None:
        """Mark the response as running here; the value says where (``host:pid``)."""
        where = f"{socket.gethostname()}:{os.getpid()}"
        self.group.run(
            [("set", (keys.heartbeat(response_id), where), {"px": int(ttl_seconds * 1000)})]
        )

    def beating(self, response_ids: list[str]) -> set[str]:
        """The ids among these whose heartbeat is still present."""
        if not response_ids:
            return set()
        found = self.redis.mget([keys.heartbeat(r) for r in response_ids])
        return {r for r, v in zip(response_ids, found, strict=True) if v is not None}

    def mark_resent(self, response_id: str, *, ttl_seconds: float) -> bool:
        """True the first time in ``ttl_seconds`` (the reaper re-sends a job at most that often)."""
        return bool(
            self.redis.set(keys.resent(response_id), b"1", nx=True, px=int(ttl_seconds * 1000))
        )

    def stop_beat(self, response_id: str) -> None:
        self.group.run([("delete", (keys.heartbeat(response_id),), {})])

    def expire_soon(self, response_id: str) -> None:
        """Shorten the log's life to ``UNSTORED_TTL_SECONDS``: a ``store: false`` response
        keeps its events only long enough for the request waiting on them to read them."""
        self.redis.expire(keys.events(response_id), UNSTORED_TTL_SECONDS)

    def drop(self, response_id: str) -> None:
        self.redis.delete(keys.events(response_id), keys.cancel(response_id))


class Emitter:
    """Stamps gap-free sequence numbers on a response's events and publishes them: the one
    place sequence numbers are stamped. Whoever owns the response (the worker that claimed
    it, or the API that cancelled it before any worker did) is its only emitter."""

    def __init__(self, bus: EventBus, response_id: str, start: int = 0) -> None:
        self.bus = bus
        self.response_id = response_id
        self.next = start

    def emit(self, *events: Event) -> None:
        """Publish events in order, in one round trip."""
        if not events:
            return
        wired = [event.wire(self.next + i) for i, event in enumerate(events)]
        self.bus.publish(self.response_id, wired)
        self.next += len(wired)
