"""Worker entrypoint: ``celery -A worker.celery_app worker -P gevent``."""

from __future__ import annotations

import logging
from typing import Any

import redis
from celery import bootsteps
from celery.signals import worker_ready, worker_shutting_down

from shared import logs
from shared.bus import make_redis
from shared.queue import make_celery, paused_queues
from shared.settings import Settings
from worker.drain import PROCESS_DRAIN
from worker.presence import Presence
from worker.tasks import register

settings = Settings.from_env()
logs.configure(settings.log_level, settings.log_format)
app = make_celery(settings)
register(app)
log = logging.getLogger(__name__)
_presence: list[Presence] = []


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


@worker_shutting_down.connect
def _drain(sig: str = "", how: str = "", **_kwargs: Any) -> None:
    """Warm shutdown: running jobs get ``RESQ_SHUTDOWN_GRACE_SECONDS`` to finish; then each
    hands itself back or fails (``worker.drain``). Runs in a signal handler: flags only."""
    for presence in _presence:
        presence.stop()
    if how == "Warm":
        PROCESS_DRAIN.begin(settings.shutdown_grace_seconds)
        log.info(
            "worker stopping (%s): running jobs have %g s to finish",
            sig,
            settings.shutdown_grace_seconds,
        )
