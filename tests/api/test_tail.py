"""The API's one reader of event logs (``api.tail``), against a real Redis server: every
follower gets exactly the events after its position, in order, through one blocking read."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from api import tail as tail_module
from api.tail import Follower, Tail
from ops.embedded_redis import EmbeddedRedis
from shared.bus import EventBus, make_redis


@pytest.fixture
def server(tmp_path: Path) -> Iterator[EmbeddedRedis]:
    embedded = EmbeddedRedis(tmp_path / "redis", persist=False).start()
    yield embedded
    embedded.stop()


@pytest.fixture
def bus(server: EmbeddedRedis) -> EventBus:
    return EventBus(make_redis(server.url), ttl_seconds=60)


def publish(bus: EventBus, response_id: str, numbers: range, terminal_at: int = -1) -> None:
    bus.publish(
        response_id,
        [
            {
                "type": "response.completed" if n == terminal_at else "response.output_text.delta",
                "sequence_number": n,
                "delta": f"w{n}",
            }
            for n in numbers
        ],
    )


def take(follower: Follower, until: int, timeout: float = 5.0) -> list[int]:
    """The sequence numbers a follower gets, until it has ``until`` (or a read times out)."""
    seen: list[int] = []
    while not seen or seen[-1] < until:
        events = follower.next(timeout)
        if not events:
            break
        seen.extend(e.sequence_number for e in events)
    return seen


def test_a_follower_gets_what_was_logged_and_what_comes_after(bus: EventBus) -> None:
    publish(bus, "resp_a", range(0, 3))
    with Tail(bus).follow("resp_a", after=0) as follower:
        assert take(follower, 2) == [1, 2]
        publish(bus, "resp_a", range(3, 6), terminal_at=5)
        assert take(follower, 5) == [3, 4, 5]


def test_a_new_follower_does_not_wait_out_a_blocked_read(bus: EventBus) -> None:
    """The reader is blocked (for BLOCK_MS = 5 s) on one log when a second request starts
    following another: the wake stream makes it read the new log at once."""
    tail = Tail(bus)
    with tail.follow("resp_quiet", after=-1) as quiet:
        assert quiet.next(0.3) == []  # the reader is now blocked on resp_quiet alone
        publish(bus, "resp_new", range(0, 2))
        with tail.follow("resp_new", after=-1) as new:
            assert take(new, 1, timeout=2.0) == [0, 1]


def test_followers_of_one_log_each_get_their_own_part(bus: EventBus) -> None:
    tail = Tail(bus)
    publish(bus, "resp_a", range(0, 4))
    with tail.follow("resp_a", after=-1) as first, tail.follow("resp_a", after=2) as second:
        assert take(second, 3) == [3]
        assert take(first, 3) == [0, 1, 2, 3]
        publish(bus, "resp_a", range(4, 6))
        assert take(first, 5) == [4, 5]
        assert take(second, 5) == [4, 5]


def test_hundreds_of_followers_share_one_connection(bus: EventBus, server: EmbeddedRedis) -> None:
    """Each used to hold a connection in its own blocking read."""
    tail = Tail(bus)
    count = 300
    followers = [tail.follow(f"resp_{n}", after=-1) for n in range(count)]
    got: dict[int, list[int]] = {}

    def consume(n: int) -> None:
        got[n] = take(followers[n], 9)

    threads = [threading.Thread(target=consume, args=(n,)) for n in range(count)]
    for thread in threads:
        thread.start()
    for n in range(count):
        publish(bus, f"resp_{n}", range(0, 10), terminal_at=9)
    for thread in threads:
        thread.join(10)
    assert got == {n: list(range(10)) for n in range(count)}
    clients = redis.Redis.from_url(server.url).client_list()
    assert len(clients) < 20, len(clients)  # the reader, the publisher's and a few wakes
    for follower in followers:
        follower.close()
    assert tail.followers == {}


def test_a_slow_follower_holds_a_bounded_number_of_events(
    bus: EventBus, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tail_module, "MAX_BUFFERED", 10)
    monkeypatch.setattr(tail_module, "COUNT", 4)
    publish(bus, "resp_a", range(0, 100), terminal_at=99)
    with Tail(bus).follow("resp_a", after=-1) as follower:
        seen: list[int] = []
        while not seen or seen[-1] < 99:
            threading.Event().wait(0.05)  # a slow client: the reader gets ahead meanwhile
            events = follower.next(2.0)
            assert 0 < len(events) <= 10 + 4  # one read past the bound at most
            seen.extend(e.sequence_number for e in events)
        assert seen == list(range(100))


def test_followers_get_the_outage_and_the_reader_recovers(
    bus: EventBus, server: EmbeddedRedis
) -> None:
    tail = Tail(bus)
    with tail.follow("resp_a", after=-1) as follower:
        assert follower.next(0.2) == []
        server.stop()
        with pytest.raises(redis.ConnectionError):
            for _ in range(20):
                follower.next(1.0)
    server.start()
    publish(bus, "resp_b", range(0, 3), terminal_at=2)
    with tail.follow("resp_b", after=-1) as follower:
        seen: list[int] = []
        for _ in range(10):  # the reader's first try may still report the outage
            try:
                seen = take(follower, 2)
                break
            except redis.ConnectionError:
                continue
        assert seen == [0, 1, 2]
