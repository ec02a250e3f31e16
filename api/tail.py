"""One reader per API process for every event log a request is waiting on.

A streamed response, a sync create waiting for its end and a cancel waiting for the worker's
confirmation all follow a response's event log. Each used to hold a Redis connection in its own
blocking ``XREAD``; with a thousand streams open that was a thousand connections and a
thousand reads to answer every few milliseconds. Here one thread (a greenlet under gunicorn's
gevent worker) blocks in a single ``XREAD`` over every followed log and hands each batch of
entries to the followers of that log.

A new follower must join a read that is already blocked. The reader also reads a small wake
stream of its own: a new follower appends to it, so the blocked ``XREAD`` returns at once and
the next one includes the new log. ``XREAD`` takes an explicit position for every key, so an
append that lands before the next read is still seen by it: no wake is ever missed, and no
event either (each follower keeps its own position; the read starts from the lowest).

A follower that falls behind (a slow client) stops being read for once it holds
``MAX_BUFFERED`` events, until it has taken them: memory per stream stays bounded.

When Redis cannot be read, every follower gets the error on its next ``next()`` (the stream
ends cleanly and the client resumes with ``starting_after``, as before); the reader retries.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import redis

from shared import ids, keys
from shared.bus import EventBus, StoredEvent, decode_entry, entry_id

log = logging.getLogger(__name__)

BLOCK_MS = 5000  # a read with nothing new returns this often (a wake ends it sooner)
COUNT = 500  # entries per log per read
MAX_BUFFERED = 2000  # a follower holding this many events is not read for until it takes them
RETRY_SECONDS = 0.5  # after a failed read
WAKE_TTL_SECONDS = 60  # the wake stream of a process that died expires


@dataclass(eq=False)
class Follower:
    """One request following one response's log from ``after`` on."""

    tail: Tail
    key: str
    after: int  # the last sequence number handed to this follower (by the reader)
    buffered: deque[StoredEvent] = field(default_factory=deque)
    error: Exception | None = None
    ready: threading.Event = field(default_factory=threading.Event)

    def next(self, timeout: float) -> list[StoredEvent]:
        """The events that came since the last call, waiting up to ``timeout`` seconds for
        some; ``[]`` when none came. Raises the reader's Redis error, once, if it had one."""
        self.ready.wait(timeout)
        with self.tail.lock:
            self.ready.clear()
            events = list(self.buffered)
            self.buffered.clear()
            error, self.error = self.error, None
            behind = len(events) >= MAX_BUFFERED
        if behind:
            self.tail.wake()  # it was left out of the reads while full: read for it again
        if error is not None and not events:
            raise error
        return events

    def close(self) -> None:
        self.tail.leave(self)

    def __enter__(self) -> Follower:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Tail:
    def __init__(self, bus: EventBus) -> None:
        self.bus = bus
        self.lock = threading.Lock()
        self.followers: dict[str, list[Follower]] = {}
        self.wake_key = keys.tail_wake(ids.new_id("tail"))
        self._wake_position = "0-0"
        self._wake_pending = False
        self._has_followers = threading.Event()
        self._reader_pid = 0

    def follow(self, response_id: str, *, after: int) -> Follower:
        """Follow a response's log from the event after ``after``. Close it when done."""
        follower = Follower(self, keys.events(response_id), after)
        with self.lock:
            self.followers.setdefault(follower.key, []).append(follower)
            self._start_reader()
            self._has_followers.set()
        self.wake()
        return follower

    def leave(self, follower: Follower) -> None:
        with self.lock:
            group = self.followers.get(follower.key, [])
            if follower in group:
                group.remove(follower)
            if not group:
                self.followers.pop(follower.key, None)

    def wake(self) -> None:
        """Make the reader start a new read (with the logs followed now) if it is blocked in
        one. One append per read however many followers joined meanwhile."""
        with self.lock:
            if self._wake_pending:
                return
            self._wake_pending = True
        try:
            pipe = self.bus.redis.pipeline(transaction=False)
            pipe.xadd(self.wake_key, {"w": "1"}, maxlen=1, approximate=False)
            pipe.expire(self.wake_key, WAKE_TTL_SECONDS)
            pipe.execute()
        except redis.RedisError:
            # The reader's own read fails the same way and it retries with every follower.
            with self.lock:
                self._wake_pending = False

    def _start_reader(self) -> None:
        """(Under the lock.) One reader per process; a forked child starts its own."""
        if self._reader_pid == os.getpid():
            return
        self._reader_pid = os.getpid()
        threading.Thread(target=self._run, name="resq-tail", daemon=True).start()

    def _run(self) -> None:
        while True:
            self._has_followers.wait()
            with self.lock:
                positions = self._positions()
                self._wake_pending = False
                if not self.followers:
                    self._has_followers.clear()
                    continue
            try:
                self._read(positions)
            except redis.RedisError as exc:
                self._fail(exc)
                time.sleep(RETRY_SECONDS)
            except Exception as exc:  # never let the reader die: every stream would hang
                log.exception("event log reader failed; retrying")
                self._fail(exc)
                time.sleep(RETRY_SECONDS)

    def _positions(self) -> dict[str, str]:
        """(Under the lock.) Where the next read starts in each followed log: after the
        lowest position of its followers that still have room."""
        positions = {self.wake_key: self._wake_position}
        for key, group in self.followers.items():
            open_ = [f.after for f in group if len(f.buffered) < MAX_BUFFERED]
            if open_:
                positions[key] = entry_id(min(open_))
        return positions

    def _read(self, positions: dict[str, str]) -> None:
        streams: Any = positions  # redis-py's annotation wants a dict of its own unions
        result: Any = self.bus.redis.xread(streams, count=COUNT, block=BLOCK_MS)
        with self.lock:
            for raw_key, entries in result or ():
                key = raw_key.decode() if isinstance(raw_key, bytes) else raw_key
                if key == self.wake_key:
                    last = entries[-1][0]
                    self._wake_position = last.decode() if isinstance(last, bytes) else last
                    continue
                self._deliver(key, [decode_entry(i, f) for i, f in entries])

    def _deliver(self, key: str, events: list[StoredEvent]) -> None:
        """(Under the lock.) Each follower of ``key`` gets the events past its position."""
        for follower in self.followers.get(key, ()):
            if len(follower.buffered) >= MAX_BUFFERED:
                continue  # read again for it once it has taken what it holds
            fresh = [e for e in events if e.sequence_number > follower.after]
            if fresh:
                follower.buffered.extend(fresh)
                follower.after = fresh[-1].sequence_number
                follower.ready.set()

    def _fail(self, exc: Exception) -> None:
        with self.lock:
            self._wake_pending = False
            for group in self.followers.values():
                for follower in group:
                    follower.error = exc
                    follower.ready.set()
