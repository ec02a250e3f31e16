"""Tenant limits and fair queues in Redis: the limiter's atomic script (token buckets, queued
and running limits, OpenAI's headers), the workers' counts, and the fair queues' park, pop
and turns, with the dispatcher's rounds. fakeredis (with Lua) stands in for Redis here; the
end-to-end tests run them against a real server (tests/e2e/test_tenants.py)."""

from __future__ import annotations

from pathlib import Path

import fakeredis
import pytest

from shared import keys
from shared.fair import DIRECT, PARKED, FairQueues
from shared.settings import Settings, SettingsError
from shared.tenancy import (
    Limiter,
    TenantCounters,
    TenantLimits,
    TenantPolicy,
    duration,
    rate_limited,
    reconcile,
)
from worker.dispatcher import Dispatcher, Turns

T0 = 1_800_000_000.0


@pytest.fixture
def redis() -> fakeredis.FakeRedis:
    return fakeredis.FakeRedis()


def limiter(redis: fakeredis.FakeRedis, **limits: int) -> Limiter:
    return Limiter(redis, TenantPolicy(TenantLimits(**limits)))


def test_the_tenants_file(tmp_path: Path) -> None:
    path = tmp_path / "tenants.toml"
    path.write_text("[tenants.a]\nrequests_per_minute = 10\nweight = 3\n[tenants.b]\nqueued = 5\n")
    env = {"RESQ_TENANTS_FILE": str(path), "RESQ_LIMIT_RUNNING": "7"}
    policy = TenantPolicy.from_settings(Settings.from_env(env))
    assert policy.of("a") == TenantLimits(requests_per_minute=10, running=7, weight=3)
    assert policy.of("b") == TenantLimits(queued=5, running=7)
    assert policy.of("c") == TenantLimits(running=7)
    path.write_text("[tenants.a]\nrpm = 10\n")
    with pytest.raises(SettingsError, match="unknown keys"):
        TenantPolicy.from_settings(Settings.from_env(env))
    path.write_text("[tenants.a]\nqueued = -1\n")
    with pytest.raises(SettingsError, match="0 or more"):
        TenantPolicy.from_settings(Settings.from_env(env))


def test_requests_per_minute_is_a_bucket_with_openais_headers(redis: fakeredis.FakeRedis) -> None:
    limits = limiter(redis, requests_per_minute=3)
    for left in (2, 1, 0):
        verdict = limits.admit("a", tokens=0, background=True, now=T0)
        assert verdict.refused is None
        assert verdict.headers()["x-ratelimit-remaining-requests"] == str(left)
    refused = limits.admit("a", tokens=0, background=True, now=T0)
    assert refused.refused == "requests"
    headers = refused.headers()
    assert headers["x-ratelimit-limit-requests"] == "3"
    assert headers["x-ratelimit-remaining-requests"] == "0"
    assert headers["x-ratelimit-reset-requests"] == "1m0s"
    assert headers["retry-after-ms"] == "20000" and headers["retry-after"] == "20"
    assert limits.admit("b", tokens=0, background=True, now=T0).refused is None  # per tenant
    assert limits.admit("a", tokens=0, background=True, now=T0 + 20).refused is None  # refilled
    counts = redis.hgetall(keys.tenant_counts("a"))
    assert counts[b"queued"] == b"4"  # only what was admitted


def test_tokens_per_minute_charges_the_estimate_and_settles(redis: fakeredis.FakeRedis) -> None:
    limits = limiter(redis, tokens_per_minute=1000)
    assert limits.admit("a", tokens=800, background=False, now=T0).refused is None
    refused = limits.admit("a", tokens=300, background=False, now=T0)
    assert (
        refused.refused == "tokens" and refused.headers()["x-ratelimit-remaining-tokens"] == "200"
    )
    limits.settle("a", charged=800, used=100, now=T0)  # it used far less: 700 back
    verdict = limits.admit("a", tokens=300, background=False, now=T0)
    assert verdict.refused is None and verdict.headers()["x-ratelimit-remaining-tokens"] == "600"
    assert limits.admit("a", tokens=5000, background=False, now=T0).refused == "tokens"


def test_queued_limits_background_and_running_limits_foreground(
    redis: fakeredis.FakeRedis,
) -> None:
    limits = limiter(redis, queued=2, running=1)
    counters = TenantCounters(redis, limits)
    assert limits.admit("a", tokens=0, background=True, now=T0).refused is None
    assert limits.admit("a", tokens=0, background=True, now=T0).refused is None
    assert limits.admit("a", tokens=0, background=True, now=T0).refused == "queued"
    counters.started("a")  # one of them runs: queued 1, running 1
    assert limits.admit("a", tokens=0, background=True, now=T0).refused is None
    assert limits.admit("a", tokens=0, background=False, now=T0).refused == "running"
    counters.ended("a", charged=0, used=0, now=T0)
    assert limits.admit("a", tokens=0, background=False, now=T0).refused is None
    assert redis.hgetall(keys.tenant_counts("a")) == {b"queued": b"3", b"running": b"0"}


def test_reconcile_sets_the_counts_from_the_store(redis: fakeredis.FakeRedis) -> None:
    redis.hset(keys.tenant_counts("gone"), mapping={"queued": 5, "running": 2})
    redis.hset(keys.tenant_counts("a"), mapping={"queued": -3, "running": 9})
    reconcile(redis, {"a": {"queued": 4, "running": 1}, "new": {"queued": 1, "running": 0}})
    assert redis.hgetall(keys.tenant_counts("a")) == {b"queued": b"4", b"running": b"1"}
    assert redis.hgetall(keys.tenant_counts("gone")) == {b"queued": b"0", b"running": b"0"}
    assert redis.hget(keys.tenant_counts("new"), "queued") == b"1"


def test_refusals_are_counted_by_tenant_and_limit(redis: fakeredis.FakeRedis) -> None:
    redis.hincrby(keys.RATE_LIMITED, "team|a|requests", 2)
    assert rate_limited(redis) == {("team|a", "requests"): 2}


def test_durations_read_like_openais() -> None:
    assert (duration(0.12), duration(1.0), duration(61), duration(360)) == (
        "120ms",
        "1s",
        "1m1s",
        "6m0s",
    )


# ---- fair queues ------------------------------------------------------------------------------


def test_park_goes_direct_only_when_nothing_waits_and_celery_has_room(
    redis: fakeredis.FakeRedis,
) -> None:
    fair = FairQueues(redis, buffer=2)
    assert fair.park("a", keys.QUEUE, "r1", now=1) == DIRECT
    redis.rpush(keys.QUEUE, "m1", "m2")  # Celery's queue is at the buffer
    assert fair.park("a", keys.QUEUE, "r2", now=2) == PARKED
    redis.delete(keys.QUEUE)
    assert fair.park("b", keys.QUEUE, "r3", now=3) == PARKED  # a waits: no jumping the line
    assert fair.tenants() == ["a", "b"] and fair.waiting("a") == 1
    assert redis.llen(keys.DISPATCH_WAKE) == 1


def test_pop_takes_the_highest_tier_first_and_forgets_an_empty_tenant(
    redis: fakeredis.FakeRedis,
) -> None:
    fair = FairQueues(redis, buffer=0)
    fair.park("a", keys.LOW_QUEUE, "flex", now=1)
    fair.park("a", keys.QUEUE, "normal-2", now=3)
    fair.park("a", keys.QUEUE, "normal-1", now=2)
    fair.park("a", keys.HIGH_QUEUE, "priority", now=4)
    fair.park("a", keys.QUEUE, "cancelled", now=5)
    assert fair.forget("a", "cancelled") is True
    popped = [fair.pop("a") for _ in range(5)]
    assert popped == [
        ("priority", keys.HIGH_QUEUE),
        ("normal-1", keys.QUEUE),
        ("normal-2", keys.QUEUE),
        ("flex", keys.LOW_QUEUE),
        None,
    ]
    assert fair.tenants() == []


def test_turns_follow_the_weights_and_a_newcomer_joins_at_the_front() -> None:
    turns = Turns()
    order = []
    for _ in range(6):
        tenant = turns.next(["a", "b"])
        assert tenant is not None
        order.append(tenant)
        turns.sent(tenant, {"a": 2, "b": 1}[tenant])
    assert order.count("a") == 4 and order.count("b") == 2
    for _ in range(50):  # a alone for a long time
        turns.sent("a", 1)
    turns.forget({"a"})
    later = []
    for _ in range(4):  # c joins: no credit for the time it had nothing waiting
        tenant = turns.next(["a", "c"])
        assert tenant is not None
        later.append(tenant)
        turns.sent(tenant, 1)
    assert sorted(later) == ["a", "a", "c", "c"]


def test_a_dispatch_round_interleaves_tenants_within_the_buffer(
    redis: fakeredis.FakeRedis,
) -> None:
    fair = FairQueues(redis, buffer=0)
    for i in range(50):
        fair.park("a", keys.QUEUE, f"a{i}", now=i)
    for i in range(3):
        fair.park("b", keys.QUEUE, f"b{i}", now=100 + i)
    sent: list[str] = []

    def send(response_id: str, queue: str) -> None:
        sent.append(response_id)
        redis.rpush(queue, response_id)

    policy = TenantPolicy(TenantLimits())
    dispatcher = Dispatcher(redis, send, policy, buffer=8)
    assert dispatcher.dispatch_once() == 8
    assert sent[:6] == ["a0", "b0", "a1", "b1", "a2", "b2"]
    assert dispatcher.dispatch_once() == 0  # Celery's queue holds the buffer
    redis.delete(keys.QUEUE)
    assert dispatcher.dispatch_once() == 8 and fair.waiting("a") == 50 - 13


def test_a_tenant_at_its_running_limit_waits(redis: fakeredis.FakeRedis) -> None:
    fair = FairQueues(redis, buffer=0)
    for i in range(3):
        fair.park("a", keys.QUEUE, f"a{i}", now=i)
    redis.hset(keys.tenant_counts("a"), "running", 2)
    sent: list[str] = []
    policy = TenantPolicy(TenantLimits(running=2))
    dispatcher = Dispatcher(redis, lambda rid, _q: sent.append(rid), policy, buffer=10)
    assert dispatcher.dispatch_once() == 0 and sent == []
    redis.hset(keys.tenant_counts("a"), "running", 1)
    assert dispatcher.dispatch_once() == 3


def test_one_dispatcher_leads_at_a_time(redis: fakeredis.FakeRedis) -> None:
    policy = TenantPolicy()
    first = Dispatcher(redis, lambda *_: None, policy, 4, name="one")
    second = Dispatcher(redis, lambda *_: None, policy, 4, name="two")
    assert first.lead() and not second.lead() and first.lead()
    redis.delete(keys.DISPATCH_LOCK)  # the leader's lease ran out
    assert second.lead() and not first.lead()


def test_a_full_paused_queue_holds_back_only_its_own_tier(redis: fakeredis.FakeRedis) -> None:
    fair = FairQueues(redis, buffer=0)
    fair.park("a", keys.LOW_QUEUE, "flex", now=1)
    fair.park("a", keys.QUEUE, "normal", now=2)
    redis.rpush(keys.LOW_QUEUE, *[f"m{i}" for i in range(4)])  # paused: nobody takes these
    sent: list[str] = []
    dispatcher = Dispatcher(redis, lambda rid, _q: sent.append(rid), TenantPolicy(), buffer=4)
    assert dispatcher.dispatch_once() == 1 and sent == ["normal"]
    assert fair.tenants() == ["a"]  # flex still waits for room in its queue
    redis.delete(keys.LOW_QUEUE)
    assert dispatcher.dispatch_once() == 1 and sent == ["normal", "flex"]
    assert fair.tenants() == []
