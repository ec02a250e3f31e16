"""The broker transport's acks across a Redis outage, against a real Redis server."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from kombu import Connection
from kombu.message import Message

from ops.embedded_redis import EmbeddedRedis
from shared import broker


@pytest.fixture
def server(tmp_path: Path) -> Iterator[EmbeddedRedis]:
    # Persistent, so what Redis held before a restart is there after it.
    redis_server = EmbeddedRedis(tmp_path / "redis", persist=True).start()
    try:
        yield redis_server
    finally:
        redis_server.stop()


def take(connection: Connection, count: int) -> list[Message]:
    queue = connection.SimpleQueue("jobs")
    for n in range(count):
        queue.put({"n": n})
    channel = queue.channel
    channel.basic_qos(0, count, False)  # prefetch: as many slots as messages
    return [queue.get(timeout=5) for _ in range(count)]


def unacked(server: EmbeddedRedis) -> int:
    """Messages Redis still holds as delivered and not acknowledged."""
    client = redis.Redis.from_url(server.url)
    try:
        return int(client.hlen("unacked"))
    finally:
        client.close()


def test_an_ack_during_an_outage_frees_the_slot_and_lands_later(server: EmbeddedRedis) -> None:
    with Connection(server.url, transport=broker.TRANSPORT) as connection:
        messages = take(connection, 2)
        qos = messages[0].channel.qos
        assert not qos.can_consume()  # both prefetch slots taken
        assert unacked(server) == 2

        server.stop()
        messages[0].ack()  # Redis is down: no error, the slot is free anyway
        assert qos.can_consume()
        assert len(qos.pending_removals) == 1

        server.start()
        assert unacked(server) == 2  # the first ack has not reached Redis yet
        messages[1].ack()  # the next ack carries the earlier one with it
        assert qos.pending_removals == set()
        assert unacked(server) == 0


def test_a_pending_ack_is_retried_by_the_consumer_poll(server: EmbeddedRedis) -> None:
    with Connection(server.url, transport=broker.TRANSPORT) as connection:
        (message,) = take(connection, 1)
        server.stop()
        message.ack()
        server.start()
        message.channel.qos.restore_visible()  # what the consumer loop calls every cycle
        assert unacked(server) == 0


def test_stock_kombu_leaks_the_slot_which_is_why_this_module_exists(
    server: EmbeddedRedis,
) -> None:
    # If this starts failing, kombu fixed the leak and shared/broker.py can go.
    with Connection(server.url, transport="redis") as connection:
        (message,) = take(connection, 1)
        server.stop()
        with pytest.raises(connection.connection_errors):
            message.ack()
        assert not message.channel.qos.can_consume()


def test_one_redis_client_per_pool_is_reused(server: EmbeddedRedis) -> None:
    with Connection(server.url, transport=broker.TRANSPORT) as connection:
        channel = connection.default_channel
        with channel.conn_or_acquire() as first, channel.conn_or_acquire() as second:
            assert first is second and first.connection_pool is channel.pool
        given = redis.Redis.from_url(server.url)
        with channel.conn_or_acquire(given) as passed:
            assert passed is given
        given.close()


def drain_while_acking(connection: Connection, *, timeout: float) -> list[int]:
    """Two messages, one prefetch slot: hold the first, ack it from another thread while the
    consumer waits in ``drain_events``; what that one call delivered."""
    got: list[Message] = []
    queue = connection.SimpleQueue("jobs")
    queue.put({"n": 0})
    queue.put({"n": 1})
    channel = connection.channel()
    channel.basic_qos(0, 1, False)
    consumer = connection.Consumer(queue.queue, channel=channel, callbacks=[])
    consumer.register_callback(lambda body, message: got.append(message))
    with consumer:
        connection.drain_events(timeout=5)
        assert [m.payload["n"] for m in got] == [0]
        assert not channel.qos.can_consume()
        acker = threading.Timer(0.2, got[0].ack)
        acker.start()
        with contextlib.suppress(TimeoutError):  # socket.timeout is TimeoutError
            connection.drain_events(timeout=timeout)
        acker.join()
    queue.close()
    return [m.payload["n"] for m in got]


def test_a_freed_slot_wakes_the_waiting_consumer(server: EmbeddedRedis) -> None:
    # The one drain_events call that was waiting when the slot freed delivers the next
    # message; it does not sit out its timeout (Celery's loop for the gevent pool waits 2 s).
    with Connection(server.url, transport=broker.TRANSPORT) as connection:
        assert drain_while_acking(connection, timeout=30) == [0, 1]


def test_stock_kombu_waits_out_the_timeout_which_is_why_the_poller_wakes(
    server: EmbeddedRedis,
) -> None:
    # If this starts failing, kombu wakes its own poller and broker.Poller can go.
    with Connection(server.url, transport="redis") as connection:
        assert drain_while_acking(connection, timeout=1.0) == [0]
