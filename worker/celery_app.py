"""Worker entrypoint: ``celery -A worker.celery_app worker -P gevent``."""

from __future__ import annotations

import logging
from typing import Any

import redis
from celery.signals import worker_ready

from shared import keys, logs
from shared.queue import make_celery
from shared.settings import Settings
from worker.tasks import register

settings = Settings.from_env()
logs.configure(settings.log_level, settings.log_format)
app = make_celery(settings)
register(app)
log = logging.getLogger(__name__)


@worker_ready.connect
def _honour_paused_queues(sender: Any = None, **_kwargs: Any) -> None:
    """A worker that starts while operators have a queue paused does not consume it."""
    client = redis.Redis.from_url(settings.redis_url)
    try:
        for queue in keys.ALL_QUEUES:
            if client.exists(keys.paused(queue)) and sender is not None:
                sender.cancel_task_queue(queue)
                log.info("queue %s is paused: not consuming it", queue)
    finally:
        client.close()
