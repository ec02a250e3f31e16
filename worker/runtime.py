"""What a worker process needs, built once per process from the settings."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from functools import lru_cache

import httpx

from shared.bus import EventBus, make_redis
from shared.metrics import Recorder
from shared.netpolicy import OutboundPolicy
from shared.queue import enqueue_deliveries, make_celery
from shared.routing import ANTHROPIC, BUILTIN, CHAT_COMPLETIONS, OPENAI_RESPONSES, Route, Router
from shared.settings import Settings
from shared.store import Store, make_engine
from shared.store.webhooks import WebhookStore
from shared.tenancy import Limiter, TenantCounters, TenantPolicy
from worker.cancels import CancelWatch
from worker.deps import Limits, RunDeps
from worker.drain import Drain
from worker.fetch import Fetcher
from worker.providers.anthropic import AnthropicProvider
from worker.providers.base import Provider
from worker.providers.builtin import BuiltinModel
from worker.providers.chat_completions import ChatCompletionsProvider
from worker.providers.http_stream import StreamingHttpProvider
from worker.providers.openai_responses import ResponsesProvider


@dataclass(frozen=True)
class Runtime:
    settings: Settings
    store: Store
    bus: EventBus
    router: Router
    hooks: WebhookStore
    http: httpx.Client  # webhook sends: one pool per process
    outbound: OutboundPolicy
    metrics: Recorder
    cancels: CancelWatch  # one poll of every run's cancel flag
    tally: TenantCounters  # the tenants' queued/running counts and token buckets

    # One provider per route per process, so its HTTP connections serve every job.
    providers: dict[Route, Provider] = field(default_factory=dict)

    def run_deps(self, drain: Drain) -> RunDeps:
        """What a run needs, from this process's pieces (``worker.execute``)."""
        return RunDeps(
            store=self.store,
            bus=self.bus,
            provider_for=self.provider_for,
            route_for=self.router.resolve,
            limits=Limits.from_settings(self.settings),
            secret_key=self.settings.secret_key,
            outbound=self.outbound,
            metrics=self.metrics,
            drain=drain,
            cancels=self.cancels,
            fetch=Fetcher(self.http, self.outbound, self.settings.max_fetch_bytes),
            tally=self.tally,
        )

    def provider_for(self, model: str) -> Provider:
        route = self.router.resolve(model)
        found = self.providers.get(route)
        if found is None:
            found = self.providers.setdefault(route, make_provider(route, self.settings))
        return found


HTTP_PROVIDERS: dict[str, type[StreamingHttpProvider]] = {
    CHAT_COMPLETIONS: ChatCompletionsProvider,
    OPENAI_RESPONSES: ResponsesProvider,
    ANTHROPIC: AnthropicProvider,
}


def make_provider(route: Route, settings: Settings) -> Provider:
    if route.provider == BUILTIN:
        return BuiltinModel()
    assert route.base_url is not None
    return HTTP_PROVIDERS[route.provider](
        base_url=route.base_url,
        api_key=route.api_key(),
        upstream_model=route.upstream_model,
        timeout=route.timeout_seconds or settings.upstream_timeout_seconds,
        retries=settings.upstream_retries,
        retry_budget_seconds=settings.upstream_retry_budget_seconds,
        auth_header=route.auth_header,
        max_output_tokens=route.max_output_tokens,
    )


_lock = threading.Lock()


@lru_cache(maxsize=1)
def _build() -> Runtime:
    settings = Settings.from_env()
    redis_client = make_redis(
        settings.redis_url, max_connections=settings.worker_concurrency * 2 + 20
    )
    producer = make_celery(settings)  # sends webhook deliveries once their event commits
    store = Store(
        make_engine(settings.database_url, pool_size=20),
        on_deliveries=lambda delivery_ids: enqueue_deliveries(producer, delivery_ids),
    )
    bus = EventBus(redis_client, ttl_seconds=settings.event_ttl_seconds)
    return Runtime(
        settings=settings,
        store=store,
        bus=bus,
        router=Router.from_file(settings.models_file),
        hooks=WebhookStore(store),
        http=httpx.Client(timeout=settings.webhook_timeout_seconds),
        outbound=OutboundPolicy.from_settings(settings),
        metrics=Recorder(redis_client, bus.group),
        cancels=CancelWatch(bus),
        tally=TenantCounters(
            redis_client, Limiter(redis_client, TenantPolicy.from_settings(settings))
        ),
    )


def runtime() -> Runtime:
    with _lock:
        return _build()
