"""The API's app factory: ``create_app`` builds the Flask app over resq's parts; nothing
happens at import. ``api.wsgi`` calls it once in each gunicorn worker process."""

from __future__ import annotations

import logging
from collections.abc import Callable

from celery import Celery
from flask import Flask, Response, g, request
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from api import (
    admin,
    body,
    conversations,
    dashboard,
    errors,
    health,
    models,
    openapi,
    prompts,
    responses,
    webhook_endpoints,
)
from api.auth import Authenticator
from api.deps import Deps
from api.tail import Tail
from shared import ids, logs
from shared.bus import EventBus, make_redis
from shared.fair import FairQueues
from shared.metrics import Gauges, Recorder, ResqCollector
from shared.netpolicy import OutboundPolicy
from shared.queue import (
    enqueue_deliveries,
    enqueue_delivery,
    enqueue_response,
    make_celery,
    paused_queues,
    queue_depths,
)
from shared.routing import Router
from shared.settings import Settings
from shared.store import Store, make_engine
from shared.store.admin import AdminStore
from shared.store.webhooks import WebhookStore
from shared.tenancy import Limiter, TenantPolicy, rate_limited

log = logging.getLogger("api")  # the name its lines had before the factory left api/__init__

PUBLIC_PATHS = {"/healthz", "/readyz", "/metrics", "/admin", "/admin/", "/openapi.json"}
BLUEPRINTS = (
    health.bp,
    responses.bp,
    models.bp,
    webhook_endpoints.bp,
    conversations.bp,
    prompts.bp,
    admin.bp,
    dashboard.bp,
    openapi.bp,
)


def create_app(
    settings: Settings | None = None,
    *,
    store: Store | None = None,
    bus: EventBus | None = None,
    enqueue: Callable[[str], None] | None = None,
) -> Flask:
    """The API over the given stand-ins (tests), or over what ``settings`` names (default:
    the environment). ``enqueue`` replaces the broker with a sink for response ids."""
    settings = settings or Settings.from_env()
    celery = make_celery(settings)
    store = store or Store(
        make_engine(settings.database_url),
        on_deliveries=lambda delivery_ids: enqueue_deliveries(celery, delivery_ids),
    )
    auth = _authenticator(settings)
    bus = bus or EventBus(
        make_redis(settings.redis_url, max_connections=5000),
        ttl_seconds=settings.event_ttl_seconds,
    )
    app = Flask(__name__, static_folder=None)  # the dashboard is served by its blueprint
    _configure(app, settings)
    app.extensions["resq"] = _deps(settings, store, bus, auth, celery, enqueue)
    _register_request_hooks(app, auth)
    _register_metrics(app, store, bus)
    errors.register(app)
    for blueprint in BLUEPRINTS:
        app.register_blueprint(blueprint)
    return app


def _authenticator(settings: Settings) -> Authenticator:
    auth = Authenticator(settings.api_keys, settings.admin_keys)
    if auth.open_mode:
        log.warning(
            "RESQ_API_KEYS is not set: resq is in OPEN DEV MODE and accepts every request "
            "without an API key. Set RESQ_API_KEYS before exposing it."
        )
    return auth


def _configure(app: Flask, settings: Settings) -> None:
    # A larger body is refused with 413 as it is read (api.body), before it is parsed.
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    # No automatic OPTIONS answers (an empty 200): OPTIONS is a 405 in the error envelope.
    app.config["PROVIDE_AUTOMATIC_OPTIONS"] = False
    app.json.sort_keys = False  # type: ignore[attr-defined]
    app.json.compact = True  # type: ignore[attr-defined]


def _deps(
    settings: Settings,
    store: Store,
    bus: EventBus,
    auth: Authenticator,
    celery: Celery,
    enqueue: Callable[[str], None] | None,
) -> Deps:
    def send(response_id: str, queue: str) -> None:
        if enqueue is not None:  # a test's sink: it does not care which queue
            enqueue(response_id)
        else:
            enqueue_response(celery, response_id, queue=queue)

    def send_delivery(delivery_id: str, attempts: int) -> None:
        enqueue_delivery(celery, delivery_id, attempts)

    return Deps(
        settings=settings,
        store=store,
        bus=bus,
        tail=Tail(bus),
        router=Router.from_file(settings.models_file),
        auth=auth,
        enqueue=send,
        celery=celery,
        metrics=Recorder(bus.redis),
        hooks=WebhookStore(store),
        outbound=OutboundPolicy.from_settings(settings),
        send_delivery=send_delivery,
        limiter=Limiter(bus.redis, TenantPolicy.from_settings(settings)),
        fair=FairQueues(bus.redis, settings.dispatch_buffer) if settings.fair_queues else None,
    )


def _register_request_hooks(app: Flask, auth: Authenticator) -> None:
    """Every request gets an id (echoed as ``x-request-id``) and, off the public paths, a
    tenant from its API key; a failure after a job was queued says not to retry, so an SDK
    does not create it twice."""

    @app.before_request
    def _authenticate() -> None:
        g.request_id = ids.new_id(ids.REQUEST)
        g.enqueued = False
        body.check_url()
        if request.path not in PUBLIC_PATHS:
            g.tenant = auth.tenant(request)
            logs.set_fields(tenant=g.tenant)

    @app.after_request
    def _request_id(response: Response) -> Response:
        response.headers["x-request-id"] = g.get("request_id") or ids.new_id(ids.REQUEST)
        if response.status_code >= 400 and g.get("enqueued"):
            response.headers["x-should-retry"] = "false"
        if response.status_code < 400 and g.get("ratelimit_headers"):
            response.headers.update(g.ratelimit_headers)  # api.limits, as OpenAI's answers
        return response


def _register_metrics(app: Flask, store: Store, bus: EventBus) -> None:
    redis_client = bus.redis
    registry = CollectorRegistry(auto_describe=False)
    registry.register(
        ResqCollector(
            redis_client,
            Gauges(
                queue_depths=lambda: queue_depths(redis_client),
                paused=lambda: paused_queues(redis_client),
                active=lambda: AdminStore(store).active_by_status(),
                tenants=lambda: AdminStore(store).active_by_tenant(),
                rate_limited=lambda: rate_limited(redis_client),
            ),
        )
    )

    @app.get("/metrics")
    def metrics_page() -> Response:
        """Prometheus text format; public, like /healthz (it holds counts, no content)."""
        return Response(generate_latest(registry), mimetype=CONTENT_TYPE_LATEST)
