"""What a run needs from outside, passed as one object (``RunDeps``), and its bounds."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from shared.bus import EventBus
from shared.metrics import Recorder
from shared.netpolicy import OutboundPolicy
from shared.routing import Route
from shared.settings import (
    DEFAULT_HEARTBEAT_SECONDS,
    DEFAULT_HEARTBEAT_TIMEOUT_SECONDS,
    DEFAULT_JOB_TIME_LIMIT_SECONDS,
    DEFAULT_MCP_TIMEOUT_SECONDS,
    Settings,
)
from shared.store import Store
from shared.tenancy import TenantCounters
from worker.cancels import CancelWatch
from worker.drain import Drain
from worker.fetch import Fetch
from worker.providers.base import Provider


@dataclass(frozen=True)
class Limits:
    """Per-job bounds, from the settings (README, "Durability")."""

    time_limit_seconds: float = DEFAULT_JOB_TIME_LIMIT_SECONDS
    heartbeat_seconds: float = DEFAULT_HEARTBEAT_SECONDS
    heartbeat_timeout_seconds: float = DEFAULT_HEARTBEAT_TIMEOUT_SECONDS
    mcp_timeout_seconds: float = DEFAULT_MCP_TIMEOUT_SECONDS

    @classmethod
    def from_settings(cls, settings: Settings) -> Limits:
        return cls(
            time_limit_seconds=settings.job_time_limit_seconds,
            heartbeat_seconds=settings.heartbeat_seconds,
            heartbeat_timeout_seconds=settings.heartbeat_timeout_seconds,
            mcp_timeout_seconds=settings.mcp_timeout_seconds,
        )


@dataclass(frozen=True)
class RunDeps:
    """The boundaries of a run: built once per worker process (``worker.runtime``), or from
    stand-ins in a unit test. Defaults are what a test needs and nothing more."""

    store: Store
    bus: EventBus
    provider_for: Callable[[str], Provider]  # model name → its provider
    route_for: Callable[[str], Route] | None = None  # None: no context window to fit
    clock: Callable[[], float] = time.time
    limits: Limits = Limits()
    secret_key: str | None = None  # unseals MCP credentials
    outbound: OutboundPolicy | None = None  # checks MCP server addresses before connecting
    metrics: Recorder | None = None
    drain: Drain = field(default_factory=Drain)  # the process's shutdown state
    # The process's one poll of cancel flags; None: each check asks Redis (tests).
    cancels: CancelWatch | None = None
    fetch: Fetch | None = None  # fetches a file_url (``worker.fetch``); None: none is fetched
    tally: TenantCounters | None = None  # the tenants' queued/running counts and token buckets

    def cancel_requested(self, response_id: str) -> bool:
        if self.cancels is not None:
            return self.cancels.requested(response_id)
        return self.bus.cancel_requested(response_id)
