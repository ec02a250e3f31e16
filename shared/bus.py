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
from collections.abc import Mapping
from dataclasses import dataclass
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


class EventBus:
    def __init__(self, client: redis.Redis, *, ttl_seconds: int) -> None:
        self.redis = client
        self.ttl_seconds = ttl_seconds

    def publish(self, response_id: str, events: list[dict[str, Any]]) -> None:
        """Append events in one round trip; each one's ``sequence_number`` decides its place.

        The key's lifetime is set when the log starts and reset by its terminal event, so it
        expires ``ttl_seconds`` after the end (refreshing it on every event cost a third of
        the worker's CPU in bench/)."""
        key = keys.events(response_id)
        pipe = self.redis.pipeline(transaction=False)
        expire = False
        for event in events:
            pipe.xadd(key, _fields(event), id=entry_id(event["sequence_number"]))
            expire = expire or event["sequence_number"] == 0 or event["type"] in TERMINAL_TYPES
        if expire:
            pipe.expire(key, self.ttl_seconds)
        pipe.execute()

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

    def beat(self, response_id: str, *, ttl_seconds: float) -> None:
        """Mark the response as running here; the value says where (``host:pid``)."""
        where = f"{socket.gethostname()}:{os.getpid()}"
        self.redis.set(keys.heartbeat(response_id), where, px=int(ttl_seconds * 1000))

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
        self.redis.delete(keys.heartbeat(response_id))

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
