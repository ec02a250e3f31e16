"""Worker entrypoint: ``celery -A worker.celery_app worker -P gevent``."""

from __future__ import annotations

import logging

from shared.queue import make_celery
from shared.settings import Settings
from worker.tasks import register

settings = Settings.from_env()
logging.basicConfig(
    level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
)
app = make_celery(settings)
register(app)
