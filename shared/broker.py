"""kombu's Redis transport with acks (and restores) that survive a broker outage, a consumer
that takes the next message as soon as a slot frees (and a cheaper client).

With late acks, a job's message is acknowledged when the job ends. kombu's Redis QoS removes
the message from Redis first and only then frees the local prefetch slot; when Redis is down at
that moment the removal raises, the slot is never freed, and once every slot has leaked that
way the worker stops taking messages for good (no error is logged after the outage, the worker
just sits idle). Jobs running through a Redis restart hit exactly this.

Here the local slot is always freed, and a removal that failed is kept and retried on the next
ack and on the consumer's periodic restore pass. A removal that is never retried (the worker
dies first) leaves the message in Redis's unacked set, which kombu re-queues after the
visibility timeout; resq's claim then sees a finished response and does nothing.

A worker whose every slot is busy stops asking Redis for messages (no BRPOP) and waits on its
other sockets. Celery's loop for the gevent pool waits up to 2 s at a time, and a job that ends
does not wake it: a full worker left a freed slot idle for up to 2 s while jobs sat queued (one
slot in four lost for a 3 s job in the Redis-outage drill, and a burst drained in steps of
2 s). Here an ack that frees the first slot of a full channel writes a byte to a pipe the
poller also waits on, so the loop goes round at once and asks for the next message.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import Any

import redis
from kombu.transport import redis as kombu_redis
from kombu.transport import virtual

log = logging.getLogger(__name__)

# Messages this process had received and not yet acknowledged when its broker connection died
# with Redis down: kombu puts them back in their queue as the channel closes, and that fails
# while Redis is away. They stay in Redis's unacked set, which kombu would re-queue only after
# the visibility timeout (hours). Kept here, outside the channel that failed, and put back by
# the next channel as soon as Redis answers. (A running job's message put back is harmless:
# its claim fails while the job runs or after it ended.)
_unrestored: set[str] = set()


class QoS(kombu_redis.QoS):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.pending_removals: set[str] = set()

    def ack(self, delivery_tag: str) -> None:
        self.pending_removals.add(delivery_tag)
        self._free_slot(delivery_tag)  # the local slot, whatever Redis says
        self.flush_removals()

    def _free_slot(self, delivery_tag: str) -> None:
        """Give the message's prefetch slot back; if the channel was full, wake its poller."""
        was_full = not self.can_consume()
        virtual.QoS.ack(self, delivery_tag)
        transport = self.channel.connection
        if was_full and transport is not None:
            transport.cycle.wake()

    def reject(self, delivery_tag: str, requeue: bool = False) -> None:
        if not requeue:
            self.ack(delivery_tag)
            return
        try:
            self.restore_by_tag(delivery_tag, leftmost=True)
        except self.channel.connection_errors as exc:
            # Still in Redis's unacked set: put back once Redis answers.
            log.warning("could not requeue %s now (%s); will retry", delivery_tag, exc)
            _unrestored.add(delivery_tag)
        self._free_slot(delivery_tag)

    def flush_removals(self) -> None:
        """Remove acknowledged messages from Redis's unacked set; keep them if Redis is away."""
        if not self.pending_removals:
            return
        tags = list(self.pending_removals)
        try:
            with self.pipe_or_acquire() as pipe:
                pipe.zrem(self.unacked_index_key, *tags).hdel(self.unacked_key, *tags).execute()
        except self.channel.connection_errors as exc:
            log.warning("%d ack(s) wait for Redis: %s", len(tags), exc)
            return
        self.pending_removals.difference_update(tags)

    def restore_unacked(self, client: Any = None) -> None:
        """As the channel closes: put every unacknowledged message back in its queue, or keep
        it for the next channel if Redis is away."""
        _unrestored.update(self._delivered)
        self._delivered.clear()
        self.retry_restores(client)

    def retry_restores(self, client: Any = None) -> None:
        for tag in list(_unrestored):
            try:
                self.restore_by_tag(tag, client=client)
            except self.channel.connection_errors as exc:
                log.warning(
                    "%d message(s) wait for Redis to go back in their queue: %s",
                    len(_unrestored),
                    exc,
                )
                return
            _unrestored.discard(tag)
            log.info("message %s is back in its queue", tag)

    def restore_visible(self, *args: Any, **kwargs: Any) -> None:
        # Called by the consumer loop on every poll cycle: a good moment to retry removals
        # and restores that failed while Redis was away.
        self.flush_removals()
        if _unrestored:
            self.retry_restores()
        super().restore_visible(*args, **kwargs)


class Channel(kombu_redis.Channel):
    """Also: one Redis client object per channel for kombu's one-off commands (publishing a
    message, recording a delivery, acking it). kombu builds a new ``redis.Redis`` for each,
    and building one fills its table of ~170 response callbacks: about a third of a
    no-op task's cost in a worker, and a large part of ``send_task`` in the API. A client is
    only a handle on the connection pool, so one per pool is safe to share."""

    QoS = QoS
    _shared: redis.Redis | None = None

    @contextmanager
    def conn_or_acquire(self, client: redis.Redis | None = None) -> Iterator[redis.Redis]:
        if client:
            yield client
            return
        shared = self._shared
        if shared is None or shared.connection_pool is not self.pool:
            shared = self._shared = self._create_client()
        yield shared


class Poller(kombu_redis.MultiChannelPoller):
    """kombu's poller, plus a pipe that ``wake`` writes to: a blocking ``get`` (the loop Celery
    runs for the gevent pool) returns at once, and the next ``get`` sends BRPOP again if a slot
    is free. The pipe is made by the first ``get``, so a publisher-only connection has none."""

    _wake_fds: tuple[int, int] | None = None
    _registered_in: Any = None

    def get(self, callback: Any, timeout: float | None = None) -> Any:
        if self._wake_fds is None:
            read_fd, write_fd = os.pipe()
            os.set_blocking(read_fd, False)
            os.set_blocking(write_fd, False)
            self._wake_fds = (read_fd, write_fd)
        if self._registered_in is not self.poller:
            self.poller.register(self._wake_fds[0], kombu_redis.READ)
            self._registered_in = self.poller
        return super().get(callback, timeout)

    def wake(self) -> None:
        if self._wake_fds is not None:
            with suppress(BlockingIOError):  # the pipe is full: a wake is pending anyway
                os.write(self._wake_fds[1], b"w")

    def handle_event(self, fileno: int, event: int) -> Any:
        if self._wake_fds is not None and fileno == self._wake_fds[0]:
            with suppress(BlockingIOError):  # emptied
                while os.read(fileno, 4096):
                    pass
            return None
        return super().handle_event(fileno, event)

    def close(self) -> None:
        super().close()
        if self._wake_fds is not None:
            with suppress(KeyError, ValueError, OSError):
                self.poller.unregister(self._wake_fds[0])
            for fd in self._wake_fds:
                os.close(fd)
            self._wake_fds = None
            self._registered_in = None


class Transport(kombu_redis.Transport):
    Channel = Channel

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.cycle = Poller()  # type: ignore[assignment]  # kombu's redis transport does the same


TRANSPORT = f"{__name__}:Transport"
