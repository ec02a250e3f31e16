"""Limits per tenant, and the counters they are checked against.

Configuration: defaults from the environment (``RESQ_LIMIT_REQUESTS_PER_MINUTE``,
``RESQ_LIMIT_TOKENS_PER_MINUTE``, ``RESQ_LIMIT_QUEUED``, ``RESQ_LIMIT_RUNNING``; 0 or unset: no
limit), per tenant in ``RESQ_TENANTS_FILE`` (TOML)::

    [tenants.team-a]
    requests_per_minute = 600
    tokens_per_minute = 2000000
    queued = 5000          # background jobs waiting
    running = 50           # jobs running at once
    weight = 2             # its share of dispatch when several tenants wait

Requests and tokens per minute are token buckets (capacity = the limit, refilled evenly over a
minute), so a burst up to the limit passes and the rate holds over time. A create is charged one
request and its estimated tokens (input + ``max_output_tokens``, or the route's default);
the worker settles the tokens with the real usage when the response ends. Queued and running
counts are Redis counters the API and workers keep (``TenantCounters``) and the reaper sets
again from the store on every sweep, so a crash cannot leave them off for long. A background
create over ``queued``, or a foreground one while ``running`` jobs run, is refused; a
background job beyond ``running`` waits in its queue (``worker.dispatcher``).

Everything is in Redis, shared by every API process, changed by atomic scripts; with Redis
away a create is a 503 (limits fail closed).
"""

from __future__ import annotations

import math
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from redis import Redis

from shared import keys
from shared.settings import Settings, SettingsError

LIMITS = ("requests_per_minute", "tokens_per_minute", "queued", "running")
WINDOW_SECONDS = 60.0

# KEYS: the tenant's buckets, its counters. ARGV: now, rpm, tpm, tokens, queued limit,
# background (1/0), running limit. Returns {verdict, requests left, tokens left, queued,
# running} with numbers as strings (Redis turns Lua floats into integers).
_ADMIT = """
local now = tonumber(ARGV[1])
local rpm, tpm, cost = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local qlim, bg, rlim = tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7])
local b = redis.call('HMGET', KEYS[1], 'r', 'rt', 't', 'tt')
local function level(cap, v, ts)
  if cap <= 0 then return 0 end
  if not v then return cap end
  return math.min(cap, tonumber(v) + (now - tonumber(ts)) * cap / 60)
end
local r, t = level(rpm, b[1], b[2]), level(tpm, b[3], b[4])
local c = redis.call('HMGET', KEYS[2], 'queued', 'running')
local queued, running = tonumber(c[1] or 0), tonumber(c[2] or 0)
local verdict = 'ok'
if rpm > 0 and r < 1 then verdict = 'requests'
elseif tpm > 0 and t < cost then verdict = 'tokens'
elseif bg == 1 and qlim > 0 and queued >= qlim then verdict = 'queued'
elseif bg == 0 and rlim > 0 and running >= rlim then verdict = 'running'
end
if verdict == 'ok' then
  if rpm > 0 then r = r - 1 end
  if tpm > 0 then t = t - cost end
  redis.call('HSET', KEYS[1], 'r', r, 'rt', now, 't', t, 'tt', now)
  redis.call('EXPIRE', KEYS[1], 120)
  queued = queued + 1
  redis.call('HINCRBY', KEYS[2], 'queued', 1)
end
return {verdict, tostring(r), tostring(t), tostring(queued), tostring(running)}
"""

# KEYS: the tenant's buckets. ARGV: now, tpm, tokens to give back (negative: to take).
_SETTLE = """
local now, tpm, delta = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
if tpm <= 0 then return 0 end
local b = redis.call('HMGET', KEYS[1], 't', 'tt')
if not b[1] then return 0 end
local t = math.min(tpm, tonumber(b[1]) + (now - tonumber(b[2])) * tpm / 60 + delta)
redis.call('HSET', KEYS[1], 't', t, 'tt', now)
return 1
"""


@dataclass(frozen=True)
class TenantLimits:
    requests_per_minute: int = 0  # 0: no limit
    tokens_per_minute: int = 0
    queued: int = 0
    running: int = 0
    weight: int = 1

    @property
    def any(self) -> bool:
        return any(getattr(self, name) for name in LIMITS)


def _limits(raw: Any, base: TenantLimits, where: str) -> TenantLimits:
    if not isinstance(raw, dict):
        raise SettingsError(f"{where} must be a table")
    unknown = sorted(set(raw) - {*LIMITS, "weight"})
    if unknown:
        known = ", ".join((*LIMITS, "weight"))
        raise SettingsError(f"{where} has unknown keys {unknown}; known: {known}")
    for name, value in raw.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise SettingsError(f"{where}.{name} must be a whole number 0 or more, got {value!r}")
    if raw.get("weight", 1) < 1:
        raise SettingsError(f"{where}.weight must be 1 or more")
    return replace(base, **raw)


@dataclass(frozen=True)
class TenantPolicy:
    default: TenantLimits = TenantLimits()
    tenants: dict[str, TenantLimits] = field(default_factory=dict)

    def of(self, tenant: str) -> TenantLimits:
        return self.tenants.get(tenant, self.default)

    @classmethod
    def from_settings(cls, settings: Settings) -> TenantPolicy:
        default = TenantLimits(
            requests_per_minute=settings.limit_requests_per_minute,
            tokens_per_minute=settings.limit_tokens_per_minute,
            queued=settings.limit_queued,
            running=settings.limit_running,
        )
        return cls(default, cls._file(settings.tenants_file, default))

    @staticmethod
    def _file(path: Path | None, default: TenantLimits) -> dict[str, TenantLimits]:
        if path is None:
            return {}
        try:
            data = tomllib.loads(path.read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise SettingsError(f"cannot read the tenants file {path}: {exc}") from exc
        tenants = data.get("tenants", {})
        if not isinstance(tenants, dict):
            raise SettingsError(f"{path}: [tenants.<name>] tables expected")
        return {
            name: _limits(raw, default, f"{path}: tenants.{name}") for name, raw in tenants.items()
        }


@dataclass(frozen=True)
class Verdict:
    """What the limiter said about one request."""

    refused: str | None  # the limit that refused it, or None
    limits: TenantLimits
    requests_left: float
    tokens_left: float
    queued: int
    running: int
    cost: int  # the tokens charged

    def reset_requests(self) -> float:
        """Seconds until the request bucket is full again."""
        rpm = self.limits.requests_per_minute
        return max(0.0, (rpm - self.requests_left) * WINDOW_SECONDS / rpm) if rpm else 0.0

    def reset_tokens(self) -> float:
        tpm = self.limits.tokens_per_minute
        return max(0.0, (tpm - self.tokens_left) * WINDOW_SECONDS / tpm) if tpm else 0.0

    def retry_after(self) -> float:
        """Seconds until the refused request would pass (for ``retry-after``)."""
        if self.refused == "requests":
            return (1 - self.requests_left) * WINDOW_SECONDS / self.limits.requests_per_minute
        if self.refused == "tokens":
            tpm = self.limits.tokens_per_minute
            return (self.cost - self.tokens_left) * WINDOW_SECONDS / tpm
        return 1.0  # queued / running: when a job starts or ends; the SDK backs off anyway

    def headers(self) -> dict[str, str]:
        """OpenAI's ``x-ratelimit-*`` headers for the limits this tenant has."""
        out: dict[str, str] = {}
        if self.limits.requests_per_minute:
            out["x-ratelimit-limit-requests"] = str(self.limits.requests_per_minute)
            out["x-ratelimit-remaining-requests"] = str(max(0, math.floor(self.requests_left)))
            out["x-ratelimit-reset-requests"] = duration(self.reset_requests())
        if self.limits.tokens_per_minute:
            out["x-ratelimit-limit-tokens"] = str(self.limits.tokens_per_minute)
            out["x-ratelimit-remaining-tokens"] = str(max(0, math.floor(self.tokens_left)))
            out["x-ratelimit-reset-tokens"] = duration(self.reset_tokens())
        if self.refused is not None:
            wait = max(self.retry_after(), 0.001)
            out["retry-after-ms"] = str(math.ceil(wait * 1000))
            out["retry-after"] = str(math.ceil(wait))
        return out


def duration(seconds: float) -> str:
    """OpenAI's reset format: ``1s``, ``6m0s``, ``120ms``."""
    if seconds < 1:
        return f"{math.ceil(seconds * 1000)}ms"
    whole = math.ceil(seconds)
    minutes, secs = divmod(whole, 60)
    return f"{minutes}m{secs}s" if minutes else f"{secs}s"


class Limiter:
    """The atomic checks, over one Redis client (every API process shares the counters)."""

    def __init__(self, client: Redis, policy: TenantPolicy) -> None:
        self.client = client
        self.policy = policy
        self._admit = client.register_script(_ADMIT)
        self._settle = client.register_script(_SETTLE)

    def admit(self, tenant: str, *, tokens: int, background: bool, now: float) -> Verdict:
        """Charge one request of ``tokens`` and count it queued, or say which limit refuses
        it (nothing charged then)."""
        limits = self.policy.of(tenant)
        verdict, r, t, queued, running = self._admit(
            keys=[keys.tenant_buckets(tenant), keys.tenant_counts(tenant)],
            args=[
                now,
                limits.requests_per_minute,
                limits.tokens_per_minute,
                tokens,
                limits.queued,
                int(background),
                limits.running,
            ],
        )
        name = verdict.decode() if isinstance(verdict, bytes) else str(verdict)
        return Verdict(
            refused=None if name == "ok" else name,
            limits=limits,
            requests_left=float(r),
            tokens_left=float(t),
            queued=int(float(queued)),
            running=int(float(running)),
            cost=tokens,
        )

    def settle(self, tenant: str, *, charged: int, used: int, now: float) -> None:
        """Give back what a response was charged beyond what it used (or take the excess)."""
        tpm = self.policy.of(tenant).tokens_per_minute
        if tpm and charged != used:
            self._settle(keys=[keys.tenant_buckets(tenant)], args=[now, tpm, charged - used])


def move_counts(client: Redis, tenant: str, *, queued: int = 0, running: int = 0) -> None:
    """Change a tenant's ``queued`` and ``running`` counts, in one round trip."""
    pipe = client.pipeline(transaction=False)
    if queued:
        pipe.hincrby(keys.tenant_counts(tenant), "queued", queued)
    if running:
        pipe.hincrby(keys.tenant_counts(tenant), "running", running)
    pipe.execute()


class TenantCounters:
    """A worker's side of the counts: a job starts (queued → running), ends (running, and its
    tokens settled), or goes back to the queue. Redis errors are logged and left to the reaper,
    which sets the counts again from the store (``reconcile``)."""

    def __init__(self, client: Redis, limiter: Limiter) -> None:
        self.client = client
        self.limiter = limiter

    def started(self, tenant: str) -> None:
        move_counts(self.client, tenant, queued=-1, running=1)

    def handed_back(self, tenant: str) -> None:
        move_counts(self.client, tenant, queued=1, running=-1)

    def ended(self, tenant: str, *, charged: int, used: int, now: float) -> None:
        move_counts(self.client, tenant, running=-1)
        if charged:
            self.limiter.settle(tenant, charged=charged, used=used, now=now)


def reconcile(client: Redis, counts: dict[str, dict[str, int]]) -> None:
    """Set every tenant's ``queued`` and ``running`` from the store's ``counts`` (tenant →
    ``{"queued", "running"}``); tenants the store has none of go to 0."""
    known = {
        k.decode().removeprefix(keys.tenant_counts("")) if isinstance(k, bytes) else str(k)
        for k in client.scan_iter(match=keys.tenant_counts("*"), count=1000)
    }
    pipe = client.pipeline(transaction=False)
    for tenant in known | set(counts):
        got = counts.get(tenant, {})
        pipe.hset(
            keys.tenant_counts(tenant),
            mapping={"queued": got.get("queued", 0), "running": got.get("running", 0)},
        )
    pipe.execute()


def rate_limited(client: Redis) -> dict[tuple[str, str], int]:
    """Refusals so far, by (tenant, limit)."""
    raw: dict[bytes, bytes] = client.hgetall(keys.RATE_LIMITED)  # type: ignore[assignment]
    out: dict[tuple[str, str], int] = {}
    for field_, count in raw.items():
        tenant, _, limit = field_.decode().rpartition("|")
        out[(tenant, limit)] = int(count)
    return out
