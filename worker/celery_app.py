"""Worker entrypoint: ``celery -A worker.celery_app worker -P gevent``. Beat and Flower start
from it too (``celery -A worker.celery_app beat``, ``... flower``).

Beat only sends the schedule's tasks by name (``shared.queue``), so the task code (the model
loop, the store, the providers, and the pydantic, SQLAlchemy and HTTP libraries under them) is
imported when a worker starts (``celeryd_init``, which only ``celery worker`` sends), not at
import: beat then holds ~30 MB less (104 -> 74 MB RSS, ``bench.run --only launcher``).
"""

from __future__ import annotations

import logging
from typing import Any

import redis
from celery import bootsteps
from celery.signals import celeryd_init, worker_ready, worker_shutting_down

from shared import logs
from shared.queue import make_celery, paused_queues
from shared.settings import Settings
from worker.drain import PROCESS_DRAIN
from worker.presence import Presence

settings = Settings.from_env()
logs.configure(settings.log_level, settings.log_format)
app = make_celery(settings)
log = logging.getLogger(__name__)
_presence: list[Presence] = []
_dispatchers: list[Any] = []


@celeryd_init.connect
def _register_tasks(**_kwargs: Any) -> None:
    """The tasks, before the worker builds its consumer (module docstring: not in beat)."""
    from worker.tasks import register

    register(app)


@worker_ready.connect
def _honour_paused_queues(sender: Any = None, **_kwargs: Any) -> None:
    """A worker that starts while operators have a queue paused does not consume it."""
    client = redis.Redis.from_url(settings.redis_url)
    try:
        paused = paused_queues(client)
    finally:
        client.close()
    for queue, flag in paused.items():
        if flag and sender is not None:
            sender.cancel_task_queue(queue)
            log.info("queue %s is paused: not consuming it", queue)


@worker_ready.connect
def _start_presence(sender: Any = None, **_kwargs: Any) -> None:
    """Beat while the consumer runs and holds a broker connection (``worker.presence``)."""
    if sender is None:
        return
    from shared.bus import make_redis  # the event bus's models: the worker's, not beat's

    def consuming() -> bool:
        connection = sender.connection
        return bool(
            sender.blueprint.state == bootsteps.RUN
            and connection is not None
            and connection.connected
        )

    _presence.append(
        Presence(
            make_redis(settings.redis_url, max_connections=2), sender.hostname, consuming=consuming
        ).start()
    )


@worker_ready.connect
def _start_dispatcher(sender: Any = None, **_kwargs: Any) -> None:
    """Admit jobs from the tenants' fair queues to Celery (``worker.dispatcher``): every worker
    process runs one, and a lease lets one of them dispatch at a time."""
    if sender is None or not settings.fair_queues:
        return
    from shared.bus import make_redis
    from shared.queue import enqueue_response
    from shared.tenancy import TenantPolicy
    from worker.dispatcher import Dispatcher

    _dispatchers.append(
        Dispatcher(
            make_redis(settings.redis_url, max_connections=2),
            lambda response_id, queue: enqueue_response(app, response_id, queue=queue),
            TenantPolicy.from_settings(settings),
            settings.dispatch_buffer,
            name=sender.hostname,
        ).start()
    )


@worker_shutting_down.connect
def _drain(sig: str = "", how: str = "", **_kwargs: Any) -> None:
    """Warm shutdown: running jobs get ``RESQ_SHUTDOWN_GRACE_SECONDS`` to finish; then each
    hands itself back or fails (``worker.drain``). Runs in a signal handler: flags only."""
    for presence in _presence:
        presence.stop()
    for dispatcher in _dispatchers:
        dispatcher.stop()
    if how == "Warm":
        PROCESS_DRAIN.begin(settings.shutdown_grace_seconds)
        log.info(
            "worker stopping (%s): running jobs have %g s to finish",
            sig,
            settings.shutdown_grace_seconds,
        )
