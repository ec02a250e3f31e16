"""Settings: every environment variable resq reads is read here, once.

Each setting is documented in README.md ("Configuration").
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypedDict

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8080
DEFAULT_VAR_DIR = "var"
DEFAULT_EVENT_TTL_SECONDS = 24 * 3600
DEFAULT_SYNC_TIMEOUT_SECONDS = 3600.0
DEFAULT_CANCEL_WAIT_SECONDS = 5.0
DEFAULT_UPSTREAM_TIMEOUT_SECONDS = 60.0
DEFAULT_WORKER_CONCURRENCY = 200
DEFAULT_SSE_KEEPALIVE_SECONDS = 15.0
DEFAULT_JOB_TIME_LIMIT_SECONDS = 4 * 3600.0
DEFAULT_HEARTBEAT_SECONDS = 5.0
DEFAULT_HEARTBEAT_TIMEOUT_SECONDS = 30.0
DEFAULT_MAX_ATTEMPTS = 3
DEFAULT_REAPER_INTERVAL_SECONDS = 10.0
DEFAULT_QUEUED_RESEND_SECONDS = 120.0
DEFAULT_UPSTREAM_RETRIES = 4
DEFAULT_UPSTREAM_RETRY_BUDGET_SECONDS = 60.0
DEFAULT_IDEMPOTENCY_TTL_SECONDS = 24 * 3600
DEFAULT_WEBHOOK_TIMEOUT_SECONDS = 10.0
DEFAULT_WEBHOOK_MAX_ATTEMPTS = 25
DEFAULT_WEBHOOK_RETRY_WINDOW_SECONDS = 72 * 3600.0
DEFAULT_WEBHOOK_BACKOFF_SECONDS = 5.0
DEFAULT_WEBHOOK_BACKOFF_MAX_SECONDS = 3 * 3600.0
DEFAULT_WEBHOOK_SWEEP_SECONDS = 5.0
DEFAULT_MCP_TIMEOUT_SECONDS = 60.0
DEFAULT_SHUTDOWN_GRACE_SECONDS = 30.0
# A 32 MB file (OpenAI's per-file limit for file inputs) is ~43 MB as base64 in input_file's
# file_data; 50 MiB takes that with room for the rest of the request, and bounds what one
# request can make an API process hold in memory.
DEFAULT_MAX_BODY_BYTES = 50 * 1024 * 1024
# What the worker fetches for one ``input_file``'s ``file_url``: OpenAI's per-file limit.
DEFAULT_MAX_FETCH_BYTES = 32 * 1024 * 1024
# Job messages the fair dispatcher keeps waiting in the Celery queues (``worker.dispatcher``):
# enough that a worker with a free slot never waits for one, few enough that a newcomer's job
# waits behind no more than these.
DEFAULT_DISPATCH_BUFFER = 32


class SettingsError(ValueError):
    """A setting has a value resq cannot use."""


def _int(env: dict[str, str], name: str, default: int) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise SettingsError(f"{name} must be an integer, got {raw!r}") from None


def _float(env: dict[str, str], name: str, default: float) -> float:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        return float(raw)
    except ValueError:
        raise SettingsError(f"{name} must be a number, got {raw!r}") from None


def _bool(env: dict[str, str], name: str, default: bool = False) -> bool:
    raw = (env.get(name) or "").strip().lower()
    if not raw:
        return default
    if raw in {"0", "false", "no", "off"}:
        return False
    if raw in {"1", "true", "yes", "on"}:
        return True
    raise SettingsError(f"{name} must be true or false, got {raw!r}")


def parse_api_keys(raw: str) -> dict[str, str]:
    """Parse ``RESQ_API_KEYS``: comma-separated ``key`` or ``key:tenant`` entries.

    A bare key is its own tenant name's source: the tenant becomes ``key_<first 8 chars>``.
    """
    keys: dict[str, str] = {}
    for entry in raw.split(","):
        entry = entry.strip()
        if not entry:
            continue
        key, _, tenant = entry.partition(":")
        key = key.strip()
        if not key:
            raise SettingsError("RESQ_API_KEYS has an entry with an empty key")
        keys[key] = tenant.strip() or f"key_{key[:8]}"
    return keys


@dataclass(frozen=True)
class Settings:
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    var_dir: Path = Path(DEFAULT_VAR_DIR)
    database_url: str = ""
    redis_url: str = ""
    api_keys: dict[str, str] = field(default_factory=dict)
    models_file: Path | None = None
    event_ttl_seconds: int = DEFAULT_EVENT_TTL_SECONDS
    sync_timeout_seconds: float = DEFAULT_SYNC_TIMEOUT_SECONDS
    cancel_wait_seconds: float = DEFAULT_CANCEL_WAIT_SECONDS
    upstream_timeout_seconds: float = DEFAULT_UPSTREAM_TIMEOUT_SECONDS
    worker_concurrency: int = DEFAULT_WORKER_CONCURRENCY
    sse_keepalive_seconds: float = DEFAULT_SSE_KEEPALIVE_SECONDS
    job_time_limit_seconds: float = DEFAULT_JOB_TIME_LIMIT_SECONDS
    heartbeat_seconds: float = DEFAULT_HEARTBEAT_SECONDS
    heartbeat_timeout_seconds: float = DEFAULT_HEARTBEAT_TIMEOUT_SECONDS
    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    reaper_interval_seconds: float = DEFAULT_REAPER_INTERVAL_SECONDS
    queued_resend_seconds: float = DEFAULT_QUEUED_RESEND_SECONDS
    upstream_retries: int = DEFAULT_UPSTREAM_RETRIES
    upstream_retry_budget_seconds: float = DEFAULT_UPSTREAM_RETRY_BUDGET_SECONDS
    idempotency_ttl_seconds: int = DEFAULT_IDEMPOTENCY_TTL_SECONDS
    webhook_timeout_seconds: float = DEFAULT_WEBHOOK_TIMEOUT_SECONDS
    webhook_max_attempts: int = DEFAULT_WEBHOOK_MAX_ATTEMPTS
    webhook_retry_window_seconds: float = DEFAULT_WEBHOOK_RETRY_WINDOW_SECONDS
    webhook_backoff_seconds: float = DEFAULT_WEBHOOK_BACKOFF_SECONDS
    webhook_backoff_max_seconds: float = DEFAULT_WEBHOOK_BACKOFF_MAX_SECONDS
    webhook_sweep_seconds: float = DEFAULT_WEBHOOK_SWEEP_SECONDS
    outbound_allow_private: bool = False
    outbound_allow_loopback: bool = False
    secret_key: str | None = None  # encrypts MCP credentials while their response runs
    admin_keys: tuple[str, ...] = ()
    log_format: str = "text"  # or "json"
    mcp_timeout_seconds: float = DEFAULT_MCP_TIMEOUT_SECONDS
    shutdown_grace_seconds: float = DEFAULT_SHUTDOWN_GRACE_SECONDS
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    max_fetch_bytes: int = DEFAULT_MAX_FETCH_BYTES
    log_level: str = "INFO"
    # Per-tenant limits and fair dispatch (``shared.tenancy``); 0: no limit.
    tenants_file: Path | None = None
    limit_requests_per_minute: int = 0
    limit_tokens_per_minute: int = 0
    limit_queued: int = 0
    limit_running: int = 0
    fair_queues: bool = True
    dispatch_buffer: int = DEFAULT_DISPATCH_BUFFER

    @property
    def open_mode(self) -> bool:
        """No API keys configured: every request is accepted as the ``default`` tenant."""
        return not self.api_keys

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> Settings:
        """Every setting, read group by group in the order the fields are declared: with
        several unusable values, the ``SettingsError`` names the first of them."""
        env = dict(os.environ if env is None else env)
        return cls(
            **_places(env),
            **_jobs(env),
            **_webhooks(env),
            **_access(env),
            **_process(env),
            **_tenancy(env),
        )


# ---- Settings.from_env, one group at a time ---------------------------------------------------


class _Places(TypedDict):
    host: str
    port: int
    var_dir: Path
    database_url: str
    redis_url: str
    api_keys: dict[str, str]
    models_file: Path | None


def _places(env: dict[str, str]) -> _Places:
    """Where resq listens, keeps its data and finds its models; who may call it."""
    var_dir = Path(env.get("RESQ_VAR_DIR") or DEFAULT_VAR_DIR)
    database_url = env.get("DATABASE_URL") or f"sqlite:///{var_dir / 'resq.db'}"
    models_file = env.get("RESQ_MODELS_FILE")
    return _Places(
        host=env.get("RESQ_HOST") or DEFAULT_HOST,
        port=_int(env, "RESQ_PORT", DEFAULT_PORT),
        var_dir=var_dir,
        database_url=normalize_database_url(database_url),
        redis_url=env.get("REDIS_URL", ""),
        api_keys=parse_api_keys(env.get("RESQ_API_KEYS", "")),
        models_file=Path(models_file) if models_file else None,
    )


class _Jobs(TypedDict):
    event_ttl_seconds: int
    sync_timeout_seconds: float
    cancel_wait_seconds: float
    upstream_timeout_seconds: float
    worker_concurrency: int
    sse_keepalive_seconds: float
    job_time_limit_seconds: float
    heartbeat_seconds: float
    heartbeat_timeout_seconds: float
    max_attempts: int
    reaper_interval_seconds: float
    queued_resend_seconds: float
    upstream_retries: int
    upstream_retry_budget_seconds: float
    idempotency_ttl_seconds: int


def _jobs(env: dict[str, str]) -> _Jobs:
    """How a job runs, is waited for, retried and recovered."""
    return _Jobs(
        event_ttl_seconds=_int(env, "RESQ_EVENT_TTL_SECONDS", DEFAULT_EVENT_TTL_SECONDS),
        sync_timeout_seconds=_float(env, "RESQ_SYNC_TIMEOUT_SECONDS", DEFAULT_SYNC_TIMEOUT_SECONDS),
        cancel_wait_seconds=_float(env, "RESQ_CANCEL_WAIT_SECONDS", DEFAULT_CANCEL_WAIT_SECONDS),
        upstream_timeout_seconds=_float(
            env, "RESQ_UPSTREAM_TIMEOUT_SECONDS", DEFAULT_UPSTREAM_TIMEOUT_SECONDS
        ),
        worker_concurrency=_int(env, "RESQ_WORKER_CONCURRENCY", DEFAULT_WORKER_CONCURRENCY),
        sse_keepalive_seconds=_float(
            env, "RESQ_SSE_KEEPALIVE_SECONDS", DEFAULT_SSE_KEEPALIVE_SECONDS
        ),
        job_time_limit_seconds=_float(
            env, "RESQ_JOB_TIME_LIMIT_SECONDS", DEFAULT_JOB_TIME_LIMIT_SECONDS
        ),
        heartbeat_seconds=_float(env, "RESQ_HEARTBEAT_SECONDS", DEFAULT_HEARTBEAT_SECONDS),
        heartbeat_timeout_seconds=_float(
            env, "RESQ_HEARTBEAT_TIMEOUT_SECONDS", DEFAULT_HEARTBEAT_TIMEOUT_SECONDS
        ),
        max_attempts=_int(env, "RESQ_MAX_ATTEMPTS", DEFAULT_MAX_ATTEMPTS),
        reaper_interval_seconds=_float(
            env, "RESQ_REAPER_INTERVAL_SECONDS", DEFAULT_REAPER_INTERVAL_SECONDS
        ),
        queued_resend_seconds=_float(
            env, "RESQ_QUEUED_RESEND_SECONDS", DEFAULT_QUEUED_RESEND_SECONDS
        ),
        upstream_retries=_int(env, "RESQ_UPSTREAM_RETRIES", DEFAULT_UPSTREAM_RETRIES),
        upstream_retry_budget_seconds=_float(
            env, "RESQ_UPSTREAM_RETRY_BUDGET_SECONDS", DEFAULT_UPSTREAM_RETRY_BUDGET_SECONDS
        ),
        idempotency_ttl_seconds=_int(
            env, "RESQ_IDEMPOTENCY_TTL_SECONDS", DEFAULT_IDEMPOTENCY_TTL_SECONDS
        ),
    )


class _Webhooks(TypedDict):
    webhook_timeout_seconds: float
    webhook_max_attempts: int
    webhook_retry_window_seconds: float
    webhook_backoff_seconds: float
    webhook_backoff_max_seconds: float
    webhook_sweep_seconds: float


def _webhooks(env: dict[str, str]) -> _Webhooks:
    """How webhook deliveries are sent and retried."""
    return _Webhooks(
        webhook_timeout_seconds=_float(
            env, "RESQ_WEBHOOK_TIMEOUT_SECONDS", DEFAULT_WEBHOOK_TIMEOUT_SECONDS
        ),
        webhook_max_attempts=max(
            1, _int(env, "RESQ_WEBHOOK_MAX_ATTEMPTS", DEFAULT_WEBHOOK_MAX_ATTEMPTS)
        ),
        webhook_retry_window_seconds=_float(
            env, "RESQ_WEBHOOK_RETRY_WINDOW_SECONDS", DEFAULT_WEBHOOK_RETRY_WINDOW_SECONDS
        ),
        webhook_backoff_seconds=_float(
            env, "RESQ_WEBHOOK_BACKOFF_SECONDS", DEFAULT_WEBHOOK_BACKOFF_SECONDS
        ),
        webhook_backoff_max_seconds=_float(
            env, "RESQ_WEBHOOK_BACKOFF_MAX_SECONDS", DEFAULT_WEBHOOK_BACKOFF_MAX_SECONDS
        ),
        webhook_sweep_seconds=_float(
            env, "RESQ_WEBHOOK_SWEEP_SECONDS", DEFAULT_WEBHOOK_SWEEP_SECONDS
        ),
    )


class _Access(TypedDict):
    outbound_allow_private: bool
    outbound_allow_loopback: bool
    secret_key: str | None
    admin_keys: tuple[str, ...]


def _access(env: dict[str, str]) -> _Access:
    """What resq may reach (webhook receivers, MCP servers), its secret, its admin keys."""
    return _Access(
        outbound_allow_private=_bool(env, "RESQ_OUTBOUND_ALLOW_PRIVATE"),
        outbound_allow_loopback=_bool(env, "RESQ_OUTBOUND_ALLOW_LOOPBACK"),
        secret_key=env.get("RESQ_SECRET_KEY") or None,
        admin_keys=tuple(k.strip() for k in env.get("RESQ_ADMIN_KEYS", "").split(",") if k.strip()),
    )


class _Tenancy(TypedDict):
    tenants_file: Path | None
    limit_requests_per_minute: int
    limit_tokens_per_minute: int
    limit_queued: int
    limit_running: int
    fair_queues: bool
    dispatch_buffer: int


def _tenancy(env: dict[str, str]) -> _Tenancy:
    """Limits per tenant (defaults here, per tenant in the tenants file) and fair dispatch."""
    tenants_file = env.get("RESQ_TENANTS_FILE")
    return _Tenancy(
        tenants_file=Path(tenants_file) if tenants_file else None,
        limit_requests_per_minute=_int(env, "RESQ_LIMIT_REQUESTS_PER_MINUTE", 0),
        limit_tokens_per_minute=_int(env, "RESQ_LIMIT_TOKENS_PER_MINUTE", 0),
        limit_queued=_int(env, "RESQ_LIMIT_QUEUED", 0),
        limit_running=_int(env, "RESQ_LIMIT_RUNNING", 0),
        fair_queues=_bool(env, "RESQ_FAIR_QUEUES", True),
        dispatch_buffer=_int(env, "RESQ_DISPATCH_BUFFER", DEFAULT_DISPATCH_BUFFER),
    )


class _Process(TypedDict):
    log_format: str
    mcp_timeout_seconds: float
    shutdown_grace_seconds: float
    max_body_bytes: int
    max_fetch_bytes: int
    log_level: str


def _process(env: dict[str, str]) -> _Process:
    """How each process logs, bounds its work and stops."""
    return _Process(
        log_format=(env.get("RESQ_LOG_FORMAT") or "text").lower(),
        mcp_timeout_seconds=_float(env, "RESQ_MCP_TIMEOUT_SECONDS", DEFAULT_MCP_TIMEOUT_SECONDS),
        shutdown_grace_seconds=_float(
            env, "RESQ_SHUTDOWN_GRACE_SECONDS", DEFAULT_SHUTDOWN_GRACE_SECONDS
        ),
        max_body_bytes=_int(env, "RESQ_MAX_BODY_BYTES", DEFAULT_MAX_BODY_BYTES),
        max_fetch_bytes=_int(env, "RESQ_MAX_FETCH_BYTES", DEFAULT_MAX_FETCH_BYTES),
        log_level=(env.get("RESQ_LOG_LEVEL") or "INFO").upper(),
    )


def normalize_database_url(url: str) -> str:
    """Make ``postgres://`` and ``postgresql://`` URLs use psycopg 3."""
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url
